#include "augmix.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/algorithms/mixup.h>
#include <tessera/error.h>

namespace tessera::algorithms {
namespace {
constexpr uint64_t kAugMixStream = 0xa06417ULL;

void check_depth(const char* where, int64_t depth) {
  check_option_as<AugMixOptions>(where, "depth", depth);
  if (depth == 0) {
    throw InputError(std::string(where) + ".depth: 0; expected -1 (a random 1 to 3 per chain) or a depth >= 1");
  }
}
}  // namespace

AugMixWeights augmix_weights(int64_t width, double alpha, Rng& rng) {
  check_option_as<AugMixOptions>("augmix_weights", "width", width);
  check_option_as<AugMixOptions>("augmix_weights", "alpha", alpha);
  AugMixWeights out;
  out.chains.resize(static_cast<size_t>(width));
  for (auto& g : out.chains) g = log_gamma_sample(alpha, rng);
  const double top = *std::max_element(out.chains.begin(), out.chains.end());
  double sum = 0.0;
  for (auto& g : out.chains) sum += (g = std::exp(g - top));
  for (auto& g : out.chains) g /= sum;
  out.mix = sample_mixing(alpha, rng);
  return out;
}

at::Tensor augmix_image(const at::Tensor& image, int64_t severity, int64_t depth, int64_t width, double alpha,
                        const std::vector<std::string>& ops, Rng& rng) {
  check_option_as<AugMixOptions>("augmix_image", "severity", severity);
  check_depth("augmix_image", depth);
  if (ops.empty()) throw InputError("augmix_image.ops: empty; expected at least one augmentation");
  if (!image.defined() || image.dim() < 3 || !image.is_floating_point()) {
    throw InputError("augmix_image.image: expected a float image [C, H, W], got " +
                     (image.defined() ? c10::str(image.scalar_type(), " ", image.sizes())
                                      : std::string("an undefined tensor")));
  }
  const AugMixWeights weights = augmix_weights(width, alpha, rng);
  at::Tensor mixed = at::zeros_like(image);
  for (double w : weights.chains) {
    const int64_t chain_depth = depth > 0 ? depth : 1 + static_cast<int64_t>(rng.below(3));
    at::Tensor chain = image;
    for (int64_t d = 0; d < chain_depth; ++d) {
      chain = augment::apply(ops[rng.below(ops.size())], chain, static_cast<double>(severity), rng);
    }
    mixed.add_(chain, w);
  }
  return image * (1.0 - weights.mix) + mixed * weights.mix;
}

at::Tensor augmix_images(const at::Tensor& images, int64_t severity, int64_t depth, int64_t width, double alpha,
                         const std::vector<std::string>& ops, Rng& rng) {
  if (!images.defined() || images.dim() != 4) {
    throw InputError("augmix_images.images: expected images [N, C, H, W], got " +
                     (images.defined() ? c10::str(images.sizes()) : std::string("an undefined tensor")));
  }
  std::vector<at::Tensor> out;
  out.reserve(static_cast<size_t>(images.size(0)));
  for (int64_t i = 0; i < images.size(0); ++i) {
    Rng example = rng.derive({static_cast<uint64_t>(i)});
    out.push_back(augmix_image(images[i], severity, depth, width, alpha, ops, example));
  }
  if (out.empty()) return images.clone();
  return at::stack(out);
}

AugMixTransform::AugMixTransform(AugMixOptions options) : options_(std::move(options)) {
  validate_options(options_, "augmix");
  check_depth("augmix", options_.depth());
}

void AugMixTransform::apply(Batch& batch, Rng& rng) const {
  Rng own = rng.derive({kAugMixStream});
  batch.set(Batch::kInput, augmix_images(batch.input(), options_.severity(), options_.depth(), options_.width(),
                                         options_.alpha(), augmentation_set(options_.augmentation_set()), own));
}

AugMix::AugMix(AugMixOptions options) : options_(std::move(options)) {
  validate_options(options_, "augmix");
  transform_ = std::make_shared<AugMixTransform>(options_);
  spec_.name = "augmix";
  // The DataLoader's threads augment the batch the trainer takes after before_dataloader (see randaugment.h).
  // It reads the dataset's images of a new batch, never what another algorithm wrote: no read declared.
  spec_.accesses = {{Event::BeforeDataloader, {}, {Resource::Inputs}}};
  spec_.conflicts.push_back(
      {Selector::named("randaugment"), false,
       "both augment every image in the data pipeline with the same operations (AugMix mixes chains of them): "
       "together the distortions compound, and Composer's cards expect diminishing returns"});
}

void AugMix::check(const State& state) const {
  check_augmentable_images(state, "augmix", augmentation_set(options_.augmentation_set()));
}

}  // namespace tessera::algorithms
