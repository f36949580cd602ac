// The streaming dataset over MDS shards (docs/streaming.md): its global order (a permutation, a pure function
// of seed and epoch, the same for 1, 2 and 4 ranks and any number of loader workers, resumable at any sample
// and across a change of world size), shards touched per rank, decoding (bitwise the IDX loader's Fashion-MNIST
// inputs), errors, recipes, and an exact checkpointed resume of a Trainer run over shards (read in place, from a
// remote, and over mixed streams).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <set>

#include <ATen/ATen.h>
#include <tessera/data/mds.h>
#include <tessera/data/streaming.h>
#include <tessera/data/text.h>
#include <tessera/distributed/sharded_source.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>

#include "core/mds_support.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
namespace mds = data::mds;
using data::StreamingDataset;
using data::StreamingOptions;
using data::StreamingOrder;
using data::StreamingOrderOptions;
using ::testing::HasSubstr;
using test::batches_of;
using test::TempDir;
using test::write_labels;

/// Uneven shard sizes, one of them empty.
const std::vector<int64_t> kOffsets = {0, 10, 35, 36, 36, 80, 81, 150, 237};

std::vector<int64_t> whole_epoch(const StreamingOrder& order, uint64_t seed, int64_t epoch, int64_t batch) {
  return order.range(seed, epoch, batch, 0, order.size());
}

bool is_permutation_of_all(std::vector<int64_t> v, int64_t n) {
  std::sort(v.begin(), v.end());
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  return v == all;
}

// ------------------------------------------------------------------------------------------------ order

TEST(StreamingOrder, EveryEpochIsAPermutationAndAPureFunctionOfSeedAndEpoch) {
  for (int64_t block : {1, 7, 64, 1000000}) {
    for (int64_t parts : {1, 3, 8}) {
      for (int64_t batch : {1, 5, 16, 500}) {
        SCOPED_TRACE("block " + std::to_string(block) + " partitions " + std::to_string(parts) + " batch " +
                     std::to_string(batch));
        const auto opts = StreamingOrderOptions().shuffle_block_size(block).partitions(parts);
        StreamingOrder a(kOffsets, opts), b(kOffsets, opts);
        const auto e0 = whole_epoch(a, 42, 0, batch);
        EXPECT_TRUE(is_permutation_of_all(e0, 237));
        EXPECT_EQ(e0, whole_epoch(b, 42, 0, batch)) << "another instance gives the same order";
        const auto e1 = whole_epoch(a, 42, 1, batch);
        EXPECT_TRUE(is_permutation_of_all(e1, 237));
        EXPECT_EQ(e0, whole_epoch(a, 42, 0, batch)) << "the cache of epoch 1 does not change epoch 0";
        if (block > 1) {
          EXPECT_NE(e0, e1) << "epochs differ";
          EXPECT_NE(e0, whole_epoch(a, 43, 0, batch)) << "seeds differ";
        }
        for (int64_t p : {int64_t{0}, int64_t{100}, int64_t{236}}) EXPECT_EQ(a.at(42, 1, batch, p), e1[p]);
      }
    }
  }
}

TEST(StreamingOrder, NotShufflingIsStorageOrder) {
  StreamingOrder order(kOffsets, StreamingOrderOptions().shuffle(false));
  const auto e = whole_epoch(order, 42, 3, 16);
  for (int64_t i = 0; i < 237; ++i) ASSERT_EQ(e[i], i);
}

TEST(StreamingOrder, EachBatchTakesFixedRowsFromEachPartitionAndPartitionsKeepTheirShards) {
  // 237 samples, batches of 16 (14 full, then 13 rows), 4 partitions: rows [4p, 4p+4) of a full batch
  // and [ceil(13p/4), ceil(13(p+1)/4)) of the last come from partition p, whose shards are the same every epoch.
  StreamingOrder order(kOffsets, StreamingOrderOptions().partitions(4).shuffle_block_size(8));
  std::vector<std::set<int64_t>> shards_of_partition(4);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto e = whole_epoch(order, 5, epoch, 16);
    std::vector<std::set<int64_t>> samples(4), shards(4);
    for (int64_t p = 0; p < 237; ++p) {
      const int64_t b = p / 16, j = p % 16, n = b < 14 ? 16 : 13;
      const int64_t part = j * 4 / n;
      samples[part].insert(e[p]);
      shards[part].insert(order.shard_of(e[p]));
    }
    int64_t total = 0;
    for (int64_t part = 0; part < 4; ++part) {
      total += static_cast<int64_t>(samples[part].size());
      if (epoch == 0) shards_of_partition[part] = shards[part];
      EXPECT_EQ(shards[part], shards_of_partition[part]) << "partition " << part << ", epoch " << epoch;
    }
    EXPECT_EQ(total, 237);
  }
}

TEST(StreamingOrder, ResumesAtAnySampleWithTheSameRemainingOrder) {
  const auto opts = StreamingOrderOptions().partitions(3).shuffle_block_size(20);
  const auto full = whole_epoch(StreamingOrder(kOffsets, opts), 9, 2, 10);
  for (int64_t k = 0; k <= 237; ++k) {
    StreamingOrder fresh(kOffsets, opts);  // no cache: nothing before k is computed
    const auto rest = fresh.range(9, 2, 10, k, 237);
    ASSERT_TRUE(std::equal(rest.begin(), rest.end(), full.begin() + k)) << "resumed at sample " << k;
  }
}

TEST(StreamingOrder, BadArgumentsAreClearErrors) {
  StreamingOrder order(kOffsets, {});
  EXPECT_THAT(testing::input_error_of([&] { order.range(0, -1, 8, 0, 1); }), HasSubstr("epoch must be >= 0"));
  EXPECT_THAT(testing::input_error_of([&] { order.range(0, 0, 0, 0, 1); }), HasSubstr("batch_size must be >= 1"));
  EXPECT_THAT(testing::input_error_of([&] { order.range(0, 0, 8, 5, 238); }),
              HasSubstr("positions [5, 238) are not inside [0, 237]"));
  EXPECT_THAT(testing::input_error_of([&] { StreamingOrder({0, 5, 3}, {}); }), HasSubstr("must not decrease"));
  EXPECT_THAT(testing::input_error_of([&] { StreamingOrder(kOffsets, StreamingOrderOptions().partitions(0)); }),
              HasSubstr("partitions: 0 is out of range"));
}

// ------------------------------------------------------------------------------------------------ loader

class StreamingData : public ::testing::Test {
 protected:
  void SetUp() override {
    write_labels(dir_.path() + "/train", 0, 237, 300);
    options_ = StreamingOptions().local(dir_.path()).split("train").order(
        StreamingOrderOptions().partitions(4).shuffle_block_size(24));
  }
  std::shared_ptr<StreamingDataset> dataset() const { return std::make_shared<StreamingDataset>(options_); }
  std::shared_ptr<data::DataLoader> loader(int64_t batch, int64_t workers, bool drop_last = false) const {
    return std::make_shared<data::DataLoader>(
        dataset(), data::DataLoaderOptions().batch_size(batch).workers(workers).drop_last(drop_last));
  }
  TempDir dir_{"streaming"};
  StreamingOptions options_;
};

TEST_F(StreamingData, ReadsTheShardsInTheDatasetsOrder) {
  const auto ds = dataset();
  ASSERT_GT(ds->reader().num_shards(), 8);
  EXPECT_EQ(ds->size(), 237);
  EXPECT_EQ(ds->num_classes(), 237);  // labels are the ids
  EXPECT_EQ(ds->input_shape(), (std::vector<int64_t>{1, 4, 4}));
  const Batch b = ds->get_batch({3, 200});
  EXPECT_EQ(b.input().sizes(), (std::vector<int64_t>{2, 1, 4, 4}));
  EXPECT_EQ(b.input().scalar_type(), at::kFloat);
  const at::Tensor expected = at::arange(16, at::kLong).add(200 * 7).remainder(256).to(at::kFloat).div_(255.0);
  EXPECT_TRUE(at::equal(b.input()[1].flatten(), expected));
  EXPECT_EQ(b.target()[1].item<int64_t>(), 200);

  auto l = loader(16, 0);
  const auto batches = batches_of(*l, 42, 1);
  std::vector<int64_t> flat;
  for (const auto& b : batches) flat.insert(flat.end(), b.begin(), b.end());
  EXPECT_EQ(flat, ds->order().range(42, 1, 16, 0, 237));
  EXPECT_TRUE(is_permutation_of_all(flat, 237));
}

TEST_F(StreamingData, RanksShareTheGlobalOrderFor1To4RanksAndAnyWorkers) {
  const auto global = dataset()->order().range(7, 2, 16, 0, 237);
  for (int world : {1, 2, 4}) {
    for (int64_t workers : {0, 2}) {
      SCOPED_TRACE(std::to_string(world) + " ranks, " + std::to_string(workers) + " workers");
      std::vector<std::vector<std::vector<int64_t>>> per_rank;
      for (int r = 0; r < world; ++r) {
        dist::ShardedSource share(loader(16, workers), r, world);
        per_rank.push_back(batches_of(share, 7, 2));
      }
      std::vector<int64_t> joined;  // batch by batch, rank by rank
      for (size_t b = 0; b < per_rank[0].size(); ++b)
        for (int r = 0; r < world; ++r) joined.insert(joined.end(), per_rank[r][b].begin(), per_rank[r][b].end());
      EXPECT_EQ(joined, global);
    }
  }
}

TEST_F(StreamingData, ResumesAtAnyBatchBitwise) {
  auto l = loader(10, 2);
  l->start_epoch(3, 1, 0);
  std::vector<Batch> full;
  while (auto b = l->next()) full.push_back(*b);
  for (int64_t first = 0; first <= l->num_batches(); ++first) {
    auto fresh = loader(10, 1);
    fresh->start_epoch(3, 1, first);
    int64_t b = first;
    while (auto batch = fresh->next()) {
      ASSERT_TRUE(at::equal(batch->input(), full[b].input())) << "resumed at " << first << ", batch " << b;
      ASSERT_TRUE(at::equal(batch->target(), full[b].target()));
      ++b;
    }
    EXPECT_EQ(b, static_cast<int64_t>(full.size()));
  }
}

TEST_F(StreamingData, ResumesAcrossAChangeOfWorldSize) {
  // 2 ranks for the first 6 batches, then 4 ranks (and other worker counts) from batch 6: the same order.
  const auto global = dataset()->order().range(11, 0, 16, 0, 237);
  std::vector<int64_t> seen;
  const auto run = [&](int world, int64_t first, int64_t count, int64_t workers) {
    std::vector<std::vector<std::vector<int64_t>>> per_rank;
    for (int r = 0; r < world; ++r) {
      dist::ShardedSource share(loader(16, workers), r, world);
      auto all = batches_of(share, 11, 0, first);
      all.resize(std::min<size_t>(all.size(), static_cast<size_t>(count)));
      per_rank.push_back(all);
    }
    for (size_t b = 0; b < per_rank[0].size(); ++b)
      for (int r = 0; r < world; ++r) seen.insert(seen.end(), per_rank[r][b].begin(), per_rank[r][b].end());
  };
  run(2, 0, 6, 0);
  run(4, 6, 1000, 3);
  EXPECT_EQ(seen, global);
}

TEST_F(StreamingData, EachRankTouchesOnlyItsPartitionsShards) {
  // 4 partitions: with 4 ranks each reads about a quarter of the shards per epoch; with 1 rank, all of them.
  const auto ds = dataset();
  const int64_t shards = ds->reader().num_shards();
  int64_t q = ds->size();
  for (int64_t k = 0; k + 1 < shards; ++k)
    q = std::min(q, ds->reader().shard_offsets()[k + 1] - ds->reader().shard_offsets()[k]);
  for (int world : {1, 2, 4}) {
    std::set<int64_t> all;
    int64_t sum = 0, most = 0;
    for (int r = 0; r < world; ++r) {
      dist::ShardedSource share(loader(16, 0), r, world);
      std::set<int64_t> touched;
      for (const auto& b : batches_of(share, 1, 0))
        for (int64_t id : b) touched.insert(ds->order().shard_of(id));
      // Its rows fill a contiguous stretch of the shard line (its partitions) of at most 237 / world + 4
      // samples, which overlaps at most that / q + 2 shards of at least q samples (the last shard is shorter).
      EXPECT_LE(static_cast<int64_t>(touched.size()), (237 / world + 4) / q + 2) << world << " ranks, rank " << r;
      if (world == 4) EXPECT_LT(static_cast<int64_t>(touched.size()), shards / 2);
      all.insert(touched.begin(), touched.end());
      sum += static_cast<int64_t>(touched.size());
      most = std::max(most, static_cast<int64_t>(touched.size()));
    }
    // shards_touched (behind `tessera-shard order`) counts the same, from the order alone.
    const data::ShardsTouched t = data::shards_touched(ds->order(), 1, 16, world, 1);
    EXPECT_EQ(t.max_per_rank_per_epoch, most);
    EXPECT_DOUBLE_EQ(t.per_rank_per_epoch, static_cast<double>(sum) / world);
    EXPECT_GE(t.per_batch_share, 1.0);
    EXPECT_LE(t.per_batch_share, static_cast<double>(t.max_per_rank_per_epoch));
    int64_t non_empty = 0;
    for (int64_t k = 0; k < shards; ++k) non_empty += ds->reader().shard_offsets()[k + 1] > ds->reader().shard_offsets()[k];
    EXPECT_EQ(static_cast<int64_t>(all.size()), non_empty) << "every non-empty shard is read";
  }
}

TEST_F(StreamingData, LoaderShuffleFalseReadsInStorageOrder) {
  auto ds = dataset();
  data::DataLoader l(ds, data::DataLoaderOptions().batch_size(50).shuffle(false).workers(0));
  std::vector<int64_t> flat;
  for (const auto& b : batches_of(l, 1, 4)) flat.insert(flat.end(), b.begin(), b.end());
  std::vector<int64_t> all(237);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(flat, all);
}

// ------------------------------------------------------------------------------------------------ errors

TEST(StreamingErrors, MissingOrCorruptFoldersAndBadColumnsAreClear) {
  TempDir dir("streaming_errors");
  const auto error = [](StreamingOptions o) { return testing::input_error_of([&] { StreamingDataset ds(o); }); };
  EXPECT_THAT(error(StreamingOptions()), HasSubstr("streaming.local: no folder given"));
  EXPECT_THAT(error(StreamingOptions().local(dir.path() + "/nope")),
              HasSubstr("folder " + dir.path() + "/nope does not exist"));
  EXPECT_THAT(error(StreamingOptions().local(dir.path())), HasSubstr("holds no index.json"));
  write_labels(dir.path() + "/train", 0, 20, 1 << 20, 4);
  EXPECT_THAT(error(StreamingOptions().local(dir.path()).split("test")),
              HasSubstr("has no subfolder \"test\" (it has: train)"));
  const auto ok = StreamingOptions().local(dir.path()).split("train");
  EXPECT_EQ(StreamingDataset(ok).num_classes(), 4);
  EXPECT_THAT(error(StreamingOptions(ok).input("img")),
              HasSubstr("streaming.input: " + dir.path() + "/train has no column \"img\" (its columns: image, label)"));
  EXPECT_THAT(error(StreamingOptions(ok).input("label").target("image")),
              HasSubstr("a class target must be an integer scalar"));
  EXPECT_THAT(error(StreamingOptions(ok).input("label").target("label")), HasSubstr("the same column"));

  // A corrupt index.json and a truncated shard name the file.
  const std::string index = dir.path() + "/train/index.json";
  const std::string good = test::read_file(index);
  test::write_file(index, good.substr(0, good.size() / 2));
  EXPECT_THAT(error(ok), HasSubstr("index.json"));
  test::write_file(index, good);
  const std::string shard = dir.path() + "/train/shard.00000.mds";
  fs::resize_file(shard, fs::file_size(shard) - 5);
  EXPECT_THAT(error(ok), HasSubstr("shard.00000.mds"));
}

TEST(StreamingErrors, RecipeOptionsAreCheckedWithTheirPlace) {
  TempDir dir("streaming_recipe");
  write_labels(dir.path() + "/train", 0, 40, 1 << 20, 3);
  const auto recipe = [&](const std::string& dataset) {
    return "max_duration: 1ep\nmodel: {mlp: {hidden: [8]}}\noptimizer: {sgd: {lr: 0.1}}\n"
           "data:\n  train:\n    dataset: " + dataset + "\n    loader: {batch_size: 8}\n";
  };
  const auto error = [&](const std::string& dataset) {
    return testing::input_error_of([&] { build_run(Recipe::parse(recipe(dataset), "r.yaml")); });
  };
  const tessera::Run run = build_run(Recipe::parse(recipe("{streaming: {local: " + dir.path() + ", split: train}}"), "r.yaml"));
  EXPECT_EQ(run.components.train_dataloader->num_samples(), 40);
  EXPECT_EQ(run.components.train_dataloader->num_classes(), 3);
  EXPECT_THAT(error("{streaming: {local: " + dir.path() + ", split: train, shuffle_block_size: 0}}"),
              HasSubstr("r.yaml:6:"));
  EXPECT_THAT(error("{streaming: {local: " + dir.path() + ", split: train, shuffle_block_size: 0}}"),
              HasSubstr("shuffle_block_size: 0 is out of range"));
  EXPECT_THAT(error("{streaming: {local: " + dir.path() + ", splt: train}}"), HasSubstr("did you mean \"split\""));
  EXPECT_THAT(error("{streaming: {local: " + dir.path() + ", split: valid}}"),
              HasSubstr("r.yaml:6:"));
  EXPECT_THAT(error("{streaming: {local: " + dir.path() + ", split: valid}}"),
              HasSubstr("has no subfolder \"valid\""));
}

// ------------------------------------------------------------------------------------------------ Fashion-MNIST

TEST(StreamingFashionMnist, InputsAndTargetsAreBitwiseTheIdxLoaders) {
  const std::string idx = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(idx + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "no " << idx << " (dataset-fashion-mnist)";
  TempDir dir("streaming_fmnist");
  mds::write_fashion_mnist(dir.path() + "/test", mds::FashionMnistShardOptions().split("test").limit(600),
                           mds::WriterOptions().size_limit(100000));
  const auto ref = data::load_fashion_mnist(data::FashionMnistOptions().split("test").limit(600));
  StreamingDataset ds(StreamingOptions().local(dir.path()).split("test"));
  EXPECT_EQ(ds.size(), 600);
  EXPECT_EQ(ds.num_classes(), 10);
  EXPECT_EQ(ds.input_shape(), ref->input_shape());
  std::vector<int64_t> ids(600);
  std::iota(ids.begin(), ids.end(), 0);
  const Batch a = ds.get_batch(ids), b = ref->get_batch(ids);
  EXPECT_TRUE(at::equal(a.input(), b.input()));
  EXPECT_TRUE(at::equal(a.target(), b.target()));
}

// ------------------------------------------------------------------------------------------------ Trainer

class StopAfterBatch : public Callback {
 public:
  explicit StopAfterBatch(int64_t batch) : batch_(batch) {}
  std::string name() const override { return "stop_after_batch"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::BatchEnd && s.timestamp.batch == batch_) s.stop_training();
  }

 private:
  int64_t batch_;
};

/// The tiny model trained with SGD for 3 epochs (seed 5) on `data` in batches of 8.
std::unique_ptr<Trainer> tiny_trainer(std::shared_ptr<const data::Dataset> data, CheckpointOptions checkpoint,
                                      std::vector<std::shared_ptr<Callback>> callbacks = {}) {
  Components c;
  c.model = testing::tiny_model(3);
  c.train_dataloader =
      std::make_shared<data::DataLoader>(std::move(data), data::DataLoaderOptions().batch_size(8).workers(1));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  c.callbacks = std::move(callbacks);
  return std::make_unique<Trainer>(TrainerOptions().max_duration(Time(3, TimeUnit::Epoch)).threads(1).seed(5),
                                   std::move(c), std::move(checkpoint));
}

/// For each k of `stops`, a run over `data("first")` stopped after batch k with a checkpoint in `folder`, then a run
/// over `data("resumed")` resumed from it: it ends after `batches` batches with the uninterrupted run's weights.
void expect_exact_resumes(const std::function<std::shared_ptr<const data::Dataset>(const std::string&)>& data,
                          const std::string& folder, const std::vector<int64_t>& stops, int64_t batches) {
  auto full = tiny_trainer(data("full"), {});
  full->fit();
  ASSERT_EQ(full->state().timestamp.batch, batches);
  const std::string expected = weights_fingerprint(*full->state().model);
  for (int64_t k : stops) {
    SCOPED_TRACE("stopped after batch " + std::to_string(k));
    const std::string ckpt = folder + "/ckpt" + std::to_string(k);
    {
      auto first = tiny_trainer(data("first"), CheckpointOptions().folder(ckpt), {std::make_shared<StopAfterBatch>(k)});
      first->fit();
      ASSERT_EQ(first->state().timestamp.batch, k);
    }
    auto resumed = tiny_trainer(data("resumed"), CheckpointOptions().folder(ckpt).autoresume(true));
    EXPECT_FALSE(resumed->loaded_checkpoint().empty());
    resumed->fit();
    EXPECT_EQ(resumed->state().timestamp.batch, batches);
    EXPECT_EQ(weights_fingerprint(*resumed->state().model), expected);
  }
}

TEST(StreamingTrainer, CheckpointedRunOverShardsResumesExactly) {
  TempDir dir("streaming_trainer");
  write_labels(dir.path() + "/train", 0, 52, 200, 3);  // [1, 4, 4] inputs, 3 classes: the tiny model's
  const auto options = [&] {
    return StreamingOptions().local(dir.path()).split("train").order(
        StreamingOrderOptions().partitions(2).shuffle_block_size(16));
  };
  // 7 batches (the last of 4) per epoch. Read in place, then from a file:// remote fetched into a fresh cache for
  // each run.
  expect_exact_resumes([&](const std::string&) { return std::make_shared<StreamingDataset>(options()); },
                       dir.path() + "/local", {3, 7, 16}, 21);
  int runs = 0;
  expect_exact_resumes(
      [&](const std::string& run) {
        const std::string cache = dir.path() + "/cache_" + run + std::to_string(runs++);
        return std::make_shared<StreamingDataset>(options().remote("file://" + dir.path()).local(cache).prefetch(2));
      },
      dir.path() + "/remote", {3, 7, 16}, 21);
}

TEST(StreamingTrainer, CheckpointedRunOverMixedStreamsResumesExactly) {
  TempDir dir("streaming_mix_trainer");
  write_labels(dir.path() + "/a", 0, 40, 200, 3);
  write_labels(dir.path() + "/b", 0, 21, 120, 3);
  // 30 of a (a different 30 each epoch), b's 21 and 9 of them again: 60 samples, 8 batches (the last of 4) per epoch.
  expect_exact_resumes(
      [&](const std::string&) {
        return std::make_shared<StreamingDataset>(
            StreamingOptions().streams({data::StreamOptions().local(dir.path() + "/a").repeat(0.75),
                                        data::StreamOptions().local(dir.path() + "/b").choose(30)}));
      },
      dir.path(), {3, 8, 13}, 24);
  // Stratified: 4 + 4 rows a batch, 7 batches per epoch; per stream (a's part in runs of 3): 3 batches of each, 6
  // per epoch.
  for (const auto& [method, batches] : {std::pair<std::string, int64_t>{"stratified", 21}, {"per_stream", 18}}) {
    SCOPED_TRACE(method);
    expect_exact_resumes(
        [&, method = method](const std::string&) {
          return std::make_shared<StreamingDataset>(
              StreamingOptions()
                  .streams({data::StreamOptions().local(dir.path() + "/a").repeat(0.75),
                            data::StreamOptions().local(dir.path() + "/b").choose(30)})
                  .batching_method(method)
                  .sampling_granularity(method == "per_stream" ? 3 : 1));
        },
        dir.path() + "/" + method, {3, 8, 13}, batches);
  }
  // A stream that would never be read (5 samples, batches of 8) is refused before the first batch.
  EXPECT_THAT(testing::input_error_of([&] {
                tiny_trainer(std::make_shared<StreamingDataset>(
                                 StreamingOptions()
                                     .streams({data::StreamOptions().local(dir.path() + "/a"),
                                               data::StreamOptions().local(dir.path() + "/b").choose(5)})
                                     .batching_method("per_stream")),
                             {})
                    ->fit();
              }),
              HasSubstr("streaming.streams[1] gives 5 samples per epoch, fewer than one batch"));
}


// ------------------------------------------------------------------------------------------------ Token sequences

/// Writes samples of token ids (`encoding` "ndarray:uint16" or "bytes") into `dir`.
void write_tokens(const std::string& dir, const std::string& encoding, const std::vector<std::vector<int64_t>>& samples,
                  int64_t size_limit = 1 << 20) {
  mds::Writer w(dir, mds::WriterOptions().columns({{"tokens", encoding}, {"id", "int"}}).size_limit(size_limit));
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto& t = samples[i];
    if (encoding == "bytes") w.write({{"tokens", std::string(t.begin(), t.end())}, {"id", static_cast<int64_t>(i)}});
    else w.write({{"tokens", at::tensor(t, at::kLong).to(at::kInt)}, {"id", static_cast<int64_t>(i)}});
  }
  w.finish();
}

TEST(StreamingTokens, EachSampleIsANextTokenExamplePaddedOrCut) {
  TempDir dir("streaming_tokens");
  // 3 tokens (padded), 9 (exactly S + 1), 12 (cut); ids up to 999.
  const std::vector<std::vector<int64_t>> samples = {{5, 6, 7}, {1, 2, 3, 4, 5, 6, 7, 8, 9},
                                                     {999, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}};
  write_tokens(dir.path() + "/ids", "ndarray:uint16", samples);
  const StreamingDataset ds(StreamingOptions().local(dir.path() + "/ids").input("tokens").seq_length(8));
  EXPECT_EQ(ds.num_classes(), 1000);  // the largest id + 1: the model's vocabulary
  EXPECT_EQ(ds.tokens_per_example(), 8);
  EXPECT_EQ(ds.input_shape(), std::vector<int64_t>{8});
  const Batch b = ds.get_batch({0, 1, 2});
  EXPECT_EQ(b.input().scalar_type(), at::kLong);
  const int64_t x = kIgnoreTarget;
  const auto longs = [](std::vector<int64_t> v) { return at::tensor(v, at::kLong).view({-1, 8}); };
  EXPECT_TRUE(at::equal(b.input(), longs({5, 6, 7, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 999, 10, 11, 12, 13, 14, 15, 16})));
  EXPECT_TRUE(at::equal(b.target(), longs({6, 7, x, x, x, x, x, x, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17})));
  // Bytes (a str or bytes column, as text is stored) are tokens 0..255: the vocabulary is 256 without a pass.
  write_tokens(dir.path() + "/bytes", "bytes", {{104, 105, 33}});
  const StreamingDataset text(StreamingOptions().local(dir.path() + "/bytes").input("tokens").seq_length(2).num_classes(0));
  EXPECT_EQ(text.num_classes(), 256);
  EXPECT_TRUE(at::equal(text.get_batch({0}).input(), at::tensor(std::vector<int64_t>{104, 105}, at::kLong).view({1, 2})));
  EXPECT_TRUE(at::equal(text.get_batch({0}).target(), at::tensor(std::vector<int64_t>{105, 33}, at::kLong).view({1, 2})));
  // A column of other things is refused, naming it and saying what token ids are.
  EXPECT_THAT(testing::input_error_of([&] {
                StreamingDataset(StreamingOptions().local(dir.path() + "/ids").input("id").seq_length(8));
              }),
              HasSubstr("streaming.input: column \"id\" of " + dir.path() + "/ids is \"int\"; with seq_length, the "
                        "input holds token ids: an integer ndarray"));
  // Ids packed in bytes (numpy's tobytes(), as llm-foundry's older converters wrote int64 ids): token_dtype.
  {
    mds::Writer w(dir.path() + "/packed", mds::WriterOptions().columns({{"tokens", "bytes"}}));
    const std::vector<int64_t> ids = {70000, 1, 2, 3, 4};
    w.write({{"tokens", std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * 8)}});
    w.finish();
    mds::Writer bad(dir.path() + "/packed_bad", mds::WriterOptions().columns({{"tokens", "bytes"}}));
    bad.write({{"tokens", std::string("abc")}});  // 3 bytes: not a whole int64
    bad.finish();
  }
  const StreamingDataset packed(
      StreamingOptions().local(dir.path() + "/packed").input("tokens").seq_length(4).token_dtype("int64"));
  EXPECT_EQ(packed.num_classes(), 70001);
  EXPECT_TRUE(at::equal(packed.get_batch({0}).input(), longs({70000, 1, 2, 3, 0, 0, 0, 0}).view({1, 8}).narrow(1, 0, 4)));
  EXPECT_TRUE(at::equal(packed.get_batch({0}).target(), longs({1, 2, 3, 4, 0, 0, 0, 0}).view({1, 8}).narrow(1, 0, 4)));
  const StreamingDataset packed_bad(StreamingOptions().local(dir.path() + "/packed_bad").input("tokens").seq_length(4)
                                        .token_dtype("int64").num_classes(10));
  EXPECT_THAT(testing::input_error_of([&] { packed_bad.get_batch({0}); }),
              HasSubstr("holds 3 bytes in column \"tokens\", not a whole number of int64 ids (8 bytes each)"));
  EXPECT_THAT(testing::input_error_of([&] {
                StreamingDataset(StreamingOptions().local(dir.path() + "/ids").input("tokens").seq_length(8)
                                     .token_dtype("uint16"));
              }),
              HasSubstr("streaming.token_dtype: \"uint16\" reads ids packed in a bytes column; column \"tokens\""));
  {  // an ndarray column of no fixed dtype may hold floats: refused when read, not truncated to ids
    mds::Writer w(dir.path() + "/floats", mds::WriterOptions().columns({{"tokens", "ndarray"}}));
    w.write({{"tokens", at::full({4}, 2.5, at::kFloat)}});
    w.finish();
  }
  const StreamingDataset floats(
      StreamingOptions().local(dir.path() + "/floats").input("tokens").seq_length(2).num_classes(10));
  EXPECT_THAT(testing::input_error_of([&] { floats.get_batch({0}); }),
              HasSubstr("holds Float values in column \"tokens\"; token ids must be integers"));
}

/// A GPT recipe over `dataset` (a recipe entry) in batches of 8 sequences of 16 tokens, unshuffled or shuffled.
std::string gpt_recipe(const std::string& dataset, bool shuffle, const std::string& algorithms = "") {
  return "max_duration: 1ep\nseed: 3\nthreads: 1\nmodel: {gpt: {d_model: 16, n_layers: 1, n_heads: 2}}\n"
         "data:\n  train:\n    dataset: " + dataset + "\n    loader: {batch_size: 8, shuffle: " +
         (shuffle ? "true" : "false") + "}\noptimizer: {adamw: {lr: 0.01}}\nalgorithms: [" + algorithms +
         "]\ncallbacks: []\nloggers: []\n";
}

TEST(StreamingTokens, AGptTrainsOnMdsTextBitwiseAsOnTheTextFile) {
  TempDir dir("streaming_gpt");
  const std::string file = dir.path() + "/text.txt";
  {
    std::ofstream out(file);
    for (int i = 0; out.tellp() < 3000; ++i) out << "the quick brown fox " << (i % 7 == 0 ? "jumps\n" : "runs ");
  }
  // The text dataset's examples, written as MDS samples of S + 1 bytes: example i's input and its last target byte.
  const auto text = data::load_text(data::TextOptions().path(file).seq_length(16));
  std::vector<int64_t> all(static_cast<size_t>(text->size()));
  std::iota(all.begin(), all.end(), 0);
  const Batch examples = text->get_batch(all);
  std::vector<std::vector<int64_t>> samples;
  for (int64_t i = 0; i < text->size(); ++i) {
    const at::Tensor row = at::cat({examples.input()[i], examples.target()[i].narrow(0, 15, 1)});
    samples.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + 17);
  }
  write_tokens(dir.path() + "/mds", "bytes", samples, 400);  // a few shards
  auto on_text = make_trainer(Recipe::parse(gpt_recipe("{text: {path: " + file + ", seq_length: 16}}", false)));
  auto on_mds = make_trainer(Recipe::parse(
      gpt_recipe("{streaming: {local: " + dir.path() + "/mds, input: tokens, seq_length: 16}}", false)));
  EXPECT_EQ(on_mds->state().time.tokens_per_sample, 16);
  on_text->fit();
  on_mds->fit();
  EXPECT_GT(on_mds->state().timestamp.batch, 15);
  EXPECT_EQ(on_mds->state().timestamp.token, on_text->state().timestamp.token);
  EXPECT_EQ(weights_fingerprint(*on_mds->state().model), weights_fingerprint(*on_text->state().model));
}

TEST(StreamingTokens, AShuffledRunWithSequenceAlgorithmsResumesExactly) {
  TempDir dir("streaming_gpt_resume");
  std::vector<std::vector<int64_t>> samples;
  for (int64_t i = 0; i < 60; ++i) {  // 60 samples of 10 to 24 token ids below 300
    std::vector<int64_t> t;
    for (int64_t j = 0; j < 10 + i % 15; ++j) t.push_back((i * 37 + j * 11) % 300);
    samples.push_back(t);
  }
  write_tokens(dir.path() + "/mds", "ndarray:uint16", samples, 300);
  const std::string recipe = gpt_recipe(
      "{streaming: {local: " + dir.path() + "/mds, input: tokens, seq_length: 16, num_classes: 300, "
      "shuffle_block_size: 16}}", true,
      "{seq_length_warmup: {min_seq_length: 4, step_size: 4, duration: 0.5}}, {alibi: {}}, {label_smoothing: {}}");
  auto full = make_trainer(Recipe::parse(recipe));
  full->fit();
  ASSERT_EQ(full->state().timestamp.batch, 8);  // 60 samples in batches of 8
  for (int64_t k : {3, 6}) {
    SCOPED_TRACE("stopped after batch " + std::to_string(k));
    const std::string folder = dir.path() + "/ckpt" + std::to_string(k);
    const Recipe with_checkpoints = Recipe::parse(recipe + "checkpoint: {folder: " + folder + ", autoresume: true}\n");
    {
      tessera::Run run = build_run(with_checkpoints);
      run.components.callbacks.push_back(std::make_shared<StopAfterBatch>(k));
      Trainer first(run.trainer, std::move(run.components), run.checkpoint, with_checkpoints.text());
      first.fit();
      ASSERT_EQ(first.state().timestamp.batch, k);
    }
    auto resumed = make_trainer(with_checkpoints);
    EXPECT_FALSE(resumed->loaded_checkpoint().empty());
    resumed->fit();
    EXPECT_EQ(resumed->state().timestamp.batch, 8);
    EXPECT_EQ(weights_fingerprint(*resumed->state().model), weights_fingerprint(*full->state().model));
  }
}

}  // namespace
}  // namespace tessera
