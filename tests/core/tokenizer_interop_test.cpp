// Byte-level BPE against Hugging Face `tokenizers` 0.22.2 (pinned in the streaming peers' venv:
// scripts/install-peers.sh streaming, or $TESSERA_STREAMING_VENV; tokenizer_interop.py is its side): the same merges
// when training on the same text, the same ids when encoding with the same tokenizer.json, whichever library wrote it;
// and WordPiece (BERT's) tokenizers that Hugging Face trains: the same ids and decoded text.
// Each test skips, saying why, when the venv is absent.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iterator>
#include <optional>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>
#include <tessera/data/tokenizer.h>

#include "../../src/data/bert_text.h"
#include "../../src/data/normalization.h"
#include "../../src/data/precompiled_charsmap.h"
#include "../../src/data/split_regex.h"
#include "core/mds_support.h"
#include "core/unicode_texts.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using data::Tokenizer;
using data::TokenizerTrainOptions;
using nlohmann::json;
using test::every_code_point_in_context;
using test::utf8;

void run_helper(const std::string& python, const std::string& args, const std::string& log) {
  test::run_python_helper(python, "tokenizer_interop.py", args, log);
}

/// A UTF-8 text with what the pattern must get right: English prose (Debian's fortunes, or the README when the
/// package is absent), contractions, numbers, scripts, emoji, runs of spaces, tabs, Unicode spaces, CR LF.
std::string corpus() {
  const std::string fortunes = "/usr/share/games/fortunes/fortunes";
  std::string prose = test::read_file(fs::exists(fortunes) ? fortunes : TESSERA_SOURCE_DIR "/README.md");
  prose = prose.substr(0, 120000);
  while (!prose.empty() && (static_cast<unsigned char>(prose.back()) & 0xC0) == 0x80) prose.pop_back();  // whole chars
  if (!prose.empty() && static_cast<unsigned char>(prose.back()) >= 0xC0) prose.pop_back();
  const std::string mixed =
      "Ünïcödé naïve café — “quotes” 'tis we'll they're I'M don't ''s x'S 123 4½ ²³ ٣٤٥ 一二三 漢字かな カタカナ "
      "한국어 Ελληνικά Русский עברית العربية 🙂🙃👍🏽 \t\t tabs\u00a0nbsp\u2003em\u3000ideo  double  spaces   \n\n\n  "
      "lead\r\nCRLF\u2028ls\u0085nel end   ";
  return prose.substr(0, prose.size() / 2) + mixed + prose.substr(prose.size() / 2) + mixed + "trailing   ";
}

std::vector<std::string> merges_of(const json& doc) {
  std::vector<std::string> out;
  for (const auto& m : doc["model"]["merges"])
    out.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
  return out;
}

/// Hugging Face's ids for `text` with the tokenizer.json at `tokenizer`, checking that it decodes them back (unless
/// the tokenizer adds a space in front).
std::vector<int64_t> hf_encode(const std::string& python, const std::string& tokenizer, const std::string& text,
                               const std::string& work, bool decodes_back = true) {
  test::write_file(work + "/text.txt", text);
  run_helper(python, "encode " + tokenizer + " " + work + "/text.txt " + work + "/ids.json", work + "/encode.log");
  const json out = json::parse(test::read_file(work + "/ids.json"));
  EXPECT_EQ(out["decoded_ok"].get<bool>(), decodes_back);
  return out["ids"].get<std::vector<int64_t>>();
}

TEST(TokenizerInterop, TrainsTheMergesHuggingFacesTrainerTrains) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  const std::string text = corpus();
  test::write_file(work.path() + "/corpus.txt", text);
  for (const auto& [vocab, specials] : std::vector<std::pair<int64_t, std::vector<std::string>>>{
           {1500, {}}, {900, {"<|endoftext|>", "<pad>"}}}) {
    SCOPED_TRACE("vocab_size " + std::to_string(vocab));
    std::string args = "train " + work.path() + "/corpus.txt " + std::to_string(vocab) + " 2 " + work.path() + "/hf.json";
    for (const auto& s : specials) args += " '" + s + "'";
    run_helper(python, args, work.path() + "/train.log");
    const json hf = json::parse(test::read_file(work.path() + "/hf.json"));
    const Tokenizer ours = Tokenizer::train({text}, TokenizerTrainOptions().vocab_size(vocab).special_tokens(specials));
    const json mine = json::parse(ours.to_json());
    EXPECT_EQ(ours.vocab_size(), vocab);
    EXPECT_GT(merges_of(hf).size(), static_cast<size_t>(vocab - 256 - 2 - 10));  // the vocabulary filled by merges
    EXPECT_EQ(merges_of(mine), merges_of(hf));
    EXPECT_EQ(mine["model"]["vocab"], hf["model"]["vocab"]);
    // And Hugging Face's file read by Tessera is the tokenizer Tessera trained.
    EXPECT_EQ(Tokenizer::load(work.path() + "/hf.json").fingerprint(), ours.fingerprint());
  }
}

TEST(TokenizerInterop, EncodesAsHuggingFaceWhicheverLibraryWroteTheTokenizer) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  const std::string text = corpus();
  test::write_file(work.path() + "/corpus.txt", text.substr(0, text.size() / 3));
  run_helper(python, "train " + work.path() + "/corpus.txt 1200 2 " + work.path() + "/hf.json '<|endoftext|>'",
             work.path() + "/train.log");
  const std::string sample = text + "<|endoftext|>next<|endoftext|><|endoftext|> <|endoftext|>";
  {
    SCOPED_TRACE("Hugging Face's tokenizer.json");
    const Tokenizer hf_trained = Tokenizer::load(work.path() + "/hf.json");
    EXPECT_EQ(hf_trained.encode(sample), hf_encode(python, work.path() + "/hf.json", sample, work.path()));
  }
  {
    SCOPED_TRACE("Tessera's tokenizer.json");
    const Tokenizer ours = Tokenizer::train({text.substr(text.size() / 3)},
                                            TokenizerTrainOptions().vocab_size(1000).special_tokens({"<|endoftext|>"}));
    ours.save(work.path() + "/ours.json");
    const std::vector<int64_t> ids = ours.encode(sample);
    EXPECT_EQ(ids, hf_encode(python, work.path() + "/ours.json", sample, work.path()));
    // Hugging Face decodes Tessera's ids to the text.
    test::write_file(work.path() + "/ids.json", json(ids).dump());
    run_helper(python, "decode " + work.path() + "/ours.json " + work.path() + "/ids.json " + work.path() + "/out.txt",
               work.path() + "/decode.log");
    EXPECT_EQ(test::read_file(work.path() + "/out.txt"), sample);
  }
  {
    SCOPED_TRACE("add_prefix_space (RoBERTa's pre-tokenizer)");
    json doc = json::parse(test::read_file(work.path() + "/hf.json"));
    doc["pre_tokenizer"]["add_prefix_space"] = true;
    test::write_file(work.path() + "/prefixed.json", doc.dump());
    const std::string words = "word<|endoftext|>next line\nthen";
    EXPECT_EQ(Tokenizer::load(work.path() + "/prefixed.json").encode(words),
              hf_encode(python, work.path() + "/prefixed.json", words, work.path(), false));
  }
}

/// Writes the first half of `text` (up to a line break: whole UTF-8 characters on both sides) to DIR/corpus.txt, for
/// the helper to train on; returns where the second half starts.
size_t write_first_half(const std::string& text, const std::string& dir) {
  const size_t cut = text.find('\n', text.size() / 2);
  test::write_file(dir + "/corpus.txt", text.substr(0, cut));
  return cut;
}

/// Runs the helper's `command` (sentencepiece, unigram) on `dir`/corpus.txt, which writes tokenizer files into `dir`
/// and prints their names (logged in `dir`/`command`.log); returns the names.
std::vector<std::string> tokenizer_files(const std::string& python, const std::string& command,
                                         const std::string& dir) {
  const std::string log = dir + "/" + command + ".log";
  run_helper(python, command + " " + dir + "/corpus.txt " + dir, log);
  std::vector<std::string> names;
  std::istringstream lines(test::read_file(log));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) names.push_back(line);
  return names;
}

/// Hugging Face's encoding (plain, with the post-processor's tokens, and the latter decoded without the special
/// tokens) of each of `texts` with the tokenizer.json `file`, against Tessera's.
void expect_encodes_as_hugging_face(const std::string& python, const Tokenizer& tok, const std::string& file,
                                    const std::vector<std::string>& texts, const std::string& work) {
  test::write_file(work + "/texts.json", json(texts).dump());
  run_helper(python, "encode-all " + file + " " + work + "/texts.json " + work + "/out.json", work + "/encode.log");
  const json expected = json::parse(test::read_file(work + "/out.json"));
  ASSERT_EQ(expected.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE(std::string("text \"") + texts[i].substr(0, 60) + "\"");
    EXPECT_EQ(tok.encode(texts[i]), expected[i]["plain"].get<std::vector<int64_t>>());
    const std::vector<int64_t> with_special = tok.encode(texts[i], true);
    EXPECT_EQ(with_special, expected[i]["with_special"].get<std::vector<int64_t>>());
    EXPECT_EQ(tok.decode(with_special, true), expected[i]["skipped"].get<std::string>());
  }
}

/// Hugging Face's added tokens (lstrip, rstrip, single_word, normalized or not, special or not, one that merges
/// also make) and post-processors (RobertaProcessing; a TemplateProcessing in a Sequence): Tessera reads the
/// tokenizer.json Hugging Face writes and gives the same ids, with and without the post-processor's tokens, and the
/// same text when decoding without the special tokens; and Hugging Face reads the tokenizer.json Tessera writes back,
/// and the template Tessera trains with.
TEST(TokenizerInterop, AddedTokensAndPostProcessorsAsHuggingFace) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  const std::string text = corpus();
  const size_t cut = write_first_half(text, work.path());
  run_helper(python, "added " + work.path() + "/corpus.txt " + work.path(), work.path() + "/added.log");
  const std::vector<std::string> texts = {
      "a  <mask> b", "<mask>x", " \t <mask>", "x<mask><mask>  <mask>y", "<mask>xing <mask> x",
      "word words _word word_ aword word1 1word \u00e9word word\u00e9 \u00b2word word\u00b2 \u203fword "
      "\u0301word -word- word",
      "sing <r>  x", "a <r>\u00a0\u3000y", "<r><r> <r>\n\n", "<s><mask></s>", "wording ing singing",
      "a\u00e9 xb \u00e9 x\u00e9 x", "", " ", "plain text, nothing added", text.substr(cut)};
  for (const std::string name : {"roberta", "template"}) {
    SCOPED_TRACE(name);
    const std::string hf_file = work.path() + "/" + name + ".json";
    const Tokenizer tok = Tokenizer::load(hf_file);
    tok.save(work.path() + "/ours.json");
    for (const std::string& file : {hf_file, work.path() + "/ours.json"}) {
      SCOPED_TRACE("Hugging Face encoding with " + file);
      expect_encodes_as_hugging_face(python, tok, file, texts, work.path());
    }
    EXPECT_EQ(Tokenizer::load(work.path() + "/ours.json").fingerprint(), tok.fingerprint());
  }
  // A template Tessera trains with, as Hugging Face's TemplateProcessing reads it.
  const Tokenizer templated =
      Tokenizer::train({text.substr(0, cut)}, TokenizerTrainOptions().vocab_size(600).special_tokens({"<s>", "</s>"})
                                                  .single_template("<s> $A </s>"));
  templated.save(work.path() + "/templated.json");
  test::write_file(work.path() + "/texts.json", json(texts).dump());
  run_helper(python, "encode-all " + work.path() + "/templated.json " + work.path() + "/texts.json " + work.path() +
                         "/out.json",
             work.path() + "/encode.log");
  const json expected = json::parse(test::read_file(work.path() + "/out.json"));
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(templated.encode(texts[i], true), expected[i]["with_special"].get<std::vector<int64_t>>()) << texts[i];
}

/// The pieces each named pattern cuts every code point into, in context: Hugging Face's pre-tokenizers (ByteLevel's
/// regex for GPT-2's, a Split for the others) and Tessera's cut the same pieces (compared by their lengths in bytes).
TEST(TokenizerInterop, EveryNamedPatternCutsEveryCodePointAsHuggingFace) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  const std::vector<std::string> texts = every_code_point_in_context();
  test::write_file(work.path() + "/texts.json", json(texts).dump());
  for (const data::Pattern pattern : {data::Pattern::gpt2, data::Pattern::llama3, data::Pattern::qwen2,
                                      data::Pattern::o200k}) {
    const std::string name = data::pattern_name(pattern);
    SCOPED_TRACE(name);
    run_helper(python, "pieces " + name + " " + work.path() + "/texts.json " + work.path() + "/pieces.json",
               work.path() + "/pieces.log");
    const json expected = json::parse(test::read_file(work.path() + "/pieces.json"));
    ASSERT_EQ(expected.size(), texts.size());
    int wrong = 0;
    for (size_t i = 0; i < texts.size() && wrong < 5; ++i) {
      std::vector<size_t> ours;  // the pieces' lengths in bytes
      for (std::string_view piece : data::pretokenize(texts[i], pattern)) ours.push_back(piece.size());
      const auto theirs = expected[i].get<std::vector<size_t>>();
      if (ours == theirs) continue;
      ++wrong;
      ADD_FAILURE() << "text " << i << " (code points from " << i * 64 << "): " << json(ours).dump() << " against "
                    << json(theirs).dump();
    }
  }
}

/// The [start, end) byte offsets of the pieces a Sequence of Splits cuts `text` into.
std::vector<std::pair<size_t, size_t>> split_offsets(const std::string& text, const json& splits) {
  std::vector<std::string_view> pieces{text}, next;
  for (const json& split : splits) {
    const data::SplitRegex re(split[0].get<std::string>());
    std::string name;  // Python's "merged_with_next" is tokenizer.json's "MergedWithNext"
    for (size_t k = 0; k < split[1].get<std::string>().size(); ++k) {
      const char c = split[1].get<std::string>()[k];
      if (c != '_') name += k == 0 || split[1].get<std::string>()[k - 1] == '_' ? static_cast<char>(std::toupper(c)) : c;
    }
    data::SplitBehavior behavior = data::SplitBehavior::isolated;
    EXPECT_TRUE(data::split_behavior_from_name(name, behavior)) << split.dump();
    next.clear();
    for (std::string_view piece : pieces)
      for (std::string_view p : data::split_pieces(piece, re.matches(piece), behavior, split[2].get<bool>()))
        next.push_back(p);
    std::swap(pieces, next);
  }
  std::vector<std::pair<size_t, size_t>> out;
  for (std::string_view p : pieces) {
    const auto start = static_cast<size_t>(p.data() - text.data());
    out.emplace_back(start, start + p.size());
  }
  return out;
}

/// Split by regexes Tessera's engine compiles, against Hugging Face's Split (Oniguruma): each general category and
/// the escape classes (Removed: what is left shows what matched) on every code point; the behaviors and invert,
/// quantifiers, lookahead, atomic groups, (?i), and DeepSeek V3's three Splits on prose and on every 32nd code point
/// in context (Hugging Face's Python side takes 12 s to cut all of them once). The same pieces, compared by their
/// byte offsets.
TEST(TokenizerInterop, SplitRegexesMatchAsHuggingFaceOnEveryCodePoint) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  std::vector<std::string> all;  // every code point once, 8192 to a text
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    if (all.empty() || cp % 8192 == 0) all.emplace_back();
    all.back() += utf8(cp);
  }
  json cases = json::array();
  const auto removed = [&](const std::string& regex) { cases.push_back({{regex, "removed", false}}); };
  for (const char* category :
       {"L", "Lu", "Ll", "Lt", "Lm", "Lo", "LC", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Ps",
        "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "Z", "Zs", "Zl", "Zp", "C", "Cc", "Cf", "Co", "Cn", "Any"})
    removed(std::string("\\p{") + category + "}+");
  for (const char* regex : {"\\s+", "\\S+", "\\d+", "\\D+", "\\w+", "\\W+", "\\h+", ".+", "\\p{^L}+", "\\P{Letter}+",
                            "[^\\s\\p{L}\\p{N}]+", "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+", "(?i:[a-z])+",
                            "(?i:[^k-m])+", "(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?i)x|s|k"})
    removed(regex);
  const size_t on_all = cases.size();
  // On the corpus and on every code point in context: behaviors, invert, and the other constructs.
  for (const char* behavior : {"removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"})
    for (const bool invert : {false, true}) cases.push_back({{"\\p{N}+|\\s", behavior, invert}});
  for (const char* regex : {"\\s+?\\S", "\\p{L}*+\\p{L}|\\p{L}", "(?>\\s+)\\S|\\s", "\\p{N}{2}?|\\p{N}{,2}|x{2,}+",
                            "(?:\\p{L}\\p{M}*)+(?=\\s)", "(?!\\p{L})\\S+", "x*", "[\\w\\-.]+@\\w+"})
    cases.push_back({{regex, "isolated", false}});
  json deepseek = json::array();
  for (const char* regex : {"\\p{N}{1,3}", "[一-龥\u3040-ゟ゠-ヿ]+",
                            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
                            "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"})
    deepseek.push_back({regex, "isolated", false});
  cases.push_back(deepseek);
  std::vector<std::string> in_context;  // every 32nd text of every code point in context (2048 code points), and prose
  const std::vector<std::string> every = every_code_point_in_context();
  for (size_t i = 0; i < every.size(); i += 32) in_context.push_back(every[i]);
  in_context.push_back(corpus());
  for (const auto& [texts, first, last] : {std::tuple{&all, size_t{0}, on_all},
                                           std::tuple{&in_context, on_all, cases.size()}}) {
    json these = json::array();
    for (size_t c = first; c < last; ++c) these.push_back(cases[c]);
    test::write_file(work.path() + "/cases.json", json({{"texts", *texts}, {"cases", these}}).dump());
    run_helper(python, "split " + work.path() + "/cases.json " + work.path() + "/split.json", work.path() + "/split.log");
    const json expected = json::parse(test::read_file(work.path() + "/split.json"));
    ASSERT_EQ(expected.size(), these.size());
    for (size_t c = 0; c < these.size(); ++c) {
      SCOPED_TRACE(these[c].dump());
      int wrong = 0;
      for (size_t i = 0; i < texts->size() && wrong < 3; ++i) {
        const auto theirs = expected[c][i].get<std::vector<std::pair<size_t, size_t>>>();
        const auto ours = split_offsets((*texts)[i], these[c]);
        if (ours == theirs) continue;
        ++wrong;
        size_t k = 0;
        while (k < ours.size() && k < theirs.size() && ours[k] == theirs[k]) ++k;
        const size_t at = k < ours.size() ? ours[k].first : k < theirs.size() ? theirs[k].first : 0;
        ADD_FAILURE() << "text " << i << ": pieces differ from byte " << at << " on: \""
                      << (*texts)[i].substr(at, 24) << "\"";
      }
    }
  }
}

/// Hugging Face's NFC, NFD, NFKC, NFKD, StripAccents and Lowercase normalizers and Tessera's give the same text for
/// every code point, alone, after a letter and before combining marks of several classes (where composition and
/// canonical order act).
TEST(TokenizerInterop, NormalizesEveryCodePointAsHuggingFace) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  std::vector<std::string> texts;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    if (texts.empty() || cp % 512 == 0) texts.emplace_back();
    const std::string c = utf8(cp);
    texts.back() += c + " a" + c + " " + c + "\u0301\u0316" + c + "\u0334 \u1100" + c + "\u11A8 ";
  }
  test::write_file(work.path() + "/texts.json", json(texts).dump());
  run_helper(python, "normalize " + work.path() + "/texts.json " + work.path() + "/normalized.json",
             work.path() + "/normalize.log");
  const json expected = json::parse(test::read_file(work.path() + "/normalized.json"));
  using data::unicode::NormalForm;
  const auto form = [](NormalForm f) { return [f](const std::string& t) { return data::unicode::normalize(t, f); }; };
  const std::vector<std::pair<std::string, std::function<std::string(const std::string&)>>> steps = {
      {"nfc", form(NormalForm::nfc)},   {"nfd", form(NormalForm::nfd)},
      {"nfkc", form(NormalForm::nfkc)}, {"nfkd", form(NormalForm::nfkd)},
      {"strip_accents", [](const std::string& t) { return data::unicode::strip_marks(t); }},
      {"lowercase", [](const std::string& t) { return data::bert::lowercase(t); }}};
  for (const auto& [name, step] : steps) {
    int wrong = 0;
    for (size_t i = 0; i < texts.size() && wrong < 3; ++i) {
      if (step(texts[i]) == expected[name][i].get<std::string>()) continue;
      ++wrong;
      ADD_FAILURE() << name << " of text " << i << " (code points from " << i * 512 << ") differs";
    }
  }
}

/// Byte-level BPE as Qwen2's (NFC, then a Split by its pattern), GPT-4o's (a Split by o200k's pattern) and DeepSeek
/// V3's (three Splits) are made: Hugging Face's BpeTrainer learns the merges Tessera learns with pattern "qwen2" and
/// normalizer "nfc", and with pattern "o200k"; Tessera reads each tokenizer.json and gives Hugging Face's ids, and
/// Hugging Face reads the file Tessera writes back.
TEST(TokenizerInterop, QwenGpt4oAndDeepSeekStylesAsHuggingFace) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  const std::string text = corpus() + " Cafe\u0301 cafe\u0301 caf\u00e9 \u1100\u1161\u11a8 A\u030a \u212b ";
  const size_t cut = write_first_half(text, work.path());
  run_helper(python, "qwen2 " + work.path() + "/corpus.txt " + work.path(), work.path() + "/qwen2.log");
  const auto trained = [&](TokenizerTrainOptions options) {
    return Tokenizer::train({text.substr(0, cut)}, options.vocab_size(1200).special_tokens({"<|endoftext|>"}));
  };
  const std::vector<std::string> texts = {
      "Hello world, I'M here; don't DON'T it'S they'Re HTTPServer McDonald's x/y/z", "1234567 3.14159 ١٢٣٤٥ x²",
      "Cafe\u0301 caf\u00e9 A\u030a \u212b \u1100\u1161\u11a8 e\u0316\u0301", "a.\n\nb  \n  x\r\n\r\nend\t\tx \u00a0y",
      "<|endoftext|>inside<|endoftext|> 漢字かなカタカナ 한국어 🙂🙃👍🏽", "", "   ", text.substr(cut)};
  for (const auto& [name, options] : std::vector<std::pair<std::string, std::optional<TokenizerTrainOptions>>>{
           {"qwen2", TokenizerTrainOptions().pattern("qwen2").normalizer("nfc")},
           {"o200k", TokenizerTrainOptions().pattern("o200k")},
           {"deepseek", std::nullopt}}) {
    SCOPED_TRACE(name);
    const std::string file = work.path() + "/" + name + ".json";
    const Tokenizer theirs = Tokenizer::load(file);
    EXPECT_GT(theirs.merges().size(), 700u);  // of the 943 a vocabulary of 1,200 can hold
    if (options) {
      const Tokenizer ours = trained(*options);
      EXPECT_EQ(merges_of(json::parse(ours.to_json())), merges_of(json::parse(test::read_file(file))));
      EXPECT_EQ(ours.fingerprint(), theirs.fingerprint());
      EXPECT_EQ(theirs.pattern(), ours.pattern());
    } else {
      EXPECT_EQ(theirs.pattern(), data::Pattern::custom);
    }
    expect_encodes_as_hugging_face(python, theirs, file, texts, work.path());
    theirs.save(work.path() + "/ours.json");
    expect_encodes_as_hugging_face(python, theirs, work.path() + "/ours.json", texts, work.path());
  }
}

/// Unicode's word characters (\\w), which decide where a single_word added token matches: Tessera's and Hugging
/// Face's are the same code points (each tried before "word").
TEST(TokenizerInterop, SingleWordTokensSeeTheWordCharactersHuggingFaceSees) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  run_helper(python, "word-chars " + work.path() + "/word.json " + work.path() + "/chars.json",
             work.path() + "/word-chars.log");
  const auto theirs = json::parse(test::read_file(work.path() + "/chars.json")).get<std::vector<uint32_t>>();
  const Tokenizer tok = Tokenizer::load(work.path() + "/word.json");
  const int64_t word = tok.string_to_token("word");
  ASSERT_GE(word, 256);
  std::vector<uint32_t> ours;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const std::vector<int64_t> ids = tok.encode(utf8(cp) + "word");
    if (std::find(ids.begin(), ids.end(), word) == ids.end()) ours.push_back(cp);
  }
  EXPECT_GT(ours.size(), 140000u);  // letters, marks, digits and connectors of Unicode 16
  std::vector<uint32_t> differ;
  std::set_symmetric_difference(ours.begin(), ours.end(), theirs.begin(), theirs.end(), std::back_inserter(differ));
  EXPECT_TRUE(differ.empty()) << differ.size() << " code points differ, the first U+" << std::hex << differ.front();
}

/// Llama 3's byte-level BPE: Hugging Face's BpeTrainer with Llama 3's pre-tokenizer (a Split by its pattern, then
/// ByteLevel without one) learns the merges Tessera learns with pattern "llama3"; Tessera reads the tokenizer.json,
/// with ignore_merges false and true (Llama 3's), and gives Hugging Face's ids; Hugging Face reads Tessera's file.
TEST(TokenizerInterop, Llama3sPatternAndIgnoreMergesAsHuggingFace) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  const std::string text = corpus();
  const size_t cut = write_first_half(text, work.path());
  run_helper(python, "llama3 " + work.path() + "/corpus.txt " + work.path(), work.path() + "/llama3.log");
  const Tokenizer ours = Tokenizer::train(
      {text.substr(0, cut)}, TokenizerTrainOptions().vocab_size(1200).pattern("llama3")
                                 .special_tokens({"<|begin_of_text|>", "<|end_of_text|>"})
                                 .single_template("<|begin_of_text|> $A"));
  const json hf = json::parse(test::read_file(work.path() + "/llama3-merges.json"));
  EXPECT_EQ(merges_of(json::parse(ours.to_json())), merges_of(hf));
  EXPECT_TRUE(json::parse(ours.to_json())["model"]["vocab"] == hf["model"]["vocab"]);
  const Tokenizer merging = Tokenizer::load(work.path() + "/llama3-merges.json");
  EXPECT_EQ(merging.pattern(), data::Pattern::llama3);
  EXPECT_FALSE(merging.ignore_merges());
  EXPECT_EQ(merging.fingerprint(), ours.fingerprint());
  const Tokenizer llama3 = Tokenizer::load(work.path() + "/llama3.json");
  EXPECT_TRUE(llama3.ignore_merges());
  EXPECT_NE(llama3.fingerprint(), merging.fingerprint());
  const Tokenizer reversed = Tokenizer::load(work.path() + "/llama3-reversed.json");
  const Tokenizer reversed_merging = Tokenizer::load(work.path() + "/llama3-reversed-merges.json");
  // With the merges reversed, ignore_merges changes many pieces' tokens (else the comparison below could not tell).
  EXPECT_NE(reversed.encode(text.substr(cut)), reversed_merging.encode(text.substr(cut)));
  const std::vector<std::string> texts = {
      "Hello world, I'M here; don't DON'T it'S they'Re", "1234567 3.14159 $100,000.00 ١٢٣٤٥ x²",
      "a.\n\nb  \n  x\r\n\r\nend\t\tx \u00a0y\u3000z", "<|begin_of_text|>inside<|end_of_text|> <|end_of_text|>",
      "🙂🙃👍🏽 漢字かな 한국어 Ελληνικά Русский", "", "   ", "\n", text.substr(cut)};
  for (const auto& [name, tok] : std::vector<std::pair<std::string, const Tokenizer*>>{
           {"llama3-merges", &merging}, {"llama3", &llama3}, {"llama3-reversed-merges", &reversed_merging},
           {"llama3-reversed", &reversed}}) {
    SCOPED_TRACE(name);
    expect_encodes_as_hugging_face(python, *tok, work.path() + "/" + name + ".json", texts, work.path());
    tok->save(work.path() + "/ours.json");
    EXPECT_EQ(Tokenizer::load(work.path() + "/ours.json").fingerprint(), tok->fingerprint());
    expect_encodes_as_hugging_face(python, *tok, work.path() + "/ours.json", texts, work.path());
  }
}

/// BPE over characters as Llama 2's and Mistral's tokenizers are converted from SentencePiece (spaces as "▁", a
/// character without a token as its bytes' <0xXX> tokens), trained by Hugging Face, and variants of it: Metaspace
/// with each prepend scheme, split or not, and its decoder; the unknown token fused, one per character, or none; no
/// decoder; the merges reversed, with and without ignore_merges; added tokens, one of them normalized. Tessera gives
/// Hugging Face's ids and decoded text, and writes a tokenizer.json that Hugging Face reads to the same.
TEST(TokenizerInterop, SentencePieceStyleBpeAsHuggingFace) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  const std::string text = corpus();
  const size_t cut = write_first_half(text, work.path());
  const std::vector<std::string> names = tokenizer_files(python, "sentencepiece", work.path());
  ASSERT_EQ(names.size(), 13u) << test::read_file(work.path() + "/sentencepiece.log");
  const std::vector<std::string> texts = {
      "Hello world", " lead", "a  b", "x<s>y z", "<s>start", "漢字 🙂 x", "", " ", "end ", "  two  spaces  ",
      "Ünïcödé naïve café — “quotes” 'tis", "line\nbreak\ttab", "</s></s> x </s>", "qqq zzz ßßß", "\u2581already",
      "a <mask>b <mask> eucalyptus eucalypt", "~^` ☃ ∰ ꙮ", text.substr(cut, 3000)};
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const std::string file = work.path() + "/" + name + ".json";
    const Tokenizer tok = Tokenizer::load(file);
    EXPECT_FALSE(tok.byte_level());
    EXPECT_EQ(tok.model(), "BPE");
    EXPECT_THAT(tok.describe(), testing::HasSubstr("SentencePiece-style BPE, "));
    expect_encodes_as_hugging_face(python, tok, file, texts, work.path());
    tok.save(work.path() + "/ours.json");
    const Tokenizer again = Tokenizer::load(work.path() + "/ours.json");
    EXPECT_EQ(again.fingerprint(), tok.fingerprint());
    expect_encodes_as_hugging_face(python, again, work.path() + "/ours.json", texts, work.path());
  }
  // The texts reach byte fallback, the unknown token and ignore_merges: the variants differ where they should.
  const auto ids = [&](const std::string& name, const std::string& sample) {
    return Tokenizer::load(work.path() + "/" + name + ".json").encode(sample);
  };
  const std::string sample = texts[5] + texts[16] + text.substr(cut, 3000);
  EXPECT_NE(ids("legacy", sample), ids("unk-fused", sample));
  EXPECT_NE(ids("unk-fused", sample), ids("unk-each", sample));
  EXPECT_NE(ids("unk-each", sample), ids("no-unk", sample));
  EXPECT_NE(ids("reversed-merges", sample), ids("reversed-ignore-merges", sample));
}

/// Unigram as transformers converts SentencePiece's models (T5's: Precompiled nmt_nfkc, Strip, Replace " {2,}",
/// Metaspace with prepend scheme first, extra ids; T5's legacy one; XLM-RoBERTa's; with byte fallback; with
/// nmt_nfkc_cf; ALBERT's: Replace, NFKD, StripAccents, Lowercase, then the map; XLNet's; T5's with WhitespaceSplit
/// before Metaspace, as older transformers wrote it; its generic SpmConverter's) and as Hugging Face's UnigramTrainer
/// trains it: Tessera gives Hugging Face's ids and decoded text, and writes a tokenizer.json that Hugging Face reads to
/// the same; and Tessera reads the SentencePiece model file itself to the generic conversion's tokenizer.
TEST(TokenizerInterop, UnigramAsHuggingFace) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  const std::string text = corpus();
  const size_t cut = write_first_half(text, work.path());
  const std::vector<std::string> names = tokenizer_files(python, "unigram", work.path());
  ASSERT_EQ(names.size(), 10u) << test::read_file(work.path() + "/unigram.log");
  const std::vector<std::string> texts = {
      "Hello world", " lead", "a  b", "  two  spaces  ", "trailing \t\u3000 ", "", " ", "\u2581already",
      "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \ufb01ne \u00bd \u2460 \u216b \u3000x",
      "Cafe\u0301 \uff21\u0301 e\u0301\u0301\u0301 \r\n \u0600a", "\u6f22\u5b57 \U0001F642 x \ua66e\ua66e",
      "<s>x</s> <extra_id_0> y<unk>", "Ünïcödé naïve café — “quotes” 'tis ``quoted''", "HELLO Ǆ İstanbul ΣΑΣ",
      "[CLS] a [SEP]<sep>", text.substr(cut, 3000)};
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const std::string file = work.path() + "/" + name + ".json";
    const Tokenizer tok = Tokenizer::load(file);
    EXPECT_EQ(tok.model(), "Unigram");
    EXPECT_THAT(tok.describe(), testing::StartsWith("Unigram, "));
    expect_encodes_as_hugging_face(python, tok, file, texts, work.path());
    tok.save(work.path() + "/ours.json");
    const Tokenizer again = Tokenizer::load(work.path() + "/ours.json");
    EXPECT_EQ(again.fingerprint(), tok.fingerprint());
    expect_encodes_as_hugging_face(python, again, work.path() + "/ours.json", texts, work.path());
  }
  // SentencePiece's model file itself, read as transformers' SpmConverter converts it: the same tokenizer.
  const Tokenizer model = Tokenizer::load(work.path() + "/nfkc.model");
  EXPECT_EQ(model.fingerprint(), Tokenizer::load(work.path() + "/spm-generic.json").fingerprint());
  expect_encodes_as_hugging_face(python, model, work.path() + "/spm-generic.json", texts, work.path());
  // The variants differ where they should: the prepend scheme, byte fallback, case folding.
  const auto ids = [&](const std::string& name, const std::string& sample) {
    return Tokenizer::load(work.path() + "/" + name + ".json").encode(sample);
  };
  EXPECT_NE(ids("t5", "<s>x y"), ids("t5-legacy", "<s>x y"));
  const Tokenizer bytes = Tokenizer::load(work.path() + "/t5-byte-fallback.json");
  EXPECT_EQ(bytes.token_to_string(bytes.encode("\ua66e").back()), "<0xAE>");
  EXPECT_NE(ids("t5", "Hello World"), ids("t5-case-folded", "Hello World"));
  EXPECT_NE(ids("xlnet", "Hello Café"), ids("albert", "Hello Café"));
  EXPECT_EQ(ids("albert", "Hello Café ``x''"), ids("albert", "hello cafe \"x\""));
}

/// Hugging Face's Precompiled normalizer and Tessera's give the same text for every code point, alone, after "a",
/// before combining marks, after U+0600 (a Prepend) and CR, before a ZWJ and a spacing mark, with the character maps
/// of nmt_nfkc, nmt_nfkc_cf and rules of the test's own: the same replacements, and the grapheme clusters (Unicode
/// 16.0's) cut where Hugging Face cuts them.
TEST(TokenizerInterop, PrecompiledNormalizesEveryCodePointAsHuggingFace) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  test::write_file(work.path() + "/corpus.txt", corpus());
  std::vector<std::string> texts;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    if (texts.empty() || cp % 512 == 0) texts.emplace_back();
    const std::string c = utf8(cp);
    texts.back() += c + " a" + c + " " + c + "\u0301 " + c + "\u0301\u0308 \u0600" + c + " \r" + c + " " + c +
                    "\u200d " + c + "\u0903 ";
  }
  test::write_file(work.path() + "/texts.json", json(texts).dump());
  run_helper(python, "precompiled " + work.path() + "/corpus.txt " + work.path() + "/texts.json " + work.path() +
                         "/normalized.json",
             work.path() + "/precompiled.log");
  const json expected = json::parse(test::read_file(work.path() + "/normalized.json"));
  ASSERT_EQ(expected["charsmaps"].size(), 3u);
  for (const auto& [name, base64] : expected["charsmaps"].items()) {
    SCOPED_TRACE(name);
    const data::sentencepiece::PrecompiledCharsmap map(base64.get<std::string>(), name);
    int wrong = 0;
    for (size_t i = 0; i < texts.size() && wrong < 3; ++i) {
      if (map.normalize(texts[i]) == expected["normalized"][name][i].get<std::string>()) continue;
      ++wrong;
      ADD_FAILURE() << "text " << i << " (code points from " << i * 512 << ") differs";
    }
  }
}

/// WordPiece as BERT's tokenizers are made (BertNormalizer, BertPreTokenizer, the WordPiece decoder), trained by
/// Hugging Face: uncased and cased, then without a normalizer or decoder, with accents kept or stripped, and with a
/// short max_input_chars_per_word. Tessera gives Hugging Face's ids and decoded text, and writes a tokenizer.json
/// that Hugging Face reads to the same ids.
TEST(TokenizerInterop, WordPieceEncodesAndDecodesAsHuggingFace) {
  REQUIRE_STREAMING_VENV(python);
  test::TempDir work("tessera-tokenizer-interop");
  const std::string text = corpus();
  const size_t cut = write_first_half(text, work.path());
  run_helper(python, "wordpiece " + work.path() + "/corpus.txt " + work.path(), work.path() + "/wordpiece.log");
  const std::string unbroken(120, 'a');  // beyond max_input_chars_per_word: the unknown token
  std::vector<std::string> texts = {
      "Hello, World! Don't do not; it's THEIR cafe\u0301 (caf\u00e9) na\u00efve", "Ünïcödé ÀÉÎÕÜ ß ﬁ ǅ İstanbul ΣΑΣ",
      "漢字かな 中文字符 한국어 Русский Ελληνικά עברית العربية", "🙂🙃👍🏽 x🙂y", "a\tb\nc\r\nd\u00a0e\u3000f\u2028g",
      std::string("ctrl\x01\x7f char") + '\0' + "nul \u200bzw\u200cnj \ufffd\u00adsoft",
      "[CLS] [MASK] tokens[SEP]inside [PAD]", "Héllo héllo HÉLLO Hello <keep> <keep>s x<keep>", "$5.00 + 3% = ~1 | {x} <y>",
      "_under_score_ a-b—c…d «e» ¿f? ¡g!", unbroken + " " + unbroken.substr(0, 99) + " end", "", "   ",
      "qzxjv zzzzqqqq", "dog's dogs' 'quoted' \"double\"", text.substr(cut, 4000)};
  for (const std::string name : {"uncased", "cased"}) {
    SCOPED_TRACE(name);
    const std::string hf_file = work.path() + "/" + name + ".json";
    const Tokenizer tok = Tokenizer::load(hf_file);
    EXPECT_EQ(tok.model(), "WordPiece");
    EXPECT_EQ(tok.vocab_size(), name == std::string("uncased") ? 702 : 700);
    expect_encodes_as_hugging_face(python, tok, hf_file, texts, work.path());
    tok.save(work.path() + "/ours.json");
    const Tokenizer again = Tokenizer::load(work.path() + "/ours.json");
    EXPECT_EQ(again.fingerprint(), tok.fingerprint());
    expect_encodes_as_hugging_face(python, again, work.path() + "/ours.json", texts, work.path());
  }
  // BERT's original files: vocab.txt (the uncased vocabulary, a token per line) and tokenizer_config.json, against
  // Hugging Face's BertWordPieceTokenizer over the same vocab.txt.
  {
    const json vocab = json::parse(test::read_file(work.path() + "/uncased.json"))["model"]["vocab"];
    std::vector<std::string> lines(vocab.size());
    for (const auto& [token, id] : vocab.items()) lines.at(id.get<size_t>()) = token;
    fs::create_directories(work.path() + "/bert");
    std::string text_file;
    for (const auto& line : lines) text_file += line + "\n";
    test::write_file(work.path() + "/bert/vocab.txt", text_file);
    for (const bool lowercase : {true, false}) {
      SCOPED_TRACE(lowercase ? "vocab.txt, do_lower_case" : "vocab.txt, cased");
      test::write_file(work.path() + "/bert/tokenizer_config.json",
                       json{{"do_lower_case", lowercase}, {"model_max_length", 512}}.dump());
      const Tokenizer tok = Tokenizer::load(work.path() + "/bert");
      EXPECT_EQ(tok.vocab_size(), 700);
      run_helper(python, "bert-vocab " + work.path() + "/bert/vocab.txt " + (lowercase ? "1 " : "0 ") + work.path() +
                             "/bert.json",
                 work.path() + "/bert.log");
      expect_encodes_as_hugging_face(python, tok, work.path() + "/bert.json", texts, work.path());
      EXPECT_EQ(Tokenizer::load(work.path() + "/bert.json").fingerprint(), tok.fingerprint());
    }
  }
  // Variants of the uncased file, as Hugging Face reads them too.
  const json uncased = json::parse(test::read_file(work.path() + "/uncased.json"));
  const std::vector<std::pair<std::string, std::function<void(json&)>>> variants = {
      {"no normalizer, no decoder", [](json& d) { d["normalizer"] = nullptr; d["decoder"] = nullptr; }},
      {"accents kept while lowercasing", [](json& d) { d["normalizer"]["strip_accents"] = false; }},
      {"accents stripped, case kept, no CJK split, no cleanup",
       [](json& d) {
         d["normalizer"]["lowercase"] = false;
         d["normalizer"]["strip_accents"] = true;
         d["normalizer"]["handle_chinese_chars"] = false;
         d["decoder"]["cleanup"] = false;
       }},
      {"text not cleaned, words of at most 6 characters",
       [](json& d) {
         d["normalizer"]["clean_text"] = false;
         d["model"]["max_input_chars_per_word"] = 6;
       }},
  };
  for (const auto& [name, change] : variants) {
    SCOPED_TRACE(name);
    json doc = uncased;
    change(doc);
    test::write_file(work.path() + "/variant.json", doc.dump());
    const Tokenizer tok = Tokenizer::load(work.path() + "/variant.json");
    expect_encodes_as_hugging_face(python, tok, work.path() + "/variant.json", texts, work.path());
  }
}

}  // namespace
}  // namespace tessera
