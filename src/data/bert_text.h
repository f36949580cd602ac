#pragma once
// BERT's text handling as Hugging Face `tokenizers` does it, for WordPiece tokenizers (src/data/tokenizer.cpp):
// BertNormalizer, BertPreTokenizer and the WordPiece decoder. Unicode tables: unicode_bert.inc
// (scripts/gen-unicode-classes.py --bert) and normalization.h's.
#include <string>
#include <string_view>
#include <vector>

namespace tessera::data::bert {

/// BertNormalizer's steps, applied in this order.
struct Normalizer {
  bool clean_text = true;            ///< drop NUL, U+FFFD and control characters; every whitespace becomes ' '
  bool handle_chinese_chars = true;  ///< a space on either side of each CJK ideograph (each is then a word)
  bool strip_accents = true;         ///< canonical decomposition, then drop the nonspacing marks (Mn)
  bool lowercase = true;             ///< each character's full lowercase mapping
};

/// `text` normalized. A byte that starts no valid UTF-8 character counts as U+FFFD (dropped by clean_text). The
/// decomposition is Hugging Face's NFD (Unicode 9.0's data: src/data/normalization.h).
std::string normalize(std::string_view text, const Normalizer& options);

/// `text` with each character's full lowercase mapping (BertNormalizer's lowercase; Hugging Face's Lowercase
/// normalizer). Bytes that are not UTF-8 are kept as they are.
std::string lowercase(std::string_view text);

/// BertPreTokenizer's words of `text`: split at whitespace (dropped), each punctuation character (Unicode's P*
/// categories and ASCII's punctuation) a word of its own. Views into `text`.
std::vector<std::string_view> pre_tokenize(std::string_view text);

/// The number of characters of `word` (valid UTF-8; a stray byte counts as one).
size_t characters(std::string_view word);

/// The byte length of the last character of the non-empty `word`.
size_t last_character_size(std::string_view word);

/// The WordPiece decoder's text of `tokens` (their spellings): each but the first gets a space before it, unless
/// it starts with `prefix` (removed); with `cleanup`, spaces before punctuation and English contractions go
/// (" ." -> ".", " n't" -> "n't", " do not" -> " don't", ...), token by token.
std::string decode(const std::vector<std::string_view>& tokens, const std::string& prefix, bool cleanup);

}  // namespace tessera::data::bert
