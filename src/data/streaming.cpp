// The streaming dataset over MDS shards and its global order (include/tessera/data/streaming.h,
// docs/streaming.md "Order").
#include <ATen/ATen.h>
#include <tessera/data/streaming.h>
#include <tessera/data/tokenizer.h>
#include <tessera/data/shard_cache.h>
#include <tessera/error.h>
#include <tessera/rng.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <numeric>

namespace tessera::data {
namespace {

// Random streams of the order, distinct from the project's RngStream ids (1..4): Rng(seed, {kOrderStream, ...}).
constexpr uint64_t kOrderStream = 0x53545245414d0001ULL;  // "STREAM", 1
constexpr uint64_t kShardLine = 0, kEpochKey = 1, kPieces = 2, kSubsets = 3, kStreamOrder = 4, kBatchOrder = 5,
                   kRuns = 6;

/// SplitMix64's finaliser: a bijective 64-bit mixer.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// A keyed bijection of [0, m), computed per element: a 6-round balanced Feistel network on the smallest
/// 4^h >= m, cycle-walked back into range (at most 4 steps on average).
int64_t feistel_permute(uint64_t x, uint64_t m, uint64_t key) {
  if (m <= 1) return 0;
  int h = 1;
  while ((uint64_t{1} << (2 * h)) < m) ++h;
  const uint64_t mask = (uint64_t{1} << h) - 1;
  do {
    uint64_t left = x >> h, right = x & mask;
    for (uint64_t round = 0; round < 6; ++round) {
      const uint64_t f = mix64(key ^ mix64(right + (round + 1) * 0x9E3779B97F4A7C15ULL)) & mask;
      const uint64_t next = left ^ f;
      left = right;
      right = next;
    }
    x = (left << h) | right;
  } while (x >= m);
  return static_cast<int64_t>(x);
}

/// Rows of a batch of n that go to partition l of L: [ceil(l*n/L), ceil((l+1)*n/L)).
int64_t row_begin(int64_t l, int64_t n, int64_t partitions) { return (l * n + partitions - 1) / partitions; }
int64_t rows(int64_t l, int64_t n, int64_t partitions) {
  return row_begin(l + 1, n, partitions) - row_begin(l, n, partitions);
}

/// Adds `left` units to `counts`, one each to the entries in order of decreasing `remainders` (cycling if more are
/// left than entries): the largest-remainder rounding of shares whose floors `counts` holds. Equal remainders go
/// to the earlier entry first, or with `ties_to_later` to the later one.
template <class Remainder>
void give_to_largest_remainders(std::vector<int64_t>& counts, const std::vector<Remainder>& remainders, int64_t left,
                                bool ties_to_later) {
  std::vector<size_t> by(counts.size());
  std::iota(by.begin(), by.end(), size_t{0});
  if (ties_to_later) std::reverse(by.begin(), by.end());
  std::stable_sort(by.begin(), by.end(), [&](size_t a, size_t b) { return remainders[a] > remainders[b]; });
  for (int64_t i = 0; i < left; ++i) ++counts[by[static_cast<size_t>(i) % by.size()]];
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

// =====================================================================================================
// StreamingOrder

/// Everything epoch (seed, epoch, batch_size)'s order needs beyond the options: O(shards + partitions).
struct StreamingOrder::Plan {
  uint64_t seed = 0;
  int64_t epoch = 0, batch_size = 0;
  int64_t full_batches = 0, last_rows = 0;  // N / B and N % B
  std::vector<int64_t> partition_begin;     // on the shard line; partitions + 1 entries
  struct Piece {
    int64_t first_id;  // global id of the piece's first sample
    int64_t length;
  };
  std::vector<Piece> pieces;               // every partition's pieces, partition by partition, in epoch order
  std::vector<int64_t> piece_end;          // within its partition: end of each piece in the shuffled sequence
  std::vector<int64_t> first_piece;        // partitions + 1 entries: index of each partition's first piece
  uint64_t key = 0;                        // of the block permutations
};

StreamingOrder::StreamingOrder(std::vector<int64_t> shard_offsets, StreamingOrderOptions options)
    : offsets_(std::move(shard_offsets)), options_(options) {
  if (offsets_.size() < 2 || offsets_.front() != 0)
    throw InputError("StreamingOrder: the shard offsets must start at 0 and list at least one shard");
  for (size_t i = 1; i < offsets_.size(); ++i) {
    if (offsets_[i] < offsets_[i - 1])
      throw InputError("StreamingOrder: the shard offsets must not decrease (shard " + std::to_string(i - 1) + ")");
  }
  if (options_.shuffle_block_size() < 1)
    throw InputError("shuffle_block_size: " + std::to_string(options_.shuffle_block_size()) +
                     " is out of range >= 1");
  if (options_.partitions() < 1 || options_.partitions() > 4096)
    throw InputError("partitions: " + std::to_string(options_.partitions()) + " is out of range [1, 4096]");
}

int64_t StreamingOrder::shard_of(int64_t id) const {
  if (id < 0 || id >= size())
    throw InputError("StreamingOrder::shard_of: sample " + std::to_string(id) + " is out of range [0, " +
                     std::to_string(size()) + ")");
  return std::upper_bound(offsets_.begin(), offsets_.end(), id) - offsets_.begin() - 1;
}

std::shared_ptr<const StreamingOrder::Plan> StreamingOrder::plan(uint64_t seed, int64_t epoch,
                                                                 int64_t batch_size) const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (last_ && last_->seed == seed && last_->epoch == epoch && last_->batch_size == batch_size) return last_;
  }
  auto p = std::make_shared<Plan>();
  p->seed = seed;
  p->epoch = epoch;
  p->batch_size = batch_size;
  const int64_t n = size(), parts = options_.partitions();
  p->full_batches = n / batch_size;
  p->last_rows = n % batch_size;

  // 1. The shard line, fixed for the run: shards in an order drawn from the seed alone.
  Rng line_rng(seed, {kOrderStream, kShardLine});
  const std::vector<int64_t> shard_order = line_rng.permutation(num_shards());

  // 2. Partitions: their sizes follow from how batches are split into rows.
  p->partition_begin.assign(static_cast<size_t>(parts + 1), 0);
  for (int64_t l = 0; l < parts; ++l) {
    const int64_t total = p->full_batches * rows(l, batch_size, parts) + rows(l, p->last_rows, parts);
    p->partition_begin[static_cast<size_t>(l + 1)] = p->partition_begin[static_cast<size_t>(l)] + total;
  }

  // 3. Cut the line into pieces at partition boundaries, then permute each partition's pieces for this epoch.
  p->first_piece.push_back(0);
  size_t shard_i = 0;
  int64_t line_pos = 0, taken = 0;  // start of shard_order[shard_i] on the line; samples of it already cut
  for (int64_t l = 0; l < parts; ++l) {
    std::vector<Plan::Piece> mine;
    const int64_t end = p->partition_begin[static_cast<size_t>(l + 1)];
    while (line_pos + taken < end) {
      const int64_t s = shard_order[shard_i];
      const int64_t shard_len = offsets_[static_cast<size_t>(s) + 1] - offsets_[static_cast<size_t>(s)];
      const int64_t len = std::min(shard_len - taken, end - (line_pos + taken));
      if (len > 0) mine.push_back({offsets_[static_cast<size_t>(s)] + taken, len});
      taken += len;
      if (taken == shard_len) {
        line_pos += shard_len;
        taken = 0;
        ++shard_i;
      }
    }
    Rng piece_rng(seed, {kOrderStream, kPieces, static_cast<uint64_t>(epoch), static_cast<uint64_t>(l)});
    const std::vector<int64_t> perm = piece_rng.permutation(static_cast<int64_t>(mine.size()));
    int64_t at = 0;
    for (int64_t k : perm) {
      p->pieces.push_back(mine[static_cast<size_t>(k)]);
      at += mine[static_cast<size_t>(k)].length;
      p->piece_end.push_back(at);
    }
    p->first_piece.push_back(static_cast<int64_t>(p->pieces.size()));
  }
  p->key = Rng(seed, {kOrderStream, kEpochKey, static_cast<uint64_t>(epoch)}).next_u64();

  std::lock_guard<std::mutex> lock(mutex_);
  last_ = p;
  return p;
}

int64_t StreamingOrder::map(const Plan& p, int64_t position) const {
  const int64_t bs = p.batch_size, parts = options_.partitions();
  // Position -> (partition l, index k in the partition's sequence).
  const int64_t b = position / bs, j = position % bs;
  const int64_t n = b < p.full_batches ? bs : p.last_rows;
  const int64_t l = j * parts / n;
  const int64_t k = b * rows(l, bs, parts) + (j - row_begin(l, n, parts));
  // Block shuffle inside the partition.
  const int64_t total = p.partition_begin[static_cast<size_t>(l + 1)] - p.partition_begin[static_cast<size_t>(l)];
  const int64_t block_size = options_.shuffle_block_size();
  const int64_t block = k / block_size, block_begin = block * block_size;
  const int64_t block_len = std::min(block_size, total - block_begin);
  const uint64_t block_key = mix64(p.key ^ mix64((static_cast<uint64_t>(l) << 40) ^ static_cast<uint64_t>(block)));
  const int64_t shuffled = block_begin + feistel_permute(static_cast<uint64_t>(k - block_begin),
                                                         static_cast<uint64_t>(block_len), block_key);
  // Sequence index -> piece -> global id.
  const auto first = p.piece_end.begin() + p.first_piece[static_cast<size_t>(l)];
  const auto last = p.piece_end.begin() + p.first_piece[static_cast<size_t>(l + 1)];
  const auto it = std::upper_bound(first, last, shuffled);
  const size_t piece = static_cast<size_t>(it - p.piece_end.begin());
  const int64_t piece_begin = it == first ? 0 : *(it - 1);
  return p.pieces[piece].first_id + (shuffled - piece_begin);
}

std::vector<int64_t> StreamingOrder::range(uint64_t seed, int64_t epoch, int64_t batch_size, int64_t begin,
                                           int64_t end) const {
  if (epoch < 0) throw InputError("StreamingOrder: epoch must be >= 0, got " + std::to_string(epoch));
  if (batch_size < 1) throw InputError("StreamingOrder: batch_size must be >= 1, got " + std::to_string(batch_size));
  if (begin < 0 || begin > end || end > size())
    throw InputError("StreamingOrder: positions [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") are not inside [0, " + std::to_string(size()) + "]");
  std::vector<int64_t> out(static_cast<size_t>(end - begin));
  if (!options_.shuffle()) {
    std::iota(out.begin(), out.end(), begin);
    return out;
  }
  const auto p = plan(seed, epoch, batch_size);
  for (int64_t i = begin; i < end; ++i) out[static_cast<size_t>(i - begin)] = map(*p, i);
  return out;
}

int64_t StreamingOrder::at(uint64_t seed, int64_t epoch, int64_t batch_size, int64_t position) const {
  return range(seed, epoch, batch_size, position, position + 1).front();
}

namespace {

/// shards_touched over `epochs` epochs of `positions` positions each, whose shards `shards_of_epoch(e)` gives in
/// position order, among `num_shards`.
ShardsTouched count_shards_touched(int64_t num_shards, int64_t positions, int64_t batch_size, int world_size,
                                   int64_t epochs,
                                   const std::function<std::vector<int64_t>(int64_t epoch)>& shards_of_epoch) {
  if (world_size < 1 || world_size > batch_size)
    throw InputError("shards_touched: world size " + std::to_string(world_size) + " is not in [1, batch size " +
                     std::to_string(batch_size) + "]");
  if (epochs < 1) throw InputError("shards_touched: epochs must be >= 1, got " + std::to_string(epochs));
  ShardsTouched out;
  out.world_size = world_size;
  double sum_epoch = 0, sum_share = 0;
  int64_t shares = 0;
  for (int64_t e = 0; e < epochs; ++e) {
    const std::vector<int64_t> shards = shards_of_epoch(e);
    std::vector<std::vector<char>> touched(static_cast<size_t>(world_size),
                                           std::vector<char>(static_cast<size_t>(num_shards), 0));
    for (int64_t begin = 0; begin < positions; begin += batch_size) {
      const int64_t rows = std::min(batch_size, positions - begin);
      for (int r = 0; r < world_size; ++r) {
        std::vector<int64_t> here;
        for (int64_t j = rows * r / world_size; j < rows * (r + 1) / world_size; ++j)
          here.push_back(shards[static_cast<size_t>(begin + j)]);
        std::sort(here.begin(), here.end());
        here.erase(std::unique(here.begin(), here.end()), here.end());
        for (int64_t s : here) touched[static_cast<size_t>(r)][static_cast<size_t>(s)] = 1;
        sum_share += static_cast<double>(here.size());
        ++shares;
      }
    }
    for (const auto& t : touched) {
      const int64_t count = std::count(t.begin(), t.end(), char{1});
      sum_epoch += static_cast<double>(count);
      out.max_per_rank_per_epoch = std::max(out.max_per_rank_per_epoch, count);
    }
  }
  out.per_rank_per_epoch = sum_epoch / static_cast<double>(world_size * epochs);
  out.per_batch_share = shares == 0 ? 0.0 : sum_share / static_cast<double>(shares);
  return out;
}

}  // namespace

ShardsTouched shards_touched(const StreamingOrder& order, uint64_t seed, int64_t batch_size, int world_size,
                             int64_t epochs) {
  return count_shards_touched(order.num_shards(), order.size(), batch_size, world_size, epochs, [&](int64_t e) {
    std::vector<int64_t> ids = order.range(seed, e, batch_size, 0, order.size());
    for (int64_t& id : ids) id = order.shard_of(id);
    return ids;
  });
}

// =====================================================================================================
// StreamingDataset

namespace {

using mds::Encoding;

bool is_integer(mds::DType t) {
  return t != mds::DType::f16 && t != mds::DType::f32 && t != mds::DType::f64;
}

/// An integer scalar stored little-endian (the machine's order: MDS is little-endian, so is every platform
/// LibTorch supports).
int64_t read_integer(mds::Bytes b, mds::DType t) {
  switch (t) {
    case mds::DType::u8: return b.data[0];
    case mds::DType::i8: { int8_t v; std::memcpy(&v, b.data, 1); return v; }
    case mds::DType::u16: { uint16_t v; std::memcpy(&v, b.data, 2); return v; }
    case mds::DType::i16: { int16_t v; std::memcpy(&v, b.data, 2); return v; }
    case mds::DType::u32: { uint32_t v; std::memcpy(&v, b.data, 4); return v; }
    case mds::DType::i32: { int32_t v; std::memcpy(&v, b.data, 4); return v; }
    case mds::DType::u64: { uint64_t v; std::memcpy(&v, b.data, 8); return static_cast<int64_t>(v); }
    case mds::DType::i64: { int64_t v; std::memcpy(&v, b.data, 8); return v; }
    default: throw Error("read_integer: not an integer type");
  }
}

}  // namespace

/// One stream: its folder, reader and cache, where its samples and shards sit in the combined numbering, how
/// its columns decode, and how many samples it gives each epoch.
struct StreamingDataset::Source {
  std::string where;   // option prefix of its messages: "streaming" or "streaming.streams[i]"
  std::string folder;  // local, or local/split
  std::shared_ptr<mds::Reader> reader;
  std::shared_ptr<ShardCache> cache;  // with a remote
  int64_t first_id = 0, first_shard = 0;
  int64_t input_column = 0, target_column = 0;
  mds::DType target_dtype = mds::DType::i64;
  bool image_hwc = false;  // png/jpeg/pil: [H, W, C] -> [C, H, W]
  bool byte_tokens = false;  // seq_length > 0 over a str or bytes column: each byte is a token
  int64_t packed_width = 0;  // ... or over a bytes column of ids packed `token_dtype` (bytes per id; 0: bytes)
  int64_t take = 0;        // samples per epoch
};

/// The samples of one epoch laid end to end as pieces of shards (each stream's whole copies, then the part of
/// it the epoch takes), and the StreamingOrder over that line. Without resampling the line is fixed for the
/// run; when every stream is taken once it is the shards themselves (`identity`).
struct StreamingDataset::Line {
  struct Piece {
    int64_t shard = 0;    // combined shard index
    int64_t take = 0;     // samples of it on the line
    bool subset = false;  // take < the shard's size: the samples at keyed positions [0, take) of the shard
    uint64_t key = 0;
    int64_t begin = 0;    // not a subset: the piece's first sample within the shard (a run of sampling_granularity)
  };
  uint64_t seed = 0;
  int64_t epoch = 0;
  std::vector<Piece> pieces;
  std::vector<int64_t> offsets;  // line position of each piece's first sample, then the total
  bool identity = false;
  std::unique_ptr<StreamingOrder> order;
  // Stratified or per_stream batching: where each stream's samples start on the line (then the total), and each
  // stream's own order over them (null for a stream that gives none).
  std::vector<int64_t> stream_begin;
  std::vector<std::unique_ptr<StreamingOrder>> stream_orders;
};

namespace {
/// The seed of stream `s`'s own order under stratified or per_stream batching.
uint64_t stream_seed(uint64_t seed, int64_t s) {
  return Rng(seed, {kOrderStream, kStreamOrder, static_cast<uint64_t>(s)}).next_u64();
}
}  // namespace

StreamingDataset::~StreamingDataset() = default;

const StreamingDataset::Source& StreamingDataset::source(int64_t stream) const {
  if (stream < 0 || stream >= num_streams())
    throw InputError("StreamingDataset: stream " + std::to_string(stream) + " is out of range [0, " +
                     std::to_string(num_streams()) + ")");
  return sources_[static_cast<size_t>(stream)];
}

int64_t StreamingDataset::num_streams() const { return static_cast<int64_t>(sources_.size()); }
const mds::Reader& StreamingDataset::reader(int64_t stream) const { return *source(stream).reader; }
const std::string& StreamingDataset::folder(int64_t stream) const { return source(stream).folder; }
ShardCache* StreamingDataset::cache(int64_t stream) const { return source(stream).cache.get(); }
int64_t StreamingDataset::stream_samples(int64_t stream) const { return source(stream).take; }

StreamingDataset::Source StreamingDataset::open_source(const std::string& where, const std::string& local,
                                                       const std::string& remote, const std::string& split,
                                                       const std::string& cache_limit) const {
  namespace fs = std::filesystem;
  Source src;
  src.where = where;
  if (local.empty())
    throw InputError(remote.empty()
                         ? where + ".local: no folder given; expected the folder of an MDS data set (its index.json), "
                                   "e.g. one written by `tessera-shard write --fashion-mnist --out DIR`"
                         : where + ".local: no folder given; a remote needs a local cache folder to fetch its "
                                   "shards into");
  src.folder = split.empty() ? local : (fs::path(local) / split).string();
  const mds::ReaderOptions reading = mds::ReaderOptions().verify_hashes(options_.verify_hashes());
  if (remote.empty()) {
    if (!cache_limit.empty())
      throw InputError(where + ".cache_limit: set without a remote; the limit applies to a cache of remote shards "
                               "(local is read in place)");
    if (!fs::is_directory(local)) throw InputError(where + ".local: folder " + local + " does not exist");
    if (!split.empty() && !fs::is_directory(src.folder)) {
      std::vector<std::string> subfolders;
      for (const auto& e : fs::directory_iterator(local))
        if (e.is_directory()) subfolders.push_back(e.path().filename().string());
      std::sort(subfolders.begin(), subfolders.end());
      throw InputError(where + ".split: " + local + " has no subfolder \"" + split + "\" (" +
                       (subfolders.empty() ? std::string("it has none") : "it has: " + join_names(subfolders)) + ")");
    }
    if (!fs::exists(fs::path(src.folder) / "index.json"))
      throw InputError(where + ".local: " + src.folder + " holds no index.json, so it is not an MDS data set" +
                       (split.empty() ? std::string(" (is the split a subfolder? set split)") : ""));
    src.reader = std::make_shared<mds::Reader>(src.folder, reading);
    return src;
  }
  const int64_t limit = cache_limit.empty() ? 0 : parse_byte_size(cache_limit, where + ".cache_limit");
  std::string from = remote;
  if (!split.empty()) {
    while (from.size() > 1 && from.back() == '/') from.pop_back();
    from += "/" + split;
  }
  try {
    src.cache = std::make_shared<ShardCache>(ShardCacheOptions()
                                                 .remote(from)
                                                 .local(src.folder)
                                                 .cache_limit(limit)
                                                 .download_retry(options_.download_retry())
                                                 .retry_backoff(options_.retry_backoff())
                                                 .download_timeout(options_.download_timeout())
                                                 .prefetch(options_.prefetch())
                                                 .verify_hashes(options_.verify_hashes())
                                                 .ca_bundle(options_.ca_bundle()));
  } catch (const InputError& e) {
    throw InputError(where + "." + e.what());  // "streaming.remote: ...", "streaming.cache_limit: ..."
  }
  src.reader = std::make_shared<mds::Reader>(src.folder, reading);
  return src;
}

void StreamingDataset::check_columns(Source& src, bool first) {
  const auto& names = src.reader->column_names();
  const auto column = [&](const std::string& option, const std::string& name) {
    const auto it = std::find(names.begin(), names.end(), name);
    if (it == names.end())
      throw InputError(src.where + "." + option + ": " + src.folder + " has no column \"" + name +
                       "\" (its columns: " + join_names(names) + ")");
    return static_cast<int64_t>(it - names.begin());
  };
  // Column options are the dataset's, not a stream's: their messages name streaming.input/target.
  src.input_column = column("input", options_.input());
  const std::string index = src.folder + "/index.json";
  const auto encoding = [&](int64_t c) {
    return Encoding::parse(src.reader->column_encodings()[static_cast<size_t>(c)], index);
  };
  if (options_.seq_length() > 0) {  // token sequences: next-token examples, no target column
    const Encoding tokens = encoding(src.input_column);
    src.byte_tokens = tokens.kind == Encoding::Kind::str || tokens.kind == Encoding::Kind::bytes;
    if (!src.byte_tokens && !(tokens.kind == Encoding::Kind::ndarray && (!tokens.dtype || is_integer(*tokens.dtype))))
      throw InputError("streaming.input: column \"" + options_.input() + "\" of " + src.folder + " is \"" +
                       tokens.name + "\"; with seq_length, the input holds token ids: an integer ndarray (ndarray:"
                       "uint16, ndarray:int32, ...) or str/bytes (one token per byte)");
    const std::string& packed = options_.token_dtype();
    if (!packed.empty() && packed != "uint8") {
      if (tokens.kind != Encoding::Kind::bytes)
        throw InputError("streaming.token_dtype: \"" + packed + "\" reads ids packed in a bytes column; column \"" +
                         options_.input() + "\" of " + src.folder + " is \"" + tokens.name +
                         "\" (an ndarray carries its own dtype, a str is one token per byte)");
      src.packed_width = packed == "int64" ? 8 : packed.find("32") != std::string::npos ? 4 : 2;
      src.byte_tokens = false;
    }
    if (tokenizer_ && !src.byte_tokens)
      throw InputError("streaming.tokenizer: column \"" + options_.input() + "\" of " + src.folder + " is \"" +
                       tokens.name + "\", token ids already; a tokenizer encodes text: a str or bytes column");
    input_shape_ = {options_.seq_length()};
    stored_dtype_ = at::kLong;
    return;
  }
  src.target_column = column("target", options_.target());
  if (src.input_column == src.target_column)
    throw InputError("streaming.target: the input and the target are the same column \"" + options_.input() + "\"");
  const Encoding target = encoding(src.target_column);
  if (target.kind != Encoding::Kind::scalar || !target.dtype || !is_integer(*target.dtype))
    throw InputError("streaming.target: column \"" + options_.target() + "\" of " + src.folder + " is \"" +
                     target.name + "\"; a class target must be an integer scalar (int, int8..int64, uint8..uint64)");
  src.target_dtype = *target.dtype;
  const Encoding input = encoding(src.input_column);
  if (input.kind == Encoding::Kind::str || input.kind == Encoding::Kind::bytes || input.kind == Encoding::Kind::json)
    throw InputError("streaming.input: column \"" + options_.input() + "\" of " + src.folder + " is \"" +
                     input.name + "\"; an input must be numbers (ndarray, a scalar) or an image (png, jpeg, pil)");
  src.image_hwc = input.kind == Encoding::Kind::png || input.kind == Encoding::Kind::jpeg ||
                  input.kind == Encoding::Kind::pil;

  const auto [k, i] = src.reader->locate(0);
  const auto first_shard = src.cache ? src.cache->acquire(k) : src.reader->shard(k);
  const mds::SampleView sample = first_shard->sample(i);
  const c10::ScalarType dtype = sample.tensor(src.input_column).scalar_type();
  const std::vector<int64_t> shape = decode_input(src, sample).sizes().vec();
  if (first) {
    stored_dtype_ = dtype;
    input_shape_ = shape;
  } else if (dtype != stored_dtype_ || shape != input_shape_) {
    throw InputError(src.where + ": its input \"" + options_.input() + "\" is " + c10::toString(dtype) + " " +
                     c10::str(at::IntArrayRef(shape)) + ", stream 0's is " + c10::toString(stored_dtype_) + " " +
                     c10::str(at::IntArrayRef(input_shape_)) +
                     "; mixed streams must deliver inputs of the same shape and type");
  }
}

/// Samples per epoch of each stream (Source::take) from proportion / repeat / choose.
void StreamingDataset::set_shares() {
  const auto& streams = options_.streams();
  int64_t total = 0;
  for (const Source& s : sources_) total += s.reader->size();
  if (streams.empty()) {
    if (options_.epoch_size() != 0)
      throw InputError("streaming.epoch_size: set without streams; an epoch of one folder is all its samples");
    sources_.front().take = total;
    epoch_size_ = total;
    return;
  }
  bool relative = false;
  for (size_t i = 0; i < streams.size(); ++i) {
    const StreamOptions& o = streams[i];
    const int set = (o.proportion() > 0) + (o.repeat() > 0) + (o.choose() > 0);
    if (set > 1)
      throw InputError(sources_[i].where + ": sets more than one of proportion, repeat and choose; expected at most one");
    if (i == 0) relative = o.proportion() > 0;
    if ((o.proportion() > 0) != relative)
      throw InputError(sources_[i].where + ": " +
                       (relative ? std::string("sets no proportion, but stream 0 does")
                                 : std::string("sets a proportion, but stream 0 does not")) +
                       "; expected a proportion on every stream (relative shares) or on none (repeat/choose)");
  }
  if (relative) {
    const int64_t size = options_.epoch_size() > 0 ? options_.epoch_size() : total;
    long double sum = 0;
    for (const StreamOptions& o : streams) sum += o.proportion();
    // Floors, then the samples left over one each to the largest remainders (ties: the earlier stream).
    std::vector<int64_t> takes;
    std::vector<long double> remainders;
    int64_t given = 0;
    for (const StreamOptions& o : streams) {
      const long double exact = static_cast<long double>(size) * o.proportion() / sum;
      takes.push_back(static_cast<int64_t>(std::floor(exact)));
      remainders.push_back(exact - std::floor(exact));
      given += takes.back();
    }
    give_to_largest_remainders(takes, remainders, size - given, false);
    for (size_t i = 0; i < streams.size(); ++i) sources_[i].take = takes[i];
  } else {
    if (options_.epoch_size() != 0)
      throw InputError("streaming.epoch_size: set, but no stream sets a proportion; with repeat and choose an "
                       "epoch is what they add up to (remove epoch_size, or give the streams proportions)");
    for (size_t i = 0; i < streams.size(); ++i) {
      const StreamOptions& o = streams[i];
      const int64_t n = sources_[i].reader->size();
      const long double repeat = o.repeat() > 0 ? o.repeat() : 1.0L;
      const long double take = o.choose() > 0 ? static_cast<long double>(o.choose()) : std::round(repeat * n);
      if (take > static_cast<long double>(int64_t{1} << 50))
        throw InputError(sources_[i].where + ": " + c10::str(static_cast<double>(take)) +
                         " samples per epoch is too many (at most 2^50)");
      sources_[i].take = static_cast<int64_t>(take);
    }
  }
  // Each whole copy of a stream is a copy of its shards on the epoch's line (make_line), and its part one piece
  // per shard, or per run of sampling_granularity samples: keep that bounded.
  constexpr int64_t kMaxPieces = int64_t{1} << 24;
  const int64_t g = options_.sampling_granularity();
  int64_t pieces = 0;
  for (const Source& s : sources_) {
    const int64_t n = s.reader->size(), shards = s.reader->num_shards(), part = s.take % n;
    const int64_t part_pieces = part == 0 ? 0 : g > 1 ? std::min(part / g + shards + 1, part) : shards;
    if (s.take / n > (kMaxPieces - pieces - part_pieces) / shards)
      throw InputError(s.where + ": " + std::to_string(s.take) + " samples per epoch of a stream of " +
                       std::to_string(n) + " in " + std::to_string(shards) +
                       " shards makes more than 2^24 pieces of shards per epoch; expected a smaller share (or fewer, "
                       "larger shards, or a larger sampling_granularity)");
    pieces += s.take / n * shards + part_pieces;
  }
  epoch_size_ = 0;
  for (const Source& s : sources_) epoch_size_ += s.take;
  if (epoch_size_ == 0)
    throw InputError("streaming.streams: the streams give no samples per epoch; expected shares that add up to at "
                     "least one sample");
}

StreamingDataset::StreamingDataset(StreamingOptions options) : options_(std::move(options)) {
  namespace fs = std::filesystem;
  check_option("streaming", "batching_method", options_.batching_method(),
               Choices{{"random", "stratified", "per_stream", "device_per_stream"}});
  check_option("streaming", "sampling_method", options_.sampling_method(), Choices{{"balanced", "fixed"}});
  check_option("streaming", "sampling_granularity", static_cast<double>(options_.sampling_granularity()),
               Range::at_least(1));
  if (!options_.tokenizer().empty()) {
    if (options_.seq_length() == 0)
      throw InputError("streaming.tokenizer: set without seq_length; a tokenizer encodes the text of token sequences: "
                       "give seq_length (tokens per example) too");
    if (!options_.token_dtype().empty() && options_.token_dtype() != "uint8")
      throw InputError("streaming.tokenizer: set with token_dtype " + options_.token_dtype() +
                       "; the column holds either text to encode (tokenizer) or ids already encoded (token_dtype), "
                       "not both");
    tokenizer_ = std::make_shared<const Tokenizer>(Tokenizer::load(options_.tokenizer()));
  }
  if (options_.batching_method() == "device_per_stream")
    throw InputError("streaming.batching_method: device_per_stream (each rank's batch from one stream) would tie the "
                     "order to the number of ranks, and here the order is the same for any number (a run resumes on "
                     "another); expected random, stratified or per_stream (each global batch from one stream)");
  const auto& streams = options_.streams();
  if (streams.empty()) {
    sources_.push_back(open_source("streaming", options_.local(), options_.remote(), options_.split(),
                                   options_.cache_limit()));
  } else {
    const std::pair<const char*, const std::string*> per_stream[] = {
        {"local", &options_.local()}, {"remote", &options_.remote()}, {"cache_limit", &options_.cache_limit()}};
    for (const auto& [name, value] : per_stream) {
      if (!value->empty())
        throw InputError("streaming." + std::string(name) + ": set together with streams; with streams, each stream "
                         "has its own local, remote and cache_limit");
    }
    for (size_t i = 0; i < streams.size(); ++i) {
      const StreamOptions& o = streams[i];
      const std::string where = "streaming.streams[" + std::to_string(i) + "]";
      sources_.push_back(open_source(where, o.local(), o.remote(), o.split().empty() ? options_.split() : o.split(),
                                     o.cache_limit()));
      for (size_t j = 0; j < i; ++j) {
        if (fs::weakly_canonical(sources_[j].folder) == fs::weakly_canonical(sources_[i].folder))
          throw InputError(where + ".local: stream " + std::to_string(j) + " reads the same folder " +
                           sources_[i].folder + "; expected one stream per folder (repeat weighs a folder)");
      }
    }
  }
  for (size_t i = 0; i < sources_.size(); ++i) {
    Source& src = sources_[i];
    src.first_id = shard_offsets_.empty() ? 0 : shard_offsets_.back();
    src.first_shard = static_cast<int64_t>(shard_source_.size());
    if (!shard_offsets_.empty()) shard_offsets_.pop_back();
    for (int64_t offset : src.reader->shard_offsets()) shard_offsets_.push_back(src.first_id + offset);
    shard_source_.insert(shard_source_.end(), static_cast<size_t>(src.reader->num_shards()), static_cast<int64_t>(i));
    check_columns(src, i == 0);
  }
  set_shares();
  const bool resampled = std::any_of(sources_.begin(), sources_.end(),
                                     [](const Source& s) { return s.take % s.reader->size() != 0; });
  if (!resampled) fixed_line_ = make_line(0, 0);

  num_classes_ = options_.num_classes();
  if (tokenizer_ && num_classes_ == 0) num_classes_ = tokenizer_->vocab_size();
  if (tokenizer_ && num_classes_ < tokenizer_->vocab_size())
    throw InputError("streaming.num_classes: " + std::to_string(num_classes_) + " is below the tokenizer's " +
                     std::to_string(tokenizer_->vocab_size()) + " tokens; leave it 0 (the tokenizer's) or raise it");
  if (num_classes_ == 0 && options_.seq_length() > 0) {  // the vocabulary: bytes, or one pass over the token ids
    int64_t largest = -1;
    for (int64_t k = 0; k + 1 < static_cast<int64_t>(shard_offsets_.size()); ++k) {
      const Source& src = sources_[static_cast<size_t>(shard_source_[static_cast<size_t>(k)])];
      if (src.byte_tokens) {
        largest = std::max<int64_t>(largest, 255);
        continue;
      }
      const auto sh = shard(k);
      for (int64_t i = 0; i < sh->size(); ++i) {
        const at::Tensor ids = tokens_of(src, sh->sample(i));
        if (ids.numel() > 0) largest = std::max(largest, ids.max().item<int64_t>());
      }
    }
    num_classes_ = largest + 1;
  } else if (num_classes_ == 0) {  // one pass over the label column of every stream
    int64_t largest = -1;
    for (int64_t k = 0; k + 1 < static_cast<int64_t>(shard_offsets_.size()); ++k) {
      const Source& src = sources_[static_cast<size_t>(shard_source_[static_cast<size_t>(k)])];
      const auto sh = shard(k);
      for (int64_t i = 0; i < sh->size(); ++i) {
        const int64_t label = read_integer(sh->sample(i).raw(src.target_column), src.target_dtype);
        if (label < 0)
          throw InputError("streaming.target: sample " + std::to_string(shard_offsets_[static_cast<size_t>(k)] + i -
                                                                         src.first_id) +
                           " of " + src.folder + " has label " + std::to_string(label) + "; class ids must be >= 0");
        largest = std::max(largest, label);
      }
    }
    num_classes_ = largest + 1;
  }
}

std::shared_ptr<const StreamingDataset::Line> StreamingDataset::make_line(uint64_t seed, int64_t epoch) const {
  auto line = std::make_shared<Line>();
  line->seed = seed;
  line->epoch = epoch;
  line->identity = true;
  const uint64_t epoch_key = Rng(seed, {kOrderStream, kSubsets, static_cast<uint64_t>(epoch)}).next_u64();
  std::vector<size_t> stream_piece;  // index of each stream's first piece, then the total
  for (size_t s = 0; s < sources_.size(); ++s) {
    stream_piece.push_back(line->pieces.size());
    const Source& src = sources_[s];
    const int64_t n = src.reader->size(), shards = src.reader->num_shards();
    const auto size_of = [&](int64_t j) {
      return shard_offsets_[static_cast<size_t>(src.first_shard + j + 1)] -
             shard_offsets_[static_cast<size_t>(src.first_shard + j)];
    };
    const int64_t whole = src.take / n, part = src.take % n;
    line->identity = line->identity && whole == 1 && part == 0;
    for (int64_t w = 0; w < whole; ++w)
      for (int64_t j = 0; j < shards; ++j) line->pieces.push_back({src.first_shard + j, size_of(j), false, 0});
    if (part == 0) continue;
    const int64_t g = options_.sampling_granularity();
    if (g > 1) {
      // The part in runs of g consecutive samples of a shard (its last run may be shorter), the runs drawn in a
      // keyed order of the epoch until the part is filled (the last one cut short): a small part reads few shards.
      std::vector<int64_t> first_run{0};  // each shard's first run, then the total
      for (int64_t j = 0; j < shards; ++j) first_run.push_back(first_run.back() + (size_of(j) + g - 1) / g);
      const uint64_t runs_key =
          Rng(seed, {kOrderStream, kRuns, static_cast<uint64_t>(epoch), static_cast<uint64_t>(s)}).next_u64();
      for (int64_t i = 0, given = 0; given < part; ++i) {
        const int64_t r = feistel_permute(static_cast<uint64_t>(i), static_cast<uint64_t>(first_run.back()), runs_key);
        const auto j = std::upper_bound(first_run.begin(), first_run.end(), r) - first_run.begin() - 1;
        const int64_t begin = (r - first_run[static_cast<size_t>(j)]) * g;
        const int64_t len = std::min({g, size_of(j) - begin, part - given});
        line->pieces.push_back({src.first_shard + j, len, false, 0, begin});
        given += len;
      }
      continue;
    }
    // The part: each shard gives its share of it rounded down, and the samples left over go one each to shards
    // drawn in a keyed order of the epoch; within a shard, the samples at keyed positions. A different part of
    // the stream each epoch, spread over its shards in proportion to their sizes.
    std::vector<int64_t> takes(static_cast<size_t>(shards));
    int64_t given = 0;
    for (int64_t j = 0; j < shards; ++j) {
      takes[static_cast<size_t>(j)] = static_cast<int64_t>(static_cast<unsigned __int128>(part) *
                                                          static_cast<unsigned __int128>(size_of(j)) /
                                                          static_cast<unsigned __int128>(n));
      given += takes[static_cast<size_t>(j)];
    }
    Rng draw(seed, {kOrderStream, kSubsets, static_cast<uint64_t>(epoch), static_cast<uint64_t>(s)});
    for (int64_t j : draw.permutation(shards)) {
      if (given == part) break;
      if (takes[static_cast<size_t>(j)] < size_of(j)) {
        ++takes[static_cast<size_t>(j)];
        ++given;
      }
    }
    for (int64_t j = 0; j < shards; ++j) {
      const int64_t k = src.first_shard + j;
      line->pieces.push_back({k, takes[static_cast<size_t>(j)], true, mix64(epoch_key ^ mix64(static_cast<uint64_t>(k)))});
    }
  }
  stream_piece.push_back(line->pieces.size());
  line->offsets.push_back(0);
  for (const Line::Piece& p : line->pieces) line->offsets.push_back(line->offsets.back() + p.take);
  line->order = std::make_unique<StreamingOrder>(line->offsets, options_.order());
  if (batched()) {
    for (size_t s = 0; s < sources_.size(); ++s) {
      const int64_t begin = line->offsets[stream_piece[s]];
      line->stream_begin.push_back(begin);
      std::vector<int64_t> offsets;
      for (size_t p = stream_piece[s]; p <= stream_piece[s + 1]; ++p) offsets.push_back(line->offsets[p] - begin);
      // The shuffle block scaled by the stream's share (as Streaming does), so that a block of every stream spans
      // about as many batches: a small stream keeps fewer of its shards in use at a time.
      StreamingOrderOptions order = options_.order();
      order.shuffle_block_size(std::max<int64_t>(
          1, static_cast<int64_t>(static_cast<__int128>(order.shuffle_block_size()) * sources_[s].take / epoch_size_)));
      line->stream_orders.push_back(offsets.back() == 0 ? nullptr : std::make_unique<StreamingOrder>(offsets, order));
    }
    line->stream_begin.push_back(line->offsets.back());
  }
  return line;
}

std::shared_ptr<const StreamingDataset::Line> StreamingDataset::line(uint64_t seed, int64_t epoch) const {
  if (fixed_line_) return fixed_line_;
  if (options_.sampling_method() == "fixed") epoch = 0;  // the part of each stream drawn for epoch 0, every epoch
  // Loader workers ask for the batches of one epoch, and at its end of the next: the last two are kept.
  std::lock_guard<std::mutex> lock(lines_mutex_);
  for (const auto& l : recent_lines_)
    if (l->seed == seed && l->epoch == epoch) return l;
  auto made = make_line(seed, epoch);
  recent_lines_.insert(recent_lines_.begin(), made);
  if (recent_lines_.size() > 2) recent_lines_.pop_back();
  return made;
}

int64_t StreamingDataset::sample_of(const Line& line, int64_t position) const {
  if (line.identity) return position;
  const auto it = std::upper_bound(line.offsets.begin(), line.offsets.end(), position);
  const size_t p = static_cast<size_t>(it - line.offsets.begin()) - 1;
  const Line::Piece& piece = line.pieces[p];
  const int64_t within = position - line.offsets[p];
  const int64_t first = shard_offsets_[static_cast<size_t>(piece.shard)];
  if (!piece.subset) return first + piece.begin + within;
  const int64_t shard_size = shard_offsets_[static_cast<size_t>(piece.shard) + 1] - first;
  return first + feistel_permute(static_cast<uint64_t>(within), static_cast<uint64_t>(shard_size), piece.key);
}

int64_t StreamingDataset::shard_of(int64_t id) const {
  return std::upper_bound(shard_offsets_.begin(), shard_offsets_.end(), id) - shard_offsets_.begin() - 1;
}

std::shared_ptr<const mds::Shard> StreamingDataset::shard(int64_t k) const {
  const Source& src = sources_[static_cast<size_t>(shard_source_[static_cast<size_t>(k)])];
  const int64_t local = k - src.first_shard;
  return src.cache ? src.cache->acquire(local) : src.reader->shard(local);
}

const StreamingOrder& StreamingDataset::order() const {
  if (!fixed_line_ || !fixed_line_->identity)
    throw Error("StreamingDataset::order: the epochs of these streams are not their samples each once (repeat, "
                "choose or proportion), so positions do not map to sample ids through one order; use order_range");
  return *fixed_line_->order;
}

at::Tensor StreamingDataset::tokens_of(const Source& src, const mds::SampleView& s) const {
  if (src.packed_width > 0) {  // ids packed in bytes, little-endian, as numpy's tobytes()
    const mds::Bytes b = s.raw(src.input_column);
    if (b.size % static_cast<size_t>(src.packed_width) != 0)
      throw InputError("streaming.token_dtype: a sample of " + src.folder + " holds " + std::to_string(b.size) +
                       " bytes in column \"" + options_.input() + "\", not a whole number of " +
                       options_.token_dtype() + " ids (" + std::to_string(src.packed_width) + " bytes each)");
    const int64_t n = static_cast<int64_t>(b.size) / src.packed_width;
    at::Tensor ids = at::empty({n}, at::kLong);
    int64_t* out = ids.data_ptr<int64_t>();
    const auto unpack = [&](auto type) {  // memcpy: the values sit at any address
      for (int64_t i = 0; i < n; ++i) {
        decltype(type) v;
        std::memcpy(&v, b.data + i * src.packed_width, sizeof v);
        out[i] = static_cast<int64_t>(v);
      }
    };
    const std::string& type = options_.token_dtype();
    if (type == "uint16") unpack(uint16_t{});
    else if (type == "int16") unpack(int16_t{});
    else if (type == "uint32") unpack(uint32_t{});
    else if (type == "int32") unpack(int32_t{});
    else unpack(int64_t{});
    return ids;
  }
  if (tokenizer_) {  // text (str or bytes), encoded as it is read
    const mds::Bytes b = s.raw(src.input_column);
    return at::tensor(tokenizer_->encode(std::string_view(reinterpret_cast<const char*>(b.data), b.size),
                                         options_.add_special_tokens()),
                      at::kLong);
  }
  const at::Tensor t = s.tensor(src.input_column);  // uint8 [n] for str/bytes
  if (at::isFloatingType(t.scalar_type()))  // an "ndarray" column of no fixed dtype holding floats
    throw InputError("streaming.input: a sample of " + src.folder + " holds " + c10::toString(t.scalar_type()) +
                     " values in column \"" + options_.input() + "\"; token ids must be integers");
  return t.reshape({-1}).to(at::kLong);
}

at::Tensor StreamingDataset::decode_input(const Source& src, const mds::SampleView& s) const {
  at::Tensor t = s.tensor(src.input_column);
  if (src.image_hwc) return t.permute({2, 0, 1});  // [H, W, C] -> [C, H, W]
  if (t.dim() == 2) return t.unsqueeze(0);           // a one-channel image
  if (t.dim() == 0) return t.reshape({1});
  return t;
}

Batch StreamingDataset::get_batch(const std::vector<int64_t>& indices) const {
  const auto n = static_cast<int64_t>(indices.size());
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), input_shape_.begin(), input_shape_.end());
  const int64_t seq = options_.seq_length();
  // Token sequences: input tokens [0, S) and target tokens [1, S + 1) of each sample; a shorter sample is padded
  // (input 0, target kIgnoreTarget: no loss there), a longer one cut.
  at::Tensor inputs = seq > 0 ? at::zeros(shape, at::kLong) : at::empty(shape, at::TensorOptions().dtype(stored_dtype_));
  at::Tensor targets = seq > 0 ? at::full({n, seq}, kIgnoreTarget, at::kLong) : at::empty({n}, at::kLong);
  const int64_t samples = shard_offsets_.back();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = indices[static_cast<size_t>(i)];
    if (id < 0 || id >= samples)
      throw InputError("streaming: sample " + std::to_string(id) + " is out of range [0, " + std::to_string(samples) +
                       ") of " + (sources_.size() == 1 ? sources_.front().folder : std::string("the streams")));
  }
  // Row by row, grouped by shard in the order the shards first appear (the order the caches prefetch them): one
  // shard held at a time (with a remote, the one pinned in its cache).
  std::vector<int64_t> first_seen;                                          // shards by first appearance
  std::vector<std::pair<int64_t, int64_t>> rows(static_cast<size_t>(n));  // (rank of the shard in first_seen, row)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = shard_of(indices[static_cast<size_t>(i)]);
    auto it = std::find(first_seen.begin(), first_seen.end(), k);
    if (it == first_seen.end()) it = first_seen.insert(first_seen.end(), k);
    rows[static_cast<size_t>(i)] = {it - first_seen.begin(), i};
  }
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::shared_ptr<const mds::Shard> held;
  int64_t held_k = -1;
  for (const auto& [rank, i] : rows) {
    const int64_t k = first_seen[static_cast<size_t>(rank)];
    const Source& src = sources_[static_cast<size_t>(shard_source_[static_cast<size_t>(k)])];
    const int64_t id = indices[static_cast<size_t>(i)];
    if (k != held_k) {
      held.reset();
      held = shard(k);
      held_k = k;
    }
    const mds::SampleView s = held->sample(id - shard_offsets_[static_cast<size_t>(k)]);
    if (seq > 0) {
      const at::Tensor ids = tokens_of(src, s);
      const int64_t length = std::min(ids.numel(), seq + 1);
      if (length > 0) inputs[i].narrow(0, 0, std::min(length, seq)).copy_(ids.narrow(0, 0, std::min(length, seq)));
      if (length > 1) targets[i].narrow(0, 0, length - 1).copy_(ids.narrow(0, 1, length - 1));
      continue;
    }
    const at::Tensor x = decode_input(src, s);
    if (x.sizes() != at::IntArrayRef(input_shape_))
      throw InputError("streaming: sample " + std::to_string(id - src.first_id) + " of " + src.folder +
                       " has an input of shape " + c10::str(x.sizes()) + ", the first sample's is " +
                       c10::str(at::IntArrayRef(input_shape_)) + "; every input must have the same shape");
    inputs[i].copy_(x);
    targets.data_ptr<int64_t>()[i] = read_integer(s.raw(src.target_column), src.target_dtype);
  }
  if (stored_dtype_ == at::kByte) inputs = inputs.to(at::kFloat).div_(255.0);  // as the IDX loader
  return Batch(inputs, targets);
}

std::string StreamingDataset::describe() const {
  const auto one = [](const Source& s) {
    return (s.cache ? s.cache->options().remote() + " cached in " : std::string()) + s.folder + ", " +
           std::to_string(s.reader->size()) + " samples in " + std::to_string(s.reader->num_shards()) + " shards";
  };
  if (options_.streams().empty()) return "streaming(" + one(sources_.front()) + ")";
  std::string out = "streaming(" + std::to_string(sources_.size()) + " streams: ";
  for (size_t i = 0; i < sources_.size(); ++i)
    out += (i ? "; " : "") + one(sources_[i]) + ", " + std::to_string(sources_[i].take) + " per epoch";
  out += "; " + std::to_string(epoch_size_) + " samples per epoch";
  if (batched()) out += ", " + options_.batching_method() + " batches";
  if (options_.sampling_method() == "fixed") out += ", fixed parts";
  if (options_.sampling_granularity() > 1)
    out += ", parts in runs of " + std::to_string(options_.sampling_granularity());
  return out + ")";
}

bool StreamingDataset::batched() const {
  return sources_.size() > 1 && options_.batching_method() != "random";
}

/// How global batches of one size draw from the streams under stratified or per_stream batching, worked out once
/// per batch size (batching()).
struct StreamingDataset::Batching {
  int64_t batch_size = 0;
  int64_t positions = 0;  // epoch_positions(batch_size)
  // Stratified: each stream's rows of a batch, and row j of a batch -> (stream, row of its rows).
  std::vector<int64_t> rows;
  std::vector<std::pair<size_t, int64_t>> layout;
  // Per_stream: each stream's first batch among the epoch's, then the total.
  std::vector<int64_t> first_batch;
};

std::shared_ptr<const StreamingDataset::Batching> StreamingDataset::batching(int64_t batch_size) const {
  {
    std::lock_guard<std::mutex> lock(batchings_mutex_);
    for (const auto& b : recent_batchings_)
      if (b->batch_size == batch_size) return b;
  }
  auto made = make_batching(batch_size);
  std::lock_guard<std::mutex> lock(batchings_mutex_);
  // Training and evaluation batch sizes, and a progressive batch size's last: a few are kept.
  recent_batchings_.insert(recent_batchings_.begin(), made);
  if (recent_batchings_.size() > 4) recent_batchings_.pop_back();
  return made;
}

std::shared_ptr<const StreamingDataset::Batching> StreamingDataset::make_batching(int64_t batch_size) const {
  if (batch_size < 1)
    throw InputError("StreamingDataset::epoch_positions: batch_size must be >= 1, got " + std::to_string(batch_size));
  auto out = std::make_shared<Batching>();
  out->batch_size = batch_size;
  const std::string method = "streaming.batching_method: " + options_.batching_method() + " global batches of " +
                             std::to_string(batch_size);
  int64_t batches = 0;
  if (options_.batching_method() == "stratified") {
    // Each stream's exact share of the batch rounded down; the rows left one each to the largest remainders
    // (ties: the later stream, as Streaming's stratified batches).
    std::vector<int64_t> remainders;
    int64_t given = 0;
    for (const Source& src : sources_) {
      const auto exact = static_cast<__int128>(batch_size) * src.take;
      out->rows.push_back(static_cast<int64_t>(exact / epoch_size_));
      remainders.push_back(static_cast<int64_t>(exact % epoch_size_));
      given += out->rows.back();
    }
    give_to_largest_remainders(out->rows, remainders, batch_size - given, true);
    batches = std::numeric_limits<int64_t>::max();
    for (size_t s = 0; s < sources_.size(); ++s) {
      const Source& src = sources_[s];
      if (src.take == 0) continue;
      if (out->rows[s] == 0)
        throw InputError(method + " give " + src.where + " (" + std::to_string(src.take) + " of the epoch's " +
                         std::to_string(epoch_size_) + " samples) no row, so it would never be read; expected batches "
                         "of at least " + std::to_string((epoch_size_ + src.take - 1) / src.take) +
                         " samples, or a larger share of the stream");
      batches = std::min(batches, src.take / out->rows[s]);
    }
    if (batches == 0)
      throw InputError(method + ": a stream gives fewer samples per epoch than its rows of one batch, so no batch "
                       "is whole; expected smaller batches");
    // Partition by partition, each stream's rows of that partition: every rank's rows hold about its share of
    // each stream, and mostly its partitions' shards.
    const int64_t parts = options_.order().partitions();
    for (int64_t l = 0; l < parts; ++l)
      for (size_t s = 0; s < sources_.size(); ++s)
        for (int64_t i = row_begin(l, out->rows[s], parts); i < row_begin(l + 1, out->rows[s], parts); ++i)
          out->layout.push_back({s, i});
  } else {  // per_stream
    out->first_batch.push_back(0);
    for (const Source& src : sources_) {
      if (src.take > 0 && src.take < batch_size)
        throw InputError(method + ": " + src.where + " gives " + std::to_string(src.take) +
                         " samples per epoch, fewer than one batch, so it would never be read; expected batches of "
                         "at most " + std::to_string(src.take) + " samples, or a larger share of the stream");
      out->first_batch.push_back(out->first_batch.back() + src.take / batch_size);
    }
    batches = out->first_batch.back();
  }
  out->positions = batches * batch_size;
  return out;
}

int64_t StreamingDataset::epoch_positions(int64_t batch_size) const {
  return batched() ? batching(batch_size)->positions : size();
}

std::vector<int64_t> StreamingDataset::batched_positions(const Line& line, uint64_t seed, int64_t epoch,
                                                         int64_t batch_size, bool shuffle, int64_t begin,
                                                         int64_t end) const {
  // Each position -> (stream s, position k in the stream's own order, read in batches of `per`); the stream's
  // order (its shards' line, partitions and block shuffle, as a whole dataset's) then gives its line position.
  // Consecutive positions of one stream (a stratified batch's rows of one partition, a per_stream batch) are
  // asked of its order as one run.
  const auto plan = batching(batch_size);
  const bool stratified = options_.batching_method() == "stratified";
  shuffle = shuffle && options_.order().shuffle();
  const uint64_t batch_key =
      stratified ? 0 : Rng(seed, {kOrderStream, kBatchOrder, static_cast<uint64_t>(epoch)}).next_u64();
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(end - begin));
  size_t run_stream = 0;
  int64_t run_begin = 0, run_length = 0, run_per = 0;
  const auto flush = [&] {
    if (run_length == 0) return;
    const int64_t first = line.stream_begin[run_stream];
    if (shuffle) {
      for (int64_t id : line.stream_orders[run_stream]->range(stream_seed(seed, static_cast<int64_t>(run_stream)),
                                                              epoch, run_per, run_begin, run_begin + run_length))
        out.push_back(first + id);
    } else {
      for (int64_t k = run_begin; k < run_begin + run_length; ++k) out.push_back(first + k);
    }
    run_length = 0;
  };
  for (int64_t position = begin; position < end; ++position) {
    const int64_t b = position / batch_size, j = position % batch_size;
    size_t s = 0;
    int64_t k = 0, per = batch_size;
    if (stratified) {
      s = plan->layout[static_cast<size_t>(j)].first;
      per = plan->rows[s];
      k = b * per + plan->layout[static_cast<size_t>(j)].second;
    } else {  // the epoch's batches of every stream, shuffled together
      const auto& first_batch = plan->first_batch;
      const int64_t g = shuffle ? feistel_permute(static_cast<uint64_t>(b), static_cast<uint64_t>(first_batch.back()),
                                                  batch_key)
                                : b;
      s = static_cast<size_t>(std::upper_bound(first_batch.begin(), first_batch.end(), g) - first_batch.begin() - 1);
      k = (g - first_batch[s]) * batch_size + j;
    }
    if (run_length > 0 && s == run_stream && per == run_per && k == run_begin + run_length) {
      ++run_length;
    } else {
      flush();
      run_stream = s;
      run_begin = k;
      run_per = per;
      run_length = 1;
    }
  }
  flush();
  return out;
}

std::vector<int64_t> StreamingDataset::ordered_ids(uint64_t seed, int64_t epoch, int64_t batch_size, bool shuffle,
                                                   int64_t begin, int64_t end) const {
  const auto l = line(seed, epoch);
  std::vector<int64_t> ids;
  if (batched()) {
    ids = batched_positions(*l, seed, epoch, batch_size, shuffle, begin, end);
  } else if (shuffle) {
    ids = l->order->range(seed, epoch, batch_size, begin, end);
  } else {
    ids.resize(static_cast<size_t>(end - begin));
    std::iota(ids.begin(), ids.end(), begin);
  }
  for (int64_t& id : ids) id = sample_of(*l, id);
  return ids;
}

ShardsTouched StreamingDataset::shards_touched(uint64_t seed, int64_t batch_size, int world_size, int64_t epochs,
                                               bool shuffle) const {
  const int64_t positions = epoch_positions(batch_size);
  return count_shards_touched(static_cast<int64_t>(shard_source_.size()), positions, batch_size, world_size, epochs,
                              [&](int64_t e) {
                                std::vector<int64_t> ids = ordered_ids(seed, e, batch_size, shuffle, 0, positions);
                                for (int64_t& id : ids) id = shard_of(id);
                                return ids;
                              });
}

std::vector<int64_t> StreamingDataset::order_range(uint64_t seed, int64_t epoch, int64_t batch_size, bool shuffle,
                                                   int64_t begin, int64_t end) const {
  const int64_t positions = epoch_positions(batch_size);
  if (begin < 0 || begin > end || end > positions)
    throw InputError("StreamingDataset::order_range: positions [" + std::to_string(begin) + ", " +
                     std::to_string(end) + ") are not inside [0, " + std::to_string(positions) + "]");
  std::vector<int64_t> ids = ordered_ids(seed, epoch, batch_size, shuffle, begin, end);
  // With caches: the same rows of the next three batches too (all of them for a whole batch; a data-parallel
  // rank that decodes only its rows asks for those), and each cache fetches the first `prefetch` shards of its
  // stream that they need ahead, in the order they will be read.
  bool caches = false;
  for (const Source& s : sources_) caches = caches || s.cache;
  if (caches && options_.prefetch() > 0) {
    std::vector<int64_t> soon = ids;
    const int64_t step = std::max<int64_t>(batch_size, 1);
    for (int64_t k = 1; k < 4 && begin + k * step < std::min(positions, end + k * step); ++k) {
      const std::vector<int64_t> more =
          ordered_ids(seed, epoch, batch_size, shuffle, begin + k * step, std::min(positions, end + k * step));
      soon.insert(soon.end(), more.begin(), more.end());
    }
    std::vector<std::vector<int64_t>> upcoming(sources_.size());
    for (int64_t id : soon) {
      const int64_t k = shard_of(id);
      const size_t s = static_cast<size_t>(shard_source_[static_cast<size_t>(k)]);
      auto& mine = upcoming[s];
      const int64_t local = k - sources_[s].first_shard;
      if (sources_[s].cache && static_cast<int64_t>(mine.size()) < options_.prefetch() &&
          std::find(mine.begin(), mine.end(), local) == mine.end())
        mine.push_back(local);
    }
    for (size_t s = 0; s < sources_.size(); ++s)
      if (!upcoming[s].empty()) sources_[s].cache->prefetch(std::move(upcoming[s]));
  }
  return ids;
}

}  // namespace tessera::data
