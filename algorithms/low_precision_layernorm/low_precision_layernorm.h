#pragma once
/// Low-precision LayerNorm (Composer's LowPrecisionLayerNorm): under autocast, LayerNorms run in the autocast dtype
/// (bf16 or fp16) instead of fp32, where autocast would put them, which saves memory traffic on GPUs. Outside
/// autocast a layer computes exactly as torch::nn::LayerNorm does.
///
/// Surgery at Init on every torch::nn::LayerNorm in a slot: a LowPrecisionLayerNorm that registers the very same
/// weight and bias under the same names (no state-dict key, optimizer entry or value changes). Under autocast on the
/// input's device: input, weight and bias cast to the autocast dtype, then layer_norm with autocast off for the call;
/// the output stays in that dtype. Without mixed precision it would change nothing, so such a run is refused before
/// step 1 (precision fp32).
///
///     int64_t n = tessera::algorithms::apply_low_precision_layernorm(*model);
#include <cstdint>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct LowPrecisionLayerNormOptions {
  template <class V>
  void visit(V&) {}
};

/// layer_norm(x, normalized_shape, weight, bias, eps) computed in the autocast dtype of x's device when autocast is on
/// there (inputs cast to it, autocast off for the call), else exactly torch's layer_norm.
at::Tensor low_precision_layer_norm(const at::Tensor& x, const std::vector<int64_t>& normalized_shape,
                                    const at::Tensor& weight, const at::Tensor& bias, double eps);

/// The layer: a torch::nn::LayerNorm's shape, eps and its very tensors ("weight", "bias"), computed with
/// low_precision_layer_norm.
class LowPrecisionLayerNormImpl : public torch::nn::Module {
 public:
  LowPrecisionLayerNormImpl(std::vector<int64_t> normalized_shape, double eps, at::Tensor weight, at::Tensor bias);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::vector<int64_t> normalized_shape_;
  double eps_;
  at::Tensor weight_, bias_;
};

/// The surgery: every torch::nn::LayerNorm in a slot of `model` replaced by a LowPrecisionLayerNormImpl. Returns how
/// many were replaced.
int64_t apply_low_precision_layernorm(torch::nn::Module& model);

/// The algorithm (recipe name "low_precision_layernorm").
class LowPrecisionLayerNorm : public Algorithm {
 public:
  explicit LowPrecisionLayerNorm(LowPrecisionLayerNormOptions options = LowPrecisionLayerNormOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// Mixed precision (amp_bf16 or amp_fp16), and a model with at least one LayerNorm in a slot.
  void check(const State& state) const override;
  const LowPrecisionLayerNormOptions& options() const noexcept { return options_; }
  /// LayerNorms replaced by the last surgery.
  int64_t replaced() const noexcept { return replaced_; }

 private:
  LowPrecisionLayerNormOptions options_;
  AlgorithmSpec spec_;
  int64_t replaced_ = 0;
};

}  // namespace tessera::algorithms
