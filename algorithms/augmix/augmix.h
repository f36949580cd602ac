#pragma once
/// AugMix (Hendrycks et al. 2020; Composer's AugMix, without the Jensen–Shannon consistency loss, as Composer's):
/// each image becomes a mix of itself and `width` chains of augmentations.
///
/// Per image: chain weights w ~ Dirichlet(α, …, α) (`width` of them), a skip weight m ~ Beta(α, α), then for each
/// chain k a depth of `depth` operations (a uniform 1..3 when `depth` is −1), each drawn uniformly from the
/// augmentation set and applied at `severity` (the operations and magnitudes of RandAugment, randaugment.h); the
/// image becomes (1 − m)·x + m·Σ_k w_k·chain_k(x). The draws come in that order (Composer's), all from the image's
/// generator. Composer rounds the mix to 8-bit; here it stays float in [0, 1] (a convex combination of images in
/// [0, 1]).
///
/// Like RandAugment it runs in the data pipeline: the Trainer sets its transform on the training DataLoader, which
/// applies it on its threads before its own transforms, example i of batch b of epoch e from a generator keyed by
/// (seed, e, b, i), so resuming is exact and every rank count sees the same images. With RandAugment in the same run
/// both apply (in recipe order) and the engine warns: the distortions compound.
///
///     tessera::Rng rng(seed);
///     at::Tensor x2 = tessera::algorithms::augmix_images(x, /*severity=*/3, /*depth=*/-1, /*width=*/3,
///                                                        /*alpha=*/1.0, tessera::algorithms::augmentation_set("all"),
///                                                        rng);
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/algorithms/randaugment.h>
#include <tessera/data/transforms.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

struct AugMixOptions {
  /// Magnitude of the augmentations (0..10).
  TESSERA_OPTION(int64_t, severity) = 3;
  /// Operations per chain; −1: a uniform 1..3 per chain.
  TESSERA_OPTION(int64_t, depth) = -1;
  /// Chains mixed per image.
  TESSERA_OPTION(int64_t, width) = 3;
  /// α of the Dirichlet chain weights and of the Beta skip weight.
  TESSERA_OPTION(double, alpha) = 1.0;
  /// "all", "safe" or "original" (augmentation_set in randaugment.h).
  TESSERA_OPTION(std::string, augmentation_set) = "all";
  template <class V>
  void visit(V& v) {
    v("severity", severity_, "magnitude of the augmentations", Range::closed(0, 10));
    v("depth", depth_, "operations per chain (-1: a random 1 to 3)", Range::at_least(-1));
    v("width", width_, "augmentation chains mixed per image", Range::at_least(1));
    v("alpha", alpha_, "alpha of the Dirichlet chain weights and the Beta skip weight", Range::positive());
    v("augmentation_set", augmentation_set_, "the operations drawn from", Choices{{"all", "safe", "original"}});
  }
};

/// The mixing weights of one image: the chains' (Dirichlet, summing to 1) and the skip weight m (Beta) of the
/// augmented mix against the original.
struct AugMixWeights {
  std::vector<double> chains;
  double mix = 0.0;
};

/// `width` log-Gamma(α) draws normalized to Dirichlet weights, then m = Beta(α, α) (sample_mixing, mixup.h).
AugMixWeights augmix_weights(int64_t width, double alpha, Rng& rng);

/// AugMix of one image [C, H, W] (or a batch treated as one image): augmix_weights, then the chains, as the file
/// comment says. `depth` is −1 or ≥ 1.
at::Tensor augmix_image(const at::Tensor& image, int64_t severity, int64_t depth, int64_t width, double alpha,
                        const std::vector<std::string>& ops, Rng& rng);

/// Every image of `images` [N, C, H, W] through augmix_image with its own generator rng.derive({i}) (rng is not
/// advanced).
at::Tensor augmix_images(const at::Tensor& images, int64_t severity, int64_t depth, int64_t width, double alpha,
                         const std::vector<std::string>& ops, Rng& rng);

/// AugMix as a transform of the data pipeline: augmix_images on the batch's input with rng.derive({stream}).
class AugMixTransform : public data::BatchTransform {
 public:
  explicit AugMixTransform(AugMixOptions options = AugMixOptions());
  void apply(Batch& batch, Rng& rng) const override;
  std::string name() const override { return "augmix"; }
  /// Each image from a generator of its own derived from its row: a data-parallel rank may decode only its rows.
  bool per_example() const override { return true; }

 private:
  AugMixOptions options_;
};

/// The algorithm (recipe name "augmix"): AugMixTransform in the training DataLoader.
class AugMix : public Algorithm {
 public:
  explicit AugMix(AugMixOptions options = AugMixOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  /// Nothing on the training thread (the DataLoader's threads did the work).
  void apply(Event, State&, Logger&) override {}
  /// As RandAugment's: float image inputs [C, H, W] per example with intensities in [0, 1].
  void check(const State& state) const override;
  std::shared_ptr<const data::BatchTransform> data_transform() const override { return transform_; }
  const AugMixOptions& options() const noexcept { return options_; }

 private:
  AugMixOptions options_;
  AlgorithmSpec spec_;
  std::shared_ptr<const data::BatchTransform> transform_;
};

}  // namespace tessera::algorithms
