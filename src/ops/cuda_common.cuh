#pragma once
// Device-side helpers shared by the kernels (plain CUDA C++, no ATen: compiled by nvcc alone in CI).
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernel_types.h"

namespace tessera::ops::cuda {

/// Loads/stores an element as its accumulation type (float, or double for double).
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_acc(float v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <class T>
__device__ __forceinline__ T from_acc(double v) { return static_cast<T>(v); }

template <class T>
struct AccOf { using type = float; };
template <>
struct AccOf<double> { using type = double; };
template <class T>
using acc_t = typename AccOf<T>::type;

/// Calls f(T{}) with the element type of `dtype` (host side).
template <class F>
void visit_dtype(KernelDType dtype, F&& f) {
  switch (dtype) {
    case KernelDType::Float32: f(float{}); break;
    case KernelDType::Float64: f(double{}); break;
    case KernelDType::Float16: f(__half{}); break;
    case KernelDType::BFloat16: f(__nv_bfloat16{}); break;
  }
}

/// Unsigned division by a runtime constant with a multiply and a shift (valid for dividends < 2^31).
struct FastDivmod {
  uint32_t divisor = 1, multiplier = 0, shift = 0;
  FastDivmod() = default;
  __host__ explicit FastDivmod(uint32_t d) : divisor(d) {
    while (shift < 32 && (uint64_t{1} << shift) < d) ++shift;
    multiplier = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, multiplier) + n) >> shift; }
  __device__ __forceinline__ uint32_t divmod(uint32_t n, uint32_t& rem) const {
    const uint32_t q = div(n);
    rem = n - q * divisor;
    return q;
  }
};

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Blocks for a grid-stride loop over `n` items: enough to fill the device several times, capped.
inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 32) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks);
}

}  // namespace tessera::ops::cuda
