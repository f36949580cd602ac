#pragma once
/// MixUp (Zhang et al. 2018; reference §2.2): train on convex combinations of pairs of examples.
///
/// At AfterDataloader, on the full batch (after selective backprop and progressive resizing), λ ~ Beta(α, α)
/// and a permutation π of the batch are drawn from (seed, batch), and the inputs become
///     x ← λ·x + (1 − λ)·x[π].
/// The permuted targets y[π] travel with the batch as its part "mixup_target" (so they follow microbatch splits,
/// device moves and retries) until BeforeForward, where each microbatch hands its share to the algorithm (the model
/// sees the batch as the data gave it). At BeforeLoss the loss becomes
///     L ← λ·L(outputs, y) + (1 − λ)·L(outputs, y[π])
/// where L is the loss the trainer would compute otherwise (the model's, or the one label smoothing installed:
/// both target sets are then smoothed). For cross-entropy this equals the loss against the mixed dense targets
/// λ·onehot(y) + (1 − λ)·onehot(y[π]) (it is linear in the targets). At AfterLoss the loss is the trainer's again.
///
/// λ is the weight of the original example (the paper's convention). Composer draws z ~ Beta(α, α) and weighs the
/// permuted example by min(z, 1 − z); with a uniformly random π the two give the same distribution of training
/// pairs. Draws are a pure function of (seed, batch), so resuming needs no algorithm state.
///
///     tessera::Rng rng(seed);
///     auto mixed = tessera::algorithms::mixup_batch(x, y, /*alpha=*/0.2, rng);
///     at::Tensor loss = tessera::algorithms::mixed_loss(ce(out, y), ce(out, mixed.target_perm), mixed.lambda);
#include <cstdint>
#include <string>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

struct MixUpOptions {
  /// α of the Beta(α, α) distribution of the mixing weight λ (0: no mixing, λ = 1).
  TESSERA_OPTION(double, alpha) = 0.2;
  template <class V>
  void visit(V& v) {
    v("alpha", alpha_, "alpha of Beta(alpha, alpha), the distribution of the mixing weight (0 = no mixing)",
      Range::at_least(0));
  }
};

/// A batch mixed with its permutation: the mixed inputs, the permuted targets, the permutation and λ (the weight of
/// the original examples).
struct MixedBatch {
  at::Tensor input;
  at::Tensor target_perm;
  at::Tensor indices;  ///< int64 [N]: example i is mixed with example indices[i]
  double lambda = 1.0;
};

/// log of a Gamma(shape, 1) draw from `rng` (shape > 0); MixUp's Beta draws and AugMix's Dirichlet weights use it.
double log_gamma_sample(double shape, Rng& rng);

/// λ ~ Beta(α, α) drawn from `rng` (two Gamma(α) draws, Marsaglia–Tsang); α = 0 gives 1 (no mixing).
double sample_mixing(double alpha, Rng& rng);

/// A uniformly random permutation of 0..n-1 (int64 [n], on the CPU) drawn from `rng`.
at::Tensor mixing_permutation(int64_t n, Rng& rng);

/// λ·input + (1 − λ)·input[indices], and target[indices]. `input` floating point, first dimension N; `indices`
/// int64 [N] on any device.
MixedBatch mixup_batch(const at::Tensor& input, const at::Tensor& target, double lambda, const at::Tensor& indices);

/// The same with λ = sample_mixing(alpha, rng) and indices = mixing_permutation(N, rng), drawn in that order.
MixedBatch mixup_batch(const at::Tensor& input, const at::Tensor& target, double alpha, Rng& rng);

/// λ·loss_original + (1 − λ)·loss_permuted: the interpolated loss of MixUp and CutMix.
at::Tensor mixed_loss(const at::Tensor& loss_original, const at::Tensor& loss_permuted, double lambda);

/// What MixUp and CutMix share: the mix at AfterDataloader (done by `mix`), the permuted targets carried as the
/// batch part `target_key()` until BeforeForward (taken out of each microbatch there), the interpolated loss
/// installed at BeforeLoss and removed at AfterLoss, and the plan-time checks of the data and the model.
class MixingAlgorithm : public Algorithm {
 public:
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// Inputs and targets in the training batches, floating-point inputs (images [N, C, H, W] where
  /// `needs_images`), class-id or dense class targets, and a model whose loss reads the targets.
  void check(const State& state) const override;
  /// The batch part that carries the permuted targets ("mixup_target", "cutmix_target").
  const std::string& target_key() const noexcept { return target_key_; }
  /// λ of the last batch (the weight of the original examples; for CutMix, after adjusting to the box).
  double last_lambda() const noexcept { return last_lambda_; }
  /// The permutation of the last batch (int64 [N]; undefined before the first).
  const at::Tensor& last_indices() const noexcept { return last_indices_; }

 protected:
  /// `name`: the recipe name; `input_order_reason`: why it runs after the writers of the resolution;
  /// `other_mixer`: the other mixing algorithm, refused in the same run.
  MixingAlgorithm(std::string name, bool needs_images, const std::string& input_order_reason,
                  const std::string& other_mixer);
  /// Mixes the batch's inputs, drawing from `rng`.
  virtual MixedBatch mix(const at::Tensor& input, const at::Tensor& target, Rng& rng) = 0;
  /// A distinct random stream id per algorithm.
  virtual uint64_t stream_id() const = 0;

  AlgorithmSpec spec_;

 private:
  std::string target_key_;
  bool needs_images_;
  double last_lambda_ = 1.0;
  at::Tensor last_indices_;
  at::Tensor microbatch_target_perm_;  ///< the permuted targets of the current microbatch (before_forward to after_loss)
};

/// The algorithm (recipe name "mixup").
class MixUp : public MixingAlgorithm {
 public:
  explicit MixUp(MixUpOptions options = MixUpOptions());
  const MixUpOptions& options() const noexcept { return options_; }

 protected:
  MixedBatch mix(const at::Tensor& input, const at::Tensor& target, Rng& rng) override;
  uint64_t stream_id() const override { return 0x313ed0ULL; }

 private:
  MixUpOptions options_;
};

}  // namespace tessera::algorithms
