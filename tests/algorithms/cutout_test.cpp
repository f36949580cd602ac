// CutOut: the hole side and positions against hand computation, the zeroed pixels, the trainer's batches (holes
// in every image, targets unchanged, draws a pure function of (seed, batch)), the order after progressive resizing,
// commuting with MixUp and CutMix, and the plan-time checks.
#include <algorithm>
#include <array>
#include <tuple>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tessera/algorithms/cutmix.h>
#include <tessera/algorithms/cutout.h>
#include <tessera/algorithms/mixup.h>
#include <tessera/algorithms/progressive_resizing.h>

#include "image_batch_support.h"
#include "support.h"

namespace tessera::algorithms {
namespace {

using ::testing::HasSubstr;

TEST(CutOut, HoleSide) {
  EXPECT_EQ(cutout_length(28, 28, 0.5), 14);
  EXPECT_EQ(cutout_length(10, 6, 0.5), 3);   // a fraction of the shorter side
  EXPECT_EQ(cutout_length(10, 6, 0.99), 5);  // ⌊5.94⌋
  EXPECT_EQ(cutout_length(8, 8, 1.0), 1);    // from 1 on: pixels
  EXPECT_EQ(cutout_length(8, 8, 3.7), 3);
  EXPECT_EQ(cutout_length(8, 8, 20), 20);  // larger than the image: clipped when placed
  EXPECT_THAT(testing::input_error_of([] { cutout_length(8, 8, 0); }), HasSubstr("cutout_length.length: 0 is out of range"));
  EXPECT_THAT(testing::input_error_of([] { cutout_length(0, 8, 0.5); }), HasSubstr("the image is 0x8"));
}

TEST(CutOut, HolePositionsForAFixedSeed) {
  // Each hole: centre column cx = below(W), then row cy = below(H); sides ±⌊l/2⌋ clipped.
  Rng rng(5), copy(5);
  const std::vector<CutOutHole> holes = cutout_holes(8, 12, 3, 4, rng);
  ASSERT_EQ(holes.size(), 3u);
  for (const CutOutHole& h : holes) {
    const auto cx = static_cast<int64_t>(copy.below(12)), cy = static_cast<int64_t>(copy.below(8));
    EXPECT_EQ(h.left, std::clamp<int64_t>(cx - 2, 0, 12));
    EXPECT_EQ(h.left + h.width, std::clamp<int64_t>(cx + 2, 0, 12));
    EXPECT_EQ(h.top, std::clamp<int64_t>(cy - 2, 0, 8));
    EXPECT_EQ(h.top + h.height, std::clamp<int64_t>(cy + 2, 0, 8));
  }
  EXPECT_EQ(rng, copy);
  // pinned: the project's generator is portable, so these are the holes of seed 5 on every platform (two draws
  // happen to coincide)
  std::vector<std::array<int64_t, 4>> got;
  for (const CutOutHole& h : holes) got.push_back({h.top, h.left, h.height, h.width});
  EXPECT_EQ(got, (std::vector<std::array<int64_t, 4>>{{0, 2, 2, 4}, {0, 2, 2, 4}, {2, 1, 4, 4}}));
  // uniform sampling: centres over the grown image, so holes may be clipped on any side, never outside
  Rng r(2);
  bool clipped_left = false, clipped_bottom = false;
  for (int i = 0; i < 500; ++i) {
    const CutOutHole h = cutout_holes(8, 8, 1, 4, r, /*uniform_sampling=*/true)[0];
    ASSERT_GE(h.top, 0);
    ASSERT_GE(h.left, 0);
    ASSERT_LE(h.top + h.height, 8);
    ASSERT_LE(h.left + h.width, 8);
    clipped_left |= h.left == 0 && h.width < 4;
    clipped_bottom |= h.top + h.height == 8 && h.height < 4;
  }
  EXPECT_TRUE(clipped_left && clipped_bottom);
  EXPECT_THAT(testing::input_error_of([&] { cutout_holes(8, 8, 0, 4, r); }), HasSubstr("cutout_holes.num_holes: 0"));
}

TEST(CutOut, CutoutBatchZeroesTheHolesInEveryImageAndChannel) {
  const at::Tensor x = at::arange(1, 2 * 3 * 5 * 6 + 1, at::kFloat).view({2, 3, 5, 6});
  // two overlapping holes: rows 1..2 x columns 1..3, rows 2..4 x columns 3..4
  const std::vector<CutOutHole> holes{{1, 1, 2, 3}, {2, 3, 3, 2}};
  const at::Tensor cut = cutout_batch(x, holes);
  at::Tensor expected = x.clone();
  for (int64_t row = 0; row < 5; ++row) {
    for (int64_t col = 0; col < 6; ++col) {
      const bool in = (row >= 1 && row < 3 && col >= 1 && col < 4) || (row >= 2 && row < 5 && col >= 3 && col < 5);
      if (in) expected.select(2, row).select(2, col).zero_();
    }
  }
  EXPECT_TRUE(at::equal(cut, expected)) << cut;
  // mask area: the union of the holes, 6 + 6 − 1 = 11 pixels, in each of the 2·3 planes
  EXPECT_EQ(cut.eq(0).sum().item<int64_t>(), 11 * 6);
  EXPECT_TRUE(at::equal(x, at::arange(1, 181, at::kFloat).view({2, 3, 5, 6}))) << "the input is not changed in place";
  // any dtype, any leading dimensions
  const at::Tensor bytes = at::full({5, 6}, 7, at::kByte);
  EXPECT_EQ(cutout_batch(bytes, holes).eq(0).sum().item<int64_t>(), 11);
  // the drawing form: the side from `length`, then the holes
  Rng rng(3), copy(3);
  const at::Tensor drawn = cutout_batch(x, 2, 0.4, rng);
  EXPECT_TRUE(at::equal(drawn, cutout_batch(x, cutout_holes(5, 6, 2, 2, copy))));
  // errors name the argument
  EXPECT_THAT(testing::input_error_of([&] { cutout_batch(x, {{4, 0, 2, 1}}); }),
              HasSubstr("cutout_batch.holes: rows [4, 6) x columns [0, 1) is not inside the 5x6 images"));
  EXPECT_THAT(testing::input_error_of([&] { cutout_batch(at::zeros({4}), holes); }),
              HasSubstr("cutout_batch.input: expected images [..., H, W], got [4]"));
  EXPECT_THAT(testing::input_error_of([] { CutOut(CutOutOptions().num_holes(0)); }), HasSubstr("cutout.num_holes"));
  EXPECT_THAT(testing::input_error_of([] { CutOut(CutOutOptions().length(-1)); }), HasSubstr("cutout.length"));
}

TEST(CutOut, InTheTrainerEveryImageGetsTheBatchHolesAndTheTargetsAreUnchanged) {
  auto run = [] {
    Components c = testing::small_cnn_components();
    auto cutout = std::make_shared<CutOut>(CutOutOptions().num_holes(2).length(0.25));
    auto after = std::make_shared<testing::BatchProbe>("after");
    auto before = std::make_shared<testing::BatchProbe>("before");
    c.algorithms = {after, cutout, before};
    Trainer t(TrainerOptions().max_duration(Time::parse("4ba")).threads(1), std::move(c));
    EXPECT_EQ(t.plan().at(Event::AfterDataloader)[1].algorithm->name(), "cutout");
    t.fit();
    return std::make_tuple(cutout, after, before);
  };
  auto [cutout, after, before] = run();
  ASSERT_EQ(after->inputs.size(), 4u);
  for (size_t b = 0; b < 4; ++b) {
    EXPECT_TRUE(at::equal(after->targets[b], before->targets[b])) << "batch " << b;
  }
  const std::vector<CutOutHole>& holes = cutout->last_holes();
  ASSERT_EQ(holes.size(), 2u);
  for (const CutOutHole& h : holes) {
    EXPECT_LE(h.height, 4);  // ⌊0.25·16⌋ = 4, clipped at the borders
    EXPECT_LE(h.width, 4);
    EXPECT_TRUE(at::equal(after->inputs[3].narrow(2, h.top, h.height).narrow(3, h.left, h.width),
                          at::zeros({8, 1, h.height, h.width})));
  }
  EXPECT_TRUE(at::equal(after->inputs[3], cutout_batch(before->inputs[3], holes)));
  // a pure function of (seed, batch): a second run cuts the same holes; the batches differ from one another
  auto [again, after2, before2] = run();
  for (size_t b = 0; b < 4; ++b) EXPECT_TRUE(at::equal(after->inputs[b], after2->inputs[b])) << "batch " << b;
  const at::Tensor zeros0 = after->inputs[0].eq(0) & before->inputs[0].ne(0);
  const at::Tensor zeros1 = after->inputs[1].eq(0) & before->inputs[1].ne(0);
  EXPECT_FALSE(at::equal(zeros0[0], zeros1[0])) << "holes are drawn per batch";
}

TEST(CutOut, TheHolesAreDrawnOnTheResizedImages) {
  Components c = testing::small_cnn_components();
  auto pr = std::make_shared<ProgressiveResizing>(
      ProgressiveResizingOptions().initial_scale(0.5).delay_fraction(1).finetune_fraction(0));
  auto cutout = std::make_shared<CutOut>(CutOutOptions().length(0.5));
  auto after = std::make_shared<testing::BatchProbe>("after");
  c.algorithms = {after, cutout, pr};  // recipe order puts cutout before resizing; the declared order after it
  Trainer t(TrainerOptions().max_duration(Time::parse("2ba")).threads(1), std::move(c));
  EXPECT_EQ(t.plan().at(Event::AfterDataloader)[0].algorithm->name(), "progressive_resizing");
  EXPECT_EQ(t.plan().at(Event::AfterDataloader)[1].algorithm->name(), "cutout");
  EXPECT_THAT(t.plan().table(), HasSubstr("cutout after writers of resolution: its holes are drawn in pixels of the "
                                          "final input size"));
  t.fit();
  EXPECT_EQ(after->inputs.back().size(3), 8);
  for (const CutOutHole& h : cutout->last_holes()) {
    EXPECT_LE(h.width, 4);  // ⌊0.5·8⌋ on the resized side, not ⌊0.5·16⌋
    EXPECT_LE(h.left + h.width, 8);
  }
}

TEST(CutOut, CommutesWithMixUpAndCutMixSoNoOrderIsDeclared) {
  // The holes are the same for every image, and both mixers combine pixels at the same position across images
  // (MixUp: λ·0 + (1 − λ)·0 = 0; CutMix pastes a partner's pixels, zero in the hole too): zeroing before or after
  // the mix gives the same batch, so both orders train to the same parameters, bitwise.
  for (const std::string mixer : {"mixup", "cutmix"}) {
    auto train = [&mixer](bool cutout_first) {  // after_dataloader runs in reverse recipe order
      Components c = testing::small_cnn_components();
      auto model = c.model;
      std::shared_ptr<Algorithm> cutout = std::make_shared<CutOut>(CutOutOptions().num_holes(3));
      std::shared_ptr<Algorithm> mix = mixer == "mixup" ? std::shared_ptr<Algorithm>(std::make_shared<MixUp>(MixUpOptions().alpha(1.0)))
                                                        : std::shared_ptr<Algorithm>(std::make_shared<CutMix>());
      c.algorithms = cutout_first ? std::vector<std::shared_ptr<Algorithm>>{mix, cutout}
                                  : std::vector<std::shared_ptr<Algorithm>>{cutout, mix};
      Trainer t(TrainerOptions().max_duration(Time::parse("3ba")).threads(1), std::move(c));
      EXPECT_EQ(t.plan().at(Event::AfterDataloader)[0].algorithm->name(), cutout_first ? "cutout" : mixer);
      t.fit();
      return model->parameters();
    };
    const auto a = train(true), b = train(false);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << mixer << ", parameter " << i;
  }
}

TEST(CutOut, PlanTimeCheckNamesTheProblem) {
  Components c = testing::tiny_components(32, 8);
  auto ds = std::make_shared<data::TensorDataset>(at::zeros({16, 16}), at::zeros({16}, at::kLong), 3);
  c.train_dataloader = testing::loader(ds, 8);
  c.algorithms = {std::make_shared<CutOut>()};
  EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
              HasSubstr("cutout zeroes square holes of images and needs image inputs [C, H, W] per example; the "
                        "training data has inputs of shape [16] per example"));
}

}  // namespace
}  // namespace tessera::algorithms
