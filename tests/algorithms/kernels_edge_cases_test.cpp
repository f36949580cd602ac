// The fused ops at their edges (issue 21), on the CPU: devices the library has no kernel for (Meta tensors stand in
// for CUDA tensors in a library built without TESSERA_CUDA), max-pool windows whose valid values are all −inf or
// NaN, tied losses in the selection, and the argument checks that the CPU and CUDA kernels share. The CUDA side of
// the same cases is in tests/gpu/kernels_gpu_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/nn/options/pooling.h>

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/label_smoothing.h>
#include <tessera/algorithms/selective_backprop.h>
#include <tessera/ops/multi_tensor.h>
#include <tessera/rng.h>

#include "../../algorithms/blurpool/blurpool_ops.h"
#include "../../algorithms/blurpool/blurpool_window.h"
#include "../../algorithms/label_smoothing/label_smoothing_ops.h"
#include "../../algorithms/selective_backprop/selective_backprop_ops.h"
#include "../../src/ops/op_utils.h"

namespace tessera::algorithms {
namespace {

using S2 = std::array<int64_t, 2>;
using ArgmaxForwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                            at::IntArrayRef, at::IntArrayRef, bool);
using ArgmaxBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                     at::IntArrayRef, at::IntArrayRef, at::IntArrayRef);
using CeBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double);

const at::TensorOptions kMeta = at::device(at::kMeta);
constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<int64_t> sizes_of(const at::Tensor& t) { return t.sizes().vec(); }

/// The message (without the backtrace) of the c10::Error that f throws, or "" when it does not throw.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

// ------------------------------------------------------------------------------------------------------------
// A device without a kernel takes the stock formula

TEST(Kernels, HasKernelAsksTheDispatcherAboutTheTensorsBackend) {
  EXPECT_TRUE(ops::has_kernel("tessera::_blur2d", at::zeros({1, 1, 3, 3})));
  EXPECT_TRUE(ops::has_kernel("tessera::_blur2d", at::zeros({1}).requires_grad_(true)));  // autograd keys ignored
  EXPECT_FALSE(ops::has_kernel("tessera::_blur2d", at::empty({1}, kMeta)));
  EXPECT_FALSE(ops::has_kernel("tessera::_blur2d", at::Tensor()));
  // The composite front serves every backend (by calling the device op): ask about the device op instead.
  EXPECT_TRUE(ops::has_kernel("tessera::blur2d", at::zeros({1})));
  EXPECT_TRUE(ops::has_kernel("tessera::blur2d", at::empty({1}, kMeta)));
  EXPECT_TRUE(ops::has_kernel("aten::_foreach_mul_", at::zeros({1}), "Scalar"));
}

// LibTorch's C++ conv2d has no Meta kernel (its Meta shape function is registered from Python) except for an empty
// batch, which it answers without computing (ConvBackend::Empty, in 1.13 and 2.x). So the blur tests check the stock
// path's shapes with N = 0, and with N > 0 that any error comes from the stock conv, never from tessera's kernels.
// Before the fix both called tessera::_blur2d, which has no Meta kernel ("Could not run 'tessera::_blur2d' with
// arguments from the 'Meta' backend").
TEST(Kernels, BlurOnADeviceWithoutAKernelIsTheStockConv) {
  const at::Tensor x = at::empty({0, 3, 8, 7}, kMeta);
  const at::Tensor y = blur2d(x, {2, 2});
  EXPECT_TRUE(y.is_meta());
  EXPECT_EQ(sizes_of(y), (std::vector<int64_t>{0, 3, 4, 4}));
  EXPECT_EQ(sizes_of(fused_blur2d(x.contiguous(at::MemoryFormat::ChannelsLast), {1, 2})),
            (std::vector<int64_t>{0, 3, 8, 4}));
  const std::string error = error_of([] { blur2d(at::empty({2, 3, 8, 8}, kMeta), {2, 2}); });
  EXPECT_EQ(error.find("tessera"), std::string::npos) << error;
}

TEST(Kernels, BlurMaxPoolOnADeviceWithoutAKernelIsTheStockPoolAndConv) {
  BlurMaxPool2d pool(torch::nn::MaxPool2dOptions(3).stride(2).padding(1));  // the fused path's geometry (`fits`)
  const at::Tensor y = pool->forward(at::empty({0, 4, 9, 10}, kMeta));
  EXPECT_TRUE(y.is_meta());
  EXPECT_EQ(sizes_of(y), (std::vector<int64_t>{0, 4, 5, 5}));
  EXPECT_EQ(sizes_of(fused_blur_maxpool2d(at::empty({0, 2, 6, 6}, kMeta), {2, 2}, {2, 2}, {1, 1}, {1, 1})),
            (std::vector<int64_t>{0, 2, 4, 4}));
  const std::string error = error_of([&] { pool->forward(at::empty({2, 4, 9, 10}, kMeta)); });
  EXPECT_EQ(error.find("tessera"), std::string::npos) << error;
}

TEST(Kernels, SmoothedCrossEntropyOnADeviceWithoutAKernelIsTheStockFormula) {
  // log_softmax, gather and mean have Meta kernels: here the whole stock path runs, with any batch size
  const at::Tensor logits = at::empty({4, 10}, kMeta), labels = at::empty({4}, kMeta.dtype(at::kLong));
  const at::Tensor mean = smoothed_cross_entropy(logits, labels, 0.1, Reduction::Mean);
  EXPECT_TRUE(mean.is_meta());
  EXPECT_EQ(mean.dim(), 0);
  EXPECT_EQ(sizes_of(smoothed_cross_entropy(logits, labels, 0.1, Reduction::None)), (std::vector<int64_t>{4}));
  const auto [m, per] = fused_smoothed_cross_entropy(logits, labels.to(at::kInt), 0.2);
  EXPECT_TRUE(per.is_meta());
  EXPECT_EQ(m.dim(), 0);
  EXPECT_EQ(sizes_of(per), (std::vector<int64_t>{4}));
  EXPECT_EQ(per.scalar_type(), at::kFloat);
}

TEST(Kernels, EmaUpdateOnADeviceWithoutAKernelIsTheStockFormula) {
  // one call over two devices: the CPU group takes the op, the Meta group the stock formula
  at::manual_seed(30);
  at::Tensor cpu = at::randn({100});
  const at::Tensor cpu0 = cpu.clone(), cpu_src = at::randn({100});
  std::vector<at::Tensor> avg = {at::empty({3, 4}, kMeta), cpu, at::empty({5}, kMeta.dtype(at::kLong)),
                                 at::empty({7}, kMeta.dtype(at::kHalf))};
  std::vector<at::Tensor> src = {at::empty({3, 4}, kMeta), cpu_src, at::empty({5}, kMeta.dtype(at::kLong)),
                                 at::empty({7}, kMeta.dtype(at::kHalf))};
  ops::ema_update_(avg, src, 0.9);
  EXPECT_TRUE(at::allclose(cpu, cpu0 * 0.9 + cpu_src * 0.1, 1e-6, 1e-6));
  EXPECT_TRUE(avg[0].is_meta());
  EXPECT_EQ(sizes_of(avg[0]), (std::vector<int64_t>{3, 4}));
}

// ------------------------------------------------------------------------------------------------------------
// Max-pool windows of −inf and NaN

TEST(Kernels, BlurMaxPoolWindowsOfMinusInfinitySendTheGradientToTheFirstValidElement) {
  // Every valid value of the top-left windows is −inf (next to the padding), and one channel is −inf throughout:
  // torch's max_pool2d gives each such window's gradient to its first valid element, and so must the fused op.
  at::manual_seed(31);
  const std::vector<std::array<S2, 4>> cases = {{S2{3, 3}, S2{2, 2}, S2{1, 1}, S2{1, 1}},
                                                {S2{2, 2}, S2{1, 1}, S2{1, 1}, S2{1, 1}},
                                                {S2{3, 3}, S2{1, 2}, S2{1, 1}, S2{2, 2}},
                                                {S2{3, 2}, S2{2, 2}, S2{1, 1}, S2{1, 1}}};
  for (const auto& [k, s, p, d] : cases) {
    for (bool channels_last : {false, true}) {
      const std::string what = c10::str("k", at::IntArrayRef(k), " s", at::IntArrayRef(s), " d", at::IntArrayRef(d),
                                         channels_last ? " NHWC" : " NCHW");
      at::Tensor x = at::randn({2, 3, 9, 8}, at::kDouble);
      x.narrow(2, 0, 4).fill_(-kInf);
      x.narrow(3, 0, 3).fill_(-kInf);
      x.select(1, 1).fill_(-kInf);
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      at::Tensor a = x.clone().requires_grad_(true), b = x.clone().requires_grad_(true);
      const at::Tensor y = fused_blur_maxpool2d(a, k, s, p, d), ref = reference_blur_maxpool2d(b, k, s, p, d);
      EXPECT_TRUE(at::allclose(y, ref, 1e-13, 1e-13)) << what;  // −inf where the reference has −inf
      const at::Tensor r = at::randn(ref.sizes(), at::kDouble);
      (y * r).sum().backward();
      (ref * r).sum().backward();
      EXPECT_TRUE(at::allclose(a.grad(), b.grad(), 1e-13, 1e-13)) << what << " gradient";
    }
  }
}

/// The window offsets that the CUDA forward kernel saves, computed on the host by the kernel's own window scan
/// (blurpool_window.h), for an NCHW tensor x [B, 1, H, W].
at::Tensor cuda_window_offsets(const at::Tensor& x, S2 k, S2 p, S2 d) {
  const at::Tensor xc = x.contiguous();
  const int64_t B = xc.size(0) * xc.size(1), H = xc.size(2), W = xc.size(3);
  const window::Window win{H, W, k[0], k[1], p[0], p[1], d[0], d[1]};
  const int64_t PH = H + 2 * p[0] - d[0] * (k[0] - 1), PW = W + 2 * p[1] - d[1] * (k[1] - 1);
  at::Tensor out = at::empty({xc.size(0), xc.size(1), PH, PW}, at::kByte);
  uint8_t* o = out.data_ptr<uint8_t>();
  const float* xp = xc.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = xp + b * H * W;
    const auto load = [xb, W](uint32_t ih, uint32_t iw) { return xb[ih * W + iw]; };
    for (int64_t ph = 0; ph < PH; ++ph) {
      for (int64_t pw = 0; pw < PW; ++pw) {
        float best;
        *o++ = static_cast<uint8_t>(window::window_argmax<uint32_t>(static_cast<uint32_t>(ph),
                                                                    static_cast<uint32_t>(pw), win, load, best));
      }
    }
  }
  return out;
}

TEST(Kernels, CudaWindowScanSavesTheCpuArgmaxForMinusInfinityNaNAndTies) {
  // The CUDA kernel's window scan, run on the host, must choose the window offsets the CPU op saves: the first
  // maximum in raster order, the first NaN, and the first valid element of a window whose valid values are all −inf.
  at::manual_seed(32);
  static const auto forward = ops::typed_op<ArgmaxForwardSig>("tessera::_blur_maxpool2d");
  const std::vector<std::array<S2, 3>> cases = {{S2{3, 3}, S2{1, 1}, S2{1, 1}}, {S2{2, 2}, S2{1, 1}, S2{1, 1}},
                                                {S2{3, 3}, S2{1, 1}, S2{2, 2}}, {S2{4, 3}, S2{2, 1}, S2{1, 1}},
                                                {S2{2, 2}, S2{0, 0}, S2{1, 1}}};
  for (const auto& [k, p, d] : cases) {
    const std::string what = c10::str("k", at::IntArrayRef(k), " p", at::IntArrayRef(p), " d", at::IntArrayRef(d));
    at::Tensor x = at::randint(0, 3, {2, 3, 11, 10}, at::kFloat);  // many ties
    x.narrow(2, 0, 4).fill_(-std::numeric_limits<float>::infinity());
    x.narrow(3, 0, 3).fill_(-std::numeric_limits<float>::infinity());
    x.select(1, 2).fill_(-std::numeric_limits<float>::infinity());
    // several NaNs in some windows: the first in raster order (row 6, column 6) is not in the first column
    x[1][1][6][6] = std::nanf("");
    x[1][1][7][5] = std::nanf("");
    x[1][1][7][7] = std::nanf("");
    const at::Tensor cpu = std::get<1>(forward.call(x, k, {1, 1}, p, d, /*save_argmax=*/true));
    const at::Tensor cuda = cuda_window_offsets(x, k, p, d);
    ASSERT_EQ(sizes_of(cpu), sizes_of(cuda)) << what;
    EXPECT_TRUE(at::equal(cpu, cuda)) << what << ": " << (cpu != cuda).nonzero().slice(0, 0, 4);
  }
}

// ------------------------------------------------------------------------------------------------------------
// Selection of tied losses

TEST(Kernels, SelectionRanksTiedLossesInIndexOrder) {
  // 200 losses in four tied groups (0, 0.5, 1, 1.5 repeating): rank = group·50 + position in the group, so the
  // weights grow with the index inside each group. An unstable sort may rank a group in any order.
  const int64_t n = 200;
  const at::Tensor losses = (at::arange(n, at::kLong) % 4).to(at::kFloat) * 0.5;
  for (double keep : {0.3, 0.5}) {
    const at::Tensor w = selection_weights(losses, keep);
    const at::Tensor i = at::arange(n, at::kLong);
    const at::Tensor rank = (i % 4) * (n / 4) + i.div(4, "floor");
    const at::Tensor expected = ((rank.to(at::kDouble) + 0.5) / static_cast<double>(n)).pow(1.0 / keep - 1.0);
    EXPECT_TRUE(at::allclose(w, expected / expected.sum(), 1e-14, 0.0)) << "keep " << keep;
    // the op (the fused path) and the reference draw agree on tied losses
    Rng a(9, {2}), b(9, {2});
    EXPECT_TRUE(at::equal(fused_select_by_loss(losses, keep, a), select_by_loss(losses, keep, b)));
  }
}

// ------------------------------------------------------------------------------------------------------------
// Checks shared by the CPU and CUDA kernels

TEST(Kernels, BlurMaxPoolBackwardChecksTheArgmaxAgainstTheGradient) {
  static const auto forward = ops::typed_op<ArgmaxForwardSig>("tessera::_blur_maxpool2d");
  static const auto backward = ops::typed_op<ArgmaxBackwardSig>("tessera::_blur_maxpool2d_backward");
  const at::Tensor x = at::randn({2, 3, 8, 8});
  const S2 k{3, 3}, s{2, 2}, p{1, 1}, d{1, 1}, in{8, 8};
  const auto [y, argmax] = forward.call(x, k, s, p, d, /*save_argmax=*/true);
  const at::Tensor g = at::randn(y.sizes());
  EXPECT_EQ(sizes_of(backward.call(g, argmax, in, k, s, p, d)), sizes_of(x));
  const std::vector<std::pair<std::string, at::Tensor>> bad = {
      {"batch", argmax.narrow(0, 0, 1)},   {"channels", argmax.narrow(1, 0, 2)},
      {"dtype", argmax.to(at::kInt)},      {"not dense", argmax.transpose(2, 3)},
      {"pooled size", argmax.narrow(2, 0, 7)}};
  for (const auto& [what, a] : bad) EXPECT_THROW(backward.call(g, a, in, k, s, p, d), c10::Error) << what;
  // an argmax on another device than the gradient: the CPU kernel called directly (the dispatcher would pick the
  // Meta key), as the CUDA kernel would be with a CPU argmax
  const std::string error = error_of([&] {
    backward.redispatch(c10::DispatchKeySet(c10::DispatchKey::CPU), g, argmax.to(at::kMeta), in, k, s, p, d);
  });
  EXPECT_NE(error.find("argmax is on meta"), std::string::npos) << error;
}

TEST(Kernels, SmoothedCrossEntropyBackwardChecksTheRowsAreOnTheLogitsDevice) {
  static const auto backward = ops::typed_op<CeBackwardSig>("tessera::_smoothed_cross_entropy_backward");
  const at::Tensor logits = at::randn({3, 5}), labels = at::tensor({0, 4, 2}, at::kLong);
  const at::Tensor g = at::ones({3}), lse = at::logsumexp(logits, 1);
  EXPECT_EQ(sizes_of(backward.call(g, logits, labels, lse, 0.1)), sizes_of(logits));
  EXPECT_THROW(backward.call(at::ones({2}), logits, labels, lse, 0.1), c10::Error);
  EXPECT_THROW(backward.call(g, logits, labels, lse.narrow(0, 0, 2), 0.1), c10::Error);
  const auto cpu = c10::DispatchKeySet(c10::DispatchKey::CPU);
  for (int which = 0; which < 2; ++which) {
    const std::string error = error_of([&] {
      backward.redispatch(cpu, which == 0 ? g.to(at::kMeta) : g, logits, labels, which == 1 ? lse.to(at::kMeta) : lse,
                          0.1);
    });
    EXPECT_NE(error.find("must be on the logits' device"), std::string::npos) << which << ": " << error;
  }
}

TEST(Kernels, GatherRowsChecksTheIndexLikeIndexSelect) {
  const std::vector<at::Tensor> parts = {at::randn({4, 2}), at::randn({0, 3})};
  EXPECT_THROW(gather_rows(parts, at::tensor({1}, at::kLong)), c10::IndexError);  // a tensor without rows
  EXPECT_EQ(gather_rows(parts, at::empty({0}, at::kLong))[1].size(0), 0);          // nothing kept: fine
  EXPECT_THROW(gather_rows({parts[0]}, at::tensor({4}, at::kLong)), c10::IndexError);
  EXPECT_THROW(gather_rows({parts[0]}, at::tensor({-5}, at::kLong)), c10::IndexError);
  EXPECT_THROW(gather_rows({parts[0]}, at::zeros({1, 1}, at::kLong)), c10::Error);  // not 1-D
  EXPECT_THROW(gather_rows({parts[0]}, at::zeros({1}, at::kFloat)), c10::Error);    // not integer
  EXPECT_TRUE(at::equal(gather_rows({parts[0]}, at::tensor({3, 0}, at::kInt))[0], parts[0].index_select(0, at::tensor({3, 0}))));
}

}  // namespace
}  // namespace tessera::algorithms
