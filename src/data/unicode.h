#pragma once
// UTF-8 and Unicode property helpers shared by the tokenizers (src/data/tokenizer.cpp, src/data/bert_text.cpp).
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera::data::unicode {

/// An inclusive range of code points; the generated tables (unicode_classes.inc, unicode_bert.inc) are sorted,
/// disjoint arrays of them.
struct CodeRange {
  uint32_t first, last;
};

/// A code point's mapping to `length` code points starting at `start` in a flat array (unicode_bert.inc).
struct CodeMapping {
  uint32_t code_point, start, length;
};

/// An inclusive range of code points sharing a value (a general category, a combining class).
struct CodeClass {
  uint32_t first, last, value;
};

/// A code point and its simple case folding.
struct CodeFold {
  uint32_t code_point, fold;
};

/// Whether `cp` is in the sorted, disjoint ranges [begin, end).
bool in_ranges(uint32_t cp, const CodeRange* begin, const CodeRange* end);

/// The mapping of `cp` in a table sorted by code point [begin, end), or null.
const CodeMapping* find_mapping(uint32_t cp, const CodeMapping* begin, const CodeMapping* end);

/// The value of the range of [begin, end) holding `cp`, or `otherwise`.
uint32_t value_in(uint32_t cp, const CodeClass* begin, const CodeClass* end, uint32_t otherwise);

/// Unicode's White_Space (the `\s` of Hugging Face's regex engine and Rust's char::is_whitespace: Zs, Zl, Zp, tab
/// to carriage return, NEL).
bool is_space(uint32_t cp);

/// The code point of the valid UTF-8 character at `s[i]` and its length in bytes, or length 0 where no valid
/// character starts (overlong, surrogate, beyond U+10FFFF, cut short).
std::pair<uint32_t, size_t> decode_utf8(std::string_view s, size_t i);

/// Whether every byte of `s` belongs to a valid UTF-8 character.
bool valid_utf8(std::string_view s);

/// The end of the extended grapheme cluster (Unicode's UAX #29, Unicode 16.0's properties) that starts at `s[i]`,
/// `i` being the start of `s` or the end of the cluster before: Hugging Face's Precompiled normalizer looks text up
/// cluster by cluster. A byte that starts no valid UTF-8 character is a cluster of its own.
size_t grapheme_end(std::string_view s, size_t i);

/// Appends to `out` what `each(cp, bytes, out)` appends for each valid UTF-8 character of `text` (its code point and
/// its bytes); a byte that starts no valid character is appended as it is.
template <class Each>
void append_each_character(std::string& out, std::string_view text, Each&& each) {
  for (size_t i = 0; i < text.size();) {
    const auto [cp, n] = decode_utf8(text, i);
    if (n == 0) {
      out += text[i++];
      continue;
    }
    each(cp, text.substr(i, n), out);
    i += n;
  }
}

/// What a character does to the words of a text (cut_words).
enum class Cut { none, drop, isolate };  ///< part of a word; a place between words, dropped; a word of its own

/// The words of `text` (views into it): `rule(cp)` says, for each valid UTF-8 character, whether it ends the word
/// before it and is dropped (whitespace) or is a word of its own (punctuation); a byte that starts no valid character
/// is part of a word.
template <class Rule>
std::vector<std::string_view> cut_words(std::string_view text, Rule&& rule) {
  std::vector<std::string_view> words;
  size_t start = 0;  // of the word being read
  for (size_t i = 0; i < text.size();) {
    const auto [cp, n] = decode_utf8(text, i);
    const size_t size = n == 0 ? 1 : n;
    const Cut cut = n == 0 ? Cut::none : rule(cp);
    if (cut != Cut::none) {
      if (start < i) words.push_back(text.substr(start, i - start));
      if (cut == Cut::isolate) words.push_back(text.substr(i, size));
      start = i + size;
    }
    i += size;
  }
  if (start < text.size()) words.push_back(text.substr(start));
  return words;
}

/// Appends the UTF-8 encoding of `cp` (at most U+10FFFF).
void append_utf8(std::string& out, uint32_t cp);

}  // namespace tessera::data::unicode
