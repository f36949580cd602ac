#pragma once
/// Sharpness-aware minimisation (SAM; Foret et al. 2021, "Sharpness-Aware Minimization for Efficiently Improving
/// Generalization"), as Composer's SAM: on every `interval`-th batch the step takes the gradient at a nearby
/// point of higher loss instead of at the weights themselves.
///
/// At AFTER_TRAIN_BATCH, where the gradient g of the whole batch is there (every microbatch's backward done,
/// averaged over the ranks, unscaled with a loss scaler):
///   1. each parameter with a gradient moves by e = rho·g / (‖g‖ + epsilon), ‖g‖ the global L2 norm over all
///      of them (no move when ‖g‖ is not finite: the loss scaler then skips the step anyway);
///   2. the trainer's State::recompute_gradients runs the forward, loss and backward of every microbatch of the
///      batch again at w + e (averaged over the ranks and unscaled like the first pass);
///   3. the parameters get their exact values back (copied, not w + e − e), and so do the module buffers (the
///      batch-norm statistics stay those of the first forward: the second forward is at weights the model
///      never takes);
///   4. the optimizer then steps with the gradients of the second pass (after any gradient clipping, which the
///      plan orders after SAM).
/// On the other batches it does nothing (one pass, a plain step). The batch counts from 0, so with interval k
/// the batches k−1, 2k−1, ... take the double pass, as Composer's (global_step + 1) % interval == 0.
/// Stateless (rho, epsilon and interval are options, the schedule is the batch count): resume is exact.
///
///     auto norm = tessera::algorithms::sam_gradients(model->parameters(), [&] { recompute(); }, 0.05);
#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct SAMOptions {
  TESSERA_OPTION(double, rho) = 0.05;
  TESSERA_OPTION(double, epsilon) = 1e-12;
  TESSERA_OPTION(int64_t, interval) = 1;
  template <class V>
  void visit(V& v) {
    v("rho", rho_, "the radius of the perturbation (the L2 norm of the whole parameter move)", Range::positive());
    v("epsilon", epsilon_, "added to the gradient norm before dividing by it", Range::at_least(0));
    v("interval", interval_, "every interval-th batch takes the double pass; the others a plain step",
      Range::at_least(1));
  }
};

/// Functional form of one SAM gradient. With the gradients of `parameters` at w (those without one take no
/// part): moves them to w + rho·g/(‖g‖ + epsilon) (no move when ‖g‖ is not finite), calls `recompute`, which must
/// leave in .grad the gradients at those parameters (zeroing them first), and copies w back. Returns ‖g‖ (0-d
/// float32 on the gradients' device; undefined when no parameter has a gradient, and then `recompute` is not
/// called). InputError for rho <= 0 or epsilon < 0; what `recompute` throws leaves the parameters restored.
at::Tensor sam_gradients(const std::vector<at::Tensor>& parameters, const std::function<void()>& recompute,
                         double rho = 0.05, double epsilon = 1e-12);

/// The algorithm (recipe name "sam").
class SAM : public Algorithm {
 public:
  explicit SAM(SAMOptions options = SAMOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  /// At after_train_batch, on the batches of the interval.
  bool match(Event event, const State& state) const override;
  void apply(Event event, State& state, Logger& logger) override;
  const SAMOptions& options() const noexcept { return options_; }

 private:
  SAMOptions options_;
  AlgorithmSpec spec_;
};

}  // namespace tessera::algorithms
