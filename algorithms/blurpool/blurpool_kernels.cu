// Fused blur-pool kernels. One thread per output element (forward) or per input element (backward, a gather
// over the ≤ 3×3 outputs that read it, so no atomics and a deterministic result); the 9 loads of neighbouring
// threads overlap and are served by L1. Indices are 32-bit with multiply-shift division when the tensors
// have fewer than 2^31 elements, 64-bit otherwise.
#include "blurpool_kernels.cuh"

#include <cmath>
#include <initializer_list>

#include "../../src/ops/cuda_common.cuh"
#include "blurpool_window.h"

namespace tessera::algorithms::cuda {
namespace {

using ops::KernelDType;
using ops::cuda::acc_t;
using ops::cuda::FastDivmod;
using ops::cuda::from_acc;
using ops::cuda::to_acc;

constexpr int kThreads = 256;

/// 64-bit division with the FastDivmod interface.
struct SlowDivmod {
  uint64_t divisor = 1;
  SlowDivmod() = default;
  __host__ explicit SlowDivmod(uint64_t d) : divisor(d) {}
  __device__ __forceinline__ uint64_t divmod(uint64_t n, uint64_t& rem) const {
    const uint64_t q = n / divisor;
    rem = n - q * divisor;
    return q;
  }
};

template <class Idx>
struct DivOf { using type = SlowDivmod; };
template <>
struct DivOf<uint32_t> { using type = FastDivmod; };

/// The output index o with s·o − 1 + t == p (t = 0, 1, 2), if any: the blur's taps seen from the input side.
template <class Idx, class Div>
__device__ __forceinline__ bool tap_of(Idx p, int t, const Div& s, Idx out_size, Idx& o) {
  const Idx num = p + 1 - t;  // unsigned wrap when p + 1 < t: caught by the range check below
  if (p + 1 < static_cast<Idx>(t)) return false;
  Idx rem;
  o = s.divmod(num, rem);
  return rem == 0 && o < out_size;
}

template <class T, class Idx>
__global__ void __launch_bounds__(kThreads)
    blur_forward_kernel(const T* __restrict__ x, T* __restrict__ y, BlurShape s, typename DivOf<Idx>::type div_v,
                        typename DivOf<Idx>::type div_ow, typename DivOf<Idx>::type div_oh, Idx total) {
  using A = acc_t<T>;
  const Idx H = s.H, W = s.W, V = s.V;
  for (Idx i = blockIdx.x * static_cast<Idx>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<Idx>(gridDim.x) * blockDim.x) {
    Idx v, ow, oh;
    Idx q = div_v.divmod(i, v);
    q = div_ow.divmod(q, ow);
    const Idx b = div_oh.divmod(q, oh);
    const T* xb = x + b * H * W * V + v;
    const Idx h0 = oh * static_cast<Idx>(s.sh) - 1, w0 = ow * static_cast<Idx>(s.sw) - 1;  // may wrap: h < H fails
    A acc = 0;
#pragma unroll
    for (int dy = 0; dy < 3; ++dy) {
      const Idx h = h0 + dy;
      if (h >= H) continue;
      const T* row = xb + h * W * V;
      A r = 0;
#pragma unroll
      for (int dx = 0; dx < 3; ++dx) {
        const Idx w = w0 + dx;
        if (w < W) r += (dx == 1 ? A(2) : A(1)) * to_acc(row[w * V]);
      }
      acc += (dy == 1 ? A(2) : A(1)) * r;
    }
    y[i] = from_acc<T>(acc * A(0.0625));
  }
}

template <class T, class Idx>
__global__ void __launch_bounds__(kThreads)
    blur_backward_kernel(const T* __restrict__ g, T* __restrict__ gin, BlurShape s, typename DivOf<Idx>::type div_v,
                         typename DivOf<Idx>::type div_w, typename DivOf<Idx>::type div_h,
                         typename DivOf<Idx>::type div_sh, typename DivOf<Idx>::type div_sw, Idx total) {
  using A = acc_t<T>;
  const Idx OH = s.OH, OW = s.OW, V = s.V;
  for (Idx i = blockIdx.x * static_cast<Idx>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<Idx>(gridDim.x) * blockDim.x) {
    Idx v, w, h;
    Idx q = div_v.divmod(i, v);
    q = div_w.divmod(q, w);
    const Idx b = div_h.divmod(q, h);
    const T* gb = g + b * OH * OW * V + v;
    A acc = 0;
#pragma unroll
    for (int ty = 0; ty < 3; ++ty) {
      Idx oh;
      if (!tap_of(h, ty, div_sh, OH, oh)) continue;
      const T* row = gb + oh * OW * V;
      A r = 0;
#pragma unroll
      for (int tx = 0; tx < 3; ++tx) {
        Idx ow;
        if (tap_of(w, tx, div_sw, OW, ow)) r += (tx == 1 ? A(2) : A(1)) * to_acc(row[ow * V]);
      }
      acc += (ty == 1 ? A(2) : A(1)) * r;
    }
    gin[i] = from_acc<T>(acc * A(0.0625));
  }
}

template <class T, class Idx>
__global__ void __launch_bounds__(kThreads)
    maxblur_forward_kernel(const T* __restrict__ x, T* __restrict__ y, uint8_t* __restrict__ argmax, MaxBlurShape s,
                           typename DivOf<Idx>::type div_v, typename DivOf<Idx>::type div_ow,
                           typename DivOf<Idx>::type div_oh, Idx total) {
  using A = acc_t<T>;
  const Idx H = s.H, W = s.W, V = s.V, PH = s.PH, PW = s.PW;
  const window::Window win{s.H, s.W, s.kh, s.kw, s.pad_h, s.pad_w, s.dil_h, s.dil_w};
  for (Idx i = blockIdx.x * static_cast<Idx>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<Idx>(gridDim.x) * blockDim.x) {
    Idx v, ow, oh;
    Idx q = div_v.divmod(i, v);
    q = div_ow.divmod(q, ow);
    const Idx b = div_oh.divmod(q, oh);
    const T* xb = x + b * H * W * V + v;
    const auto load = [xb, W, V](Idx ih, Idx iw) { return to_acc(xb[(ih * W + iw) * V]); };
    A acc = 0;
    for (int ty = 0; ty < 3; ++ty) {
      const Idx ph = oh * static_cast<Idx>(s.sh) - 1 + ty;  // may wrap: ph < PH fails
      if (ph >= PH) continue;
      // Of the outputs reading pooled row ph, the first one writes its argmax.
      const bool row_owner = oh == 0 || ty + s.sh > 2;
      A r = 0;
      for (int tx = 0; tx < 3; ++tx) {
        const Idx pw = ow * static_cast<Idx>(s.sw) - 1 + tx;
        if (pw >= PW) continue;
        A best;
        const int best_k = window::window_argmax<Idx>(ph, pw, win, load, best);
        r += (tx == 1 ? A(2) : A(1)) * best;
        if (argmax != nullptr && row_owner && (ow == 0 || tx + s.sw > 2)) {
          argmax[((b * PH + ph) * PW + pw) * V + v] = static_cast<uint8_t>(best_k);
        }
      }
      acc += (ty == 1 ? A(2) : A(1)) * r;
    }
    y[i] = from_acc<T>(acc * A(0.0625));
  }
}

template <class T, class Idx>
__global__ void __launch_bounds__(kThreads)
    maxblur_backward_kernel(const T* __restrict__ g, const uint8_t* __restrict__ argmax, T* __restrict__ gin,
                            MaxBlurShape s, typename DivOf<Idx>::type div_v, typename DivOf<Idx>::type div_w,
                            typename DivOf<Idx>::type div_h, typename DivOf<Idx>::type div_sh,
                            typename DivOf<Idx>::type div_sw, Idx total) {
  using A = acc_t<T>;
  const Idx OH = s.OH, OW = s.OW, V = s.V, PH = s.PH, PW = s.PW;
  const int kh = static_cast<int>(s.kh), kw = static_cast<int>(s.kw);
  for (Idx i = blockIdx.x * static_cast<Idx>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<Idx>(gridDim.x) * blockDim.x) {
    Idx v, w, h;
    Idx q = div_v.divmod(i, v);
    q = div_w.divmod(q, w);
    const Idx b = div_h.divmod(q, h);
    const T* gb = g + b * OH * OW * V + v;
    const uint8_t* mb = argmax + b * PH * PW * V + v;
    A acc = 0;
    for (int a = 0; a < kh; ++a) {
      // pooled row ph whose window row a is input row h
      const Idx ph = h + static_cast<Idx>(s.pad_h) - static_cast<Idx>(a * s.dil_h);
      if (ph >= PH) continue;
      Idx ohs[3];
      A wys[3];
      int nv = 0;
#pragma unroll
      for (int ty = 0; ty < 3; ++ty) {
        Idx oh;
        if (tap_of(ph, ty, div_sh, OH, oh)) {
          ohs[nv] = oh;
          wys[nv] = ty == 1 ? A(2) : A(1);
          ++nv;
        }
      }
      if (nv == 0) continue;
      for (int c = 0; c < kw; ++c) {
        const Idx pw = w + static_cast<Idx>(s.pad_w) - static_cast<Idx>(c * s.dil_w);
        if (pw >= PW) continue;
        Idx ows[3];
        A wxs[3];
        int nh = 0;
#pragma unroll
        for (int tx = 0; tx < 3; ++tx) {
          Idx ow;
          if (tap_of(pw, tx, div_sw, OW, ow)) {
            ows[nh] = ow;
            wxs[nh] = tx == 1 ? A(2) : A(1);
            ++nh;
          }
        }
        if (nh == 0 || mb[(ph * PW + pw) * V] != a * kw + c) continue;
        for (int p = 0; p < nv; ++p) {
          const T* row = gb + ohs[p] * OW * V;
          A r = 0;
          for (int k = 0; k < nh; ++k) r += wxs[k] * to_acc(row[ows[k] * V]);
          acc += wys[p] * r;
        }
      }
    }
    gin[i] = from_acc<T>(acc * A(0.0625));
  }
}

/// Whether every index of the launch fits 32-bit arithmetic: each tensor's element count below 2^31.
bool fits_32bit(std::initializer_list<int64_t> sizes) {
  for (const int64_t n : sizes) {
    if (n >= (int64_t{1} << 31)) return false;
  }
  return true;
}

}  // namespace

cudaError_t launch_blur2d_forward(const void* x, void* y, const BlurShape& s, KernelDType dtype,
                                  cudaStream_t stream) {
  const int64_t total = s.B * s.OH * s.OW * s.V;
  if (total == 0) return cudaSuccess;
  const unsigned grid = ops::cuda::grid_for(total, kThreads);
  ops::cuda::visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (fits_32bit({total, s.B * s.H * s.W * s.V})) {
      blur_forward_kernel<T, uint32_t><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<T*>(y), s, FastDivmod(s.V), FastDivmod(s.OW), FastDivmod(s.OH),
          static_cast<uint32_t>(total));
    } else {
      blur_forward_kernel<T, uint64_t><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<T*>(y), s, SlowDivmod(s.V), SlowDivmod(s.OW), SlowDivmod(s.OH),
          static_cast<uint64_t>(total));
    }
  });
  return cudaGetLastError();
}

cudaError_t launch_blur2d_backward(const void* grad_out, void* grad_in, const BlurShape& s, KernelDType dtype,
                                   cudaStream_t stream) {
  const int64_t total = s.B * s.H * s.W * s.V;
  if (total == 0) return cudaSuccess;
  const unsigned grid = ops::cuda::grid_for(total, kThreads);
  ops::cuda::visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (fits_32bit({total, s.B * s.OH * s.OW * s.V})) {
      blur_backward_kernel<T, uint32_t><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(grad_out), static_cast<T*>(grad_in), s, FastDivmod(s.V), FastDivmod(s.W),
          FastDivmod(s.H), FastDivmod(s.sh), FastDivmod(s.sw), static_cast<uint32_t>(total));
    } else {
      blur_backward_kernel<T, uint64_t><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(grad_out), static_cast<T*>(grad_in), s, SlowDivmod(s.V), SlowDivmod(s.W),
          SlowDivmod(s.H), SlowDivmod(s.sh), SlowDivmod(s.sw), static_cast<uint64_t>(total));
    }
  });
  return cudaGetLastError();
}

cudaError_t launch_blur_maxpool2d_forward(const void* x, void* y, uint8_t* argmax, const MaxBlurShape& s,
                                          KernelDType dtype, cudaStream_t stream) {
  const int64_t total = s.B * s.OH * s.OW * s.V;
  if (total == 0) return cudaSuccess;
  const unsigned grid = ops::cuda::grid_for(total, kThreads);
  ops::cuda::visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (fits_32bit({total, s.B * s.H * s.W * s.V, s.B * s.PH * s.PW * s.V})) {  // input, output, argmax
      maxblur_forward_kernel<T, uint32_t><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<T*>(y), argmax, s, FastDivmod(s.V), FastDivmod(s.OW),
          FastDivmod(s.OH), static_cast<uint32_t>(total));
    } else {
      maxblur_forward_kernel<T, uint64_t><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<T*>(y), argmax, s, SlowDivmod(s.V), SlowDivmod(s.OW),
          SlowDivmod(s.OH), static_cast<uint64_t>(total));
    }
  });
  return cudaGetLastError();
}

cudaError_t launch_blur_maxpool2d_backward(const void* grad_out, const uint8_t* argmax, void* grad_in,
                                           const MaxBlurShape& s, KernelDType dtype, cudaStream_t stream) {
  const int64_t total = s.B * s.H * s.W * s.V;
  if (total == 0) return cudaSuccess;
  const unsigned grid = ops::cuda::grid_for(total, kThreads);
  ops::cuda::visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (fits_32bit({total, s.B * s.OH * s.OW * s.V, s.B * s.PH * s.PW * s.V})) {
      maxblur_backward_kernel<T, uint32_t><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(grad_out), argmax, static_cast<T*>(grad_in), s, FastDivmod(s.V), FastDivmod(s.W),
          FastDivmod(s.H), FastDivmod(s.sh), FastDivmod(s.sw), static_cast<uint32_t>(total));
    } else {
      maxblur_backward_kernel<T, uint64_t><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(grad_out), argmax, static_cast<T*>(grad_in), s, SlowDivmod(s.V), SlowDivmod(s.W),
          SlowDivmod(s.H), SlowDivmod(s.sh), SlowDivmod(s.sw), static_cast<uint64_t>(total));
    }
  });
  return cudaGetLastError();
}

}  // namespace tessera::algorithms::cuda
