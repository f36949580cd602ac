#pragma once
/// Byte-level BPE tokenizers (GPT-2's scheme, or Llama 3's, Qwen2's, GPT-4o's pattern, or Splits by regexes of your
/// own, with an NFC normalizer or not): trained on your text, or read from a Hugging Face
/// `tokenizer.json` or GPT-2's `vocab.json` + `merges.txt`, and written as a `tokenizer.json` that Hugging Face
/// `tokenizers` reads; and WordPiece (BERT's), SentencePiece-style BPE (Llama 2's) and Unigram (T5's, XLM-RoBERTa's)
/// tokenizers, read and written.
///
///     auto tok = tessera::data::Tokenizer::train({text}, tessera::data::TokenizerTrainOptions().vocab_size(4096));
///     tok.save("fortunes-4096.json");
///     std::vector<int64_t> ids = tok.encode("Hello world");   // decode(ids) == "Hello world"
///
/// Encoding: added tokens (special tokens and others; exact text, leftmost then longest; those with `normalized`
/// false first, then the others in the text between, with Hugging Face's `lstrip`, `rstrip` and `single_word`) are
/// cut out of the text; the rest is split into pieces by
/// GPT-2's pattern (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, Unicode letters
/// and numbers from src/data/unicode_classes.inc), and each piece's bytes are merged pair by pair, the pair of
/// lowest merge rank first (leftmost on ties), as Hugging Face `tokenizers` does: the same ids for the same
/// tokenizer.json (tests/core/tokenizer_interop_test.cpp). Any bytes encode, UTF-8 or not (a byte that is not part of
/// a valid UTF-8 character counts as neither letter, number nor space), and `decode(encode(t)) == t` (unless an
/// added token's lstrip or rstrip took the whitespace beside it, as in Hugging Face).
///
/// Training: Hugging Face's BpeTrainer on byte-level pieces: the vocabulary starts with the special tokens, then the
/// 256 bytes in the order of their byte-level characters; each step merges the most frequent adjacent pair over all
/// pieces (the pair of smallest ids on ties) until `vocab_size` tokens or no pair occurs `min_frequency` times.
/// Special tokens are cut out of the training text first (they are never merged into pieces). Deterministic: the same
/// texts and options give the same merges, which are those of Hugging Face's trainer on the same pieces.
///
/// WordPiece tokenizers (BERT's) are read from a tokenizer.json too, and encode as Hugging Face does: added tokens cut
/// out as above, the rest normalized by BertNormalizer (clean_text, handle_chinese_chars, strip_accents, lowercase;
/// or none), split into words by BertPreTokenizer (whitespace dropped, each punctuation character a word), and each
/// word cut greedily into the longest pieces of the vocabulary, those after the first with the subword prefix ("##"),
/// or the unknown token for a word that cannot be cut (or is longer than max_input_chars_per_word). `decode` is the
/// WordPiece decoder's (pieces joined, spaces before punctuation cleaned up): lowercased, accent-free text, not the
/// bytes encoded. WordPiece tokenizers are read and written, not trained (train one with Hugging Face's
/// WordPieceTrainer; tests/core/tokenizer_interop_test.cpp checks the ids against Hugging Face's).
///
/// Llama 3's byte-level BPE is read too (and trained, with `pattern("llama3")`): its pre-tokenizer is a Split by Llama
/// 3's pattern (`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
/// \s*[\r\n]+|\s+(?!\S)|\s+`, the pattern of OpenAI's cl100k) followed by ByteLevel without its own pattern, and
/// with `ignore_merges` a piece that is a token of the vocabulary as a whole is that token, unmerged. So are Qwen2's
/// (`pattern("qwen2")`: Llama 3's with `\p{N}` for `\p{N}{1,3}`, after an NFC normalizer: `normalizer("nfc")`) and
/// GPT-4o's (`pattern("o200k")`), and any Sequence of Split pre-tokenizers then ByteLevel (DeepSeek V3's three
/// Splits; `split_regex` trains with one of your own): each Split's regex is compiled by src/data/split_regex.h, which
/// follows Hugging Face's engine (Oniguruma) and refuses, naming where and why, what it does not read. A normalizer NFC,
/// NFD, NFKC or NFKD (Unicode 9.0's data, as Hugging Face's) is applied to the text between the added tokens first.
///
/// SentencePiece-style BPE (Llama 2's, Mistral's, as Hugging Face converts them) is read too: BPE over the text's
/// characters, not its bytes. A normalizer of Prepend and Replace steps (Llama 2's: "▁" before the text, "▁" for
/// each space) or the Metaspace pre-tokenizer (spaces as "▁", "▁" put first always, at the text's start only or
/// never, cut into words at each "▁" or not); each word's characters are their tokens, or, with `byte_fallback`,
/// their UTF-8 bytes' <0xXX> tokens, or the unknown token (consecutive ones fused with `fuse_unk`), then merged by
/// rank. `decode` runs the decoder's steps (Replace, ByteFallback, Fuse, Strip, Metaspace) as Hugging Face does:
/// bytes that are not UTF-8 decode to U+FFFD each. Read and written, not trained.
///
/// Unigram (T5's, mT5's, XLM-RoBERTa's, as transformers converts SentencePiece's models) is read too: the normalizer's
/// Precompiled (SentencePiece's character map, applied by grapheme cluster as Hugging Face applies it:
/// src/data/precompiled_charsmap.h), Strip, Replace (by a string or a regex), NFC/NFD/NFKC/NFKD, StripAccents and
/// Lowercase (ALBERT's, XLNet's) steps, Metaspace (after WhitespaceSplit or not), then each word cut
/// into the pieces of the highest total score as Hugging Face's Unigram cuts it (src/data/unigram.h); `decode` runs the
/// decoder. SentencePiece-style BPE may hold those normalizer steps too. Read and written, not trained.
///
/// Not read (InputError naming the file and what it holds): tokenizers of another model (WordLevel), byte-level BPE
/// with a normalizer other than NFC, NFD, NFKC and NFKD or a pre-tokenizer other than Splits and ByteLevel (Digits,
/// ByteLevel with use_regex false alone), a Split regex with what split_regex.h refuses, SentencePiece-style BPE or
/// Unigram with another normalizer (BertNormalizer) or pre-tokenizer (Whitespace) or decoder step, BPE dropout,
/// subword prefixes or suffixes in BPE, WordPiece with a normalizer other than
/// BertNormalizer, a pre-tokenizer other than BertPreTokenizer or a decoder other than WordPiece, post-processors
/// other than TemplateProcessing (its single template), RobertaProcessing, BertProcessing and ByteLevel. The
/// post-processor's tokens (RoBERTa's `<s> … </s>`, BERT's `[CLS] … [SEP]`, a template's `$A <|endoftext|>`) are
/// added by `encode(text, true)`; plain `encode(text)` gives the text's tokens only (Hugging Face's
/// `add_special_tokens` is true by default; here it is asked for).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tessera/options.h>

namespace tessera::data {

namespace detail {
struct WordPieceModel;      ///< a WordPiece tokenizer's settings and vocabulary lookup (src/data/tokenizer.cpp)
struct SentencePieceModel;  ///< a SentencePiece-style BPE or Unigram tokenizer's steps and model (same file)
struct PreTokenizer;        ///< a byte-level BPE tokenizer's normalizer and Split steps (same file)
}

/// Options of `Tokenizer::train`.
struct TokenizerTrainOptions {
  /// Tokens of the trained vocabulary: the special tokens, the 256 bytes, and one per merge.
  TESSERA_OPTION(int64_t, vocab_size) = 4096;
  /// A pair is merged only when it occurs at least this often (Hugging Face's default for byte-level BPE: 2).
  TESSERA_OPTION(int64_t, min_frequency) = 2;
  /// Tokens given ids 0, 1, … in this order and matched as exact text when encoding (such as "<|endoftext|>").
  TESSERA_OPTION(std::vector<std::string>, special_tokens) = {};
  /// The post-processor's template of one text, written as Hugging Face's TemplateProcessing: "$A" (the text)
  /// once, and special tokens, separated by spaces, such as "$A <|endoftext|>" or "<s> $A </s>" ("" = none).
  /// encode(text, true) puts its tokens around the text; the text dataset's document_separator needs one.
  TESSERA_OPTION(std::string, single_template) = "";
  /// The pattern that cuts text into pieces: "gpt2" (GPT-2's), "llama3" (Llama 3's: numbers in runs of at most
  /// three digits, line breaks kept with the punctuation or spaces before them), "qwen2" (Llama 3's with single
  /// digits) or "o200k" (GPT-4o's). Saved in the tokenizer.json.
  TESSERA_OPTION(std::string, pattern) = "gpt2";
  /// A regex of your own instead of `pattern` ("" = none): a Split pre-tokenizer (each match a piece, and each
  /// stretch between matches), in Hugging Face's (Oniguruma's) syntax; src/data/split_regex.h lists what is read.
  TESSERA_OPTION(std::string, split_regex) = "";
  /// Unicode normalization of the text before it is cut: "none", "nfc" (Qwen2's), "nfd", "nfkc" or "nfkd". Saved in
  /// the tokenizer.json.
  TESSERA_OPTION(std::string, normalizer) = "none";
  template <class V>
  void visit(V& v) {
    v("vocab_size", vocab_size_, "tokens of the vocabulary (special tokens + 256 bytes + merges)", Range::at_least(1));
    v("min_frequency", min_frequency_, "merge only pairs seen at least this often", Range::at_least(1));
    v("special_tokens", special_tokens_, "tokens matched as exact text, given the first ids", Any{});
    v("single_template", single_template_, "special tokens around each text, such as \"$A <|endoftext|>\"", Any{});
    v("pattern", pattern_, "the pre-tokenizer's pattern", Choices{{"gpt2", "llama3", "qwen2", "o200k"}});
    v("split_regex", split_regex_, "a pre-tokenizer regex of your own, instead of pattern", Any{});
    v("normalizer", normalizer_, "Unicode normalization before pre-tokenization",
      Choices{{"none", "nfc", "nfd", "nfkc", "nfkd"}});
  }
};

/// A token matched as exact text before the rest is split into pieces: Hugging Face's added tokens (special tokens,
/// and tokens added to a trained vocabulary). Training makes special ones, with the defaults below; a tokenizer.json
/// entry that leaves a flag out gets its default here (Hugging Face requires all five).
struct AddedToken {
  std::string content;       ///< its text (the bytes `decode` gives for it)
  int64_t id = 0;
  bool special = true;       ///< left out by decode(ids, skip_special_tokens = true)
  bool lstrip = false;       ///< also takes the whitespace to its left
  bool rstrip = false;       ///< also takes the whitespace to its right
  bool single_word = false;  ///< matches only where no word character (Unicode's \w) touches it on either side
  bool normalized = false;   ///< matched in a second pass, within the text between the others
};

/// The patterns byte-level BPE cuts text into pieces with, before merging each piece's bytes.
enum class Pattern {
  gpt2,    ///< GPT-2's (and RoBERTa's): ByteLevel's own regex
  llama3,  ///< Llama 3's (OpenAI's cl100k): contractions in any case, letters with one non-letter, numbers in threes
  qwen2,   ///< Qwen2's (Qwen2.5's, Qwen3's): Llama 3's, but each digit a piece of its own
  o200k,   ///< GPT-4o's (OpenAI's o200k): words cut before capitals, contractions kept with their word
  custom,  ///< another pre-tokenizer read from a tokenizer.json: Splits by other regexes (see pre_tokenizer_json())
};
/// "gpt2", "llama3", "qwen2", "o200k" (or "custom"); and back (InputError for another name, saying which are known).
std::string pattern_name(Pattern pattern);
Pattern pattern_from_name(const std::string& name);
/// The regex of a named pattern, as a tokenizer.json's Split (or, GPT-2's, ByteLevel) holds it.
std::string pattern_regex(Pattern pattern);

/// The pieces `pattern` splits `text` into (views into `text`; their concatenation is `text`). InputError for custom.
std::vector<std::string_view> pretokenize(std::string_view text, Pattern pattern = Pattern::gpt2);

/// A byte-level BPE, WordPiece or SentencePiece-style BPE tokenizer. Immutable once built; `encode` and `decode` are
/// thread-safe.
class Tokenizer {
 public:
  /// Trains on `texts` (each one a separate text: no piece spans two). Throws InputError when vocab_size is below
  /// 256 + the special tokens, a special token is empty or repeated, or single_template holds other than $A once
  /// and special tokens.
  static Tokenizer train(const std::vector<std::string>& texts, const TokenizerTrainOptions& options = {});
  /// Reads a tokenizer.json file, a SentencePiece Unigram model file (`*.model`: as transformers' SpmConverter
  /// converts it, src/data/sentencepiece_model.h), or a folder holding tokenizer.json, GPT-2's vocab.json + merges.txt,
  /// T5's spiece.model or BERT's vocab.txt (with tokenizer_config.json's do_lower_case, strip_accents and
  /// tokenize_chinese_chars when present: Hugging Face's BertWordPieceTokenizer over it). InputError for a missing or malformed file, naming it and what
  /// is wrong.
  static Tokenizer load(const std::string& path);
  /// Writes a Hugging Face tokenizer.json (version 1.0: ByteLevel pre-tokenizer and decoder, BPE model), atomically.
  void save(const std::string& path) const;
  /// The Hugging Face tokenizer.json text `save` writes.
  std::string to_json() const;

  /// The ids of `text` (UTF-8 or any bytes); with add_special_tokens, between prefix_ids() and suffix_ids().
  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens = false) const;
  /// The bytes of `ids` concatenated; special tokens are left out when skip_special_tokens. InputError for an id
  /// outside [0, vocab_size).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const noexcept { return static_cast<int64_t>(tokens_.size()); }
  /// "BPE" (byte-level or SentencePiece-style), "Unigram" or "WordPiece": the tokenizer.json model type.
  std::string model() const;
  /// Whether this is byte-level BPE (GPT-2's, Llama 3's: every byte a token, decode gives the bytes encoded), rather
  /// than WordPiece, SentencePiece-style BPE (over characters, with byte fallback) or Unigram.
  bool byte_level() const noexcept { return !wordpiece_ && !sentencepiece_; }
  /// A byte-level BPE tokenizer's pre-tokenizer pattern (gpt2 for the others, which split text their own way; custom
  /// for Splits by other regexes, or several Splits).
  Pattern pattern() const noexcept { return pattern_; }
  /// A byte-level BPE tokenizer's pre-tokenizer as tokenizer.json writes it (the others': "null").
  std::string pre_tokenizer_json() const;
  /// A byte-level BPE tokenizer's Unicode normalization before the text is cut: "NFC", "NFD", "NFKC", "NFKD" or ""
  /// (none).
  std::string normalizer() const;
  /// Whether a piece that is a token of the vocabulary as a whole is encoded as that token, unmerged (BPE's
  /// `ignore_merges`, Llama 3's).
  bool ignore_merges() const noexcept { return ignore_merges_; }
  /// Merges, in rank order: the ids of the pair (left, right); the merged token is their bytes concatenated.
  const std::vector<std::pair<int64_t, int64_t>>& merges() const noexcept { return merges_; }
  /// The bytes of token `id` (an added token's text; a WordPiece or SentencePiece-style token's spelling, "##ing",
  /// "▁the"). InputError outside [0, vocab_size).
  const std::string& token_bytes(int64_t id) const;
  /// The token as tokenizer.json spells it: its bytes as GPT-2's byte-level characters (a space is "Ġ"),
  /// added tokens, WordPiece and SentencePiece-style tokens as they are.
  std::string token_to_string(int64_t id) const;
  /// The id of a token spelt as tokenizer.json does, or -1.
  int64_t string_to_token(const std::string& spelling) const;
  /// Whether token `id` is an added token marked special (what decode(ids, true) leaves out).
  bool is_special(int64_t id) const;
  /// The texts of the special added tokens, by id.
  std::vector<std::string> special_tokens() const;
  /// The added tokens, by id.
  const std::vector<AddedToken>& added_tokens() const noexcept { return added_; }
  /// The ids the post-processor puts before and after a text (encode(text, true)); empty without one.
  const std::vector<int64_t>& prefix_ids() const noexcept { return prefix_; }
  const std::vector<int64_t>& suffix_ids() const noexcept { return suffix_; }
  /// Whether a space is put before each text (between added tokens) that does not start with one (RoBERTa's).
  bool add_prefix_space() const noexcept { return add_prefix_space_; }
  /// "byte-level BPE, 4096 tokens (2 special), 3838 merges", "WordPiece, 30522 tokens (5 special), lowercased,
  /// accents stripped" or "SentencePiece-style BPE, 32000 tokens (3 special), 61249 merges, byte fallback, unknown
  /// <unk>" (and the added tokens that are not special, the post-processor's tokens).
  std::string describe() const;
  /// 16 hex digits of a hash of the vocabulary and merges: equal tokenizers, equal fingerprints.
  std::string fingerprint() const;

 private:
  Tokenizer() = default;
  void index_added();  ///< builds added_of_ and the matching orders from added_
  void index();        ///< index_added(), then the byte and merge tables from tokens_ and merges_
  template <class Text>
  void split_added(std::string_view text, const std::vector<std::vector<int32_t>>& order,
                   std::vector<int64_t>& out, Text&& on_text) const;
  using Cache = std::unordered_map<std::string, std::vector<int64_t>>;  ///< a piece's ids, by piece
  /// A piece's ids: its bytes' (or, SentencePiece-style, its characters') tokens merged, or the whole piece's token
  /// with ignore_merges.
  void encode_piece(std::string_view piece, std::vector<int64_t>& out, Cache& cache) const;
  void initial_characters(std::string_view word, std::vector<int64_t>& ids) const;  ///< SentencePiece-style
  /// SentencePiece-style: a text that is one word, cut where no token spans (before a "▁" after another character).
  void encode_words(std::string_view text, std::vector<int64_t>& out, Cache& cache) const;
  void merge(std::vector<int64_t>& ids) const;  ///< applies the merges by rank, leftmost first
  /// Byte-level BPE: the pieces the pre-tokenizer cuts `text` (normalized already) into, appended to `out`.
  void cut_text(std::string_view text, std::vector<std::string_view>& out) const;
  void encode_word(std::string_view word, std::vector<int64_t>& out) const;  ///< WordPiece's greedy longest match

  std::vector<std::string> tokens_;                         ///< id -> bytes
  std::vector<AddedToken> added_;                           ///< by id
  std::vector<std::string> match_text_;                     ///< by index in added_: the text matched (normalized)
  std::vector<int32_t> added_of_;                           ///< id -> index in added_, or -1
  /// Indices in added_ of the tokens each pass matches, by first byte, longest first: normalized false, then true.
  std::vector<std::vector<int32_t>> raw_order_, normalized_order_;
  std::vector<int64_t> prefix_, suffix_;                    ///< the post-processor's ids around a text
  std::string post_processor_;                              ///< its tokenizer.json object as read ("" = none)
  std::vector<std::pair<int64_t, int64_t>> merges_;         ///< rank -> (left, right)
  std::unordered_map<uint64_t, std::pair<int32_t, int64_t>> merge_of_;  ///< (left, right) -> (rank, new id)
  int64_t byte_ids_[256] = {};                              ///< byte -> its token
  bool add_prefix_space_ = false;
  Pattern pattern_ = Pattern::gpt2;
  bool ignore_merges_ = false;
  std::unordered_map<std::string, int64_t> whole_of_;  ///< byte-level BPE with ignore_merges_: bytes -> id
  std::shared_ptr<const detail::WordPieceModel> wordpiece_;  ///< set for a WordPiece tokenizer
  std::shared_ptr<const detail::SentencePieceModel> sentencepiece_;  ///< set for BPE over characters and Unigram
  std::shared_ptr<const detail::PreTokenizer> pre_;  ///< byte-level BPE: set unless GPT-2's pattern alone cuts the text
};

}  // namespace tessera::data
