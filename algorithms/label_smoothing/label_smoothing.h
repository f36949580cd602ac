#pragma once
/// Label smoothing (Szegedy et al. 2016; reference §2.1): train against (1 − α)·onehot(y) + α/C.
///
/// At BeforeLoss the loss is computed against smoothed targets; at AfterLoss the original targets are back.
/// With integer class targets and a cross-entropy model the default `fused` path never builds the dense
/// targets: it installs the loss (1 − α)·CE(x, y) + α·mean_c(−log softmax(x)_c), which is the same value.
/// Dense targets (or a model whose loss is not cross-entropy) take the dense path: the loss is computed against
/// smooth_labels() of the targets of the batch it is given (so an algorithm that also computes it against
/// permuted targets, MixUp or CutMix, gets those smoothed as well).
///
///     at::Tensor t = tessera::algorithms::smooth_labels(targets, /*num_classes=*/10, /*alpha=*/0.1);
///     at::Tensor loss = tessera::algorithms::smoothed_cross_entropy(logits, labels, 0.1);
#include <cstdint>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct LabelSmoothingOptions {
  /// α: weight of the uniform distribution.
  TESSERA_OPTION(double, smoothing) = 0.1;
  /// Compute the smoothed loss without dense targets when possible.
  TESSERA_OPTION(bool, fused) = true;
  template <class V>
  void visit(V& v) {
    v("smoothing", smoothing_, "weight alpha of the uniform distribution", Range::closed_open(0, 1));
    v("fused", fused_, "fused loss without dense targets (integer targets, cross-entropy models)", Any{});
  }
};

/// (1 − α)·t + α/C with t = onehot(targets) for integer targets [N, ...] (class dimension 1 in the result:
/// [N, C, ...]) or t = targets for dense targets [N, C, ...].
at::Tensor smooth_labels(const at::Tensor& targets, int64_t num_classes, double alpha);

/// (1 − α)·CE(logits, labels) + α·mean_c(−log softmax(logits)_c) for logits [N, C, ...] and integer labels
/// [N, ...]: equal to the cross-entropy against smooth_labels(labels, C, α), without building it.
at::Tensor smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, double alpha,
                                  Reduction reduction = Reduction::Mean);

/// The algorithm (recipe name "label_smoothing").
class LabelSmoothing : public Algorithm {
 public:
  explicit LabelSmoothing(LabelSmoothingOptions options = LabelSmoothingOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// Refuses a model whose loss does not read the targets at BeforeLoss (it computes its loss in forward).
  void check(const State& state) const override;
  const LabelSmoothingOptions& options() const noexcept { return options_; }

 private:
  LabelSmoothingOptions options_;
  AlgorithmSpec spec_;
};

}  // namespace tessera::algorithms
