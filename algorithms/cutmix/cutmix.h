#pragma once
/// CutMix (Yun et al. 2019; reference §2.2): paste a box of a partner image into each image.
///
/// At AfterDataloader, on the full batch (after selective backprop and progressive resizing, so that the box is
/// drawn on the size the model sees), λ ~ Beta(α, α), a permutation π of the batch and a box are drawn from
/// (seed, batch): sides ⌊H·√(1 − λ)⌋ × ⌊W·√(1 − λ)⌋ around a centre uniform over the image (or over the image
/// grown by half the box with `uniform_sampling`, so that every pixel is equally likely to be covered), clipped
/// to the image. The same box of x[π] is pasted into every image, and λ becomes the fraction of each image that is
/// still its own: λ = 1 − box area/(H·W). The loss is interpolated exactly as MixUp's (mixup.h):
///     L ← λ·L(outputs, y) + (1 − λ)·L(outputs, y[π]),
/// with y[π] carried as the batch part "cutmix_target".
///
///     tessera::Rng rng(seed);
///     auto mixed = tessera::algorithms::cutmix_batch(x, y, /*alpha=*/1.0, rng);
#include <cstdint>

#include <ATen/Tensor.h>

#include <tessera/algorithms/mixup.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

struct CutMixOptions {
  /// α of the Beta(α, α) distribution of λ (0: no mixing).
  TESSERA_OPTION(double, alpha) = 1.0;
  /// Draw the box centre over the image grown by half the box, so every pixel is equally likely to be covered.
  TESSERA_OPTION(bool, uniform_sampling) = false;
  template <class V>
  void visit(V& v) {
    v("alpha", alpha_, "alpha of Beta(alpha, alpha), the distribution of the mixing weight (0 = no mixing)",
      Range::at_least(0));
    v("uniform_sampling", uniform_sampling_, "box centres over the image grown by half the box (every pixel equally likely)",
      Any{});
  }
};

/// A box of an image: rows [top, top + height), columns [left, left + width).
struct CutMixBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

/// A box of sides box_height × box_width on an image of height × width: centre column cx then row cy drawn from
/// `rng`, uniform in [0, width) × [0, height) (with `uniform_sampling`: in [−⌊w/2⌋, width + w − ⌊w/2⌋) and
/// likewise for rows, w = box_width); corners cx ± ⌊w/2⌋, cy ± ⌊h/2⌋ clipped to the image. (CutMix's box and
/// CutOut's holes.)
CutMixBox random_box(int64_t height, int64_t width, int64_t box_height, int64_t box_width, Rng& rng,
                     bool uniform_sampling = false);

/// The box for λ on an image of height × width: random_box with sides h = ⌊height·√(1 − λ)⌋, w = ⌊width·√(1 − λ)⌋.
CutMixBox cutmix_box(int64_t height, int64_t width, double lambda, Rng& rng, bool uniform_sampling = false);

/// A mixed batch with its box.
struct CutMixBatch : MixedBatch {
  CutMixBox box;
};

/// Images [N, C, H, W] (floating point) with `box` of input[indices] pasted into each; target[indices]; λ = 1 − box
/// area/(H·W).
CutMixBatch cutmix_batch(const at::Tensor& input, const at::Tensor& target, const CutMixBox& box,
                         const at::Tensor& indices);

/// The same with λ₀ = sample_mixing(alpha, rng), indices = mixing_permutation(N, rng) and box = cutmix_box(H, W, λ₀,
/// rng, uniform_sampling), drawn in that order.
CutMixBatch cutmix_batch(const at::Tensor& input, const at::Tensor& target, double alpha, Rng& rng,
                         bool uniform_sampling = false);

/// The algorithm (recipe name "cutmix").
class CutMix : public MixingAlgorithm {
 public:
  explicit CutMix(CutMixOptions options = CutMixOptions());
  const CutMixOptions& options() const noexcept { return options_; }
  /// The box of the last batch.
  const CutMixBox& last_box() const noexcept { return last_box_; }

 protected:
  MixedBatch mix(const at::Tensor& input, const at::Tensor& target, Rng& rng) override;
  uint64_t stream_id() const override { return 0xc07313ULL; }

 private:
  CutMixOptions options_;
  CutMixBox last_box_;
};

}  // namespace tessera::algorithms
