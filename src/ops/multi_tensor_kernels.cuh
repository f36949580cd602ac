#pragma once
// Launchers of the multi-tensor EMA/SWA update (plain CUDA C++; the kernels are in multi_tensor_kernels.cu).
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernel_types.h"

namespace tessera::ops::cuda {

/// One tensor pair of an update: `numel` elements, dense in memory (the same strides for both).
struct EmaSegment {
  void* average;
  const void* source;
  int64_t numel;
};

/// average ← smoothing·average + (1 − smoothing)·source for every segment (all of element type `dtype`), in
/// launches of up to 48 tensors / 320 blocks of 64k elements each, on `stream`. Returns the first launch error.
cudaError_t launch_ema_update(const EmaSegment* segments, int64_t count, KernelDType dtype, double smoothing,
                              cudaStream_t stream);

}  // namespace tessera::ops::cuda
