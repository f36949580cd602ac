// The CUDA kernels against their CPU references (ctest label `gpu`): values and gradients for every op, odd
// shapes, strides, channels-last and non-contiguous inputs, float32/float64/float16/bfloat16, large class
// counts, the selection's distribution, the multi-launch paths, and the edge cases of issue 21 (64-bit indices,
// rows without vector loads, misaligned logits, −inf windows, tied losses, invalid gathers, a non-default stream). Every test skips without a CUDA device or
// without a library built with TESSERA_CUDA. Run on the GPU machine: `ctest -L gpu` (docs/kernels.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#ifdef TESSERA_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/selective_backprop.h>
#include <tessera/ops/kernels.h>
#include <tessera/ops/multi_tensor.h>
#include <tessera/rng.h>

#include "../../algorithms/blurpool/blurpool_ops.h"
#include "../../algorithms/label_smoothing/label_smoothing_ops.h"
#include "../../algorithms/selective_backprop/selective_backprop_ops.h"

namespace tessera::algorithms {
namespace {

using S2 = std::array<int64_t, 2>;

#define REQUIRE_CUDA_KERNELS()                                                                       \
  do {                                                                                              \
    if (!ops::built_with_cuda_kernels()) GTEST_SKIP() << "library built without TESSERA_CUDA";      \
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";                                            \
  } while (0)

const c10::Device kCuda(c10::kCUDA, 0);

void expect_close(const at::Tensor& a, const at::Tensor& b, double rtol, double atol, const std::string& what = "") {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  if (a.numel() == 0) return;
  const at::Tensor da = a.detach().cpu().to(at::kDouble), db = b.detach().cpu().to(at::kDouble);
  const double diff = (da - db).abs().max().item<double>();
  const double scale = db.numel() ? db.abs().max().item<double>() : 0.0;
  EXPECT_LE(diff, atol + rtol * scale) << what << " max |diff| " << diff << " scale " << scale;
}

/// Relative tolerance of a dtype's results against a float64 reference: the 16-bit types round once at the end.
double tol_for(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return 1e-12;
    case at::kFloat: return 2e-6;
    case at::kHalf: return 2e-3;
    default: return 1e-2;  // bfloat16
  }
}

TEST(KernelsGpu, BlurMatchesTheCpuReference) {
  REQUIRE_CUDA_KERNELS();
  at::manual_seed(1);
  const std::vector<std::vector<int64_t>> shapes = {{2, 3, 7, 9}, {1, 1, 1, 1}, {3, 4, 8, 8}, {2, 5, 3, 11},
                                                    {4, 64, 56, 56}, {1, 2, 2, 2}};
  for (const auto& shape : shapes) {
    for (const S2 s : {S2{1, 1}, S2{2, 2}, S2{1, 2}, S2{3, 3}}) {
      for (at::ScalarType t : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
        for (bool channels_last : {false, true}) {
          const std::string what = c10::str(at::IntArrayRef(shape), " s", at::IntArrayRef(s), " ", t,
                                            channels_last ? " NHWC" : " NCHW");
          at::Tensor x = at::randn(shape, at::kDouble).to(t);
          if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
          const at::Tensor xc = x.to(kCuda).requires_grad_(true);
          const at::Tensor y = fused_blur2d(xc, s);
          EXPECT_EQ(y.scalar_type(), t) << what;
          const at::Tensor ref = fused_blur2d(x.to(at::kDouble), s);
          expect_close(y, ref, tol_for(t), tol_for(t), what);
          const at::Tensor r = at::randn(ref.sizes(), at::kDouble);
          (y * r.to(t).to(kCuda)).sum().backward();
          at::Tensor xr = x.to(at::kDouble).requires_grad_(true);
          (fused_blur2d(xr, s) * r.to(t).to(at::kDouble)).sum().backward();
          expect_close(xc.grad(), xr.grad(), tol_for(t), tol_for(t), what + " gradient");
        }
      }
    }
  }
  // non-contiguous input
  const at::Tensor t = at::randn({2, 3, 10, 9}).transpose(2, 3);
  expect_close(fused_blur2d(t.to(kCuda), {2, 2}), fused_blur2d(t, {2, 2}), 2e-6, 2e-6, "transposed");
}

TEST(KernelsGpu, BlurMaxPoolMatchesTheCpuReference) {
  REQUIRE_CUDA_KERNELS();
  at::manual_seed(2);
  struct Case {
    S2 k, s, p, d;
  };
  const std::vector<Case> cases = {{{2, 2}, {2, 2}, {0, 0}, {1, 1}}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}},
                                   {{3, 3}, {1, 1}, {1, 1}, {1, 1}}, {{2, 2}, {2, 2}, {0, 0}, {2, 2}},
                                   {{3, 2}, {3, 2}, {1, 0}, {1, 2}}, {{2, 2}, {5, 5}, {1, 1}, {1, 1}}};
  for (const auto& c : cases) {
    for (at::ScalarType t : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
      for (bool channels_last : {false, true}) {
        for (bool ties : {false, true}) {
          const std::string what = c10::str("k", at::IntArrayRef(c.k), " s", at::IntArrayRef(c.s), " ", t,
                                            channels_last ? " NHWC" : " NCHW", ties ? " ties" : "");
          at::Tensor x = ties ? at::randint(0, 3, {2, 5, 13, 12}, at::kDouble) : at::randn({2, 5, 13, 12}, at::kDouble);
          x = x.to(t);
          if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
          const at::Tensor xc = x.to(kCuda).requires_grad_(true);
          const at::Tensor y = fused_blur_maxpool2d(xc, c.k, c.s, c.p, c.d);
          at::Tensor xr = x.to(at::kDouble).requires_grad_(true);
          const at::Tensor ref = fused_blur_maxpool2d(xr, c.k, c.s, c.p, c.d);
          expect_close(y, ref, tol_for(t), tol_for(t), what);
          const at::Tensor r = at::randn(ref.sizes(), at::kDouble).to(t);
          (y * r.to(kCuda)).sum().backward();
          (ref * r.to(at::kDouble)).sum().backward();
          // the same argmax choice (first maximum in raster order) on both devices
          expect_close(xc.grad(), xr.grad(), tol_for(t), tol_for(t), what + " gradient");
        }
      }
    }
  }
}

TEST(KernelsGpu, SmoothedCrossEntropyMatchesTheCpuReference) {
  REQUIRE_CUDA_KERNELS();
  at::manual_seed(3);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{5, 3},    {7, 10},   {1, 1},      {3, 17},
                                                           {64, 1000}, {9, 1001}, {4, 32768}, {3, 131072},
                                                           {300, 2}};
  for (const auto& [n, c] : shapes) {
    for (at::ScalarType t : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
      const std::string what = c10::str("[", n, ", ", c, "] ", t);
      const at::Tensor logits = (at::randn({n, c}, at::kDouble) * 3).to(t);
      const at::Tensor labels = at::randint(0, c, {n}, at::kLong);
      at::Tensor a = logits.to(kCuda).requires_grad_(true);
      auto [mean, per] = fused_smoothed_cross_entropy(a, labels.to(kCuda), 0.1);
      at::Tensor b = logits.to(at::kDouble).requires_grad_(true);
      auto [rmean, rper] = fused_smoothed_cross_entropy(b, labels, 0.1);
      // float accumulation over up to 128k classes: a few 1e-6 relative for every floating type
      const double tol = t == at::kDouble ? 1e-10 : t == at::kFloat ? 1e-5 : tol_for(t);
      expect_close(per, rper, tol, tol, what + " per example");
      const at::Tensor r = at::randn({n}, at::kDouble).to(t);
      (mean + (per * r.to(kCuda)).sum()).backward();
      (rmean + (rper * r.to(at::kDouble)).sum()).backward();
      expect_close(a.grad(), b.grad(), tol, tol, what + " gradient");
    }
  }
  // non-contiguous logits, int32 labels on the device
  const at::Tensor x = at::randn({20, 6}).t();
  const at::Tensor y = at::randint(0, 20, {6}, at::kInt);
  expect_close(fused_smoothed_cross_entropy(x.to(kCuda), y.to(kCuda), 0.2).second,
               fused_smoothed_cross_entropy(x, y, 0.2).second, 1e-5, 1e-5, "transposed");
}

TEST(KernelsGpu, SmoothedCrossEntropyInvalidLabelGivesNaNWithoutSynchronising) {
  REQUIRE_CUDA_KERNELS();
  const at::Tensor x = at::randn({3, 4}, kCuda).requires_grad_(true);
  auto [mean, per] = fused_smoothed_cross_entropy(x, at::tensor({0, 7, 1}, at::kLong).to(kCuda), 0.1);
  const at::Tensor p = per.cpu();
  EXPECT_FALSE(std::isnan(p[0].item<float>()));
  EXPECT_TRUE(std::isnan(p[1].item<float>()));
  per.sum().backward();
  EXPECT_EQ(x.grad().cpu()[1].abs().sum().item<float>(), 0.0f);
}

TEST(KernelsGpu, SelectionDrawsTheCpuSamplesAndDistribution) {
  REQUIRE_CUDA_KERNELS();
  at::manual_seed(4);
  // The device draws the same uniforms as the CPU path: for distinct losses the same examples are kept.
  const at::Tensor losses = at::rand({257}, at::kDouble);
  for (double keep : {0.1, 0.5, 0.9}) {
    Rng a(7, {3}), b(7, {3});
    const at::Tensor cpu = select_by_loss(losses, keep, a);
    const at::Tensor gpu = select_by_loss(losses.to(kCuda), keep, b);
    EXPECT_TRUE(gpu.is_cuda());
    EXPECT_TRUE(at::equal(gpu.cpu(), cpu)) << "keep " << keep;
    EXPECT_TRUE(a == b);
  }
  // Inclusion frequencies against the exact probabilities of sequential draws (N = 4, k = 2).
  const at::Tensor l4 = at::tensor({0.3, 0.1, 0.9, 0.5}, at::kDouble);
  const at::Tensor w = selection_weights(l4, 0.5);
  std::vector<double> p(4), inclusion(4, 0.0);
  for (int i = 0; i < 4; ++i) p[i] = w[i].item<double>();
  for (int x = 0; x < 4; ++x) {
    for (int y = 0; y < 4; ++y) {
      if (x == y) continue;
      const double pr = p[x] * p[y] / (1.0 - p[x]);
      inclusion[x] += pr;
      inclusion[y] += pr;
    }
  }
  const int draws = 4000;
  std::vector<int> count(4, 0);
  Rng rng(11);
  const at::Tensor l4c = l4.to(kCuda);
  for (int d = 0; d < draws; ++d) {
    const at::Tensor idx = select_by_loss(l4c, 0.5, rng).cpu();
    ASSERT_EQ(idx.numel(), 2);
    for (int j = 0; j < 2; ++j) ++count[idx[j].item<int64_t>()];
  }
  for (int i = 0; i < 4; ++i) {
    const double freq = static_cast<double>(count[i]) / draws;
    EXPECT_NEAR(freq, inclusion[i], 5 * std::sqrt(inclusion[i] * (1 - inclusion[i]) / draws)) << i;
  }
}

TEST(KernelsGpu, GatherRowsInOneLaunchEqualsIndexSelect) {
  REQUIRE_CUDA_KERNELS();
  at::manual_seed(5);
  const at::Tensor index = at::tensor({5, 0, 3, 3, 9}, at::kLong).to(kCuda);
  std::vector<at::Tensor> parts = {at::randn({10, 3, 8, 8}, kCuda), at::randint(0, 9, {10}, at::TensorOptions(kCuda).dtype(at::kLong)),
                                   at::randint(0, 200, {10, 3}, at::TensorOptions(kCuda).dtype(at::kByte)),
                                   at::randn({7, 10}, kCuda).t(), at::randn({10, 5}, kCuda).to(at::kHalf)};
  for (int i = 0; i < 40; ++i) parts.push_back(at::randn({10, i + 1}, kCuda));  // more than one launch (32 per launch)
  const std::vector<at::Tensor> rows = gather_rows(parts, index);
  ASSERT_EQ(rows.size(), parts.size());
  for (size_t i = 0; i < parts.size(); ++i) EXPECT_TRUE(at::equal(rows[i], parts[i].index_select(0, index))) << i;
}

TEST(KernelsGpu, EmaUpdateMatchesTheCpuOp) {
  REQUIRE_CUDA_KERNELS();
  at::manual_seed(6);
  std::vector<at::Tensor> avg, src;
  for (int i = 0; i < 100; ++i) avg.push_back(at::randn({i * 37 + 1}));  // > 48 tensors: several launches
  avg.push_back(at::randn({25'000'000}));                                // > 320 chunks of 64k: split across launches
  avg.push_back(at::randn({1001}, at::kDouble));
  avg.push_back(at::randn({1001}).to(at::kHalf));
  avg.push_back(at::randn({1001}).to(at::kBFloat16));
  const at::Tensor base = at::randn({1001});
  const size_t misaligned = avg.size();
  avg.push_back(base.narrow(0, 1, 1000));  // a start 4 bytes past the allocation: the scalar path
  avg.push_back(at::tensor({4}, at::kLong));
  for (const at::Tensor& a : avg) src.push_back(a.is_floating_point() ? at::randn_like(a) : a + 3);
  std::vector<at::Tensor> avg_gpu, src_gpu;
  for (size_t i = 0; i < avg.size(); ++i) {
    avg_gpu.push_back(i == misaligned ? base.to(kCuda).narrow(0, 1, 1000) : avg[i].to(kCuda));
    src_gpu.push_back(src[i].to(kCuda));
  }
  ops::ema_update_(avg, src, 0.99);
  ops::ema_update_(avg_gpu, src_gpu, 0.99);
  for (size_t i = 0; i < avg.size(); ++i) {
    // the same formula in the same precision; the compilers may contract to FMA differently: 1 ulp
    const double tol = avg[i].scalar_type() == at::kDouble ? 1e-15 : avg[i].scalar_type() == at::kFloat ? 2e-7 : 1e-2;
    expect_close(avg_gpu[i], avg[i], tol, tol, std::to_string(i));
  }
}

// ------------------------------------------------------------------------------------------------------------
// Edge cases (issue 21)

/// max |y − stock blur of x| for a [1, 1, H, W] x and its stride-1 blur y: the stock depthwise conv2d runs on strips
/// of rows (each under 2^31 elements, with its halo rows), so that the reference does not depend on how the conv
/// itself handles tensors above 2^31 elements (with N = 1 it cannot split the batch).
float max_diff_to_stock_blur(const at::Tensor& x, const at::Tensor& y) {
  const int64_t H = x.size(2), rows = 8192;
  const at::Tensor w = blur_filter(1, x.options());
  float worst = 0.0f;
  for (int64_t a = 0; a < H; a += rows) {
    const int64_t b = std::min(H, a + rows);
    const int64_t lo = std::max<int64_t>(a - 1, 0), hi = std::min(H, b + 1);
    const at::Tensor strip = at::constant_pad_nd(x.narrow(2, lo, hi - lo), {0, 0, a == 0 ? 1 : 0, b == H ? 1 : 0});
    const std::vector<int64_t> one = {1, 1}, padding = {0, 1};  // the halo rows stand in for the row padding
    const at::Tensor ref = at::conv2d(strip, w, /*bias=*/{}, one, padding, one, /*groups=*/1);
    worst = std::max(worst, (y.narrow(2, a, b - a) - ref).abs().max().item<float>());
  }
  return worst;
}

TEST(KernelsGpu, BlurTakesTheSixtyFourBitIndexPathAboveTwoToTheThirtyOneElements) {
  REQUIRE_CUDA_KERNELS();
  // 46341² = 2 147 488 281 elements > 2^31: the kernels switch to 64-bit indices (8.6 GB per float32 tensor).
  // cuDNN may run the float32 conv in TF32 (10-bit mantissa), hence 2e-3; a wrong index would be off by O(1).
  at::manual_seed(40);
  const int64_t H = 46341;
  const at::Tensor x = at::rand({1, 1, H, H}, at::TensorOptions(kCuda).dtype(at::kFloat));
  EXPECT_LE(max_diff_to_stock_blur(x, fused_blur2d(x, {1, 1})), 2e-3f) << "forward";
  // The backward of a stride-2 blur, whose input gradient is the 64-bit tensor: the transposed blur of g is the
  // stride-1 blur of g with zeros inserted between its samples (46341 = 2·23170 + 1).
  const at::Tensor g = at::rand({1, 1, 23171, 23171}, at::TensorOptions(kCuda).dtype(at::kFloat));
  at::Tensor leaf = at::zeros_like(x).requires_grad_(true);
  fused_blur2d(leaf, {2, 2}).backward(g);
  at::Tensor spread = at::zeros_like(x);
  spread.slice(2, 0, H, 2).slice(3, 0, H, 2).copy_(g);
  EXPECT_LE(max_diff_to_stock_blur(spread, leaf.grad()), 2e-3f) << "backward";
}

TEST(KernelsGpu, SmoothedCrossEntropyWithoutVectorLoadsAndOnMisalignedLogits) {
  REQUIRE_CUDA_KERNELS();
  at::manual_seed(41);
  // C = 1025: a block per row, and no 16-byte vectors (C is not a multiple of 4); then rows that start 4 bytes past
  // a 16-byte boundary (a view into a flat buffer), for a warp per row (C = 512) and a block per row (C = 4096)
  struct Case {
    int64_t n, c, offset;
  };
  for (const Case& k : {Case{7, 1025, 0}, Case{6, 512, 1}, Case{5, 4096, 1}, Case{3, 1025, 3}}) {
    const std::string what = c10::str("[", k.n, ", ", k.c, "] offset ", k.offset);
    const at::Tensor flat = at::randn({k.n * k.c + k.offset}, at::TensorOptions(kCuda).dtype(at::kFloat)) * 3;
    at::Tensor logits = flat.narrow(0, k.offset, k.n * k.c).view({k.n, k.c});
    ASSERT_TRUE(logits.is_contiguous());
    logits.requires_grad_(true);
    const at::Tensor labels = at::randint(0, k.c, {k.n}, at::kLong);
    auto [mean, per] = fused_smoothed_cross_entropy(logits, labels.to(kCuda), 0.1);
    at::Tensor ref_logits = logits.detach().cpu().to(at::kDouble).requires_grad_(true);
    auto [rmean, rper] = fused_smoothed_cross_entropy(ref_logits, labels, 0.1);
    expect_close(per, rper, 1e-5, 1e-5, what + " per example");
    const at::Tensor r = at::randn({k.n}, at::kDouble);
    (mean + (per * r.to(at::kFloat).to(kCuda)).sum()).backward();
    (rmean + (rper * r).sum()).backward();
    expect_close(logits.grad(), ref_logits.grad(), 1e-5, 1e-5, what + " gradient");
  }
}

TEST(KernelsGpu, BlurMaxPoolWindowsOfMinusInfinityMatchTheCpu) {
  REQUIRE_CUDA_KERNELS();
  at::manual_seed(42);
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    S2 k, s, p, d;
  };
  for (const Case& c : {Case{{3, 3}, {2, 2}, {1, 1}, {1, 1}}, Case{{2, 2}, {1, 1}, {1, 1}, {1, 1}},
                        Case{{3, 3}, {1, 2}, {1, 1}, {2, 2}}}) {
    for (bool channels_last : {false, true}) {
      const std::string what = c10::str("k", at::IntArrayRef(c.k), " d", at::IntArrayRef(c.d),
                                        channels_last ? " NHWC" : " NCHW");
      at::Tensor x = at::randn({2, 3, 9, 8});
      x.narrow(2, 0, 4).fill_(-inf);
      x.narrow(3, 0, 3).fill_(-inf);
      x.select(1, 1).fill_(-inf);
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      at::Tensor xc = x.to(kCuda).requires_grad_(true), xr = x.clone().requires_grad_(true);
      const at::Tensor y = fused_blur_maxpool2d(xc, c.k, c.s, c.p, c.d), ref = fused_blur_maxpool2d(xr, c.k, c.s, c.p, c.d);
      EXPECT_TRUE(at::allclose(y.cpu(), ref, 1e-6, 1e-6)) << what;  // −inf in the same places
      const at::Tensor r = at::randn(ref.sizes());
      (y * r.to(kCuda)).sum().backward();
      (ref * r).sum().backward();
      // the same window offsets on both devices: the first valid element of an all −inf window, never the padding
      expect_close(xc.grad(), xr.grad(), 1e-6, 1e-6, what + " gradient");
    }
  }
}

TEST(KernelsGpu, SelectionOfTiedLossesEqualsTheCpu) {
  REQUIRE_CUDA_KERNELS();
  // four tied groups: both devices rank ties in index order (a stable sort), so they keep the same examples
  const at::Tensor losses = (at::arange(257, at::kLong) % 4).to(at::kFloat);
  for (double keep : {0.1, 0.5, 0.9}) {
    Rng a(13, {1}), b(13, {1});
    const at::Tensor cpu = select_by_loss(losses, keep, a);
    const at::Tensor gpu = select_by_loss(losses.to(kCuda), keep, b);
    EXPECT_TRUE(at::equal(gpu.cpu(), cpu)) << "keep " << keep;
  }
}

TEST(KernelsGpu, GatherRowsRejectsSourcesWithoutRowsAndHostIndicesOutOfRange) {
  REQUIRE_CUDA_KERNELS();
  const at::Tensor rows = at::randn({4, 3}, kCuda), none = at::randn({0, 3}, kCuda);
  EXPECT_THROW(gather_rows({rows, none}, at::tensor({1}, at::kLong).to(kCuda)), c10::IndexError);
  EXPECT_EQ(gather_rows({rows, none}, at::empty({0}, at::TensorOptions(kCuda).dtype(at::kLong)))[1].size(0), 0);
  EXPECT_THROW(gather_rows({rows}, at::tensor({0, 4}, at::kLong)), c10::IndexError);   // a host index: checked there
  EXPECT_THROW(gather_rows({rows}, at::tensor({-1}, at::kLong)), c10::IndexError);
}

TEST(KernelsGpu, GatherRowsStopsOnADeviceIndexOutOfRange) {
  REQUIRE_CUDA_KERNELS();
  // A device-side assertion, like index_select's: the CUDA context is lost afterwards, so this runs in a child
  // process (a re-executed test binary), which reports the error at its next synchronising call.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        try {
          const at::Tensor index = at::tensor({1, 4}, at::kLong).to(kCuda);
          const std::vector<at::Tensor> out = gather_rows({at::randn({4, 3}, kCuda)}, index);
          (void)out[0].cpu();
        } catch (const std::exception&) {
          std::_Exit(3);
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(3), "");
}

#ifdef TESSERA_CUDA
/// Every op forward and backward on the current stream; the results, copied to the host.
std::vector<at::Tensor> run_every_op() {
  at::manual_seed(43);
  std::vector<at::Tensor> out;
  at::Tensor x = at::randn({2, 3, 11, 10}, kCuda).requires_grad_(true);
  at::Tensor y = fused_blur2d(x, {2, 2});
  y.backward(at::ones_like(y));
  out.push_back(y.cpu());
  out.push_back(x.grad().cpu());
  at::Tensor xm = at::randn({2, 3, 11, 10}, kCuda).requires_grad_(true);
  at::Tensor ym = fused_blur_maxpool2d(xm, {3, 3}, {2, 2}, {1, 1}, {1, 1});
  ym.backward(at::ones_like(ym));
  out.push_back(ym.cpu());
  out.push_back(xm.grad().cpu());
  at::Tensor logits = at::randn({9, 2000}, kCuda).requires_grad_(true);
  auto [mean, per] = fused_smoothed_cross_entropy(logits, at::randint(0, 2000, {9}, at::TensorOptions(kCuda).dtype(at::kLong)), 0.1);
  mean.backward();
  out.push_back(per.cpu());
  out.push_back(logits.grad().cpu());
  Rng rng(5);
  const at::Tensor keep = select_by_loss(at::rand({300}, kCuda), 0.4, rng);
  out.push_back(keep.cpu());
  out.push_back(gather_rows({at::randn({300, 7}, kCuda)}, keep)[0].cpu());
  at::Tensor avg = at::randn({5000}, kCuda);
  ops::ema_update_({avg}, {at::randn({5000}, kCuda)}, 0.9);
  out.push_back(avg.cpu());
  return out;
}
#endif

TEST(KernelsGpu, EveryOpOnANonDefaultStreamEqualsTheDefaultStream) {
  REQUIRE_CUDA_KERNELS();
#ifdef TESSERA_CUDA
  const std::vector<at::Tensor> on_default = run_every_op();
  std::vector<at::Tensor> on_side;
  {
    c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool());
    ASSERT_NE(c10::cuda::getCurrentCUDAStream().id(), c10::cuda::getDefaultCUDAStream().id());
    on_side = run_every_op();  // launched on the pool stream; .cpu() synchronises with it
  }
  ASSERT_EQ(on_side.size(), on_default.size());
  for (size_t i = 0; i < on_side.size(); ++i) EXPECT_TRUE(at::equal(on_side[i], on_default[i])) << i;
#endif
}

}  // namespace
}  // namespace tessera::algorithms
