#include "randaugment.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>

#include "../../src/algorithm_checks.h"

namespace tessera::algorithms {
namespace {
constexpr uint64_t kRandAugmentStream = 0x7a4d8a9ULL;
constexpr double kPi = 3.14159265358979323846;

void check_images(const char* where, const at::Tensor& images) {
  if (!images.defined() || images.dim() < 3 || !images.is_floating_point()) {
    throw InputError(std::string(where) + ": expected float images [..., C, H, W] with intensities in [0, 1], got " +
                     (images.defined() ? c10::str(images.scalar_type(), " ", images.sizes())
                                       : std::string("an undefined tensor")));
  }
}

/// The 8-bit levels round(255·x), clipped to 0..255, as int64.
at::Tensor levels(const at::Tensor& images) { return images.mul(255.0).round_().clamp_(0, 255).to(at::kLong); }

/// The images as [P, C, H, W] (one leading dimension), and back.
at::Tensor as_planes(const at::Tensor& images) {
  return images.reshape({-1, images.size(-3), images.size(-2), images.size(-1)});
}

/// The grey image [..., 1, H, W]: itself for one channel, luma for three.
at::Tensor grey(const char* where, const at::Tensor& images) {
  const int64_t c = images.size(-3);
  if (c == 1) return images;
  if (c != 3) {
    throw InputError(fmt::format("{}: the colour operations need 1 or 3 channels, got images of shape {}", where,
                                 c10::str(images.sizes())));
  }
  return images.narrow(-3, 0, 1) * 0.299 + images.narrow(-3, 1, 1) * 0.587 + images.narrow(-3, 2, 1) * 0.114;
}

at::Tensor blend(const at::Tensor& degenerate, const at::Tensor& images, double factor) {
  return at::clamp(degenerate + (images - degenerate) * factor, 0.0, 1.0);
}

// Composer's magnitudes (see the header): a level l ~ U(0.1, severity), integer and float parameters of it, a
// random sign, and the symmetric enhancement factor.
double sample_level(double severity, Rng& rng) { return 0.1 + (severity - 0.1) * rng.uniform(); }
double int_parameter(double level, double maxval) { return std::trunc(level * maxval / 10.0); }
double float_parameter(double level, double maxval) { return level * maxval / 10.0; }
double random_sign(double v, Rng& rng) { return rng.uniform() > 0.5 ? -v : v; }
double symmetric_factor(double severity, Rng& rng) {
  if (rng.uniform() > 0.5) return 1.0 + (severity - 1.0) * rng.uniform();
  const double lo = 1.0 - 0.09 * severity;
  return lo + (1.0 - lo) * rng.uniform();
}
double original_factor(double severity, Rng& rng) { return float_parameter(sample_level(severity, rng), 1.8) + 0.1; }

using Operation = at::Tensor (*)(const at::Tensor&, double, Rng&);

const std::map<std::string, Operation>& operations() {
  static const std::map<std::string, Operation> ops{
      {"autocontrast", [](const at::Tensor& x, double, Rng&) { return augment::autocontrast(x); }},
      {"equalize", [](const at::Tensor& x, double, Rng&) { return augment::equalize(x); }},
      {"posterize",
       [](const at::Tensor& x, double s, Rng& r) {
         return augment::posterize(x, 4 - static_cast<int64_t>(int_parameter(sample_level(s, r), 4)));
       }},
      {"solarize",
       [](const at::Tensor& x, double s, Rng& r) {
         return augment::solarize(x, (256.0 - int_parameter(sample_level(s, r), 256)) / 255.0);
       }},
      {"rotate",
       [](const at::Tensor& x, double s, Rng& r) {
         const double degrees = int_parameter(sample_level(s, r), 30);
         return augment::rotate(x, random_sign(degrees, r));
       }},
      {"shear_x",
       [](const at::Tensor& x, double s, Rng& r) {
         const double f = float_parameter(sample_level(s, r), 0.3);
         return augment::shear_x(x, random_sign(f, r));
       }},
      {"shear_y",
       [](const at::Tensor& x, double s, Rng& r) {
         const double f = float_parameter(sample_level(s, r), 0.3);
         return augment::shear_y(x, random_sign(f, r));
       }},
      {"translate_x",
       [](const at::Tensor& x, double s, Rng& r) {
         const double px = int_parameter(sample_level(s, r), static_cast<double>(x.size(-1)) / 3.0);
         return augment::translate_x(x, random_sign(px, r));
       }},
      {"translate_y",
       [](const at::Tensor& x, double s, Rng& r) {
         const double px = int_parameter(sample_level(s, r), static_cast<double>(x.size(-2)) / 3.0);
         return augment::translate_y(x, random_sign(px, r));
       }},
      {"color", [](const at::Tensor& x, double s, Rng& r) { return augment::color(x, symmetric_factor(s, r)); }},
      {"contrast", [](const at::Tensor& x, double s, Rng& r) { return augment::contrast(x, symmetric_factor(s, r)); }},
      {"brightness",
       [](const at::Tensor& x, double s, Rng& r) { return augment::brightness(x, symmetric_factor(s, r)); }},
      {"sharpness",
       [](const at::Tensor& x, double s, Rng& r) { return augment::sharpness(x, symmetric_factor(s, r)); }},
      {"color_original",
       [](const at::Tensor& x, double s, Rng& r) { return augment::color(x, original_factor(s, r)); }},
      {"contrast_original",
       [](const at::Tensor& x, double s, Rng& r) { return augment::contrast(x, original_factor(s, r)); }},
      {"brightness_original",
       [](const at::Tensor& x, double s, Rng& r) { return augment::brightness(x, original_factor(s, r)); }},
      {"sharpness_original",
       [](const at::Tensor& x, double s, Rng& r) { return augment::sharpness(x, original_factor(s, r)); }},
  };
  return ops;
}

bool uses_colour(const std::vector<std::string>& ops) {
  return std::any_of(ops.begin(), ops.end(),
                     [](const std::string& op) { return op.rfind("color", 0) == 0 || op.rfind("contrast", 0) == 0; });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The operations

namespace augment {

at::Tensor autocontrast(const at::Tensor& images) {
  check_images("autocontrast", images);
  const at::Tensor flat = images.flatten(-2);
  const at::Tensor lo = std::get<0>(flat.min(-1, true)).unsqueeze(-1);
  const at::Tensor hi = std::get<0>(flat.max(-1, true)).unsqueeze(-1);
  const at::Tensor spread = hi - lo;
  return at::where(spread > 0, (images - lo) / spread.clamp_min(1e-30), images);
}

at::Tensor equalize(const at::Tensor& images) {
  check_images("equalize", images);
  if (images.numel() == 0) return images.clone();
  const int64_t hw = images.size(-2) * images.size(-1);
  const at::Tensor q = levels(images).reshape({-1, hw});  // [P, HW]
  const int64_t planes = q.size(0);
  const at::Tensor offsets = at::arange(planes, q.options()).mul_(256).unsqueeze(1);
  const at::Tensor hist = at::bincount((q + offsets).flatten(), {}, planes * 256).view({planes, 256});
  const at::Tensor level_ids = at::arange(256, q.options()).unsqueeze(0);
  const at::Tensor last = at::where(hist > 0, level_ids, at::full_like(level_ids, -1)).amax({1}, true);  // [P, 1]
  const at::Tensor step = at::div(hist.gather(1, last).neg().add_(hw), 255, "floor");                         // [P, 1]
  const at::Tensor before = hist.cumsum(1) - hist;  // pixels below each level
  const at::Tensor lut =
      at::div(at::div(step, 2, "floor") + before, step.clamp_min(1), "floor").clamp_max_(255);  // [P, 256]
  const at::Tensor mapped = lut.gather(1, q).to(images.scalar_type()).div_(255.0);
  return at::where(step > 0, mapped, images.reshape({-1, hw})).view(images.sizes());
}

at::Tensor posterize(const at::Tensor& images, int64_t bits) {
  check_images("posterize", images);
  if (bits < 0 || bits > 8) throw InputError(fmt::format("posterize.bits: {}; expected 0..8", bits));
  const int64_t mask = 0xff & ~((int64_t{1} << (8 - bits)) - 1);
  return at::bitwise_and(levels(images), mask).to(images.scalar_type()).div_(255.0);
}

at::Tensor solarize(const at::Tensor& images, double threshold) {
  check_images("solarize", images);
  return at::where(images >= threshold, 1.0 - images, images);
}

at::Tensor affine(const at::Tensor& images, const std::array<double, 6>& m) {
  check_images("affine", images);
  for (double v : m) {
    if (!std::isfinite(v)) throw InputError("affine: the matrix has a non-finite entry");
  }
  const int64_t h = images.size(-2), w = images.size(-1);
  if (images.numel() == 0) return images.clone();
  const auto dopts = at::TensorOptions(at::kDouble);
  const at::Tensor xs = at::arange(w, dopts).add_(0.5).view({1, w});
  const at::Tensor ys = at::arange(h, dopts).add_(0.5).view({h, 1});
  // Input position of each output pixel, normalized so that -1 and 1 are the image's outer edges (align_corners
  // false): u = 2·X/W − 1.
  const at::Tensor gx = (xs * m[0] + ys * m[1] + m[2]).mul_(2.0 / static_cast<double>(w)).sub_(1.0);
  const at::Tensor gy = (xs * m[3] + ys * m[4] + m[5]).mul_(2.0 / static_cast<double>(h)).sub_(1.0);
  const at::Tensor planes = as_planes(images);
  const at::Tensor grid = at::stack({gx, gy}, -1)
                              .to(images.options())
                              .unsqueeze(0)
                              .expand({planes.size(0), h, w, 2})
                              .contiguous();
  // interpolation 0 = bilinear, padding 0 = zeros
  return at::grid_sampler(planes, grid, 0, 0, false).view(images.sizes());
}

at::Tensor rotate(const at::Tensor& images, double degrees) {
  check_images("rotate", images);
  // PIL's Image.rotate: the matrix of −degrees (rounded to 15 decimals, so that right angles are exact) about the
  // centre (W/2, H/2).
  const double rad = -degrees * kPi / 180.0;
  const auto r15 = [](double v) { return std::round(v * 1e15) / 1e15; };
  const double a = r15(std::cos(rad)), b = r15(std::sin(rad)), d = -r15(std::sin(rad)), e = r15(std::cos(rad));
  const double cx = static_cast<double>(images.size(-1)) / 2.0, cy = static_cast<double>(images.size(-2)) / 2.0;
  return affine(images, {a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy});
}

at::Tensor shear_x(const at::Tensor& images, double factor) { return affine(images, {1, factor, 0, 0, 1, 0}); }
at::Tensor shear_y(const at::Tensor& images, double factor) { return affine(images, {1, 0, 0, factor, 1, 0}); }
at::Tensor translate_x(const at::Tensor& images, double pixels) { return affine(images, {1, 0, pixels, 0, 1, 0}); }
at::Tensor translate_y(const at::Tensor& images, double pixels) { return affine(images, {1, 0, 0, 0, 1, pixels}); }

at::Tensor color(const at::Tensor& images, double factor) {
  check_images("color", images);
  return blend(grey("color", images).expand(images.sizes()), images, factor);
}

at::Tensor contrast(const at::Tensor& images, double factor) {
  check_images("contrast", images);
  return blend(grey("contrast", images).mean({-3, -2, -1}, true), images, factor);
}

at::Tensor brightness(const at::Tensor& images, double factor) {
  check_images("brightness", images);
  return blend(at::zeros_like(images), images, factor);
}

at::Tensor sharpness(const at::Tensor& images, double factor) {
  check_images("sharpness", images);
  const int64_t c = images.size(-3), h = images.size(-2), w = images.size(-1);
  if (h < 3 || w < 3 || images.numel() == 0) return blend(images, images, factor);
  const at::Tensor kernel = at::tensor({1.0, 1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0}, at::TensorOptions(at::kDouble))
                                .div_(13.0)
                                .to(images.options())
                                .view({1, 1, 3, 3})
                                .expand({c, 1, 3, 3})
                                .contiguous();
  const std::vector<int64_t> ones{1, 1}, zeros{0, 0};
  const at::Tensor smooth = at::conv2d(as_planes(images), kernel, {}, ones, zeros, ones, c);  // [P, C, H - 2, W - 2]
  std::vector<int64_t> inner = images.sizes().vec();
  inner[inner.size() - 2] = h - 2;
  inner[inner.size() - 1] = w - 2;
  at::Tensor degenerate = images.clone();  // PIL's filter keeps the one-pixel border
  degenerate.narrow(-2, 1, h - 2).narrow(-1, 1, w - 2).copy_(smooth.view(inner));
  return blend(degenerate, images, factor);
}

const std::vector<std::string>& operation_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& [name, op] : operations()) out.push_back(name);
    return out;
  }();
  return names;
}

at::Tensor apply(const std::string& op, const at::Tensor& images, double severity, Rng& rng) {
  const auto& ops = operations();
  const auto it = ops.find(op);
  if (it == ops.end()) {
    std::string known;
    for (const auto& [name, f] : ops) known += (known.empty() ? "" : ", ") + name;
    throw InputError(fmt::format("augment::apply.op: \"{}\" is not an augmentation; expected one of: {}", op, known));
  }
  if (!(severity >= 0 && severity <= 10)) {
    throw InputError(fmt::format("augment::apply.severity: {:g} is out of range [0, 10]", severity));
  }
  check_images("augment::apply", images);
  return it->second(images, severity, rng);
}

}  // namespace augment

const std::vector<std::string>& augmentation_set(const std::string& name) {
  static const std::vector<std::string> safe{"autocontrast", "equalize", "posterize",   "rotate",     "solarize",
                                             "shear_x",      "shear_y",  "translate_x", "translate_y"};
  static const std::map<std::string, std::vector<std::string>> sets = [] {
    std::map<std::string, std::vector<std::string>> out;
    out["safe"] = safe;
    out["all"] = safe;
    out["original"] = safe;
    for (const char* e : {"color", "contrast", "brightness", "sharpness"}) {
      out["all"].push_back(e);
      out["original"].push_back(std::string(e) + "_original");
    }
    return out;
  }();
  const auto it = sets.find(name);
  if (it == sets.end()) {
    throw InputError(fmt::format("augmentation_set: \"{}\" is not a set; expected one of: all, safe, original", name));
  }
  return it->second;
}

// ---------------------------------------------------------------------------------------------
// RandAugment

at::Tensor randaugment_image(const at::Tensor& image, int64_t severity, int64_t depth, const std::vector<std::string>& ops,
                             Rng& rng) {
  check_option_as<RandAugmentOptions>("randaugment_image", "severity", severity);
  check_option_as<RandAugmentOptions>("randaugment_image", "depth", depth);
  if (ops.empty()) throw InputError("randaugment_image.ops: empty; expected at least one augmentation");
  at::Tensor out = image;
  for (int64_t d = 0; d < depth; ++d) {
    const std::string& op = ops[rng.below(ops.size())];
    out = augment::apply(op, out, static_cast<double>(severity), rng);
  }
  return out;
}

at::Tensor randaugment_images(const at::Tensor& images, int64_t severity, int64_t depth,
                              const std::vector<std::string>& ops, Rng& rng) {
  if (!images.defined() || images.dim() != 4) {
    throw InputError("randaugment_images.images: expected images [N, C, H, W], got " +
                     (images.defined() ? c10::str(images.sizes()) : std::string("an undefined tensor")));
  }
  std::vector<at::Tensor> out;
  out.reserve(static_cast<size_t>(images.size(0)));
  for (int64_t i = 0; i < images.size(0); ++i) {
    Rng example = rng.derive({static_cast<uint64_t>(i)});
    out.push_back(randaugment_image(images[i], severity, depth, ops, example));
  }
  if (out.empty()) return images.clone();
  return at::stack(out);
}

void check_augmentable_images(const State& state, const std::string& who, const std::vector<std::string>& ops) {
  const Batch example = example_image_batch(state, who + " augments");
  const at::Tensor& x = example.input();
  if (!x.is_floating_point()) {
    throw InputError(fmt::format("{} augments float images with intensities in [0, 1]; the training data's inputs are "
                                 "{} ({})",
                                 who, c10::toString(x.scalar_type()), state.train_dataloader->describe()));
  }
  if (x.numel() > 0) {
    const double lo = x.min().item<double>(), hi = x.max().item<double>();
    if (lo < 0 || hi > 1) {
      throw InputError(fmt::format(
          "{} augments images with intensities in [0, 1] (posterize, solarize and equalize read 8-bit levels), but the "
          "training data's first example has values in [{:g}, {:g}] ({}); it runs before the loader's transforms, so "
          "normalize there, not in the dataset",
          who, lo, hi, state.train_dataloader->describe()));
    }
  }
  if (uses_colour(ops) && x.size(1) != 1 && x.size(1) != 3) {
    throw InputError(fmt::format("{}: the colour operations (color, contrast) need 1 or 3 channels; the training images "
                                 "have {}; use augmentation_set \"safe\"",
                                 who, x.size(1)));
  }
}

RandAugmentTransform::RandAugmentTransform(RandAugmentOptions options) : options_(std::move(options)) {
  validate_options(options_, "randaugment");
}

void RandAugmentTransform::apply(Batch& batch, Rng& rng) const {
  Rng own = rng.derive({kRandAugmentStream});
  batch.set(Batch::kInput, randaugment_images(batch.input(), options_.severity(), options_.depth(),
                                              augmentation_set(options_.augmentation_set()), own));
}

RandAugment::RandAugment(RandAugmentOptions options) : options_(std::move(options)) {
  validate_options(options_, "randaugment");
  transform_ = std::make_shared<RandAugmentTransform>(options_);
  spec_.name = "randaugment";
  // The DataLoader's threads augment the batch the trainer takes after before_dataloader (see the header).
  // It reads the dataset's images of a new batch, never what another algorithm wrote: no read declared.
  spec_.accesses = {{Event::BeforeDataloader, {}, {Resource::Inputs}}};
}

void RandAugment::check(const State& state) const {
  check_augmentable_images(state, "randaugment", augmentation_set(options_.augmentation_set()));
}

}  // namespace tessera::algorithms
