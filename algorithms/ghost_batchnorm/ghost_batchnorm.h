#pragma once
/// Ghost batch normalisation (Hoffer et al. 2017; reference §2.1 table and §2.2): batch norm over small "ghost"
/// batches, a regulariser, by model surgery.
///
/// Every BatchNorm1d/2d/3d in a model slot becomes a GhostBatchNorm that holds the same parameter and buffer
/// tensors under the same names (checkpoint keys and the optimizer are unchanged). In training, a (micro)batch of B
/// examples is cut into k = ⌈B / ghost_batch_size⌉ chunks with `chunk` along dimension 0; each chunk is normalised by
/// its own mean and variance, and the running statistics are updated once per chunk with momentum m / k (so that one
/// batch moves them about as much as one batch norm step does). In evaluation (or without running statistics in
/// training) it is exactly the batch norm it replaced. Runs once at Init; required on checkpoint load.
///
///     trainer components: algorithms.push_back(std::make_shared<tessera::algorithms::GhostBatchNorm>());
///     functional:         tessera::algorithms::apply_ghost_batchnorm(model, GhostBatchNormOptions(), &optimizer);
///                         at::Tensor y = tessera::algorithms::ghost_batch_norm(x, bn->options, bn->weight, ...);
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct GhostBatchNormOptions {
  /// Examples per ghost batch (the chunk size along the batch dimension).
  TESSERA_OPTION(int64_t, ghost_batch_size) = 32;
  template <class V>
  void visit(V& v) {
    v("ghost_batch_size", ghost_batch_size_, "examples per ghost batch (normalised together)", Range::at_least(1));
  }
};

/// Number of ghost batches for a batch of `batch_size` examples: ⌈batch_size / ghost_batch_size⌉ (at least 1).
int64_t ghost_batch_count(int64_t batch_size, int64_t ghost_batch_size);

/// Functional form: batch norm of `input` [N, C, ...] per chunk of `ghost_batch_size` examples when `training`, as
/// the chunks of input.chunk(k, 0) with k = ghost_batch_count(N, ghost_batch_size), concatenated. The running
/// statistics (undefined tensors: none) are updated in place once per chunk with `momentum` / k, where `momentum`
/// nullopt means a cumulative average (1 / num_batches_tracked, which then counts chunks); `num_batches_tracked`
/// (undefined: none) is incremented once per chunk. Not training: at::batch_norm with the running statistics, as
/// torch::nn::BatchNorm does. `weight`/`bias` undefined: not affine.
at::Tensor ghost_batch_norm(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& running_mean, const at::Tensor& running_var,
                            const at::Tensor& num_batches_tracked, bool training, std::optional<double> momentum,
                            double eps, int64_t ghost_batch_size);

/// A batch norm over ghost batches, holding the tensors of the batch norm it replaces (the same weight, bias,
/// running_mean, running_var and num_batches_tracked, under those names).
class GhostBatchNormLayerImpl : public torch::nn::Module {
 public:
  /// `dims`: the input dimensions the replaced module accepted (2 or 3 for BatchNorm1d, 4 for 2d, 5 for 3d).
  GhostBatchNormLayerImpl(const torch::nn::BatchNormOptions& options, std::vector<int64_t> dims, at::Tensor weight,
                     at::Tensor bias, at::Tensor running_mean, at::Tensor running_var, at::Tensor num_batches_tracked,
                     int64_t ghost_batch_size);
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  torch::nn::BatchNormOptions options;
  std::vector<int64_t> dims;
  int64_t ghost_batch_size;
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};
TORCH_MODULE(GhostBatchNormLayer);

/// Functional form: replaces every BatchNorm1d/2d/3d in the slots of any module tree (see models/model.h on slots)
/// by a GhostBatchNormLayer; returns how many. The parameters stay the same tensors, so `optimizer` (accepted for a
/// uniform signature with the other surgeries) needs no change.
int64_t apply_ghost_batchnorm(torch::nn::Module& model, const GhostBatchNormOptions& options,
                              optim::Optimizer* optimizer = nullptr);

/// How many batch norms apply_ghost_batchnorm would replace in the slots of `model`, without replacing anything.
int64_t count_ghost_batchnorm(torch::nn::Module& model);

/// The algorithm (recipe name "ghost_batchnorm"): apply_ghost_batchnorm at Init. A model with no batch norm in a
/// slot is refused at plan time (it would have no effect).
class GhostBatchNorm : public Algorithm {
 public:
  explicit GhostBatchNorm(GhostBatchNormOptions options = GhostBatchNormOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  void check(const State& state) const override;
  const GhostBatchNormOptions& options() const noexcept { return options_; }
  /// How many batch norms the last application replaced.
  int64_t replaced() const noexcept { return replaced_; }

 private:
  GhostBatchNormOptions options_;
  AlgorithmSpec spec_;
  int64_t replaced_ = 0;
};

}  // namespace tessera::algorithms
