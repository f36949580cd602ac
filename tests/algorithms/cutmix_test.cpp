// CutMix: the box and the paste against hand computation, λ adjusted to the box, the interpolated loss in the
// trainer, the box drawn on the size progressive resizing leaves, and the plan-time checks. (What CutMix shares
// with MixUp, the loss wrapper and the Beta draws, is tested in mixup_test.cpp.)
#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tessera/algorithms/cutmix.h>
#include <tessera/algorithms/progressive_resizing.h>

#include "image_batch_support.h"
#include "support.h"

namespace tessera::algorithms {
namespace {

using ::testing::HasSubstr;

TEST(CutMix, BoxByHand) {
  // λ = 0.75 on 8×8: sides ⌊8·√0.25⌋ = 4; the centre column then row come from the generator.
  Rng rng(9), copy(9);
  const CutMixBox box = cutmix_box(8, 8, 0.75, rng);
  const auto cx = static_cast<int64_t>(copy.below(8)), cy = static_cast<int64_t>(copy.below(8));
  EXPECT_EQ(box.left, std::clamp<int64_t>(cx - 2, 0, 8));
  EXPECT_EQ(box.left + box.width, std::clamp<int64_t>(cx + 2, 0, 8));
  EXPECT_EQ(box.top, std::clamp<int64_t>(cy - 2, 0, 8));
  EXPECT_EQ(box.top + box.height, std::clamp<int64_t>(cy + 2, 0, 8));
  EXPECT_EQ(rng, copy);
  // λ = 1: an empty box; λ = 0: the sides of the image, clipped around the centre.
  Rng r(1);
  const CutMixBox none = cutmix_box(6, 10, 1.0, r);
  EXPECT_EQ(none.height * none.width, 0);
  for (int i = 0; i < 200; ++i) {
    for (bool uniform : {false, true}) {
      const CutMixBox b = cutmix_box(6, 10, 0.3, r, uniform);
      ASSERT_GE(b.top, 0);
      ASSERT_GE(b.left, 0);
      ASSERT_LE(b.top + b.height, 6);
      ASSERT_LE(b.left + b.width, 10);
      ASSERT_LE(b.height, 5);  // ⌊6·√0.7⌋ = 5, ⌊10·√0.7⌋ = 8, and ⌊s/2⌋·2 at most
      ASSERT_LE(b.width, 8);
    }
  }
  EXPECT_THROW(cutmix_box(0, 4, 0.5, r), InputError);
  EXPECT_THROW(cutmix_box(4, 4, -0.5, r), InputError);
}

TEST(CutMix, UniformSamplingCoversTheCornersAsOftenAsTheCentre) {
  // Centres over the grown image: each pixel is covered with the same probability (w/(W + w) per axis, before the
  // floor of the half sides); without it, the corners are covered less often than the centre.
  auto coverage = [](bool uniform) {
    Rng rng(4);
    at::Tensor hits = at::zeros({16, 16}, at::kDouble);
    for (int i = 0; i < 4000; ++i) {
      const CutMixBox b = cutmix_box(16, 16, 0.75, rng, uniform);  // 8×8 boxes
      hits.narrow(0, b.top, b.height).narrow(1, b.left, b.width).add_(1);
    }
    return std::make_pair(hits[0][0].item<double>() / 4000, hits[8][8].item<double>() / 4000);
  };
  const auto [corner_u, centre_u] = coverage(true);
  const auto [corner, centre] = coverage(false);
  EXPECT_NEAR(corner_u, centre_u, 0.05);
  EXPECT_LT(corner, 0.5 * centre);
}

TEST(CutMix, CutmixBatchByHand) {
  const at::Tensor x = at::arange(2 * 1 * 4 * 4, at::kFloat).view({2, 1, 4, 4});
  const at::Tensor y = at::tensor({0, 1}, at::kLong);
  const at::Tensor perm = at::tensor({1, 0}, at::kLong);
  const CutMixBox box{1, 2, 2, 1};  // rows 1..2, column 2
  const CutMixBatch m = cutmix_batch(x, y, box, perm);
  at::Tensor expected = x.clone();
  for (int64_t n = 0; n < 2; ++n) {
    for (int64_t row = 1; row < 3; ++row) expected[n][0][row][2] = x[1 - n][0][row][2];
  }
  EXPECT_TRUE(at::equal(m.input, expected)) << m.input;
  EXPECT_TRUE(at::equal(m.target_perm, at::tensor({1, 0}, at::kLong)));
  EXPECT_EQ(m.lambda, 1.0 - 2.0 / 16.0);
  EXPECT_TRUE(at::equal(x, at::arange(32, at::kFloat).view({2, 1, 4, 4}))) << "the input is not changed in place";
  // the drawing form: λ₀, π, then the box, in that order
  Rng rng(12), copy(12);
  const CutMixBatch drawn = cutmix_batch(x, y, 1.0, rng);
  const double lambda0 = sample_mixing(1.0, copy);
  const at::Tensor p = mixing_permutation(2, copy);
  const CutMixBox b = cutmix_box(4, 4, lambda0, copy);
  EXPECT_TRUE(at::equal(drawn.indices, p));
  EXPECT_EQ(drawn.box.top, b.top);
  EXPECT_EQ(drawn.box.width, b.width);
  EXPECT_EQ(drawn.lambda, 1.0 - static_cast<double>(b.height * b.width) / 16.0);
  // errors name the argument
  EXPECT_THAT(testing::input_error_of([&] { cutmix_batch(x, y, CutMixBox{3, 0, 2, 1}, perm); }),
              HasSubstr("cutmix_batch.box: rows [3, 5) x columns [0, 1) is not inside the 4x4 images"));
  EXPECT_THAT(testing::input_error_of([&] { cutmix_batch(x.view({2, 16}), y, box, perm); }),
              HasSubstr("cutmix_batch.input: expected images [N, C, H, W], got [2, 16]"));
  EXPECT_THAT(testing::input_error_of([&] { CutMix(CutMixOptions().alpha(-1)); }), HasSubstr("cutmix.alpha"));
}

/// Records what the loss was computed from. First in the recipe, so that it runs after the algorithms at
/// after_dataloader (after_* events run in reverse recipe order).
class Probe : public Algorithm {
 public:
  Probe() { spec_ = testing::spec_on("probe", {Event::AfterDataloader, Event::BeforeForward, Event::AfterLoss}); }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event e, State& s, Logger&) override {
    if (e == Event::AfterDataloader) {
      permuted.push_back(s.batch.get("cutmix_target").clone());
    } else if (e == Event::BeforeForward) {
      widths.push_back(s.batch.input().size(3));
    } else {
      outputs.push_back(s.outputs.detach().clone());
      losses.push_back(s.loss.detach().clone());
      targets.push_back(s.batch.target().clone());
    }
  }
  std::vector<int64_t> widths;
  std::vector<at::Tensor> outputs, losses, targets, permuted;
  AlgorithmSpec spec_;
};

TEST(CutMix, InTheTrainerTheLossIsInterpolatedWithTheBoxLambda) {
  Components c = testing::small_cnn_components();
  auto cutmix = std::make_shared<CutMix>();
  auto probe = std::make_shared<Probe>();
  c.algorithms = {probe, cutmix};
  Trainer t(TrainerOptions().max_duration(Time::parse("2ba")).threads(1), std::move(c));
  t.fit();
  ASSERT_EQ(probe->losses.size(), 2u);
  const CutMixBox& box = cutmix->last_box();
  EXPECT_EQ(cutmix->last_lambda(), 1.0 - static_cast<double>(box.height * box.width) / 256.0);
  const at::Tensor& out = probe->outputs[1];
  const at::Tensor hand = cross_entropy(out, probe->targets[1]) * cutmix->last_lambda() +
                          cross_entropy(out, probe->permuted[1]) * (1.0 - cutmix->last_lambda());
  EXPECT_TRUE(at::equal(probe->losses[1], hand)) << probe->losses[1] << " vs " << hand;
  EXPECT_TRUE(at::equal(probe->permuted[1], probe->targets[1].index_select(0, cutmix->last_indices())));
}

TEST(CutMix, TheBoxIsDrawnOnTheResizedImages) {
  Components c = testing::small_cnn_components();
  auto pr = std::make_shared<ProgressiveResizing>(
      ProgressiveResizingOptions().initial_scale(0.5).delay_fraction(1).finetune_fraction(0));
  auto cutmix = std::make_shared<CutMix>();
  auto probe = std::make_shared<Probe>();
  c.algorithms = {probe, cutmix, pr};  // recipe order puts cutmix before resizing; the declared order puts it after resizing
  Trainer t(TrainerOptions().max_duration(Time::parse("4ba")).threads(1), std::move(c));
  EXPECT_EQ(t.plan().at(Event::AfterDataloader)[0].algorithm->name(), "progressive_resizing");
  EXPECT_EQ(t.plan().at(Event::AfterDataloader)[1].algorithm->name(), "cutmix");
  EXPECT_THAT(t.plan().table(), HasSubstr("cutmix after writers of resolution: its box is drawn on the final input size"));
  t.fit();
  EXPECT_EQ(probe->widths, (std::vector<int64_t>{8, 8, 8, 8}));
  const CutMixBox& box = cutmix->last_box();
  EXPECT_LE(box.top + box.height, 8);
  EXPECT_LE(box.left + box.width, 8);
  EXPECT_EQ(cutmix->last_lambda(), 1.0 - static_cast<double>(box.height * box.width) / 64.0);
}

TEST(CutMix, PlanTimeChecksNameTheProblem) {
  {  // flat inputs
    Components c = testing::tiny_components(32, 8);
    auto ds = std::make_shared<data::TensorDataset>(at::zeros({16, 16}), at::zeros({16}, at::kLong), 3);
    c.train_dataloader = testing::loader(ds, 8);
    c.algorithms = {std::make_shared<CutMix>()};
    EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
                HasSubstr("cutmix: cutmix pastes a box between images and needs image inputs [C, H, W] per example; "
                          "the training data has inputs of shape [16] per example"));
  }
  {  // per-pixel targets
    Components c = testing::small_cnn_components();
    auto ds = std::make_shared<data::TensorDataset>(at::zeros({16, 1, 16, 16}), at::zeros({16, 16, 16}, at::kLong), 4);
    c.train_dataloader = testing::loader(ds, 8);
    c.algorithms = {std::make_shared<CutMix>()};
    EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
                HasSubstr("per-pixel targets would need the box pasted into them too"));
  }
}

}  // namespace
}  // namespace tessera::algorithms
