#pragma once
// Helpers shared by the MDS reader, writer and tools (not installed).
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <tessera/data/mds.h>
#include <tessera/error.h>

namespace tessera::data::mds::detail {

/// Little-endian u32 at `p` (MDS is little-endian; so is every machine LibTorch supports here).
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void append_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }

/// JSON text exactly as Python's `json.dumps(obj, sort_keys=True)` writes it (", " and ": " separators,
/// non-ASCII escaped as \uXXXX), so that index.json and shard headers match Streaming's byte for byte.
std::string python_json(const nlohmann::json& value);

/// A float as Python's str() writes it (the shortest digits that read back as `value`; scientific below 1e-4 and
/// from 1e16; "inf", "-inf", "nan"): the text of a str_float value, as Streaming writes it.
std::string python_float_text(double value);
/// Whether `text` is a decimal number as Python's Decimal() reads it (sign, digits with an optional point and
/// exponent, or Infinity/Inf/NaN/sNaN in any case): the text of a str_decimal value. No spaces or underscores.
bool is_decimal_text(std::string_view text);

/// Whole-shard compression: "" or "zstd[:level]". InputError for anything else; `where` names the source.
struct Codec {
  bool zstd = false;
  int level = 3;
  std::string extension() const { return zstd ? ".zstd" : ""; }
};
Codec parse_compression(const std::string& text, const std::string& where);
std::string zstd_compress(const std::string& raw, int level);
/// Decompresses a whole zstd file of `expected` bytes (from the index); `path` names it in errors.
std::vector<uint8_t> zstd_decompress(const uint8_t* data, size_t size, size_t expected, const std::string& path);

/// Writes `content` to `path` atomically: `path`.tmp, fsync, rename. Error naming the path on failure.
void write_file_atomic(const std::string& path, const std::string& content);

/// The JSON object a shard's header and index entry share (the writer config plus the columns).
nlohmann::json shard_config(const ShardInfo& info);

}  // namespace tessera::data::mds::detail
