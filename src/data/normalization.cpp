#include "normalization.h"

#include <algorithm>
#include <iterator>

#include "unicode.h"

namespace tessera::data::unicode {
namespace {

struct Composition {
  uint32_t first, second, composite;
};
#include "unicode_normalization.inc"

// Hangul syllables: Unicode's formula (chapter 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7, kLCount = 19, kVCount = 21,
                   kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint32_t combining_class(uint32_t cp) {
  return value_in(cp, std::begin(kCombiningClass), std::end(kCombiningClass), 0);
}

void append_decomposed(std::vector<uint32_t>& out, uint32_t cp, bool compatibility) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const CodeMapping* k =
      compatibility ? find_mapping(cp, std::begin(kCompatibility), std::end(kCompatibility)) : nullptr;
  if (k != nullptr) {
    out.insert(out.end(), kCompatibilityDecomposed + k->start, kCompatibilityDecomposed + k->start + k->length);
  } else if (const CodeMapping* m = find_mapping(cp, std::begin(kDecomposition), std::end(kDecomposition))) {
    out.insert(out.end(), kDecomposed + m->start, kDecomposed + m->start + m->length);
  } else {
    out.push_back(cp);
  }
}

/// The primary composite of `a` followed by `b`, or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* it = std::lower_bound(std::begin(kComposition), std::end(kComposition), std::pair{a, b},
                                    [](const Composition& c, const std::pair<uint32_t, uint32_t>& p) {
                                      return c.first != p.first ? c.first < p.first : c.second < p.second;
                                    });
  return it != std::end(kComposition) && it->first == a && it->second == b ? it->composite : 0;
}

/// Canonical composition of decomposed, ordered `cps` (Unicode's algorithm: each character joins the last starter
/// unless a character between them is a starter or has a combining class at least its own).
void compose(std::vector<uint32_t>& cps) {
  size_t out = 0;
  ptrdiff_t starter = -1;  // in cps[0, out)
  uint32_t last_class = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    const uint32_t cp = cps[i], cls = combining_class(cp);
    const bool adjacent = starter >= 0 && static_cast<size_t>(starter) + 1 == out;
    if (starter >= 0 && (adjacent || (cls != 0 && last_class < cls))) {
      if (const uint32_t composite = compose(cps[starter], cp)) {
        cps[starter] = composite;
        continue;
      }
    }
    if (cls == 0) starter = static_cast<ptrdiff_t>(out);
    last_class = cls;
    cps[out++] = cp;
  }
  cps.resize(out);
}

}  // namespace

void decompose(std::vector<uint32_t>& cps, bool compatibility) {
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) append_decomposed(out, cp, compatibility);
  for (size_t i = 0; i < out.size();) {  // each run of non-starters, stably sorted by combining class
    size_t end = i;
    while (end < out.size() && combining_class(out[end]) != 0) ++end;
    if (end - i > 1) {
      std::stable_sort(out.begin() + i, out.begin() + end,
                       [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    }
    i = end == i ? i + 1 : end;
  }
  cps = std::move(out);
}

namespace {

/// `text` (a stretch that starts at a starter) in normal form `form`, appended to `out`.
void normalize_stretch(std::string_view text, NormalForm form, std::string& out) {
  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto [cp, n] = decode_utf8(text, i);
    cps.push_back(n == 0 ? kNotUtf8 + static_cast<unsigned char>(text[i]) : cp);
    i += n == 0 ? 1 : n;
  }
  decompose(cps, form == NormalForm::nfkd || form == NormalForm::nfkc);
  if (form == NormalForm::nfc || form == NormalForm::nfkc) compose(cps);
  for (uint32_t cp : cps) {
    if (cp >= kNotUtf8) out += static_cast<char>(cp - kNotUtf8);
    else append_utf8(out, cp);
  }
}

bool ascii(char c) { return static_cast<unsigned char>(c) < 0x80; }

}  // namespace

const char* normal_form_name(NormalForm form) {
  switch (form) {
    case NormalForm::nfd: return "NFD";
    case NormalForm::nfc: return "NFC";
    case NormalForm::nfkd: return "NFKD";
    case NormalForm::nfkc: return "NFKC";
  }
  return "?";
}

bool normal_form_from_name(const std::string& name, NormalForm& out) {
  for (NormalForm form : {NormalForm::nfd, NormalForm::nfc, NormalForm::nfkd, NormalForm::nfkc}) {
    if (name != normal_form_name(form)) continue;
    out = form;
    return true;
  }
  return false;
}

bool is_mark(uint32_t cp) { return in_ranges(cp, std::begin(kMarks), std::end(kMarks)); }

std::string strip_marks(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  append_each_character(out, text, [](uint32_t cp, std::string_view c, std::string& o) {
    if (!is_mark(cp)) o += c;
  });
  return out;
}

std::string normalize(std::string_view text, NormalForm form) {
  // ASCII is in every normal form, and an ASCII character followed by another is a starter that nothing before it
  // reorders or composes with: the stretches between such places normalize on their own, the rest is copied.
  std::string out;
  out.reserve(text.size());
  size_t copied = 0;  // text[0, copied) is in `out`
  for (size_t i = 0; i < text.size(); ++i) {
    if (ascii(text[i])) continue;
    const size_t start = i > copied && ascii(text[i - 1]) ? i - 1 : i;  // the starter before (e + U+0301)
    size_t end = i;
    while (end < text.size() && !(ascii(text[end]) && (end + 1 == text.size() || ascii(text[end + 1])))) ++end;
    out.append(text.substr(copied, start - copied));
    normalize_stretch(text.substr(start, end - start), form, out);
    copied = i = end;
  }
  out.append(text.substr(copied));
  return out;
}

}  // namespace tessera::data::unicode
