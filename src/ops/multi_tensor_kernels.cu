// Multi-tensor EMA/SWA update: avg ← s·avg + (1 − s)·w over many tensors in few launches.
//
// Each launch carries a table (by value, in the kernel parameters) of up to kMaxTensors tensor pairs and
// kMaxBlocks (tensor, chunk) assignments; each block updates one chunk of kChunk elements with 16-byte
// vector loads when both pointers allow it. A model's parameters and buffers go in a handful of launches.
#include "multi_tensor_kernels.cuh"

#include <algorithm>

#include "cuda_common.cuh"

namespace tessera::ops::cuda {
namespace {

constexpr int kMaxTensors = 48;
constexpr int kMaxBlocks = 320;
constexpr int64_t kChunk = 65536;
constexpr int kThreads = 512;

struct EmaTable {
  void* average[kMaxTensors];
  const void* source[kMaxTensors];
  int64_t numel[kMaxTensors];
  int32_t block_chunk[kMaxBlocks];
  uint8_t block_tensor[kMaxBlocks];
};

template <class T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

template <class T>
__global__ void __launch_bounds__(kThreads) ema_kernel(EmaTable table, acc_t<T> s, acc_t<T> t) {
  const int tensor = table.block_tensor[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * kChunk;
  const int64_t n = min(kChunk, table.numel[tensor] - begin);
  T* a = static_cast<T*>(table.average[tensor]) + begin;
  const T* w = static_cast<const T*>(table.source[tensor]) + begin;
  constexpr int V = Pack<T>::kSize;
  int64_t done = 0;
  if (((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(w)) & 15) == 0) {
    const int64_t packs = n / V;
    auto* ap = reinterpret_cast<Pack<T>*>(a);
    const auto* wp = reinterpret_cast<const Pack<T>*>(w);
    for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
      Pack<T> x = ap[i];
      const Pack<T> y = wp[i];
#pragma unroll
      for (int k = 0; k < V; ++k) x.v[k] = from_acc<T>(s * to_acc(x.v[k]) + t * to_acc(y.v[k]));
      ap[i] = x;
    }
    done = packs * V;
  }
  for (int64_t i = done + threadIdx.x; i < n; i += blockDim.x) a[i] = from_acc<T>(s * to_acc(a[i]) + t * to_acc(w[i]));
}

template <class T>
cudaError_t launch_typed(const EmaSegment* segments, int64_t count, double smoothing, cudaStream_t stream) {
  using A = acc_t<T>;
  const A s = static_cast<A>(smoothing), t = static_cast<A>(1.0 - smoothing);
  EmaTable table;
  int tensors = 0, blocks = 0;
  auto flush = [&]() -> cudaError_t {
    if (blocks == 0) return cudaSuccess;
    ema_kernel<T><<<blocks, kThreads, 0, stream>>>(table, s, t);
    tensors = 0;
    blocks = 0;
    return cudaGetLastError();
  };
  for (int64_t i = 0; i < count; ++i) {
    const EmaSegment& seg = segments[i];
    if (seg.numel <= 0) continue;
    const int64_t chunks = (seg.numel + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      if (c == 0) {
        if (tensors == kMaxTensors) {
          if (cudaError_t e = flush(); e != cudaSuccess) return e;
        }
        table.average[tensors] = seg.average;
        table.source[tensors] = seg.source;
        table.numel[tensors] = seg.numel;
        ++tensors;
      }
      table.block_tensor[blocks] = static_cast<uint8_t>(tensors - 1);
      table.block_chunk[blocks] = static_cast<int32_t>(c);
      ++blocks;
      if (blocks == kMaxBlocks) {
        const bool more_of_this = c + 1 < chunks;
        if (cudaError_t e = flush(); e != cudaSuccess) return e;
        if (more_of_this) {  // the tensor continues in the next launch
          table.average[0] = seg.average;
          table.source[0] = seg.source;
          table.numel[0] = seg.numel;
          tensors = 1;
        }
      }
    }
  }
  return flush();
}

}  // namespace

cudaError_t launch_ema_update(const EmaSegment* segments, int64_t count, KernelDType dtype, double smoothing,
                              cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  visit_dtype(dtype, [&](auto tag) { err = launch_typed<decltype(tag)>(segments, count, smoothing, stream); });
  return err;
}

}  // namespace tessera::ops::cuda
