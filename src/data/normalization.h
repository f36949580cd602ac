#pragma once
// Unicode's normalization forms (NFD, NFC, NFKD, NFKC) as Hugging Face's normalizers apply them: with Unicode 9.0's
// data, which their crate holds (src/data/unicode_normalization.inc, scripts/gen-unicode-classes.py --normalization),
// checked against Hugging Face on every code point (tests/core/tokenizer_interop_test.cpp). Used by the tokenizers'
// normalizers (src/data/tokenizer.cpp, src/data/sentencepiece_text.cpp) and BertNormalizer's strip_accents
// (src/data/bert_text.cpp).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::data::unicode {

/// Code points at or above this stand for a byte that starts no valid UTF-8 character (kNotUtf8 + the byte): they
/// have no decomposition, combining class 0, compose with nothing, and are written back as the byte.
constexpr uint32_t kNotUtf8 = 0x110000;

/// `cps` in canonical (or, with `compatibility`, compatibility) decomposition: each code point fully decomposed
/// (Hangul syllables by Unicode's formula), then each run of combining marks put in canonical order (stable, by
/// combining class).
void decompose(std::vector<uint32_t>& cps, bool compatibility = false);

enum class NormalForm { nfd, nfc, nfkd, nfkc };

/// "NFD", "NFC", "NFKD", "NFKC" (tokenizer.json's normalizer types); and back (false for another name).
const char* normal_form_name(NormalForm form);
bool normal_form_from_name(const std::string& name, NormalForm& out);

/// Whether `cp` is a mark (general category Mn, Mc or Me, Unicode 9.0: what Hugging Face's StripAccents removes).
bool is_mark(uint32_t cp);

/// `text` without its marks (Hugging Face's StripAccents). Bytes that are not UTF-8 are kept as they are.
std::string strip_marks(std::string_view text);

/// `text` in Unicode's normal form `form`. Bytes that are not UTF-8 are kept as they are.
std::string normalize(std::string_view text, NormalForm form);

}  // namespace tessera::data::unicode
