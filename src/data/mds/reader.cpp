// Reading MDS shards: memory-mapped files, header validation, samples as bounds-checked byte ranges and
// tensors that view the mapping.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include <ATen/ATen.h>

#include "data/mds/detail.h"

namespace tessera::data::mds {

using detail::load_u32;

namespace {

/// A whole file mapped privately (copy-on-write: a write through a tensor never reaches the file).
struct Mapping {
  void* addr = nullptr;
  size_t length = 0;
};

Mapping map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError("cannot open shard file " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw InputError("cannot stat shard file " + path + ": " + std::strerror(err));
  }
  Mapping m;
  m.length = static_cast<size_t>(st.st_size);
  if (m.length > 0) {
    m.addr = ::mmap(nullptr, m.length, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m.addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw InputError("cannot memory-map shard file " + path + ": " + std::strerror(err));
    }
  }
  ::close(fd);
  return m;
}

void unmap(Mapping m) {
  if (m.addr != nullptr) ::munmap(m.addr, m.length);
}

/// Checks every hash the index lists that Tessera can compute; `file` is the file's content.
void verify_hashes(const FileInfo& info, const std::string& path, const uint8_t* data, size_t size) {
  if (info.hashes.empty()) return;
  const std::string mismatch = hash_mismatch(info, data, size);
  if (!mismatch.empty()) throw InputError("shard file " + path + " is corrupt: " + mismatch);
  bool any = false;
  for (const auto& [algo, expected] : info.hashes) any = any || is_supported_hash(algo);
  if (!any) {
    std::string names;
    for (const auto& [algo, digest] : info.hashes) names += (names.empty() ? "" : ", ") + algo;
    throw InputError("shard file " + path + ": cannot verify its hashes (" + names +
                     "): Tessera computes xxh32, xxh64, xxh3_64 and xxh128; write the dataset with one of those, "
                     "or read it with verify_hashes off");
  }
}

struct Ndarray {
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* values;
};

std::optional<DType> dtype_from_code(uint8_t code) {
  switch (code) {
    case 8: return DType::u8;
    case 9: return DType::i8;
    case 16: return DType::u16;
    case 17: return DType::i16;
    case 18: return DType::f16;
    case 32: return DType::u32;
    case 33: return DType::i32;
    case 34: return DType::f32;
    case 64: return DType::u64;
    case 65: return DType::i64;
    case 66: return DType::f64;
    default: return std::nullopt;
  }
}

at::Tensor widen_unsigned(DType dtype, const uint8_t* p, const std::vector<int64_t>& shape, int64_t n,
                          const std::string& what) {
  at::Tensor out = at::empty(shape, at::TensorOptions(tensor_dtype(dtype)));
  if (dtype == DType::u16) {
    auto* o = out.data_ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      o[i] = v;
    }
  } else {
    auto* o = out.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      if (dtype == DType::u32) {
        uint32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        o[i] = v;
      } else {
        uint64_t v;
        std::memcpy(&v, p + 8 * i, 8);
        if (v > static_cast<uint64_t>(INT64_MAX))
          throw InputError(what + ": uint64 value " + std::to_string(v) + " does not fit LibTorch's int64");
        o[i] = static_cast<int64_t>(v);
      }
    }
  }
  return out;
}

/// The number a str_int (T = int64_t), str_float or str_decimal (T = double) value's text holds, read as Python's
/// int(), float() or Decimal() would read what Streaming writes (a leading + is accepted; sNaN reads as NaN).
template <class T>
T number_of_text(const Bytes& b, const std::string& what) {
  std::string_view text = b.view();
  std::string shown = "\"";  // appended piece by piece: GCC 12 misreads `"\"" + std::string(...)` as an overflow
  shown.append(text.substr(0, 40)).append(text.size() > 40 ? "…\"" : "\"");
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  T value{};
  if constexpr (std::is_floating_point_v<T>) {
    std::string lower(text);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lower == "snan" || lower == "-snan") return std::numeric_limits<double>::quiet_NaN();
  }
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range && std::is_integral_v<T>)
    throw InputError(what + ": " + shown + " does not fit int64; read the column's text() instead");
  if constexpr (std::is_floating_point_v<T>) {
    if (ec == std::errc::result_out_of_range) {  // 1e999 is inf, 1e-999 is 0, as Python reads them
      const std::string copy(text);
      value = std::strtod(copy.c_str(), nullptr);
      ec = std::errc();
    }
  }
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    throw InputError(what + ": " + shown + " is not " + (std::is_integral_v<T> ? "an integer" : "a number"));
  return value;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Shard

std::shared_ptr<const Shard> Shard::open(const std::string& dir, const ShardInfo& info, const ReaderOptions& options) {
  std::shared_ptr<Shard> shard(new Shard());
  shard->info_ = info;
  for (size_t c = 0; c < info.column_names.size(); ++c)
    shard->encodings_.push_back(Encoding::parse(info.column_encodings[c], "column \"" + info.column_names[c] + "\""));
  const std::string raw = (std::filesystem::path(dir) / info.raw_data.basename).string();
  const bool have_raw = std::filesystem::exists(raw);
  if (have_raw || !info.zip_data) {
    if (!have_raw) throw InputError("shard file " + raw + " not found (listed in " + dir + "/index.json)");
    shard->path_ = raw;
    const Mapping m = map_file(raw);
    shard->mapping_ = m.addr;
    shard->base_ = static_cast<const uint8_t*>(m.addr);
    shard->length_ = m.length;
    if (static_cast<int64_t>(m.length) != info.raw_data.bytes)
      throw InputError("shard file " + raw + " has " + std::to_string(m.length) + " bytes, index.json says " +
                       std::to_string(info.raw_data.bytes) + " (truncated or replaced?)");
    if (options.verify_hashes()) verify_hashes(info.raw_data, raw, shard->base_, shard->length_);
  } else {
    const std::string zip = (std::filesystem::path(dir) / info.zip_data->basename).string();
    if (!std::filesystem::exists(zip))
      throw InputError("shard file " + zip + " not found, nor its decompressed form " + raw + " (listed in " + dir +
                       "/index.json)");
    shard->path_ = zip;
    const Mapping m = map_file(zip);
    std::unique_ptr<Mapping, void (*)(Mapping*)> guard(new Mapping(m), [](Mapping* p) {
      unmap(*p);
      delete p;
    });
    const auto* data = static_cast<const uint8_t*>(m.addr);
    if (static_cast<int64_t>(m.length) != info.zip_data->bytes)
      throw InputError("shard file " + zip + " has " + std::to_string(m.length) + " bytes, index.json says " +
                       std::to_string(info.zip_data->bytes) + " (truncated or replaced?)");
    if (options.verify_hashes()) verify_hashes(*info.zip_data, zip, data, m.length);
    detail::parse_compression(info.compression, zip);
    shard->owned_ = detail::zstd_decompress(data, m.length, static_cast<size_t>(info.raw_data.bytes), zip);
    shard->base_ = shard->owned_.data();
    shard->length_ = shard->owned_.size();
  }
  shard->validate_header();
  return shard;
}

Shard::~Shard() { unmap({mapping_, mapping_ ? length_ : 0}); }

void Shard::validate_header() {
  auto fail = [&](const std::string& what) { throw InputError("shard file " + path_ + ": " + what); };
  for (const Encoding& e : encodings_) {
    if (auto size = e.fixed_size()) fixed_bytes_ += *size;
    else ++variable_columns_;
  }
  if (length_ < 4) fail("too short for an MDS header (" + std::to_string(length_) + " bytes)");
  num_samples_ = load_u32(base_);
  if (num_samples_ != info_.samples)
    fail("holds " + std::to_string(num_samples_) + " samples, index.json says " + std::to_string(info_.samples));
  const uint64_t table_end = 4 + 4 * (static_cast<uint64_t>(num_samples_) + 1);
  if (table_end > length_)
    fail("its offset table (" + std::to_string(num_samples_ + 1) + " entries) runs past the end of the file (" +
         std::to_string(length_) + " bytes)");
  uint32_t prev = load_u32(base_ + 4);
  if (prev < table_end) fail("sample 0 starts at byte " + std::to_string(prev) + ", inside the header");
  const int64_t min_record = fixed_bytes_ + 4 * variable_columns_;
  for (int64_t i = 0; i < num_samples_; ++i) {
    const uint32_t next = load_u32(base_ + 4 + 4 * (i + 1));
    if (next < prev)
      fail("offset of sample " + std::to_string(i + 1) + " (" + std::to_string(next) + ") is before that of sample " +
           std::to_string(i) + " (" + std::to_string(prev) + ")");
    if (static_cast<int64_t>(next - prev) < min_record)
      fail("sample " + std::to_string(i) + " has " + std::to_string(next - prev) + " bytes, fewer than the " +
           std::to_string(min_record) + " its columns need");
    prev = next;
  }
  if (prev != length_)
    fail("the last sample ends at byte " + std::to_string(prev) + " but the file has " + std::to_string(length_) +
         " bytes");
}

int64_t Shard::column(const std::string& name) const {
  const auto& names = info_.column_names;
  auto it = std::find(names.begin(), names.end(), name);
  if (it == names.end()) {
    std::string all;
    for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
    throw InputError("MDS dataset has no column \"" + name + "\" (columns: " + all + ")");
  }
  return it - names.begin();
}

SampleView Shard::sample(int64_t index) const {
  if (index < 0 || index >= num_samples_)
    throw InputError("sample " + std::to_string(index) + " is out of range for shard file " + path_ + " (" +
                     std::to_string(num_samples_) + " samples)");
  SampleView s;
  s.shard_ = shared_from_this();
  s.index_ = index;
  const uint32_t begin = load_u32(base_ + 4 + 4 * index), end = load_u32(base_ + 8 + 4 * index);
  s.record_ = {base_ + begin, static_cast<size_t>(end - begin)};
  // Variable-size columns: a u32 length each, first; then every payload in column order.
  const uint8_t* lengths = s.record_.data;
  size_t pos = 4 * static_cast<size_t>(variable_columns_);
  int64_t var = 0;
  s.fields_.reserve(encodings_.size());
  for (size_t c = 0; c < encodings_.size(); ++c) {
    const auto fixed = encodings_[c].fixed_size();
    const size_t size = fixed ? static_cast<size_t>(*fixed) : load_u32(lengths + 4 * var++);
    if (size > s.record_.size - pos)
      throw InputError("shard file " + path_ + ": sample " + std::to_string(index) + ", column \"" +
                       info_.column_names[c] + "\": " + std::to_string(size) + " bytes run past the end of the sample (" +
                       std::to_string(s.record_.size) + " bytes)");
    s.fields_.push_back({s.record_.data + pos, size});
    pos += size;
  }
  if (pos != s.record_.size)
    throw InputError("shard file " + path_ + ": sample " + std::to_string(index) + " has " +
                     std::to_string(s.record_.size) + " bytes but its columns add up to " + std::to_string(pos));
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// SampleView

Bytes SampleView::raw(int64_t column) const {
  if (column < 0 || column >= num_columns())
    throw InputError("column " + std::to_string(column) + " is out of range (" + std::to_string(num_columns()) +
                     " columns)");
  return fields_[static_cast<size_t>(column)];
}
Bytes SampleView::raw(const std::string& column) const { return raw(shard_->column(column)); }

std::string_view SampleView::text(const std::string& column) const { return raw(column).view(); }

at::Tensor SampleView::tensor(const std::string& column) const { return tensor(shard_->column(column)); }

std::map<std::string, at::Tensor> SampleView::tensors() const {
  std::map<std::string, at::Tensor> out;
  for (int64_t c = 0; c < num_columns(); ++c) out[shard_->info().column_names[static_cast<size_t>(c)]] = tensor(c);
  return out;
}

at::Tensor SampleView::tensor(int64_t column) const {
  const Bytes b = raw(column);
  const Encoding& e = shard_->encodings()[static_cast<size_t>(column)];
  const std::string what = "shard file " + shard_->path() + ", sample " + std::to_string(index_) + ", column \"" +
                           shard_->info().column_names[static_cast<size_t>(column)] + "\" (" + e.name + ")";
  auto keep = shard_;
  auto view = [&](const uint8_t* p, const std::vector<int64_t>& shape, DType dtype, int64_t n) -> at::Tensor {
    if (dtype == DType::u16 || dtype == DType::u32 || dtype == DType::u64) return widen_unsigned(dtype, p, shape, n, what);
    const auto options = at::TensorOptions(tensor_dtype(dtype));
    if (reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(dtype_size(dtype)) != 0) {
      at::Tensor out = at::empty(shape, options);  // unaligned (MDS packs samples): one copy
      std::memcpy(out.data_ptr(), p, static_cast<size_t>(n * dtype_size(dtype)));
      return out;
    }
    return at::from_blob(const_cast<uint8_t*>(p), shape, [keep](void*) {}, options);
  };
  switch (e.kind) {
    case Encoding::Kind::scalar: return view(b.data, {}, *e.dtype, 1);
    case Encoding::Kind::str:
    case Encoding::Kind::bytes:
    case Encoding::Kind::json:
      return view(b.data, {static_cast<int64_t>(b.size)}, DType::u8, static_cast<int64_t>(b.size));
    case Encoding::Kind::str_int: return at::scalar_tensor(number_of_text<int64_t>(b, what), at::kLong);
    case Encoding::Kind::str_float:
    case Encoding::Kind::str_decimal: return at::scalar_tensor(number_of_text<double>(b, what), at::kDouble);
    case Encoding::Kind::png: return decode_png(b, what);
    case Encoding::Kind::jpeg: return decode_jpeg(b, what);
    case Encoding::Kind::pil: {
      if (b.size < 12) throw InputError(what + ": " + std::to_string(b.size) + " bytes, too short for a pil header");
      const uint32_t w = load_u32(b.data), h = load_u32(b.data + 4), mode_len = load_u32(b.data + 8);
      if (mode_len > b.size - 12) throw InputError(what + ": the image mode runs past the end of the value");
      const std::string mode(reinterpret_cast<const char*>(b.data) + 12, mode_len);
      const int64_t channels = mode == "L" ? 1 : mode == "LA" ? 2 : mode == "RGB" ? 3 : mode == "RGBA" ? 4 : 0;
      if (channels == 0)
        throw InputError(what + ": pil image mode \"" + mode + "\" is not supported (L, LA, RGB, RGBA are)");
      const uint64_t pixels = static_cast<uint64_t>(w) * h * static_cast<uint64_t>(channels);
      if (pixels != b.size - 12 - mode_len)
        throw InputError(what + ": a " + std::to_string(w) + "x" + std::to_string(h) + " " + mode + " image needs " +
                         std::to_string(pixels) + " bytes of pixels, the value holds " +
                         std::to_string(b.size - 12 - mode_len));
      return view(b.data + 12 + mode_len, {h, w, channels}, DType::u8, static_cast<int64_t>(pixels));
    }
    case Encoding::Kind::ndarray: {
      size_t pos = 0;
      auto need = [&](size_t n, const char* part) {
        if (n > b.size - pos) throw InputError(what + ": the value ends inside its " + std::string(part));
      };
      DType dtype;
      if (e.dtype) {
        dtype = *e.dtype;
      } else {
        need(1, "dtype byte");
        const auto d = dtype_from_code(b.data[pos++]);
        if (!d) throw InputError(what + ": unknown ndarray dtype code " + std::to_string(b.data[pos - 1]));
        dtype = *d;
      }
      std::vector<int64_t> shape;
      if (e.shape) {
        shape = *e.shape;
      } else {
        need(1, "shape byte");
        const uint8_t byte = b.data[pos++];
        const size_t ndim = byte >> 2, width = size_t{1} << (byte & 3);
        if (ndim == 0) throw InputError(what + ": the ndarray has 0 dimensions");
        need(ndim * width, "shape");
        for (size_t d = 0; d < ndim; ++d) {
          uint64_t v = 0;
          std::memcpy(&v, b.data + pos, width);  // little-endian: the low bytes
          pos += width;
          if (v == 0 || v > (uint64_t{1} << 40))
            throw InputError(what + ": ndarray dimension " + std::to_string(d) + " is " + std::to_string(v));
          shape.push_back(static_cast<int64_t>(v));
        }
      }
      uint64_t n = 1;
      for (int64_t d : shape) {
        n *= static_cast<uint64_t>(d);
        if (n > b.size) break;
      }
      if (n * static_cast<uint64_t>(dtype_size(dtype)) != b.size - pos)
        throw InputError(what + ": the ndarray's shape and dtype need " +
                         std::to_string(n * static_cast<uint64_t>(dtype_size(dtype))) + " bytes of values, the value holds " +
                         std::to_string(b.size - pos));
      return view(b.data + pos, shape, dtype, static_cast<int64_t>(n));
    }
  }
  throw Error(what + ": unhandled encoding");
}

// ---------------------------------------------------------------------------------------------------------
// Reader

Reader::Reader(std::string dir, ReaderOptions options) : dir_(std::move(dir)), options_(options) {
  index_ = read_index(dir_);
  offsets_.reserve(index_.shards.size() + 1);
  offsets_.push_back(0);
  for (const auto& s : index_.shards) offsets_.push_back(offsets_.back() + s.samples);
  open_.resize(index_.shards.size());
}

std::pair<int64_t, int64_t> Reader::locate(int64_t index) const {
  if (index < 0 || index >= size())
    throw InputError("sample " + std::to_string(index) + " is out of range for MDS dataset " + dir_ + " (" +
                     std::to_string(size()) + " samples)");
  const int64_t k = std::upper_bound(offsets_.begin(), offsets_.end(), index) - offsets_.begin() - 1;
  return {k, index - offsets_[static_cast<size_t>(k)]};
}

std::shared_ptr<const Shard> Reader::shard(int64_t k) const {
  if (k < 0 || k >= num_shards())
    throw InputError("shard " + std::to_string(k) + " is out of range for MDS dataset " + dir_ + " (" +
                     std::to_string(num_shards()) + " shards)");
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = open_[static_cast<size_t>(k)];
  if (!slot) slot = Shard::open(dir_, index_.shards[static_cast<size_t>(k)], options_);
  return slot;
}

SampleView Reader::sample(int64_t index) const {
  const auto [k, i] = locate(index);
  return shard(k)->sample(i);
}

}  // namespace tessera::data::mds
