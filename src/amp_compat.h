// The one place where mixed precision depends on the LibTorch version (Debian 1.13 and PyPI 2.x):
// - autocast: 1.13 has per-device functions (set_cpu_enabled, set_autocast_cpu_dtype, set_enabled for CUDA ...);
//   2.4+ takes a device type (the old names are deprecated there and warn at run time).
// - GradScaler ops: _amp_foreach_non_finite_check_and_unscale_ and _amp_update_scale_ have CPU kernels only
//   from 2.3 on; before that they raise "Could not run ... 'CPU' backend" on CPU tensors.
#pragma once
#include <ATen/Tensor.h>
#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

#define TESSERA_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace tessera::compat {

inline bool autocast_enabled(c10::DeviceType device) {
#if TESSERA_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

inline void set_autocast_enabled(c10::DeviceType device, bool enabled) {
#if TESSERA_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

inline c10::ScalarType autocast_dtype(c10::DeviceType device) {
#if TESSERA_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                         : at::autocast::get_autocast_cpu_dtype();
#endif
}

inline void set_autocast_dtype(c10::DeviceType device, c10::ScalarType dtype) {
#if TESSERA_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

/// Autocast off on one device type for a scope; its previous state restored on exit (exceptions included). For a
/// layer that computes in a chosen dtype under autocast (the low-precision LayerNorm and GroupNorm).
class AutocastOff {
 public:
  explicit AutocastOff(c10::DeviceType device) : device_(device), was_enabled_(autocast_enabled(device)) {
    set_autocast_enabled(device_, false);
  }
  ~AutocastOff() { set_autocast_enabled(device_, was_enabled_); }
  AutocastOff(const AutocastOff&) = delete;
  AutocastOff& operator=(const AutocastOff&) = delete;

 private:
  c10::DeviceType device_;
  bool was_enabled_;
};

/// `t` converted to `dtype` (an undefined tensor, an absent weight or bias, stays undefined).
inline at::Tensor cast_if_defined(const at::Tensor& t, c10::ScalarType dtype) { return t.defined() ? t.to(dtype) : t; }

/// Whether ATen's GradScaler ops have kernels for tensors on `device`.
inline bool aten_scaler_ops_on(c10::DeviceType device) {
  return device == c10::DeviceType::CUDA || TESSERA_TORCH_AT_LEAST(2, 3);
}

}  // namespace tessera::compat
