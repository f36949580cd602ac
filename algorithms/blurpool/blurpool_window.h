#pragma once
// The max-pool window scan of the CUDA blur-pool kernels (blurpool_kernels.cu), written as plain C++ that both
// nvcc (device code) and the host compiler accept, so that the CPU tests run the very code the GPU runs against the
// CPU op's argmax (tests/algorithms/kernels_test.cpp). No ATen, no CUDA headers.
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TESSERA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TESSERA_HOST_DEVICE inline
#endif

namespace tessera::algorithms::window {

/// Whether `val` replaces the running maximum `best`: larger, or a NaN where best is not one (the first NaN stays).
template <class A>
TESSERA_HOST_DEVICE bool takes(A val, A best) {
  return val > best || (val != val && best == best);
}

/// The geometry of one pooling window (stride 1): kernel kh×kw, padding, dilation, over an input H×W.
struct Window {
  int64_t H, W, kh, kw, pad_h, pad_w, dil_h, dil_w;
};

/// The maximum of the window of pooled element (ph, pw) and its offset a·kw + c in the window: the first maximum in
/// raster order, the first NaN if there is one, and the first valid (non-padding) element when every valid value is
/// −inf — like torch's max_pool2d, so the gradient never goes to a padding position. `load(ih, iw)` reads an input
/// element in the accumulation type A. Idx is unsigned: a negative (padding) row or column wraps and fails `< H`.
/// Returns 0 with best = −inf for a window without a valid element (impossible with padding ≤ kernel/2).
template <class Idx, class A, class Load>
TESSERA_HOST_DEVICE int window_argmax(Idx ph, Idx pw, const Window& w, Load&& load, A& best) {
  best = -INFINITY;
  int best_k = -1;  // no valid element yet: the first valid one is taken whatever its value
  const int kh = static_cast<int>(w.kh), kw = static_cast<int>(w.kw);
  for (int a = 0; a < kh; ++a) {
    const Idx ih = ph - static_cast<Idx>(w.pad_h) + static_cast<Idx>(a * w.dil_h);
    if (ih >= static_cast<Idx>(w.H)) continue;  // includes the wrapped negatives (padding)
    for (int c = 0; c < kw; ++c) {
      const Idx iw = pw - static_cast<Idx>(w.pad_w) + static_cast<Idx>(c * w.dil_w);
      if (iw >= static_cast<Idx>(w.W)) continue;
      const A val = load(ih, iw);
      if (best_k < 0 || takes(val, best)) {
        best = val;
        best_k = a * kw + c;
      }
    }
  }
  return best_k < 0 ? 0 : best_k;
}

}  // namespace tessera::algorithms::window
