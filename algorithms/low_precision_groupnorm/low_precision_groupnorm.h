#pragma once
/// Low-precision GroupNorm (Composer's LowPrecisionGroupNorm): under autocast, GroupNorms run in the autocast dtype
/// (bf16 or fp16) instead of fp32, where autocast (and the resnet model with norm "group") would put them, which
/// halves their memory traffic. Outside autocast a layer computes exactly as torch::nn::GroupNorm does.
///
/// Surgery at Init on every torch::nn::GroupNorm in a slot: a LowPrecisionGroupNorm that registers the very same
/// weight and bias under the same names (no state-dict key, optimizer entry or value changes). Under autocast on the
/// input's device: input, weight and bias cast to the autocast dtype, then group_norm with autocast off for the call;
/// the output stays in that dtype. Without mixed precision it would change nothing, so such a run is refused before
/// step 1 (precision fp32).
///
///     int64_t n = tessera::algorithms::apply_low_precision_groupnorm(*model);
#include <cstdint>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct LowPrecisionGroupNormOptions {
  template <class V>
  void visit(V&) {}
};

/// group_norm(x, num_groups, weight, bias, eps) computed in the autocast dtype of x's device when autocast is on there
/// (inputs cast to it, autocast off for the call), else exactly torch's group_norm.
at::Tensor low_precision_group_norm(const at::Tensor& x, int64_t num_groups, const at::Tensor& weight,
                                    const at::Tensor& bias, double eps);

/// The layer: a torch::nn::GroupNorm's number of groups, eps and its very tensors ("weight", "bias"), computed with
/// low_precision_group_norm.
class LowPrecisionGroupNormImpl : public torch::nn::Module {
 public:
  LowPrecisionGroupNormImpl(int64_t num_groups, double eps, at::Tensor weight, at::Tensor bias);
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t num_groups_;
  double eps_;
  at::Tensor weight_, bias_;
};

/// The surgery: every torch::nn::GroupNorm in a slot of `model` replaced by a LowPrecisionGroupNormImpl. Returns how
/// many were replaced.
int64_t apply_low_precision_groupnorm(torch::nn::Module& model);

/// The algorithm (recipe name "low_precision_groupnorm").
class LowPrecisionGroupNorm : public Algorithm {
 public:
  explicit LowPrecisionGroupNorm(LowPrecisionGroupNormOptions options = LowPrecisionGroupNormOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// Mixed precision (amp_bf16 or amp_fp16), and a model with at least one GroupNorm in a slot.
  void check(const State& state) const override;
  const LowPrecisionGroupNormOptions& options() const noexcept { return options_; }
  /// GroupNorms replaced by the last surgery.
  int64_t replaced() const noexcept { return replaced_; }

 private:
  LowPrecisionGroupNormOptions options_;
  AlgorithmSpec spec_;
  int64_t replaced_ = 0;
};

}  // namespace tessera::algorithms
