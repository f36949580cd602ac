#pragma once
// Launchers of the fused blur-pool kernels (plain CUDA C++, no ATen; bodies in blurpool_kernels.cu).
//
// Tensors are seen as [B, H, W, V], dense in that order: NCHW is B = N·C, V = 1; channels-last (NHWC) is
// B = N, V = C. The blur is the depthwise (1/16)[1 2 1]ᵀ[1 2 1] filter with zero padding 1.
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../../src/ops/kernel_types.h"

namespace tessera::algorithms::cuda {

/// Blur of x [B, H, W, V] with stride (sh, sw) into y [B, OH, OW, V], OH = (H − 1)/sh + 1.
struct BlurShape {
  int64_t B, H, W, V, OH, OW, sh, sw;
};

/// Max-pool (stride 1, kernel kh×kw, padding, dilation; pooled [B, PH, PW, V]) then blur with stride (sh, sw)
/// into y [B, OH, OW, V], OH = (PH − 1)/sh + 1. The argmax of each pooled value used by the blur is its offset
/// i·kw + j in the window (first in raster order among equal maxima, like torch's max-pool).
struct MaxBlurShape {
  int64_t B, H, W, V, PH, PW, OH, OW;
  int64_t kh, kw, sh, sw, pad_h, pad_w, dil_h, dil_w;  ///< pool kernel, blur stride, pool padding and dilation
};

/// y = blur(x). x and y dense [B, H, W, V] / [B, OH, OW, V].
cudaError_t launch_blur2d_forward(const void* x, void* y, const BlurShape& s, ops::KernelDType dtype,
                                  cudaStream_t stream);
/// grad_in [B, H, W, V] = blurᵀ(grad_out [B, OH, OW, V]) (every element written; no atomics).
cudaError_t launch_blur2d_backward(const void* grad_out, void* grad_in, const BlurShape& s, ops::KernelDType dtype,
                                   cudaStream_t stream);
/// y = blur(maxpool(x)); when `argmax` is not null, the window offset of every pooled value the blur reads is
/// written there ([B, PH, PW, V] bytes; each written by exactly one thread).
cudaError_t launch_blur_maxpool2d_forward(const void* x, void* y, uint8_t* argmax, const MaxBlurShape& s,
                                          ops::KernelDType dtype, cudaStream_t stream);
/// grad_in [B, H, W, V] from grad_out [B, OH, OW, V] and the forward's argmax (gathered per input element:
/// deterministic, no atomics).
cudaError_t launch_blur_maxpool2d_backward(const void* grad_out, const uint8_t* argmax, void* grad_in,
                                           const MaxBlurShape& s, ops::KernelDType dtype, cudaStream_t stream);

}  // namespace tessera::algorithms::cuda
