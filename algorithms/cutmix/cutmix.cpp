#include "cutmix.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>

namespace tessera::algorithms {
namespace {
void check_images(const at::Tensor& input) {
  if (!input.defined() || input.dim() != 4) {
    throw InputError("cutmix_batch.input: expected images [N, C, H, W], got " +
                     (input.defined() ? c10::str(input.sizes()) : std::string("an undefined tensor")));
  }
}
}  // namespace

CutMixBox random_box(int64_t height, int64_t width, int64_t box_height, int64_t box_width, Rng& rng,
                     bool uniform_sampling) {
  if (height < 1 || width < 1) {
    throw InputError(fmt::format("random_box: the image is {}x{}; expected at least 1x1", height, width));
  }
  if (box_height < 0 || box_width < 0) {
    throw InputError(fmt::format("random_box: the box is {}x{}; expected sides >= 0", box_height, box_width));
  }
  const int64_t h = box_height, w = box_width;
  int64_t cx = 0, cy = 0;
  if (uniform_sampling) {
    cx = static_cast<int64_t>(rng.below(static_cast<uint64_t>(width + w))) - w / 2;
    cy = static_cast<int64_t>(rng.below(static_cast<uint64_t>(height + h))) - h / 2;
  } else {
    cx = static_cast<int64_t>(rng.below(static_cast<uint64_t>(width)));
    cy = static_cast<int64_t>(rng.below(static_cast<uint64_t>(height)));
  }
  const int64_t x1 = std::clamp<int64_t>(cx - w / 2, 0, width), x2 = std::clamp<int64_t>(cx + w / 2, 0, width);
  const int64_t y1 = std::clamp<int64_t>(cy - h / 2, 0, height), y2 = std::clamp<int64_t>(cy + h / 2, 0, height);
  return CutMixBox{y1, x1, y2 - y1, x2 - x1};
}

CutMixBox cutmix_box(int64_t height, int64_t width, double lambda, Rng& rng, bool uniform_sampling) {
  check_option("cutmix_box", "lambda", lambda, Range::closed(0, 1));
  if (height < 1 || width < 1) {
    throw InputError(fmt::format("cutmix_box: the image is {}x{}; expected at least 1x1", height, width));
  }
  const double r = std::sqrt(1.0 - lambda);
  return random_box(height, width, static_cast<int64_t>(static_cast<double>(height) * r),
                    static_cast<int64_t>(static_cast<double>(width) * r), rng, uniform_sampling);
}

CutMixBatch cutmix_batch(const at::Tensor& input, const at::Tensor& target, const CutMixBox& box,
                         const at::Tensor& indices) {
  check_images(input);
  const int64_t height = input.size(2), width = input.size(3);
  if (box.top < 0 || box.left < 0 || box.height < 0 || box.width < 0 || box.top + box.height > height ||
      box.left + box.width > width) {
    throw InputError(fmt::format("cutmix_batch.box: rows [{}, {}) x columns [{}, {}) is not inside the {}x{} images",
                                 box.top, box.top + box.height, box.left, box.left + box.width, height, width));
  }
  // mixup_batch with λ = 1 validates input, target and indices and permutes the targets.
  MixedBatch base = mixup_batch(input, target, 1.0, indices);
  CutMixBatch out;
  out.indices = std::move(base.indices);
  out.target_perm = std::move(base.target_perm);
  out.box = box;
  out.lambda = 1.0 - static_cast<double>(box.height * box.width) / static_cast<double>(height * width);
  out.input = input.clone();
  if (box.height > 0 && box.width > 0) {
    const at::Tensor idx = out.indices.to(input.device());
    out.input.narrow(2, box.top, box.height)
        .narrow(3, box.left, box.width)
        .copy_(input.narrow(2, box.top, box.height).narrow(3, box.left, box.width).index_select(0, idx));
  }
  return out;
}

CutMixBatch cutmix_batch(const at::Tensor& input, const at::Tensor& target, double alpha, Rng& rng,
                         bool uniform_sampling) {
  check_images(input);
  check_option_as<CutMixOptions>("cutmix_batch", "alpha", alpha);
  const double lambda = sample_mixing(alpha, rng);
  const at::Tensor indices = mixing_permutation(input.size(0), rng);
  const CutMixBox box = cutmix_box(input.size(2), input.size(3), lambda, rng, uniform_sampling);
  return cutmix_batch(input, target, box, indices);
}

CutMix::CutMix(CutMixOptions options)
    : MixingAlgorithm("cutmix", /*needs_images=*/true, "its box is drawn on the final input size", "mixup"),
      options_(std::move(options)) {
  validate_options(options_, "cutmix");
}

MixedBatch CutMix::mix(const at::Tensor& input, const at::Tensor& target, Rng& rng) {
  CutMixBatch out = cutmix_batch(input, target, options_.alpha(), rng, options_.uniform_sampling());
  last_box_ = out.box;
  return out;
}

}  // namespace tessera::algorithms
