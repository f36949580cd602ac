#pragma once
/// Batches from a Dataset, in a deterministic per-epoch order, produced ahead by background threads.
///
/// The order of epoch e is a pure function of (seed, e) computed with the project's own Rng, so it is the
/// same on every standard library, and a run can start at any (epoch, batch) position directly: there is
/// no replay of already-seen batches on resume. A dataset with its own order (Dataset::has_order, e.g. a
/// StreamingDataset) is asked for each batch's indices instead.
///
///     DataLoader loader(dataset, DataLoaderOptions().batch_size(128));
///     loader.start_epoch(/*seed=*/42, /*epoch=*/3, /*first_batch=*/17);
///     while (auto batch = loader.next()) { ... }
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <tessera/batch.h>
#include <tessera/data/batch_source.h>
#include <tessera/data/dataset.h>
#include <tessera/data/transforms.h>
#include <tessera/options.h>

namespace tessera::data {

struct DataLoaderOptions {
  TESSERA_OPTION(int64_t, batch_size) = 128;
  TESSERA_OPTION(bool, shuffle) = true;
  TESSERA_OPTION(bool, drop_last) = false;
  /// Background threads producing batches (0 = produce on the caller's thread).
  TESSERA_OPTION(int64_t, workers) = 1;
  /// Batches produced ahead of the consumer (ready or being produced), so at most `prefetch` workers are
  /// busy at once. Producer threads use one intra-op thread each (like PyTorch's worker processes).
  TESSERA_OPTION(int64_t, prefetch) = 4;
  template <class V>
  void visit(V& v) {
    v("batch_size", batch_size_, "examples per batch", Range::at_least(1));
    v("shuffle", shuffle_, "shuffle the order every epoch", Any{});
    v("drop_last", drop_last_, "drop the last incomplete batch", Any{});
    v("workers", workers_, "background threads producing batches", Range::closed(0, 64));
    v("prefetch", prefetch_, "batches produced ahead", Range::at_least(1));
  }
};

/// The order of the examples of epoch `epoch` (a permutation of 0..n-1, a pure function of (seed, epoch)) when
/// shuffling, as DataLoader uses it; tessera.data.ResumableSampler (Python) uses the same order.
std::vector<int64_t> shuffled_order(uint64_t seed, int64_t epoch, int64_t n);

class DataLoader : public BatchSource {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options,
             std::vector<std::shared_ptr<const BatchTransform>> transforms = {});
  ~DataLoader() override;
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// Batches per epoch.
  int64_t num_batches() const override;
  /// Examples per epoch actually produced (drop_last removes the remainder).
  int64_t num_samples() const override;
  /// "<dataset> in batches of <batch_size>".
  std::string describe() const override;
  /// The first example of the dataset (transforms not applied).
  Batch example_batch() override;
  int64_t num_classes() const override { return dataset_->num_classes(); }
  int64_t tokens_per_example() const override { return dataset_->tokens_per_example(); }
  int64_t batch_size() const override { return options_.batch_size(); }
  const DataLoaderOptions& options() const noexcept { return options_; }
  const Dataset& dataset() const noexcept { return *dataset_; }

  /// Starts (or restarts) iteration over epoch `epoch` at batch `first_batch` (0..num_batches(); the
  /// batches are exactly those of a full pass from there); cancels and joins any epoch in flight.
  void start_epoch(uint64_t seed, int64_t epoch, int64_t first_batch = 0) override;
  /// The next batch of the current epoch, std::nullopt at its end. An exception from producing a batch
  /// (dataset or transform) is rethrown here, in batch order, and ends the epoch. An Error before the
  /// first start_epoch.
  std::optional<Batch> next() override;

  /// Runs `transforms` on every batch before the loader's own ones (see BatchSource); always true.
  bool set_algorithm_transforms(std::vector<std::shared_ptr<const BatchTransform>> transforms) override;
  /// Decodes only rank `rank`'s rows of each batch (the others are zeros) while every transform is per-example
  /// (BatchTransform::per_example), so the rows a ShardedSource keeps are bitwise the same and each rank reads
  /// only the samples (and, from a StreamingDataset, the shards) it trains on; whole batches otherwise. Returns
  /// true. Cancels an epoch in flight.
  bool share_rows(int rank, int world_size) override;
  /// The transforms set by set_algorithm_transforms.
  const std::vector<std::shared_ptr<const BatchTransform>>& algorithm_transforms() const noexcept {
    return algorithm_transforms_;
  }

  /// The example indices of batch `b` of epoch `epoch` (pure function; used by tests and resume).
  std::vector<int64_t> batch_indices(uint64_t seed, int64_t epoch, int64_t b) const;

 private:
  Batch produce(uint64_t seed, int64_t epoch, int64_t b, const std::vector<int64_t>& order) const;
  bool rows_only() const;  // share_rows is in effect
  void stop_workers();

  std::shared_ptr<const Dataset> dataset_;
  DataLoaderOptions options_;
  std::vector<std::shared_ptr<const BatchTransform>> transforms_;
  std::vector<std::shared_ptr<const BatchTransform>> algorithm_transforms_;
  int rank_ = 0, world_size_ = 1;  // share_rows

  // iteration state (the implementation owns the details)
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::data
