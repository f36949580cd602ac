// Label smoothing: values against hand computation, the fused loss equals the dense one, targets restored
// after the loss, and the order against another algorithm that edits targets at before_loss.
#include <gtest/gtest.h>

#include <tessera/algorithms/label_smoothing.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

TEST(LabelSmoothing, SmoothLabelsByHand) {
  at::Tensor y = at::tensor({0, 2}, at::kLong);
  at::Tensor t = smooth_labels(y, 4, 0.2);
  // (1 - 0.2)·onehot + 0.2/4 = 0.85 on the class, 0.05 elsewhere
  at::Tensor expected = at::tensor({0.85, 0.05, 0.05, 0.05, 0.05, 0.05, 0.85, 0.05}, at::kFloat).view({2, 4});
  EXPECT_TRUE(at::allclose(t, expected));
  EXPECT_TRUE(at::allclose(t.sum(1), at::ones({2})));
  // dense targets are smoothed too
  at::Tensor dense = at::tensor({0.5, 0.5, 0.0, 0.0}, at::kFloat).view({1, 4});
  EXPECT_TRUE(at::allclose(smooth_labels(dense, 4, 0.2), at::tensor({0.45, 0.45, 0.05, 0.05}, at::kFloat).view({1, 4})));
  // segmentation-shaped integer targets [N, H, W] -> [N, C, H, W]
  EXPECT_EQ(smooth_labels(at::zeros({2, 3, 5}, at::kLong), 4, 0.1).sizes(), (at::IntArrayRef{2, 4, 3, 5}));
  EXPECT_THROW(smooth_labels(at::zeros({2, 3}), 4, 0.1), InputError);
}

TEST(LabelSmoothing, FusedLossEqualsDenseLossAndHandValue) {
  at::Tensor logits = at::tensor({2.0, 0.0, -1.0, 0.5, 0.5, 0.5}, at::kDouble).view({2, 3});
  at::Tensor y = at::tensor({0, 1}, at::kLong);
  const double a = 0.3;
  // by hand, example 0: logsumexp = log(e^2 + 1 + e^-1)
  const double lse0 = std::log(std::exp(2.0) + 1.0 + std::exp(-1.0));
  const double nll0 = lse0 - 2.0, mean0 = lse0 - (2.0 + 0.0 - 1.0) / 3.0;
  const double nll1 = std::log(3.0), mean1 = std::log(3.0);
  const double hand = 0.5 * ((1 - a) * nll0 + a * mean0 + (1 - a) * nll1 + a * mean1);
  at::Tensor fused = smoothed_cross_entropy(logits, y, a);
  at::Tensor dense = cross_entropy(logits, smooth_labels(y, 3, a).to(at::kDouble));
  EXPECT_NEAR(fused.item<double>(), hand, 1e-12);
  EXPECT_NEAR(dense.item<double>(), hand, 1e-7);  // smooth_labels builds float32 targets
  at::Tensor per = smoothed_cross_entropy(logits, y, a, Reduction::None);
  ASSERT_EQ(per.sizes(), (at::IntArrayRef{2}));
  EXPECT_NEAR(per[0].item<double>(), (1 - a) * nll0 + a * mean0, 1e-12);
  // gradients agree as well
  at::Tensor l1 = logits.clone().requires_grad_(true), l2 = logits.clone().requires_grad_(true);
  smoothed_cross_entropy(l1, y, a).backward();
  cross_entropy(l2, smooth_labels(y, 3, a).to(at::kDouble)).backward();
  EXPECT_TRUE(at::allclose(l1.grad(), l2.grad(), 1e-6, 1e-7));
}

TEST(LabelSmoothing, FusedAndDensePathsTrainIdentically) {
  auto run = [](bool fused) {
    Components c = testing::tiny_components(32, 8);
    c.algorithms.push_back(std::make_shared<LabelSmoothing>(LabelSmoothingOptions().smoothing(0.1).fused(fused)));
    Trainer t(TrainerOptions().max_duration(Time::parse("4ba")).threads(1), std::move(c));
    t.fit();
    return t.state().model->parameters();
  };
  auto a = run(true), b = run(false);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::allclose(a[i], b[i], 1e-5, 1e-6)) << i;
}

/// Records the targets the loss sees and checks they are restored after.
class TargetProbe : public Algorithm {
 public:
  TargetProbe() {
    spec_ = testing::spec_on("probe", {Event::AfterForward, Event::BeforeBackward});
  }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event e, State& s, Logger&) override {
    if (e == Event::AfterForward) before = s.batch.target();
    if (e == Event::BeforeBackward) after = s.batch.target();
  }
  at::Tensor before, after;
  AlgorithmSpec spec_;
};

TEST(LabelSmoothing, TargetsAreRestoredAfterTheLoss) {
  for (bool fused : {true, false}) {
    Components c = testing::tiny_components(16, 8);
    auto probe = std::make_shared<TargetProbe>();
    c.algorithms.push_back(std::make_shared<LabelSmoothing>(LabelSmoothingOptions().fused(fused)));
    c.algorithms.push_back(probe);
    Trainer t(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), std::move(c));
    t.fit();
    EXPECT_EQ(probe->after.scalar_type(), at::kLong);
    EXPECT_TRUE(at::equal(probe->before, probe->after));
    EXPECT_FALSE(static_cast<bool>(t.state().loss_override));
  }
}

/// Another algorithm that edits targets at before_loss: makes them dense one-hot.
class DenseTargets : public Algorithm {
 public:
  DenseTargets() {
    spec_ = testing::spec_on("dense_targets", {Event::BeforeLoss});
    spec_.accesses[0].writes = {Resource::Targets};
  }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& s, Logger&) override {
    s.batch.set(Batch::kTarget, at::one_hot(s.batch.target(), 3).to(at::kFloat));
    seen_loss_override = static_cast<bool>(s.loss_override);
  }
  bool seen_loss_override = false;
  AlgorithmSpec spec_;
};

TEST(LabelSmoothing, RunsAfterOtherTargetEditorsWhateverTheRecipeOrder) {
  auto ls = std::make_shared<LabelSmoothing>();
  auto dense = std::make_shared<DenseTargets>();
  Plan plan = compile_plan({ls.get(), dense.get()});
  ASSERT_EQ(plan.at(Event::BeforeLoss).size(), 2u);
  EXPECT_EQ(plan.at(Event::BeforeLoss)[0].algorithm->name(), "dense_targets");
  EXPECT_EQ(plan.at(Event::BeforeLoss)[1].algorithm->name(), "label_smoothing");
  // In a run, label smoothing then sees dense targets and smooths them (dense path), and the
  // loss is the cross-entropy against the smoothed one-hot targets.
  Components c = testing::tiny_components(16, 8);
  c.algorithms = {ls, dense};
  Trainer t(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), std::move(c));
  t.fit();
  EXPECT_FALSE(dense->seen_loss_override);
}

TEST(LabelSmoothing, Validation) {
  EXPECT_THROW(LabelSmoothing(LabelSmoothingOptions().smoothing(1.0)), InputError);
  EXPECT_THROW(LabelSmoothing(LabelSmoothingOptions().smoothing(-0.1)), InputError);
  EXPECT_NO_THROW(LabelSmoothing(LabelSmoothingOptions().smoothing(0.0)));
  // the functional forms take the same range
  const at::Tensor y = at::tensor({0, 1}, at::kLong);
  try {
    smooth_labels(y, 2, 1.0);
    FAIL() << "alpha 1 accepted";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "smooth_labels.smoothing: 1 is out of range; expected a number [0, 1)");
  }
  EXPECT_THROW(smoothed_cross_entropy(at::zeros({2, 2}), y, -0.1, Reduction::Mean), InputError);
}

}  // namespace
}  // namespace tessera::algorithms
