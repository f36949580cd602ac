// The fused ops on the CPU against the stock-op formulations they replace: values, gradients (analytic against
// the stock op's, and central finite differences in double), odd shapes, strides, channels-last and
// non-contiguous inputs, float32/float64 (and the 16-bit types against float32), plus the dispatcher
// registration. Tolerances are stated where they are used: float64 comparisons are at rounding level
// (1e-12), float32 at a few ulp of the values' magnitude.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/label_smoothing.h>
#include <tessera/algorithms/selective_backprop.h>
#include <tessera/error.h>
#include <tessera/ops/kernels.h>
#include <tessera/ops/multi_tensor.h>

#include "../../algorithms/blurpool/blurpool_ops.h"
#include "../../algorithms/label_smoothing/label_smoothing_ops.h"
#include "../../algorithms/selective_backprop/selective_backprop_ops.h"

namespace tessera::algorithms {
namespace {

using S2 = std::array<int64_t, 2>;

/// max |a − b| <= atol + rtol·max|b| (a scale-aware comparison that reports the worst difference).
void expect_close(const at::Tensor& a, const at::Tensor& b, double rtol, double atol, const std::string& what = "") {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  if (a.numel() == 0) return;
  const at::Tensor da = a.detach().to(at::kDouble), db = b.detach().to(at::kDouble);
  const double diff = (da - db).abs().max().item<double>();
  const double scale = db.numel() ? db.abs().max().item<double>() : 0.0;
  EXPECT_LE(diff, atol + rtol * scale) << what << " max |diff| " << diff << " scale " << scale;
}

/// Central differences of the scalar f at every element of x (float64) against the analytic gradient.
void expect_finite_differences(const std::function<at::Tensor(const at::Tensor&)>& f, const at::Tensor& x0,
                               double tol, const std::string& what = "") {
  at::Tensor x = x0.detach().clone().contiguous().requires_grad_(true);
  f(x).backward();
  const at::Tensor analytic = x.grad().contiguous();
  at::Tensor probe = x0.detach().clone().contiguous();
  double* p = probe.data_ptr<double>();
  const double* g = analytic.data_ptr<double>();
  const double eps = 1e-6;
  for (int64_t i = 0; i < probe.numel(); ++i) {
    const double orig = p[i];
    p[i] = orig + eps;
    const double up = f(probe).item<double>();
    p[i] = orig - eps;
    const double down = f(probe).item<double>();
    p[i] = orig;
    EXPECT_NEAR((up - down) / (2 * eps), g[i], tol) << what << " element " << i;
  }
}

// ------------------------------------------------------------------------------------------------------------
// Dispatcher

TEST(Kernels, OpsAreRegisteredWithTheDispatcher) {
  for (const char* name : {"tessera::blur2d", "tessera::blur2d_backward", "tessera::blur_maxpool2d",
                           "tessera::_blur2d", "tessera::_blur2d_backward", "tessera::_blur_maxpool2d",
                           "tessera::_blur_maxpool2d_backward", "tessera::smoothed_cross_entropy",
                           "tessera::_smoothed_cross_entropy_forward", "tessera::_smoothed_cross_entropy_backward",
                           "tessera::select_by_loss", "tessera::gather_rows", "tessera::ema_update_"}) {
    auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
    ASSERT_TRUE(handle.has_value()) << name;
  }
  auto blur = c10::Dispatcher::singleton().findSchema({"tessera::_blur2d", ""});
  EXPECT_TRUE(blur->hasKernelForDispatchKey(c10::DispatchKey::CPU));
  EXPECT_EQ(blur->hasKernelForDispatchKey(c10::DispatchKey::CUDA), ops::built_with_cuda_kernels());
  if (!ops::built_with_cuda_kernels()) EXPECT_FALSE(ops::cuda_kernels_available());
}

// ------------------------------------------------------------------------------------------------------------
// Blur

TEST(Kernels, BlurMatchesDepthwiseConvOverShapesAndStrides) {
  at::manual_seed(1);
  const std::vector<std::vector<int64_t>> shapes = {{2, 3, 7, 9}, {1, 1, 1, 1}, {1, 2, 1, 5}, {3, 4, 8, 8},
                                                    {2, 5, 3, 11}, {1, 3, 28, 28}, {1, 2, 2, 2}};
  const std::vector<S2> strides = {{1, 1}, {2, 2}, {1, 2}, {2, 1}, {3, 3}};
  for (const auto& shape : shapes) {
    for (const auto& s : strides) {
      const std::string what = c10::str(at::IntArrayRef(shape), " stride ", at::IntArrayRef(s));
      const at::Tensor xd = at::randn(shape, at::kDouble);
      expect_close(fused_blur2d(xd, s), reference_blur2d(xd, s), 1e-14, 1e-14, what + " f64");  // rounding only
      const at::Tensor xf = xd.to(at::kFloat);
      expect_close(fused_blur2d(xf, s), reference_blur2d(xf, s), 1e-6, 1e-6, what + " f32");  // a few ulp
    }
  }
}

TEST(Kernels, BlurKeepsChannelsLastAndAcceptsNonContiguousInputs) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({2, 6, 9, 10});
  const at::Tensor cl = x.contiguous(at::MemoryFormat::ChannelsLast);
  for (const S2 s : {S2{1, 1}, S2{2, 2}, S2{2, 1}}) {
    const at::Tensor y = fused_blur2d(cl, s);
    EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
    expect_close(y, reference_blur2d(x, s), 1e-6, 1e-6, "channels-last");
    // the NHWC and NCHW paths sum in the same order: identical results
    EXPECT_TRUE(at::equal(y.contiguous(), fused_blur2d(x, s)));
  }
  // a transposed (H <-> W) view and a strided slice
  const at::Tensor t = at::randn({2, 3, 10, 9}).transpose(2, 3);
  ASSERT_FALSE(t.is_contiguous());
  expect_close(fused_blur2d(t, {2, 2}), reference_blur2d(t.contiguous(), {2, 2}), 1e-6, 1e-6, "transposed");
  const at::Tensor sl = at::randn({2, 8, 12, 12}).slice(1, 0, 8, 2).slice(3, 1, 12, 1);
  expect_close(fused_blur2d(sl, {2, 2}), reference_blur2d(sl.contiguous(), {2, 2}), 1e-6, 1e-6, "sliced");
}

TEST(Kernels, BlurGradientsMatchConvAndFiniteDifferences) {
  at::manual_seed(3);
  for (const S2 s : {S2{1, 1}, S2{2, 2}, S2{1, 2}, S2{3, 2}}) {
    for (bool channels_last : {false, true}) {
      at::Tensor x0 = at::randn({2, 3, 7, 8}, at::kDouble);
      if (channels_last) x0 = x0.contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor r = at::randn(reference_blur2d(x0, s).sizes(), at::kDouble);
      at::Tensor a = x0.clone().requires_grad_(true), b = x0.clone().requires_grad_(true);
      (fused_blur2d(a, s) * r).sum().backward();
      (reference_blur2d(b, s) * r).sum().backward();
      expect_close(a.grad(), b.grad(), 1e-13, 1e-13, "gradient vs conv");  // float64 rounding
    }
    const at::Tensor small = at::randn({1, 2, 5, 6}, at::kDouble);
    const at::Tensor r = at::randn(reference_blur2d(small, s).sizes(), at::kDouble);
    // linear op: central differences are exact up to rounding of ~1e-16/1e-6
    expect_finite_differences([&](const at::Tensor& x) { return (fused_blur2d(x, s) * r).sum(); }, small, 1e-8,
                              "blur finite differences");
  }
}

TEST(Kernels, BlurSecondDerivativeMatchesConv) {
  at::manual_seed(4);
  const at::Tensor x0 = at::randn({1, 2, 6, 7}, at::kDouble);
  const S2 s = {2, 2};
  auto second = [&](bool fused) {
    at::Tensor x = x0.clone().requires_grad_(true);
    at::Tensor r = at::randn({1, 2, 3, 4}, at::kDouble).requires_grad_(true);
    at::manual_seed(5);
    const at::Tensor w = at::randn({1, 2, 6, 7}, at::kDouble);
    const at::Tensor y = fused ? fused_blur2d(x, s) : reference_blur2d(x, s);
    const at::Tensor g = torch::autograd::grad({y}, {x}, {r}, /*retain_graph=*/true, /*create_graph=*/true)[0];
    (g * w).sum().backward();
    return r.grad();
  };
  at::manual_seed(6);
  const at::Tensor fused = second(true);
  at::manual_seed(6);
  const at::Tensor stock = second(false);
  expect_close(fused, stock, 1e-13, 1e-13, "d/d(upstream) of the input gradient");
}

TEST(Kernels, BlurFunctionalPassesSmallInputsThroughButTheOpBlursThem) {
  const at::Tensor tiny = at::randn({1, 2, 2, 5});
  EXPECT_TRUE(at::equal(blur2d(tiny, 2), tiny));
  const at::Tensor op = fused_blur2d(tiny, {2, 2});
  EXPECT_EQ(op.sizes(), (at::IntArrayRef{1, 2, 1, 3}));
  expect_close(op, reference_blur2d(tiny, {2, 2}), 1e-6, 1e-6);
  const at::Tensor x = at::randn({2, 3, 9, 9});
  expect_close(blur2d(x, 2), reference_blur2d(x, {2, 2}), 1e-6, 1e-6, "functional form");
}

TEST(Kernels, BlurSixteenBitTypesAgreeWithFloat) {
  at::manual_seed(7);
  const at::Tensor x = at::randn({2, 4, 9, 11});
  for (at::ScalarType t : {at::kHalf, at::kBFloat16}) {
    const at::Tensor xt = x.to(t);
    const at::Tensor y = fused_blur2d(xt, {2, 2});
    EXPECT_EQ(y.scalar_type(), t);
    // float accumulation, one rounding to the 16-bit type at the end: half an ulp of bf16 (2^-8)
    expect_close(y, reference_blur2d(xt.to(at::kFloat), {2, 2}), t == at::kHalf ? 1e-3 : 4e-3, 1e-3);
  }
}

TEST(Kernels, BlurIsBitwiseIdenticalAcrossThreadCounts) {
  at::manual_seed(8);
  const at::Tensor x = at::randn({8, 16, 28, 28});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = fused_blur2d(x, {2, 2});
  at::set_num_threads(2);
  const at::Tensor two = fused_blur2d(x, {2, 2});
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, two));
}

// ------------------------------------------------------------------------------------------------------------
// Max-pool then blur

struct PoolCase {
  S2 kernel, stride, padding, dilation;
};

const std::vector<PoolCase>& pool_cases() {
  static const std::vector<PoolCase> cases = {
      {{2, 2}, {2, 2}, {0, 0}, {1, 1}}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}}, {{3, 3}, {1, 1}, {1, 1}, {1, 1}},
      {{2, 2}, {2, 2}, {0, 0}, {2, 2}}, {{3, 2}, {3, 2}, {1, 0}, {1, 2}}, {{1, 1}, {2, 2}, {0, 0}, {1, 1}}};
  return cases;
}

TEST(Kernels, BlurMaxPoolMatchesMaxPoolThenConv) {
  at::manual_seed(9);
  for (const auto& c : pool_cases()) {
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{2, 3, 9, 10}, std::vector<int64_t>{1, 4, 7, 7}}) {
      for (bool channels_last : {false, true}) {
        const std::string what = c10::str(at::IntArrayRef(shape), " k", at::IntArrayRef(c.kernel), " s",
                                          at::IntArrayRef(c.stride), " p", at::IntArrayRef(c.padding), " d",
                                          at::IntArrayRef(c.dilation), channels_last ? " NHWC" : " NCHW");
        at::Tensor x = at::randn(shape, at::kDouble);
        if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        const at::Tensor y = fused_blur_maxpool2d(x, c.kernel, c.stride, c.padding, c.dilation);
        EXPECT_EQ(y.is_contiguous(at::MemoryFormat::ChannelsLast) && !y.is_contiguous(), channels_last) << what;
        expect_close(y, reference_blur_maxpool2d(x, c.kernel, c.stride, c.padding, c.dilation), 1e-14, 1e-14,
                     what);  // the maxima are exact; the blur rounds
        const at::Tensor xf = x.to(at::kFloat);
        expect_close(fused_blur_maxpool2d(xf, c.kernel, c.stride, c.padding, c.dilation),
                     reference_blur_maxpool2d(xf, c.kernel, c.stride, c.padding, c.dilation), 1e-6, 1e-6, what);
        // gradients: distinct random values, so the argmax is unique and the stock gradient is the reference
        const at::Tensor r = at::randn(y.sizes(), at::kDouble);
        at::Tensor a = x.clone().requires_grad_(true), b = x.clone().requires_grad_(true);
        (fused_blur_maxpool2d(a, c.kernel, c.stride, c.padding, c.dilation) * r).sum().backward();
        (reference_blur_maxpool2d(b, c.kernel, c.stride, c.padding, c.dilation) * r).sum().backward();
        expect_close(a.grad(), b.grad(), 1e-13, 1e-13, what + " gradient");
      }
    }
  }
}

TEST(Kernels, BlurMaxPoolTiesGoToTheFirstMaximumLikeTorch) {
  // Many equal values (small integers): the gradient of each window goes to its first maximum in raster order,
  // as torch's max_pool2d does, so the gradients agree exactly with the stock ops.
  at::manual_seed(10);
  for (const auto& c : pool_cases()) {
    for (bool channels_last : {false, true}) {
      at::Tensor x = at::randint(0, 3, {2, 3, 8, 9}, at::kDouble);
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor r = at::randn(fused_blur_maxpool2d(x, c.kernel, c.stride, c.padding, c.dilation).sizes(),
                                     at::kDouble);
      at::Tensor a = x.clone().requires_grad_(true), b = x.clone().requires_grad_(true);
      (fused_blur_maxpool2d(a, c.kernel, c.stride, c.padding, c.dilation) * r).sum().backward();
      (reference_blur_maxpool2d(b, c.kernel, c.stride, c.padding, c.dilation) * r).sum().backward();
      expect_close(a.grad(), b.grad(), 1e-13, 1e-13, channels_last ? "ties NHWC" : "ties NCHW");
    }
  }
}

TEST(Kernels, BlurMaxPoolFiniteDifferences) {
  at::manual_seed(11);
  const at::Tensor x = at::randn({1, 2, 6, 7}, at::kDouble);
  for (const auto& c : pool_cases()) {
    const at::Tensor r = at::randn(fused_blur_maxpool2d(x, c.kernel, c.stride, c.padding, c.dilation).sizes(),
                                   at::kDouble);
    // piecewise linear with distinct inputs: exact up to rounding away from the (measure-zero) kinks
    expect_finite_differences(
        [&](const at::Tensor& t) { return (fused_blur_maxpool2d(t, c.kernel, c.stride, c.padding, c.dilation) * r).sum(); },
        x, 1e-7, "blur max-pool finite differences");
  }
}

TEST(Kernels, BlurMaxPoolModuleKeepsItsSemantics) {
  at::manual_seed(12);
  // the module's old forward: max-pool at stride 1, then blur2d (which passes small maps through)
  auto old_forward = [](const torch::nn::MaxPool2dOptions& o, const at::Tensor& x) {
    torch::nn::MaxPool2dOptions s1 = o;
    s1.stride(1);
    const at::Tensor pooled = torch::nn::MaxPool2d(s1)->forward(x);
    return blur2d(pooled, {(*o.stride())[0], (*o.stride())[1]});
  };
  for (const auto& opts : {torch::nn::MaxPool2dOptions(2), torch::nn::MaxPool2dOptions(3).stride(2).padding(1),
                           torch::nn::MaxPool2dOptions(3).stride(2).ceil_mode(true)}) {
    BlurMaxPool2d module(opts);
    for (const std::vector<int64_t>& shape :
         {std::vector<int64_t>{2, 3, 12, 12}, std::vector<int64_t>{1, 2, 3, 4}, std::vector<int64_t>{1, 1, 3, 9}}) {
      const at::Tensor x = at::randn(shape);
      expect_close(module->forward(x), old_forward(opts, x), 1e-6, 1e-6, c10::str(at::IntArrayRef(shape)));
    }
  }
}

// ------------------------------------------------------------------------------------------------------------
// Label-smoothing cross-entropy

TEST(Kernels, SmoothedCrossEntropyMatchesStockOpsAndGradients) {
  at::manual_seed(13);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{5, 3}, {7, 10}, {1, 1}, {3, 17}, {4, 1000}, {2, 4099}, {33, 8}};
  for (const auto& [n, c] : shapes) {
    for (double alpha : {0.0, 0.1, 1.0}) {
      for (at::ScalarType t : {at::kDouble, at::kFloat}) {
        const std::string what = c10::str("[", n, ", ", c, "] alpha ", alpha, " ", t);
        const at::Tensor logits = (at::randn({n, c}, at::kDouble) * 3).to(t);
        const at::Tensor labels = at::randint(0, c, {n}, at::kLong);
        // float64: rounding level; float32: the float accumulation of the row sums
        const double tol = t == at::kDouble ? 1e-12 : 2e-6;
        at::Tensor a = logits.clone().requires_grad_(true), b = logits.clone().requires_grad_(true);
        auto [mean, per] = fused_smoothed_cross_entropy(a, labels, alpha);
        const at::Tensor ref = reference_smoothed_cross_entropy(b, labels, alpha);
        EXPECT_EQ(mean.scalar_type(), t);
        EXPECT_EQ(per.scalar_type(), t);
        expect_close(per, ref, tol, tol, what + " per example");
        expect_close(mean, ref.mean(), tol, tol, what + " mean");
        // the gradient of mean + Σ r·per (both outputs at once)
        const at::Tensor r = at::randn({n}, t);
        (mean + (per * r).sum()).backward();
        (ref.mean() + (ref * r).sum()).backward();
        expect_close(a.grad(), b.grad(), tol, tol, what + " gradient");
      }
    }
  }
}

TEST(Kernels, SmoothedCrossEntropyFiniteDifferences) {
  at::manual_seed(14);
  const at::Tensor logits = at::randn({3, 5}, at::kDouble);
  const at::Tensor labels = at::tensor({4, 0, 2}, at::kLong);
  const at::Tensor r = at::randn({3}, at::kDouble);
  // smooth: central differences agree to O(eps^2) plus rounding
  expect_finite_differences(
      [&](const at::Tensor& x) {
        auto [mean, per] = fused_smoothed_cross_entropy(x, labels, 0.2);
        return mean + (per * r).sum();
      },
      logits, 1e-8, "smoothed CE finite differences");
}

TEST(Kernels, SmoothedCrossEntropyLayoutsLabelsAndReductions) {
  at::manual_seed(15);
  const at::Tensor t = at::randn({12, 6}).t();  // [6, 12], non-contiguous
  const at::Tensor y32 = at::randint(0, 12, {6}, at::kInt);
  expect_close(smoothed_cross_entropy(t, y32, 0.1, Reduction::None),
               reference_smoothed_cross_entropy(t.contiguous(), y32, 0.1), 2e-6, 2e-6, "transposed, int32 labels");
  const at::Tensor x = at::randn({8, 5});
  const at::Tensor y = at::randint(0, 5, {8}, at::kLong);
  const at::Tensor ref = reference_smoothed_cross_entropy(x, y, 0.3);
  expect_close(smoothed_cross_entropy(x, y, 0.3, Reduction::Sum), ref.sum(), 2e-6, 2e-6, "sum");
  expect_close(smoothed_cross_entropy(x, y, 0.3, Reduction::Mean), ref.mean(), 2e-6, 2e-6, "mean");
  // [N, C, L] keeps the stock path and its per-example mean over positions
  const at::Tensor x3 = at::randn({4, 5, 3});
  const at::Tensor y3 = at::randint(0, 5, {4, 3}, at::kLong);
  expect_close(smoothed_cross_entropy(x3, y3, 0.1, Reduction::None),
               reference_smoothed_cross_entropy(x3, y3, 0.1).flatten(1).mean(1), 1e-6, 1e-6, "[N, C, L]");
  // large logits: no overflow (float32, values ~1e4)
  const at::Tensor big = at::randn({4, 7}) * 1e4;
  const at::Tensor yb = at::randint(0, 7, {4}, at::kLong);
  expect_close(fused_smoothed_cross_entropy(big, yb, 0.1).second, reference_smoothed_cross_entropy(big, yb, 0.1), 1e-6,
               1e-6, "large logits");
}

TEST(Kernels, SmoothedCrossEntropySixteenBitTypesAgreeWithFloat) {
  at::manual_seed(16);
  const at::Tensor x = at::randn({6, 37});
  const at::Tensor y = at::randint(0, 37, {6}, at::kLong);
  for (at::ScalarType t : {at::kHalf, at::kBFloat16}) {
    const at::Tensor xt = x.to(t);
    at::Tensor a = xt.clone().requires_grad_(true);
    auto [mean, per] = fused_smoothed_cross_entropy(a, y, 0.1);
    mean.backward();
    at::Tensor b = xt.to(at::kFloat).requires_grad_(true);
    const at::Tensor ref = reference_smoothed_cross_entropy(b, y, 0.1);
    ref.mean().backward();
    // exact inputs, float accumulation, outputs rounded once to the 16-bit type
    expect_close(per, ref, 1e-2, 1e-2, "per example");
    expect_close(a.grad(), b.grad(), 1e-2, 1e-3, "gradient");
  }
}

TEST(Kernels, SmoothedCrossEntropyRejectsBadInput) {
  const at::Tensor x = at::randn({3, 4});
  EXPECT_THROW(fused_smoothed_cross_entropy(x, at::tensor({0, 4, 1}, at::kLong), 0.1), c10::Error);  // label 4 >= C
  EXPECT_THROW(fused_smoothed_cross_entropy(x, at::tensor({0, -1, 1}, at::kLong), 0.1), c10::Error);
  EXPECT_THROW(fused_smoothed_cross_entropy(x, at::tensor({0, 1, 1}, at::kLong), 1.5), c10::Error);   // alpha
  EXPECT_THROW(fused_smoothed_cross_entropy(x, at::tensor({0, 1}, at::kLong), 0.1), c10::Error);      // N
  EXPECT_THROW(smoothed_cross_entropy(x, at::zeros({3}), 0.1), InputError);                           // float labels
}

// ------------------------------------------------------------------------------------------------------------
// Selective backprop

TEST(Kernels, SelectByLossOpIsTheReferenceDrawAndAdvancesTheGenerator) {
  at::manual_seed(17);
  const at::Tensor losses = at::rand({50}, at::kDouble);
  Rng a(42, {1}), b(42, {1});
  const at::Tensor expected = select_by_loss(losses, 0.3, a);
  const at::Tensor got = fused_select_by_loss(losses, 0.3, b);
  EXPECT_TRUE(at::equal(got, expected));
  EXPECT_TRUE(a == b);  // both consumed one uniform per example
  EXPECT_EQ(b.counter(), 50u);
}

TEST(Kernels, GatherRowsAndBatchSelectionEqualIndexSelect) {
  at::manual_seed(18);
  const at::Tensor index = at::tensor({4, 0, 2, 2}, at::kLong);
  const std::vector<at::Tensor> parts = {at::randn({6, 3, 5}), at::randint(0, 9, {6}, at::kLong),
                                         at::randn({4, 6}).t(), at::ones({6, 3}, at::kByte)};
  const std::vector<at::Tensor> rows = gather_rows(parts, index);
  ASSERT_EQ(rows.size(), parts.size());
  for (size_t i = 0; i < parts.size(); ++i) EXPECT_TRUE(at::equal(rows[i], parts[i].index_select(0, index))) << i;
  Batch batch(at::randn({6, 2}), at::arange(6));
  batch.set("weight", at::rand({6}));
  const Batch picked = select_batch_rows(batch, index);
  const Batch expected = batch.select(index);
  ASSERT_EQ(picked.parts().size(), expected.parts().size());
  for (size_t i = 0; i < picked.parts().size(); ++i) {
    EXPECT_EQ(picked.parts()[i].first, expected.parts()[i].first);
    EXPECT_TRUE(at::equal(picked.parts()[i].second, expected.parts()[i].second));
  }
}

// ------------------------------------------------------------------------------------------------------------
// Multi-tensor EMA

TEST(Kernels, EmaUpdateMatchesTheStockFormulaOverMixedTensors) {
  at::manual_seed(19);
  const double s = 0.9;
  std::vector<at::Tensor> avg = {at::randn({70000}), at::randn({3, 4}, at::kDouble), at::randn({5, 6}).t(),
                                 at::randn({2, 3, 4, 5}).contiguous(at::MemoryFormat::ChannelsLast),
                                 at::randn({9}).to(at::kHalf), at::randn({9}).to(at::kBFloat16),
                                 at::tensor({3}, at::kLong), at::randn({0})};
  std::vector<at::Tensor> src;
  for (const at::Tensor& a : avg) src.push_back(a.is_floating_point() ? at::randn_like(a) : a + 5);
  src[2] = at::randn({6, 5});  // strides differ from avg[2]'s: the stock fallback
  std::vector<at::Tensor> expected;
  for (size_t i = 0; i < avg.size(); ++i) {
    expected.push_back(avg[i].is_floating_point() ? (avg[i].to(at::kDouble) * s + src[i].to(at::kDouble) * (1 - s))
                                                  : src[i].clone());
  }
  ops::ema_update_(avg, src, s);
  for (size_t i = 0; i < avg.size(); ++i) {
    const at::ScalarType t = avg[i].scalar_type();
    // one rounding of s·a + (1 − s)·w in float (double for float64), then to the tensor's type
    const double tol = t == at::kDouble ? 1e-15 : t == at::kFloat ? 1e-6 : t == at::kHalf ? 1e-3 : 8e-3;
    if (avg[i].is_floating_point()) {
      expect_close(avg[i], expected[i], tol, tol, std::to_string(i));
    } else {
      EXPECT_TRUE(at::equal(avg[i], expected[i])) << "integer tensors are copied";
    }
  }
  EXPECT_TRUE(avg[3].is_contiguous(at::MemoryFormat::ChannelsLast));
}

TEST(Kernels, EmaUpdateEndpointsThreadsAndErrors) {
  at::manual_seed(20);
  const at::Tensor w = at::randn({1000});
  at::Tensor a = at::randn({1000});
  const at::Tensor a0 = a.clone();
  ops::ema_update_({a}, {w}, 1.0);
  EXPECT_TRUE(at::equal(a, a0));  // s = 1 keeps the average
  ops::ema_update_({a}, {w}, 0.0);
  EXPECT_TRUE(at::equal(a, w));  // s = 0 copies the source
  // independent of the thread count, bit for bit
  const at::Tensor big = at::randn({300000}), src = at::randn({300000});
  at::Tensor one = big.clone(), two = big.clone();
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  ops::ema_update_({one}, {src}, 0.99);
  at::set_num_threads(2);
  ops::ema_update_({two}, {src}, 0.99);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, two));
  // parameters that require grad are updated without autograd complaints
  at::Tensor p = at::randn({4}).requires_grad_(true);
  ops::ema_update_({p}, {at::zeros({4})}, 0.5);
  EXPECT_FALSE(p.grad_fn());
  EXPECT_THROW(ops::ema_update_({at::randn({3})}, {at::randn({4})}, 0.5), InputError);
  EXPECT_THROW(ops::ema_update_({at::randn({3})}, {at::randn({3}, at::kDouble)}, 0.5), InputError);
  EXPECT_THROW(ops::ema_update_({at::randn({3})}, {}, 0.5), InputError);
  EXPECT_THROW(ops::ema_update_({at::randn({3})}, {at::randn({3})}, 1.5), InputError);
}

TEST(Kernels, EmaUpdateOverModulesCoversParametersAndBuffers) {
  at::manual_seed(21);
  auto make = [] {
    auto seq = std::make_shared<torch::nn::Module>();
    seq->register_module("fc", torch::nn::Linear(3, 4));
    seq->register_module("bn", torch::nn::BatchNorm1d(4));
    return seq;
  };
  auto average = make(), model = make();
  model->named_buffers()["bn.running_mean"].copy_(at::ones({4}));
  model->named_buffers()["bn.num_batches_tracked"].fill_(7);
  const at::Tensor w0 = average->named_parameters()["fc.weight"].detach().clone();
  const at::Tensor w1 = model->named_parameters()["fc.weight"].detach().clone();
  ops::ema_update_(*average, *model, 0.75);
  expect_close(average->named_parameters()["fc.weight"], w0 * 0.75 + w1 * 0.25, 1e-6, 1e-6, "weight");
  expect_close(average->named_buffers()["bn.running_mean"], at::full({4}, 0.25), 1e-7, 1e-7, "running mean");
  EXPECT_EQ(average->named_buffers()["bn.num_batches_tracked"].item<int64_t>(), 7);
  auto other = std::make_shared<torch::nn::Module>();
  other->register_module("fc", torch::nn::Linear(3, 4));
  EXPECT_THROW(ops::ema_update_(*average, *other, 0.5), InputError);
}

}  // namespace
}  // namespace tessera::algorithms
