#pragma once
/// Progressive resizing (reference §2.1): train on smaller images early, full size at the end.
///
/// At AfterDataloader with e the elapsed fraction of training:
///   f = 0 if e < delay else min((e − delay)/(1 − finetune − delay), 1),  scale = s₀ + (1 − s₀)·f,
/// pinned on the width to a multiple of `size_increment`: W' = round(W·scale/inc)·inc (at least inc),
/// scale_p = W'/W applied to both sides; nothing happens once scale_p >= 1.
/// Modes: `resize` (interpolation `bilinear` — our default — or `nearest`, the original's code) and
/// `crop` (one random crop for the whole batch, its corner drawn from (seed, batch)).
/// Dense targets (e.g. segmentation masks) are resized or cropped the same way only with `resize_targets`.
///
///     at::Tensor small = tessera::algorithms::resize_batch_input(x, 0.5, "resize", "bilinear", rng);
#include <cstdint>
#include <string>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

struct ProgressiveResizingOptions {
  TESSERA_OPTION(std::string, mode) = "resize";
  TESSERA_OPTION(std::string, interpolation) = "bilinear";
  TESSERA_OPTION(double, initial_scale) = 0.5;
  TESSERA_OPTION(double, delay_fraction) = 0.5;
  TESSERA_OPTION(double, finetune_fraction) = 0.2;
  TESSERA_OPTION(int64_t, size_increment) = 4;
  TESSERA_OPTION(bool, resize_targets) = false;
  template <class V>
  void visit(V& v) {
    v("mode", mode_, "how images shrink", Choices{{"resize", "crop"}});
    v("interpolation", interpolation_, "interpolation of mode resize", Choices{{"bilinear", "nearest"}});
    v("initial_scale", initial_scale_, "scale at the start", Range::closed(0, 1));
    v("delay_fraction", delay_fraction_, "fraction of training at the initial scale", Range::closed(0, 1));
    v("finetune_fraction", finetune_fraction_, "fraction of training at full scale at the end", Range::closed(0, 1));
    v("size_increment", size_increment_, "widths are multiples of this", Range::at_least(1));
    v("resize_targets", resize_targets_, "resize or crop dense targets too", Any{});
  }
};

/// The scale at elapsed fraction `e` (before pinning).
double progressive_scale(double e, double initial_scale, double delay, double finetune);

/// scale pinned on `width` to a multiple of `increment` (W' = round(W·scale/inc)·inc, at least inc, at most W),
/// returned as W'/W.
double pinned_scale(double scale, int64_t width, int64_t increment);

/// Resizes (mode "resize", interpolation "bilinear" or "nearest") or crops (mode "crop", one window for the
/// whole batch, corner from `rng`) images [N, C, H, W] to (⌊H·scale⌋, ⌊W·scale⌋). `scale` >= 1 returns x.
at::Tensor resize_batch_input(const at::Tensor& x, double scale, const std::string& mode,
                              const std::string& interpolation, Rng& rng);

/// The algorithm (recipe name "progressive_resizing").
class ProgressiveResizing : public Algorithm {
 public:
  explicit ProgressiveResizing(ProgressiveResizingOptions options = ProgressiveResizingOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// Image inputs (and image targets with resize_targets), and a model that takes the smallest inputs the
  /// schedule will give it (a forward on the example batch at that size, in eval mode, without gradient).
  void check(const State& state) const override;
  const ProgressiveResizingOptions& options() const noexcept { return options_; }
  /// The pinned scale used for the last batch.
  double last_scale() const noexcept { return last_scale_; }

 private:
  /// Tries the model's forward on the example batch at the smallest scale of the schedule.
  void check_smallest_inputs(const State& state, const Batch& example) const;
  ProgressiveResizingOptions options_;
  AlgorithmSpec spec_;
  double last_scale_ = 1.0;
};

}  // namespace tessera::algorithms
