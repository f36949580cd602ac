#pragma once
// SentencePiece's precompiled character map (a model's `precompiled_charsmap`: its normalization rules, such as
// nmt_nfkc's, compiled into a double-array trie of UTF-8 keys and a blob of NUL-terminated replacements), applied as
// Hugging Face's Precompiled normalizer applies it (T5's, mT5's, XLM-RoBERTa's, ALBERT's tokenizer.json): the text is
// cut into extended grapheme clusters (unicode::grapheme_end); a cluster shorter than 6 bytes whose start is a key
// becomes the replacement of the shortest such key (the rest of the cluster is dropped, as there); otherwise each
// character that starts with a key becomes that key's replacement, and the others stay. Checked against Hugging Face
// on every code point and on clusters (tests/core/tokenizer_interop_test.cpp).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::data::sentencepiece {

class PrecompiledCharsmap {
 public:
  /// Reads the base64 text of tokenizer.json's `precompiled_charsmap`. InputError "tokenizer FILE: …" naming what is
  /// wrong: not base64, a blob shorter than its header says, a trie whose size is not a multiple of 4, replacements
  /// that are not UTF-8.
  PrecompiledCharsmap(std::string_view base64, const std::string& file);
  /// `text` normalized. Bytes that start no valid UTF-8 character are kept as they are. InputError when the trie
  /// points outside the replacements (a corrupt map: Hugging Face would panic).
  std::string normalize(std::string_view text) const;

 private:
  /// The replacement of the shortest key that `chunk` starts with, if any.
  std::optional<std::string_view> replacement(std::string_view chunk) const;

  std::vector<uint32_t> trie_;  ///< darts-clone units
  std::string replacements_;   ///< NUL-terminated UTF-8 strings
  std::string file_;           ///< for errors
};

/// The bytes of standard base64 text (RFC 4648, with padding), or nullopt where it is not; and the base64 text of
/// bytes (tokenizer.json holds the character map so).
std::optional<std::string> decode_base64(std::string_view text);
std::string encode_base64(std::string_view bytes);

}  // namespace tessera::data::sentencepiece
