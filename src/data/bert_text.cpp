#include "bert_text.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "normalization.h"
#include "unicode.h"

namespace tessera::data::bert {
namespace {

using unicode::CodeMapping;
using unicode::CodeRange;
using unicode::in_ranges;
#include "unicode_bert.inc"

constexpr uint32_t kReplacement = 0xFFFD;

/// The code points of `text`; a byte that starts no valid UTF-8 character is U+FFFD.
std::vector<uint32_t> code_points(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto [cp, n] = unicode::decode_utf8(text, i);
    out.push_back(n == 0 ? kReplacement : cp);
    i += n == 0 ? 1 : n;
  }
  return out;
}

/// Appends `cp` mapped through a table (itself when it has no entry).
void append_mapped(std::vector<uint32_t>& out, uint32_t cp, const CodeMapping* begin, const CodeMapping* end,
                   const uint32_t* flat) {
  if (const CodeMapping* m = unicode::find_mapping(cp, begin, end)) {
    out.insert(out.end(), flat + m->start, flat + m->start + m->length);
  } else {
    out.push_back(cp);
  }
}

/// Hugging Face's BertNormalizer: tab, newline and carriage return are whitespace, not control characters.
bool is_bert_space(uint32_t cp) { return cp == '\t' || cp == '\n' || cp == '\r' || unicode::is_space(cp); }
bool is_control(uint32_t cp) {
  return cp != '\t' && cp != '\n' && cp != '\r' && in_ranges(cp, std::begin(kOther), std::end(kOther));
}
bool is_chinese(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}
bool is_punctuation(uint32_t cp) {
  const bool ascii = (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
                     (cp >= 123 && cp <= 126);
  return ascii || in_ranges(cp, std::begin(kPunctuation), std::end(kPunctuation));
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

}  // namespace

std::string normalize(std::string_view text, const Normalizer& options) {
  std::vector<uint32_t> cps = code_points(text), next;
  next.reserve(cps.size());
  const auto step = [&](auto&& each) {
    next.clear();
    for (uint32_t cp : cps) each(cp);
    std::swap(cps, next);
  };
  if (options.clean_text) {
    step([&](uint32_t cp) {
      if (cp == 0 || cp == kReplacement || is_control(cp)) return;
      next.push_back(is_bert_space(cp) ? ' ' : cp);
    });
  }
  if (options.handle_chinese_chars) {
    step([&](uint32_t cp) {
      if (!is_chinese(cp)) return next.push_back(cp);
      next.insert(next.end(), {' ', cp, ' '});
    });
  }
  if (options.strip_accents) {
    unicode::decompose(cps);
    step([&](uint32_t cp) {
      if (!in_ranges(cp, std::begin(kNonspacingMarks), std::end(kNonspacingMarks))) next.push_back(cp);
    });
  }
  if (options.lowercase) {
    step([&](uint32_t cp) { append_mapped(next, cp, std::begin(kLowercase), std::end(kLowercase), kLowercased); });
  }
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) unicode::append_utf8(out, cp);
  return out;
}

std::string lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::vector<uint32_t> mapped;
  unicode::append_each_character(out, text, [&](uint32_t cp, std::string_view, std::string& o) {
    mapped.clear();
    append_mapped(mapped, cp, std::begin(kLowercase), std::end(kLowercase), kLowercased);
    for (uint32_t m : mapped) unicode::append_utf8(o, m);
  });
  return out;
}

std::vector<std::string_view> pre_tokenize(std::string_view text) {
  return unicode::cut_words(text, [](uint32_t cp) {
    return unicode::is_space(cp) ? unicode::Cut::drop : is_punctuation(cp) ? unicode::Cut::isolate : unicode::Cut::none;
  });
}

size_t characters(std::string_view word) {
  size_t count = 0;
  for (size_t i = 0; i < word.size(); ++count) {
    const size_t n = unicode::decode_utf8(word, i).second;
    i += n == 0 ? 1 : n;
  }
  return count;
}

size_t last_character_size(std::string_view word) {
  for (size_t size = 1; size <= std::min<size_t>(4, word.size()); ++size) {
    if (unicode::decode_utf8(word, word.size() - size).second == size) return size;
  }
  return 1;
}

std::string decode(const std::vector<std::string_view>& tokens, const std::string& prefix, bool cleanup) {
  std::string out, token;
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string_view piece = tokens[i];
    token.clear();
    if (i != 0) {
      if (piece.substr(0, prefix.size()) == prefix) {
        piece.remove_prefix(prefix.size());
      } else {
        token.push_back(' ');
      }
    }
    token.append(piece);
    if (cleanup) {
      for (const auto& [from, to] : {std::pair{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
                                     {" n't", "n't"}, {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"},
                                     {" 've", "'ve"}, {" 're", "'re"}}) {
        replace_all(token, from, to);
      }
    }
    out += token;
  }
  return out;
}

}  // namespace tessera::data::bert
