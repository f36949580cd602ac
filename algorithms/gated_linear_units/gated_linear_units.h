#pragma once
/// Gated linear units (Shazeer 2020, "GLU Variants Improve Transformer"; Composer's GatedLinearUnits): every
/// transformer feed-forward network proj(gelu(fc(x))) becomes proj(gelu(fc_gated(x)) ⊙ fc_linear(x)) (GeGLU).
///
/// Surgery at Init on every tessera::FeedForward in a slot (a gpt block's "mlp", models/gpt.h): two new Linear layers
/// d_model → d_ff, fc_gated and fc_linear (no biases by default, as Composer's defaults; initialised as GPT-2's,
/// normal(0, 0.02)), replace fc; the output projection proj is kept with its weights and optimizer state. The new
/// layers join the optimizer's first group; fc leaves it. As in Composer, d_ff is kept, so each network has
/// d_model·d_ff more weights.
///
///     int64_t n = tessera::algorithms::apply_gated_linear_units(*model, {}, optimizer.get());
#include <cstdint>
#include <memory>

#include <torch/nn/modules/container/any.h>

#include <tessera/algorithm.h>
#include <tessera/models/gpt.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct GatedLinearUnitsOptions {
  /// A bias on the gated layer.
  TESSERA_OPTION(bool, gated_layer_bias) = false;
  /// A bias on the linear (non-gated) layer.
  TESSERA_OPTION(bool, non_gated_layer_bias) = false;
  template <class V>
  void visit(V& v) {
    v("gated_layer_bias", gated_layer_bias_, "a bias on the gated layer", Any{});
    v("non_gated_layer_bias", non_gated_layer_bias_, "a bias on the linear (non-gated) layer", Any{});
  }
};

/// The GLU feed-forward network (models/gpt.h), here in the algorithm's namespace too.
using tessera::GatedFeedForward;

/// A GatedFeedForward for `original`'s sizes and activation: new gated layers per `options`, original's proj
/// module shared (the same parameters). InputError when surgery replaced original's fc by something else.
std::shared_ptr<GatedFeedForward> gate(FeedForward& original, const GatedLinearUnitsOptions& options);

/// The functional form of the network: proj(gelu(x·W_g^T + b_g) ⊙ (x·W_l^T + b_l)) with the given weights (biases
/// may be undefined), as GatedFeedForward computes it; `activation` "gelu" (exact), "gelu_tanh" or "silu".
at::Tensor gated_linear_unit(const at::Tensor& x, const at::Tensor& w_gated, const at::Tensor& b_gated,
                             const at::Tensor& w_linear, const at::Tensor& b_linear,
                             const std::string& activation = "gelu");

/// The surgery: every FeedForward in a slot of `model` replaced by a GatedFeedForward (the optimizer, if given, kept
/// consistent). Returns how many were replaced.
int64_t apply_gated_linear_units(torch::nn::Module& model, const GatedLinearUnitsOptions& options,
                                 optim::Optimizer* optimizer = nullptr);

/// The algorithm (recipe name "gated_linear_units").
class GatedLinearUnits : public Algorithm {
 public:
  explicit GatedLinearUnits(GatedLinearUnitsOptions options = GatedLinearUnitsOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// A model with at least one FeedForward in a slot (a model built `gated` has GatedFeedForwards already: refused).
  void check(const State& state) const override;
  const GatedLinearUnitsOptions& options() const noexcept { return options_; }
  /// Feed-forward networks replaced by the last surgery.
  int64_t replaced() const noexcept { return replaced_; }

 private:
  GatedLinearUnitsOptions options_;
  AlgorithmSpec spec_;
  int64_t replaced_ = 0;
};

}  // namespace tessera::algorithms
