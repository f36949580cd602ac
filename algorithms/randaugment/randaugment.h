#pragma once
/// RandAugment (Cubuk et al. 2020; Composer's RandAugment): `depth` augmentations per image, each drawn uniformly
/// from an augmentation set and applied at a random magnitude that grows with `severity`.
///
/// It runs in the data pipeline: the Trainer sets its transform on the training DataLoader (before Init), which
/// applies it on its threads to every batch before its own transforms (so before `normalize`, on the images as the
/// dataset gives them, intensities in [0, 1], as Composer inserts it before ToTensor). Example i of batch b of epoch
/// e draws from a generator keyed by (seed, e, b, i): a batch is a pure function of its position, the same on any
/// thread, after a resume, and on any number of ranks (each rank augments the global batch, then takes its share).
/// It declares that it writes the inputs at before_dataloader (the pipeline produces the batch the trainer takes
/// next), so every algorithm at after_dataloader (selective backprop, ColOut, progressive resizing, CutOut, CutMix,
/// MixUp) sees augmented images, in full resolution.
///
/// The operations (namespace `augment`) work on float images [..., C, H, W] with intensities in [0, 1] (C = 1, as
/// Fashion-MNIST, or 3; the colour operations need one of those), with ATen ops on any device. The magnitudes follow
/// Composer's `composer/utils/augmentation_primitives.py` (public repository): a level l ~ U(0.1, severity), then
///   posterize   keep 4 − ⌊l·4/10⌋ bits of the 8-bit value
///   solarize    invert the intensities ≥ (256 − ⌊l·256/10⌋)/255
///   rotate      ±⌊l·30/10⌋ degrees about the centre (bilinear, zero fill)
///   shear_x/y   ±l·0.3/10 (about the top-left corner)
///   translate   ±⌊l·(W or H)/3/10⌋ pixels
///   color, contrast, brightness, sharpness ("all", "safe" leaves them out): factor f from a symmetric draw, with
///               probability ½ f ~ U(1, severity), else f ~ U(1 − 0.09·severity, 1); "original": f = l·1.8/10 + 0.1
///   autocontrast, equalize: no magnitude.
/// A sign is drawn after the magnitude (negative with probability ½). Enhancements blend with PIL's degenerate
/// images (grey, mean grey, black, smoothed) and clip to [0, 1]; posterize and equalize quantize to 256 levels.
///
///     tessera::Rng rng(seed);
///     at::Tensor x2 = tessera::algorithms::randaugment_images(x, /*severity=*/9, /*depth=*/2,
///                                                             tessera::algorithms::augmentation_set("all"), rng);
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/data/transforms.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

/// The augmentation operations, each on float images [..., C, H, W] with intensities in [0, 1] (every image and
/// channel alike), returning a new tensor.
namespace augment {

/// Each channel of each image stretched to [0, 1]: (x − min)/(max − min); a constant channel is left as it is.
at::Tensor autocontrast(const at::Tensor& images);
/// PIL's histogram equalization per channel of each image, on the 256 levels round(255·x): with h the histogram and
/// step = ⌊(Σh − h[last non-empty level])/255⌋, level v maps to ⌊(⌊step/2⌋ + Σ_{u<v} h[u])/step⌋ (clipped to 255);
/// step 0 leaves the channel as it is. Returns levels/255.
at::Tensor equalize(const at::Tensor& images);
/// The 8-bit value round(255·x) with only its `bits` high bits kept (0..8), over 255.
at::Tensor posterize(const at::Tensor& images, int64_t bits);
/// 1 − x where x ≥ threshold, else x.
at::Tensor solarize(const at::Tensor& images, double threshold);
/// PIL's affine transform: output pixel (x, y) (centre (x + ½, y + ½)) takes the input at
/// (a·(x + ½) + b·(y + ½) + c, d·(x + ½) + e·(y + ½) + f), bilinear between pixel centres, zero outside;
/// m = {a, b, c, d, e, f}.
at::Tensor affine(const at::Tensor& images, const std::array<double, 6>& m);
/// Counter-clockwise rotation by `degrees` about the image centre (PIL's Image.rotate).
at::Tensor rotate(const at::Tensor& images, double degrees);
/// affine {1, factor, 0, 0, 1, 0} and {1, 0, 0, factor, 1, 0}.
at::Tensor shear_x(const at::Tensor& images, double factor);
at::Tensor shear_y(const at::Tensor& images, double factor);
/// affine {1, 0, pixels, 0, 1, 0} and {1, 0, 0, 0, 1, pixels}: the content moves left (up) by `pixels`.
at::Tensor translate_x(const at::Tensor& images, double pixels);
at::Tensor translate_y(const at::Tensor& images, double pixels);
/// PIL's ImageEnhance: clip(degenerate + factor·(x − degenerate), 0, 1) with degenerate the image's grey
/// (luma 0.299 R + 0.587 G + 0.114 B on all three channels; one channel is its own grey), a constant image of the
/// mean grey, black, or the image smoothed by [[1, 1, 1], [1, 5, 1], [1, 1, 1]]/13 inside its one-pixel border.
at::Tensor color(const at::Tensor& images, double factor);
at::Tensor contrast(const at::Tensor& images, double factor);
at::Tensor brightness(const at::Tensor& images, double factor);
at::Tensor sharpness(const at::Tensor& images, double factor);

/// The names of the operations apply() knows: autocontrast, equalize, posterize, rotate, solarize, shear_x,
/// shear_y, translate_x, translate_y, color, contrast, brightness, sharpness, color_original, contrast_original,
/// brightness_original, sharpness_original.
const std::vector<std::string>& operation_names();

/// Operation `op` at a magnitude drawn from `rng` for `severity` (0..10), as the file comment says.
at::Tensor apply(const std::string& op, const at::Tensor& images, double severity, Rng& rng);

}  // namespace augment

/// Composer's augmentation sets: "all" (every operation with the symmetric enhancements), "safe" (without the
/// four enhancements, which overlap with ImageNet-C/CIFAR-10-C corruptions) and "original" (the enhancements with
/// their original magnitudes).
const std::vector<std::string>& augmentation_set(const std::string& name);

struct RandAugmentOptions {
  /// Magnitude of the augmentations (0..10).
  TESSERA_OPTION(int64_t, severity) = 9;
  /// Augmentations per image.
  TESSERA_OPTION(int64_t, depth) = 2;
  /// "all", "safe" or "original".
  TESSERA_OPTION(std::string, augmentation_set) = "all";
  template <class V>
  void visit(V& v) {
    v("severity", severity_, "magnitude of the augmentations", Range::closed(0, 10));
    v("depth", depth_, "augmentations applied to each image", Range::at_least(1));
    v("augmentation_set", augmentation_set_, "the operations drawn from", Choices{{"all", "safe", "original"}});
  }
};

/// `depth` operations, each drawn uniformly from `ops` with rng.below, applied in turn to `image` [C, H, W] (or a
/// batch treated as one image) with augment::apply.
at::Tensor randaugment_image(const at::Tensor& image, int64_t severity, int64_t depth, const std::vector<std::string>& ops,
                             Rng& rng);

/// Every image of `images` [N, C, H, W] through randaugment_image with its own generator rng.derive({i}) (rng is not
/// advanced): example i's augmentation depends only on the generator and i.
at::Tensor randaugment_images(const at::Tensor& images, int64_t severity, int64_t depth,
                              const std::vector<std::string>& ops, Rng& rng);

/// RandAugment as a transform of the data pipeline: randaugment_images on the batch's input with
/// rng.derive({stream}) (a stream of its own, so other transforms given the same generator draw independently).
class RandAugmentTransform : public data::BatchTransform {
 public:
  explicit RandAugmentTransform(RandAugmentOptions options = RandAugmentOptions());
  void apply(Batch& batch, Rng& rng) const override;
  std::string name() const override { return "randaugment"; }
  /// Each image from a generator of its own derived from its row: a data-parallel rank may decode only its rows.
  bool per_example() const override { return true; }

 private:
  RandAugmentOptions options_;
};

/// The algorithm (recipe name "randaugment"): RandAugmentTransform in the training DataLoader.
class RandAugment : public Algorithm {
 public:
  explicit RandAugment(RandAugmentOptions options = RandAugmentOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  /// Nothing on the training thread (the DataLoader's threads did the work).
  void apply(Event, State&, Logger&) override {}
  /// Float image inputs [C, H, W] per example with intensities in [0, 1] (1 or 3 channels for the colour
  /// operations).
  void check(const State& state) const override;
  std::shared_ptr<const data::BatchTransform> data_transform() const override { return transform_; }
  const RandAugmentOptions& options() const noexcept { return options_; }

 private:
  RandAugmentOptions options_;
  AlgorithmSpec spec_;
  std::shared_ptr<const data::BatchTransform> transform_;
};

/// The plan-time check RandAugment and AugMix share: the training data's example batch has float images [C, H, W]
/// per example with intensities in [0, 1], with 1 or 3 channels when `ops` has colour operations. `who` names the
/// algorithm in the error.
void check_augmentable_images(const State& state, const std::string& who, const std::vector<std::string>& ops);

}  // namespace tessera::algorithms
