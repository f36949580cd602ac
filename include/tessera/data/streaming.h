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
class Tokenizer;

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

/// One source of a mixed streaming dataset (StreamingOptions::streams; recipe `streams: [{local: A, repeat: 2},
/// {remote: URL, local: B, proportion: 0.3}, ...]`): a folder of MDS shards, how it is reached, and how much of
/// it an epoch takes. At most one of proportion, repeat and choose; either every stream sets a proportion, or
/// none does (repeat 1 unless set). See docs/streaming.md, "Mixing streams".
struct StreamOptions {
  /// As StreamingOptions' local, remote, split and cache_limit, for this stream (split "" = the dataset's).
  TESSERA_OPTION(std::string, local) = "";
  TESSERA_OPTION(std::string, remote) = "";
  TESSERA_OPTION(std::string, split) = "";
  TESSERA_OPTION(std::string, cache_limit) = "";
  /// Relative share of each epoch (normalised over the streams; 0 = not set).
  TESSERA_OPTION(double, proportion) = 0;
  /// Samples per epoch as a multiple of the stream's size: 2 = every sample twice, 0.5 = a different half
  /// each epoch (0 = not set; with no proportion, 1).
  TESSERA_OPTION(double, repeat) = 0;
  /// Samples per epoch as a count (0 = not set).
  TESSERA_OPTION(int64_t, choose) = 0;
  template <class V>
  void visit(V& v) {
    v("local", local_, "folder of the stream's MDS shards (index.json); with a remote, its cache folder", Any{});
    v("remote", remote_, "folder, file:// or http(s):// URL the stream's shards are fetched from", Any{});
    v("split", split_, "subfolder of local holding the split (\"\" = the dataset's split)", Any{});
    v("cache_limit", cache_limit_, "bytes the stream's cache may hold (\"\" = no limit)", Any{});
    v("proportion", proportion_, "relative share of each epoch (0 = not set)", Range::at_least(0));
    v("repeat", repeat_, "samples per epoch as a multiple of the stream's size (0 = not set)", Range::at_least(0));
    v("choose", choose_, "samples per epoch as a count (0 = not set)", Range::at_least(0));
  }
};

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
  /// Classes of the target; 0 = the largest label + 1, found by reading the label column once. With
  /// seq_length: the vocabulary (0 = 256 for str/bytes tokens, else the largest token id + 1, found by one pass).
  TESSERA_OPTION(int64_t, num_classes) = 0;
  /// Tokens per example (0 = not token data). When set, the `input` column holds a sequence of token ids (an
  /// integer ndarray, or str/bytes with one token per byte) and each sample is one next-token example: input
  /// tokens [0, S), target tokens [1, S + 1); a shorter sample is padded (input 0, target ignored), a longer one
  /// cut; there is no target column. tokens_per_example() is S, so `tok` durations work.
  TESSERA_OPTION(int64_t, seq_length) = 0;
  /// With seq_length over a `bytes` column: the type of the token ids packed in its bytes, little-endian ("" or
  /// "uint8": each byte is a token; "uint16", "int16", "uint32", "int32", "int64": as numpy's tobytes() of such an
  /// array, llm-foundry's `token_encoding_type`, whose older converters wrote int64 ids as bytes).
  TESSERA_OPTION(std::string, token_dtype) = "";
  /// With seq_length over a str or bytes column of text: a byte-level BPE tokenizer (a tokenizer.json; see
  /// data/tokenizer.h) that encodes each sample's text as it is read, as llm-foundry's StreamingTextDataset does
  /// ("" = each byte is a token). The vocabulary (num_classes 0) is then the tokenizer's.
  TESSERA_OPTION(std::string, tokenizer) = "";
  /// With tokenizer: each sample's text gets the tokenizer's post-processor tokens around it (encode(text, true): a
  /// template "$A <|endoftext|>" ends every sample with that token), as the Hugging Face tokenizer call of
  /// llm-foundry's StreamingTextDataset does. A tokenizer without a post-processor adds none either way.
  TESSERA_OPTION(bool, add_special_tokens) = true;
  /// Check the shard files' hashes (index.json) when each is first opened.
  TESSERA_OPTION(bool, verify_hashes) = false;
  /// A PEM file of the certificate authorities an https:// remote's certificate is checked against ("" = the
  /// system's, /etc/ssl/certs): a server whose certificate your own authority signed.
  TESSERA_OPTION(std::string, ca_bundle) = "";
  TESSERA_OPTION(StreamingOrderOptions, order);
  /// Several sources mixed into one dataset (then local, remote and cache_limit stay empty: each stream has
  /// its own); the other options apply to every stream.
  TESSERA_OPTION(std::vector<StreamOptions>, streams);
  /// Samples per epoch when the streams set proportions (0 = the streams' total).
  TESSERA_OPTION(int64_t, epoch_size) = 0;
  /// How global batches draw from several streams (Streaming's batching_method; docs/streaming.md "Batching"):
  ///  * "random": the epoch's samples shuffled together; each stream's share holds over the epoch;
  ///  * "stratified": every global batch holds each stream's share of it (its samples per epoch over the epoch's,
  ///    times the batch, rounded down; the rows left go to the largest remainders, ties to the later stream, as in
  ///    Streaming); the epoch ends at the first batch a stream cannot fill its rows of;
  ///  * "per_stream": each global batch from one stream (its samples short of a whole batch are not read), the
  ///    batches of the streams shuffled together;
  ///  * "device_per_stream" is refused: it would tie the order to the number of ranks.
  /// With one stream every method is "random".
  TESSERA_OPTION(std::string, batching_method) = "random";
  /// A stream that takes part of itself each epoch (repeat < 1, a choose or proportion that is not a whole
  /// number of copies): "balanced" reads a different part each epoch, "fixed" the same part every epoch.
  TESSERA_OPTION(std::string, sampling_method) = "balanced";
  /// How that part is spread: 1 = over every shard, each giving its share in proportion to its size; g > 1 = in
  /// runs of g consecutive samples of one shard, drawn at random, so that a small part of a large stream (a
  /// remote one above all) reads few shards.
  TESSERA_OPTION(int64_t, sampling_granularity) = 1;
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
    v("num_classes", num_classes_, "number of classes, or with seq_length the vocabulary (0 = from the data)",
      Range::at_least(0));
    v("seq_length", seq_length_, "tokens per example: next-token examples from the input's token ids (0 = off)",
      Range::at_least(0));
    v("token_dtype", token_dtype_, "type of the token ids packed in a bytes column (\"\" = one token per byte)",
      Choices{{"", "uint8", "uint16", "int16", "uint32", "int32", "int64"}});
    v("tokenizer", tokenizer_,
      "a byte-level BPE or WordPiece tokenizer.json encoding the text column (\"\" = bytes are tokens)", Any{});
    v("add_special_tokens", add_special_tokens_, "with tokenizer: its template's tokens around each sample's text",
      Any{});
    v("verify_hashes", verify_hashes_, "check shard hashes on first open", Any{});
    v("ca_bundle", ca_bundle_, "PEM file of certificate authorities for https:// remotes (\"\" = the system's)", Any{});
    order_.visit(v);
    v("streams", streams_, "several MDS folders mixed by proportion, repeat or choose", Any{});
    v("epoch_size", epoch_size_, "samples per epoch with proportions (0 = the streams' total)", Range::at_least(0));
    v("batching_method", batching_method_, "how global batches draw from the streams",
      Choices{{"random", "stratified", "per_stream", "device_per_stream"}});
    v("sampling_method", sampling_method_, "a part of a stream: a different one each epoch, or the same",
      Choices{{"balanced", "fixed"}});
    v("sampling_granularity", sampling_granularity_, "a part of a stream in runs of this many samples of one shard",
      Range::at_least(1));
  }
};

/// Samples of an MDS folder, or of several mixed (`streams`), as a Dataset whose epochs follow a StreamingOrder:
/// a DataLoader over it asks the dataset for each batch's ids (Dataset::has_order) instead of shuffling itself;
/// its `shuffle: false` turns the shuffle off too. Thread-safe.
///
/// Sample ids (what get_batch takes) number the samples of every stream end to end: stream 0's, then stream
/// 1's, ... An epoch has size() positions; with mixed streams a sample may come several times in an epoch
/// (repeat > 1) or not at all (a share below the stream's size: a different subset each epoch).
class StreamingDataset : public Dataset {
 public:
  /// InputError (naming the folder, file, option or column) for a missing or corrupt folder, unknown
  /// columns, or columns that cannot be an input or a class target; with streams, for streams whose inputs
  /// differ in shape or type, or whose shares are set inconsistently.
  explicit StreamingDataset(StreamingOptions options);
  ~StreamingDataset() override;

  /// Positions per epoch: the samples of the folder, or what the streams' shares add up to.
  int64_t size() const override { return epoch_size_; }
  /// size(), or with stratified or per_stream batching the whole global batches of `batch_size` the streams
  /// fill (InputError when a stream would never be read: a stratified batch too small to give it a row, a
  /// stream with fewer samples per epoch than one per_stream batch).
  int64_t epoch_positions(int64_t batch_size) const override;
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  int64_t num_classes() const override { return num_classes_; }
  std::vector<int64_t> input_shape() const override { return input_shape_; }
  int64_t tokens_per_example() const override { return options_.seq_length(); }
  /// "streaming(DIR, 60000 samples in 5 shards)"; with streams, each stream and its samples per epoch.
  std::string describe() const override;
  bool has_order() const override { return true; }
  std::vector<int64_t> order_range(uint64_t seed, int64_t epoch, int64_t batch_size, bool shuffle, int64_t begin,
                                   int64_t end) const override;

  const StreamingOptions& options() const { return options_; }
  /// Streams: 1 without `streams`.
  int64_t num_streams() const;
  /// Stream `stream`'s reader, folder (local, or local/split) and cache (nullptr without a remote).
  const mds::Reader& reader(int64_t stream = 0) const;
  const std::string& folder(int64_t stream = 0) const;
  ShardCache* cache(int64_t stream = 0) const;
  /// Samples stream `stream` gives each epoch.
  int64_t stream_samples(int64_t stream) const;
  /// The order of the epochs when they are the samples themselves, each once (no streams, or streams without
  /// repeat, choose or proportion): position -> sample id. Error otherwise (use order_range).
  const StreamingOrder& order() const;
  /// shards_touched (above) for this dataset's epochs as a DataLoader reads them (shuffled, unless `shuffle` is
  /// false as the loader's): each stream's share, the parts drawn of resampled streams and the batching method, over
  /// the shards of every stream (numbered stream by stream). Reads and fetches nothing.
  ShardsTouched shards_touched(uint64_t seed, int64_t batch_size, int world_size, int64_t epochs,
                               bool shuffle = true) const;

 private:
  struct Source;  // one stream
  struct Line;    // an epoch's sample line: pieces of shards, and the StreamingOrder over it
  const Source& source(int64_t stream) const;
  Source open_source(const std::string& where, const std::string& local, const std::string& remote,
                     const std::string& split, const std::string& cache_limit) const;
  void check_columns(Source& src, bool first);
  void set_shares();
  std::shared_ptr<const Line> make_line(uint64_t seed, int64_t epoch) const;
  std::shared_ptr<const Line> line(uint64_t seed, int64_t epoch) const;
  int64_t sample_of(const Line& line, int64_t position) const;
  bool batched() const;  // stratified or per_stream over several streams
  struct Batching;        // how global batches of one size draw from the streams (batched() only)
  std::shared_ptr<const Batching> batching(int64_t batch_size) const;  // cached: the last few sizes
  std::shared_ptr<const Batching> make_batching(int64_t batch_size) const;
  // Line positions of epoch positions [begin, end) under stratified or per_stream batching.
  std::vector<int64_t> batched_positions(const Line& line, uint64_t seed, int64_t epoch, int64_t batch_size,
                                         bool shuffle, int64_t begin, int64_t end) const;
  // Sample ids of epoch positions [begin, end) (order_range without the caches' prefetch).
  std::vector<int64_t> ordered_ids(uint64_t seed, int64_t epoch, int64_t batch_size, bool shuffle, int64_t begin,
                                   int64_t end) const;
  int64_t shard_of(int64_t id) const;  // combined shard index of sample `id`
  std::shared_ptr<const mds::Shard> shard(int64_t k) const;  // through the stream's cache when it has one
  at::Tensor decode_input(const Source& src, const mds::SampleView& s) const;
  at::Tensor tokens_of(const Source& src, const mds::SampleView& s) const;  // seq_length: int64 [n]

  StreamingOptions options_;
  std::vector<Source> sources_;
  std::vector<int64_t> shard_offsets_;  // every stream's shards end to end: each one's first id, then the total
  std::vector<int64_t> shard_source_;   // the stream of each of those shards
  int64_t epoch_size_ = 0;
  // The line of every epoch; null when a stream takes part of itself (the line then changes every epoch).
  std::shared_ptr<const Line> fixed_line_;
  mutable std::mutex lines_mutex_;
  mutable std::vector<std::shared_ptr<const Line>> recent_lines_;  // without a fixed line: the last two epochs'
  mutable std::mutex batchings_mutex_;
  mutable std::vector<std::shared_ptr<const Batching>> recent_batchings_;
  std::vector<int64_t> input_shape_;    // per example, as delivered ([C, H, W] for images)
  c10::ScalarType stored_dtype_{};      // of the input column's values
  int64_t num_classes_ = 0;
  std::shared_ptr<const Tokenizer> tokenizer_;  // seq_length over text with `tokenizer`; else null
};

}  // namespace tessera::data
