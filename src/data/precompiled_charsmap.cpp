// SentencePiece's precompiled character map, as Hugging Face's Precompiled normalizer reads and applies it
// (precompiled_charsmap.h).
#include "precompiled_charsmap.h"

#include <cstring>

#include <fmt/format.h>

#include <tessera/error.h>

#include "unicode.h"

namespace tessera::data::sentencepiece {

namespace {

// A darts-clone unit: a label (the byte leading to it; bit 31 set on value units), whether a key ends here (a value
// unit is then its child at offset 0), an offset to its children, or a value.
bool has_leaf(uint32_t unit) { return ((unit >> 8) & 1) == 1; }
uint32_t value(uint32_t unit) { return unit & ((1u << 31) - 1); }
uint32_t label(uint32_t unit) { return unit & ((1u << 31) | 0xFF); }
size_t offset(uint32_t unit) { return static_cast<size_t>((unit >> 10) << ((unit & (1u << 9)) >> 6)); }

constexpr const char* kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

std::string encode_base64(std::string_view bytes) {
  std::string text;
  text.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const auto byte = [&](size_t k) {
      return k < bytes.size() ? static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])) : 0u;
    };
    const uint32_t bits = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (size_t k = 0; k < 4; ++k) text += i + k <= bytes.size() ? kBase64[(bits >> (18 - 6 * k)) & 63] : '=';
  }
  return text;
}

std::optional<std::string> decode_base64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  const auto sextet = [](char c) -> int {
    const char* at = c == '\0' ? nullptr : std::strchr(kBase64, c);
    return at == nullptr ? -1 : static_cast<int>(at - kBase64);
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const int pad = last ? (text[i + 3] == '=') + (text[i + 2] == '=' && text[i + 3] == '=') : 0;
    uint32_t bits = 0;
    for (int k = 0; k < 4; ++k) {
      const int v = k >= 4 - pad ? 0 : sextet(text[i + k]);
      if (v < 0) return std::nullopt;
      bits = (bits << 6) | static_cast<uint32_t>(v);
    }
    out += static_cast<char>(bits >> 16);
    if (pad < 2) out += static_cast<char>((bits >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(bits & 0xFF);
  }
  return out;
}

PrecompiledCharsmap::PrecompiledCharsmap(std::string_view base64, const std::string& file) : file_(file) {
  const auto bad = [&](const std::string& what) {
    throw InputError("tokenizer " + file + ": normalizer Precompiled's precompiled_charsmap " + what);
  };
  const std::optional<std::string> blob = decode_base64(base64);
  if (!blob) bad("is not standard base64 text (A-Z a-z 0-9 + /, padded with = to a multiple of 4 characters)");
  if (blob->size() < 4) bad(fmt::format("holds {} bytes; expected a 4-byte trie size and the trie", blob->size()));
  const auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>((*blob)[k])); };
  const size_t trie_bytes = byte(0) | byte(1) << 8 | byte(2) << 16 | byte(3) << 24;
  if (trie_bytes % 4 != 0 || trie_bytes == 0 || trie_bytes > blob->size() - 4)
    bad(fmt::format("says its trie takes {} bytes, but {} follow the size; expected a non-zero multiple of 4 that fits",
                    trie_bytes, blob->size() - 4));
  trie_.resize(trie_bytes / 4);
  for (size_t u = 0; u < trie_.size(); ++u)
    trie_[u] = byte(4 + 4 * u) | byte(5 + 4 * u) << 8 | byte(6 + 4 * u) << 16 | byte(7 + 4 * u) << 24;
  replacements_ = blob->substr(4 + trie_bytes);
  if (!unicode::valid_utf8(replacements_)) bad("has replacements that are not UTF-8");
}

std::optional<std::string_view> PrecompiledCharsmap::replacement(std::string_view chunk) const {
  size_t node = offset(trie_[0]);
  for (const char ch : chunk) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == 0) break;  // keys hold no NUL: SentencePiece's search stops there
    node ^= c;
    if (node >= trie_.size() || label(trie_[node]) != c) return std::nullopt;
    const bool leaf = has_leaf(trie_[node]);
    node ^= offset(trie_[node]);
    if (!leaf) continue;
    if (node >= trie_.size()) return std::nullopt;
    const size_t start = value(trie_[node]);
    if (start > replacements_.size() ||
        (start < replacements_.size() && unicode::decode_utf8(replacements_, start).second == 0))
      throw InputError(fmt::format("tokenizer {}: normalizer Precompiled's precompiled_charsmap gives a replacement at "
                                   "byte {} of its {} bytes of replacements, not at the start of a character: the map "
                                   "is corrupt",
                                   file_, start, replacements_.size()));
    const size_t end = std::min(replacements_.find('\0', start), replacements_.size());
    return std::string_view(replacements_).substr(start, end - start);
  }
  return std::nullopt;
}

std::string PrecompiledCharsmap::normalize(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t end = unicode::grapheme_end(text, i);
    const std::string_view cluster = text.substr(i, end - i);
    i = end;
    if (cluster.size() < 6) {
      if (const auto whole = replacement(cluster)) {
        out += *whole;
        continue;
      }
    }
    unicode::append_each_character(out, cluster, [&](uint32_t, std::string_view c, std::string& o) {
      const auto r = replacement(c);
      o += r ? *r : c;
    });
  }
  return out;
}

}  // namespace tessera::data::sentencepiece
