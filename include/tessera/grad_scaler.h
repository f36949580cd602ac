#pragma once
/// Dynamic loss scaling for float16 training, with PyTorch's GradScaler semantics and defaults.
///
///     tessera::GradScaler scaler;                  // scale 2^16, ×2 after 2000 clean steps, ×0.5 on overflow
///     scaler.backward(loss, model->parameters());  // backward of loss × scale; .grad holds true gradients
///     if (!scaler.found_inf()) optimizer->step();  // an inf/NaN gradient skips the step
///     scaler.update();                             // back off, or grow after growth_interval clean steps
///
/// The Trainer runs it for precision amp_fp16 (and for any precision with loss_scaling: dynamic). Unlike
/// PyTorch's, `backward` unscales each microbatch's gradients before they join the earlier ones, so every
/// AfterBackward sees unscaled gradients (gradient clipping, SAM and anything else that reads Gradients need
/// no unscale call of their own). Unscaling uses ATen's _amp_foreach_non_finite_check_and_unscale_ and
/// _amp_update_scale_ where they have kernels (CUDA; CPU from LibTorch 2.3), and the same arithmetic built
/// from ordinary tensor ops on the CPU of older versions.
#include <cstdint>
#include <vector>

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera {

struct GradScalerOptions {
  TESSERA_OPTION(double, init_scale) = 65536.0;
  TESSERA_OPTION(double, growth_factor) = 2.0;
  TESSERA_OPTION(double, backoff_factor) = 0.5;
  TESSERA_OPTION(int64_t, growth_interval) = 2000;
  template <class V>
  void visit(V& v) {
    v("init_scale", init_scale_, "initial loss scale", Range::positive());
    v("growth_factor", growth_factor_, "scale multiplier after growth_interval clean steps", Range::open(1, 1e300));
    v("backoff_factor", backoff_factor_, "scale multiplier after a step with inf/NaN gradients", Range::open(0, 1));
    v("growth_interval", growth_interval_, "clean steps before the scale grows", Range::at_least(1));
  }
};

class GradScaler {
 public:
  /// The scale and its bookkeeping live on `device` (where the gradients are). InputError for bad options.
  explicit GradScaler(GradScalerOptions options = {}, c10::Device device = c10::Device(c10::kCPU));

  /// `loss` × the current scale.
  at::Tensor scale(const at::Tensor& loss) const;
  /// Backward of `loss` × scale, then the gradients it produced divided by the scale (recording any inf/NaN)
  /// and added to the gradients `params` held before, which are untouched by the scale.
  void backward(const at::Tensor& loss, const std::vector<at::Tensor>& params);
  /// Multiplies `grads` in place by 1/scale and records whether any value is inf or NaN.
  void unscale(const std::vector<at::Tensor>& grads);
  /// Whether an inf/NaN gradient was recorded since the last update() (reads one value from the device).
  bool found_inf() const;
  /// Backs the scale off when an inf/NaN was recorded, else counts a clean step and grows the scale after
  /// growth_interval of them (only to a finite value); then clears the record.
  void update();
  /// Forgets a recorded inf/NaN without changing the scale (a batch that is retried from the start).
  void clear_found_inf();
  /// The record itself (0-d float32 on the scaler's device; > 0 when an inf/NaN was seen), for processes that
  /// must agree on it (data-parallel ranks sum it, then all skip the step together).
  at::Tensor& found_inf_record() noexcept { return found_inf_; }

  double scale_value() const;
  int64_t growth_tracker() const;
  const GradScalerOptions& options() const noexcept { return options_; }

  /// {"scale": float32, "growth_tracker": int32} (0-d, on the CPU).
  StateDict state_dict() const;
  /// Restores a state_dict() (InputError naming the missing or malformed entry).
  void load_state_dict(const StateDict& state);

 private:
  GradScalerOptions options_;
  bool aten_ops_;          ///< ATen's kernels exist for this device
  at::Tensor scale_;       ///< float32, 0-d
  at::Tensor tracker_;     ///< int32, 0-d: clean steps since the last change
  at::Tensor found_inf_;   ///< float32, 0-d: 1 when an inf/NaN gradient was seen since update()
};

}  // namespace tessera
