// The GradScaler arithmetic built from ordinary tensor ops, for devices where ATen's
// _amp_foreach_non_finite_check_and_unscale_ / _amp_update_scale_ have no kernel (the CPU before LibTorch 2.3).
// Same semantics as those ops; tests compare the two where both exist.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/Tensor.h>

namespace tessera::detail {

/// Sets found_inf to 1 (never clears it) when a gradient holds inf/NaN; multiplies every gradient in place by
/// inv_scale (float32) unless inv_scale is 1.
void unscale_with_tensor_ops(const std::vector<at::Tensor>& grads, at::Tensor& found_inf, const at::Tensor& inv_scale);
/// found_inf > 0: scale × backoff, tracker 0. Else tracker + 1, and at `interval`: scale × growth when that is
/// finite, tracker 0.
void update_with_tensor_ops(at::Tensor& scale, at::Tensor& tracker, const at::Tensor& found_inf, double growth,
                            double backoff, int64_t interval);

}  // namespace tessera::detail
