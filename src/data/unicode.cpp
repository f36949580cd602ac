#include "unicode.h"

#include <algorithm>

namespace tessera::data::unicode {

namespace {
#include "unicode_graphemes.inc"

/// Grapheme_Cluster_Break values, in kGraphemeBreak's numbering.
enum GraphemeBreak : uint32_t { other, cr, lf, control, extend, zwj, regional_indicator, prepend, spacing_mark, l, v, t,
                                lv, lvt };
enum IndicConjunctBreak : uint32_t { none, linker, consonant, incb_extend };
}  // namespace

bool in_ranges(uint32_t cp, const CodeRange* begin, const CodeRange* end) {
  const CodeRange* it = std::upper_bound(begin, end, cp, [](uint32_t c, const CodeRange& r) { return c < r.first; });
  return it != begin && cp <= (it - 1)->last;
}

const CodeMapping* find_mapping(uint32_t cp, const CodeMapping* begin, const CodeMapping* end) {
  const CodeMapping* it =
      std::lower_bound(begin, end, cp, [](const CodeMapping& m, uint32_t c) { return m.code_point < c; });
  return it != end && it->code_point == cp ? it : nullptr;
}

uint32_t value_in(uint32_t cp, const CodeClass* begin, const CodeClass* end, uint32_t otherwise) {
  const CodeClass* it = std::upper_bound(begin, end, cp, [](uint32_t c, const CodeClass& r) { return c < r.first; });
  return it != begin && cp <= (it - 1)->last ? (it - 1)->value : otherwise;
}

bool is_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

std::pair<uint32_t, size_t> decode_utf8(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  size_t n;
  uint32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) n = 2, cp = b0 & 0x1F;
  else if (b0 >= 0xE0 && b0 <= 0xEF) n = 3, cp = b0 & 0x0F;
  else if (b0 >= 0xF0 && b0 <= 0xF4) n = 4, cp = b0 & 0x07;
  else return {0, 0};
  if (i + n > s.size()) return {0, 0};
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return {0, 0};
    cp = (cp << 6) | (b & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return {0, 0};
  return {cp, n};
}

size_t grapheme_end(std::string_view s, size_t i) {
  const auto property = [](uint32_t cp) {
    return static_cast<GraphemeBreak>(value_in(cp, std::begin(kGraphemeBreak), std::end(kGraphemeBreak), other));
  };
  const auto conjunct = [](uint32_t cp) {
    return static_cast<IndicConjunctBreak>(
        value_in(cp, std::begin(kIndicConjunctBreak), std::end(kIndicConjunctBreak), none));
  };
  const auto pictographic = [](uint32_t cp) {
    return in_ranges(cp, std::begin(kExtendedPictographic), std::end(kExtendedPictographic));
  };
  // ASCII but CR, then ASCII (or the end): a break (nothing in ASCII extends or prepends, and only CR joins LF).
  const auto ascii = [&](size_t k) { return static_cast<unsigned char>(s[k]) < 0x80; };
  if (ascii(i) && s[i] != '\r' && (i + 1 == s.size() || ascii(i + 1))) return i + 1;
  const auto [first, n] = decode_utf8(s, i);
  if (n == 0) return i + 1;
  GraphemeBreak before = property(first);
  // GB9c: a consonant, then Extend and Linker characters of which one at least a Linker, joins the next consonant;
  // GB11: a pictograph, Extend characters, then a ZWJ joins the next pictograph; GB12, GB13: regional indicators pair.
  enum { no_conjunct, consonant_seen, linker_seen } indic = conjunct(first) == consonant ? consonant_seen : no_conjunct;
  enum { no_emoji, pictograph_seen, zwj_seen } emoji = pictographic(first) ? pictograph_seen : no_emoji;
  int indicators = before == regional_indicator ? 1 : 0;
  size_t at = i + n;
  while (at < s.size()) {
    const auto [cp, size] = decode_utf8(s, at);
    if (size == 0) break;
    const GraphemeBreak after = property(cp);
    const IndicConjunctBreak incb = conjunct(cp);
    const bool picture = pictographic(cp);
    bool join;
    if (before == cr && after == lf) join = true;                                                  // GB3
    else if (before == control || before == cr || before == lf) join = false;                     // GB4
    else if (after == control || after == cr || after == lf) join = false;                        // GB5
    else if (before == l && (after == l || after == v || after == lv || after == lvt)) join = true;  // GB6
    else if ((before == lv || before == v) && (after == v || after == t)) join = true;            // GB7
    else if ((before == lvt || before == t) && after == t) join = true;                           // GB8
    else if (after == extend || after == zwj || after == spacing_mark) join = true;               // GB9, GB9a
    else if (before == prepend) join = true;                                                      // GB9b
    else if (indic == linker_seen && incb == consonant) join = true;                              // GB9c
    else if (emoji == zwj_seen && picture) join = true;                                           // GB11
    else join = before == regional_indicator && after == regional_indicator && indicators % 2 == 1;  // GB12, GB13
    if (!join) break;
    if (incb == consonant) indic = consonant_seen;
    else if (incb == linker && indic != no_conjunct) indic = linker_seen;
    else if (incb != incb_extend) indic = no_conjunct;
    if (picture) emoji = pictograph_seen;
    else if (after == zwj && emoji == pictograph_seen) emoji = zwj_seen;
    else if (!(after == extend && emoji == pictograph_seen)) emoji = no_emoji;
    indicators = after == regional_indicator ? indicators + 1 : 0;
    before = after;
    at += size;
  }
  return at;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = decode_utf8(s, i).second;
    if (n == 0) return false;
    i += n;
  }
  return true;
}

}  // namespace tessera::data::unicode
