// Byte-level BPE tokenizers (include/tessera/data/tokenizer.h): GPT-2's pre-tokenization, training, encoding by merge
// rank, tokenizer.json and vocab.json + merges.txt, and every refusal; WordPiece tokenizers read from tokenizer.json.
// Parity with Hugging Face `tokenizers` is in tokenizer_interop_test.cpp.
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <cctype>
#include <algorithm>
#include <map>
#include <random>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <tessera/data/tokenizer.h>

#include "core/mds_support.h"
#include "support.h"

namespace tessera {
namespace {

using data::Tokenizer;
using data::TokenizerTrainOptions;
using nlohmann::json;
using ::testing::HasSubstr;

std::vector<std::string> pieces(const std::string& text) {
  std::vector<std::string> out;
  for (std::string_view p : data::pretokenize(text)) out.emplace_back(p);
  return out;
}

TEST(Pretokenize, SplitsAsGpt2sPattern) {
  // Expected pieces from Hugging Face's ByteLevel pre-tokenizer (use_regex) on the same strings.
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces("I'm here, don't  go"), (V{"I", "'m", " here", ",", " don", "'t", " ", " go"}));
  EXPECT_EQ(pieces("  hi"), (V{" ", " hi"}));
  EXPECT_EQ(pieces("a  \n\nb"), (V{"a", "  \n", "\n", "b"}));
  EXPECT_EQ(pieces("123 456"), (V{"123", " 456"}));
  EXPECT_EQ(pieces("x=1.5!"), (V{"x", "=", "1", ".", "5", "!"}));
  EXPECT_EQ(pieces(" !!"), (V{" !!"}));
  EXPECT_EQ(pieces("end   "), (V{"end", "   "}));
  EXPECT_EQ(pieces("é字 4½ x²"), (V{"é字", " 4½", " x", "²"}));
  EXPECT_EQ(pieces("\u00a0x"), (V{"\u00a0", "x"}));
  EXPECT_EQ(pieces("it's 'tis ''s 'S 'll've're'd'm"),
            (V{"it", "'s", " '", "tis", " ''", "s", " '", "S", " '", "ll", "'ve", "'re", "'d", "'m"}));
  EXPECT_EQ(pieces("\tx\t\ty"), (V{"\t", "x", "\t", "\t", "y"}));
  EXPECT_EQ(pieces("🙂 ok"), (V{"🙂", " ok"}));
  // Bytes that are not UTF-8 are neither letters, numbers nor spaces.
  EXPECT_EQ(pieces("\xff\xfe" "ab \xc3"), (V{"\xff\xfe", "ab", " \xc3"}));
  EXPECT_TRUE(pieces("").empty());
}

TEST(Pretokenize, SplitsAsLlama3sPattern) {
  // Expected pieces from Hugging Face's Split pre-tokenizer with Llama 3's pattern on the same strings.
  using V = std::vector<std::string>;
  const auto llama3 = [](const std::string& text) {
    std::vector<std::string> out;
    for (std::string_view p : data::pretokenize(text, data::Pattern::llama3)) out.emplace_back(p);
    return out;
  };
  EXPECT_EQ(llama3("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(llama3("I'm here, don't  go"), (V{"I", "'m", " here", ",", " don", "'t", " ", " go"}));
  EXPECT_EQ(llama3("a  \n\nb"), (V{"a", "  \n\n", "b"}));
  EXPECT_EQ(llama3("123 456 1234567"), (V{"123", " ", "456", " ", "123", "456", "7"}));
  EXPECT_EQ(llama3("é字 4½ x²"), (V{"é字", " ", "4½", " x", "²"}));
  EXPECT_EQ(llama3("\u00a0x"), (V{"\u00a0x"}));
  EXPECT_EQ(llama3("it'S x'LL they'Re we'VE it'ſ it'ſx 's"),
            (V{"it", "'S", " x", "'LL", " they", "'Re", " we", "'VE", " it", "'ſ", " it", "'ſ", "x", " '", "s"}));
  EXPECT_EQ(llama3("\tx\t\ty"), (V{"\tx", "\t", "\ty"}));
  EXPECT_EQ(llama3("a.\n\nb"), (V{"a", ".\n\n", "b"}));
  EXPECT_EQ(llama3(" .\r\n x"), (V{" .\r\n", " x"}));
  EXPECT_EQ(llama3("  \n  x"), (V{"  \n", " ", " x"}));
  EXPECT_EQ(llama3("(x) [y]"), (V{"(x", ")", " [", "y", "]"}));
  EXPECT_EQ(llama3("$100,000.00"), (V{"$", "100", ",", "000", ".", "00"}));
  EXPECT_EQ(llama3("x\u2028y"), (V{"x", "\u2028y"}));
  EXPECT_EQ(llama3("end   "), (V{"end", "   "}));
  EXPECT_EQ(llama3("🙂 ok"), (V{"🙂", " ok"}));
  // Bytes that are not UTF-8 are neither letters, numbers, spaces nor line breaks.
  EXPECT_EQ(llama3("\xff" "ab\xfe\xfe\n1"), (V{"\xff" "ab", "\xfe\xfe\n", "1"}));
  EXPECT_TRUE(llama3("").empty());
  EXPECT_EQ(data::pattern_name(data::pattern_from_name("llama3")), "llama3");
  EXPECT_THAT(testing::input_error_of([] { data::pattern_from_name("gpt4"); }),
              HasSubstr("pattern \"gpt4\" is not known; expected gpt2 (GPT-2's), llama3 (Llama 3's), qwen2 "
                        "(Qwen2's) or o200k (GPT-4o's)"));
}

TEST(Tokenizer, TrainsTheMostFrequentPairsFirst) {
  // Pieces "ababab" and " abab": (a, b) occurs 5 times, then (ab, ab) 3 times; nothing else twice.
  const Tokenizer t = Tokenizer::train({"ababab abab"}, TokenizerTrainOptions().vocab_size(300));
  ASSERT_EQ(t.merges().size(), 2u);
  ASSERT_EQ(t.vocab_size(), 258);
  EXPECT_EQ(t.token_bytes(t.merges()[0].first), "a");
  EXPECT_EQ(t.token_bytes(t.merges()[0].second), "b");
  EXPECT_EQ(t.token_bytes(256), "ab");
  EXPECT_EQ(t.token_bytes(257), "abab");
  EXPECT_EQ(t.encode("ababab abab"), (std::vector<int64_t>{257, 256, t.string_to_token("Ġ"), 257}));
  // min_frequency 1 merges the pairs seen once too; vocab_size stops it.
  EXPECT_EQ(Tokenizer::train({"ababab abab"}, TokenizerTrainOptions().vocab_size(300).min_frequency(1)).vocab_size(), 260);
  EXPECT_EQ(Tokenizer::train({"ababab abab"}, TokenizerTrainOptions().vocab_size(257)).vocab_size(), 257);
  // The bytes come in the order of their byte-level characters: '!' first, the space (Ġ, U+0120) among the last.
  EXPECT_EQ(t.token_bytes(0), "!");
  EXPECT_EQ(t.token_to_string(t.string_to_token("Ġ")), "Ġ");
  EXPECT_EQ(t.token_bytes(t.string_to_token("Ġ")), " ");
}

TEST(Tokenizer, TrainingIsDeterministicAndEveryMergeMakesAToken) {
  const std::string text = test::read_file(TESSERA_SOURCE_DIR "/README.md");
  const Tokenizer a = Tokenizer::train({text}, TokenizerTrainOptions().vocab_size(600));
  const Tokenizer b = Tokenizer::train({text}, TokenizerTrainOptions().vocab_size(600));
  EXPECT_EQ(a.to_json(), b.to_json());
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  EXPECT_EQ(a.vocab_size(), 600);
  EXPECT_GE(a.merges().size(), 600u - 256u);  // more when two merges spell one token
  std::map<std::string, int64_t> id_of;
  for (int64_t id = 0; id < a.vocab_size(); ++id) id_of[a.token_bytes(id)] = id;
  EXPECT_EQ(id_of.size(), 600u);
  for (const auto& [x, y] : a.merges()) EXPECT_EQ(id_of.count(a.token_bytes(x) + a.token_bytes(y)), 1u);
  // Fewer tokens than bytes, and exactly the text back.
  const std::vector<int64_t> ids = a.encode(text);
  EXPECT_LT(ids.size(), text.size() * 2 / 3);
  EXPECT_EQ(a.decode(ids), text);
  // Another text, another tokenizer.
  EXPECT_NE(Tokenizer::train({text.substr(0, text.size() / 2)}, TokenizerTrainOptions().vocab_size(600)).fingerprint(),
            a.fingerprint());
}

TEST(Tokenizer, AnyBytesEncodeAndDecodeBack) {
  const Tokenizer t = Tokenizer::train({test::read_file(TESSERA_SOURCE_DIR "/README.md")},
                                       TokenizerTrainOptions().vocab_size(400));
  std::mt19937 gen(5);
  for (int trial = 0; trial < 50; ++trial) {
    std::string bytes(static_cast<size_t>(gen() % 300), '\0');
    for (char& c : bytes) c = static_cast<char>(gen() % (trial % 2 ? 256 : 128));
    const std::vector<int64_t> ids = t.encode(bytes);
    EXPECT_EQ(t.decode(ids), bytes) << "trial " << trial;
    for (int64_t id : ids) EXPECT_TRUE(id >= 0 && id < t.vocab_size());
  }
  EXPECT_TRUE(t.encode("").empty());
  EXPECT_EQ(t.decode({}), "");
}

TEST(Tokenizer, SpecialTokensAreMatchedAsTextLongestFirstAndNeverMerged) {
  const Tokenizer t = Tokenizer::train({"<a>b<a>b<a>b xx<|end|>xx<|end|>xx"},
                                       TokenizerTrainOptions().vocab_size(400).special_tokens({"<a>", "<a>b", "<|end|>"}));
  EXPECT_EQ(t.special_tokens().size(), 3u);
  EXPECT_EQ(t.token_bytes(0), "<a>");
  EXPECT_EQ(t.token_bytes(1), "<a>b");
  EXPECT_EQ(t.token_bytes(2), "<|end|>");
  EXPECT_TRUE(t.is_special(2));
  EXPECT_FALSE(t.is_special(3));
  // The training text's special tokens were cut out: no merge spells "<|" or "end".
  for (const auto& [x, y] : t.merges()) {
    EXPECT_EQ((t.token_bytes(x) + t.token_bytes(y)).find('|'), std::string::npos);
  }
  const std::vector<int64_t> ids = t.encode("q<a>bq<a>q<|end|>");
  const int64_t q = t.string_to_token("q");
  EXPECT_EQ(ids, (std::vector<int64_t>{q, 1, q, 0, q, 2}));
  EXPECT_EQ(t.decode(ids), "q<a>bq<a>q<|end|>");
  EXPECT_EQ(t.decode(ids, /*skip_special_tokens=*/true), "qqq");
  // Saved and read back: the same tokenizer.
  test::TempDir dir("tessera-tokenizer");
  t.save(dir.path() + "/tok.json");
  const Tokenizer back = Tokenizer::load(dir.path() + "/tok.json");
  EXPECT_EQ(back.fingerprint(), t.fingerprint());
  EXPECT_EQ(back.encode("q<a>bq<a>q<|end|>"), ids);
  EXPECT_EQ(back.to_json(), t.to_json());
}

/// A tokenizer.json of the 256 bytes and the merges given (byte-level spellings), edited by `edit`.
json base_json(const std::vector<std::string>& merges) {
  json doc = json::parse(Tokenizer::train({}, TokenizerTrainOptions().vocab_size(256)).to_json());
  for (const std::string& m : merges) {
    const size_t space = m.find(' ');
    doc["model"]["vocab"][m.substr(0, space) + m.substr(space + 1)] = doc["model"]["vocab"].size();
    doc["model"]["merges"].push_back(m);
  }
  return doc;
}

Tokenizer load_json(const json& doc, const std::string& name = "tok.json") {
  test::TempDir dir("tessera-tokenizer");
  test::write_file(dir.path() + "/" + name, doc.dump());
  return Tokenizer::load(dir.path() + "/" + name);
}

/// The bytes of each token of `ids`.
std::vector<std::string> token_texts(const Tokenizer& t, const std::vector<int64_t>& ids) {
  std::vector<std::string> out;
  for (int64_t id : ids) out.push_back(t.token_bytes(id));
  return out;
}

TEST(Tokenizer, EncodingAppliesMergesByRankLeftmostFirst) {
  const Tokenizer bc_first = load_json(base_json({"b c", "a b"}));
  const Tokenizer ab_first = load_json(base_json({"a b", "b c"}));
  EXPECT_EQ(bc_first.decode({bc_first.encode("abc")[1]}), "bc");
  EXPECT_EQ(bc_first.encode("abc").size(), 2u);
  EXPECT_EQ(ab_first.decode({ab_first.encode("abc")[0]}), "ab");
  // Equal ranks: the leftmost pair; "aaa" with a+a gives aa, a.
  const Tokenizer aa = load_json(base_json({"a a"}));
  const std::vector<int64_t> ids = aa.encode("aaa");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(aa.token_bytes(ids[0]), "aa");
  EXPECT_EQ(aa.token_bytes(ids[1]), "a");
  // A merge's result merges again: a b, ab c.
  const Tokenizer abc = load_json(base_json({"a b", "ab c"}));
  EXPECT_EQ(abc.encode("abcabc").size(), 2u);
  // ignore_merges (Llama 3's): a piece that is a token as a whole is that token; other pieces merge as before.
  json whole = base_json({"b c", "a b", "ab c"});
  EXPECT_EQ(token_texts(load_json(whole), load_json(whole).encode("abc")), (std::vector<std::string>{"a", "bc"}));
  whole["model"]["ignore_merges"] = true;
  const Tokenizer ignoring = load_json(whole);
  EXPECT_TRUE(ignoring.ignore_merges());
  EXPECT_EQ(token_texts(ignoring, ignoring.encode("abc abcx")), (std::vector<std::string>{"abc", " ", "a", "bc", "x"}));
  EXPECT_EQ(json::parse(ignoring.to_json())["model"]["ignore_merges"], true);
  EXPECT_NE(ignoring.fingerprint(), load_json(base_json({"b c", "a b", "ab c"})).fingerprint());
  // add_prefix_space: a space before each text that does not start with one (RoBERTa's tokenizers).
  json prefixed = base_json({"Ġ a"});
  prefixed["pre_tokenizer"]["add_prefix_space"] = true;
  const Tokenizer p = load_json(prefixed);
  EXPECT_EQ(p.decode(p.encode("a")), " a");
  EXPECT_EQ(p.encode("a").size(), 1u);
  EXPECT_EQ(p.decode(p.encode(" a")), " a");
}

TEST(Tokenizer, TrainsWithLlama3sPatternAndWritesItAsHuggingFaceDoes) {
  const std::string text = test::read_file(TESSERA_SOURCE_DIR "/README.md");
  const Tokenizer gpt2 = Tokenizer::train({text}, TokenizerTrainOptions().vocab_size(600));
  const Tokenizer llama3 = Tokenizer::train({text}, TokenizerTrainOptions().vocab_size(600).pattern("llama3"));
  EXPECT_EQ(llama3.pattern(), data::Pattern::llama3);
  EXPECT_FALSE(llama3.ignore_merges());
  EXPECT_NE(llama3.merges(), gpt2.merges());
  EXPECT_NE(llama3.fingerprint(), gpt2.fingerprint());
  EXPECT_THAT(llama3.describe(), HasSubstr("byte-level BPE (Llama 3's pattern), 600 tokens"));
  // No token is four digits or more, nor a line break then a letter: the pattern makes no such pieces.
  for (int64_t id = 256; id < llama3.vocab_size(); ++id) {
    const std::string& bytes = llama3.token_bytes(id);
    EXPECT_FALSE(bytes.size() > 3 && bytes.find_first_not_of("0123456789") == std::string::npos) << bytes;
    EXPECT_FALSE(bytes.size() > 1 && bytes[0] == '\n' && std::isalpha(static_cast<unsigned char>(bytes[1]))) << bytes;
  }
  const json doc = json::parse(llama3.to_json());
  EXPECT_EQ(doc["pre_tokenizer"]["type"], "Sequence");
  EXPECT_EQ(doc["pre_tokenizer"]["pretokenizers"][0]["type"], "Split");
  EXPECT_EQ(doc["pre_tokenizer"]["pretokenizers"][0]["behavior"], "Isolated");
  EXPECT_EQ(doc["pre_tokenizer"]["pretokenizers"][1]["use_regex"], false);
  const Tokenizer back = load_json(doc);
  EXPECT_EQ(back.pattern(), data::Pattern::llama3);
  EXPECT_EQ(back.fingerprint(), llama3.fingerprint());
  EXPECT_EQ(back.encode(text), llama3.encode(text));
  EXPECT_EQ(llama3.decode(llama3.encode(text)), text);
  EXPECT_THAT(testing::input_error_of([] { Tokenizer::train({"x"}, TokenizerTrainOptions().pattern("gpt4")); }),
              HasSubstr("pattern"));
}

// Qwen2's pattern with NFC, GPT-4o's pattern, a regex of one's own, and NFKC: trained, written as Hugging Face writes
// them, read back to the same tokenizer.
TEST(Tokenizer, TrainsWithEachPatternOrARegexAndNfcAndReadsThemBack) {
  const std::string text = test::read_file(TESSERA_SOURCE_DIR "/README.md") +
                           " Cafe\xCC\x81 caf\xC3\xA9 1234567 HTTPServer don'T x/y\n";  // é twice: decomposed, composed
  const Tokenizer qwen2 =
      Tokenizer::train({text}, TokenizerTrainOptions().vocab_size(600).pattern("qwen2").normalizer("nfc"));
  EXPECT_EQ(qwen2.pattern(), data::Pattern::qwen2);
  EXPECT_EQ(qwen2.normalizer(), "NFC");
  EXPECT_THAT(qwen2.describe(), HasSubstr("byte-level BPE (Qwen2's pattern), NFC-normalized, 600 tokens"));
  EXPECT_EQ(qwen2.encode("e\xCC\x81"), qwen2.encode("\xC3\xA9"));
  EXPECT_EQ(qwen2.decode(qwen2.encode("Cafe\xCC\x81")), "Caf\xC3\xA9");  // the normalized text
  for (int64_t id = 256; id < qwen2.vocab_size(); ++id) {  // each digit a piece: no token holds two
    const std::string& bytes = qwen2.token_bytes(id);
    EXPECT_FALSE(std::count_if(bytes.begin(), bytes.end(), [](char c) { return std::isdigit(c); }) > 1) << bytes;
  }
  const Tokenizer o200k = Tokenizer::train({text}, TokenizerTrainOptions().vocab_size(600).pattern("o200k"));
  EXPECT_EQ(o200k.pattern(), data::Pattern::o200k);
  EXPECT_EQ(data::pretokenize("HTTPServer don'T x/y\n", data::Pattern::o200k),
            (std::vector<std::string_view>{"HTTPServer", " don'T", " x", "/y", "\n"}));
  const Tokenizer own = Tokenizer::train({text}, TokenizerTrainOptions().vocab_size(600).split_regex("\\p{L}+|\\p{N}"));
  EXPECT_EQ(own.pattern(), data::Pattern::custom);
  EXPECT_THAT(own.describe(), HasSubstr("byte-level BPE (1 Split pre-tokenizer), 600 tokens"));
  EXPECT_EQ(json::parse(own.pre_tokenizer_json())["pretokenizers"][0]["pattern"]["Regex"], "\\p{L}+|\\p{N}");
  // NFKC (or NFKD): compatibility characters become what they stand for before the text is cut.
  const Tokenizer nfkc = Tokenizer::train({text}, TokenizerTrainOptions().vocab_size(600).normalizer("nfkc"));
  EXPECT_EQ(nfkc.normalizer(), "NFKC");
  EXPECT_EQ(nfkc.encode("\xEF\xAC\x81ne \xEF\xBC\xA1"), nfkc.encode("fine A"));  // the ligature ﬁ, a full-width A
  EXPECT_EQ(nfkc.encode("e\xCC\x81"), nfkc.encode("\xC3\xA9"));
  std::set<std::string> fingerprints;
  for (const Tokenizer* t : {&qwen2, &o200k, &own, &nfkc}) {
    const json doc = json::parse(t->to_json());
    const Tokenizer back = load_json(doc);
    EXPECT_EQ(back.pattern(), t->pattern());
    EXPECT_EQ(back.normalizer(), t->normalizer());
    EXPECT_EQ(back.fingerprint(), t->fingerprint());
    EXPECT_EQ(back.encode(text), t->encode(text));
    EXPECT_EQ(back.to_json(), t->to_json());
    fingerprints.insert(t->fingerprint());
  }
  EXPECT_EQ(fingerprints.size(), 4u);
  EXPECT_EQ(json::parse(qwen2.to_json())["normalizer"], json({{"type", "NFC"}}));
  EXPECT_THAT(testing::input_error_of(
                  [] { Tokenizer::train({"x"}, TokenizerTrainOptions().pattern("qwen2").split_regex("x")); }),
              HasSubstr("both pattern \"qwen2\" and split_regex are given"));
  EXPECT_THAT(testing::input_error_of([] { Tokenizer::train({"x"}, TokenizerTrainOptions().split_regex("(x")); }),
              HasSubstr("split_regex \"(x\": at character 0: a ( without its )"));
  EXPECT_THAT(testing::input_error_of([] { Tokenizer::train({"x"}, TokenizerTrainOptions().normalizer("nfx")); }),
              HasSubstr("normalizer: \"nfx\" is not allowed; expected one of: none, nfc, nfd, nfkc, nfkd"));
  EXPECT_THAT(testing::input_error_of([] { data::pretokenize("x", data::Pattern::custom); }),
              HasSubstr("a custom pre-tokenizer is a tokenizer's own"));
}

/// A tokenizer.json of the 256 bytes, merge "a b", and added tokens with each of Hugging Face's flags.
json flagged_json() {
  json doc = base_json({"a b"});  // "ab" is id 256
  const auto add = [&](int64_t id, const std::string& content, json flags) {
    flags["id"] = id;
    flags["content"] = content;
    doc["added_tokens"].push_back(flags);
  };
  add(257, "<m>", {{"lstrip", true}, {"special", true}});
  add(258, "<r>", {{"rstrip", true}, {"special", false}});
  add(259, "xy", {{"single_word", true}, {"special", false}, {"normalized", true}});
  add(260, "<m>z", {{"normalized", true}, {"special", false}});  // the first pass cuts "<m>" out of it
  add(256, "ab", {{"special", false}, {"normalized", true}});     // a merge makes it too
  doc["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", {"<m>", 257}}, {"sep", {"<r>", 258}}};
  return doc;
}

TEST(Tokenizer, AddedTokensMatchWithHuggingFacesFlagsAndThePostProcessorAddsItsTokens) {
  using V = std::vector<std::string>;
  const Tokenizer t = load_json(flagged_json());
  ASSERT_EQ(t.vocab_size(), 261);
  EXPECT_EQ(token_texts(t, t.encode("q  <m> b")), (V{"q", "<m>", " ", "b"}));  // lstrip takes the spaces before
  EXPECT_EQ(token_texts(t, t.encode("<r> \t q")), (V{"<r>", "q"}));            // rstrip those after
  // single_word: only where no word character (letters, digits, marks, '_') touches it.
  EXPECT_EQ(token_texts(t, t.encode("xy wxy xy_ xy\u0301 xy-")),
            (V{"xy", " ", "w", "x", "y", " ", "x", "y", "_", " ", "x", "y", "\xcc", "\x81", " ", "xy", "-"}));
  EXPECT_EQ(token_texts(t, t.encode("<m>z")), (V{"<m>", "z"}));
  EXPECT_EQ(token_texts(t, t.encode("cab")), (V{"c", "ab"}));
  // encode(text, true) adds the post-processor's tokens; decode(…, true) leaves out the special ones only.
  const std::vector<int64_t> ids = t.encode("q", true);
  EXPECT_EQ(token_texts(t, ids), (V{"<m>", "q", "<r>"}));
  EXPECT_EQ(t.prefix_ids(), (std::vector<int64_t>{257}));
  EXPECT_EQ(t.suffix_ids(), (std::vector<int64_t>{258}));
  EXPECT_EQ(t.decode(ids, true), "q<r>");
  EXPECT_TRUE(t.is_special(257));
  EXPECT_FALSE(t.is_special(258));
  EXPECT_FALSE(t.is_special(256));
  EXPECT_EQ(t.special_tokens(), (V{"<m>"}));
  ASSERT_EQ(t.added_tokens().size(), 5u);
  EXPECT_EQ(t.added_tokens()[0].content, "ab");  // by id
  EXPECT_TRUE(t.added_tokens()[1].lstrip && t.added_tokens()[2].rstrip && t.added_tokens()[3].single_word);
  EXPECT_THAT(t.describe(), HasSubstr("261 tokens (1 special, 4 other added), 1 merges; encode(text, true) gives <m> … <r>"));
  // Written and read back: the same flags, the same post-processor.
  const Tokenizer back = load_json(json::parse(t.to_json()));
  EXPECT_EQ(back.fingerprint(), t.fingerprint());
  EXPECT_EQ(back.to_json(), t.to_json());
  EXPECT_EQ(back.encode("q  <m> xy", true), t.encode("q  <m> xy", true));
  // The flags and the post-processor are part of the fingerprint.
  json plain = flagged_json();
  plain["post_processor"] = nullptr;
  EXPECT_NE(load_json(plain).fingerprint(), t.fingerprint());
  plain = flagged_json();
  plain["added_tokens"][0]["lstrip"] = false;
  EXPECT_NE(load_json(plain).fingerprint(), t.fingerprint());
  // A template in a Sequence after ByteLevel: its single template's tokens, several ids each.
  json templated = flagged_json();
  templated["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       {{{"type", "ByteLevel"}},
        {{"type", "TemplateProcessing"},
         {"single", {{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"SpecialToken", {{"id", "end"}, {"type_id", 0}}}}}},
         {"special_tokens", {{"end", {{"id", "end"}, {"ids", {258, 257}}, {"tokens", {"<r>", "<m>"}}}}}}}}}};
  EXPECT_EQ(token_texts(load_json(templated), load_json(templated).encode("q", true)), (V{"q", "<r>", "<m>"}));
}

TEST(Tokenizer, TrainsWithATemplateThatHuggingFacesTemplateProcessingReads) {
  const Tokenizer t = Tokenizer::train(
      {"ab ab"}, TokenizerTrainOptions().vocab_size(300).special_tokens({"<s>", "</s>"}).single_template("<s> $A </s> </s>"));
  EXPECT_EQ(t.prefix_ids(), (std::vector<int64_t>{0}));
  EXPECT_EQ(t.suffix_ids(), (std::vector<int64_t>{1, 1}));
  const std::vector<int64_t> ab = t.encode("ab");
  std::vector<int64_t> around = {0};
  around.insert(around.end(), ab.begin(), ab.end());
  around.insert(around.end(), {1, 1});
  EXPECT_EQ(t.encode("ab", true), around);
  const json doc = json::parse(t.to_json());
  EXPECT_EQ(doc["post_processor"]["type"], "TemplateProcessing");
  EXPECT_EQ(doc["post_processor"]["pair"].size(), 8u);  // <s> $A </s> </s> <s> $B:1 </s>:1 </s>:1
  EXPECT_EQ(doc["post_processor"]["pair"][5]["Sequence"]["id"], "B");
  EXPECT_EQ(doc["post_processor"]["pair"][5]["Sequence"]["type_id"], 1);
  EXPECT_EQ(load_json(doc).fingerprint(), t.fingerprint());
  EXPECT_NE(Tokenizer::train({"ab ab"}, TokenizerTrainOptions().vocab_size(300).special_tokens({"<s>", "</s>"}))
                .fingerprint(),
            t.fingerprint());
  using testing::input_error_of;
  EXPECT_THAT(input_error_of([] {
                Tokenizer::train({"x"}, TokenizerTrainOptions().special_tokens({"<s>"}).single_template("$A <e>"));
              }),
              HasSubstr("single_template \"$A <e>\" holds \"<e>\", which is neither $A nor one of the special tokens [<s>]"));
  EXPECT_THAT(input_error_of([] {
                Tokenizer::train({"x"}, TokenizerTrainOptions().special_tokens({"<s>"}).single_template("$A <s> $A"));
              }),
              HasSubstr("holds $A 2 times; expected once"));
}

TEST(Tokenizer, ReadsGpt2sVocabAndMergesFiles) {
  const Tokenizer t = Tokenizer::train({test::read_file(TESSERA_SOURCE_DIR "/README.md")},
                                       TokenizerTrainOptions().vocab_size(500));
  const json doc = json::parse(t.to_json());
  test::TempDir dir("tessera-tokenizer");
  test::write_file(dir.path() + "/vocab.json", doc["model"]["vocab"].dump());
  std::string merges = "#version: 0.2\n";
  for (const auto& m : doc["model"]["merges"]) merges += m.get<std::string>() + "\n";
  test::write_file(dir.path() + "/merges.txt", merges);
  const Tokenizer gpt2 = Tokenizer::load(dir.path());
  EXPECT_EQ(gpt2.fingerprint(), t.fingerprint());
  // A folder with tokenizer.json reads that; merges as ["a", "b"] pairs (tokenizers >= 0.20) read alike.
  json pairs = doc;
  for (auto& m : pairs["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    m = json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  test::write_file(dir.path() + "/tokenizer.json", pairs.dump());
  EXPECT_EQ(Tokenizer::load(dir.path()).fingerprint(), t.fingerprint());
  EXPECT_THAT(t.describe(), HasSubstr("byte-level BPE, 500 tokens (0 special), "));
}

TEST(Tokenizer, RefusesWhatItCannotReadOrTrainNamingTheFileAndWhy) {
  using testing::input_error_of;
  EXPECT_THAT(input_error_of([] { Tokenizer::train({"x"}, TokenizerTrainOptions().vocab_size(200)); }),
              HasSubstr("vocab_size 200 is below the 0 special tokens + 256 bytes = 256"));
  EXPECT_THAT(input_error_of([] { Tokenizer::train({"x"}, TokenizerTrainOptions().special_tokens({"<s>", "<s>"})); }),
              HasSubstr("special token \"<s>\" is given twice"));
  EXPECT_THAT(input_error_of([] { Tokenizer::train({"x"}, TokenizerTrainOptions().special_tokens({""})); }),
              HasSubstr("empty token"));
  EXPECT_THAT(input_error_of([] { Tokenizer::train({"x"}, TokenizerTrainOptions().special_tokens({"\xff"})); }),
              HasSubstr("not valid UTF-8"));
  EXPECT_THAT(input_error_of([] { Tokenizer::load("/nonexistent/tok.json"); }),
              HasSubstr("tokenizer /nonexistent/tok.json does not exist"));
  test::TempDir empty("tessera-tokenizer");
  EXPECT_THAT(input_error_of([&] { Tokenizer::load(empty.path()); }),
              HasSubstr("holds neither tokenizer.json, vocab.json + merges.txt (GPT-2's), spiece.model (T5's) nor "
                        "vocab.txt (BERT's)"));
  test::write_file(empty.path() + "/bad.json", "{\"model\": ");
  EXPECT_THAT(input_error_of([&] { Tokenizer::load(empty.path() + "/bad.json"); }),
              HasSubstr("bad.json: not valid JSON"));

  const auto refusal = [](const std::function<void(json&)>& edit) {
    json doc = base_json({"a b"});
    edit(doc);
    return testing::input_error_of([&] { load_json(doc); });
  };
  EXPECT_THAT(refusal([](json& d) { d["model"]["type"] = "WordLevel"; }),
              HasSubstr("tok.json: model type WordLevel; Tessera reads BPE (byte-level or SentencePiece-style), "
                        "Unigram and WordPiece tokenizers"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["type"] = "Unigram"; }),  // with GPT-2's ByteLevel pre-tokenizer
              HasSubstr("Unigram with pre_tokenizer {\"add_prefix_space\":false"));
  EXPECT_THAT(refusal([](json& d) {  // T5's: Unigram with SentencePiece's normalizer and Metaspace
                d["model"]["type"] = "Unigram";
                d["normalizer"] = {{"type", "Precompiled"}};
                d["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}};
                d["decoder"] = nullptr;
              }),
              HasSubstr("normalizer Precompiled's precompiled_charsmap is null, expected base64 text"));
  EXPECT_THAT(refusal([](json& d) { d["normalizer"] = {{"type", "Lowercase"}}; }),
              HasSubstr("normalizer {\"type\":\"Lowercase\"} before a byte-level BPE pre-tokenizer; Tessera reads NFC "
                        "(Qwen2's), NFD, NFKC, NFKD or none there"));
  EXPECT_THAT(refusal([](json& d) { d["pre_tokenizer"] = {{"type", "Whitespace"}}; }),
              HasSubstr("pre_tokenizer is Whitespace"));
  EXPECT_THAT(refusal([](json& d) {
                d["pre_tokenizer"] = {{"type", "Sequence"},
                                      {"pretokenizers", json::array({d["pre_tokenizer"], d["pre_tokenizer"]})}};
              }),
              HasSubstr("pre_tokenizer is a Sequence whose item 0 is ByteLevel (expected Split pre-tokenizers, then "
                        "ByteLevel)"));
  EXPECT_THAT(refusal([](json& d) { d["pre_tokenizer"]["use_regex"] = false; }), HasSubstr("use_regex: false"));
  EXPECT_THAT(refusal([](json& d) { d["pre_tokenizer"] = nullptr; }),
              HasSubstr("pre_tokenizer is null but the decoder is ByteLevel; a byte-level BPE tokenizer needs the "
                        "ByteLevel pre-tokenizer"));
  // Llama 3's Split + ByteLevel, and what differs from it.
  const json llama3 = json::parse(
      Tokenizer::train({}, TokenizerTrainOptions().vocab_size(256).pattern("llama3")).to_json())["pre_tokenizer"];
  EXPECT_EQ(load_json([&] {
              json d = base_json({"a b"});
              d["pre_tokenizer"] = llama3;
              return d;
            }()).pattern(),
            data::Pattern::llama3);
  const auto llama3_refusal = [&](const std::function<void(json&)>& edit) {
    return refusal([&](json& d) {
      d["pre_tokenizer"] = llama3;
      edit(d["pre_tokenizer"]["pretokenizers"]);
    });
  };
  // Other Splits are read (a custom pre-tokenizer), and what is wrong in them is refused.
  const auto with_llama3 = [&](const std::function<void(json&)>& edit) {
    json d = base_json({"a b"});
    d["pre_tokenizer"] = llama3;
    edit(d["pre_tokenizer"]["pretokenizers"]);
    return load_json(d);
  };
  for (const auto& edit : std::vector<std::function<void(json&)>>{
           [](json& p) { p[0]["pattern"]["Regex"] = "\\p{L}+|\\s+"; }, [](json& p) { p[0]["behavior"] = "Removed"; },
           [](json& p) { p[0]["invert"] = true; }, [](json& p) { p[1]["use_regex"] = true; },
           [](json& p) { p[0]["pattern"] = {{"String", " "}}; }})
    EXPECT_EQ(with_llama3(edit).pattern(), data::Pattern::custom);
  EXPECT_THAT(llama3_refusal([](json& p) { p[0]["pattern"]["Regex"] = "\\p{Han}+|(?<=a)b"; }),
              HasSubstr("pre_tokenizer Split pattern \"\\p{Han}+|(?<=a)b\": at character 7: the property {Han}: "
                        "Tessera knows the general categories"));
  EXPECT_THAT(llama3_refusal([](json& p) { p[0]["pattern"] = {{"Regex", 3}}; }),
              HasSubstr("pre_tokenizer Split pattern {\"Regex\":3} is neither {\"Regex\": \"...\"} nor"));
  EXPECT_THAT(llama3_refusal([](json& p) { p[0]["behavior"] = "Drop"; }),
              HasSubstr("pre_tokenizer Split behavior \"Drop\" is not one of \"Removed\", \"Isolated\""));
  EXPECT_THAT(llama3_refusal([](json& p) { p[0]["invert"] = "no"; }),
              HasSubstr("pre_tokenizer Split invert \"no\" is not true or false"));
  EXPECT_THAT(llama3_refusal([](json& p) { p[1]["add_prefix_space"] = true; }),
              HasSubstr("is Splits then ByteLevel with add_prefix_space: true"));
  EXPECT_THAT(llama3_refusal([](json& p) { std::swap(p[0], p[1]); }),
              HasSubstr("pre_tokenizer is a Sequence of 2 pre-tokenizers not ending in ByteLevel"));
  EXPECT_THAT(llama3_refusal([](json& p) { p.insert(p.begin(), json{{"type", "Digits"}}); }),
              HasSubstr("pre_tokenizer is a Sequence whose item 0 is Digits"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["ignore_merges"] = "yes"; }),
              HasSubstr("model.ignore_merges is \"yes\", expected true or false"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["dropout"] = 0.1; }), HasSubstr("BPE dropout is on"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["continuing_subword_prefix"] = "##"; }),
              HasSubstr("continuing_subword_prefix is set"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["vocab"]["zz"] = 300; }),
              HasSubstr("no token has id 257 (the ids run to 300)"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["vocab"]["ab"] = 7; }), HasSubstr("vocabulary id 7 is given to both"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["vocab"]["日"] = 257; }),
              HasSubstr("vocabulary entry \"日\" (id 257) is not spelt in GPT-2's byte-level characters"));
  EXPECT_THAT(refusal([](json& d) {  // byte 0x0a's id given to another token
                const json id = d["model"]["vocab"]["Ċ"];
                d["model"]["vocab"].erase("Ċ");
                d["model"]["vocab"]["xy"] = id;
              }),
              HasSubstr("no token for byte 0x0a (\"Ċ\")"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["merges"].push_back("a q"); }),
              HasSubstr("merge 1 (\"a q\"): \"aq\" is not in the vocabulary"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["merges"].push_back("abc"); }),
              HasSubstr("merge 1: \"abc\" is not two tokens separated by one space"));
  EXPECT_THAT(refusal([](json& d) { d["added_tokens"].push_back({{"id", 257}}); }),
              HasSubstr("lacks an integer id >= 0 or a non-empty content"));
  const auto flagged_refusal = [](const std::function<void(json&)>& edit) {
    json doc = flagged_json();
    edit(doc);
    return testing::input_error_of([&] { load_json(doc); });
  };
  EXPECT_THAT(flagged_refusal([](json& d) { d["added_tokens"][0]["lstrip"] = "yes"; }),
              HasSubstr("added token \"<m>\": lstrip is \"yes\", expected true or false"));
  EXPECT_THAT(flagged_refusal([](json& d) { d["added_tokens"][0]["content"] = "<r>"; }),
              HasSubstr("added tokens 257 and 258 are both \"<r>\""));
  EXPECT_THAT(flagged_refusal([](json& d) { d["added_tokens"][0]["id"] = 258; }),
              HasSubstr("added tokens \"<m>\" and \"<r>\" both have id 258"));
  EXPECT_THAT(flagged_refusal([](json& d) { d["post_processor"] = {{"type", "BertPreTokenizer"}}; }),
              HasSubstr("post_processor BertPreTokenizer; Tessera reads TemplateProcessing, RobertaProcessing"));
  EXPECT_THAT(flagged_refusal([](json& d) {
                d["post_processor"] = {{"type", "Sequence"}, {"processors", {d["post_processor"], d["post_processor"]}}};
              }),
              HasSubstr("a Sequence of two processors that add tokens"));
  EXPECT_THAT(flagged_refusal([](json& d) { d["post_processor"]["cls"] = {"<x>", 999}; }),
              HasSubstr("the post_processor adds id 999, beyond the 261 tokens"));
  EXPECT_THAT(flagged_refusal([](json& d) { d["post_processor"]["sep"] = 3; }),
              HasSubstr("post_processor RobertaProcessing.sep is 3, expected [token, id]"));
  const json template_of = {{"type", "TemplateProcessing"},
                            {"single", {{{"SpecialToken", {{"id", "<m>"}, {"type_id", 0}}}}}},
                            {"special_tokens", {{"<m>", {{"id", "<m>"}, {"ids", {257}}, {"tokens", {"<m>"}}}}}}};
  EXPECT_THAT(flagged_refusal([&](json& d) { d["post_processor"] = template_of; }),
              HasSubstr("TemplateProcessing's single template has no $A"));
  EXPECT_THAT(flagged_refusal([&](json& d) {
                d["post_processor"] = template_of;
                d["post_processor"]["single"][0]["SpecialToken"]["id"] = "<q>";
              }),
              HasSubstr("which is neither $A nor one of its special_tokens"));

  const Tokenizer t = load_json(base_json({}));
  EXPECT_THAT(input_error_of([&] { t.decode({5, 256}); }), HasSubstr("token id 256 is outside the vocabulary [0, 256)"));
}

/// A Llama 2-style tokenizer.json (BPE over characters: Prepend "▁" and Replace " " by "▁", byte fallback, unknown
/// token fused, decoder Replace, ByteFallback, Fuse, Strip) over a small vocabulary.
json sentencepiece_json() {
  std::vector<std::string> vocab = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) vocab.push_back(fmt::format("<0x{:02X}>", b));
  for (const char* t : {"\u2581", "a", "b", "c", "\u2581a", "ab", "\u2581ab", "\u00e9"}) vocab.push_back(t);
  json v = json::object();
  for (size_t id = 0; id < vocab.size(); ++id) v[vocab[id]] = id;
  const auto replace = [](const char* from, const char* to) {
    return json{{"type", "Replace"}, {"pattern", {{"String", from}}}, {"content", to}};
  };
  return {{"version", "1.0"},
          {"added_tokens", json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                        {{"id", 1}, {"content", "<s>"}, {"special", true}},
                                        {{"id", 2}, {"content", "</s>"}, {"special", true}}})},
          {"normalizer",
           {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\u2581"}}, replace(" ", "\u2581")}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {replace("\u2581", " "), {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true}, {"vocab", v},
            {"merges", json::array({"\u2581 a", "a b", "\u2581a b"})}}}};
}

TEST(SentencePiece, MergesCharactersFallsBackToBytesAndDecodesAsLlama2) {
  const Tokenizer t = load_json(sentencepiece_json());
  EXPECT_FALSE(t.byte_level());
  EXPECT_EQ(t.vocab_size(), 267);
  EXPECT_EQ(t.describe(), "SentencePiece-style BPE, 267 tokens (3 special), 3 merges, byte fallback, unknown <unk>");
  const int64_t space = 259, a = 260, c = 262, space_ab = 265, e_acute = 266;
  EXPECT_EQ(t.encode("ab"), (std::vector<int64_t>{space_ab}));  // ▁ a → ▁a, then ▁a b → ▁ab
  EXPECT_EQ(t.encode("ab c"), (std::vector<int64_t>{space_ab, space, c}));
  EXPECT_EQ(t.encode("ba"), (std::vector<int64_t>{space, 261, a}));
  // Characters without a token: their bytes' tokens (<0xXX> is id 3 + the byte).
  EXPECT_EQ(t.encode("x\u00e9\u00e4"), (std::vector<int64_t>{space, 3 + 'x', e_acute, 3 + 0xC3, 3 + 0xA4}));
  EXPECT_EQ(t.decode(t.encode("ab c x\u00e9\u00e4")), "ab c x\u00e9\u00e4");  // the prepended space stripped
  EXPECT_EQ(t.decode({3 + 0xC3}), "\uFFFD");                                 // bytes that are not UTF-8
  EXPECT_EQ(t.decode({3 + 0xC3, 3 + 0xC3, a}), "\uFFFD\uFFFDa");
  // Each text between added tokens is normalized on its own, so each gets its "▁" (as in Hugging Face).
  EXPECT_EQ(t.encode("a<s>a"), (std::vector<int64_t>{263, 1, 263}));
  EXPECT_EQ(t.decode({263, 1, 263}), "a<s> a");
  EXPECT_EQ(t.decode({263, 1, 263}, true), "a a");
  EXPECT_EQ(t.token_to_string(space_ab), "\u2581ab");
  EXPECT_EQ(t.string_to_token("\u2581ab"), space_ab);
  EXPECT_EQ(t.string_to_token("<0x41>"), 3 + 0x41);

  // Without byte fallback: the unknown token, fused over consecutive characters or one per character; or nothing.
  json doc = sentencepiece_json();
  doc["model"]["byte_fallback"] = false;
  EXPECT_EQ(load_json(doc).encode("axy\u00e4b"), (std::vector<int64_t>{263, 0, 261}));
  doc["model"]["fuse_unk"] = false;
  EXPECT_EQ(load_json(doc).encode("axy\u00e4b"), (std::vector<int64_t>{263, 0, 0, 0, 261}));
  doc["model"]["unk_token"] = nullptr;
  EXPECT_EQ(load_json(doc).encode("axy\u00e4b"), (std::vector<int64_t>{space_ab}));  // ▁ a b merge

  // A token with "▁" after another character: merges may join across words, so the text is one word (as Hugging
  // Face's); without one, the text is encoded word by word, to the same ids.
  doc = sentencepiece_json();
  doc["model"]["vocab"]["b\u2581"] = 267;
  doc["model"]["merges"] = json::array({"b \u2581", "\u2581 a"});
  EXPECT_EQ(load_json(doc).encode("b a"), (std::vector<int64_t>{space, 267, a}));
  doc["model"]["merges"] = json::array({"\u2581 a"});
  EXPECT_EQ(load_json(doc).encode("b a"), (std::vector<int64_t>{space, 261, 263}));

  // Metaspace instead of the normalizer: "▁" first only where the text starts (prepend_scheme first), split at each
  // "▁"; its decoder drops every "▁" of the first token and makes spaces of the others.
  doc = sentencepiece_json();
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", true}};
  doc["decoder"] = doc["pre_tokenizer"];
  const Tokenizer m = load_json(doc);
  EXPECT_EQ(m.encode("a<s>a ab"), (std::vector<int64_t>{263, 1, a, space_ab}));
  EXPECT_EQ(m.decode({space, 263, space_ab}), " a ab");
  EXPECT_EQ(m.decode({263, 263}), "a a");
  // Written back as read; Hugging Face reads both (tests/core/tokenizer_interop_test.cpp).
  const json written = json::parse(m.to_json());
  EXPECT_EQ(written["pre_tokenizer"], doc["pre_tokenizer"]);
  EXPECT_EQ(written["model"]["merges"][0], json::array({"\u2581", "a"}));
  EXPECT_EQ(load_json(written).fingerprint(), m.fingerprint());
  EXPECT_NE(m.fingerprint(), t.fingerprint());
}

TEST(SentencePiece, RefusesWhatItCannotReadNamingTheFileAndWhy) {
  const auto refusal = [](const std::function<void(json&)>& edit) {
    json doc = sentencepiece_json();
    edit(doc);
    return testing::input_error_of([&] { load_json(doc); });
  };
  EXPECT_THAT(refusal([](json& d) { d["normalizer"] = {{"type", "BertNormalizer"}}; }),
              HasSubstr("tok.json: SentencePiece-style tokenizer with normalizer BertNormalizer; Tessera reads Prepend, "
                        "Replace"));
  EXPECT_THAT(refusal([](json& d) { d["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", "(?<=a) +"}}; }),
              HasSubstr("normalizer Replace's regex {\"Regex\":\"(?<=a) +\"}: "));
  EXPECT_THAT(refusal([](json& d) { d["normalizer"]["normalizers"][1]["pattern"] = {{"String", ""}}; }),
              HasSubstr("normalizer Replace's pattern is {\"String\":\"\"}; Tessera reads a Replace of a non-empty "
                        "string"));
  EXPECT_THAT(refusal([](json& d) { d["decoder"]["decoders"][1] = {{"type", "CTC"}}; }),
              HasSubstr("SentencePiece-style BPE with decoder CTC"));
  EXPECT_THAT(refusal([](json& d) { d["decoder"]["decoders"][3]["start"] = -1; }),
              HasSubstr("decoder Strip's start is -1, expected an integer >= 0"));
  EXPECT_THAT(refusal([](json& d) { d["decoder"]["decoders"][3]["content"] = "ab"; }),
              HasSubstr("decoder Strip's content is \"ab\", expected one character"));
  EXPECT_THAT(refusal([](json& d) {
                d["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "sometimes"}};
              }),
              HasSubstr("Metaspace's prepend_scheme is \"sometimes\", expected always, first or never"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["unk_token"] = "[UNK]"; }),
              HasSubstr("model.unk_token \"[UNK]\" is not in the vocabulary"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["byte_fallback"] = 1; }),
              HasSubstr("model.byte_fallback is 1, expected true or false"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["merges"].push_back("c c"); }),
              HasSubstr("merge 3 (\"c c\"): \"cc\" is not in the vocabulary"));
  EXPECT_THAT(refusal([](json& d) { d["added_tokens"].push_back({{"id", 267}, {"content", "ab"}}); }),
              HasSubstr("added token \"ab\" has id 267, but the vocabulary gives it id 264"));
}

/// A BERT-style WordPiece tokenizer.json (uncased BertNormalizer, BertPreTokenizer, [CLS] $A [SEP], the WordPiece
/// decoder) over a small vocabulary.
json wordpiece_json() {
  const std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un",  "##aff", "##able",
                                          "hello", "world", ",",     "!",     "'",     "t",      "don", "a",
                                          "##a",   "cafe",  "中",    "##s",   "."};
  json v = json::object(), added = json::array();
  for (size_t id = 0; id < vocab.size(); ++id) v[vocab[id]] = id;
  for (int id = 0; id < 5; ++id) {
    added.push_back({{"id", id}, {"content", vocab[id]}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer",
           {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true}, {"strip_accents", nullptr},
            {"lowercase", true}}},
          {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
          {"post_processor", {{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"[CLS]", 2}}}},
          {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
          {"model",
           {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
            {"max_input_chars_per_word", 9}, {"vocab", v}}}};
}

TEST(WordPiece, NormalizesSplitsAndCutsWordsIntoTheLongestPiecesAsBertDoes) {
  const Tokenizer t = load_json(wordpiece_json());
  EXPECT_EQ(t.model(), "WordPiece");
  EXPECT_EQ(t.vocab_size(), 21);
  EXPECT_EQ(t.describe(),
            "WordPiece, 21 tokens (5 special), lowercased, accents stripped, CJK ideographs split; encode(text, true) "
            "gives [CLS] … [SEP]");
  using V = std::vector<int64_t>;
  // Lowercased, accents stripped, punctuation split off, the longest pieces first: un ##aff ##able.
  EXPECT_EQ(t.encode("UNAFFABLE Hello,World!"), (V{5, 6, 7, 8, 10, 9, 11}));
  EXPECT_EQ(t.encode("Café don't"), (V{17, 14, 12, 13}));
  // CJK ideographs are words of their own; a control character goes, tab and newline are spaces.
  EXPECT_EQ(t.encode("中中\x01\ta\naa"), (V{18, 18, 15, 15, 16}));
  // A word with a part no piece covers is one unknown token; so is a word of more than 9 characters.
  EXPECT_EQ(t.encode("hellox world unaffables unaffable"), (V{1, 9, 1, 5, 6, 7}));
  // Special tokens are matched in the raw text, before lowercasing; BertProcessing puts [CLS] … [SEP] around.
  EXPECT_EQ(t.encode("[MASK] hello[SEP]", true), (V{2, 4, 8, 3, 3}));
  EXPECT_EQ(t.encode("[mask]"), (V{1, 1, 1}));  // not the special token: "[", "mask", "]", none in the vocabulary
  // The decoder joins the pieces, glues "##" ones, and cleans up spaces before punctuation.
  EXPECT_EQ(t.decode({2, 5, 6, 7, 8, 10, 9, 11, 3}, true), "unaffable hello, world!");
  EXPECT_EQ(t.decode({2, 14, 12, 13, 20, 3}), "[CLS] don ' t. [SEP]");  // cleaned up token by token, as Hugging Face
  EXPECT_EQ(t.token_to_string(6), "##aff");
  EXPECT_EQ(t.string_to_token("##able"), 7);
  EXPECT_EQ(t.string_to_token("able"), -1);
  // Written back and read again: the same tokenizer, the same ids.
  test::TempDir dir("tessera-tokenizer");
  t.save(dir.path() + "/wp.json");
  const Tokenizer again = Tokenizer::load(dir.path() + "/wp.json");
  EXPECT_EQ(again.fingerprint(), t.fingerprint());
  EXPECT_EQ(again.encode("UNAFFABLE Hello,World!"), t.encode("UNAFFABLE Hello,World!"));
  // The settings are part of the fingerprint.
  json cased = wordpiece_json();
  cased["normalizer"]["lowercase"] = false;
  const Tokenizer keeps_case = load_json(cased);
  EXPECT_NE(keeps_case.fingerprint(), t.fingerprint());
  EXPECT_EQ(keeps_case.encode("Hello hello"), (V{1, 8}));
}

TEST(WordPiece, ReadsBertsVocabTxtWithItsTokenizerConfig) {
  // BERT's original files: a token per line; tokenizer_config.json's do_lower_case (true when absent).
  test::TempDir dir("tessera-tokenizer");
  test::write_file(dir.path() + "/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nHello\n##s\n,\n");
  using V = std::vector<int64_t>;
  const Tokenizer uncased = Tokenizer::load(dir.path());
  EXPECT_EQ(uncased.model(), "WordPiece");
  EXPECT_EQ(uncased.special_tokens(), (std::vector<std::string>{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}));
  EXPECT_EQ(uncased.encode("Hellos, HELLO [MASK]", true), (V{2, 5, 7, 8, 5, 4, 3}));
  EXPECT_EQ(uncased.decode({2, 5, 7, 8, 5, 3}, true), "hellos, hello");
  test::write_file(dir.path() + "/tokenizer_config.json", R"({"do_lower_case": false, "model_max_length": 512})");
  const Tokenizer cased = Tokenizer::load(dir.path());
  EXPECT_EQ(cased.encode("Hellos hello HELLO"), (V{6, 7, 5, 1}));
  EXPECT_NE(cased.fingerprint(), uncased.fingerprint());
  test::write_file(dir.path() + "/tokenizer_config.json", R"({"do_lower_case": "no"})");
  EXPECT_THAT(testing::input_error_of([&] { Tokenizer::load(dir.path()); }),
              HasSubstr("tokenizer_config.json: do_lower_case is \"no\", expected true or false"));
  test::write_file(dir.path() + "/tokenizer_config.json", "{}");
  test::write_file(dir.path() + "/vocab.txt", "[UNK]\na\nb\na\n");
  EXPECT_THAT(testing::input_error_of([&] { Tokenizer::load(dir.path()); }),
              HasSubstr("vocab.txt: line 4 repeats \"a\" of line 2"));
}

TEST(WordPiece, RefusesWhatItCannotReadNamingTheFileAndWhy) {
  const auto refusal = [](const std::function<void(json&)>& edit) {
    json doc = wordpiece_json();
    edit(doc);
    return testing::input_error_of([&] { load_json(doc); });
  };
  EXPECT_THAT(refusal([](json& d) { d["model"]["unk_token"] = "<unk>"; }),
              HasSubstr("tok.json: model.unk_token \"<unk>\" is not in the vocabulary"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["unk_token"] = nullptr; }),
              HasSubstr("model.unk_token is null, expected the unknown token's text"));
  EXPECT_THAT(refusal([](json& d) { d["normalizer"] = {{"type", "Lowercase"}}; }),
              HasSubstr("WordPiece with normalizer Lowercase; Tessera reads WordPiece with BertNormalizer"));
  EXPECT_THAT(refusal([](json& d) { d["normalizer"]["lowercase"] = "yes"; }),
              HasSubstr("normalizer BertNormalizer.lowercase is \"yes\", expected true or false"));
  EXPECT_THAT(refusal([](json& d) { d["pre_tokenizer"] = {{"type", "Whitespace"}}; }),
              HasSubstr("WordPiece with pre_tokenizer Whitespace; Tessera reads WordPiece with BertPreTokenizer"));
  EXPECT_THAT(refusal([](json& d) { d["pre_tokenizer"] = nullptr; }), HasSubstr("WordPiece with pre_tokenizer null"));
  EXPECT_THAT(refusal([](json& d) { d["decoder"] = {{"type", "ByteLevel"}}; }),
              HasSubstr("WordPiece with decoder ByteLevel; Tessera reads the WordPiece decoder or none"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["max_input_chars_per_word"] = 0; }),
              HasSubstr("model.max_input_chars_per_word is 0, expected an integer of at least 1"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["max_input_chars_per_word"] = 1.2e52; }),  // found by fuzz_tokenizer
              HasSubstr("model.max_input_chars_per_word is 1.2e+52, expected an integer of at least 1"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["vocab"]["x"] = 40; }),
              HasSubstr("no token has id 21 (the ids run to 40)"));
}

}  // namespace
}  // namespace tessera
