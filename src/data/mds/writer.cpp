// Writing MDS datasets the way Streaming's MDSWriter does (same bytes for the same samples and options).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <ATen/ATen.h>
#include <c10/util/Half.h>

#include "data/mds/detail.h"

namespace tessera::data::mds {

namespace {

namespace fs = std::filesystem;

template <class T>
void append_pod(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

/// Appends one number as `dtype`, range-checked; `what` names the value in errors.
void append_number(std::string& out, DType dtype, const Value& value, const std::string& what) {
  const bool is_int = std::holds_alternative<int64_t>(value);
  const double d = is_int ? static_cast<double>(std::get<int64_t>(value)) : std::get<double>(value);
  auto integer = [&](int64_t lo, uint64_t hi) -> int64_t {
    if (!is_int && (std::floor(d) != d || !std::isfinite(d)))
      throw InputError(what + ": " + std::to_string(d) + " is not an integer, the column holds " + dtype_name(dtype));
    const int64_t v = is_int ? std::get<int64_t>(value) : static_cast<int64_t>(d);
    if (v < lo || (v >= 0 && static_cast<uint64_t>(v) > hi))
      throw InputError(what + ": " + std::to_string(v) + " is out of range for " + dtype_name(dtype));
    return v;
  };
  switch (dtype) {
    case DType::u8: append_pod(out, static_cast<uint8_t>(integer(0, UINT8_MAX))); break;
    case DType::i8: append_pod(out, static_cast<int8_t>(integer(INT8_MIN, INT8_MAX))); break;
    case DType::u16: append_pod(out, static_cast<uint16_t>(integer(0, UINT16_MAX))); break;
    case DType::i16: append_pod(out, static_cast<int16_t>(integer(INT16_MIN, INT16_MAX))); break;
    case DType::u32: append_pod(out, static_cast<uint32_t>(integer(0, UINT32_MAX))); break;
    case DType::i32: append_pod(out, static_cast<int32_t>(integer(INT32_MIN, INT32_MAX))); break;
    case DType::u64: append_pod(out, static_cast<uint64_t>(integer(0, UINT64_MAX))); break;
    case DType::i64: append_pod(out, integer(INT64_MIN, INT64_MAX)); break;
    case DType::f16: append_pod(out, c10::Half(static_cast<float>(d)).x); break;
    case DType::f32: append_pod(out, static_cast<float>(d)); break;
    case DType::f64: append_pod(out, d); break;
  }
}

/// The values of a tensor as `dtype` bytes: its own bytes when the types agree, else integers converted with a
/// range check (for uint16/32/64 columns, which LibTorch 1.13 cannot hold).
void append_tensor_values(std::string& out, const at::Tensor& t, DType dtype, const std::string& what) {
  const at::Tensor c = t.contiguous().cpu();
  const DType own = dtype_of(c.scalar_type(), what);
  if (own == dtype) {
    out.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel() * dtype_size(dtype)));
    return;
  }
  const bool int_src = !at::isFloatingType(c.scalar_type());
  const bool int_dst = dtype != DType::f16 && dtype != DType::f32 && dtype != DType::f64;
  if (!(int_src && int_dst))
    throw InputError(what + ": a " + dtype_name(own) + " tensor cannot be stored as " + dtype_name(dtype) +
                     " (convert it first: Streaming also requires the column's dtype)");
  const at::Tensor wide = c.to(at::kLong);
  const int64_t* p = wide.data_ptr<int64_t>();
  for (int64_t i = 0; i < wide.numel(); ++i) append_number(out, dtype, Value{p[i]}, what);
}

at::Tensor image_pixels(const Value& value, const std::string& what) {
  const at::Tensor& t = std::get<at::Tensor>(value);
  if (t.scalar_type() != at::kByte || (t.dim() != 2 && t.dim() != 3))
    throw InputError(what + ": image pixels must be a uint8 tensor [H, W] or [H, W, C], got " +
                     std::string(c10::toString(t.scalar_type())) + " with " + std::to_string(t.dim()) + " dimensions");
  return t.dim() == 2 ? t.unsqueeze(2) : t;
}

std::string type_name(const Value& v) {
  switch (v.index()) {
    case 0: return "an integer";
    case 1: return "a float";
    case 2: return "a string";
    default: return "a tensor";
  }
}

/// Encodes one value of a column (its payload, without the length prefix).
std::string encode_value(const Encoding& e, const Value& value, int jpeg_quality, const std::string& what) {
  std::string out;
  auto wrong = [&](const char* expected) {
    return InputError(what + ": expected " + std::string(expected) + ", got " + type_name(value));
  };
  switch (e.kind) {
    case Encoding::Kind::scalar:
      if (auto* t = std::get_if<at::Tensor>(&value)) {
        if (t->numel() != 1) throw InputError(what + ": a scalar column needs a one-element tensor, got " +
                                              std::to_string(t->numel()) + " elements");
        append_tensor_values(out, *t, *e.dtype, what);
      } else if (std::holds_alternative<std::string>(value)) {
        throw wrong("a number");
      } else {
        append_number(out, *e.dtype, value, what);
      }
      return out;
    case Encoding::Kind::str:
      if (!std::holds_alternative<std::string>(value)) throw wrong("a string");
      return std::get<std::string>(value);
    case Encoding::Kind::str_int:
      if (!std::holds_alternative<int64_t>(value)) throw wrong("an integer");
      return std::to_string(std::get<int64_t>(value));
    case Encoding::Kind::str_float:
      if (auto* i = std::get_if<int64_t>(&value)) return detail::python_float_text(static_cast<double>(*i));
      if (!std::holds_alternative<double>(value)) throw wrong("a float");
      return detail::python_float_text(std::get<double>(value));
    case Encoding::Kind::str_decimal:
      if (auto* i = std::get_if<int64_t>(&value)) return std::to_string(*i);
      if (std::holds_alternative<double>(value))
        throw InputError(what + ": a str_decimal column takes the decimal's text (or an integer), not a float: a "
                                "float is not the decimal it prints as (pass str(Decimal(...)), e.g. \"0.1\")");
      if (auto* s = std::get_if<std::string>(&value)) {
        if (!detail::is_decimal_text(*s))
          throw InputError(what + ": \"" + *s + "\" is not a decimal number (expected e.g. 12, -0.5, 1.25E+3, NaN)");
        return *s;
      }
      throw wrong("a decimal's text or an integer");
    case Encoding::Kind::json:
      if (auto* s = std::get_if<std::string>(&value)) {
        if (!nlohmann::json::accept(*s))
          throw InputError(what + ": the text is not valid JSON (NaN and Infinity are not JSON either): \"" +
                           s->substr(0, 80) + (s->size() > 80 ? "…" : "") + "\"");
        return *s;
      }
      throw wrong("JSON text (a string)");
    case Encoding::Kind::bytes:
      if (auto* s = std::get_if<std::string>(&value)) return *s;
      if (auto* t = std::get_if<at::Tensor>(&value); t && t->scalar_type() == at::kByte) {
        append_tensor_values(out, t->flatten(), DType::u8, what);
        return out;
      }
      throw wrong("a string of bytes or a uint8 tensor");
    case Encoding::Kind::png:
    case Encoding::Kind::jpeg:
      if (auto* s = std::get_if<std::string>(&value)) return *s;  // already-encoded file bytes pass through
      if (!std::holds_alternative<at::Tensor>(value)) throw wrong("encoded image bytes or a uint8 pixel tensor");
      return e.kind == Encoding::Kind::png ? encode_png(image_pixels(value, what))
                                           : encode_jpeg(image_pixels(value, what), jpeg_quality);
    case Encoding::Kind::pil: {
      if (!std::holds_alternative<at::Tensor>(value)) throw wrong("a uint8 pixel tensor");
      const at::Tensor px = image_pixels(value, what);
      const int64_t c = px.size(2);
      const char* mode = c == 1 ? "L" : c == 2 ? "LA" : c == 3 ? "RGB" : c == 4 ? "RGBA" : nullptr;
      if (mode == nullptr) throw InputError(what + ": pil images have 1 to 4 channels, got " + std::to_string(c));
      detail::append_u32(out, static_cast<uint32_t>(px.size(1)));
      detail::append_u32(out, static_cast<uint32_t>(px.size(0)));
      detail::append_u32(out, static_cast<uint32_t>(std::strlen(mode)));
      out += mode;
      append_tensor_values(out, px, DType::u8, what);
      return out;
    }
    case Encoding::Kind::ndarray: {
      if (!std::holds_alternative<at::Tensor>(value)) throw wrong("a tensor");
      const at::Tensor& t = std::get<at::Tensor>(value);
      if (t.dim() == 0 || t.numel() == 0)
        throw InputError(what + ": ndarray columns need a tensor with at least one dimension and one element "
                                "(Streaming's rule; use a scalar encoding for single numbers)");
      if (t.dim() > 63) throw InputError(what + ": ndarray columns hold at most 63 dimensions");
      const DType dtype = e.dtype ? *e.dtype : dtype_of(t.scalar_type(), what);
      if (!e.dtype) append_pod(out, static_cast<uint8_t>(0));  // placeholder, set below
      if (e.shape) {
        if (t.sizes().vec() != *e.shape)
          throw InputError(what + ": shape " + c10::str(t.sizes()) + " differs from the column's " + e.name);
      } else {
        const int64_t largest = *std::max_element(t.sizes().begin(), t.sizes().end());
        const int width = largest < (1 << 8) ? 0 : largest < (1 << 16) ? 1 : largest < (int64_t{1} << 32) ? 2 : 3;
        append_pod(out, static_cast<uint8_t>((t.dim() << 2) | width));
        for (int64_t d : t.sizes()) out.append(reinterpret_cast<const char*>(&d), size_t{1} << width);
      }
      if (!e.dtype) {
        static constexpr uint8_t kCodes[] = {8, 9, 16, 17, 32, 33, 64, 65, 18, 34, 66};
        out[0] = static_cast<char>(kCodes[static_cast<int>(dtype)]);
      }
      append_tensor_values(out, t, dtype, what);
      return out;
    }
  }
  throw Error(what + ": unhandled encoding");
}

}  // namespace

Writer::Writer(std::string dir, WriterOptions options) : dir_(std::move(dir)), options_(std::move(options)) {
  validate_options(options_, "mds writer");
  if (options_.columns().empty()) throw InputError("mds writer: columns is empty: give at least one (name, encoding)");
  auto columns = options_.columns();
  std::sort(columns.begin(), columns.end());
  for (size_t c = 0; c < columns.size(); ++c) {
    if (c > 0 && columns[c].first == columns[c - 1].first)
      throw InputError("mds writer: column \"" + columns[c].first + "\" is given twice");
    names_.push_back(columns[c].first);
    encodings_.push_back(Encoding::parse(columns[c].second, "mds writer: column \"" + columns[c].first + "\""));
  }
  detail::parse_compression(options_.compression(), "mds writer");
  const auto& hashes = options_.hashes();
  for (size_t i = 0; i < hashes.size(); ++i) {
    if (i > 0 && hashes[i] <= hashes[i - 1])
      throw InputError("mds writer: hashes must be sorted and unique (Streaming's rule), got \"" + hashes[i - 1] +
                       "\" before \"" + hashes[i] + "\"");
    hash_hex(hashes[i], "", 0);  // rejects unsupported algorithms with the list of supported ones
  }
  if (fs::exists(dir_) && !fs::is_directory(dir_)) throw InputError("mds writer: " + dir_ + " is not a folder");
  if (fs::exists(dir_) && !fs::is_empty(dir_) && !options_.exist_ok())
    throw InputError("mds writer: output folder " + dir_ + " is not empty; choose another or set exist_ok");
  fs::create_directories(dir_);
  config_ = detail::python_json(detail::shard_config(base_info()));
  pending_bytes_ = 8 + static_cast<int64_t>(config_.size());
}

Writer::~Writer() = default;

ShardInfo Writer::base_info() const {
  ShardInfo info;
  info.column_names = names_;
  for (const auto& e : encodings_) {
    info.column_encodings.push_back(e.name);
    info.column_sizes.push_back(e.fixed_size());
  }
  info.compression = options_.compression();
  info.hashes = options_.hashes();
  info.size_limit = options_.size_limit();
  return info;
}

void Writer::write(const Sample& sample) {
  if (sample.size() != names_.size() ||
      !std::equal(names_.begin(), names_.end(), sample.begin(), [](const auto& n, const auto& kv) { return n == kv.first; })) {
    std::string want, got;
    for (const auto& n : names_) want += (want.empty() ? "" : ", ") + n;
    for (const auto& [k, v] : sample) got += (got.empty() ? "" : ", ") + k;
    throw InputError("mds writer: a sample must have exactly the columns " + want + "; got " + got);
  }
  std::string lengths, payloads;
  size_t c = 0;
  for (const auto& [name, value] : sample) {
    const Encoding& e = encodings_[c++];
    const std::string bytes =
        encode_value(e, value, static_cast<int>(options_.jpeg_quality()), "mds writer: column \"" + name + "\" (" + e.name + ")");
    if (!e.fixed_size()) {
      if (bytes.size() > UINT32_MAX) throw InputError("mds writer: column \"" + name + "\": a value over 4 GiB");
      detail::append_u32(lengths, static_cast<uint32_t>(bytes.size()));
    }
    payloads += bytes;
  }
  lengths += payloads;
  write_raw({reinterpret_cast<const uint8_t*>(lengths.data()), lengths.size()});
}

void Writer::write_raw(Bytes record) {
  if (finished_) throw InputError("mds writer: write after finish()");
  const int64_t size = static_cast<int64_t>(record.size) + 4;
  if (options_.size_limit() < pending_bytes_ + size) flush_shard();  // as Streaming (even an empty shard)
  pending_.emplace_back(reinterpret_cast<const char*>(record.data), record.size);
  pending_bytes_ += size;
}

void Writer::flush_shard() {
  const int64_t k = static_cast<int64_t>(index_.shards.size());
  char name[32];
  std::snprintf(name, sizeof name, "shard.%05lld.mds", static_cast<long long>(k));
  std::string file;
  const uint64_t n = pending_.size();
  uint64_t offset = 4 + 4 * (n + 1) + config_.size();
  uint64_t total = offset;
  for (const auto& s : pending_) total += s.size();
  if (total > UINT32_MAX)
    throw InputError("mds writer: shard " + std::string(name) + " would hold " + std::to_string(total) +
                     " bytes; MDS offsets are 32-bit (a sample is too large)");
  file.reserve(total);
  detail::append_u32(file, static_cast<uint32_t>(n));
  detail::append_u32(file, static_cast<uint32_t>(offset));
  for (const auto& s : pending_) detail::append_u32(file, static_cast<uint32_t>(offset += s.size()));
  file += config_;
  for (const auto& s : pending_) file += s;

  ShardInfo info = base_info();
  info.samples = static_cast<int64_t>(n);
  auto describe = [&](const std::string& basename, const std::string& data) {
    FileInfo f{basename, static_cast<int64_t>(data.size()), {}};
    for (const auto& algo : options_.hashes()) f.hashes[algo] = hash_hex(algo, data.data(), data.size());
    return f;
  };
  info.raw_data = describe(name, file);
  const detail::Codec codec = detail::parse_compression(options_.compression(), "mds writer");
  if (codec.zstd) {
    const std::string zip = detail::zstd_compress(file, codec.level);
    info.zip_data = describe(name + codec.extension(), zip);
    detail::write_file_atomic((fs::path(dir_) / info.zip_data->basename).string(), zip);
  } else {
    detail::write_file_atomic((fs::path(dir_) / info.raw_data.basename).string(), file);
  }
  index_.shards.push_back(std::move(info));
  pending_.clear();
  pending_bytes_ = 8 + static_cast<int64_t>(config_.size());
}

const Index& Writer::finish() {
  if (finished_) return index_;
  if (!pending_.empty()) flush_shard();
  write_index(dir_, index_);
  finished_ = true;
  return index_;
}

}  // namespace tessera::data::mds
