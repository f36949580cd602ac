// Fuzz target: a Split pre-tokenizer regex compiled by Tessera's engine (src/data/split_regex.h), then matched
// against a text.
// Input: the pattern, then optionally a NUL and the text (any bytes).
// Contract: compiling and matching throw RegexError (an InputError: what, and where) and nothing else, crash or
// report; the matches are in order, inside the text, not overlapping, and start and end on character boundaries;
// the Isolated pieces of the text are the text, cut; the Removed pieces are the text between the matches.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <tessera/error.h>

#include "data/split_regex.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 16)) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view pattern = input.substr(0, nul);
  const std::string_view text = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  using tessera::data::SplitBehavior;
  try {
    const tessera::data::SplitRegex re(pattern);
    const auto matches = re.matches(text);
    size_t last = 0;
    for (const auto& [start, end] : matches) {
      if (start < last || end < start || end > text.size()) std::abort();
      last = end;
    }
    std::string joined;
    for (std::string_view piece : tessera::data::split_pieces(text, matches, SplitBehavior::isolated, false))
      joined += piece;
    if (joined != text) std::abort();
    size_t kept = 0, between = 0;
    for (std::string_view piece : tessera::data::split_pieces(text, matches, SplitBehavior::removed, false))
      kept += piece.size();
    last = 0;
    for (const auto& [start, end] : matches) between += start - last, last = end;
    if (kept != between + (text.size() - last)) std::abort();
  } catch (const tessera::InputError&) {
  }
  return 0;
}
