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
  /// With distributed.sync_batch_norm, after Init's surgery: the model's batch norms become SyncBatchNorm (refused
  /// with microbatching, whose microbatch counts may differ between ranks).
  void sync_batch_norm(Model& model, bool microbatching);
  /// Rank 0's parameters and buffers to every rank (after Init's surgery and any checkpoint load).
  void broadcast_model(Model& model);
  /// Rank 0's floating-point buffers (batch-norm running statistics) to every rank, when broadcast_buffers is on:
  /// the Trainer calls it before the first forward of each batch, at the start of each evaluation (after eval_start,
  /// so on the weights evaluated) and at the end of fit, so that every rank evaluates and ends with rank 0's.
  void sync_buffers(Model& model);
  /// Where the gradients are averaged: during the last microbatch's backward (false, the default: the all-reduces
  /// overlap it), or in sync_gradients() after the last backward (true: with microbatch_size auto, where a rank may
  /// abandon a batch midway on an out-of-memory error, and with a loss scaler, which unscales each microbatch's
  /// gradients as they come; no collective runs inside backward then).
  void set_sync_after_backward(bool on) { sync_after_backward_ = on; }
  bool sync_after_backward() const noexcept { return sync_after_backward_; }
  /// Before each backward: buckets for the current trainable parameters; only the last microbatch synchronises
  /// (none with sync_after_backward).
  void before_backward(Model& model, bool last_microbatch);
  void after_backward() { grad_sync_->finish(); }
  /// With sync_after_backward: the accumulated gradients averaged over the ranks (no-op otherwise).
  void sync_gradients();
  /// The smallest of the ranks' values (the microbatch size every rank retries with).
  int64_t min_over_ranks(int64_t value);
  /// Every rank's `bytes` (uint8, the same size on every rank), indexed by rank.
  std::vector<at::Tensor> all_gather_bytes(const at::Tensor& bytes);
  /// A loss scaler's inf/NaN record (0-d float on the run's device) summed over the ranks in place, so that
  /// every rank skips the step and backs its scale off together.
  void agree_on_overflow(at::Tensor& found_inf);
  /// The factor on this rank's loss so that averaging over ranks gives the global batch's mean when the shares
  /// are uneven: share * world / global batch (1 for even shares; algorithms that drop examples, such as
  /// selective backprop, do so on each rank's share and do not change it).
  double loss_weight() const;
  /// The global batch the last training batch was cut from.
  int64_t global_batch_size() const;
  /// Where this rank's last training batch sits in that global batch (State::batch_place before algorithms change
  /// the batch: the whole share, from its first row).
  BatchPlace last_share_place() const;
  /// The sum of `value` over the ranks (the training batch's loss terms, Model::loss_terms), in place.
  void sum_over_ranks(at::Tensor& value);
  /// The mean of `value` over the ranks (a loss), in place.
  void mean_over_ranks(at::Tensor& value);
  /// Metric sums added up over the ranks.
  void reduce(const std::vector<std::shared_ptr<Metric>>& metrics);
  /// True on every rank when it is true on any (a stop signal received by some ranks only).
  bool any(bool flag);

 private:
  /// `t` where the process group's collectives take it (cuda:LOCAL_RANK for NCCL).
  at::Tensor on_comm_device(const at::Tensor& t) const;

  std::shared_ptr<Comm> comm_;
  DistributedOptions options_;
  std::unique_ptr<GradSync> grad_sync_;
  ShardedSource* train_ = nullptr;
  bool find_unused_ = false;  ///< an algorithm declares leaves_parameters_unused
  bool sync_after_backward_ = false;
};

}  // namespace tessera::dist
