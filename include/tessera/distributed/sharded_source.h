#pragma once
/// One rank's share of a global batch order. The wrapped source yields the global batches (its batch size
/// is the global batch: recipe `data.batch_size`), in the order a one-process run sees them; rank r of w takes
/// rows [r*n/w, (r+1)*n/w) of each. Changing the number of ranks therefore keeps the global order, and resuming
/// at batch b continues it (the position is counted in global batches).
#include <memory>

#include <tessera/data/batch_source.h>

namespace tessera::dist {

class ShardedSource : public data::BatchSource {
 public:
  /// InputError when a global batch cannot give every rank at least one example.
  ShardedSource(std::shared_ptr<data::BatchSource> global, int rank, int world_size);

  int64_t num_batches() const override { return global_->num_batches(); }
  /// Examples per epoch over all ranks (time units count global samples).
  int64_t num_samples() const override { return global_->num_samples(); }
  void start_epoch(uint64_t seed, int64_t epoch, int64_t first_batch = 0) override;
  std::optional<Batch> next() override;
  std::string describe() const override;
  Batch example_batch() override { return global_->example_batch(); }
  int64_t num_classes() const override { return global_->num_classes(); }
  int64_t tokens_per_example() const override { return global_->tokens_per_example(); }
  int64_t batch_size() const override { return global_->batch_size(); }
  /// Forwarded to the global source: the transforms see the global batch, as in a one-process run.
  bool set_algorithm_transforms(std::vector<std::shared_ptr<const data::BatchTransform>> transforms) override {
    return global_->set_algorithm_transforms(std::move(transforms));
  }

  /// Size of the global batch the last next() was cut from, and this rank's share of it: rows [last_share_begin,
  /// last_share_begin + last_share_size) (before algorithms change the batch).
  int64_t last_global_size() const noexcept { return last_global_size_; }
  int64_t last_share_begin() const noexcept { return last_share_begin_; }
  int64_t last_share_size() const noexcept { return last_share_size_; }
  const data::BatchSource& global() const noexcept { return *global_; }

 private:
  std::shared_ptr<data::BatchSource> global_;
  int rank_, world_size_;
  int64_t last_global_size_ = 0;
  int64_t last_share_begin_ = 0;
  int64_t last_share_size_ = 0;
};

}  // namespace tessera::dist
