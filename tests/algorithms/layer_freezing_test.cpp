// Layer freezing: depth at each epoch, optimizer groups and state after freezing, frozen weights unchanged,
// and state_dict round trips that re-freeze a fresh model.
#include <gtest/gtest.h>

#include <tessera/algorithms/layer_freezing.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

TEST(LayerFreezing, DepthFormula) {
  // L = 5 layers -> at most 4 frozen; freeze_start 0.5, level 1
  EXPECT_EQ(freeze_depth(0.5, 5, 0.5, 1.0), 0);
  EXPECT_EQ(freeze_depth(0.75, 5, 0.5, 1.0), 2);   // phi 0.5 -> floor(0.5 * 4)
  EXPECT_EQ(freeze_depth(1.0, 5, 0.5, 1.0), 4);
  EXPECT_EQ(freeze_depth(1.0, 5, 0.5, 0.5), 2);
  EXPECT_EQ(freeze_depth(0.6, 5, 0.5, 1.0), 0);    // phi 0.2 -> floor(0.8)
  EXPECT_EQ(freeze_depth(1.0, 1, 0.0, 1.0), 0);
  // An exact boundary in floating point: after epoch 1 of 3, start 0.2, 7 layers: (1/3 - 0.2)/0.8 * 6 = 1.
  EXPECT_EQ(freeze_depth(1.0 / 3.0, 7, 0.2, 1.0), 1);
}

TEST(LayerFreezing, LayersAreParameterOwningLeavesDepthFirst) {
  CNN cnn(CNNOptions().in_channels(1).num_classes(10).width(4));
  auto layers = freezable_layers(cnn);
  // conv1, bn1, conv2, bn2, conv3, bn3, fc in registration order (the pool owns no parameters)
  ASSERT_EQ(layers.size(), 7u);
  EXPECT_NE(layers[0]->as<torch::nn::Conv2dImpl>(), nullptr);
  EXPECT_NE(layers[6]->as<torch::nn::LinearImpl>(), nullptr);
  for (const auto& l : layers) EXPECT_TRUE(l->children().empty());
}

TEST(LayerFreezing, FreezesAtEpochEndRemovesFromOptimizerAndKeepsWeights) {
  Components c = testing::tiny_components(16, 8);  // 2 batches per epoch; tiny net: fc1, fc2
  auto algo = std::make_shared<LayerFreezing>(LayerFreezingOptions().freeze_start(0.0).freeze_level(1.0));
  c.algorithms = {algo};
  auto model = c.model;
  auto opt = c.optimizer;
  Trainer t(TrainerOptions().max_duration(Time::parse("4ep")).threads(1), std::move(c));
  // After epoch 1: e = 0.25 -> phi 0.25 -> floor(0.25 * 1) = 0; epoch 4: e = 1 -> 1 layer (fc1)
  t.fit();
  EXPECT_EQ(algo->frozen_depth(), 1);
  auto layers = freezable_layers(*model);
  ASSERT_EQ(layers.size(), 2u);
  for (const auto& p : layers[0]->parameters()) {
    EXPECT_FALSE(p.requires_grad());
    EXPECT_FALSE(opt->contains(p));
    EXPECT_EQ(opt->state_of(p), nullptr);
  }
  for (const auto& p : layers[1]->parameters()) EXPECT_TRUE(opt->contains(p));
}

TEST(LayerFreezing, FrozenWeightsStayBitwiseUnchanged) {
  Components c = testing::tiny_components(16, 8);
  c.algorithms = {std::make_shared<LayerFreezing>(LayerFreezingOptions().freeze_start(0.0).freeze_level(1.0))};
  auto model = c.model;
  Trainer t(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  // Freeze by hand first, then train: fc1 must not move at all (no momentum, no weight decay).
  freeze_layers(*model, t.state().optimizer.get(), 1);
  auto fc1 = freezable_layers(*model)[0]->parameters();
  std::vector<at::Tensor> before;
  for (const auto& p : fc1) before.push_back(p.detach().clone());
  t.fit();
  for (size_t i = 0; i < fc1.size(); ++i) EXPECT_TRUE(at::equal(before[i], fc1[i]));
}

TEST(LayerFreezing, StateDictRoundTripRefreezesAFreshModel) {
  LayerFreezing a;
  State s;
  s.model = testing::tiny_model();
  s.optimizer = std::make_shared<optim::SGD>(s.model->parameters(), optim::SGDOptions());
  s.time.max_duration = Time::parse("2ep");
  s.timestamp.epoch = 2;  // e = 1
  Logger logger;
  a.apply(Event::EpochEnd, s, logger);
  ASSERT_EQ(a.frozen_depth(), 1);
  StateDict saved = a.state_dict();

  LayerFreezing b;
  b.load_state_dict(saved);
  State fresh;
  fresh.model = testing::tiny_model();
  fresh.optimizer = std::make_shared<optim::SGD>(fresh.model->parameters(), optim::SGDOptions());
  b.apply(Event::AfterLoad, fresh, logger);
  auto layers = freezable_layers(*fresh.model);
  for (const auto& p : layers[0]->parameters()) EXPECT_FALSE(fresh.optimizer->contains(p));
  EXPECT_EQ(fresh.optimizer->param_groups()[0].params.size(), 2u);  // fc2 weight and bias
  EXPECT_THROW(b.load_state_dict({}), InputError);
  EXPECT_TRUE(a.spec().leaves_parameters_unused);
}

}  // namespace
}  // namespace tessera::algorithms
