// AugMix: the Dirichlet and Beta weights, the mix against a hand computation, the per-example generators, the
// transform in the DataLoader (a pure function of (seed, epoch, batch)), the warning beside RandAugment (both run, in
// recipe order), and the checks of its options and data.
#include <cmath>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tessera/algorithms/augmix.h>
#include <tessera/algorithms/mixup.h>
#include <tessera/algorithms/randaugment.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

using ::testing::HasSubstr;

TEST(AugMix, WeightsAreDirichletChainsThenABetaSkip) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Rng rng(seed), copy(seed);
    const AugMixWeights w = augmix_weights(3, 1.0, rng);
    ASSERT_EQ(w.chains.size(), 3u);
    // by hand: three log-Gamma(1) draws normalized, then Beta(1, 1) from the same generator
    std::vector<double> g;
    for (int k = 0; k < 3; ++k) g.push_back(std::exp(log_gamma_sample(1.0, copy)));
    const double sum = g[0] + g[1] + g[2];
    for (int k = 0; k < 3; ++k) EXPECT_NEAR(w.chains[static_cast<size_t>(k)], g[static_cast<size_t>(k)] / sum, 1e-12);
    EXPECT_EQ(w.mix, sample_mixing(1.0, copy));
    EXPECT_EQ(rng, copy);
    EXPECT_GE(w.mix, 0.0);
    EXPECT_LE(w.mix, 1.0);
  }
  // a tiny alpha (Gamma(0.01) draws of order e^-100, normalized in log space): finite weights summing to 1
  Rng rng(1);
  const AugMixWeights sparse = augmix_weights(4, 0.01, rng);
  double total = 0;
  for (double c : sparse.chains) {
    EXPECT_TRUE(std::isfinite(c) && c >= 0);
    total += c;
  }
  EXPECT_NEAR(total, 1.0, 1e-12);
  EXPECT_THAT(testing::input_error_of([&] { augmix_weights(0, 1.0, rng); }),
              HasSubstr("augmix_weights.width: 0 is out of range; expected a number >= 1"));
  EXPECT_THAT(testing::input_error_of([&] { augmix_weights(3, 0.0, rng); }),
              HasSubstr("augmix_weights.alpha: 0 is out of range; expected a number > 0"));
}

TEST(AugMix, TheImageIsItsMixWithTheWeightedChains) {
  // With one deterministic, idempotent operation every chain is autocontrast(x), whatever its depth: the image
  // becomes (1 - m)·x + m·autocontrast(x), the chain weights summing to 1.
  const at::Tensor x = at::rand({1, 6, 6}, at::TensorOptions(at::kFloat)).mul_(0.5).add_(0.25);
  const at::Tensor stretched = augment::autocontrast(x);
  for (int64_t depth : {-1, 1, 2}) {
    Rng rng(9), copy(9);
    const at::Tensor got = augmix_image(x, 3, depth, 3, 1.0, {"autocontrast"}, rng);
    const AugMixWeights w = augmix_weights(3, 1.0, copy);
    EXPECT_TRUE(at::allclose(got, x * (1 - w.mix) + stretched * w.mix, 0, 1e-6)) << depth;
  }
  // Two operations, depth 1: by hand, chain k applies the operation drawn for it with the same generator.
  Rng rng(4), copy(4);
  const std::vector<std::string> ops{"brightness_original", "solarize"};
  const at::Tensor got = augmix_image(x, 5, 1, 2, 0.5, ops, rng);
  const AugMixWeights w = augmix_weights(2, 0.5, copy);
  at::Tensor mixed = at::zeros_like(x);
  for (double wk : w.chains) mixed += augment::apply(ops[copy.below(2)], x, 5, copy) * wk;
  EXPECT_TRUE(at::allclose(got, x * (1 - w.mix) + mixed * w.mix, 0, 1e-6));
  EXPECT_EQ(rng, copy);
  // a random depth draws 1..3 per chain, after the weights
  Rng r(2), c(2);
  (void)augmix_image(x, 5, -1, 2, 1.0, ops, r);
  (void)augmix_weights(2, 1.0, c);
  for (int k = 0; k < 2; ++k) {
    const uint64_t depth = 1 + c.below(3);
    for (uint64_t d = 0; d < depth; ++d) (void)augment::apply(ops[c.below(2)], x, 5, c);
  }
  EXPECT_EQ(r, c);
}

TEST(AugMix, EachExampleHasItsOwnGeneratorAndStaysInTheUnitInterval) {
  const at::Tensor x = at::rand({4, 3, 8, 8}, at::TensorOptions(at::kFloat));
  const auto& ops = augmentation_set("all");
  Rng rng(5);
  const Rng before = rng;
  const at::Tensor out = augmix_images(x, 3, -1, 3, 1.0, ops, rng);
  EXPECT_EQ(rng, before);
  ASSERT_EQ(out.sizes(), x.sizes());
  for (int64_t i = 0; i < 4; ++i) {
    Rng example = before.derive({static_cast<uint64_t>(i)});
    EXPECT_TRUE(at::equal(out[i], augmix_image(x[i], 3, -1, 3, 1.0, ops, example))) << i;
  }
  EXPECT_GE(out.min().item<float>(), 0.f);
  EXPECT_LE(out.max().item<float>(), 1.f + 1e-6f);
  EXPECT_FALSE(at::equal(out, x));
  EXPECT_THAT(testing::input_error_of([&] { augmix_image(x[0], 3, 0, 3, 1.0, ops, rng); }),
              HasSubstr("augmix_image.depth: 0; expected -1 (a random 1 to 3 per chain) or a depth >= 1"));
  EXPECT_THAT(testing::input_error_of([&] { augmix_images(x[0], 3, 1, 3, 1.0, ops, rng); }),
              HasSubstr("augmix_images.images: expected images [N, C, H, W], got [3, 8, 8]"));
}

TEST(AugMix, InTheDataLoaderABatchIsAPureFunctionOfSeedEpochAndBatch) {
  auto ds = testing::unit_interval(
      *data::make_synthetic(data::SyntheticOptions().size(24).input_shape({1, 8, 8}).num_classes(3)));
  auto a = testing::loader(ds, 8, true, 0), b = testing::loader(ds, 8, true, 2);
  for (auto& l : {a, b}) ASSERT_TRUE(l->set_algorithm_transforms({AugMix().data_transform()}));
  std::vector<at::Tensor> full;
  a->start_epoch(7, 2);
  while (auto batch = a->next()) full.push_back(batch->input());
  ASSERT_EQ(full.size(), 3u);
  b->start_epoch(7, 2, 1);
  EXPECT_TRUE(at::equal(b->next()->input(), full[1]));
  EXPECT_TRUE(at::equal(b->next()->input(), full[2]));
  const at::Tensor raw = ds->get_batch(a->batch_indices(7, 2, 2)).input();
  Rng own = Rng(7, {kAlgorithmStream, kTransformStream, 2, 2}).derive({0xa06417ULL});
  EXPECT_TRUE(at::equal(full[2], augmix_images(raw, 3, -1, 3, 1.0, augmentation_set("all"), own)));
}

TEST(AugMix, BesideRandAugmentBothRunInRecipeOrderWithAWarning) {
  auto ds = testing::unit_interval(
      *data::make_synthetic(data::SyntheticOptions().size(16).input_shape({1, 8, 8}).num_classes(3)));
  auto l = testing::loader(ds, 8);
  Components c;
  at::manual_seed(0);
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(3).width(4));
  c.train_dataloader = l;
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.05));
  auto am = std::make_shared<AugMix>(AugMixOptions().width(2));
  auto ra = std::make_shared<RandAugment>(RandAugmentOptions().depth(1));
  c.algorithms = {am, ra};
  Trainer t(TrainerOptions().max_duration(Time::parse("2ba")).threads(1), std::move(c));
  ASSERT_EQ(l->algorithm_transforms().size(), 2u);
  EXPECT_EQ(l->algorithm_transforms()[0]->name(), "augmix");
  EXPECT_EQ(l->algorithm_transforms()[1]->name(), "randaugment");
  ASSERT_EQ(t.plan().warnings().size(), 1u);
  EXPECT_THAT(t.plan().warnings()[0], HasSubstr("both augment every image in the data pipeline"));
  t.fit();
  EXPECT_EQ(t.trace().at("augmix/before_dataloader").count, 2);
}

TEST(AugMix, OptionsAndDataAreChecked) {
  EXPECT_THAT(testing::input_error_of([] { AugMix(AugMixOptions().depth(0)); }),
              HasSubstr("augmix.depth: 0; expected -1 (a random 1 to 3 per chain) or a depth >= 1"));
  EXPECT_THAT(testing::input_error_of([] { AugMix(AugMixOptions().depth(-2)); }),
              HasSubstr("augmix.depth: -2 is out of range; expected a number >= -1"));
  EXPECT_THAT(testing::input_error_of([] { AugMix(AugMixOptions().alpha(0)); }),
              HasSubstr("augmix.alpha: 0 is out of range; expected a number > 0"));
  Components c;
  at::manual_seed(0);
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(3).width(4));
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(16).input_shape({1, 8, 8}).num_classes(3)), 8);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.05));
  c.algorithms = {std::make_shared<AugMix>()};
  EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
              HasSubstr("augmix augments images with intensities in [0, 1]"));
}

}  // namespace
}  // namespace tessera::algorithms
