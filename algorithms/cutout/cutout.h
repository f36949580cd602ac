#pragma once
/// CutOut (DeVries & Taylor 2017; Composer's CutOut): zero square holes of the input images.
///
/// At AfterDataloader, on the full batch (after selective backprop, ColOut and progressive resizing, so that the
/// holes are drawn in pixels of the size the model sees), `num_holes` centres are drawn from (seed, batch), each
/// a column cx then a row cy uniform over the image (or over the image grown by half the hole with
/// `uniform_sampling`); each hole covers rows [cy − ⌊l/2⌋, cy + ⌊l/2⌋) × columns [cx − ⌊l/2⌋, cx + ⌊l/2⌋)
/// clipped to the image, where the side l is ⌊length·min(H, W)⌋ for 0 < length < 1 and ⌊length⌋ pixels
/// otherwise. Every image of the batch gets the same holes (as Composer's), on every channel; targets are not
/// changed. Draws are a pure function of (seed, batch), so resuming needs no algorithm state.
///
///     tessera::Rng rng(seed);
///     at::Tensor cut = tessera::algorithms::cutout_batch(x, /*num_holes=*/1, /*length=*/0.5, rng);
#include <cstdint>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/algorithms/cutmix.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

struct CutOutOptions {
  /// Holes per image.
  TESSERA_OPTION(int64_t, num_holes) = 1;
  /// Side of each hole: a fraction of the image's shorter side if below 1, else pixels.
  TESSERA_OPTION(double, length) = 0.5;
  /// Draw the centres over the image grown by half the hole, so every pixel is equally likely to be zeroed.
  TESSERA_OPTION(bool, uniform_sampling) = false;
  template <class V>
  void visit(V& v) {
    v("num_holes", num_holes_, "square holes zeroed per image", Range::at_least(1));
    v("length", length_, "side of a hole: fraction of the shorter image side if < 1, else pixels", Range::positive());
    v("uniform_sampling", uniform_sampling_, "hole centres over the image grown by half the hole (every pixel equally "
      "likely)", Any{});
  }
};

/// A hole: rows [top, top + height), columns [left, left + width) (the box type CutMix uses).
using CutOutHole = CutMixBox;

/// The side of a hole in pixels on an image of height × width: ⌊length·min(height, width)⌋ if 0 < length < 1,
/// else ⌊length⌋.
int64_t cutout_length(int64_t height, int64_t width, double length);

/// `num_holes` holes of side `length_pixels` on an image of height × width, each drawn with random_box (cutmix.h),
/// in order.
std::vector<CutOutHole> cutout_holes(int64_t height, int64_t width, int64_t num_holes, int64_t length_pixels, Rng& rng,
                                     bool uniform_sampling = false);

/// A copy of `input` (images [..., H, W], any dtype) with `holes` zeroed in every image and channel.
at::Tensor cutout_batch(const at::Tensor& input, const std::vector<CutOutHole>& holes);

/// The same with holes = cutout_holes(H, W, num_holes, cutout_length(H, W, length), rng, uniform_sampling).
at::Tensor cutout_batch(const at::Tensor& input, int64_t num_holes, double length, Rng& rng,
                        bool uniform_sampling = false);

/// The algorithm (recipe name "cutout").
class CutOut : public Algorithm {
 public:
  explicit CutOut(CutOutOptions options = CutOutOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// Image inputs [C, H, W] per example in the training batches.
  void check(const State& state) const override;
  const CutOutOptions& options() const noexcept { return options_; }
  /// The holes of the last batch.
  const std::vector<CutOutHole>& last_holes() const noexcept { return last_holes_; }

 private:
  CutOutOptions options_;
  AlgorithmSpec spec_;
  std::vector<CutOutHole> last_holes_;
};

}  // namespace tessera::algorithms
