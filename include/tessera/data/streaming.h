#pragma once
/// A streaming dataset over MDS shards (docs/streaming.md): samples decoded from memory-mapped shards in a
/// global order that is a pure function of (seed, epoch), the same for any number of ranks and loader
/// workers, shuffled in blocks so that each rank reads few shards at a time, and addressable at any position
/// in O(1) (resuming needs no replay of the order).
///
///     auto ds = std::make_shared<StreamingDataset>(StreamingOptions().local("data/fmnist").split("train"));
///     DataLoader loader(ds, DataLoaderOptions().batch_size(128));   // the DataLoader asks ds for the order
///
/// With a `remote` (a folder, file:// or http(s)://), `local` is a cache the shards are fetched into (ahead of
/// the reader, in the order's sequence), bounded by `cache_limit` (see ShardCache, shard_cache.h).
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <tessera/data/dataset.h>
#include <tessera/data/mds.h>
#include <tessera/options.h>

namespace tessera::data {

class ShardCache;

/// How the global order of an epoch is built (see StreamingOrder).
struct StreamingOrderOptions {
  /// false: samples in storage order, every epoch.
  TESSERA_OPTION(bool, shuffle) = true;
  /// Samples shuffled together: a window of this many consecutive samples of a partition's shard line is
  /// permuted. Larger mixes better; each rank then reads about shuffle_block_size / samples-per-shard + 1
  /// shards at a time.
  TESSERA_OPTION(int64_t, shuffle_block_size) = 262144;
  /// Canonical partitions (Streaming's num_canonical_nodes): the shard line is cut into this many contiguous
  /// partitions, and each global batch takes a contiguous run of rows from every partition, in partition
  /// order. With a number of ranks that divides it, each rank reads only its partitions' shards. Part of the
  /// order: changing it changes the order, changing the number of ranks does not.
  TESSERA_OPTION(int64_t, partitions) = 8;
  template <class V>
  void visit(V& v) {
    v("shuffle", shuffle_, "shuffle the order every epoch (block shuffle across shards)", Any{});
    v("shuffle_block_size", shuffle_block_size_, "samples shuffled together in one block", Range::at_least(1));
    v("partitions", partitions_, "canonical partitions of the order (Streaming's num_canonical_nodes)",
      Range::closed(1, 4096));
  }
};

/// The global sample order of a sharded data set: position p of epoch e (for global batches of B samples) ->
/// global sample id, a bijection on [0, N) that is a pure function of (seed, epoch, B, the shard sizes and
/// the options), computed per position in O(log shards) without materialising the epoch's permutation.
///
/// Construction of epoch e's order, when shuffling (see docs/streaming.md for the trade-offs):
///  1. the shards are permuted with (seed) only, and laid on a line: the "shard line", fixed for the run;
///  2. the line is cut into `partitions` contiguous partitions, sized so that each global batch takes a fixed
///     run of rows from each (rows [ceil(l*n/L), ceil((l+1)*n/L)) of a batch of n go to partition l);
///  3. with (seed, epoch), the shard pieces inside each partition are permuted, and each window of
///     `shuffle_block_size` consecutive samples of the partition is permuted (a keyed Feistel bijection);
///  4. batch b's rows of partition l are the partition's next samples in that shuffled sequence.
/// Without shuffling the order is the identity.
class StreamingOrder {
 public:
  /// `shard_offsets`: each shard's first global id, then the total (mds::Reader::shard_offsets()).
  StreamingOrder(std::vector<int64_t> shard_offsets, StreamingOrderOptions options);

  int64_t size() const { return offsets_.back(); }
  int64_t num_shards() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  const StreamingOrderOptions& options() const { return options_; }

  /// The global sample ids at positions [begin, end) of epoch `epoch`'s order for global batches of
  /// `batch_size` (0 <= begin <= end <= size()). O(end - begin) after an O(shards + partitions) set-up per
  /// (seed, epoch, batch_size), cached for the last one used.
  std::vector<int64_t> range(uint64_t seed, int64_t epoch, int64_t batch_size, int64_t begin, int64_t end) const;
  /// The sample at one position.
  int64_t at(uint64_t seed, int64_t epoch, int64_t batch_size, int64_t position) const;
  /// The shard holding global sample `id` (binary search on the offsets).
  int64_t shard_of(int64_t id) const;

 private:
  struct Plan;
  std::shared_ptr<const Plan> plan(uint64_t seed, int64_t epoch, int64_t batch_size) const;
  int64_t map(const Plan& plan, int64_t position) const;

  std::vector<int64_t> offsets_;
  StreamingOrderOptions options_;
  mutable std::mutex mutex_;
  mutable std::shared_ptr<const Plan> last_;
};

/// Shards a rank reads under a StreamingOrder when data-parallel ranks take rows [r*n/w, (r+1)*n/w) of each
/// global batch of n (dist::ShardedSource): what `tessera-shard order` reports.
struct ShardsTouched {
  int world_size = 1;
  double per_rank_per_epoch = 0;  ///< distinct shards of a rank's rows over an epoch, mean over ranks and epochs
  int64_t max_per_rank_per_epoch = 0;
  double per_batch_share = 0;     ///< distinct shards in one rank's rows of one batch, mean
};
/// For epochs [0, epochs) of `order` with run seed `seed` and global batches of `batch_size`. InputError when a
/// world size is not in [1, batch_size].
ShardsTouched shards_touched(const StreamingOrder& order, uint64_t seed, int64_t batch_size, int world_size,
                             int64_t epochs);

/// Options of a streaming dataset (recipe: `dataset: {streaming: {local: DIR, split: train, ...}}`).
struct StreamingOptions {
  /// The MDS folder (holding index.json, or a `split` subfolder that does); with a remote, the cache folder the
  /// shards are fetched into.
  TESSERA_OPTION(std::string, local) = "";
  /// Where the shards are: "" (they are in `local`), a folder, `file://PATH` or `http(s)://URL` (libcurl).
  TESSERA_OPTION(std::string, remote) = "";
  /// Bytes the cache may hold with a remote: a count or "10gb", "512mib", ... ("" = no limit). Least-recently
  /// used shards are evicted beyond it; it must hold two of the largest shard file.
  TESSERA_OPTION(std::string, cache_limit) = "";
  /// Retries of a failed or corrupt download, with exponential backoff from `retry_backoff` seconds.
  TESSERA_OPTION(int64_t, download_retry) = 2;
  TESSERA_OPTION(double, retry_backoff) = 0.5;
  /// Seconds one download attempt may take.
  TESSERA_OPTION(double, download_timeout) = 60;
  /// Shards fetched ahead of the reader, in the order they will be read (0 = fetch each when first read).
  TESSERA_OPTION(int64_t, prefetch) = 4;
  /// A subfolder of `local` ("train", "test", ...); "" reads `local` itself.
  TESSERA_OPTION(std::string, split) = "";
  /// The column decoded into the "input" part: uint8 images become float [C, H, W] in [0, 1] (an [H, W]
  /// array gets C = 1; png/jpeg/pil pixels [H, W, C] are moved to [C, H, W]); other numbers keep their type.
  TESSERA_OPTION(std::string, input) = "image";
  /// The column decoded into the "target" part (an integer scalar: a class id, as int64).
  TESSERA_OPTION(std::string, target) = "label";
  /// Classes of the target; 0 = the largest label + 1, found by reading the label column once.
  TESSERA_OPTION(int64_t, num_classes) = 0;
  /// Check the shard files' hashes (index.json) when each is first opened.
  TESSERA_OPTION(bool, verify_hashes) = false;
  TESSERA_OPTION(StreamingOrderOptions, order);
  template <class V>
  void visit(V& v) {
    v("local", local_, "folder of the MDS shards (index.json); with a remote, the cache folder", Any{});
    v("remote", remote_, "folder, file:// or http(s):// URL the shards are fetched from (\"\" = none)", Any{});
    v("cache_limit", cache_limit_, "bytes the cache may hold (\"10gb\", ...; \"\" = no limit)", Any{});
    v("download_retry", download_retry_, "retries of a failed download", Range::at_least(0));
    v("retry_backoff", retry_backoff_, "seconds before the first retry (doubled for each next)", Range::at_least(0));
    v("download_timeout", download_timeout_, "seconds one download attempt may take", Range::positive());
    v("prefetch", prefetch_, "shards fetched ahead of the reader", Range::at_least(0));
    v("split", split_, "subfolder of local holding the split (\"\" = local itself)", Any{});
    v("input", input_, "column decoded into the input", Any{});
    v("target", target_, "column decoded into the target (an integer class id)", Any{});
    v("num_classes", num_classes_, "number of classes (0 = largest label + 1)", Range::at_least(0));
    v("verify_hashes", verify_hashes_, "check shard hashes on first open", Any{});
    order_.visit(v);
  }
};

/// Samples of an MDS folder as a Dataset whose epochs follow a StreamingOrder: a DataLoader over it asks the
/// dataset for each batch's ids (Dataset::has_order) instead of shuffling itself; its `shuffle: false`
/// turns the shuffle off too. Thread-safe.
class StreamingDataset : public Dataset {
 public:
  /// InputError (naming the folder, file, option or column) for a missing or corrupt folder, unknown
  /// columns, or columns that cannot be an input or a class target.
  explicit StreamingDataset(StreamingOptions options);

  int64_t size() const override { return reader_->size(); }
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  int64_t num_classes() const override { return num_classes_; }
  std::vector<int64_t> input_shape() const override { return input_shape_; }
  /// "streaming(DIR, 60000 samples in 5 shards)".
  std::string describe() const override;
  bool has_order() const override { return true; }
  std::vector<int64_t> order_range(uint64_t seed, int64_t epoch, int64_t batch_size, bool shuffle, int64_t begin,
                                   int64_t end) const override;

  const StreamingOptions& options() const { return options_; }
  const mds::Reader& reader() const { return *reader_; }
  const StreamingOrder& order() const { return *order_; }
  /// The folder read (local, or local/split).
  const std::string& folder() const { return folder_; }
  /// The cache the shards are fetched into, when there is a remote (else nullptr).
  ShardCache* cache() const { return cache_.get(); }

 private:
  at::Tensor decode_input(const mds::SampleView& s) const;
  std::shared_ptr<const mds::Shard> shard(int64_t k) const;  // through the cache when there is one
  void open_local();
  void open_remote();
  std::shared_ptr<ShardCache> cache_;
  StreamingOptions options_;
  std::string folder_;
  std::shared_ptr<mds::Reader> reader_;
  std::unique_ptr<StreamingOrder> order_;
  int64_t input_column_ = 0, target_column_ = 0;
  std::vector<int64_t> input_shape_;   // per example, as delivered ([C, H, W] for images)
  c10::ScalarType stored_dtype_{};     // of the input column's values
  bool image_hwc_ = false;             // png/jpeg/pil: [H, W, C] -> [C, H, W]
  mds::DType target_dtype_ = mds::DType::i64;  // of the target column's integers
  int64_t num_classes_ = 0;
};

}  // namespace tessera::data
