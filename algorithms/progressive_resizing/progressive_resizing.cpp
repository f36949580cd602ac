#include "progressive_resizing.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>

#include "../../src/algorithm_checks.h"

namespace tessera::algorithms {

double progressive_scale(double e, double initial_scale, double delay, double finetune) {
  const double span = 1.0 - finetune - delay;
  double f = 0.0;
  if (e >= delay) f = span <= 0.0 ? 1.0 : std::min((e - delay) / span, 1.0);
  return initial_scale + (1.0 - initial_scale) * f;
}

double pinned_scale(double scale, int64_t width, int64_t increment) {
  // Round half to even, as the original (Python's round) does.
  const double units = std::nearbyint(static_cast<double>(width) * scale / static_cast<double>(increment));
  int64_t w = static_cast<int64_t>(units) * increment;
  w = std::clamp<int64_t>(w, std::min(increment, width), width);
  return static_cast<double>(w) / static_cast<double>(width);
}

at::Tensor resize_batch_input(const at::Tensor& x, double scale, const std::string& mode, const std::string& interpolation,
                              Rng& rng) {
  // The options of the algorithm, checked as it checks them (a typo must not silently mean "bilinear").
  check_option_as<ProgressiveResizingOptions>("resize_batch", "mode", mode);
  check_option_as<ProgressiveResizingOptions>("resize_batch", "interpolation", interpolation);
  check_option("resize_batch", "scale", scale, Range::positive());
  if (scale >= 1.0) return x;
  if (x.dim() != 4) throw InputError("progressive_resizing: expected images [N, C, H, W], got " + c10::str(x.sizes()));
  const int64_t h = std::max<int64_t>(1, static_cast<int64_t>(x.size(2) * scale));
  const int64_t w = std::max<int64_t>(1, static_cast<int64_t>(x.size(3) * scale));
  if (mode == "crop") {
    const int64_t top = static_cast<int64_t>(rng.below(static_cast<uint64_t>(x.size(2) - h + 1)));
    const int64_t left = static_cast<int64_t>(rng.below(static_cast<uint64_t>(x.size(3) - w + 1)));
    return x.narrow(2, top, h).narrow(3, left, w).contiguous();
  }
  const bool integer = !at::isFloatingType(x.scalar_type());
  const at::Tensor in = integer ? x.to(at::kFloat) : x;
  at::Tensor out = interpolation == "nearest" ? at::upsample_nearest2d(in, {h, w})
                                              : at::upsample_bilinear2d(in, {h, w}, /*align_corners=*/false);
  return integer ? out.round().to(x.scalar_type()) : out;
}

ProgressiveResizing::ProgressiveResizing(ProgressiveResizingOptions options) : options_(std::move(options)) {
  validate_options(options_, "progressive_resizing");
  if (options_.delay_fraction() + options_.finetune_fraction() > 1.0) {
    throw InputError(fmt::format("progressive_resizing: delay_fraction + finetune_fraction = {:g}; expected <= 1",
                                 options_.delay_fraction() + options_.finetune_fraction()));
  }
  spec_.name = "progressive_resizing";
  std::vector<Resource> writes{Resource::Inputs, Resource::Resolution};
  if (options_.resize_targets()) writes.push_back(Resource::Targets);
  spec_.accesses = {{Event::AfterDataloader, {Resource::Inputs}, writes}};
}

void ProgressiveResizing::check(const State& state) const {
  const Batch example = example_image_batch(state, "progressive_resizing resizes");
  if (options_.resize_targets()) {
    const at::Tensor y = example.target();
    if (y.dim() != 3 && y.dim() != 4) {
      throw InputError("progressive_resizing.resize_targets: the targets are not images (shape per batch " +
                       c10::str(y.sizes()) + "); expected dense targets [N, H, W] or [N, C, H, W], or resize_targets: false");
    }
  }
  check_smallest_inputs(state, example);
}

void ProgressiveResizing::check_smallest_inputs(const State& state, const Batch& example) const {
  // The scale grows with time, so the smallest inputs are those of the start: try the model on them now rather
  // than fail at batch 0 (e.g. a Linear after a flatten expects one input size).
  const at::Tensor& x = example.input();
  const double scale = pinned_scale(options_.initial_scale(), x.size(3), options_.size_increment());
  if (scale >= 1.0) return;
  Rng rng(state.seed, {kAlgorithmStream, 0x9e5123ULL, 0});
  Batch small = example;
  small.set(Batch::kInput, resize_batch_input(x, scale, options_.mode(), options_.interpolation(), rng));
  Model& model = *state.model;
  const std::string error = try_on_example(model, small, [&](const Batch& b) { model.forward(b); });
  if (error.empty()) return;
  const auto size = [](const at::Tensor& t) { return fmt::format("{}x{}", t.size(-2), t.size(-1)); };
  const bool full_size_fails = !try_on_example(model, example, [&](const Batch& b) { model.forward(b); }).empty();
  if (full_size_fails) {
    throw InputError(fmt::format("the model fails on the training data's inputs even at their full size {} ({}), "
                                 "before any resizing; fix the model or the data first",
                                 size(x), error));
  }
  throw InputError(fmt::format(
      "the model cannot take inputs of {} (initial_scale {:g} of the data's {}, the smallest size the schedule "
      "uses): its forward fails with \"{}\". A network whose layer sizes depend on the input size (e.g. a Linear "
      "after a flatten expects a fixed size) cannot train on resized inputs; end the convolutions with adaptive "
      "pooling (torch::nn::AdaptiveAvgPool2d to a fixed size) before the flatten, or use a larger initial_scale "
      "(1 turns resizing off)",
      size(small.input()), options_.initial_scale(), size(x), error));
}

void ProgressiveResizing::apply(Event, State& state, Logger&) {
  at::Tensor& x = state.batch.input();
  const double raw = progressive_scale(state.elapsed_fraction(), options_.initial_scale(), options_.delay_fraction(),
                                       options_.finetune_fraction());
  last_scale_ = pinned_scale(raw, x.size(3), options_.size_increment());
  if (last_scale_ >= 1.0) return;
  // The same draw for inputs and targets, so a crop covers the same region in both.
  const Rng rng(state.seed, {kAlgorithmStream, 0x9e5123ULL, static_cast<uint64_t>(state.timestamp.batch)});
  Rng for_input = rng;
  state.batch.set(Batch::kInput, resize_batch_input(x, last_scale_, options_.mode(), options_.interpolation(), for_input));
  if (options_.resize_targets()) {
    const at::Tensor& y = state.batch.target();
    {  // check() has verified the targets are [N, H, W] or [N, C, H, W]
      Rng for_target = rng;
      const bool add_channel = y.dim() == 3;
      at::Tensor t = add_channel ? y.unsqueeze(1) : y;
      // Class-id masks use nearest so that ids stay ids.
      const std::string interp = at::isFloatingType(y.scalar_type()) ? options_.interpolation() : "nearest";
      t = resize_batch_input(t, last_scale_, options_.mode(), interp, for_target);
      state.batch.set(Batch::kTarget, add_channel ? t.squeeze(1) : t);
    }
  }
}

}  // namespace tessera::algorithms
