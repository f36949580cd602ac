// Fused label-smoothing cross-entropy. A warp per row for C <= 1024, a block per row above; each thread keeps
// an online (max, Σexp) pair over 16-byte vectors of the row (one rescale per vector), plus Σx; the pairs are
// merged by shuffles (and shared memory across warps). The forward reads the logits once and writes two
// floats per row; the backward reads them once and writes the gradient once. Nothing of size N×C is kept.
#include "label_smoothing_kernels.cuh"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../../src/ops/cuda_common.cuh"

namespace tessera::algorithms::cuda {
namespace {

using ops::KernelDType;
using ops::cuda::acc_t;
using ops::cuda::from_acc;
using ops::cuda::to_acc;

/// The most threads a block-per-row launch uses (the kernels are compiled for it: __launch_bounds__).
constexpr int kMaxThreads = 1024;

template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

__device__ __forceinline__ float exp_of(float x) { return expf(x); }
__device__ __forceinline__ double exp_of(double x) { return exp(x); }
__device__ __forceinline__ float log_of(float x) { return logf(x); }
__device__ __forceinline__ double log_of(double x) { return log(x); }

/// (m, s) ⊕ (m2, s2): the log-sum-exp pair of the union, exact when either side is empty (m = −inf).
template <class A>
__device__ __forceinline__ void merge(A& m, A& s, A m2, A s2) {
  const A M = m > m2 ? m : m2;
  const A a = m == -INFINITY ? A(0) : s * exp_of(m - M);
  const A b = m2 == -INFINITY ? A(0) : s2 * exp_of(m2 - M);
  m = (m2 != m2) ? m2 : M;  // keep a NaN max
  s = a + b;
}

struct RowSlot {
  int64_t row, step;
  int lane, width;
};

/// The rows of this thread's group: a warp per row (kWarpRows) or the whole block per row.
template <bool kWarpRows>
__device__ __forceinline__ RowSlot row_slot() {
  if (kWarpRows) {
    const int warps = blockDim.x / 32;
    return {static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / 32, static_cast<int64_t>(gridDim.x) * warps,
            static_cast<int>(threadIdx.x % 32), 32};
  }
  return {static_cast<int64_t>(blockIdx.x), static_cast<int64_t>(gridDim.x), static_cast<int>(threadIdx.x),
          static_cast<int>(blockDim.x)};
}

/// Merges (m, s, sx) over the row's group; the result is valid in lane 0 (warp) or thread 0 (block).
template <bool kWarpRows, class A>
__device__ __forceinline__ void reduce_row(A& m, A& s, A& sx) {
  for (int o = 16; o > 0; o >>= 1) {
    const A m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const A s2 = __shfl_xor_sync(0xffffffffu, s, o);
    sx += __shfl_xor_sync(0xffffffffu, sx, o);
    merge(m, s, m2, s2);
  }
  if (kWarpRows) return;
  __shared__ A sm[32], ss[32], ssx[32];
  const int warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (threadIdx.x % 32 == 0) {
    sm[warp] = m;
    ss[warp] = s;
    ssx[warp] = sx;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < warps; ++w) {
      merge(m, s, sm[w], ss[w]);
      sx += ssx[w];
    }
  }
  __syncthreads();  // the shared arrays are reused by the next row
}

template <class T, int V, bool kWarpRows>
__global__ void __launch_bounds__(kMaxThreads)
    ce_forward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                      acc_t<T>* __restrict__ per_example, acc_t<T>* __restrict__ lse_out, int64_t N, int64_t C,
                      acc_t<T> alpha) {
  using A = acc_t<T>;
  RowSlot r = row_slot<kWarpRows>();
  const int64_t packs = C / V;  // the host picks V > 1 only when V divides C and rows are aligned
  for (; r.row < N; r.row += r.step) {
    const T* x = logits + r.row * C;
    const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(x);
    A m = -INFINITY, s = 0, sx = 0;
    for (int64_t k = r.lane; k < packs; k += r.width) {
      const Pack<T, V> p = xp[k];
      A v[V];
      A lm = -INFINITY;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        v[j] = to_acc(p.v[j]);
        lm = v[j] > lm ? v[j] : lm;
        sx += v[j];
      }
      if (lm > m) {
        s = m == -INFINITY ? A(0) : s * exp_of(m - lm);
        m = lm;
      }
      if (m != -INFINITY) {
#pragma unroll
        for (int j = 0; j < V; ++j) s += exp_of(v[j] - m);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) s += v[j] != v[j] ? v[j] : A(0);  // NaN still propagates
      }
    }
    reduce_row<kWarpRows>(m, s, sx);
    if (r.lane == 0) {
      const int64_t y = labels[r.row];
      const A lse = m + log_of(s);
      A loss;
      if (y < 0 || y >= C) {
        loss = A(NAN);
      } else {
        loss = lse - (A(1) - alpha) * to_acc(x[y]) - alpha * sx / static_cast<A>(C);
      }
      per_example[r.row] = loss;
      lse_out[r.row] = lse;
    }
  }
}

template <class T, int V, bool kWarpRows>
__global__ void __launch_bounds__(kMaxThreads)
    ce_backward_kernel(const acc_t<T>* __restrict__ grad, const T* __restrict__ logits,
                       const int64_t* __restrict__ labels, const acc_t<T>* __restrict__ lse,
                       T* __restrict__ grad_logits, int64_t N, int64_t C, acc_t<T> alpha) {
  using A = acc_t<T>;
  RowSlot r = row_slot<kWarpRows>();
  const int64_t packs = C / V;
  for (; r.row < N; r.row += r.step) {
    const int64_t y = labels[r.row];
    const bool valid = y >= 0 && y < C;
    const A g = valid ? grad[r.row] : A(0);
    const A l = lse[r.row];
    const A off = alpha * g / static_cast<A>(C), hit = (A(1) - alpha) * g;
    const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(logits + r.row * C);
    Pack<T, V>* gp = reinterpret_cast<Pack<T, V>*>(grad_logits + r.row * C);
    for (int64_t k = r.lane; k < packs; k += r.width) {
      const Pack<T, V> p = xp[k];
      Pack<T, V> o;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const int64_t c = k * V + j;
        A d = valid ? exp_of(to_acc(p.v[j]) - l) * g - off : A(0);
        if (c == y) d -= hit;
        o.v[j] = from_acc<T>(d);
      }
      gp[k] = o;
    }
  }
}

template <class T>
int vector_width(const void* a, const void* b, int64_t C) {
  constexpr int V = 16 / sizeof(T);
  const uintptr_t bits = reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b);
  return (bits % 16 == 0 && C % V == 0) ? V : 1;
}

/// Launches `kernel<V, warp-rows>` with the row organisation for C.
template <class Launch>
void launch_rows(int64_t N, int64_t C, int V, Launch&& launch) {
  if (C <= 1024) {
    constexpr int threads = 256;  // 8 rows per block
    const int64_t blocks = std::min<int64_t>((N + 7) / 8, int64_t{1} << 20);
    launch(std::integral_constant<bool, true>{}, static_cast<unsigned>(blocks), threads);
  } else {
    int threads = 128;
    while (threads < kMaxThreads && static_cast<int64_t>(threads) * V * 8 < C) threads *= 2;
    const int64_t blocks = std::min<int64_t>(N, int64_t{1} << 20);
    launch(std::integral_constant<bool, false>{}, static_cast<unsigned>(blocks), threads);
  }
}

}  // namespace

cudaError_t launch_smoothed_ce_forward(const void* logits, const int64_t* labels, void* per_example, void* lse,
                                       int64_t N, int64_t C, double alpha, KernelDType dtype, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  ops::cuda::visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int VW = 16 / sizeof(T);
    const int V = vector_width<T>(logits, logits, C);
    launch_rows(N, C, V, [&](auto warp_rows, unsigned blocks, int threads) {
      constexpr bool W = decltype(warp_rows)::value;
      auto* px = static_cast<const T*>(logits);
      auto* pp = static_cast<A*>(per_example);
      auto* pl = static_cast<A*>(lse);
      if (V == VW) {
        ce_forward_kernel<T, VW, W><<<blocks, threads, 0, stream>>>(px, labels, pp, pl, N, C, static_cast<A>(alpha));
      } else {
        ce_forward_kernel<T, 1, W><<<blocks, threads, 0, stream>>>(px, labels, pp, pl, N, C, static_cast<A>(alpha));
      }
    });
  });
  return cudaGetLastError();
}

cudaError_t launch_smoothed_ce_backward(const void* grad_per_example, const void* logits, const int64_t* labels,
                                        const void* lse, void* grad_logits, int64_t N, int64_t C, double alpha,
                                        KernelDType dtype, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  ops::cuda::visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int VW = 16 / sizeof(T);
    const int V = vector_width<T>(logits, grad_logits, C);
    launch_rows(N, C, V, [&](auto warp_rows, unsigned blocks, int threads) {
      constexpr bool W = decltype(warp_rows)::value;
      auto* pg = static_cast<const A*>(grad_per_example);
      auto* px = static_cast<const T*>(logits);
      auto* pl = static_cast<const A*>(lse);
      auto* po = static_cast<T*>(grad_logits);
      if (V == VW) {
        ce_backward_kernel<T, VW, W><<<blocks, threads, 0, stream>>>(pg, px, labels, pl, po, N, C, static_cast<A>(alpha));
      } else {
        ce_backward_kernel<T, 1, W><<<blocks, threads, 0, stream>>>(pg, px, labels, pl, po, N, C, static_cast<A>(alpha));
      }
    });
  });
  return cudaGetLastError();
}

}  // namespace tessera::algorithms::cuda
