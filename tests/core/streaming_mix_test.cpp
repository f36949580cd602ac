// Several MDS folders mixed into one streaming dataset (StreamingOptions::streams, docs/streaming.md "Mixing
// streams"): each stream's share of every epoch (repeat, choose, proportion), a different part of a downsampled
// stream each epoch, the same global order for any number of ranks and workers, resume at any batch, a stream
// fetched from a remote, and errors that name the stream (and its recipe line). A Trainer run over mixed streams
// resumes exactly: streaming_test.cpp, StreamingTrainer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>

#include <ATen/ATen.h>
#include <tessera/data/mds.h>
#include <tessera/data/streaming.h>
#include <tessera/distributed/sharded_source.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>

#include "core/mds_support.h"
#include "support.h"

namespace tessera {
namespace {

namespace mds = data::mds;
using data::StreamingDataset;
using data::StreamingOptions;
using data::StreamOptions;
using ::testing::HasSubstr;
using test::batches_of;
using test::TempDir;
using test::write_labels;

std::vector<int64_t> flat(const std::vector<std::vector<int64_t>>& batches) {
  std::vector<int64_t> out;
  for (const auto& b : batches) out.insert(out.end(), b.begin(), b.end());
  return out;
}

/// Batches of 16.
std::shared_ptr<data::DataLoader> loader(std::shared_ptr<StreamingDataset> ds, int64_t workers) {
  return std::make_shared<data::DataLoader>(std::move(ds), data::DataLoaderOptions().batch_size(16).workers(workers));
}

/// Stream A: labels 0..49; stream B: labels 1000..1029 (shards of one sample each).
class StreamingMix : public ::testing::Test {
 protected:
  void SetUp() override {
    write_labels(dir_.path() + "/a", 0, 50, 200);
    write_labels(dir_.path() + "/b", 1000, 30, 120);
  }
  StreamOptions a() const { return StreamOptions().local(dir_.path() + "/a"); }
  StreamOptions b() const { return StreamOptions().local(dir_.path() + "/b"); }
  std::shared_ptr<StreamingDataset> make(std::vector<StreamOptions> streams, int64_t epoch_size = 0,
                                         const std::string& batching = "random", bool shuffle = true) const {
    return std::make_shared<StreamingDataset>(
        StreamingOptions().streams(std::move(streams)).epoch_size(epoch_size).batching_method(batching).order(
            data::StreamingOrderOptions().partitions(3).shuffle_block_size(16).shuffle(shuffle)));
  }
  TempDir dir_{"streaming_mix"};
};

std::map<int64_t, int> counts(const std::vector<int64_t>& labels) {
  std::map<int64_t, int> out;
  for (int64_t l : labels) ++out[l];
  return out;
}

TEST_F(StreamingMix, RepeatAndChooseGiveEachStreamItsShareAndADifferentPartEachEpoch) {
  // A twice over; B 45 times from its 30: all of it once, plus 15 drawn afresh each epoch.
  const auto ds = make({a().repeat(2), b().choose(45)});
  EXPECT_EQ(ds->num_streams(), 2);
  EXPECT_EQ(ds->size(), 145);
  EXPECT_EQ(ds->stream_samples(0), 100);
  EXPECT_EQ(ds->stream_samples(1), 45);
  EXPECT_EQ(ds->num_classes(), 1030);
  EXPECT_THAT(ds->describe(), HasSubstr("2 streams"));
  EXPECT_THAT(ds->describe(), HasSubstr("145 samples per epoch"));
  std::set<std::set<int64_t>> extras;  // B's twice-read labels, per epoch
  for (int64_t epoch = 0; epoch < 4; ++epoch) {
    const std::vector<int64_t> labels = flat(batches_of(*loader(ds, 0), 3, epoch));
    ASSERT_EQ(labels.size(), 145u);
    const auto c = counts(labels);
    std::set<int64_t> twice;
    for (int64_t l = 0; l < 50; ++l) EXPECT_EQ(c.at(l), 2) << "A's sample " << l;
    for (int64_t l = 1000; l < 1030; ++l) {
      ASSERT_TRUE(c.count(l)) << "B's sample " << l << " is read at least once";
      EXPECT_LE(c.at(l), 2);
      if (c.at(l) == 2) twice.insert(l);
    }
    EXPECT_EQ(twice.size(), 15u);
    extras.insert(twice);
    // The epoch is shuffled across the streams: A's and B's samples are not in two runs.
    const auto first_b = std::find_if(labels.begin(), labels.end(), [](int64_t l) { return l >= 1000; });
    EXPECT_LT(first_b - labels.begin(), 100);
  }
  EXPECT_GT(extras.size(), 1u) << "the part of B drawn beyond its whole copy changes with the epoch";
  // A pure function of (seed, epoch): another dataset gives the same epochs, another seed others.
  const auto again = make({a().repeat(2), b().choose(45)});
  EXPECT_EQ(batches_of(*loader(again, 2), 3, 1), batches_of(*loader(ds, 0), 3, 1));
  EXPECT_NE(batches_of(*loader(again, 0), 4, 1), batches_of(*loader(ds, 0), 3, 1));
}

TEST_F(StreamingMix, ADownsampledStreamGivesEachSampleAtMostOncePerEpoch) {
  const auto ds = make({a().repeat(0.5), b()});  // 25 of A's 50, a different 25 each epoch; all of B
  EXPECT_EQ(ds->size(), 55);
  std::set<std::set<int64_t>> parts;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto c = counts(flat(batches_of(*loader(ds, 0), 9, epoch)));
    std::set<int64_t> of_a;
    for (const auto& [label, n] : c) {
      EXPECT_EQ(n, 1) << "label " << label;
      if (label < 1000) of_a.insert(label);
    }
    EXPECT_EQ(of_a.size(), 25u);
    EXPECT_EQ(c.size(), 55u);
    parts.insert(of_a);
  }
  EXPECT_EQ(parts.size(), 3u);
}

TEST_F(StreamingMix, ProportionsSplitTheEpochSize) {
  const auto ds = make({a().proportion(3), b().proportion(1)}, 80);  // 60 of A (50 + 10), 20 of B
  EXPECT_EQ(ds->size(), 80);
  EXPECT_EQ(ds->stream_samples(0), 60);
  EXPECT_EQ(ds->stream_samples(1), 20);
  const auto c = counts(flat(batches_of(*loader(ds, 0), 1, 0)));
  int from_a = 0, from_b = 0;
  for (const auto& [label, n] : c) (label < 1000 ? from_a : from_b) += n;
  EXPECT_EQ(from_a, 60);
  EXPECT_EQ(from_b, 20);
  // Without epoch_size the epoch is the streams' total (80); rounding leftovers go to the largest remainders.
  const auto thirds = make({a().proportion(1), b().proportion(2)});
  EXPECT_EQ(thirds->stream_samples(0), 27);  // 26.67
  EXPECT_EQ(thirds->stream_samples(1), 53);  // 53.33
  EXPECT_EQ(thirds->size(), 80);
}

TEST_F(StreamingMix, StreamsWithoutSharesAreTheirSamplesEachOnce) {
  const auto ds = make({a(), b()});
  EXPECT_EQ(ds->size(), 80);
  const std::vector<int64_t> labels = flat(batches_of(*loader(ds, 0), 5, 2));
  const auto ids = ds->order().range(5, 2, 16, 0, 80);  // ids number A's samples, then B's
  ASSERT_EQ(labels.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(labels[i], ids[i] < 50 ? ids[i] : ids[i] - 50 + 1000);
  EXPECT_EQ(counts(labels).size(), 80u);
  // With shares the order of positions is per epoch: order() says so.
  EXPECT_THROW(make({a().repeat(2), b()})->order(), Error);
}

/// The ranks' shares of `make()`'s epoch 1 in batches of 16 (1, 2 and 4 ranks, 0 or 2 loader workers) joined
/// batch by batch are its global batches, and a loader resumed at any batch gives the rest of them.
void expect_ranks_workers_and_resume_see_the_global_order(
    const std::function<std::shared_ptr<StreamingDataset>()>& make, size_t batches) {
  const auto ds = make();
  const auto global = batches_of(*loader(ds, 0), 21, 1);
  ASSERT_EQ(global.size(), batches);
  for (int world : {1, 2, 4}) {
    for (int64_t workers : {0, 2}) {
      SCOPED_TRACE(std::to_string(world) + " ranks, " + std::to_string(workers) + " workers");
      std::vector<std::vector<std::vector<int64_t>>> per_rank;
      for (int r = 0; r < world; ++r) {
        dist::ShardedSource share(loader(ds, workers), r, world);
        per_rank.push_back(batches_of(share, 21, 1));
      }
      for (size_t b = 0; b < global.size(); ++b) {
        std::vector<int64_t> joined;
        for (const auto& rank : per_rank) joined.insert(joined.end(), rank[b].begin(), rank[b].end());
        EXPECT_EQ(joined, global[b]) << "batch " << b;
      }
    }
  }
  for (size_t k = 0; k <= batches; ++k) {
    const auto tail = batches_of(*loader(make(), 2), 21, 1, static_cast<int64_t>(k));
    EXPECT_EQ(tail, std::vector<std::vector<int64_t>>(global.begin() + static_cast<std::ptrdiff_t>(k), global.end()))
        << "from batch " << k;
  }
}

TEST_F(StreamingMix, RanksWorkersAndResumeSeeTheGlobalOrder) {
  // 75 + 10 = 85: 5 full batches and one of 5.
  expect_ranks_workers_and_resume_see_the_global_order([&] { return make({a().repeat(1.5), b().choose(10)}); }, 6);
}

/// Rows of stream A (labels below 1000) in `labels`.
int64_t of_a(const std::vector<int64_t>& labels) {
  return std::count_if(labels.begin(), labels.end(), [](int64_t l) { return l < 1000; });
}

TEST_F(StreamingMix, StratifiedBatchesHoldEachStreamsShareOfEveryBatch) {
  // A's 50 and B's 30 in batches of 16: 10 of A and 6 of B in each of 5 batches.
  const auto ds = make({a(), b()}, 0, "stratified");
  EXPECT_EQ(ds->size(), 80);
  EXPECT_EQ(ds->epoch_positions(16), 80);
  EXPECT_THAT(ds->describe(), HasSubstr("stratified batches"));
  std::set<std::vector<std::vector<int64_t>>> epochs;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto batches = batches_of(*loader(ds, 0), 3, epoch);
    ASSERT_EQ(batches.size(), 5u);
    for (const auto& batch : batches) {
      ASSERT_EQ(batch.size(), 16u);
      EXPECT_EQ(of_a(batch), 10);
      for (int half = 0; half < 2; ++half) {  // two ranks' rows: each holds rows of both streams
        const int64_t n = of_a(std::vector<int64_t>(batch.begin() + 8 * half, batch.begin() + 8 * (half + 1)));
        EXPECT_GT(n, 0);
        EXPECT_LT(n, 8);
      }
    }
    EXPECT_EQ(counts(flat(batches)).size(), 80u) << "each sample once";
    epochs.insert(batches);
  }
  EXPECT_EQ(epochs.size(), 3u) << "shuffled afresh each epoch";
  // Batches of 10 (6.25 and 3.75 of a batch): 6 of A and 4 of B (the larger remainder); B's 30 fill 7 of them.
  const auto tens = std::make_shared<data::DataLoader>(ds, data::DataLoaderOptions().batch_size(10));
  EXPECT_EQ(tens->num_batches(), 7);
  EXPECT_EQ(tens->num_samples(), 70);
  for (const auto& batch : batches_of(*tens, 3, 0)) EXPECT_EQ(of_a(batch), 6);
  // Unshuffled: each stream's samples in order, laid partition by partition (3): A's 10 rows as 4, 3, 3 and B's
  // 6 as 2, 2, 2.
  const auto in_order = batches_of(*loader(make({a(), b()}, 0, "stratified", false), 0), 3, 0);
  EXPECT_EQ(in_order[1],
            (std::vector<int64_t>{10, 11, 12, 13, 1006, 1007, 14, 15, 16, 1008, 1009, 17, 18, 19, 1010, 1011}));
  // 75 + 10 samples: 14 + 2 rows a batch, 5 batches.
  expect_ranks_workers_and_resume_see_the_global_order(
      [&] { return make({a().repeat(1.5), b().choose(10)}, 0, "stratified"); }, 5);
}

TEST_F(StreamingMix, UnderStratifiedBatchingEachStreamShufflesInBlocksScaledByItsShare) {
  // C: 320 samples, D: 80, both in shards of 7 (the last one shorter); shuffle blocks of 80 samples of the epoch,
  // batches of 20 (16 rows of C, 4 of D). Each stream's own order shuffles within blocks of its share of that, 64
  // of C and 16 of D, so that a block of either spans the same 4 batches, and the small stream keeps few of its 12
  // shards in use at a time: each 16 of D read come from at most 4 shards, where an unscaled block would be all of
  // D (16 samples drawn from the whole stream).
  write_labels(dir_.path() + "/c", 0, 320, 400);
  write_labels(dir_.path() + "/d", 2000, 80, 400);
  const auto ds = std::make_shared<StreamingDataset>(
      StreamingOptions()
          .streams({StreamOptions().local(dir_.path() + "/c"), StreamOptions().local(dir_.path() + "/d")})
          .batching_method("stratified")
          .order(data::StreamingOrderOptions().partitions(1).shuffle_block_size(80)));
  ASSERT_EQ(ds->reader(1).num_shards(), 12);
  const auto loader20 = std::make_shared<data::DataLoader>(ds, data::DataLoaderOptions().batch_size(20));
  struct Stream {
    std::vector<int64_t> offsets;  // its shards' first samples, then its size
    int64_t first_label, block;
    std::vector<int64_t> read;  // its samples (ids within it), in the order the epoch reads them
  };
  std::vector<Stream> streams{{ds->reader(0).shard_offsets(), 0, 64, {}},
                              {ds->reader(1).shard_offsets(), 2000, 16, {}}};
  for (uint64_t seed : {3, 4}) {
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      for (Stream& s : streams) s.read.clear();
      const auto batches = batches_of(*loader20, seed, epoch);
      ASSERT_EQ(batches.size(), 20u);
      for (const auto& batch : batches)
        for (int64_t label : batch) {
          Stream& s = streams[label >= 2000];
          s.read.push_back(label - s.first_label);
        }
      for (const Stream& s : streams) {
        SCOPED_TRACE("seed " + std::to_string(seed) + ", epoch " + std::to_string(epoch) + ", blocks of " +
                     std::to_string(s.block));
        ASSERT_EQ(static_cast<int64_t>(s.read.size()), s.offsets.back());
        int64_t in_order = 0;
        for (size_t m = 0; m < s.read.size(); m += static_cast<size_t>(s.block)) {
          const std::vector<int64_t> block(s.read.begin() + static_cast<int64_t>(m),
                                           s.read.begin() + static_cast<int64_t>(m) + s.block);
          std::set<int64_t> shards;
          for (int64_t id : block)
            shards.insert(std::upper_bound(s.offsets.begin(), s.offsets.end(), id) - s.offsets.begin() - 1);
          EXPECT_LE(static_cast<int64_t>(shards.size()), (s.block + 6) / 7 + 1) << "block " << m / s.block;
          in_order += std::is_sorted(block.begin(), block.end());
        }
        EXPECT_EQ(in_order, 0) << "each block is shuffled";
      }
    }
  }
}

TEST_F(StreamingMix, PerStreamBatchesEachComeFromOneStream) {
  // A's 50 fill 3 batches of 16 (2 of its samples are not read), B's 30 one: 4 batches.
  const auto ds = make({a(), b()}, 0, "per_stream");
  EXPECT_EQ(ds->epoch_positions(16), 64);
  EXPECT_EQ(loader(ds, 0)->num_batches(), 4);
  std::set<size_t> where_b;  // which batch of the epoch is B's
  std::set<std::set<int64_t>> read_of_a;
  for (int64_t epoch = 0; epoch < 6; ++epoch) {
    const auto batches = batches_of(*loader(ds, 0), 3, epoch);
    ASSERT_EQ(batches.size(), 4u);
    for (size_t i = 0; i < batches.size(); ++i) {
      const int64_t n = of_a(batches[i]);
      EXPECT_TRUE(n == 0 || n == 16) << "batch " << i << " mixes the streams";
      if (n == 0) where_b.insert(i);
    }
    const auto c = counts(flat(batches));
    EXPECT_EQ(c.size(), 64u) << "each sample at most once";
    EXPECT_EQ(of_a(flat(batches)), 48);
    std::set<int64_t> a_read;
    for (const auto& [label, n] : c)
      if (label < 1000) a_read.insert(label);
    read_of_a.insert(a_read);
  }
  EXPECT_GT(where_b.size(), 1u) << "the streams' batches are shuffled together, afresh each epoch";
  EXPECT_GT(read_of_a.size(), 1u) << "the samples short of a batch differ between epochs";
  // Unshuffled: A's batches in order, then B's.
  const auto in_order = batches_of(*loader(make({a(), b()}, 0, "per_stream", false), 0), 3, 0);
  ASSERT_EQ(in_order.size(), 4u);
  EXPECT_EQ(in_order[0].front(), 0);
  EXPECT_EQ(in_order[2].back(), 47);
  EXPECT_EQ(in_order[3].front(), 1000);
  EXPECT_EQ(in_order[3].back(), 1015);
  // A's 75 fill 4 batches, B's 32 two.
  expect_ranks_workers_and_resume_see_the_global_order(
      [&] { return make({a().repeat(1.5), b().choose(32)}, 0, "per_stream"); }, 6);
}

TEST_F(StreamingMix, ShardsTouchedCountsEachRanksShardsOfTheOrderTheLoaderReads) {
  // One folder: what shards_touched counts over its order.
  const auto one = std::make_shared<StreamingDataset>(
      StreamingOptions().local(dir_.path() + "/a").order(
          data::StreamingOrderOptions().partitions(3).shuffle_block_size(16)));
  for (int world : {1, 2, 4}) {
    const auto expected = data::shards_touched(one->order(), 5, 16, world, 2);
    const auto got = one->shards_touched(5, 16, world, 2);
    EXPECT_EQ(got.world_size, world);
    EXPECT_EQ(got.per_rank_per_epoch, expected.per_rank_per_epoch) << world;
    EXPECT_EQ(got.max_per_rank_per_epoch, expected.max_per_rank_per_epoch) << world;
    EXPECT_EQ(got.per_batch_share, expected.per_batch_share) << world;
  }
  // Mixed streams in stratified batches: the shards (A's, then B's) of each rank's rows [16r/w, 16(r+1)/w) of
  // every global batch of the order the loader reads, counted by hand.
  const auto ds = make({a().repeat(1.5), b().choose(10)}, 0, "stratified");
  std::vector<int64_t> offsets = ds->reader(0).shard_offsets();
  for (int64_t o : ds->reader(1).shard_offsets())
    if (o > 0) offsets.push_back(50 + o);
  const auto shard_of = [&](int64_t id) {
    return std::upper_bound(offsets.begin(), offsets.end(), id) - offsets.begin() - 1;
  };
  const int64_t n = ds->epoch_positions(16);
  for (const bool shuffle : {true, false}) {  // unshuffled: as a loader with shuffle off reads, in stream order
    const std::vector<int64_t> ids = ds->order_range(5, 0, 16, shuffle, 0, n);
    for (int world : {1, 2}) {
      std::vector<std::set<int64_t>> of_rank(static_cast<size_t>(world));
      double shares = 0;
      int64_t count = 0;
      for (int64_t begin = 0; begin < n; begin += 16) {
        const int64_t rows = std::min<int64_t>(16, n - begin);
        for (int r = 0; r < world; ++r) {
          std::set<int64_t> here;
          for (int64_t j = rows * r / world; j < rows * (r + 1) / world; ++j)
            here.insert(shard_of(ids[static_cast<size_t>(begin + j)]));
          of_rank[static_cast<size_t>(r)].insert(here.begin(), here.end());
          shares += static_cast<double>(here.size());
          ++count;
        }
      }
      double sum = 0;
      int64_t most = 0;
      for (const auto& shards : of_rank) {
        sum += static_cast<double>(shards.size());
        most = std::max<int64_t>(most, static_cast<int64_t>(shards.size()));
      }
      SCOPED_TRACE((shuffle ? "shuffled, " : "unshuffled, ") + std::to_string(world) + " rank(s)");
      const auto got = ds->shards_touched(5, 16, world, 1, shuffle);
      EXPECT_EQ(got.per_rank_per_epoch, sum / world);
      EXPECT_EQ(got.max_per_rank_per_epoch, most);
      EXPECT_DOUBLE_EQ(got.per_batch_share, shares / static_cast<double>(count));
      EXPECT_GT(got.per_batch_share, 1.0) << "rows of both streams in every share";
    }
  }
  EXPECT_THAT(testing::input_error_of([&] { (void)ds->shards_touched(5, 16, 17, 1); }),
              HasSubstr("world size 17 is not in [1, batch size 16]"));
}

TEST_F(StreamingMix, FixedSamplingReadsTheSamePartEveryEpoch) {
  const auto ds = std::make_shared<StreamingDataset>(
      StreamingOptions().streams({a().repeat(0.5), b()}).sampling_method("fixed").order(
          data::StreamingOrderOptions().partitions(3).shuffle_block_size(16)));
  EXPECT_THAT(ds->describe(), HasSubstr("fixed parts"));
  std::set<std::set<int64_t>> parts;
  std::set<std::vector<int64_t>> orders;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const std::vector<int64_t> labels = flat(batches_of(*loader(ds, 0), 9, epoch));
    ASSERT_EQ(labels.size(), 55u);
    std::set<int64_t> of_a_here;
    for (int64_t l : labels)
      if (l < 1000) of_a_here.insert(l);
    EXPECT_EQ(of_a_here.size(), 25u);
    parts.insert(of_a_here);
    orders.insert(labels);
  }
  EXPECT_EQ(parts.size(), 1u) << "the same 25 of A every epoch";
  EXPECT_EQ(orders.size(), 3u) << "in another order each epoch";
  // Another seed draws another part.
  std::set<int64_t> other;
  for (int64_t l : flat(batches_of(*loader(ds, 0), 10, 0)))
    if (l < 1000) other.insert(l);
  EXPECT_NE(other, *parts.begin());
}

TEST_F(StreamingMix, AGranularPartIsRunsOfConsecutiveSamplesOfFewShards) {
  write_labels(dir_.path() + "/c", 0, 56, 400);  // labels 0..55 in 8 shards of 7
  const auto granular = [&](int64_t g) {
    return std::make_shared<StreamingDataset>(
        StreamingOptions()
            .streams({StreamOptions().local(dir_.path() + "/c").choose(28), b()})
            .sampling_granularity(g)
            .order(data::StreamingOrderOptions().partitions(3).shuffle_block_size(16)));
  };
  const std::vector<int64_t> offsets = granular(1)->reader(0).shard_offsets();  // C's shards; labels are its ids
  ASSERT_EQ(offsets, (std::vector<int64_t>{0, 7, 14, 21, 28, 35, 42, 49, 56}));
  const auto shard_of = [&](int64_t id) {
    return std::upper_bound(offsets.begin(), offsets.end(), id) - offsets.begin() - 1;
  };
  // C's 28 samples of the epoch, grouped by run of g samples of a shard (runs of 1000: whole shards).
  const auto runs_read = [&](int64_t g, int64_t epoch) {
    std::map<std::pair<int64_t, int64_t>, int64_t> runs;  // (shard, run) -> samples read
    int64_t from_c = 0;
    for (const auto& [label, n] : counts(flat(batches_of(*loader(granular(g), 0), 3, epoch)))) {
      if (label >= 1000) continue;
      EXPECT_EQ(n, 1) << "C's sample " << label;
      ++from_c;
      const int64_t k = shard_of(label);
      ++runs[{k, (label - offsets[static_cast<size_t>(k)]) / g}];
    }
    EXPECT_EQ(from_c, 28);
    return runs;
  };
  for (int64_t g : {3, 1000}) {
    SCOPED_TRACE("runs of " + std::to_string(g));
    std::set<std::map<std::pair<int64_t, int64_t>, int64_t>> epochs;
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      const auto runs = runs_read(g, epoch);
      int64_t cut = 0;  // runs not read whole: at most the last one drawn
      for (const auto& [run, n] : runs) {
        const int64_t first = offsets[static_cast<size_t>(run.first)] + run.second * g;
        cut += n < std::min(g, offsets[static_cast<size_t>(run.first) + 1] - first);
      }
      EXPECT_LE(cut, 1);
      epochs.insert(runs);
    }
    EXPECT_GT(epochs.size(), 1u) << "other runs each epoch";
  }
  // With whole shards as runs the part reads 28 / 7 = 4 of C's 8 shards; spread over every shard (the default:
  // 3.5 of each) it reads all of them.
  std::set<int64_t> whole, spread;
  for (const auto& [run, n] : runs_read(1000, 0)) whole.insert(run.first);
  for (const auto& [run, n] : runs_read(1, 0)) spread.insert(run.first);
  EXPECT_EQ(spread.size(), offsets.size() - 1);
  EXPECT_EQ(whole.size(), 4u);
  EXPECT_THAT(granular(4)->describe(), HasSubstr("parts in runs of 4"));
  // The order over a granular part is the global order for every rank count and resumes at any batch.
  expect_ranks_workers_and_resume_see_the_global_order([&] { return granular(3); }, 4);
}

TEST_F(StreamingMix, AStreamFetchedFromARemoteReadsTheSameSamples) {
  const auto local = make({a().repeat(0.5), b()});
  const auto remote =
      make({a().repeat(0.5), StreamOptions().remote("file://" + dir_.path() + "/b").local(dir_.path() + "/cache_b")});
  ASSERT_NE(remote->cache(1), nullptr);
  EXPECT_EQ(remote->cache(0), nullptr);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    EXPECT_EQ(batches_of(*loader(remote, 1), 8, epoch), batches_of(*loader(local, 0), 8, epoch));
    const Batch x = remote->get_batch({3, 60, 79}), y = local->get_batch({3, 60, 79});
    EXPECT_TRUE(at::equal(x.input(), y.input()));
  }
}

TEST_F(StreamingMix, BadStreamsAreClearErrorsNamingTheStream) {
  const auto error = [&](std::vector<StreamOptions> streams, int64_t epoch_size = 0,
                         StreamingOptions top = StreamingOptions()) {
    return testing::input_error_of([&] {
      StreamingDataset(top.streams(std::move(streams)).epoch_size(epoch_size));
    });
  };
  EXPECT_THAT(error({a(), b().proportion(1).repeat(2)}),
              HasSubstr("streaming.streams[1]: sets more than one of proportion, repeat and choose"));
  EXPECT_THAT(error({a().proportion(1), b()}),
              HasSubstr("streaming.streams[1]: sets no proportion, but stream 0 does; expected a proportion on every"));
  EXPECT_THAT(error({a().repeat(2), b()}, 100), HasSubstr("streaming.epoch_size: set, but no stream sets a proportion"));
  EXPECT_THAT(error({a(), b()}, 0, StreamingOptions().local(dir_.path() + "/a")),
              HasSubstr("streaming.local: set together with streams"));
  EXPECT_THAT(error({a(), b(), a().repeat(2)}),
              HasSubstr("streaming.streams[2].local: stream 0 reads the same folder"));
  EXPECT_THAT(error({a(), StreamOptions().local(dir_.path() + "/nope")}),
              HasSubstr("streaming.streams[1].local: folder " + dir_.path() + "/nope does not exist"));
  EXPECT_THAT(error({a().repeat(0.001), b().choose(0).repeat(0.001)}),
              HasSubstr("the streams give no samples per epoch"));
  EXPECT_THAT(error({a().repeat(1e30), b()}), HasSubstr("streaming.streams[0]: 5e+31 samples per epoch is too many"));
  EXPECT_THAT(error({a(), b().choose(int64_t{1} << 40)}),
              HasSubstr("streaming.streams[1]: 1099511627776 samples per epoch of a stream of 30 in"));
  write_labels(dir_.path() + "/big", 0, 5, 1000, 0, 5);
  EXPECT_THAT(error({a(), StreamOptions().local(dir_.path() + "/big")}),
              HasSubstr("streaming.streams[1]: its input \"image\" is Byte [1, 5, 5], stream 0's is Byte [1, 4, 4]"));
  EXPECT_THAT(testing::input_error_of([&] { StreamingDataset(StreamingOptions().local(dir_.path() + "/a").epoch_size(9)); }),
              HasSubstr("streaming.epoch_size: set without streams"));
  EXPECT_THAT(error({a(), b()}, 0, StreamingOptions().batching_method("device_per_stream")),
              HasSubstr("streaming.batching_method: device_per_stream (each rank's batch from one stream) would "
                        "tie the order to the number of ranks"));
  EXPECT_THAT(error({a(), b()}, 0, StreamingOptions().batching_method("stratify")),
              HasSubstr("streaming.batching_method: \"stratify\" is not allowed; expected one of: random, stratified"));
  EXPECT_THAT(error({a(), b()}, 0, StreamingOptions().sampling_granularity(0)),
              HasSubstr("streaming.sampling_granularity: 0 is out of range; expected a number >= 1"));
  EXPECT_THAT(error({a(), b()}, 0, StreamingOptions().sampling_method("random")),
              HasSubstr("streaming.sampling_method: \"random\" is not allowed; expected one of: balanced, fixed"));
  // Batches that would leave a stream unread, refused when the loader asks how long the epoch is (before training).
  const auto tiny_b = make({a(), b().choose(2)}, 0, "stratified");
  EXPECT_THAT(testing::input_error_of([&] { tiny_b->epoch_positions(1); }),
              HasSubstr("streaming.batching_method: stratified global batches of 1 give streaming.streams[1] (2 of the "
                        "epoch's 52 samples) no row, so it would never be read; expected batches of at least 26"));
  EXPECT_THAT(testing::input_error_of([&] { make({a(), b()}, 0, "stratified")->epoch_positions(100); }),
              HasSubstr("stratified global batches of 100: a stream gives fewer samples per epoch than its rows of "
                        "one batch"));
  EXPECT_THAT(testing::input_error_of([&] { loader(make({a(), b().choose(10)}, 0, "per_stream"), 0)->num_batches(); }),
              HasSubstr("per_stream global batches of 16: streaming.streams[1] gives 10 samples per epoch, fewer than "
                        "one batch, so it would never be read; expected batches of at most 10"));
}

TEST_F(StreamingMix, RecipeStreamsAreReadAndTheirErrorsPointAtTheirLines) {
  const auto recipe = [&](const std::string& streams) {
    return "max_duration: 1ep\nmodel: {mlp: {hidden: [8]}}\noptimizer: {sgd: {lr: 0.1}}\n"
           "data:\n  train:\n    dataset:\n      streaming:\n        streams:\n" + streams +
           "    loader: {batch_size: 8}\n";
  };
  const auto error = [&](const std::string& streams) {
    return testing::input_error_of([&] { build_run(Recipe::parse(recipe(streams), "r.yaml")); });
  };
  const std::string ok = "          - {local: " + dir_.path() + "/a, repeat: 2}\n"
                         "          - {local: " + dir_.path() + "/b, choose: 10}\n";
  const tessera::Run run = build_run(Recipe::parse(recipe(ok), "r.yaml"));
  EXPECT_EQ(run.components.train_dataloader->num_samples(), 110);
  // Stratified batches of 8 over 100 + 10 samples: 7 + 1 rows a batch, 10 batches.
  const tessera::Run stratified =
      build_run(Recipe::parse(recipe(ok + "        batching_method: stratified\n"), "r.yaml"));
  EXPECT_EQ(stratified.components.train_dataloader->num_samples(), 80);
  EXPECT_THAT(error(ok + "        batching_method: stratifed\n"), HasSubstr("r.yaml:11:"));
  // A missing folder in stream 1 (line 11 of the recipe), at its local's column.
  const std::string missing = "          - {local: " + dir_.path() + "/a}\n"
                              "          - {local: " + dir_.path() + "/nope}\n";
  EXPECT_THAT(error(missing), HasSubstr("r.yaml:10:21: data.train.dataset.streaming.streams[1].local: folder"));
  EXPECT_THAT(error("          - {local: " + dir_.path() + "/a, repeet: 2}\n"),
              HasSubstr("did you mean \"repeat\""));
  EXPECT_THAT(error("          - {local: " + dir_.path() + "/a, repeat: -1}\n"),
              HasSubstr("r.yaml:9:"));
  EXPECT_THAT(error("          - {local: " + dir_.path() + "/a, repeat: -1}\n"),
              HasSubstr("repeat: -1 is out of range"));
  EXPECT_THAT(error("          - 3\n"), HasSubstr("r.yaml:9:"));
}

}  // namespace
}  // namespace tessera
