#pragma once
// What the Trainer does differently on more than one rank, in one place (docs/distributed.md): the process
// group, the data shares, the gradient hooks, the reductions of the loss and the metrics, rank 0's duties.
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/distributed/comm.h>
#include <tessera/distributed/grad_sync.h>
#include <tessera/distributed/sharded_source.h>
#include <tessera/metrics.h>
#include <tessera/trainer.h>

namespace tessera::dist {

class DataParallel {
 public:
  /// The process group of `components` or, when it has none and the environment describes several ranks, a new
  /// one (on cuda:LOCAL_RANK when `device` is CUDA). nullptr for a one-process run. Adjusts `device`.
  static std::unique_ptr<DataParallel> from(Components& components, c10::Device& device);

  DataParallel(std::shared_ptr<Comm> comm, DistributedOptions options);

  int rank() const noexcept { return comm_->rank(); }
  int world_size() const noexcept { return comm_->world_size(); }
  Comm& comm() noexcept { return *comm_; }

  /// Before the plan: the training and evaluation data become this rank's shares; logger destinations stay only
  /// on rank 0; metrics must be reducible (InputError otherwise).
  void setup(Components& components, std::vector<Evaluator>& evaluators);
  /// Rank 0's parameters and buffers to every rank (after Init's surgery and any checkpoint load).
  void broadcast_model(Model& model);
  /// Before the first forward of a batch: rank 0's buffers (broadcast_buffers).
  void before_batch(Model& model);
  /// Before each backward: buckets for the current trainable parameters; only the last microbatch synchronises.
  void before_backward(Model& model, bool last_microbatch);
  void after_backward() { grad_sync_->finish(); }
  /// The factor on this rank's loss so that averaging over ranks gives the global batch's mean when the shares
  /// are uneven: share * world / global batch (1 for even shares; algorithms that drop examples, such as
  /// selective backprop, do so on each rank's share and do not change it).
  double loss_weight() const;
  /// The global batch the last training batch was cut from.
  int64_t global_batch_size() const;
  /// The mean of `value` over the ranks (a loss), in place.
  void mean_over_ranks(at::Tensor& value);
  /// Metric sums added up over the ranks.
  void reduce(const std::vector<std::shared_ptr<Metric>>& metrics);
  /// True on every rank when it is true on any (a stop signal received by some ranks only).
  bool any(bool flag);

 private:
  std::shared_ptr<Comm> comm_;
  DistributedOptions options_;
  std::unique_ptr<GradSync> grad_sync_;
  ShardedSource* train_ = nullptr;
  bool find_unused_ = false;  ///< an algorithm declares leaves_parameters_unused
};

}  // namespace tessera::dist
