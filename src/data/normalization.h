#pragma once
// Unicode's canonical normalization (NFD, NFC) as Hugging Face's normalizers apply it: with Unicode 9.0's data, which
// their crate holds (src/data/unicode_normalization.inc, scripts/gen-unicode-classes.py --normalization), checked
// against Hugging Face on every code point (tests/core/tokenizer_interop_test.cpp). Used by byte-level BPE's NFC and
// NFD normalizers (src/data/tokenizer.cpp) and BertNormalizer's strip_accents (src/data/bert_text.cpp).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::data::unicode {

/// Code points at or above this stand for a byte that starts no valid UTF-8 character (kNotUtf8 + the byte): they
/// have no decomposition, combining class 0, compose with nothing, and are written back as the byte.
constexpr uint32_t kNotUtf8 = 0x110000;

/// `cps` in canonical decomposition: each code point fully decomposed (Hangul syllables by Unicode's formula), then
/// each run of combining marks put in canonical order (stable, by combining class).
void decompose(std::vector<uint32_t>& cps);

enum class NormalForm { nfd, nfc };

/// `text` in Unicode's normal form `form`. Bytes that are not UTF-8 are kept as they are.
std::string normalize(std::string_view text, NormalForm form);

}  // namespace tessera::data::unicode
