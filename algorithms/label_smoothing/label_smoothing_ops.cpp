// Fused label-smoothing cross-entropy: the CPU implementation (the reference the CUDA kernels are tested
// against), the autograd Function and the registration with the torch dispatcher for the CPU and, with
// TESSERA_CUDA, CUDA (kernels in label_smoothing_kernels.cu).
//
// Per row: lse = log Σ exp x, loss = lse − (1 − α)·x_y − α·mean(x); the backward writes
// (exp(x − lse) − α/C − (1 − α)·onehot)·g directly. Only lse (one float per row) is kept for the backward:
// no dense targets, no log-softmax of size N×C.
#include "label_smoothing_ops.h"

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "src/ops/cpu_simd.h"
#include "src/ops/op_utils.h"

#ifdef TESSERA_CUDA
#include "label_smoothing_kernels.cuh"
#endif

namespace tessera::algorithms {
namespace {

using ops::typed_op;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// The per-row type: float, or double for double logits.
at::ScalarType row_type(at::ScalarType logits) { return logits == at::kDouble ? at::kDouble : at::kFloat; }

// ----------------------------------------------------------------------------------------------------------
// CPU rows. float32 has a vectorised path (8-float vectors, the AVX2 clone where available); the other
// dtypes a scalar one with double accumulation.

namespace simd = ops::simd;

/// Vector lanes are flushed into double accumulators every kFlush vectors so that sums over large C keep
/// float32 rounding per block only.
constexpr int64_t kFlush = 256;

TESSERA_CPU_CLONES void ce_forward_rows_f32(const float* x, const int64_t* labels, int64_t C, float alpha,
                                            int64_t begin, int64_t end, float* per, float* lse_out) {
  const int64_t C8 = C - C % 8;
  for (int64_t i = begin; i < end; ++i) {
    const float* r = x + i * C;
    simd::f8 mv = simd::splat(-std::numeric_limits<float>::infinity());
    for (int64_t c = 0; c < C8; c += 8) mv = simd::max(mv, simd::load(r + c));
    float m = simd::hmax(mv);
    for (int64_t c = C8; c < C; ++c) m = r[c] > m ? r[c] : m;
    double s = 0.0, sx = 0.0;
    if (m == -std::numeric_limits<float>::infinity()) m = 0.0f;  // all −inf: lse = −inf below, no NaN from −inf − −inf
    for (int64_t c0 = 0; c0 < C8; c0 += 8 * kFlush) {
      const int64_t c1 = std::min(C8, c0 + 8 * kFlush);
      simd::f8 sv = simd::splat(0.0f), xv = simd::splat(0.0f);
      for (int64_t c = c0; c < c1; c += 8) {
        const simd::f8 v = simd::load(r + c);
        sv += simd::exp(v - m);
        xv += v;
      }
      s += simd::hsum(sv);
      sx += simd::hsum(xv);
    }
    for (int64_t c = C8; c < C; ++c) {
      s += std::exp(r[c] - m);
      sx += r[c];
    }
    const double lse = m + std::log(s);
    lse_out[i] = static_cast<float>(lse);
    per[i] = static_cast<float>(lse - (1.0 - alpha) * r[labels[i]] - alpha * sx / static_cast<double>(C));
  }
}

TESSERA_CPU_CLONES void ce_backward_rows_f32(const float* grad, const float* x, const int64_t* labels,
                                             const float* lse, float* out, int64_t C, float alpha, int64_t begin,
                                             int64_t end) {
  const int64_t C8 = C - C % 8;
  for (int64_t i = begin; i < end; ++i) {
    const float* r = x + i * C;
    float* o = out + i * C;
    const float g = grad[i], l = lse[i];
    const float off = alpha * g / static_cast<float>(C);
    const simd::f8 gv = simd::splat(g), offv = simd::splat(off);
    for (int64_t c = 0; c < C8; c += 8) simd::store(o + c, simd::exp(simd::load(r + c) - l) * gv - offv);
    for (int64_t c = C8; c < C; ++c) o[c] = std::exp(r[c] - l) * g - off;
    o[labels[i]] -= (1.0f - alpha) * g;
  }
}

template <class T, class A>
void ce_forward_rows(const T* x, const int64_t* labels, int64_t C, double alpha, int64_t begin, int64_t end, A* per,
                     A* lse_out) {
  for (int64_t i = begin; i < end; ++i) {
    const T* r = x + i * C;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < C; ++c) m = static_cast<double>(r[c]) > m ? static_cast<double>(r[c]) : m;
    if (m == -std::numeric_limits<double>::infinity()) m = 0.0;
    double s = 0.0, sx = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double v = static_cast<double>(r[c]);
      s += std::exp(v - m);
      sx += v;
    }
    const double lse = m + std::log(s);
    lse_out[i] = static_cast<A>(lse);
    per[i] = static_cast<A>(lse - (1.0 - alpha) * static_cast<double>(r[labels[i]]) - alpha * sx / static_cast<double>(C));
  }
}

template <class T, class A>
void ce_backward_rows(const A* grad, const T* x, const int64_t* labels, const A* lse, T* out, int64_t C, double alpha,
                      int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const T* r = x + i * C;
    T* o = out + i * C;
    const double g = static_cast<double>(grad[i]), l = static_cast<double>(lse[i]);
    const double off = alpha * g / static_cast<double>(C);
    const int64_t y = labels[i];
    for (int64_t c = 0; c < C; ++c) {
      double d = std::exp(static_cast<double>(r[c]) - l) * g - off;
      if (c == y) d -= (1.0 - alpha) * g;
      o[c] = static_cast<T>(d);
    }
  }
}

// ----------------------------------------------------------------------------------------------------------
// Argument checks

struct CeArgs {
  at::Tensor logits;  ///< [N, C], rows dense
  at::Tensor labels;  ///< int64 [N], contiguous
  int64_t N, C;
};

CeArgs ce_args(const at::Tensor& logits, const at::Tensor& labels, double alpha, const char* what) {
  TORCH_CHECK(logits.dim() == 2, what, ": expected logits [N, C], got ", logits.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), what, ": expected floating-point logits, got ",
              logits.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0), what, ": expected labels [", logits.size(0),
              "], got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, what, ": expected int64 labels, got ", labels.scalar_type());
  TORCH_CHECK(labels.device() == logits.device(), what, ": labels on ", labels.device(), ", logits on ",
              logits.device());
  TORCH_CHECK(alpha >= 0.0 && alpha <= 1.0, what, ": alpha must be in [0, 1], got ", alpha);
  TORCH_CHECK(logits.size(1) >= 1, what, ": logits have no class (C = 0)");
  CeArgs a;
  a.logits = logits.contiguous();
  a.labels = labels.contiguous();
  a.N = logits.size(0);
  a.C = logits.size(1);
  return a;
}

void check_labels_cpu(const CeArgs& a, const char* what) {
  const int64_t* y = a.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < a.N; ++i) {
    TORCH_CHECK_INDEX(y[i] >= 0 && y[i] < a.C, what, ": label ", y[i], " of example ", i, " is outside [0, ", a.C, ")");
  }
}

/// The backward's per-row inputs (∂L/∂loss_i and lse) in the row type, checked against the logits: one value per
/// row, on the logits' device. Shared by the CPU and CUDA kernels.
std::pair<at::Tensor, at::Tensor> backward_rows(const CeArgs& a, const at::Tensor& grad, const at::Tensor& lse,
                                                const char* what) {
  TORCH_CHECK(grad.device() == a.logits.device() && lse.device() == a.logits.device(), what, ": grad on ",
              grad.device(), " and lse on ", lse.device(), " must be on the logits' device ", a.logits.device());
  TORCH_CHECK(grad.numel() == a.N && lse.numel() == a.N, what, ": grad ", grad.sizes(), " and lse ", lse.sizes(),
              " must have one value per row (", a.N, ")");
  const at::ScalarType rt = row_type(a.logits.scalar_type());
  return {grad.to(rt).contiguous(), lse.to(rt).contiguous()};
}

int64_t row_grain(int64_t C) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, C)); }

// ----------------------------------------------------------------------------------------------------------
// CPU kernels of the internal ops

std::tuple<at::Tensor, at::Tensor> ce_forward_cpu(const at::Tensor& logits, const at::Tensor& labels, double alpha) {
  const char* what = "tessera::smoothed_cross_entropy";
  CeArgs a = ce_args(logits, labels, alpha, what);
  check_labels_cpu(a, what);
  const auto opts = a.logits.options().dtype(row_type(a.logits.scalar_type()));
  at::Tensor per = at::empty({a.N}, opts), lse = at::empty({a.N}, opts);
  const int64_t* y = a.labels.data_ptr<int64_t>();
  if (a.logits.scalar_type() == at::kFloat) {
    const float* x = a.logits.data_ptr<float>();
    float* pp = per.data_ptr<float>();
    float* pl = lse.data_ptr<float>();
    at::parallel_for(0, a.N, row_grain(a.C), [&](int64_t b, int64_t e) {
      ce_forward_rows_f32(x, y, a.C, static_cast<float>(alpha), b, e, pp, pl);
    });
    return {per, lse};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.logits.scalar_type(), "tessera::smoothed_cross_entropy", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* x = a.logits.data_ptr<scalar_t>();
    A* pp = per.data_ptr<A>();
    A* pl = lse.data_ptr<A>();
    at::parallel_for(0, a.N, row_grain(a.C),
                     [&](int64_t b, int64_t e) { ce_forward_rows<scalar_t, A>(x, y, a.C, alpha, b, e, pp, pl); });
  });
  return {per, lse};
}

at::Tensor ce_backward_cpu(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                           const at::Tensor& lse, double alpha) {
  const char* what = "tessera::smoothed_cross_entropy_backward";
  CeArgs a = ce_args(logits, labels, alpha, what);
  check_labels_cpu(a, what);
  at::Tensor g, l;
  std::tie(g, l) = backward_rows(a, grad, lse, what);
  at::Tensor out = at::empty_like(a.logits);
  const int64_t* y = a.labels.data_ptr<int64_t>();
  if (a.logits.scalar_type() == at::kFloat) {
    const float* gp = g.data_ptr<float>();
    const float* x = a.logits.data_ptr<float>();
    const float* lp = l.data_ptr<float>();
    float* op = out.data_ptr<float>();
    at::parallel_for(0, a.N, row_grain(a.C), [&](int64_t b, int64_t e) {
      ce_backward_rows_f32(gp, x, y, lp, op, a.C, static_cast<float>(alpha), b, e);
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.logits.scalar_type(), "tessera::smoothed_cross_entropy_backward", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const A* gp = g.data_ptr<A>();
    const scalar_t* x = a.logits.data_ptr<scalar_t>();
    const A* lp = l.data_ptr<A>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, a.N, row_grain(a.C),
                     [&](int64_t b, int64_t e) { ce_backward_rows<scalar_t, A>(gp, x, y, lp, op, a.C, alpha, b, e); });
  });
  return out;
}

// ----------------------------------------------------------------------------------------------------------
// CUDA kernels of the internal ops (launchers in label_smoothing_kernels.cu)

#ifdef TESSERA_CUDA
std::tuple<at::Tensor, at::Tensor> ce_forward_cuda(const at::Tensor& logits, const at::Tensor& labels, double alpha) {
  const char* what = "tessera::smoothed_cross_entropy";
  CeArgs a = ce_args(logits, labels, alpha, what);
  const auto opts = a.logits.options().dtype(row_type(a.logits.scalar_type()));
  at::Tensor per = at::empty({a.N}, opts), lse = at::empty({a.N}, opts);
  c10::cuda::CUDAGuard guard(a.logits.device());
  C10_CUDA_CHECK(cuda::launch_smoothed_ce_forward(a.logits.data_ptr(), a.labels.data_ptr<int64_t>(), per.data_ptr(),
                                                  lse.data_ptr(), a.N, a.C, alpha,
                                                  ops::kernel_dtype(a.logits.scalar_type(), what),
                                                  ops::current_stream()));
  return {per, lse};
}

at::Tensor ce_backward_cuda(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                            const at::Tensor& lse, double alpha) {
  const char* what = "tessera::smoothed_cross_entropy_backward";
  CeArgs a = ce_args(logits, labels, alpha, what);
  at::Tensor g, l;
  std::tie(g, l) = backward_rows(a, grad, lse, what);
  at::Tensor out = at::empty_like(a.logits);
  c10::cuda::CUDAGuard guard(a.logits.device());
  C10_CUDA_CHECK(cuda::launch_smoothed_ce_backward(g.data_ptr(), a.logits.data_ptr(), a.labels.data_ptr<int64_t>(),
                                                   l.data_ptr(), out.data_ptr(), a.N, a.C, alpha,
                                                   ops::kernel_dtype(a.logits.scalar_type(), what),
                                                   ops::current_stream()));
  return out;
}
#endif

// ----------------------------------------------------------------------------------------------------------
// Autograd

using ForwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double);
using BackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double);

/// Outputs (mean, per-example) in the logits' dtype from the per-row values.
variable_list outputs_of(const at::Tensor& per_rows, at::ScalarType dtype) {
  return {per_rows.mean().to(dtype), per_rows.to(dtype)};
}

struct SmoothedCrossEntropyFunction : public torch::autograd::Function<SmoothedCrossEntropyFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels, double alpha) {
    at::AutoDispatchBelowADInplaceOrView below;
    static const auto op = typed_op<ForwardSig>("tessera::_smoothed_cross_entropy_forward");
    auto [per, lse] = op.call(logits, labels, alpha);
    ctx->save_for_backward({logits, labels, lse});
    ctx->saved_data["alpha"] = alpha;
    return outputs_of(per, logits.scalar_type());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "tessera::smoothed_cross_entropy: double backward is not supported (backward with create_graph=true)");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& logits = saved[0];
    const at::ScalarType rt = row_type(logits.scalar_type());
    const int64_t n = logits.size(0);
    // d loss_i: the mean's gradient spread over the rows plus the per-example gradient.
    at::Tensor g = grads[1].defined() ? grads[1].to(rt) : at::zeros({n}, logits.options().dtype(rt));
    if (grads[0].defined() && n > 0) g = g + grads[0].to(rt) / static_cast<double>(n);
    static const auto op = typed_op<BackwardSig>("tessera::_smoothed_cross_entropy_backward");
    at::Tensor d = op.call(g, logits, saved[1], saved[2], ctx->saved_data["alpha"].toDouble());
    return {d, at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> smoothed_cross_entropy_op(const at::Tensor& logits, const at::Tensor& labels,
                                                             double alpha) {
  TORCH_CHECK(!at::isFloatingType(labels.scalar_type()) && labels.scalar_type() != at::kBool,
              "tessera::smoothed_cross_entropy: expected integer labels, got ", labels.scalar_type());
  const at::Tensor y = labels.scalar_type() == at::kLong ? labels : labels.to(at::kLong);
  static const auto op = typed_op<ForwardSig>("tessera::_smoothed_cross_entropy_forward");
  if (!ops::has_kernel(op, logits)) {  // no fused kernel for this device: the stock formula and torch's autograd
    TORCH_CHECK(alpha >= 0.0 && alpha <= 1.0, "tessera::smoothed_cross_entropy: alpha must be in [0, 1], got ", alpha);
    const at::Tensor per = reference_smoothed_cross_entropy(logits, y, alpha);
    return {per.mean(), per};
  }
  if (!(at::GradMode::is_enabled() && logits.requires_grad())) {
    auto [per, lse] = op.call(logits, y, alpha);
    auto out = outputs_of(per, logits.scalar_type());
    return {out[0], out[1]};
  }
  auto out = SmoothedCrossEntropyFunction::apply(logits, y, alpha);
  return {out[0], out[1]};
}

}  // namespace

// ----------------------------------------------------------------------------------------------------------
// C++ entry points

std::pair<at::Tensor, at::Tensor> fused_smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                               double alpha) {
  using Sig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double);
  static const auto op = typed_op<Sig>("tessera::smoothed_cross_entropy");
  auto [mean, per] = op.call(logits, labels, alpha);
  return {mean, per};
}

at::Tensor reference_smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, double alpha) {
  const at::Tensor logp = at::log_softmax(logits, 1);
  // Per example (and position): −log p_y and the mean over classes of −log p_c.
  const at::Tensor nll = -logp.gather(1, labels.to(at::kLong).unsqueeze(1)).squeeze(1);
  const at::Tensor uniform = -logp.mean(1);
  return nll * (1.0 - alpha) + uniform * alpha;
}

}  // namespace tessera::algorithms

TORCH_LIBRARY_FRAGMENT(tessera, m) {
  m.def("smoothed_cross_entropy(Tensor logits, Tensor labels, float alpha) -> (Tensor loss, Tensor per_example)");
  m.def("_smoothed_cross_entropy_forward(Tensor logits, Tensor labels, float alpha) -> (Tensor per_example, "
        "Tensor lse)");
  m.def("_smoothed_cross_entropy_backward(Tensor grad_per_example, Tensor logits, Tensor labels, Tensor lse, "
        "float alpha) -> Tensor");
}

TORCH_LIBRARY_IMPL(tessera, CompositeImplicitAutograd, m) {
  m.impl("smoothed_cross_entropy", &tessera::algorithms::smoothed_cross_entropy_op);
}

TORCH_LIBRARY_IMPL(tessera, CPU, m) {
  m.impl("_smoothed_cross_entropy_forward", &tessera::algorithms::ce_forward_cpu);
  m.impl("_smoothed_cross_entropy_backward", &tessera::algorithms::ce_backward_cpu);
}

#ifdef TESSERA_CUDA
TORCH_LIBRARY_IMPL(tessera, CUDA, m) {
  m.impl("_smoothed_cross_entropy_forward", &tessera::algorithms::ce_forward_cuda);
  m.impl("_smoothed_cross_entropy_backward", &tessera::algorithms::ce_backward_cuda);
}
#endif
