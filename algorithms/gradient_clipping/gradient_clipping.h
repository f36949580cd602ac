#pragma once
/// Gradient clipping: bounds the gradients once per step, after every microbatch's backward and before the
/// optimizer steps (AFTER_TRAIN_BATCH, where Composer clips too), so it sees the whole batch's gradient.
///
/// Three kinds (`clipping_type`), with τ = `clipping_threshold`:
///   * norm: the global L2 norm ‖g‖ of all gradients is brought to at most τ: g ← g·min(1, τ/(‖g‖ + 1e-6)),
///     as torch.nn.utils.clip_grad_norm_;
///   * value: each gradient element is clamped to [−τ, τ];
///   * adaptive (AGC, Brock et al. 2021): per parameter and unit (the rows of dimension 0; the whole tensor for
///     ≤ 1-D parameters), g ← g·min(1, τ·‖w‖/max(‖g‖, 1e-6)), a coefficient that is NaN becoming 1.
/// Only parameters that have a gradient take part (frozen layers have none). Stateless, so resume is exact.
///
///     tessera::algorithms::clip_gradients(model.parameters(), "norm", 1.0);
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct GradientClippingOptions {
  TESSERA_OPTION(std::string, clipping_type) = "norm";
  TESSERA_OPTION(double, clipping_threshold) = 1.0;
  template <class V>
  void visit(V& v) {
    v("clipping_type", clipping_type_, "what is bounded: the global norm, each value, or each unit (AGC)",
      Choices{{"norm", "value", "adaptive"}});
    v("clipping_threshold", clipping_threshold_, "the bound (tau)", Range::positive());
  }
};

/// The global L2 norm of `grads` (torch.nn.utils.clip_grad_norm_'s total norm): the norm of the per-tensor norms,
/// a 0-d float32 tensor on their device, not read back. `grads` must not be empty. (SAM's perturbation uses it too.)
at::Tensor global_norm(const std::vector<at::Tensor>& grads);

/// Functional form: clips the gradients of `parameters` (those without one are skipped) in place. Returns the
/// global L2 norm of the gradients before clipping for "norm" (a 0-d tensor on their device; undefined when
/// none has a gradient), and an undefined tensor for the other kinds. InputError for an unknown kind or a
/// threshold that is not > 0.
at::Tensor clip_gradients(const std::vector<at::Tensor>& parameters, const std::string& clipping_type,
                          double clipping_threshold);

/// The algorithm (recipe name "gradient_clipping").
class GradientClipping : public Algorithm {
 public:
  explicit GradientClipping(GradientClippingOptions options = GradientClippingOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  const GradientClippingOptions& options() const noexcept { return options_; }

 private:
  GradientClippingOptions options_;
  AlgorithmSpec spec_;
};

}  // namespace tessera::algorithms
