// The MDS format's vocabulary: dtypes, column encodings, hashes, compression, Python-style JSON, atomic files.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <sstream>
#include <utility>

#include <xxhash.h>
#include <zstd.h>

#include "data/mds/detail.h"
#include "posix_io.h"

namespace tessera::data::mds {

namespace {

struct DTypeRow {
  DType dtype;
  const char* name;
  int64_t size;
  c10::ScalarType tensor;
};
constexpr DTypeRow kDTypes[] = {
    {DType::u8, "uint8", 1, c10::ScalarType::Byte},     {DType::i8, "int8", 1, c10::ScalarType::Char},
    {DType::u16, "uint16", 2, c10::ScalarType::Int},    {DType::i16, "int16", 2, c10::ScalarType::Short},
    {DType::u32, "uint32", 4, c10::ScalarType::Long},   {DType::i32, "int32", 4, c10::ScalarType::Int},
    {DType::u64, "uint64", 8, c10::ScalarType::Long},   {DType::i64, "int64", 8, c10::ScalarType::Long},
    {DType::f16, "float16", 2, c10::ScalarType::Half},  {DType::f32, "float32", 4, c10::ScalarType::Float},
    {DType::f64, "float64", 8, c10::ScalarType::Double},
};
const DTypeRow& row(DType d) { return kDTypes[static_cast<int>(d)]; }

std::optional<DType> dtype_by_name(const std::string& name) {
  for (const auto& r : kDTypes)
    if (name == r.name) return r.dtype;
  return std::nullopt;
}

/// The whole of `text` as a decimal integer, or nullopt.
std::optional<int64_t> parse_integer(const std::string& text) {
  size_t used = 0;
  try {
    const int64_t v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

const char* kSupported =
    "int, uint8, uint16, uint32, uint64, int8, int16, int32, int64, float16, float32, float64, str, bytes, "
    "str_int, str_float, str_decimal, json, ndarray[:dtype[:d0,d1,...]], png, jpeg, pil";

}  // namespace

int64_t dtype_size(DType dtype) { return row(dtype).size; }
std::string dtype_name(DType dtype) { return row(dtype).name; }
c10::ScalarType tensor_dtype(DType dtype) { return row(dtype).tensor; }

DType dtype_of(c10::ScalarType type, const std::string& what) {
  switch (type) {
    case c10::ScalarType::Byte: return DType::u8;
    case c10::ScalarType::Char: return DType::i8;
    case c10::ScalarType::Short: return DType::i16;
    case c10::ScalarType::Int: return DType::i32;
    case c10::ScalarType::Long: return DType::i64;
    case c10::ScalarType::Half: return DType::f16;
    case c10::ScalarType::Float: return DType::f32;
    case c10::ScalarType::Double: return DType::f64;
    default:
      throw InputError(what + ": tensors of type " + std::string(c10::toString(type)) +
                       " cannot be stored in MDS (it has no bool, bfloat16 or complex); convert them first, e.g. "
                       "to uint8, float16 or float32");
  }
}

std::optional<int64_t> Encoding::fixed_size() const {
  switch (kind) {
    case Kind::scalar: return dtype_size(*dtype);
    case Kind::ndarray: {
      if (!dtype || !shape) return std::nullopt;
      int64_t n = dtype_size(*dtype);
      for (int64_t d : *shape) n *= d;
      return n;
    }
    default: return std::nullopt;
  }
}

Encoding Encoding::parse(const std::string& name, const std::string& where) {
  Encoding e;
  e.name = name;
  auto fail = [&](const std::string& why) -> InputError {
    return InputError(where + ": column encoding \"" + name + "\" " + why + "; Tessera reads and writes: " +
                      kSupported);
  };
  // Encodings that are their name alone (no dtype or shape).
  static const std::pair<const char*, Kind> kNamed[] = {
      {"str", Kind::str},   {"str_int", Kind::str_int}, {"str_float", Kind::str_float}, {"str_decimal", Kind::str_decimal},
      {"json", Kind::json}, {"bytes", Kind::bytes},     {"png", Kind::png},             {"jpeg", Kind::jpeg},
      {"pil", Kind::pil}};
  const auto named = std::find_if(std::begin(kNamed), std::end(kNamed), [&](const auto& n) { return name == n.first; });
  if (name == "int") {
    e.kind = Kind::scalar;
    e.dtype = DType::i64;
  } else if (auto d = dtype_by_name(name)) {
    e.kind = Kind::scalar;
    e.dtype = d;
  } else if (named != std::end(kNamed)) {
    e.kind = named->second;
  } else if (name == "ndarray" || name.rfind("ndarray:", 0) == 0) {
    e.kind = Kind::ndarray;
    if (name.size() > 7) {
      const std::string args = name.substr(8);
      const auto colon = args.find(':');
      const std::string dt = args.substr(0, colon);
      e.dtype = dtype_by_name(dt);
      if (!e.dtype) throw fail("has an unknown dtype \"" + dt + "\"");
      if (colon != std::string::npos) {
        std::vector<int64_t> shape;
        std::stringstream ss(args.substr(colon + 1));
        std::string part;
        while (std::getline(ss, part, ',')) {
          const auto v = parse_integer(part);
          if (!v || *v < 1) throw fail("has a bad shape: \"" + part + "\" is not a dimension >= 1");
          shape.push_back(*v);
        }
        if (shape.empty() || shape.size() > 63) throw fail("has a shape of 1 to 63 dimensions expected");
        // A value lies inside one sample, whose offsets are u32: a shape of more bytes cannot be in a shard (and
        // its size would overflow).
        constexpr int64_t kMaxValue = int64_t{UINT32_MAX};
        int64_t bytes = dtype_size(*e.dtype);
        for (int64_t d : shape) {
          if (d > kMaxValue / bytes)
            throw fail("has a shape of more than 4 GiB per value (" + std::to_string(kMaxValue) +
                       " bytes), more than an MDS sample can hold");
          bytes *= d;
        }
        e.shape = shape;
      }
    }
  } else {
    throw fail("is not supported");
  }
  return e;
}

int64_t Index::total_samples() const {
  int64_t n = 0;
  for (const auto& s : shards) n += s.samples;
  return n;
}

// ---------------------------------------------------------------------------------------------------------
// Hashes

bool is_supported_hash(const std::string& algo) {
  return algo == "xxh32" || algo == "xxh64" || algo == "xxh3_64" || algo == "xxh128" || algo == "xxh3_128";
}

std::string hash_mismatch(const FileInfo& info, const void* data, size_t size) {
  for (const auto& [algo, expected] : info.hashes) {
    if (!is_supported_hash(algo)) continue;
    const std::string got = hash_hex(algo, data, size);
    if (got != expected) return "its " + algo + " hash is " + got + ", index.json says " + expected;
  }
  return "";
}

std::string hash_hex(const std::string& algo, const void* data, size_t size) {
  char buf[40];
  if (algo == "xxh32") {
    std::snprintf(buf, sizeof buf, "%08x", XXH32(data, size, 0));
  } else if (algo == "xxh64") {
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(XXH64(data, size, 0)));
  } else if (algo == "xxh3_64") {
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(XXH3_64bits(data, size)));
  } else if (algo == "xxh128" || algo == "xxh3_128") {
    const XXH128_hash_t h = XXH3_128bits(data, size);
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                  static_cast<unsigned long long>(h.low64));
  } else {
    throw InputError("hash algorithm \"" + algo +
                     "\" is not supported by Tessera (supported: xxh32, xxh64, xxh3_64, xxh128, xxh3_128)");
  }
  return buf;
}

namespace detail {

// ---------------------------------------------------------------------------------------------------------
// Python-compatible JSON

namespace {
void put_string(std::string& out, const std::string& s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp = c;
    size_t len = 1;
    if (c >= 0x80) {  // UTF-8 sequence (nlohmann validated it when parsing or dumping)
      len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      cp = c & (0xFF >> (len + 1));
      for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    i += len;
    char buf[16];
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20 || (cp >= 0x7F && cp < 0x10000)) {
          std::snprintf(buf, sizeof buf, "\\u%04x", cp);
          out += buf;
        } else if (cp >= 0x10000) {
          const uint32_t v = cp - 0x10000;
          std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          out += buf;
        } else {
          out += static_cast<char>(cp);
        }
    }
  }
  out += '"';
}

void put(std::string& out, const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : v.items()) {  // std::map: sorted by UTF-8 bytes = by code point
        if (!first) out += ", ";
        first = false;
        put_string(out, key);
        out += ": ";
        put(out, item);
      }
      out += '}';
      break;
    }
    case nlohmann::json::value_t::array: {
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ", ";
        put(out, v[i]);
      }
      out += ']';
      break;
    }
    case nlohmann::json::value_t::string: put_string(out, v.get<std::string>()); break;
    case nlohmann::json::value_t::null: out += "null"; break;
    case nlohmann::json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
    default: out += v.dump(); break;  // integers (the index holds no floats)
  }
}
}  // namespace

std::string python_json(const nlohmann::json& value) {
  std::string out;
  put(out, value);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Numbers as text (str_int, str_float, str_decimal)

std::string python_float_text(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  // The shortest digits that read back as `value` (what Python's repr finds), as d.ddde±XX.
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  if (ec != std::errc()) throw Error("could not format the float " + std::to_string(value));
  const std::string sci(buf, end);
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  const bool negative = digits[0] == '-';
  if (negative) digits.erase(0, 1);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::stoi(sci.substr(e + 1));
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {  // Python's repr: scientific outside [1e-4, 1e16)
    out += digits[0];
    if (digits.size() > 1) out.append(".").append(digits, 1, std::string::npos);
    const int a = std::abs(exponent);
    out.append(exponent < 0 ? "e-" : "e+").append(a < 10 ? "0" : "").append(std::to_string(a));
  } else if (exponent >= 0) {
    const size_t whole = static_cast<size_t>(exponent) + 1;
    if (digits.size() <= whole) out.append(digits).append(whole - digits.size(), '0').append(".0");
    else out.append(digits, 0, whole).append(".").append(digits, whole, std::string::npos);
  } else {
    out.append("0.").append(static_cast<size_t>(-exponent - 1), '0').append(digits);
  }
  return out;
}

bool is_decimal_text(std::string_view text) {
  size_t i = 0;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
  std::string rest(text.substr(i));
  std::transform(rest.begin(), rest.end(), rest.begin(), [](unsigned char c) { return std::tolower(c); });
  if (rest == "inf" || rest == "infinity" || rest == "nan" || rest == "snan") return true;
  auto digits = [&](size_t& k) {
    const size_t from = k;
    while (k < rest.size() && std::isdigit(static_cast<unsigned char>(rest[k]))) ++k;
    return k - from;
  };
  size_t k = 0;
  size_t n = digits(k);
  if (k < rest.size() && rest[k] == '.') {
    ++k;
    n += digits(k);
  }
  if (n == 0) return false;
  if (k < rest.size() && rest[k] == 'e') {
    ++k;
    if (k < rest.size() && (rest[k] == '+' || rest[k] == '-')) ++k;
    if (digits(k) == 0) return false;
  }
  return k == rest.size();
}

// ---------------------------------------------------------------------------------------------------------
// Compression

Codec parse_compression(const std::string& text, const std::string& where) {
  Codec c;
  if (text.empty()) return c;
  const auto colon = text.find(':');
  const std::string algo = text.substr(0, colon);
  if (algo != "zstd")
    throw InputError(where + ": compression \"" + text +
                     "\" is not supported; Tessera supports zstd and zstd:LEVEL (Streaming's br, gz, bz2 and "
                     "snappy are not implemented)");
  c.zstd = true;
  if (colon != std::string::npos) {
    const auto level = parse_integer(text.substr(colon + 1));
    if (!level || *level < 1 || *level > 22)
      throw InputError(where + ": compression \"" + text + "\": the zstd level must be an integer in 1..22");
    c.level = static_cast<int>(*level);
  }
  return c;
}

std::string zstd_compress(const std::string& raw, int level) {
  std::string out(ZSTD_compressBound(raw.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), level);
  if (ZSTD_isError(n)) throw Error(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

std::vector<uint8_t> zstd_decompress(const uint8_t* data, size_t size, size_t expected, const std::string& path) {
  // The output grows as the data decompresses (doubling, up to `expected`): a size in index.json that the file does
  // not back fails as a mismatch instead of allocating what the index says.
  std::vector<uint8_t> out(std::min(expected, std::max<size_t>(size_t{1} << 20, 4 * size)));
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  ZSTD_inBuffer in{data, size, 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  uint8_t extra = 0;
  size_t r = 1;
  while (true) {
    if (ob.pos == ob.size && out.size() < expected) {
      out.resize(std::min(expected, 2 * out.size()));
      ob.dst = out.data();
      ob.size = out.size();
    }
    ZSTD_outBuffer probe{&extra, 1, 0};  // once the output is full: anything more is too much
    ZSTD_outBuffer* target = ob.pos == ob.size ? &probe : &ob;
    const size_t in_before = in.pos, out_before = target->pos;
    r = ZSTD_decompressStream(ctx.get(), target, &in);
    if (ZSTD_isError(r))
      throw InputError("shard file " + path + " is not valid zstd data: " + ZSTD_getErrorName(r));
    if (probe.pos > 0)
      throw InputError("shard file " + path + " decompresses to more than the " + std::to_string(expected) +
                       " bytes index.json gives as raw_data.bytes");
    if (r == 0 && in.pos == in.size) break;                        // the last frame is complete
    if (in.pos == in_before && target->pos == out_before) break;  // no progress: truncated (r != 0) or done
  }
  if (r != 0)
    throw InputError("shard file " + path + " is truncated: it ends in the middle of a zstd frame");
  if (ob.pos != expected)
    throw InputError("shard file " + path + " decompresses to " + std::to_string(ob.pos) + " bytes, index.json says " +
                     std::to_string(expected));
  out.resize(ob.pos);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Files

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot create " + tmp + ": " + std::strerror(errno));
  if (!posix::write_all(fd, content.data(), content.size())) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error("cannot write " + tmp + ": " + std::strerror(err));
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot write " + tmp + ": " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot rename " + tmp + " to " + path + ": " + std::strerror(err));
  }
}

nlohmann::json shard_config(const ShardInfo& info) {
  nlohmann::json sizes = nlohmann::json::array();
  for (const auto& s : info.column_sizes) sizes.push_back(s ? nlohmann::json(*s) : nlohmann::json(nullptr));
  return {{"column_encodings", info.column_encodings},
          {"column_names", info.column_names},
          {"column_sizes", sizes},
          {"compression", info.compression.empty() ? nlohmann::json(nullptr) : nlohmann::json(info.compression)},
          {"format", "mds"},
          {"hashes", info.hashes},
          {"size_limit", info.size_limit},
          {"version", 2}};
}

}  // namespace detail

}  // namespace tessera::data::mds
