#pragma once
// Texts holding every Unicode code point, for the tokenizers' exhaustive tests (tests/core/split_regex_test.cpp,
// tests/core/tokenizer_interop_test.cpp).
#include <cstdint>
#include <string>
#include <vector>

#include "../../src/data/unicode.h"

namespace tessera::test {

/// The UTF-8 encoding of code point `cp`.
inline std::string utf8(uint32_t cp) {
  std::string out;
  data::unicode::append_utf8(out, cp);
  return out;
}

/// Every Unicode scalar value in the contexts the pre-tokenizer patterns' alternatives look at (after a letter, a
/// number, a space, a line break, an apostrophe, a capital; doubled; before punctuation and a small letter),
/// `per_text` code points to a text.
inline std::vector<std::string> every_code_point_in_context(uint32_t per_text = 64) {
  std::vector<std::string> texts;
  std::string text;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const std::string c = utf8(cp);
    text += "a" + c + "1" + c + " " + c + "\n" + c + "'" + c + "x" + c + c + " . " + c + "X" + c + "y\r\n";
    if (cp % per_text == per_text - 1) texts.push_back(std::move(text)), text.clear();
  }
  texts.push_back(text);
  return texts;
}

}  // namespace tessera::test
