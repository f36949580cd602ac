// Counter-based dropout: the kept fraction and values, a mask that is a pure function of (seed, index) and
// independent between neighbours, the backward applying the same mask, the dtypes, the module (its seed from
// torch's generator, identity in evaluation, a torch::nn::Dropout for surgery) and the refusals.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <tessera/ops/dropout.h>

#include "support.h"

namespace tessera {
namespace {

TEST(CounterDropout, KeepsOneMinusPScaledAndZeroesTheRest) {
  const at::Tensor x = at::rand({1000, 1000}) + 1.0;  // no zero of its own
  for (const double p : {0.1, 0.5, 0.9}) {
    const at::Tensor y = ops::counter_dropout(x, p, 7);
    const at::Tensor kept = y != 0;
    EXPECT_NEAR(kept.to(at::kDouble).mean().item<double>(), 1.0 - p, 0.002) << p;  // 10^6 draws: sd 0.0005
    const auto scale = static_cast<float>(1.0 / (1.0 - p));
    EXPECT_TRUE(at::equal(y.masked_select(kept), (x * scale).masked_select(kept))) << p;
  }
  EXPECT_TRUE(ops::counter_dropout(x, 0.0, 7).is_same(x)) << "p = 0 is the identity";
}

TEST(CounterDropout, TheMaskIsAPureFunctionOfSeedAndIndexAndNeighboursAreIndependent) {
  const at::Tensor x = at::ones({4, 250000});
  const at::Tensor a = ops::counter_dropout(x, 0.5, 11), b = ops::counter_dropout(x, 0.5, 11);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, ops::counter_dropout(x, 0.5, 12))) << "another seed, another mask";
  EXPECT_FALSE(at::equal(a, ops::counter_dropout(x, 0.5, 11ULL << 32))) << "the seed's high word counts too";
  // Element i's mask depends on i in x's contiguous order: a transposed view takes the mask of its contiguous copy.
  const at::Tensor t = x.t();
  EXPECT_TRUE(at::equal(ops::counter_dropout(t, 0.5, 11), ops::counter_dropout(t.contiguous(), 0.5, 11)));
  // Neighbours: the kept indicators of elements i and i + 1 are uncorrelated (|r| well below 3 / sqrt(10^6)).
  const at::Tensor k = (a.view({-1}) != 0).to(at::kDouble);
  const at::Tensor u = k.narrow(0, 0, k.numel() - 1) - 0.5, v = k.narrow(0, 1, k.numel() - 1) - 0.5;
  EXPECT_LT(std::abs((u * v).mean().item<double>() / 0.25), 0.003);
}

TEST(CounterDropout, TheBackwardAppliesTheSameMask) {
  const at::Tensor x = at::randn({64, 33}).requires_grad_(true);
  const at::Tensor y = ops::counter_dropout(x, 0.3, 5);
  const at::Tensor g = at::randn({64, 33});
  const at::Tensor dx = torch::autograd::grad({y}, {x}, {g})[0];
  const at::Tensor expected = at::where(y != 0, g / 0.7f, at::zeros_like(g));
  EXPECT_TRUE(at::allclose(dx, expected, 1e-6, 1e-7));
  EXPECT_EQ((dx != 0).sum().item<int64_t>(), (y != 0).sum().item<int64_t>());
}

TEST(CounterDropout, EveryFloatingTypeTakesTheSameMask) {
  const at::Tensor x = at::rand({300, 17}) + 1.0;
  const at::Tensor mask = ops::counter_dropout(x, 0.25, 3) != 0;
  for (const auto type : {at::kDouble, at::kBFloat16, at::kHalf}) {
    const at::Tensor y = ops::counter_dropout(x.to(type), 0.25, 3);
    EXPECT_EQ(y.scalar_type(), type);
    EXPECT_TRUE(at::equal(y != 0, mask)) << c10::toString(type);
    EXPECT_TRUE(at::allclose(y.to(at::kFloat).masked_select(mask), (x / 0.75).masked_select(mask), 1e-2, 1e-2));
  }
  const std::string ints = testing::input_error_of([] { ops::counter_dropout(at::ones({3}, at::kLong), 0.5, 1); });
  EXPECT_NE(ints.find("expected a floating-point tensor, got Long"), std::string::npos) << ints;
  const std::string one = testing::input_error_of([] { ops::counter_dropout(at::ones({3}), 1.0, 1); });
  EXPECT_NE(one.find("p is 1; expected a probability in [0, 1)"), std::string::npos) << one;
}

TEST(CounterDropout, TheModuleDrawsItsSeedFromTorchsGeneratorAndIsADropoutLayer) {
  CounterDropout drop(0.2);
  EXPECT_NE(drop->as<torch::nn::DropoutImpl>(), nullptr) << "surgery that replaces Dropout layers finds it";
  const at::Tensor x = at::rand({50, 40}) + 1.0;
  at::manual_seed(4);
  const at::Tensor a = drop->forward(x);
  const at::Tensor after = at::rand({1});
  at::manual_seed(4);
  EXPECT_TRUE(at::equal(drop->forward(x), a)) << "seeded: reproducible";
  EXPECT_TRUE(at::equal(at::rand({1}), after)) << "one draw of the generator per call";
  EXPECT_FALSE(at::equal(drop->forward(x), a)) << "the next call draws another mask";
  EXPECT_NEAR((a != 0).to(at::kDouble).mean().item<double>(), 0.8, 0.03);
  drop->eval();
  EXPECT_TRUE(drop->forward(x).is_same(x));
}

}  // namespace
}  // namespace tessera
