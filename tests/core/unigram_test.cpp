// Unigram tokenizers (T5's, XLM-RoBERTa's: src/data/unigram.h) and the normalizer steps SentencePiece's converted
// tokenizers hold (Precompiled: src/data/precompiled_charsmap.h; Strip; Replace by a regex): the expected ids are
// those Hugging Face `tokenizers` 0.22.2 gives for the same tokenizer.json. Parity on trained and converted
// tokenizers, and on every code point, is in tokenizer_interop_test.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <tuple>

#include <nlohmann/json.hpp>
#include <tessera/data/tokenizer.h>

#include "../../src/data/precompiled_charsmap.h"
#include "core/mds_support.h"
#include "support.h"

namespace tessera {
namespace {

using data::Tokenizer;
using nlohmann::json;
using ::testing::HasSubstr;

/// SentencePiece's character map of four rules, compiled by PyPI's sentencepiece 0.2.3 (normalization_rule_tsv):
/// "a" to "b", U+0600 (a Prepend character) to "P", CR to "R", "cd" to "Z"; base64, as tokenizer.json holds it
/// (tests/core/rules_charsmap.b64, which the fuzz seeds use too).
const std::string& rules_charsmap() {
  static const std::string text = [] {
    std::string b64 = test::read_file(TESSERA_SOURCE_DIR "/tests/core/rules_charsmap.b64");
    while (!b64.empty() && (b64.back() == '\n' || b64.back() == '\r')) b64.pop_back();
    return b64;
  }();
  return text;
}

Tokenizer load_json(const json& doc) {
  test::TempDir dir("tessera-unigram");
  test::write_file(dir.path() + "/tok.json", doc.dump());
  return Tokenizer::load(dir.path() + "/tok.json");
}

/// Hugging Face's Unigram example (its model.rs), with byte tokens, pieces that tie, "▁" pieces and an added <s>.
json unigram_json() {
  const json vocab = json::array({{"<unk>", 0.0}, {"a", 0.0}, {"b", 0.0}, {"c", 0.0}, {"d", 0.0}, {"cd", 1.0},
                                  {"ab", 2.0}, {"abc", 5.0}, {"abcd", 10.0}, {"<0x78>", -1.0}, {"<0xC3>", -1.0},
                                  {"e", -0.5}, {"f", -0.5}, {"ef", -1.0}, {"\u2581", -2.0}, {"\u2581a", -0.25},
                                  {"<s>", 0.0}});
  return {{"version", "1.0"},
          {"added_tokens", json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                        {{"id", 16}, {"content", "<s>"}, {"special", true}}})},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model", {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", vocab}, {"byte_fallback", false}}}};
}

using Ids = std::vector<int64_t>;

TEST(Unigram, CutsIntoThePiecesOfTheHighestScoreAsHuggingFace) {
  const Tokenizer t = load_json(unigram_json());
  EXPECT_EQ(t.model(), "Unigram");
  EXPECT_FALSE(t.byte_level());
  EXPECT_EQ(t.vocab_size(), 17);
  EXPECT_EQ(t.describe(), "Unigram, 17 tokens (2 special), unknown <unk>");
  EXPECT_EQ(t.encode("abcdacdxx"), (Ids{8, 1, 5, 0}));  // abcd a cd, and the two unknown x's as one <unk>
  EXPECT_EQ(t.encode("ef"), (Ids{13}));   // ef (-1) ties e f (-0.5 - 0.5): the first path found is kept
  EXPECT_EQ(t.encode("dc"), (Ids{4, 3}));
  EXPECT_EQ(t.encode("zzz"), (Ids{0}));
  EXPECT_EQ(t.encode("a<s>ab"), (Ids{1, 16, 6}));
  EXPECT_EQ(t.encode("<unk>x"), (Ids{0, 0}));  // the added token, then an unknown character
  EXPECT_EQ(t.encode(""), Ids{});
  EXPECT_EQ(t.encode("a\xff" "b"), (Ids{1, 0, 2}));  // a byte that is not UTF-8: an unknown character
  EXPECT_EQ(t.decode({8, 1, 5}), "abcd a cd");       // no decoder: Hugging Face joins the pieces with spaces

  // byte_fallback: a run of unknown characters becomes its bytes' tokens when the vocabulary has them all.
  json doc = unigram_json();
  doc["model"]["byte_fallback"] = true;
  const Tokenizer bytes = load_json(doc);
  EXPECT_EQ(bytes.encode("xx"), (Ids{9, 9}));
  EXPECT_EQ(bytes.encode("xax"), (Ids{9, 1, 9}));
  EXPECT_EQ(bytes.encode("x\u00e9"), (Ids{0}));  // <0xA9> is missing: the unknown token
  EXPECT_EQ(bytes.describe(), "Unigram, 17 tokens (2 special), byte fallback, unknown <unk>");
  EXPECT_NE(bytes.fingerprint(), t.fingerprint());

  // No unknown token: a character no piece starts with is an error, as in Hugging Face.
  doc = unigram_json();
  doc["model"]["unk_id"] = nullptr;
  const Tokenizer strict = load_json(doc);
  EXPECT_EQ(strict.encode("ab"), (Ids{6}));
  EXPECT_THAT(testing::input_error_of([&] { strict.encode("abx"); }),
              HasSubstr("Unigram has no piece for \"x\" and no unknown token (model.unk_id is null)"));

  // Written back as Hugging Face writes it, scores exact; read again to the same tokenizer.
  const json written = json::parse(t.to_json());
  EXPECT_EQ(written["model"], unigram_json()["model"]);
  EXPECT_EQ(load_json(written).fingerprint(), t.fingerprint());
  doc = unigram_json();
  doc["model"]["vocab"][13][1] = -1.0000001;  // a score changes the fingerprint, and the cut
  EXPECT_NE(load_json(doc).fingerprint(), t.fingerprint());
  EXPECT_EQ(load_json(doc).encode("ef"), (Ids{11, 12}));
  // A piece listed twice: its last id, and that id's score (Hugging Face's map keeps the last).
  doc = unigram_json();
  doc["model"]["vocab"].push_back({"a", -0.1});
  const Tokenizer twice = load_json(doc);
  EXPECT_EQ(twice.encode("aa"), (Ids{17, 17}));
  EXPECT_EQ(twice.encode("ab"), (Ids{6}));
  EXPECT_EQ(twice.string_to_token("a"), 17);
}

TEST(Unigram, NormalizesAsT5sConvertedTokenizer) {
  // T5's steps as transformers converts them: Precompiled, Strip (right), Replace " {2,}" by "▁"; Metaspace.
  json doc = unigram_json();
  doc["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Precompiled"}, {"precompiled_charsmap", rules_charsmap()}},
        {{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}},
        {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", "\u2581"}}}}};
  doc["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}, {"split", true}};
  doc["decoder"] = doc["pre_tokenizer"];
  const Tokenizer t = load_json(doc);
  EXPECT_EQ(t.encode("a  b"), (Ids{14, 2, 14, 2}));  // b▁b, then ▁b ▁b
  EXPECT_EQ(t.encode("a   a"), (Ids{14, 2, 14, 2}));
  EXPECT_EQ(t.encode(" a"), (Ids{14, 2}));
  EXPECT_EQ(t.encode("x\u0301a\u0301 cd  "), (Ids{14, 0, 2, 14, 5}));  // a + its accent is one cluster: "b"
  EXPECT_EQ(t.decode({14, 0, 2, 14, 5}), "<unk>b cd");  // Metaspace's decoder drops the first token's "▁"
  EXPECT_EQ(t.decode({14, 0, 2, 14, 5}, true), "b cd");
  EXPECT_EQ(json::parse(t.to_json())["normalizer"], doc["normalizer"]);
}

TEST(Unigram, NormalizesAsAlbertsConvertedTokenizer) {
  // ALBERT's steps before its character map: Replace "``" by a quote, NFKD, StripAccents, Lowercase.
  json doc = unigram_json();
  doc["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Replace"}, {"pattern", {{"String", "``"}}}, {"content", "\""}},
                         {{"type", "NFKD"}},
                         {{"type", "StripAccents"}},
                         {{"type", "Lowercase"}}}}};
  const Tokenizer t = load_json(doc);
  EXPECT_EQ(t.encode("\u00c1BCD"), (Ids{8}));              // Á B C D -> abcd
  EXPECT_EQ(t.encode("\uff21\uff22\u0301"), (Ids{6}));  // full-width A B and an accent -> ab
  EXPECT_EQ(t.encode("\ufb00"), (Ids{12, 12}));            // the ligature ﬀ -> f f
  EXPECT_EQ(t.encode("\u0130"), (Ids{0}));                 // İ -> I + U+0307 -> I -> i, no piece
  EXPECT_EQ(t.encode("``e"), (Ids{0, 11}));
  EXPECT_EQ(t.encode("\u01c4"), (Ids{4, 0}));              // Ǆ -> D Z + caron -> dz
}

TEST(Unigram, CutsAtWhitespaceBeforeMetaspaceAsOlderConvertedFiles) {
  // WhitespaceSplit then Metaspace: each run between whitespace is a word, given its "▁" (prepend scheme always), or
  // only where the text starts (first).
  json doc = unigram_json();
  for (const char* scheme : {"always", "first"}) {
    const json meta = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme}, {"split", true}};
    doc["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "WhitespaceSplit"}}, meta}}};
    const Tokenizer t = load_json(doc);
    const bool always = std::string(scheme) == "always";
    EXPECT_EQ(t.encode("a  b\tab"), always ? (Ids{15, 14, 2, 14, 6}) : (Ids{15, 2, 6})) << scheme;
    EXPECT_EQ(t.encode(" a b"), always ? (Ids{15, 14, 2}) : (Ids{1, 2})) << scheme;
    EXPECT_EQ(t.encode("ab<s>a\u3000cd "), always ? (Ids{14, 6, 16, 15, 14, 5}) : (Ids{14, 6, 16, 1, 5})) << scheme;
  }
}

/// Protobuf's wire format, for hand-made SentencePiece models.
std::string varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7F) | 0x80);
  return out + static_cast<char>(v);
}
std::string field(uint64_t number, const std::string& bytes) {
  return varint(number << 3 | 2) + varint(bytes.size()) + bytes;
}
std::string piece(const std::string& text, float score, int type) {
  std::string score_bytes(4, '\0');
  std::memcpy(score_bytes.data(), &score, 4);  // little-endian, as protobuf's fixed32
  return field(1, text) + varint(2 << 3 | 5) + score_bytes + varint(3 << 3) + varint(type);
}

TEST(Unigram, ReadsSentencePiecesModelFileAsTransformersConvertsIt) {
  std::string bytes;
  for (const auto& [text, score, type] : std::vector<std::tuple<std::string, float, int>>{
           {"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"\u2581a", -1, 1}, {"a", -2, 1}, {"b", -2.5, 1},
           {"\u2581", -3, 1}, {"<mask>", 0, 4}})
    bytes += field(1, piece(text, score, type));
  bytes += field(2, varint(40 << 3) + varint(0));  // trainer_spec: unk_id 0
  test::TempDir dir("tessera-unigram");
  test::write_file(dir.path() + "/spiece.model", bytes);
  const Tokenizer t = Tokenizer::load(dir.path());  // T5's folder; the file itself reads the same
  EXPECT_EQ(Tokenizer::load(dir.path() + "/spiece.model").fingerprint(), t.fingerprint());
  EXPECT_EQ(t.describe(), "Unigram, 8 tokens (2 special, 1 other added), unknown <unk>");
  // Strip, Replace " {2,}", Metaspace (always); control pieces special added tokens, user-defined ones not special.
  EXPECT_EQ(t.encode("a b  <mask>"), (Ids{3, 6, 5, 7}));
  EXPECT_EQ(t.decode({3, 6, 5, 7}, true), "a b<mask>");
  EXPECT_EQ(t.special_tokens(), (std::vector<std::string>{"<s>", "</s>"}));
  const json written = json::parse(t.to_json());
  EXPECT_EQ(written["model"]["vocab"][5], json::array({"b", -2.5}));
  EXPECT_EQ(written["post_processor"], json());

  const auto refusal = [&](const std::string& model) {
    test::write_file(dir.path() + "/bad.model", model);
    return testing::input_error_of([&] { Tokenizer::load(dir.path() + "/bad.model"); });
  };
  EXPECT_THAT(refusal(field(1, piece("a", 0, 1)) + field(2, varint(3 << 3) + varint(2))),
              HasSubstr("bad.model: a SentencePiece BPE model; Tessera reads Unigram ones"));
  EXPECT_THAT(refusal("\x0a\xff\x01"),
              HasSubstr("not a SentencePiece model (ModelProto at byte 3 of its 3: a field of 255 bytes runs past the "
                        "end)"));
  EXPECT_THAT(refusal(""), HasSubstr("not a SentencePiece model (ModelProto at byte 0 of its 0: it holds no pieces)"));
}

TEST(PrecompiledCharsmap, ReplacesClustersAndCharactersAsHuggingFace) {
  const data::sentencepiece::PrecompiledCharsmap map(rules_charsmap(), "tok.json");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a", "b"},
      {"a\u0301", "b"},                     // a cluster under 6 bytes that starts with a key: the key's replacement
      {"a\u0301\u0301", "b"},
      {"a\u0301\u0301\u0301", "b\u0301\u0301\u0301"},  // 7 bytes: character by character
      {"x\u0301", "x\u0301"},
      {"\r\n", "R"},                        // CR LF is one cluster
      {"\r x", "R x"},
      {"\u06001", "P"},                     // U+0600 (Prepend) joins the character after it
      {"\u0600\u0600a", "P"},
      {"cd", "cd"},                         // a key of two characters is never looked up whole
      {"abc\u200dd", "bbc\u200dd"},
      {"a\U0001F600", "b\U0001F600"},
      {std::string("\0a", 2), std::string("\0b", 2)},
      {"a\xff" "a", "b\xff" "b"},          // a byte that is not UTF-8 stays
  };
  for (const auto& [text, expected] : cases) EXPECT_EQ(map.normalize(text), expected) << text;
}

TEST(Unigram, RefusesWhatItCannotReadNamingTheFileAndWhy) {
  const auto refusal = [](const std::function<void(json&)>& edit) {
    json doc = unigram_json();
    edit(doc);
    return testing::input_error_of([&] { load_json(doc); });
  };
  EXPECT_THAT(refusal([](json& d) { d["model"]["vocab"] = json::object(); }),
              HasSubstr("tok.json: model.vocab is not a JSON array; expected Unigram's [piece, score] pairs"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["vocab"] = json::array(); }),
              HasSubstr("model.vocab is empty; expected Unigram's [piece, score] pairs"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["vocab"][3] = {"c"}; }),
              HasSubstr("model.vocab[3] is [\"c\"], expected [\"piece\", score]"));
  EXPECT_THAT(refusal([](json& d) { d["model"]["unk_id"] = 17; }),
              HasSubstr("model.unk_id is 17, expected null or an id of the model's 17 pieces"));
  EXPECT_THAT(refusal([](json& d) { d["pre_tokenizer"] = {{"type", "Whitespace"}}; }),
              HasSubstr("Unigram with pre_tokenizer {\"type\":\"Whitespace\"}; Tessera reads Unigram tokenizers with "
                        "Metaspace, WhitespaceSplit then Metaspace, or none"));
  EXPECT_THAT(refusal([](json& d) {
                const json meta = {{"type", "Metaspace"}, {"replacement", "\u2581"}};
                d["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {meta, {{"type", "WhitespaceSplit"}}}}};
              }),
              HasSubstr("; Tessera reads Metaspace, WhitespaceSplit, WhitespaceSplit then Metaspace, or none before "
                        "SentencePiece-style BPE and Unigram"));
  EXPECT_THAT(refusal([](json& d) { d["normalizer"] = {{"type", "ByteLevel"}}; }),
              HasSubstr("SentencePiece-style tokenizer with normalizer ByteLevel; Tessera reads Prepend, Replace"));
  EXPECT_THAT(refusal([](json& d) {
                d["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", "^ +"}}}, {"content", ""}};
              }),
              HasSubstr("normalizer Replace's regex {\"Regex\":\"^ +\"}: "));
  EXPECT_THAT(refusal([](json& d) { d["normalizer"] = {{"type", "Strip"}, {"strip_left", 1}, {"strip_right", true}}; }),
              HasSubstr("normalizer Strip's strip_left is 1, expected true or false"));
  const auto charsmap = [&](const std::string& base64) {
    return refusal([&](json& d) { d["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", base64}}; });
  };
  EXPECT_THAT(charsmap("AAQ*"), HasSubstr("precompiled_charsmap is not standard base64 text"));
  EXPECT_THAT(charsmap("AAQ="), HasSubstr("precompiled_charsmap holds 2 bytes; expected a 4-byte trie size"));
  EXPECT_THAT(charsmap("AAQAAAAw"), HasSubstr("says its trie takes 1024 bytes, but 2 follow the size"));
  const std::string rules = rules_charsmap();  // its replacements "P\0R\0Z\0b\0" start at byte 1028; make P a 0xFF
  EXPECT_THAT(charsmap(rules.substr(0, 1368) + "AAD/" + rules.substr(1372)),
              HasSubstr("has replacements that are not UTF-8"));
}

}  // namespace
}  // namespace tessera
