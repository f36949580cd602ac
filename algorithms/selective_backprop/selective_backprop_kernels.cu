// Selective-backprop kernels: the keys of the rank-weighted draw without replacement (the top-k of the keys
// is taken by the caller), with tessera::Rng's counter-based generator reproduced on the device, and the
// gather of the kept rows of every batch part in one launch.
#include "selective_backprop_kernels.cuh"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <type_traits>

#ifdef NDEBUG
// <cassert> declares the device-side assertion handler only without NDEBUG; the index check below must stay in
// release builds, so declare it as torch's CUDA_KERNEL_ASSERT does.
extern "C" __host__ __device__ void __assert_fail(const char* assertion, const char* file, unsigned int line,
                                                  const char* function) noexcept __attribute__((__noreturn__));
#endif

namespace tessera::algorithms::cuda {
namespace {

// tessera::Rng (src/rng.cpp): SplitMix64's finaliser over key + counter·γ, a second keyed round.
constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__device__ __forceinline__ uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
__device__ __forceinline__ double uniform_at(uint64_t key, uint64_t counter) {
  const uint64_t z = mix64(key + counter * kGamma);
  return static_cast<double>(mix64(z ^ rotl(key, 17)) >> 11) * 0x1.0p-53;
}

__global__ void selection_keys_kernel(const int64_t* __restrict__ order, int64_t n, double exponent,
                                      double weight_sum, uint64_t key, uint64_t counter, double* __restrict__ keys) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < n;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = order[r];
    const double w = pow((static_cast<double>(r) + 0.5) / static_cast<double>(n), exponent) / weight_sum;
    double u = uniform_at(key, counter + static_cast<uint64_t>(i));
    if (u <= 0.0) u = 1e-300;
    keys[i] = log(u) / w;
  }
}

constexpr int kMaxTensors = 32;
constexpr int kThreads = 256;

struct GatherTable {
  RowGather t[kMaxTensors];
};

template <class U>
__device__ __forceinline__ void copy_row(const char* src, char* dst, int64_t bytes) {
  const int64_t n = bytes / static_cast<int64_t>(sizeof(U));
  const U* s = reinterpret_cast<const U*>(src);
  U* d = reinterpret_cast<U*>(dst);
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) d[k] = s[k];
}

__global__ void __launch_bounds__(kThreads)
    gather_rows_kernel(GatherTable table, const int64_t* __restrict__ index, int64_t kept) {
  const RowGather g = table.t[blockIdx.y];
  for (int64_t j = blockIdx.x; j < kept; j += gridDim.x) {
    const int64_t i = index[j];
    if (i < 0 || i >= g.rows) {
      // Like index_select on CUDA: an index out of range stops the kernel with a device-side assertion (reported
      // by the next synchronising call), never a silent row of zeros and never a host sync in the hot path.
      __assert_fail("gather_rows: index out of range", __FILE__, __LINE__, __func__);
    }
    char* dst = static_cast<char*>(g.dst) + j * g.row_bytes;
    const char* src = static_cast<const char*>(g.src) + i * g.row_bytes;
    const uintptr_t bits = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst) |
                           static_cast<uintptr_t>(g.row_bytes);
    if (bits % 16 == 0) {
      copy_row<uint4>(src, dst, g.row_bytes);
    } else if (bits % 8 == 0) {
      copy_row<uint2>(src, dst, g.row_bytes);
    } else if (bits % 4 == 0) {
      copy_row<unsigned>(src, dst, g.row_bytes);
    } else {
      copy_row<unsigned char>(src, dst, g.row_bytes);
    }
  }
}

}  // namespace

cudaError_t launch_selection_keys(const int64_t* order, int64_t n, double exponent, double weight_sum, uint64_t key,
                                  uint64_t counter, double* keys, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 4096));
  selection_keys_kernel<<<blocks, threads, 0, stream>>>(order, n, exponent, weight_sum, key, counter, keys);
  return cudaGetLastError();
}

cudaError_t launch_gather_rows(const RowGather* tensors, int count, const int64_t* index, int64_t kept,
                               cudaStream_t stream) {
  if (kept == 0) return cudaSuccess;
  for (int begin = 0; begin < count; begin += kMaxTensors) {
    const int n = std::min(kMaxTensors, count - begin);
    GatherTable table;
    for (int k = 0; k < n; ++k) table.t[k] = tensors[begin + k];
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>(kept, 65535LL * 16)), static_cast<unsigned>(n));
    gather_rows_kernel<<<grid, kThreads, 0, stream>>>(table, index, kept);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace tessera::algorithms::cuda
