#pragma once
/// Synchronised batch norm (docs/distributed.md, "Batch norm"): a batch norm whose training statistics are the mean
/// and variance over the global batch, every rank's share together, as PyTorch's SyncBatchNorm. The recipe's
/// `distributed: {sync_batch_norm: true}` makes the Trainer convert the model's torch BatchNorm1d/2d/3d layers
/// after Init's surgery:
///
///     int64_t n = tessera::dist::convert_sync_batch_norm(*state.model, comm);
///
/// In evaluation mode, and when its process group is gone (the run ended), the layer is exactly torch's batch norm.
#include <cstdint>
#include <memory>
#include <ostream>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/pimpl.h>

#include <tessera/distributed/comm.h>

namespace tessera::dist {

class SyncBatchNormImpl : public torch::nn::Module {
 public:
  /// Takes over a batch norm: its options, the input ranks it takes ({2, 3}, {4} or {5}) and its very tensors
  /// (registered under the same names, so the optimizer and the state-dict keys do not change). `comm` is held
  /// weakly: the model may outlive the run.
  SyncBatchNormImpl(const torch::nn::BatchNormOptions& options, std::vector<int64_t> input_dims, at::Tensor weight,
                    at::Tensor bias, at::Tensor running_mean, at::Tensor running_var, at::Tensor num_batches_tracked,
                    std::weak_ptr<Comm> comm);

  /// Training: normalises with the global batch's per-channel mean and (biased) variance, which every rank gets
  /// from one all-reduce of double sums; backward takes the gradient through them over every rank (one more
  /// all-reduce, of the sums of dy and dy (x - mean)); the running statistics move by the global mean and unbiased
  /// variance, the same on every rank.
  at::Tensor forward(const at::Tensor& input);
  /// Running mean 0, variance 1, no batches tracked (as torch's BatchNorm::reset_running_stats).
  void reset_running_stats();
  void pretty_print(std::ostream& stream) const override;

  torch::nn::BatchNormOptions options;
  std::vector<int64_t> input_dims;
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  std::weak_ptr<Comm> comm_;
};
TORCH_MODULE(SyncBatchNorm);

/// Replaces every torch BatchNorm1d/2d/3d in a slot of `model` (surgery.h) by a SyncBatchNorm on `comm`; returns
/// how many. A batch norm it cannot reach is an InputError naming it: one outside a slot, one of a Python or
/// TorchScript model (its layers are not LibTorch modules), or another layer keeping running statistics (such as
/// ghost_batchnorm's, which normalises each ghost batch of a rank's share by design).
int64_t convert_sync_batch_norm(torch::nn::Module& model, const std::shared_ptr<Comm>& comm);

}  // namespace tessera::dist
