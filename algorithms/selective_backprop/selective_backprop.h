#pragma once
/// Selective backprop (Jiang et al. 2019; reference §2.1): train on the examples with the highest loss.
///
/// At AfterDataloader, on the full batch, when scheduled (start <= elapsed < end, and not on every
/// `interrupt`-th batch), each example is scored by its loss without gradient, the batch is ranked, and
/// ⌊keep·N⌋ examples are drawn without replacement with weights ((j + 0.5)/N)^(1/keep − 1) by rank j
/// (ascending loss); the kept rows of every batch part (inputs, targets, extras) go on. The timestamp still
/// counts the full batch; the gradient is the mean over the kept examples.
///
/// Fixes over the original: it runs before every other after_dataloader algorithm that changes the batch
/// (declared, so the engine keeps it first even though after_* events reverse the recipe order); scoring
/// does not move batch-norm running statistics; its random draws are a pure function of (seed, batch), so
/// resuming needs no state; a model without per-example losses is refused at plan time.
///
///     at::Tensor keep_rows = tessera::algorithms::select_by_loss(losses, 0.5, rng);
#include <cstdint>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

struct SelectiveBackpropOptions {
  /// Start of the schedule, as a fraction of training.
  TESSERA_OPTION(double, start) = 0.5;
  /// End of the schedule (exclusive).
  TESSERA_OPTION(double, end) = 0.9;
  /// Fraction of each batch kept.
  TESSERA_OPTION(double, keep) = 0.5;
  /// Score on inputs downscaled by this factor (1 = full resolution).
  TESSERA_OPTION(double, scale_factor) = 1.0;
  /// Every `interrupt`-th batch trains on the full batch (0 = never).
  TESSERA_OPTION(int64_t, interrupt) = 2;
  template <class V>
  void visit(V& v) {
    v("start", start_, "start of the schedule (fraction of training)", Range::closed(0, 1));
    v("end", end_, "end of the schedule (fraction of training)", Range::closed(0, 1));
    v("keep", keep_, "fraction of each batch kept", Range::open_closed(0, 1));
    v("scale_factor", scale_factor_, "downscaling of the inputs for scoring", Range::open_closed(0, 1));
    v("interrupt", interrupt_, "every N-th batch is not pruned (0 = never)", Range::at_least(0));
  }
};

/// Selection probabilities by loss: p[i] ∝ ((rank(i) + 0.5)/N)^(1/keep − 1), rank ascending by loss.
at::Tensor selection_weights(const at::Tensor& losses, double keep);

/// Indices (int64, ascending) of ⌊keep·N⌋ examples drawn without replacement with the weights above, using
/// `rng` (Efraimidis–Spirakis keys log(u)/w, the same distribution as successive draws).
at::Tensor select_by_loss(const at::Tensor& losses, double keep, Rng& rng);

/// The algorithm (recipe name "selective_backprop").
class SelectiveBackprop : public Algorithm {
 public:
  explicit SelectiveBackprop(SelectiveBackpropOptions options = SelectiveBackpropOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  bool match(Event event, const State& state) const override;
  void apply(Event event, State& state, Logger& logger) override;
  /// The model must give per-example losses.
  void check(const State& state) const override;
  const SelectiveBackpropOptions& options() const noexcept { return options_; }

 private:
  at::Tensor score(State& state) const;
  SelectiveBackpropOptions options_;
  AlgorithmSpec spec_;
};

}  // namespace tessera::algorithms
