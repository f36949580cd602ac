// Fused blur-pool ops: the CPU implementation (the reference the CUDA kernels are tested against), the
// autograd Functions, and the registration with the torch dispatcher for the CPU and, with TESSERA_CUDA,
// CUDA (kernels in blurpool_kernels.cu).
//
// Every tensor is processed as [B, H, W, V], dense in that order: NCHW is B = N·C, V = 1; channels-last is
// B = N, V = C. The blur (1/16)[1 2 1]ᵀ[1 2 1] is separable: per output row, a vertical [1 2 1] of three
// input rows into a row buffer, then a horizontal [1 2 1] with the stride, so the full-resolution blurred
// image never exists. The backward is the transposed operation, computed the same way per input row.
#include "blurpool_ops.h"

#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "blurpool.h"
#include "src/ops/cpu_simd.h"
#include "src/ops/op_utils.h"

#ifdef TESSERA_CUDA
#include "blurpool_kernels.cuh"
#endif

namespace tessera::algorithms {
namespace {

using ops::typed_op;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <class T>
using acc_of = std::conditional_t<std::is_same_v<T, double>, double, float>;

// ----------------------------------------------------------------------------------------------------------
// Geometry

struct Geometry {
  int64_t B, H, W, V, OH, OW, sh, sw;
};

struct MaxGeometry {
  int64_t B, H, W, V, PH, PW, OH, OW, kh, kw, sh, sw, pad_h, pad_w, dil_h, dil_w;
};

int64_t blurred_size(int64_t n, int64_t s) { return n == 0 ? 0 : (n - 1) / s + 1; }

/// [B, H, W, V] view of a dense NCHW or NHWC tensor of sizes [N, C, H, W].
void bhwv(at::IntArrayRef sizes, bool channels_last, int64_t& B, int64_t& V) {
  B = channels_last ? sizes[0] : sizes[0] * sizes[1];
  V = channels_last ? sizes[1] : 1;
}

/// Whether a dense tensor's memory is NHWC (and not also NCHW, as it is when C == 1 or H = W = 1).
bool stored_channels_last(const at::Tensor& t) {
  return !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// ----------------------------------------------------------------------------------------------------------
// CPU building blocks (always inlined into the AVX2/baseline clones of the row functions below)

/// out[j] = Σ_k w[k]·rows[k][j] for j < n, k < count (count <= 3; 0 gives zeros).
template <class T, class A>
TESSERA_ALWAYS_INLINE void combine_rows(A* out, const T* const* rows, const A* w, int count, int64_t n) {
  switch (count) {
    case 0:
      for (int64_t j = 0; j < n; ++j) out[j] = A(0);
      break;
    case 1: {
      const T* r0 = rows[0];
      const A w0 = w[0];
      for (int64_t j = 0; j < n; ++j) out[j] = w0 * static_cast<A>(r0[j]);
      break;
    }
    case 2: {
      const T *r0 = rows[0], *r1 = rows[1];
      const A w0 = w[0], w1 = w[1];
      for (int64_t j = 0; j < n; ++j) out[j] = w0 * static_cast<A>(r0[j]) + w1 * static_cast<A>(r1[j]);
      break;
    }
    default: {
      const T *r0 = rows[0], *r1 = rows[1], *r2 = rows[2];
      const A w0 = w[0], w1 = w[1], w2 = w[2];
      for (int64_t j = 0; j < n; ++j) {
        out[j] = w0 * static_cast<A>(r0[j]) + w1 * static_cast<A>(r1[j]) + w2 * static_cast<A>(r2[j]);
      }
    }
  }
}

/// Horizontal [1 2 1]·scale with stride s: out[o·V + v] = scale·(tb[s·o] + 2·tb[s·o + 1] + tb[s·o + 2]) in units
/// of V, where tb is the row padded with V zeros on each side.
template <class T, class A>
TESSERA_ALWAYS_INLINE void hblur(const A* tb, T* out, int64_t out_w, int64_t V, int64_t s, A scale) {
  if (V == 1) {
    if (s == 1) {
      for (int64_t o = 0; o < out_w; ++o) out[o] = static_cast<T>((tb[o] + A(2) * tb[o + 1] + tb[o + 2]) * scale);
    } else {
      for (int64_t o = 0; o < out_w; ++o) {
        const A* p = tb + s * o;
        out[o] = static_cast<T>((p[0] + A(2) * p[1] + p[2]) * scale);
      }
    }
    return;
  }
  for (int64_t o = 0; o < out_w; ++o) {
    const A* p = tb + s * o * V;
    T* q = out + o * V;
    for (int64_t v = 0; v < V; ++v) q[v] = static_cast<T>((p[v] + A(2) * p[V + v] + p[2 * V + v]) * scale);
  }
}

/// The transpose of hblur: out[w·V + v] for w < out_w from ub (u of (out_w − 1)/s + 1 columns, padded with
/// V zeros on each side): Σ_t k_t·u[(w + 1 − t)/s] over the taps t = 0, 1, 2 (k = 1, 2, 1) that divide.
template <class T, class A>
TESSERA_ALWAYS_INLINE void hblur_transposed(const A* ub, T* out, int64_t out_w, int64_t V, int64_t s, A scale) {
  if (s == 1) {
    hblur<T, A>(ub, out, out_w, V, 1, scale);  // symmetric filter, zero padding: the same operation
    return;
  }
  if (s == 2) {  // even w = 2m: 2·u[m]; odd w = 2m + 1: u[m] + u[m + 1] (padded: ub[m + 1], ub[m + 2])
    if (V == 1) {
      int64_t w = 0;
      for (; w + 1 < out_w; w += 2) {
        const int64_t m = w / 2;
        out[w] = static_cast<T>(A(2) * ub[m + 1] * scale);
        out[w + 1] = static_cast<T>((ub[m + 1] + ub[m + 2]) * scale);
      }
      if (w < out_w) out[w] = static_cast<T>(A(2) * ub[w / 2 + 1] * scale);
      return;
    }
    for (int64_t w = 0; w < out_w; ++w) {
      const int64_t m = w / 2;
      const A* p = ub + (m + 1) * V;
      T* q = out + w * V;
      if (w % 2 == 0) {
        for (int64_t v = 0; v < V; ++v) q[v] = static_cast<T>(A(2) * p[v] * scale);
      } else {
        for (int64_t v = 0; v < V; ++v) q[v] = static_cast<T>((p[v] + p[V + v]) * scale);
      }
    }
    return;
  }
  for (int64_t w = 0; w < out_w; ++w) {
    const A* taps[3];
    A weights[3];
    int n = 0;
    for (int t = 0; t < 3; ++t) {
      const int64_t num = w + 1 - t;
      if (num < 0 || num % s != 0) continue;
      taps[n] = ub + (num / s + 1) * V;
      weights[n] = t == 1 ? A(2) : A(1);
      ++n;
    }
    T* q = out + w * V;
    for (int64_t v = 0; v < V; ++v) {
      A acc = 0;
      for (int k = 0; k < n; ++k) acc += weights[k] * taps[k][v];
      q[v] = static_cast<T>(acc * scale);
    }
  }
}

/// The blur rows (input rows at stride s) that contribute to input/pooled row p in the transpose, with weights.
template <class A>
TESSERA_ALWAYS_INLINE int transposed_taps(int64_t p, int64_t s, int64_t out_size, int64_t* rows, A* weights) {
  int n = 0;
  for (int t = 0; t < 3; ++t) {
    const int64_t num = p + 1 - t;
    if (num < 0 || num % s != 0 || num / s >= out_size) continue;
    rows[n] = num / s;
    weights[n] = t == 1 ? A(2) : A(1);
    ++n;
  }
  return n;
}

// ----------------------------------------------------------------------------------------------------------
// CPU: blur forward and backward over a range of rows

/// Output rows r = b·OH + oh in [begin, end). `buf` holds (W + 2)·V values, zero at both ends.
template <class T, class A>
TESSERA_CPU_CLONES void blur_rows(const T* x, T* y, Geometry g, int64_t begin, int64_t end, A* buf) {
  const int64_t WV = g.W * g.V;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / g.OH, oh = r % g.OH;
    const T* xb = x + b * g.H * WV;
    const T* rows[3];
    A w[3];
    int n = 0;
    for (int t = 0; t < 3; ++t) {
      const int64_t h = oh * g.sh - 1 + t;
      if (h < 0 || h >= g.H) continue;
      rows[n] = xb + h * WV;
      w[n] = t == 1 ? A(2) : A(1);
      ++n;
    }
    combine_rows<T, A>(buf + g.V, rows, w, n, WV);
    hblur<T, A>(buf, y + r * g.OW * g.V, g.OW, g.V, g.sw, A(0.0625));
  }
}

/// Input rows r = b·H + h in [begin, end) of grad_in. `buf` holds (OW + 2)·V values, zero at both ends.
template <class T, class A>
TESSERA_CPU_CLONES void blur_backward_rows(const T* g_out, T* g_in, Geometry g, int64_t begin, int64_t end, A* buf) {
  const int64_t OWV = g.OW * g.V;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / g.H, h = r % g.H;
    int64_t oh[3];
    A w[3];
    const int n = transposed_taps<A>(h, g.sh, g.OH, oh, w);
    const T* rows[3];
    for (int k = 0; k < n; ++k) rows[k] = g_out + (b * g.OH + oh[k]) * OWV;
    combine_rows<T, A>(buf + g.V, rows, w, n, OWV);
    hblur_transposed<T, A>(buf, g_in + r * g.W * g.V, g.W, g.V, g.sw, A(0.0625));
  }
}

// ----------------------------------------------------------------------------------------------------------
// CPU: max-pool (stride 1) then blur, one image b (all its rows) at a time

/// Scratch of one thread for maxblur_images. Window offsets are kept as small integers in the accumulation type
/// so that the selection loops are plain float blends, which vectorise (bytes mixed with floats do not).
template <class A>
struct MaxScratch {
  MaxScratch(const MaxGeometry& g)
      : vmax((g.W + 2 * g.pad_w) * g.V, -std::numeric_limits<A>::infinity()),
        vrow((g.W + 2 * g.pad_w) * g.V, A(255)),
        pooled(3 * g.PW * g.V),
        blur((g.PW + 2) * g.V, A(0)),
        best_row(g.PW * g.V),
        best_col(g.PW * g.V) {}
  std::vector<A> vmax;      ///< vertical maxima of the k rows of a window, padded by pad_w·V (−inf)
  std::vector<A> vrow;      ///< their row offset in the window (255 in the padding: loses every tie)
  std::vector<A> pooled;    ///< three pooled rows (a cache keyed by pooled row index)
  std::vector<A> blur;      ///< vertical blur of three pooled rows, padded with V zeros on each side
  std::vector<A> best_row;  ///< window row of the maxima of the pooled row being built
  std::vector<A> best_col;  ///< and their window column
};

/// Whether `val` replaces the running maximum `best`: larger, or a NaN (which then stays). No branches.
template <class A>
TESSERA_ALWAYS_INLINE bool takes(A val, A best) {
  return (val > best) | ((val != val) & (best == best));
}

/// Pooled row ph into `out` (PW·V) and, if `arg` is not null, the window offsets of its maxima into `arg`.
template <class T, class A>
TESSERA_ALWAYS_INLINE void pooled_row(const T* xb, const MaxGeometry& g, int64_t ph, A* out, uint8_t* arg,
                                      MaxScratch<A>& s) {
  const int64_t WV = g.W * g.V;
  A* vm = s.vmax.data() + g.pad_w * g.V;
  A* vr = s.vrow.data() + g.pad_w * g.V;
  bool first = true;
  for (int64_t a = 0; a < g.kh; ++a) {
    const int64_t ih = ph - g.pad_h + a * g.dil_h;
    if (ih < 0 || ih >= g.H) continue;
    const T* xr = xb + ih * WV;
    const A ra = static_cast<A>(a);
    if (first) {
      for (int64_t j = 0; j < WV; ++j) vm[j] = static_cast<A>(xr[j]);
      if (arg) std::fill(vr, vr + WV, ra);
      first = false;
    } else if (arg) {
      for (int64_t j = 0; j < WV; ++j) {
        const A val = static_cast<A>(xr[j]);
        const bool take = takes(val, vm[j]);
        vm[j] = take ? val : vm[j];
        vr[j] = take ? ra : vr[j];
      }
    } else {
      for (int64_t j = 0; j < WV; ++j) {
        const A val = static_cast<A>(xr[j]);
        vm[j] = takes(val, vm[j]) ? val : vm[j];
      }
    }
  }
  if (first) {  // every window row is padding (not possible with padding <= kernel/2, kept for safety)
    std::fill(vm, vm + WV, -std::numeric_limits<A>::infinity());
    std::fill(vr, vr + WV, A(0));
  }
  // Horizontal max: pooled value j = pw·V + v reads column pw − pad_w + c·dil_w, which lives at j + c·dil_w·V in
  // the padded buffer, so every pass over c is a contiguous loop over j (both layouts).
  const A* vmp = s.vmax.data();
  const A* vrp = s.vrow.data();
  const int64_t n = g.PW * g.V;
  for (int64_t j = 0; j < n; ++j) out[j] = vmp[j];
  if (!arg) {
    for (int64_t c = 1; c < g.kw; ++c) {
      const A* col = vmp + c * g.dil_w * g.V;
      for (int64_t j = 0; j < n; ++j) out[j] = takes(col[j], out[j]) ? col[j] : out[j];
    }
    return;
  }
  A* br = s.best_row.data();
  A* bc = s.best_col.data();
  for (int64_t j = 0; j < n; ++j) br[j] = vrp[j];
  std::fill(bc, bc + n, A(0));
  for (int64_t c = 1; c < g.kw; ++c) {
    const A* col = vmp + c * g.dil_w * g.V;
    const A* row = vrp + c * g.dil_w * g.V;
    const A cc = static_cast<A>(c);
    for (int64_t j = 0; j < n; ++j) {
      // Raster order like torch: among equal maxima (or NaNs) the smallest window row, then the smallest column,
      // which is also the CUDA kernel's choice (the first in raster order: blurpool_window.h).
      const bool same = (col[j] == out[j]) | ((col[j] != col[j]) & (out[j] != out[j]));
      const bool take = takes(col[j], out[j]) | (same & (row[j] < br[j]));
      out[j] = take ? col[j] : out[j];
      br[j] = take ? row[j] : br[j];
      bc[j] = take ? cc : bc[j];
    }
  }
  const A kw = static_cast<A>(g.kw);
  for (int64_t j = 0; j < n; ++j) {
    const A r = br[j] == A(255) ? A(0) : br[j];
    arg[j] = static_cast<uint8_t>(static_cast<int>(r * kw + bc[j]));
  }
}

/// Images b in [begin, end): y [OH, OW, V] per image and, if `argmax` is not null, the argmax of the pooled rows.
template <class T, class A>
TESSERA_CPU_CLONES void maxblur_images(const T* x, T* y, uint8_t* argmax, MaxGeometry g, int64_t begin, int64_t end,
                                       MaxScratch<A>& s) {
  const int64_t PWV = g.PW * g.V;
  for (int64_t b = begin; b < end; ++b) {
    const T* xb = x + b * g.H * g.W * g.V;
    int64_t tag[3] = {-1, -1, -1};  // pooled row held by each slot
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const A* rows[3];
      A w[3];
      int n = 0;
      for (int t = 0; t < 3; ++t) {
        const int64_t ph = oh * g.sh - 1 + t;
        if (ph < 0 || ph >= g.PH) continue;
        int slot = -1;
        for (int k = 0; k < 3; ++k) {
          if (tag[k] == ph) slot = k;
        }
        if (slot < 0) {  // take a free slot or one holding a row below this output's window
          const int64_t lowest = std::max<int64_t>(0, oh * g.sh - 1);
          for (int k = 0; k < 3 && slot < 0; ++k) {
            if (tag[k] < lowest) slot = k;
          }
          tag[slot] = ph;
          pooled_row<T, A>(xb, g, ph, s.pooled.data() + slot * PWV,
                           argmax ? argmax + (b * g.PH + ph) * PWV : nullptr, s);
        }
        rows[n] = s.pooled.data() + slot * PWV;
        w[n] = t == 1 ? A(2) : A(1);
        ++n;
      }
      combine_rows<A, A>(s.blur.data() + g.V, rows, w, n, PWV);
      hblur<T, A>(s.blur.data(), y + (b * g.OH + oh) * g.OW * g.V, g.OW, g.V, g.sw, A(0.0625));
    }
  }
}

/// Images b in [begin, end) of grad_in: the transposed blur of grad_out gives the gradient of each pooled value,
/// which goes to its argmax. The scatter is done as one masked, contiguous pass per window offset k into an image
/// buffer padded like the pool (so no bounds checks): acc[window k of j] += (argmax[j] == k) ? gp[j] : 0.
/// `acc` holds (H + 2·pad_h)·(W + 2·pad_w)·V values, `u` (OW + 2)·V, `gp` and `argf` PW·V.
template <class T, class A>
TESSERA_CPU_CLONES void maxblur_backward_images(const T* g_out, const uint8_t* argmax, T* g_in, MaxGeometry g,
                                                int64_t begin, int64_t end, A* acc, A* u, A* gp, A* argf) {
  const int64_t OWV = g.OW * g.V, PWV = g.PW * g.V, V = g.V;
  const int64_t Hp = g.H + 2 * g.pad_h, Wp = g.W + 2 * g.pad_w;
  for (int64_t b = begin; b < end; ++b) {
    std::fill(acc, acc + Hp * Wp * V, A(0));
    for (int64_t ph = 0; ph < g.PH; ++ph) {
      int64_t oh[3];
      A w[3];
      const int n = transposed_taps<A>(ph, g.sh, g.OH, oh, w);
      if (n == 0) continue;  // no output reads this pooled row (stride > 3)
      const T* rows[3];
      for (int k = 0; k < n; ++k) rows[k] = g_out + (b * g.OH + oh[k]) * OWV;
      combine_rows<T, A>(u + V, rows, w, n, OWV);
      hblur_transposed<A, A>(u, gp, g.PW, V, g.sw, A(0.0625));
      const uint8_t* arg = argmax + (b * g.PH + ph) * PWV;
      for (int64_t j = 0; j < PWV; ++j) argf[j] = static_cast<A>(arg[j]);
      for (int64_t a = 0; a < g.kh; ++a) {
        for (int64_t c = 0; c < g.kw; ++c) {
          // input (ph − pad_h + a·dil_h, pw − pad_w + c·dil_w) is padded row ph + a·dil_h, column pw + c·dil_w
          A* dst = acc + ((ph + a * g.dil_h) * Wp + c * g.dil_w) * V;
          const A k = static_cast<A>(a * g.kw + c);
          for (int64_t j = 0; j < PWV; ++j) dst[j] += argf[j] == k ? gp[j] : A(0);
        }
      }
    }
    T* out = g_in + b * g.H * g.W * V;
    for (int64_t ih = 0; ih < g.H; ++ih) {
      const A* src = acc + ((ih + g.pad_h) * Wp + g.pad_w) * V;
      T* dst = out + ih * g.W * V;
      for (int64_t j = 0; j < g.W * V; ++j) dst[j] = static_cast<T>(src[j]);
    }
  }
}

// ----------------------------------------------------------------------------------------------------------
// Argument preparation shared by the CPU and CUDA kernels

struct BlurArgs {
  at::Tensor x;  ///< dense NCHW or NHWC
  bool channels_last;
  Geometry g;
};

BlurArgs blur_args(const at::Tensor& x_in, at::IntArrayRef stride, const char* what) {
  ops::check_image(x_in, what);
  const auto s = ops::pair_arg(stride, what, "stride", 1);
  BlurArgs a;
  a.channels_last = ops::prefers_channels_last(x_in);
  a.x = x_in.contiguous(ops::format_of(a.channels_last));
  const auto sz = a.x.sizes();
  a.g.H = sz[2];
  a.g.W = sz[3];
  bhwv(sz, a.channels_last, a.g.B, a.g.V);
  a.g.sh = s[0];
  a.g.sw = s[1];
  a.g.OH = blurred_size(a.g.H, a.g.sh);
  a.g.OW = blurred_size(a.g.W, a.g.sw);
  return a;
}

/// Geometry of the backward: grad_output [N, C, OH, OW] (made dense in its preferred layout) for an input of
/// `input_size` (H, W).
BlurArgs blur_backward_args(const at::Tensor& grad, at::IntArrayRef input_size, at::IntArrayRef stride,
                            const char* what) {
  ops::check_image(grad, what);
  const auto s = ops::pair_arg(stride, what, "stride", 1);
  const auto in = ops::pair_arg(input_size, what, "input_size", 0);
  TORCH_CHECK(grad.size(2) == blurred_size(in[0], s[0]) && grad.size(3) == blurred_size(in[1], s[1]), what,
              ": grad_output ", grad.sizes(), " does not match an input of ", input_size, " at stride ", stride);
  BlurArgs a;
  a.channels_last = ops::prefers_channels_last(grad);
  a.x = grad.contiguous(ops::format_of(a.channels_last));
  a.g.H = in[0];
  a.g.W = in[1];
  bhwv(grad.sizes(), a.channels_last, a.g.B, a.g.V);
  a.g.sh = s[0];
  a.g.sw = s[1];
  a.g.OH = grad.size(2);
  a.g.OW = grad.size(3);
  return a;
}

struct MaxArgs {
  at::Tensor x;
  bool channels_last;
  MaxGeometry g;
};

MaxGeometry max_geometry(int64_t H, int64_t W, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, const char* what) {
  const auto k = ops::pair_arg(kernel_size, what, "kernel_size", 1);
  const auto s = ops::pair_arg(stride, what, "stride", 1);
  const auto p = ops::pair_arg(padding, what, "padding", 0);
  const auto d = ops::pair_arg(dilation, what, "dilation", 1);
  TORCH_CHECK(k[0] * k[1] <= 256, what, ": the fused kernel takes windows of at most 256 elements, got ", kernel_size);
  TORCH_CHECK(p[0] <= k[0] / 2 && p[1] <= k[1] / 2, what, ": padding ", padding, " must be at most half the kernel ",
              kernel_size);
  MaxGeometry g{};
  g.H = H;
  g.W = W;
  g.kh = k[0];
  g.kw = k[1];
  g.sh = s[0];
  g.sw = s[1];
  g.pad_h = p[0];
  g.pad_w = p[1];
  g.dil_h = d[0];
  g.dil_w = d[1];
  g.PH = H + 2 * p[0] - d[0] * (k[0] - 1);
  g.PW = W + 2 * p[1] - d[1] * (k[1] - 1);
  TORCH_CHECK(g.PH >= 1 && g.PW >= 1, what, ": an input of ", H, "x", W, " is smaller than the pooling window");
  g.OH = blurred_size(g.PH, g.sh);
  g.OW = blurred_size(g.PW, g.sw);
  return g;
}

MaxArgs max_args(const at::Tensor& x_in, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                 at::IntArrayRef padding, at::IntArrayRef dilation, const char* what) {
  ops::check_image(x_in, what);
  MaxArgs a;
  a.channels_last = ops::prefers_channels_last(x_in);
  a.x = x_in.contiguous(ops::format_of(a.channels_last));
  a.g = max_geometry(a.x.size(2), a.x.size(3), kernel_size, stride, padding, dilation, what);
  bhwv(a.x.sizes(), a.channels_last, a.g.B, a.g.V);
  return a;
}

/// Checks and geometry of the max-pool+blur backward, shared by the CPU and CUDA kernels: grad_output [N, C, OH, OW]
/// and the forward's argmax (dense uint8 [N, C, PH, PW]) on one device, for an input of `input_size`. `grad` comes
/// back dense in argmax's layout.
MaxArgs max_backward_args(const at::Tensor& grad, const at::Tensor& argmax, at::IntArrayRef input_size,
                          at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, const char* what) {
  ops::check_image(grad, what);
  const auto in = ops::pair_arg(input_size, what, "input_size", 1);
  MaxArgs a;
  a.g = max_geometry(in[0], in[1], kernel_size, stride, padding, dilation, what);
  TORCH_CHECK(argmax.device() == grad.device(), what, ": argmax is on ", argmax.device(), " but grad_output on ",
              grad.device());
  TORCH_CHECK(argmax.scalar_type() == at::kByte && argmax.dim() == 4 && argmax.size(0) == grad.size(0) &&
                  argmax.size(1) == grad.size(1) && argmax.size(2) == a.g.PH && argmax.size(3) == a.g.PW,
              what, ": argmax ", argmax.sizes(), " ", argmax.scalar_type(), " does not match grad_output ",
              grad.sizes(), " and the pooled size ", a.g.PH, "x", a.g.PW, " (expected the forward's uint8 argmax)");
  TORCH_CHECK(grad.size(2) == a.g.OH && grad.size(3) == a.g.OW, what, ": grad_output ", grad.sizes(),
              " does not match the output size ", a.g.OH, "x", a.g.OW);
  a.channels_last = stored_channels_last(argmax);
  TORCH_CHECK(argmax.is_contiguous(ops::format_of(a.channels_last)), what,
              ": argmax must be the forward's dense tensor (NCHW or channels-last)");
  a.x = grad.contiguous(ops::format_of(a.channels_last));
  bhwv(a.x.sizes(), a.channels_last, a.g.B, a.g.V);
  return a;
}

int64_t grain_for(int64_t work_per_item) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item)); }

// ----------------------------------------------------------------------------------------------------------
// CPU kernels of the internal ops

at::Tensor blur2d_cpu(const at::Tensor& x_in, at::IntArrayRef stride) {
  BlurArgs a = blur_args(x_in, stride, "tessera::blur2d");
  const Geometry g = a.g;
  at::Tensor y = at::empty({a.x.size(0), a.x.size(1), g.OH, g.OW}, a.x.options().memory_format(ops::format_of(a.channels_last)));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "tessera::blur2d", [&] {
    using A = acc_of<scalar_t>;
    const scalar_t* xp = a.x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, g.B * g.OH, grain_for(g.W * g.V * 3), [&](int64_t begin, int64_t end) {
      std::vector<A> buf((g.W + 2) * g.V, A(0));
      blur_rows<scalar_t, A>(xp, yp, g, begin, end, buf.data());
    });
  });
  return y;
}

at::Tensor blur2d_backward_cpu(const at::Tensor& grad, at::IntArrayRef input_size, at::IntArrayRef stride) {
  BlurArgs a = blur_backward_args(grad, input_size, stride, "tessera::blur2d_backward");
  const Geometry g = a.g;
  at::Tensor gin = at::empty({a.x.size(0), a.x.size(1), g.H, g.W}, a.x.options().memory_format(ops::format_of(a.channels_last)));
  if (gin.numel() == 0) return gin;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "tessera::blur2d_backward", [&] {
    using A = acc_of<scalar_t>;
    const scalar_t* gp = a.x.data_ptr<scalar_t>();
    scalar_t* ip = gin.data_ptr<scalar_t>();
    at::parallel_for(0, g.B * g.H, grain_for(g.W * g.V * 3), [&](int64_t begin, int64_t end) {
      std::vector<A> buf((g.OW + 2) * g.V, A(0));
      blur_backward_rows<scalar_t, A>(gp, ip, g, begin, end, buf.data());
    });
  });
  return gin;
}

std::tuple<at::Tensor, at::Tensor> blur_maxpool2d_cpu(const at::Tensor& x_in, at::IntArrayRef kernel_size,
                                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                                      at::IntArrayRef dilation, bool save_argmax) {
  MaxArgs a = max_args(x_in, kernel_size, stride, padding, dilation, "tessera::blur_maxpool2d");
  const MaxGeometry g = a.g;
  const at::MemoryFormat fmt = ops::format_of(a.channels_last);
  const int64_t N = a.x.size(0), C = a.x.size(1);
  at::Tensor y = at::empty({N, C, g.OH, g.OW}, a.x.options().memory_format(fmt));
  at::Tensor argmax = save_argmax ? at::empty({N, C, g.PH, g.PW}, a.x.options().dtype(at::kByte).memory_format(fmt))
                                  : at::empty({0}, a.x.options().dtype(at::kByte));
  if (y.numel() == 0) return {y, argmax};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "tessera::blur_maxpool2d", [&] {
    using A = acc_of<scalar_t>;
    const scalar_t* xp = a.x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    uint8_t* ap = save_argmax ? argmax.data_ptr<uint8_t>() : nullptr;
    at::parallel_for(0, g.B, grain_for(g.H * g.W * g.V * g.kh), [&](int64_t begin, int64_t end) {
      MaxScratch<A> scratch(g);
      maxblur_images<scalar_t, A>(xp, yp, ap, g, begin, end, scratch);
    });
  });
  return {y, argmax};
}

at::Tensor blur_maxpool2d_backward_cpu(const at::Tensor& grad, const at::Tensor& argmax, at::IntArrayRef input_size,
                                       at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                       at::IntArrayRef dilation) {
  const char* what = "tessera::blur_maxpool2d_backward";
  const MaxArgs a = max_backward_args(grad, argmax, input_size, kernel_size, stride, padding, dilation, what);
  const MaxGeometry g = a.g;
  const at::Tensor& go = a.x;
  at::Tensor gin = at::empty({go.size(0), go.size(1), g.H, g.W}, go.options().memory_format(ops::format_of(a.channels_last)));
  if (gin.numel() == 0) return gin;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "tessera::blur_maxpool2d_backward", [&] {
    using A = acc_of<scalar_t>;
    const scalar_t* gp = go.data_ptr<scalar_t>();
    const uint8_t* ap = argmax.data_ptr<uint8_t>();
    scalar_t* ip = gin.data_ptr<scalar_t>();
    at::parallel_for(0, g.B, grain_for(g.H * g.W * g.V * 2), [&](int64_t begin, int64_t end) {
      std::vector<A> acc((g.H + 2 * g.pad_h) * (g.W + 2 * g.pad_w) * g.V), u((g.OW + 2) * g.V, A(0));
      std::vector<A> pooled_grad(g.PW * g.V), argf(g.PW * g.V);
      maxblur_backward_images<scalar_t, A>(gp, ap, ip, g, begin, end, acc.data(), u.data(), pooled_grad.data(),
                                           argf.data());
    });
  });
  return gin;
}

// ----------------------------------------------------------------------------------------------------------
// CUDA kernels of the internal ops (launchers in blurpool_kernels.cu)

#ifdef TESSERA_CUDA
cuda::BlurShape cuda_shape(const Geometry& g) { return {g.B, g.H, g.W, g.V, g.OH, g.OW, g.sh, g.sw}; }
cuda::MaxBlurShape cuda_shape(const MaxGeometry& g) {
  return {g.B, g.H, g.W, g.V, g.PH, g.PW, g.OH, g.OW, g.kh, g.kw, g.sh, g.sw, g.pad_h, g.pad_w, g.dil_h, g.dil_w};
}

at::Tensor blur2d_cuda(const at::Tensor& x_in, at::IntArrayRef stride) {
  BlurArgs a = blur_args(x_in, stride, "tessera::blur2d");
  at::Tensor y = at::empty({a.x.size(0), a.x.size(1), a.g.OH, a.g.OW},
                           a.x.options().memory_format(ops::format_of(a.channels_last)));
  c10::cuda::CUDAGuard guard(a.x.device());
  C10_CUDA_CHECK(cuda::launch_blur2d_forward(a.x.data_ptr(), y.data_ptr(), cuda_shape(a.g),
                                             ops::kernel_dtype(a.x.scalar_type(), "tessera::blur2d"),
                                             ops::current_stream()));
  return y;
}

at::Tensor blur2d_backward_cuda(const at::Tensor& grad, at::IntArrayRef input_size, at::IntArrayRef stride) {
  BlurArgs a = blur_backward_args(grad, input_size, stride, "tessera::blur2d_backward");
  at::Tensor gin = at::empty({a.x.size(0), a.x.size(1), a.g.H, a.g.W},
                             a.x.options().memory_format(ops::format_of(a.channels_last)));
  c10::cuda::CUDAGuard guard(a.x.device());
  C10_CUDA_CHECK(cuda::launch_blur2d_backward(a.x.data_ptr(), gin.data_ptr(), cuda_shape(a.g),
                                              ops::kernel_dtype(a.x.scalar_type(), "tessera::blur2d_backward"),
                                              ops::current_stream()));
  return gin;
}

std::tuple<at::Tensor, at::Tensor> blur_maxpool2d_cuda(const at::Tensor& x_in, at::IntArrayRef kernel_size,
                                                       at::IntArrayRef stride, at::IntArrayRef padding,
                                                       at::IntArrayRef dilation, bool save_argmax) {
  MaxArgs a = max_args(x_in, kernel_size, stride, padding, dilation, "tessera::blur_maxpool2d");
  const at::MemoryFormat fmt = ops::format_of(a.channels_last);
  const int64_t N = a.x.size(0), C = a.x.size(1);
  at::Tensor y = at::empty({N, C, a.g.OH, a.g.OW}, a.x.options().memory_format(fmt));
  at::Tensor argmax = save_argmax ? at::empty({N, C, a.g.PH, a.g.PW}, a.x.options().dtype(at::kByte).memory_format(fmt))
                                  : at::empty({0}, a.x.options().dtype(at::kByte));
  c10::cuda::CUDAGuard guard(a.x.device());
  C10_CUDA_CHECK(cuda::launch_blur_maxpool2d_forward(
      a.x.data_ptr(), y.data_ptr(), save_argmax ? argmax.data_ptr<uint8_t>() : nullptr, cuda_shape(a.g),
      ops::kernel_dtype(a.x.scalar_type(), "tessera::blur_maxpool2d"), ops::current_stream()));
  return {y, argmax};
}

at::Tensor blur_maxpool2d_backward_cuda(const at::Tensor& grad, const at::Tensor& argmax, at::IntArrayRef input_size,
                                        at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation) {
  const char* what = "tessera::blur_maxpool2d_backward";
  const MaxArgs a = max_backward_args(grad, argmax, input_size, kernel_size, stride, padding, dilation, what);
  const MaxGeometry& g = a.g;
  const at::Tensor& go = a.x;
  at::Tensor gin = at::empty({go.size(0), go.size(1), g.H, g.W}, go.options().memory_format(ops::format_of(a.channels_last)));
  c10::cuda::CUDAGuard guard(go.device());
  C10_CUDA_CHECK(cuda::launch_blur_maxpool2d_backward(go.data_ptr(), argmax.data_ptr<uint8_t>(), gin.data_ptr(),
                                                      cuda_shape(g), ops::kernel_dtype(go.scalar_type(), what),
                                                      ops::current_stream()));
  return gin;
}
#endif

// ----------------------------------------------------------------------------------------------------------
// Autograd

using BlurSig = at::Tensor(const at::Tensor&, at::IntArrayRef);
using BlurBackwardSig = at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef);
using MaxSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                  at::IntArrayRef, at::IntArrayRef, bool);
using MaxBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                  at::IntArrayRef, at::IntArrayRef, at::IntArrayRef);

at::Tensor blur2d_backward_op(const at::Tensor& grad, at::IntArrayRef input_size, at::IntArrayRef stride);

/// blur2d: linear, so its backward is blur2d_backward, whose backward is blur2d again (any order works).
struct Blur2dFunction : public torch::autograd::Function<Blur2dFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::IntArrayRef stride) {
    ctx->saved_data["input_size"] = std::vector<int64_t>{x.size(2), x.size(3)};
    ctx->saved_data["stride"] = stride.vec();
    at::AutoDispatchBelowADInplaceOrView below;
    static const auto op = typed_op<BlurSig>("tessera::_blur2d");
    return op.call(x, stride);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto size = ctx->saved_data["input_size"].toIntVector();
    const auto stride = ctx->saved_data["stride"].toIntVector();
    return {blur2d_backward_op(grads[0], size, stride), at::Tensor()};
  }
};

struct Blur2dBackwardFunction : public torch::autograd::Function<Blur2dBackwardFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, at::IntArrayRef input_size,
                            at::IntArrayRef stride) {
    ctx->saved_data["stride"] = stride.vec();
    at::AutoDispatchBelowADInplaceOrView below;
    static const auto op = typed_op<BlurBackwardSig>("tessera::_blur2d_backward");
    return op.call(grad, input_size, stride);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto stride = ctx->saved_data["stride"].toIntVector();
    static const auto op = typed_op<BlurSig>("tessera::blur2d");
    return {op.call(grads[0], stride), at::Tensor(), at::Tensor()};
  }
};

bool needs_grad(const at::Tensor& t) { return at::GradMode::is_enabled() && t.requires_grad(); }

/// The transpose of reference_blur2d (its gradient) as a stock transposed convolution.
at::Tensor reference_blur2d_backward(const at::Tensor& grad, at::IntArrayRef input_size, at::IntArrayRef stride) {
  const BlurArgs a = blur_backward_args(grad, input_size, stride, "tessera::blur2d_backward");  // the checks
  const int64_t c = grad.size(1);
  // output_padding recovers the rows and columns that the strided blur did not read
  return at::conv_transpose2d(grad, blur_filter(c, grad.options()), /*bias=*/{}, {a.g.sh, a.g.sw}, /*padding=*/{1, 1},
                              {a.g.H - 1 - (a.g.OH - 1) * a.g.sh, a.g.W - 1 - (a.g.OW - 1) * a.g.sw}, c);
}

// The public ops are CompositeImplicitAutograd, so they run for every backend: each takes the fused kernels only
// where the internal op has one for the input's backend (ops::has_kernel), and the stock formulation elsewhere
// (a CUDA tensor in a library built without TESSERA_CUDA, Meta, …), whose autograd is torch's.

at::Tensor blur2d_op(const at::Tensor& x, at::IntArrayRef stride) {
  static const auto op = typed_op<BlurSig>("tessera::_blur2d");
  if (!ops::has_kernel(op, x)) return reference_blur2d(x, ops::pair_arg(stride, "tessera::blur2d", "stride", 1));
  if (!needs_grad(x)) return op.call(x, stride);
  return Blur2dFunction::apply(x, stride);
}

at::Tensor blur2d_backward_op(const at::Tensor& grad, at::IntArrayRef input_size, at::IntArrayRef stride) {
  static const auto op = typed_op<BlurBackwardSig>("tessera::_blur2d_backward");
  if (!ops::has_kernel(op, grad)) return reference_blur2d_backward(grad, input_size, stride);
  if (!needs_grad(grad)) return op.call(grad, input_size, stride);
  return Blur2dBackwardFunction::apply(grad, input_size, stride);
}

/// blur_maxpool2d: saves only the argmax bytes of the pooled values (not the input, not the pooled map).
struct BlurMaxPool2dFunction : public torch::autograd::Function<BlurMaxPool2dFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
    at::AutoDispatchBelowADInplaceOrView below;
    static const auto op = typed_op<MaxSig>("tessera::_blur_maxpool2d");
    auto [y, argmax] = op.call(x, kernel_size, stride, padding, dilation, /*save_argmax=*/true);
    ctx->save_for_backward({argmax});
    ctx->saved_data["input_size"] = std::vector<int64_t>{x.size(2), x.size(3)};
    ctx->saved_data["kernel_size"] = kernel_size.vec();
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "tessera::blur_maxpool2d: double backward is not supported (backward with create_graph=true)");
    const auto saved = ctx->get_saved_variables();
    static const auto op = typed_op<MaxBackwardSig>("tessera::_blur_maxpool2d_backward");
    auto v = [&](const char* k) { return ctx->saved_data[k].toIntVector(); };
    at::Tensor gin = op.call(grads[0], saved[0], v("input_size"), v("kernel_size"), v("stride"), v("padding"),
                             v("dilation"));
    return {gin, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor blur_maxpool2d_op(const at::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation) {
  static const auto op = typed_op<MaxSig>("tessera::_blur_maxpool2d");
  if (!ops::has_kernel(op, x)) {
    const char* what = "tessera::blur_maxpool2d";
    return reference_blur_maxpool2d(x, ops::pair_arg(kernel_size, what, "kernel_size", 1),
                                    ops::pair_arg(stride, what, "stride", 1), ops::pair_arg(padding, what, "padding", 0),
                                    ops::pair_arg(dilation, what, "dilation", 1));
  }
  if (!needs_grad(x)) return std::get<0>(op.call(x, kernel_size, stride, padding, dilation, /*save_argmax=*/false));
  return BlurMaxPool2dFunction::apply(x, kernel_size, stride, padding, dilation);
}

}  // namespace

// ----------------------------------------------------------------------------------------------------------
// C++ entry points

at::Tensor fused_blur2d(const at::Tensor& x, std::array<int64_t, 2> stride) {
  static const auto op = typed_op<BlurSig>("tessera::blur2d");
  return op.call(x, stride);
}

at::Tensor reference_blur2d(const at::Tensor& x, std::array<int64_t, 2> stride) {
  TORCH_CHECK(x.dim() == 4, "reference_blur2d: expected an input [N, C, H, W], got ", x.sizes());
  const int64_t c = x.size(1);
  return at::conv2d(x, blur_filter(c, x.options()), /*bias=*/{}, {stride[0], stride[1]}, /*padding=*/{1, 1},
                    /*dilation=*/{1, 1}, /*groups=*/c);
}

at::Tensor fused_blur_maxpool2d(const at::Tensor& x, std::array<int64_t, 2> kernel_size, std::array<int64_t, 2> stride,
                                std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation) {
  using Sig = at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef);
  static const auto op = typed_op<Sig>("tessera::blur_maxpool2d");
  return op.call(x, kernel_size, stride, padding, dilation);
}

at::Tensor reference_blur_maxpool2d(const at::Tensor& x, std::array<int64_t, 2> kernel_size,
                                    std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
                                    std::array<int64_t, 2> dilation) {
  const at::Tensor pooled = at::max_pool2d(x, {kernel_size[0], kernel_size[1]}, /*stride=*/{1, 1},
                                           {padding[0], padding[1]}, {dilation[0], dilation[1]});
  return reference_blur2d(pooled, stride);
}

at::Tensor blur_maxpool2d_forward(const at::Tensor& x, const torch::nn::MaxPool2dOptions& pool,
                                  std::array<int64_t, 2> stride) {
  const std::array<int64_t, 2> k = {(*pool.kernel_size())[0], (*pool.kernel_size())[1]};
  const std::array<int64_t, 2> p = {(*pool.padding())[0], (*pool.padding())[1]};
  const std::array<int64_t, 2> d = {(*pool.dilation())[0], (*pool.dilation())[1]};
  const bool fits = x.dim() == 4 && at::isFloatingType(x.scalar_type()) && k[0] * k[1] <= 256 && p[0] <= k[0] / 2 &&
                    p[1] <= k[1] / 2 && x.size(2) + 2 * p[0] - d[0] * (k[0] - 1) >= 3 &&
                    x.size(3) + 2 * p[1] - d[1] * (k[1] - 1) >= 3;
  if (fits) return fused_blur_maxpool2d(x, k, stride, p, d);
  const at::Tensor pooled = at::max_pool2d(x, {k[0], k[1]}, /*stride=*/{1, 1}, {p[0], p[1]}, {d[0], d[1]},
                                           pool.ceil_mode());
  return x.dim() == 4 ? blur2d(pooled, stride) : pooled;
}

}  // namespace tessera::algorithms

TORCH_LIBRARY_FRAGMENT(tessera, m) {
  m.def("blur2d(Tensor x, int[2] stride) -> Tensor");
  m.def("blur2d_backward(Tensor grad_output, int[2] input_size, int[2] stride) -> Tensor");
  m.def("blur_maxpool2d(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding=0, int[2] dilation=1) -> Tensor");
  m.def("_blur2d(Tensor x, int[2] stride) -> Tensor");
  m.def("_blur2d_backward(Tensor grad_output, int[2] input_size, int[2] stride) -> Tensor");
  m.def("_blur_maxpool2d(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool save_argmax) -> (Tensor, Tensor)");
  m.def("_blur_maxpool2d_backward(Tensor grad_output, Tensor argmax, int[2] input_size, int[2] kernel_size, "
        "int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
}

TORCH_LIBRARY_IMPL(tessera, CompositeImplicitAutograd, m) {
  m.impl("blur2d", &tessera::algorithms::blur2d_op);
  m.impl("blur2d_backward", &tessera::algorithms::blur2d_backward_op);
  m.impl("blur_maxpool2d", &tessera::algorithms::blur_maxpool2d_op);
}

TORCH_LIBRARY_IMPL(tessera, CPU, m) {
  m.impl("_blur2d", &tessera::algorithms::blur2d_cpu);
  m.impl("_blur2d_backward", &tessera::algorithms::blur2d_backward_cpu);
  m.impl("_blur_maxpool2d", &tessera::algorithms::blur_maxpool2d_cpu);
  m.impl("_blur_maxpool2d_backward", &tessera::algorithms::blur_maxpool2d_backward_cpu);
}

#ifdef TESSERA_CUDA
TORCH_LIBRARY_IMPL(tessera, CUDA, m) {
  m.impl("_blur2d", &tessera::algorithms::blur2d_cuda);
  m.impl("_blur2d_backward", &tessera::algorithms::blur2d_backward_cuda);
  m.impl("_blur_maxpool2d", &tessera::algorithms::blur_maxpool2d_cuda);
  m.impl("_blur_maxpool2d_backward", &tessera::algorithms::blur_maxpool2d_backward_cuda);
}
#endif
