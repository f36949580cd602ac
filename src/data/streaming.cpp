// The streaming dataset over MDS shards and its global order (include/tessera/data/streaming.h,
// docs/streaming.md "Order").
#include <ATen/ATen.h>
#include <tessera/data/streaming.h>
#include <tessera/data/shard_cache.h>
#include <tessera/error.h>
#include <tessera/rng.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>

namespace tessera::data {
namespace {

// Random streams of the order, distinct from the project's RngStream ids (1..4): Rng(seed, {kOrderStream, ...}).
constexpr uint64_t kOrderStream = 0x53545245414d0001ULL;  // "STREAM", 1
constexpr uint64_t kShardLine = 0, kEpochKey = 1, kPieces = 2;

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

ShardsTouched shards_touched(const StreamingOrder& order, uint64_t seed, int64_t batch_size, int world_size,
                             int64_t epochs) {
  if (world_size < 1 || world_size > batch_size)
    throw InputError("shards_touched: world size " + std::to_string(world_size) + " is not in [1, batch size " +
                     std::to_string(batch_size) + "]");
  if (epochs < 1) throw InputError("shards_touched: epochs must be >= 1, got " + std::to_string(epochs));
  const int64_t n = order.size();
  ShardsTouched out;
  out.world_size = world_size;
  double sum_epoch = 0, sum_share = 0;
  int64_t shares = 0;
  for (int64_t e = 0; e < epochs; ++e) {
    const std::vector<int64_t> ids = order.range(seed, e, batch_size, 0, n);
    std::vector<std::vector<char>> touched(static_cast<size_t>(world_size),
                                           std::vector<char>(static_cast<size_t>(order.num_shards()), 0));
    for (int64_t begin = 0; begin < n; begin += batch_size) {
      const int64_t rows = std::min(batch_size, n - begin);
      for (int r = 0; r < world_size; ++r) {
        std::vector<int64_t> here;
        for (int64_t j = rows * r / world_size; j < rows * (r + 1) / world_size; ++j)
          here.push_back(order.shard_of(ids[static_cast<size_t>(begin + j)]));
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
  out.per_batch_share = sum_share / static_cast<double>(shares);
  return out;
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

void StreamingDataset::open_local() {
  namespace fs = std::filesystem;
  if (!fs::is_directory(options_.local()))
    throw InputError("streaming.local: folder " + options_.local() + " does not exist");
  if (!options_.split().empty() && !fs::is_directory(folder_)) {
    std::vector<std::string> subfolders;
    for (const auto& e : fs::directory_iterator(options_.local()))
      if (e.is_directory()) subfolders.push_back(e.path().filename().string());
    std::sort(subfolders.begin(), subfolders.end());
    throw InputError("streaming.split: " + options_.local() + " has no subfolder \"" + options_.split() + "\" (" +
                     (subfolders.empty() ? std::string("it has none") : "it has: " + join_names(subfolders)) +
                     ")");
  }
  if (!fs::exists(fs::path(folder_) / "index.json"))
    throw InputError("streaming.local: " + folder_ + " holds no index.json, so it is not an MDS data set" +
                     (options_.split().empty() ? std::string(" (is the split a subfolder? set split)") : ""));
  reader_ = std::make_shared<mds::Reader>(folder_, mds::ReaderOptions().verify_hashes(options_.verify_hashes()));
}

void StreamingDataset::open_remote() {
  const int64_t limit =
      options_.cache_limit().empty() ? 0 : parse_byte_size(options_.cache_limit(), "streaming.cache_limit");
  std::string remote = options_.remote();
  if (!options_.split().empty()) {
    while (remote.size() > 1 && remote.back() == '/') remote.pop_back();
    remote += "/" + options_.split();
  }
  try {
    cache_ = std::make_shared<ShardCache>(ShardCacheOptions()
                                              .remote(remote)
                                              .local(folder_)
                                              .cache_limit(limit)
                                              .download_retry(options_.download_retry())
                                              .retry_backoff(options_.retry_backoff())
                                              .download_timeout(options_.download_timeout())
                                              .prefetch(options_.prefetch())
                                              .verify_hashes(options_.verify_hashes()));
  } catch (const InputError& e) {
    throw InputError("streaming." + std::string(e.what()));  // "streaming.remote: ...", "streaming.cache_limit: ..."
  }
  reader_ = std::make_shared<mds::Reader>(folder_, mds::ReaderOptions().verify_hashes(options_.verify_hashes()));
}

std::shared_ptr<const mds::Shard> StreamingDataset::shard(int64_t k) const {
  if (!cache_) return reader_->shard(k);
  return cache_->acquire(k);
}

StreamingDataset::StreamingDataset(StreamingOptions options) : options_(std::move(options)) {
  namespace fs = std::filesystem;
  if (options_.local().empty())
    throw InputError(options_.remote().empty()
                         ? std::string("streaming.local: no folder given; expected the folder of an MDS data set (its "
                                       "index.json), e.g. one written by `tessera-shard write --fashion-mnist --out DIR`")
                         : std::string("streaming.local: no folder given; a remote needs a local cache folder to "
                                       "fetch its shards into"));
  folder_ = options_.split().empty() ? options_.local() : (fs::path(options_.local()) / options_.split()).string();
  if (options_.remote().empty()) {
    if (!options_.cache_limit().empty())
      throw InputError("streaming.cache_limit: set without a remote; the limit applies to a cache of remote shards "
                       "(local is read in place)");
    open_local();
  } else {
    open_remote();
  }
  const auto& names = reader_->column_names();
  const auto column = [&](const std::string& option, const std::string& name) {
    const auto it = std::find(names.begin(), names.end(), name);
    if (it == names.end())
      throw InputError("streaming." + option + ": " + folder_ + " has no column \"" + name +
                       "\" (its columns: " + join_names(names) + ")");
    return static_cast<int64_t>(it - names.begin());
  };
  input_column_ = column("input", options_.input());
  target_column_ = column("target", options_.target());
  if (input_column_ == target_column_)
    throw InputError("streaming.target: the input and the target are the same column \"" + options_.input() + "\"");
  const std::string where = folder_ + "/index.json";
  const Encoding target = Encoding::parse(reader_->column_encodings()[static_cast<size_t>(target_column_)], where);
  if (target.kind != Encoding::Kind::scalar || !target.dtype || !is_integer(*target.dtype))
    throw InputError("streaming.target: column \"" + options_.target() + "\" of " + folder_ + " is \"" + target.name +
                     "\"; a class target must be an integer scalar (int, int8..int64, uint8..uint64)");
  target_dtype_ = *target.dtype;
  const Encoding input = Encoding::parse(reader_->column_encodings()[static_cast<size_t>(input_column_)], where);
  if (input.kind == Encoding::Kind::str || input.kind == Encoding::Kind::bytes)
    throw InputError("streaming.input: column \"" + options_.input() + "\" of " + folder_ + " is \"" + input.name +
                     "\"; an input must be numbers (ndarray, a scalar) or an image (png, jpeg, pil)");
  image_hwc_ = input.kind == Encoding::Kind::png || input.kind == Encoding::Kind::jpeg ||
               input.kind == Encoding::Kind::pil;

  const auto first_shard = shard(reader_->locate(0).first);
  const mds::SampleView first_sample = first_shard->sample(reader_->locate(0).second);
  stored_dtype_ = first_sample.tensor(input_column_).scalar_type();
  const at::Tensor shaped = decode_input(first_sample);
  input_shape_ = shaped.sizes().vec();
  order_ = std::make_unique<StreamingOrder>(reader_->shard_offsets(), options_.order());

  num_classes_ = options_.num_classes();
  if (num_classes_ == 0) {  // one pass over the label column
    int64_t largest = -1;
    for (int64_t s = 0; s < reader_->num_shards(); ++s) {
      const auto sh = shard(s);
      for (int64_t i = 0; i < sh->size(); ++i) {
        const int64_t label = read_integer(sh->sample(i).raw(target_column_), *target.dtype);
        if (label < 0)
          throw InputError("streaming.target: sample " + std::to_string(reader_->shard_offsets()[s] + i) + " of " +
                           folder_ + " has label " + std::to_string(label) + "; class ids must be >= 0");
        largest = std::max(largest, label);
      }
    }
    num_classes_ = largest + 1;
  }
}

at::Tensor StreamingDataset::decode_input(const mds::SampleView& s) const {
  at::Tensor t = s.tensor(input_column_);
  if (image_hwc_) return t.permute({2, 0, 1});  // [H, W, C] -> [C, H, W]
  if (t.dim() == 2) return t.unsqueeze(0);       // a one-channel image
  if (t.dim() == 0) return t.reshape({1});
  return t;
}

Batch StreamingDataset::get_batch(const std::vector<int64_t>& indices) const {
  const auto n = static_cast<int64_t>(indices.size());
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), input_shape_.begin(), input_shape_.end());
  at::Tensor inputs = at::empty(shape, at::TensorOptions().dtype(stored_dtype_));
  at::Tensor targets = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  int64_t* target_out = targets.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = indices[static_cast<size_t>(i)];
    if (id < 0 || id >= size())
      throw InputError("streaming: sample " + std::to_string(id) + " is out of range [0, " + std::to_string(size()) +
                       ") of " + folder_);
  }
  // Row by row, grouped by shard in the order the shards first appear (the order the cache prefetches them): one
  // shard held at a time (with a remote, the one pinned in the cache).
  std::vector<int64_t> first_seen;                        // shards by first appearance
  std::vector<std::pair<int64_t, int64_t>> rows(static_cast<size_t>(n));  // (rank of the shard in first_seen, row)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = reader_->locate(indices[static_cast<size_t>(i)]).first;
    auto it = std::find(first_seen.begin(), first_seen.end(), k);
    if (it == first_seen.end()) it = first_seen.insert(first_seen.end(), k);
    rows[static_cast<size_t>(i)] = {it - first_seen.begin(), i};
  }
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::shared_ptr<const mds::Shard> held;
  int64_t held_k = -1;
  for (const auto& [rank, i] : rows) {
    const int64_t k = first_seen[static_cast<size_t>(rank)];
    const int64_t id = indices[static_cast<size_t>(i)];
    if (k != held_k) {
      held.reset();
      held = shard(k);
      held_k = k;
    }
    const mds::SampleView s = held->sample(id - reader_->shard_offsets()[static_cast<size_t>(k)]);
    const at::Tensor x = decode_input(s);
    if (x.sizes() != at::IntArrayRef(input_shape_))
      throw InputError("streaming: sample " + std::to_string(id) + " of " + folder_ + " has an input of shape " +
                       c10::str(x.sizes()) + ", the first sample's is " + c10::str(at::IntArrayRef(input_shape_)) +
                       "; every input must have the same shape");
    inputs[i].copy_(x);
    target_out[i] = read_integer(s.raw(target_column_), target_dtype_);
  }
  if (stored_dtype_ == at::kByte) inputs = inputs.to(at::kFloat).div_(255.0);  // as the IDX loader
  return Batch(inputs, targets);
}

std::string StreamingDataset::describe() const {
  return "streaming(" + (cache_ ? cache_->options().remote() + " cached in " : std::string()) + folder_ + ", " +
         std::to_string(size()) + " samples in " +
         std::to_string(reader_->num_shards()) + " shards)";
}

std::vector<int64_t> StreamingDataset::order_range(uint64_t seed, int64_t epoch, int64_t batch_size, bool shuffle,
                                                   int64_t begin, int64_t end) const {
  if (begin < 0 || begin > end || end > size())
    throw InputError("StreamingDataset::order_range: positions [" + std::to_string(begin) + ", " +
                     std::to_string(end) + ") are not inside [0, " + std::to_string(size()) + "]");
  // With a cache, the positions of this batch and of a few after it, computed once: the cache fetches the first
  // `prefetch` shards they need ahead, in the order they will be read.
  const bool ahead = cache_ && options_.prefetch() > 0;
  const int64_t last = ahead ? std::max(end, std::min(size(), begin + 4 * std::max<int64_t>(batch_size, 1))) : end;
  std::vector<int64_t> ids;
  if (shuffle) {
    ids = order_->range(seed, epoch, batch_size, begin, last);
  } else {
    ids.resize(static_cast<size_t>(last - begin));
    std::iota(ids.begin(), ids.end(), begin);
  }
  if (ahead) {
    std::vector<int64_t> upcoming;
    for (int64_t id : ids) {
      const int64_t k = order_->shard_of(id);
      if (std::find(upcoming.begin(), upcoming.end(), k) == upcoming.end()) upcoming.push_back(k);
      if (static_cast<int64_t>(upcoming.size()) >= options_.prefetch()) break;
    }
    cache_->prefetch(std::move(upcoming));
  }
  ids.resize(static_cast<size_t>(end - begin));
  return ids;
}

}  // namespace tessera::data
