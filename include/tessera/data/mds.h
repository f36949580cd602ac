#pragma once
/// MosaicML Streaming's MDS shard format (version 2), read and written: `index.json` plus `shard.NNNNN.mds`
/// files (optionally `shard.NNNNN.mds.zstd`). See docs/streaming.md for the layout and what is supported.
///
///     // write
///     mds::WriterOptions opts;
///     opts.columns({{"image", "ndarray:uint8:28,28"}, {"label", "int"}}).compression("zstd");
///     mds::Writer writer("out/", opts);
///     writer.write({{"image", image_tensor}, {"label", int64_t{3}}});
///     writer.finish();  // flushes the last shard, writes index.json atomically
///
///     // read: random access by global sample index, tensors that view the memory-mapped shard
///     mds::Reader reader("out/");
///     mds::SampleView s = reader.sample(12);
///     at::Tensor image = s.tensor("image");   // uint8 [28, 28], no copy
///     int64_t label = s.tensor("label").item<int64_t>();
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <ATen/Tensor.h>
#include <c10/core/ScalarType.h>

#include <tessera/options.h>

namespace tessera::data {
struct TextOptions;  // tessera/data/text.h
}

namespace tessera::data::mds {

// ---------------------------------------------------------------------------------------------------------
// Column encodings

/// Element types MDS stores (Streaming's numpy dtypes). LibTorch 1.13 has no uint16/32/64: such values
/// decode to the next wider signed type (int32, int64, int64), with a copy.
enum class DType { u8, i8, u16, i16, u32, i32, u64, i64, f16, f32, f64 };
/// Bytes of one element.
int64_t dtype_size(DType dtype);
/// The MDS/numpy name ("uint8", "float16", …).
std::string dtype_name(DType dtype);
/// The tensor type values of `dtype` decode to.
c10::ScalarType tensor_dtype(DType dtype);
/// The DType of a tensor type; an InputError naming `what` for types MDS cannot store (bool, bfloat16, complex).
DType dtype_of(c10::ScalarType type, const std::string& what);

/// What a column holds, parsed from its MDS encoding name ("int", "float32", "str", "ndarray:uint8:28,28", …).
/// str_int, str_float and str_decimal store a number as its decimal text (Python's str() of an int, float or
/// Decimal); json stores JSON text. All four are UTF-8 text that SampleView::text() returns as stored.
struct Encoding {
  enum class Kind { scalar, str, bytes, ndarray, png, jpeg, pil, str_int, str_float, str_decimal, json };
  Kind kind = Kind::bytes;
  std::string name;  ///< as written in index.json
  /// Element type: of a scalar ("int" is int64), or of an ndarray when the encoding fixes it.
  std::optional<DType> dtype;
  /// Shape of an ndarray when the encoding fixes it (then dtype is fixed too).
  std::optional<std::vector<int64_t>> shape;

  /// Bytes of one value when fixed (scalars, ndarray with dtype and shape), else nullopt (variable size).
  std::optional<int64_t> fixed_size() const;
  /// Parses an MDS encoding name. Unsupported names (pkl, list[…], jpeg_array, …) are an InputError that lists
  /// the supported ones; `where` says where the name came from.
  static Encoding parse(const std::string& name, const std::string& where);
};

// ---------------------------------------------------------------------------------------------------------
// index.json

/// One file of a shard: its name in the dataset folder, size and hex digests (algorithm -> digest).
struct FileInfo {
  std::string basename;
  int64_t bytes = 0;
  std::map<std::string, std::string> hashes;
};

/// One entry of index.json's "shards" list (only format "mds" is supported).
struct ShardInfo {
  std::vector<std::string> column_names;      ///< sorted by name, as Streaming writes them
  std::vector<std::string> column_encodings;  ///< the MDS names, in column order
  std::vector<std::optional<int64_t>> column_sizes;
  std::string compression;  ///< "" or e.g. "zstd:7"
  std::vector<std::string> hashes;
  int64_t size_limit = 0;
  int64_t samples = 0;
  FileInfo raw_data;
  std::optional<FileInfo> zip_data;
};

/// A dataset's index.json.
struct Index {
  std::vector<ShardInfo> shards;
  int64_t total_samples() const;
};

/// Reads `dir`/index.json. Malformed content is an InputError naming the file, the shard and the key; so is an
/// index without shards (Streaming writes one when its writer got no samples) unless `allow_empty`.
Index read_index(const std::string& dir, bool allow_empty = false);
/// Writes `dir`/index.json atomically (a temp file, fsync, then rename), in Streaming's exact JSON layout.
void write_index(const std::string& dir, const Index& index);

/// What merge_index did.
struct Merged {
  Index index;                           ///< written to the root's index.json
  std::vector<std::string> parts;        ///< the parts merged, relative to the root, in order
  std::vector<std::string> empty_parts;  ///< parts whose index has no shards (a writer that got no samples)
};
/// Joins the data sets that parallel writers wrote into subfolders of `root` (Streaming's merge_index): writes
/// `root`/index.json listing every part's shards, in place, their file names prefixed with the part's folder
/// ("part-03/shard.00000.mds"). A part is a folder under `root`, at any depth, that holds an index.json (the
/// search does not look inside a part); parts are taken in natural order of their paths ("part-2" before
/// "part-10"). No shard is moved or rewritten; running it again after adding parts replaces the merged index.
/// InputError (nothing written): no part, parts with different columns (both named), a shard file missing, or a
/// root that holds a data set of its own (an index.json listing shards of the root folder itself).
Merged merge_index(const std::string& root);

/// Hash algorithms Tessera can compute: xxh32, xxh64, xxh3_64, xxh128 (= xxh3_128). Others that Streaming
/// accepts (hashlib's md5, sha1, sha256, …) are listed in index.json but cannot be checked here.
bool is_supported_hash(const std::string& algo);
/// The hex digest of `data` as Python's hashlib/xxhash `hexdigest()` writes it. InputError for other algorithms.
std::string hash_hex(const std::string& algo, const void* data, size_t size);
/// The first hash `info` lists that Tessera can compute and `data` does not match, as "its ALGO hash is GOT,
/// index.json says WANT"; "" when every computable one matches (or none is computable).
std::string hash_mismatch(const FileInfo& info, const void* data, size_t size);

// ---------------------------------------------------------------------------------------------------------
// Reading

/// A read-only view of bytes inside a shard (or inside a decompressed copy held in memory). It does not own them:
/// they stay valid while the SampleView or Shard they came from lives.
struct Bytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::string_view view() const { return {reinterpret_cast<const char*>(data), size}; }
};

class Shard;

/// One sample of a shard: the byte range of each column, resolved and bounds-checked. Cheap to copy; keeps
/// its shard's memory alive.
class SampleView {
 public:
  int64_t num_columns() const { return static_cast<int64_t>(fields_.size()); }
  /// The raw bytes of a column as stored (encoded images, ndarray header included).
  Bytes raw(int64_t column) const;
  Bytes raw(const std::string& column) const;
  /// The text of a str, str_int, str_float, str_decimal or json column, as stored.
  std::string_view text(const std::string& column) const;
  /// Decodes a column to a tensor: scalars -> 0-d tensor of their dtype ("int" -> int64), ndarray -> its
  /// dtype and shape, png/jpeg -> uint8 [H, W, C], str/bytes/json -> uint8 [n], str_int -> 0-d int64 (an
  /// InputError past int64: read text()), str_float and str_decimal -> 0-d float64 (a Decimal's nearest double;
  /// text() keeps its digits). Views the shard's memory without a
  /// copy when the value's address is aligned for its dtype (always for uint8/int8); copies otherwise. Writing
  /// to a view never changes the file (the mapping is private, copy-on-write).
  at::Tensor tensor(int64_t column) const;
  at::Tensor tensor(const std::string& column) const;
  /// All columns decoded, by name.
  std::map<std::string, at::Tensor> tensors() const;
  /// The whole sample record as stored (length prefixes and payloads): what `Writer::write_raw` takes.
  Bytes record() const { return record_; }
  const Shard& shard() const { return *shard_; }

 private:
  friend class Shard;
  std::shared_ptr<const Shard> shard_;
  Bytes record_;
  std::vector<Bytes> fields_;
  int64_t index_ = 0;
};

/// How shards are opened.
struct ReaderOptions {
  /// Check every hash the index lists for a shard's file (the zip file when compressed), once, on first open.
  TESSERA_OPTION(bool, verify_hashes) = false;
  template <class V>
  void visit(V& v) {
    v("verify_hashes", verify_hashes_, "check the shard files against index.json's hashes on first open", Any{});
  }
};

/// One opened shard: memory-mapped (or decompressed into memory), header validated against the index.
class Shard : public std::enable_shared_from_this<Shard> {
 public:
  /// Opens shard `info` of the dataset in `dir`. Uses the raw `.mds` file when present, else decompresses the
  /// zip file into memory. Every inconsistency is an InputError naming the file and what is wrong.
  static std::shared_ptr<const Shard> open(const std::string& dir, const ShardInfo& info,
                                           const ReaderOptions& options = {});
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  int64_t size() const { return num_samples_; }
  const ShardInfo& info() const { return info_; }
  const std::vector<Encoding>& encodings() const { return encodings_; }
  /// Column index by name; InputError listing the columns when there is none.
  int64_t column(const std::string& name) const;
  /// Sample `index` (0 <= index < size()).
  SampleView sample(int64_t index) const;
  /// The whole decompressed shard file.
  Bytes file() const { return {base_, length_}; }
  /// The path of the file the bytes came from (for messages).
  const std::string& path() const { return path_; }

 private:
  Shard() = default;
  void validate_header();
  ShardInfo info_;
  std::vector<Encoding> encodings_;
  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t length_ = 0;
  void* mapping_ = nullptr;          // mmap'ed region, or nullptr
  std::vector<uint8_t> owned_;       // decompressed content when there is no raw file
  int64_t num_samples_ = 0;
  int64_t fixed_bytes_ = 0;          // sum of the fixed-size columns
  int64_t variable_columns_ = 0;
};

/// A dataset folder: random access by global sample index over all shards (shards opened lazily, kept open),
/// and shard-level access for loaders that schedule whole shards. Thread-safe.
class Reader {
 public:
  explicit Reader(std::string dir, ReaderOptions options = {});
  const std::string& dir() const { return dir_; }
  const Index& index() const { return index_; }
  /// Total number of samples.
  int64_t size() const { return offsets_.back(); }
  int64_t num_shards() const { return static_cast<int64_t>(index_.shards.size()); }
  /// First global sample index of each shard, plus size() at the end.
  const std::vector<int64_t>& shard_offsets() const { return offsets_; }
  /// (shard, index within the shard) of global sample `index`; O(log shards).
  std::pair<int64_t, int64_t> locate(int64_t index) const;
  /// Shard `k`, opened on first use.
  std::shared_ptr<const Shard> shard(int64_t k) const;
  /// Global sample `index`.
  SampleView sample(int64_t index) const;
  /// Column names and encodings (of the first shard; all shards must agree, checked on open).
  const std::vector<std::string>& column_names() const { return index_.shards.front().column_names; }
  const std::vector<std::string>& column_encodings() const { return index_.shards.front().column_encodings; }

 private:
  std::string dir_;
  ReaderOptions options_;
  Index index_;
  std::vector<int64_t> offsets_;
  mutable std::mutex mutex_;
  mutable std::vector<std::shared_ptr<const Shard>> open_;
};

// ---------------------------------------------------------------------------------------------------------
// Writing

/// A value for one column: an integer or floating-point number (scalars; str_int takes an integer, str_float a
/// float or an integer, written as Python's str(float(x)); str_decimal an integer or a decimal's text), a string
/// (str text, bytes, JSON text for json, or an already-encoded png/jpeg file), or a tensor (ndarray; a one-element
/// tensor for a scalar; uint8 [H, W] or [H, W, C] pixels for png/jpeg, encoded by the writer).
using Value = std::variant<int64_t, double, std::string, at::Tensor>;
/// One sample: column name -> value; it must have exactly the writer's columns.
using Sample = std::map<std::string, Value>;

/// (column name, MDS encoding) pairs.
using Columns = std::vector<std::pair<std::string, std::string>>;

struct WriterOptions {
  /// (name, MDS encoding) pairs; the order does not matter (columns are stored sorted by name, as Streaming).
  TESSERA_OPTION(Columns, columns);
  /// "" (none), "zstd" (level 3) or "zstd:N" (N in 1..22). Streaming's br, gz, bz2 and snappy are not supported.
  TESSERA_OPTION(std::string, compression) = "";
  /// Hash algorithms written per file, sorted and unique (Streaming's rule): any of is_supported_hash().
  TESSERA_OPTION(std::vector<std::string>, hashes);
  /// A shard is closed before it would pass this many bytes (Streaming's default, 64 MiB); < 2^32.
  TESSERA_OPTION(int64_t, size_limit) = int64_t{1} << 26;
  /// Allow writing into a folder that already has files (they are overwritten).
  TESSERA_OPTION(bool, exist_ok) = false;
  /// JPEG quality used when the writer encodes pixels to jpeg (1..100; Pillow's default is 75).
  TESSERA_OPTION(int64_t, jpeg_quality) = 75;
  template <class V>
  void visit(V& v) {
    v("compression", compression_, "per-shard compression: \"\", zstd or zstd:LEVEL", Any{});
    v("size_limit", size_limit_, "maximum bytes of a shard file", Range::closed(1, (int64_t{1} << 32) - 1));
    v("exist_ok", exist_ok_, "overwrite files in a non-empty output folder", Any{});
    v("jpeg_quality", jpeg_quality_, "quality of jpeg columns encoded from pixels", Range::closed(1, 100));
  }
};

/// Writes a dataset folder the way Streaming's MDSWriter does: same bytes for the same samples and options
/// (shard files and index.json; compressed files depend on the zstd library's version).
class Writer {
 public:
  Writer(std::string dir, WriterOptions options);
  /// Flushes nothing: call finish(). A writer destroyed without finish() leaves no index.json.
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  /// Encodes and adds one sample; closes the current shard first when this sample would pass size_limit.
  void write(const Sample& sample);
  /// Adds one sample record already in MDS layout (SampleView::record() of a dataset with the same columns).
  void write_raw(Bytes record);
  /// Writes the last shard and index.json. Returns the index written.
  const Index& finish();
  /// Column names in storage order (sorted) and their encodings.
  const std::vector<std::string>& column_names() const { return names_; }

 private:
  void flush_shard();
  ShardInfo base_info() const;  // the columns and options every shard repeats
  std::string dir_;
  WriterOptions options_;
  std::vector<std::string> names_;
  std::vector<Encoding> encodings_;
  std::string config_;
  std::vector<std::string> pending_;  // encoded sample records of the open shard
  int64_t pending_bytes_ = 0;
  Index index_;
  bool finished_ = false;
};

// ---------------------------------------------------------------------------------------------------------
// Images (libpng, libjpeg-turbo)

/// Decodes PNG or JPEG file bytes to uint8 [H, W, C] (C = 1, 2, 3 or 4 for PNG; 1 or 3 for JPEG). `what` names
/// the value in error messages.
at::Tensor decode_png(Bytes file, const std::string& what);
at::Tensor decode_jpeg(Bytes file, const std::string& what);
/// Encodes uint8 [H, W] or [H, W, C] pixels.
std::string encode_png(const at::Tensor& pixels);
std::string encode_jpeg(const at::Tensor& pixels, int quality);

// ---------------------------------------------------------------------------------------------------------
// Tools behind `tessera-shard` (the same functions from C++ and Python)

/// Options of `tessera-shard write --fashion-mnist`.
struct FashionMnistShardOptions {
  TESSERA_OPTION(std::string, folder) = "/usr/share/datasets/fashion-mnist";
  TESSERA_OPTION(std::string, split) = "train";
  TESSERA_OPTION(int64_t, limit) = 0;
  /// "ndarray" (ndarray:uint8:28,28, fixed size) or "png".
  TESSERA_OPTION(std::string, image_encoding) = "ndarray";
};
/// Converts Fashion-MNIST's IDX files to an MDS dataset with columns image and label ("int").
Index write_fashion_mnist(const std::string& out, const FashionMnistShardOptions& source, WriterOptions writer);
/// Converts a split of text files (the `text` dataset's options: path, split, seq_length, test_fraction, limit,
/// tokenizer) to an MDS dataset with one column, tokens ("bytes"): sample i is the text dataset's example i as its
/// seq_length + 1 tokens, so the streaming dataset with that seq_length reads the same examples (`tessera-shard
/// write --text`). Tokens are one byte each without a tokenizer; with one, little-endian ids of
/// text_token_width(vocab) bytes (streaming's token_dtype uint16 or uint32).
Index write_text(const std::string& out, const TextOptions& source, WriterOptions writer);
/// Bytes per token id in write_text's samples: 1 for 256 tokens or fewer, 2 up to 65,536, else 4.
int text_token_width(int64_t vocab_size);

/// What `tessera-shard inspect` reports.
struct Inspection {
  std::vector<std::string> column_names, column_encodings;
  int64_t samples = 0;
  int64_t shards = 0;
  int64_t raw_bytes = 0, zip_bytes = 0;
  std::string compression;
  /// xxh3_64 over every sample record in order: independent of how samples are split into shards and of
  /// compression, so equal datasets written with other options or by Streaming give the same value.
  std::string checksum;
};
Inspection inspect(const std::string& dir, ReaderOptions options = {});
/// A human-readable report of an Inspection, one fact per line.
std::string format_inspection(const std::string& dir, const Inspection& inspection);

}  // namespace tessera::data::mds
