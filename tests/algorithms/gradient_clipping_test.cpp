// Gradient clipping: the three kinds against hand computations, gradients below the bound untouched bit for bit,
// parameters without gradients skipped, bad options refused, and in a run the step sees clipped gradients of
// the whole batch (after every microbatch).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <tessera/algorithms/gradient_clipping.h>

#include "gradient_support.h"
#include "support.h"

namespace tessera::algorithms {
namespace {

using testing::param_with_grad;

TEST(GradientClipping, NormScalesTheGlobalNormToTheThresholdAndKeepsTheDirection) {
  // ‖(3, 4)‖ = 5 across two parameters.
  auto a = param_with_grad(at::zeros({1}), at::full({1}, 3.0));
  auto b = param_with_grad(at::zeros({1}), at::full({1}, 4.0));
  const at::Tensor total = clip_gradients({a, b}, "norm", 1.0);
  EXPECT_FLOAT_EQ(total.item<float>(), 5.0f);
  EXPECT_NEAR(a.grad().item<float>(), 3.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(b.grad().item<float>(), 4.0 / (5.0 + 1e-6), 1e-6);

  // Below the bound: the same bits (the coefficient is exactly 1).
  auto c = param_with_grad(at::zeros({3}), at::tensor({0.1f, -0.2f, 0.3f}));
  const at::Tensor before = c.grad().clone();
  clip_gradients({c}, "norm", 10.0);
  EXPECT_TRUE(at::equal(c.grad(), before));
}

TEST(GradientClipping, ValueClampsEachElement) {
  auto p = param_with_grad(at::zeros({4}), at::tensor({-3.0f, -0.5f, 0.5f, 3.0f}));
  EXPECT_FALSE(clip_gradients({p}, "value", 1.0).defined());
  EXPECT_TRUE(at::equal(p.grad(), at::tensor({-1.0f, -0.5f, 0.5f, 1.0f})));
}

TEST(GradientClipping, AdaptiveBoundsEachRowRelativeToItsWeights) {
  // Row 0: ‖w‖ = 5, ‖g‖ = 10, τ = 0.1 -> coefficient 0.5/10 = 0.05. Row 1: ‖w‖ = 1, ‖g‖ = 0.01 -> 10, clamped to 1.
  auto p = param_with_grad(at::tensor({3.0f, 4.0f, 1.0f, 0.0f}).view({2, 2}),
                           at::tensor({6.0f, 8.0f, 0.01f, 0.0f}).view({2, 2}));
  clip_gradients({p}, "adaptive", 0.1);
  EXPECT_TRUE(at::allclose(p.grad(), at::tensor({0.3f, 0.4f, 0.01f, 0.0f}).view({2, 2})));
  // A 1-D parameter is one unit; zero weights and zero gradients give 0/1e-6 = 0, and a NaN coefficient is 1.
  auto bias = param_with_grad(at::zeros({2}), at::tensor({1.0f, 1.0f}));
  clip_gradients({bias}, "adaptive", 0.1);
  EXPECT_TRUE(at::equal(bias.grad(), at::zeros({2})));  // ‖w‖ = 0: no step at all, as AGC intends
}

TEST(GradientClipping, ParametersWithoutGradientsAreSkippedAndBadOptionsRefused) {
  auto frozen = at::zeros({2}).set_requires_grad(true);  // no .grad
  EXPECT_FALSE(clip_gradients({frozen}, "norm", 1.0).defined());
  EXPECT_FALSE(frozen.grad().defined());
  const std::string type = testing::input_error_of([] { clip_gradients({}, "l2", 1.0); });
  EXPECT_NE(type.find("clipping_type"), std::string::npos) << type;
  const std::string threshold = testing::input_error_of([] { GradientClipping(GradientClippingOptions().clipping_threshold(0)); });
  EXPECT_NE(threshold.find("clipping_threshold"), std::string::npos) << threshold;
}

TEST(GradientClipping, InARunTheStepSeesTheWholeBatchsGradientClipped) {
  for (int64_t microbatch : {0, 3}) {  // 8 = 3 + 3 + 2: clipping once, after the last microbatch
    Components c = testing::tiny_components();
    c.algorithms = {std::make_shared<GradientClipping>(GradientClippingOptions().clipping_threshold(0.05))};
    auto probe = std::make_shared<testing::GradNormAtStep>();
    c.callbacks = {probe};
    Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1).microbatch_size(microbatch), std::move(c));
    t.fit();
    ASSERT_EQ(probe->norms.size(), 6u);
    for (double n : probe->norms) EXPECT_LE(n, 0.05 + 1e-6) << "microbatch " << microbatch;
    EXPECT_GT(*std::max_element(probe->norms.begin(), probe->norms.end()), 0.05 - 1e-4);  // it did clip
    EXPECT_EQ(t.trace().at("gradient_clipping/after_train_batch").count, 6);
  }
}

}  // namespace
}  // namespace tessera::algorithms
