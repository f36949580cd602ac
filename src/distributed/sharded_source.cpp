#include <tessera/distributed/sharded_source.h>

#include <ATen/ATen.h>

#include <tessera/error.h>

namespace tessera::dist {

ShardedSource::ShardedSource(std::shared_ptr<data::BatchSource> global, int rank, int world_size)
    : global_(std::move(global)), rank_(rank), world_size_(world_size) {
  if (!global_) throw InputError("ShardedSource: no data given");
  if (world_size_ < 1 || rank_ < 0 || rank_ >= world_size_) {
    throw InputError("ShardedSource: rank " + std::to_string(rank_) + " of " + std::to_string(world_size_));
  }
  if (world_size_ > 1) global_->share_rows(rank_, world_size_);
}

void ShardedSource::start_epoch(uint64_t seed, int64_t epoch, int64_t first_batch) {
  global_->start_epoch(seed, epoch, first_batch);
}

std::optional<Batch> ShardedSource::next() {
  std::optional<Batch> batch = global_->next();
  if (!batch) return batch;
  const int64_t n = batch->size();
  last_global_size_ = n;
  if (n < world_size_) {
    throw InputError("data: a batch of " + std::to_string(n) + " examples (" + global_->describe() +
                     ") cannot be shared by " + std::to_string(world_size_) +
                     " ranks; the batch size is the global batch: make it at least the number of ranks, or set "
                     "drop_last for a short last batch");
  }
  const int64_t begin = n * rank_ / world_size_, end = n * (rank_ + 1) / world_size_;
  last_share_begin_ = begin;
  last_share_size_ = end - begin;
  Batch share;
  for (const auto& [key, t] : batch->parts()) share.set(key, t.narrow(0, begin, end - begin));
  return share;
}

std::string ShardedSource::describe() const {
  return global_->describe() + ", rank " + std::to_string(rank_) + "'s share of " + std::to_string(world_size_);
}

}  // namespace tessera::dist
