// Data-parallel ranks that decode only their rows (BatchSource::share_rows, DataLoader, dist::ShardedSource):
// the rows each rank keeps are bitwise those of whole batches, each rank's dataset is asked only for its rows'
// samples while every transform is per-example (whole batches otherwise), and from a StreamingDataset with a
// remote each rank fetches only the shards of its partitions.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>
#include <set>

#include <ATen/ATen.h>
#include <tessera/data/dataloader.h>
#include <tessera/data/mds.h>
#include <tessera/data/streaming.h>
#include <tessera/distributed/sharded_source.h>

#include <tessera/algorithms/augmix.h>
#include <tessera/algorithms/randaugment.h>

#include "core/mds_support.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

/// A dataset that records the sample ids it is asked for.
class Recording : public data::Dataset {
 public:
  explicit Recording(std::shared_ptr<const data::Dataset> inner) : inner_(std::move(inner)) {}
  int64_t size() const override { return inner_->size(); }
  Batch get_batch(const std::vector<int64_t>& indices) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    asked_.insert(indices.begin(), indices.end());
    return inner_->get_batch(indices);
  }
  int64_t num_classes() const override { return inner_->num_classes(); }
  std::vector<int64_t> input_shape() const override { return inner_->input_shape(); }
  std::string describe() const override { return "recording(" + inner_->describe() + ")"; }
  std::set<int64_t> asked() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return asked_;
  }

 private:
  std::shared_ptr<const data::Dataset> inner_;
  mutable std::mutex mutex_;
  mutable std::set<int64_t> asked_;
};

/// Mixes each example with the next one: not per-example.
class MixNeighbours : public data::BatchTransform {
 public:
  void apply(Batch& batch, Rng&) const override { batch.input() = batch.input() + batch.input().roll(1, 0); }
  std::string name() const override { return "mix_neighbours"; }
};

using Transforms = std::vector<std::shared_ptr<const data::BatchTransform>>;

Transforms augmentations() {
  return {std::make_shared<data::RandomCrop>(data::RandomCropOptions().padding(2)),
          std::make_shared<data::HorizontalFlip>(data::HorizontalFlipOptions()),
          std::make_shared<data::Normalize>(data::NormalizeOptions().mean({0.5}).std({0.25}))};
}

std::vector<Batch> epoch(data::BatchSource& source, uint64_t seed, int64_t e) {
  source.start_epoch(seed, e);
  std::vector<Batch> out;
  while (auto b = source.next()) out.push_back(*b);
  return out;
}

void expect_rows_of_whole_batches(const Transforms& transforms, bool rows_only) {
  const auto data = data::make_synthetic(data::SyntheticOptions().size(37).input_shape({1, 8, 8}).num_classes(5));
  data::DataLoader whole(data, data::DataLoaderOptions().batch_size(8).workers(0), transforms);
  const std::vector<Batch> reference = epoch(whole, 3, 1);
  ASSERT_EQ(reference.size(), 5u);  // 4 of 8, then 5
  for (int world : {2, 3}) {
    for (int64_t workers : {0, 2}) {
      for (int rank = 0; rank < world; ++rank) {
        SCOPED_TRACE("rank " + std::to_string(rank) + " of " + std::to_string(world) + ", " + std::to_string(workers) +
                     " workers");
        auto recording = std::make_shared<Recording>(data);
        auto loader = std::make_shared<data::DataLoader>(
            recording, data::DataLoaderOptions().batch_size(8).workers(workers), transforms);
        dist::ShardedSource share(loader, rank, world);
        const std::vector<Batch> mine = epoch(share, 3, 1);
        ASSERT_EQ(mine.size(), reference.size());
        std::set<int64_t> needed;
        for (size_t b = 0; b < mine.size(); ++b) {
          const int64_t n = reference[b].size(), first = n * rank / world, last = n * (rank + 1) / world;
          EXPECT_TRUE(at::equal(mine[b].input(), reference[b].input().narrow(0, first, last - first))) << "batch " << b;
          EXPECT_TRUE(at::equal(mine[b].target(), reference[b].target().narrow(0, first, last - first)));
          const auto ids = whole.batch_indices(3, 1, static_cast<int64_t>(b));
          needed.insert(ids.begin() + first, ids.begin() + last);
        }
        if (rows_only) {
          EXPECT_EQ(recording->asked(), needed) << "the dataset is asked for this rank's rows only";
        } else {
          EXPECT_EQ(recording->asked().size(), 37u) << "whole batches";
        }
      }
    }
  }
}

TEST(ShareRows, EachRankDecodesOnlyItsRowsAndKeepsTheRowsOfWholeBatchesBitwise) {
  expect_rows_of_whole_batches(augmentations(), /*rows_only=*/true);
}

TEST(ShareRows, ATransformThatMixesExamplesMakesTheLoaderDecodeWholeBatches) {
  Transforms t = augmentations();
  t.insert(t.begin() + 1, std::make_shared<MixNeighbours>());
  expect_rows_of_whole_batches(t, /*rows_only=*/false);
}

TEST(ShareRows, RandAugmentAndAugMixInThePipelineKeepRowsOnlyDecoding) {
  const auto data = testing::unit_interval(
      *data::make_synthetic(data::SyntheticOptions().size(24).input_shape({3, 8, 8}).num_classes(5)));
  for (const std::shared_ptr<const data::BatchTransform>& t :
       {std::shared_ptr<const data::BatchTransform>(std::make_shared<algorithms::RandAugmentTransform>()),
        std::shared_ptr<const data::BatchTransform>(std::make_shared<algorithms::AugMixTransform>())}) {
    SCOPED_TRACE(t->name());
    data::DataLoader whole(data, data::DataLoaderOptions().batch_size(12).workers(0), augmentations());
    whole.set_algorithm_transforms({t});
    const std::vector<Batch> reference = epoch(whole, 2, 0);
    auto recording = std::make_shared<Recording>(data);
    auto loader = std::make_shared<data::DataLoader>(recording, data::DataLoaderOptions().batch_size(12).workers(0),
                                                     augmentations());
    dist::ShardedSource share(loader, 1, 3);
    loader->set_algorithm_transforms({t});
    const std::vector<Batch> mine = epoch(share, 2, 0);
    ASSERT_EQ(mine.size(), 2u);
    for (size_t b = 0; b < 2; ++b)
      EXPECT_TRUE(at::equal(mine[b].input(), reference[b].input().narrow(0, 4, 4))) << "batch " << b;
    EXPECT_EQ(recording->asked().size(), 8u) << "rows 4..7 of each of the 2 batches";
  }
}

TEST(ShareRows, AlgorithmTransformsThatAreNotPerExampleAlsoMeanWholeBatches) {
  const auto data = data::make_synthetic(data::SyntheticOptions().size(20).input_shape({1, 8, 8}).num_classes(5));
  auto recording = std::make_shared<Recording>(data);
  auto loader = std::make_shared<data::DataLoader>(recording, data::DataLoaderOptions().batch_size(10).workers(0));
  dist::ShardedSource share(loader, 1, 2);
  loader->set_algorithm_transforms({std::make_shared<MixNeighbours>()});
  epoch(share, 1, 0);
  EXPECT_EQ(recording->asked().size(), 20u);
}

TEST(ShareRows, FromARemoteEachRankFetchesOnlyItsPartitionsShards) {
  TempDir dir("share_rows_remote");
  {
    data::mds::Writer writer(dir.path() + "/data", data::mds::WriterOptions()
                                                       .columns({{"image", "ndarray:uint8:4,4"}, {"label", "int"}})
                                                       .size_limit(400));
    for (int64_t i = 0; i < 240; ++i)
      writer.write({{"image", at::full({4, 4}, i % 256, at::kByte)}, {"label", i % 3}});
    writer.finish();
  }
  const auto fetched = [&](int rank, int world) {
    const std::string cache = dir.path() + "/cache" + std::to_string(rank) + "of" + std::to_string(world);
    auto ds = std::make_shared<data::StreamingDataset>(
        data::StreamingOptions().remote("file://" + dir.path() + "/data").local(cache).num_classes(3).order(
            data::StreamingOrderOptions().partitions(2).shuffle_block_size(16)));
    auto loader = std::make_shared<data::DataLoader>(ds, data::DataLoaderOptions().batch_size(16).workers(1));
    dist::ShardedSource share(loader, rank, world);
    epoch(share, 4, 0);
    epoch(share, 4, 1);
    int64_t files = 0;
    for (const auto& e : fs::directory_iterator(cache)) files += e.path().extension() == ".mds";
    int64_t shards = 0;  // that hold samples
    for (int64_t k = 0; k < ds->reader().num_shards(); ++k)
      shards += ds->reader().shard_offsets()[k + 1] > ds->reader().shard_offsets()[k];
    return std::make_pair(files, shards);
  };
  const auto [all, shards] = fetched(0, 1);
  ASSERT_GT(shards, 16);
  EXPECT_EQ(all, shards);
  for (int rank : {0, 1}) {
    const int64_t mine = fetched(rank, 2).first;
    EXPECT_LE(mine, shards / 2 + 2) << "rank " << rank << " fetched " << mine << " of " << shards << " shards";
    EXPECT_GE(mine, shards / 2 - 2);
  }
}

}  // namespace
}  // namespace tessera
