// Stochastic depth: drop rates by depth and warmup, the gate against a hand computation with the same draws, the
// residual gate slot of BasicBlock (no state-dict key, default output unchanged), a dropped branch not computed in
// block mode, surgery on ResNet and the GPT (a whole block), drop frequencies,
// determinism per (seed, batch), and the plan-time refusal on a model without residual blocks.
#include <gtest/gtest.h>

#include <tessera/algorithms/stochastic_depth.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

TEST(StochasticDepth, DropRatesGrowLinearlyWithDepthOrAreUniform) {
  const auto linear = stochastic_depth_drop_rates(4, 0.2, "linear");
  ASSERT_EQ(linear.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(linear[static_cast<size_t>(i)], (i + 1) / 4.0 * 0.2) << i;
  EXPECT_DOUBLE_EQ(linear.back(), 0.2) << "the last block gets drop_rate";
  for (double p : stochastic_depth_drop_rates(3, 0.3, "uniform")) EXPECT_DOUBLE_EQ(p, 0.3);
  EXPECT_THROW(stochastic_depth_drop_rates(0, 0.2, "linear"), InputError);
  EXPECT_THROW(stochastic_depth_drop_rates(2, 1.5, "linear"), InputError);
  EXPECT_THROW(stochastic_depth_drop_rates(2, 0.2, "quadratic"), InputError);
}

TEST(StochasticDepth, WarmupRampsTheRateFromZero) {
  EXPECT_DOUBLE_EQ(stochastic_depth_warmup_rate(0.2, 0.5, 0.0), 0.0);
  EXPECT_DOUBLE_EQ(stochastic_depth_warmup_rate(0.2, 0.5, 0.25), 0.1);
  EXPECT_DOUBLE_EQ(stochastic_depth_warmup_rate(0.2, 0.5, 0.5), 0.2);
  EXPECT_DOUBLE_EQ(stochastic_depth_warmup_rate(0.2, 0.5, 0.9), 0.2);
  EXPECT_DOUBLE_EQ(stochastic_depth_warmup_rate(0.2, 0.0, 0.0), 0.2) << "no warmup";
}

TEST(StochasticDepth, GateMatchesHandComputationWithTheSameDraws) {
  at::manual_seed(0);
  const at::Tensor branch = at::randn({6, 2, 3, 3});
  // Block mode: one draw; kept iff floor(1 - p + u) = 1.
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Rng rng(seed), copy(seed);
    const at::Tensor y = stochastic_depth(branch, 0.4, "block", /*training=*/true, rng);
    const bool keep = std::floor((1.0 - 0.4) + copy.uniform()) >= 1.0;
    EXPECT_TRUE(at::equal(y, keep ? branch : at::zeros_like(branch))) << seed;
    EXPECT_EQ(rng, copy) << "one draw per forward";
  }
  // Sample mode: one draw per example, in order.
  Rng rng(5), copy(5);
  const at::Tensor y = stochastic_depth(branch, 0.5, "sample", /*training=*/true, rng);
  int kept = 0;
  for (int64_t n = 0; n < 6; ++n) {
    const double m = std::floor((1.0 - 0.5) + copy.uniform());
    kept += static_cast<int>(m);
    EXPECT_TRUE(at::equal(y[n], branch[n] * m)) << n;
  }
  EXPECT_EQ(rng, copy);
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 6) << "this seed drops some examples and keeps others";
  // Evaluation: scaled by the survival probability; p = 0 passes the branch itself.
  Rng unused(0);
  EXPECT_TRUE(at::equal(stochastic_depth(branch, 0.25, "sample", false, unused), branch * 0.75));
  EXPECT_TRUE(stochastic_depth(branch, 0.0, "block", false, unused).is_same(branch));
  EXPECT_EQ(unused, Rng(0)) << "no draw in evaluation";
  // p = 0 in training keeps everything bitwise.
  EXPECT_TRUE(stochastic_depth(branch, 0.0, "block", true, unused).is_same(branch));
  EXPECT_TRUE(at::equal(stochastic_depth(branch, 0.0, "sample", true, unused), branch));
  EXPECT_THROW(stochastic_depth(branch, 0.2, "layer", true, unused), InputError);
  EXPECT_THROW(stochastic_depth(branch, -0.1, "block", true, unused), InputError);
}

TEST(StochasticDepth, DropFrequencyMatchesTheRate) {
  const at::Tensor branch = at::ones({1, 1});
  for (double p : {0.1, 0.5, 0.9}) {
    StochasticDepthGate gate("block", p, Rng(11));
    gate->train();
    int dropped = 0;
    for (int i = 0; i < 4000; ++i) dropped += gate->forward(branch).item<float>() == 0.f ? 1 : 0;
    EXPECT_NEAR(dropped / 4000.0, p, 0.03) << p;
  }
  StochasticDepthGate sample("sample", 0.3, Rng(12));
  sample->train();
  const double kept = sample->forward(at::ones({20000, 1})).mean().item<double>();
  EXPECT_NEAR(kept, 0.7, 0.02) << "no rescale of the kept examples (as Composer)";
}

TEST(StochasticDepth, ResidualGateSlotChangesNoKeyAndNoOutput) {
  at::manual_seed(3);
  BasicBlock block(4, 4, 1);
  EXPECT_NE(block.slot("residual_gate").ptr()->as<torch::nn::IdentityImpl>(), nullptr);
  for (const auto& key : block.named_parameters().keys()) EXPECT_EQ(key.find("residual_gate"), std::string::npos);
  for (const auto& key : block.named_buffers().keys()) EXPECT_EQ(key.find("residual_gate"), std::string::npos);
  const at::Tensor x = at::randn({2, 4, 5, 5});
  block.train();
  // The block by hand: relu(bn2(conv2(relu(bn1(conv1(x))))) + x), with a copy of the batch norms' state.
  auto conv1 = block.slot("conv1").ptr()->as<torch::nn::Conv2dImpl>();
  auto conv2 = block.slot("conv2").ptr()->as<torch::nn::Conv2dImpl>();
  auto bn1 = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(block.slot("bn1").ptr()->clone());
  auto bn2 = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(block.slot("bn2").ptr()->clone());
  const at::Tensor expected = (bn2->forward(conv2->forward(bn1->forward(conv1->forward(x)).relu())) + x).relu();
  EXPECT_TRUE(at::equal(block.forward(x), expected)) << "bitwise the block without a gate";
  // Dropping the whole branch leaves relu(x).
  block.replace_slot("residual_gate", torch::nn::AnyModule(StochasticDepthGate("block", 1.0)));
  EXPECT_TRUE(at::equal(block.forward(x), x.relu()));
  block.eval();
  EXPECT_TRUE(at::equal(block.forward(x), x.relu())) << "evaluation scales the branch by 1 - p = 0";
}

TEST(StochasticDepth, BlockModeDoesNotComputeADroppedBranch) {
  at::manual_seed(5);
  for (const bool projection : {false, true}) {
    SCOPED_TRACE(projection ? "projection shortcut" : "identity shortcut");
    BasicBlock block(4, projection ? 8 : 4, projection ? 2 : 1);
    block.train();
    const at::Tensor x = at::randn({2, 4, 6, 6}).requires_grad_(true);
    block.replace_slot("residual_gate", torch::nn::AnyModule(StochasticDepthGate("block", 1.0)));
    auto shortcut_bn = projection ? std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(
                                        block.slot("shortcut_bn").ptr()->clone())
                                  : nullptr;
    const at::Tensor expected =
        projection ? shortcut_bn->forward(block.slot("shortcut_conv").forward(x)).relu() : x.relu();
    auto* bn1 = block.slot("bn1").ptr()->as<torch::nn::BatchNorm2dImpl>();
    auto* bn2 = block.slot("bn2").ptr()->as<torch::nn::BatchNorm2dImpl>();
    const at::Tensor mean1 = bn1->running_mean.clone(), var2 = bn2->running_var.clone();
    const at::Tensor y = block.forward(x);
    EXPECT_TRUE(at::equal(y, expected)) << "the shortcut alone";
    y.sum().backward();
    for (const char* layer : {"conv1", "bn1", "conv2", "bn2"}) {
      for (const auto& p : block.slot(layer).ptr()->parameters()) EXPECT_FALSE(p.grad().defined()) << layer;
    }
    EXPECT_TRUE(at::equal(bn1->running_mean, mean1)) << "the dropped branch's batch norms keep their statistics";
    EXPECT_TRUE(at::equal(bn2->running_var, var2));
    EXPECT_EQ(bn1->num_batches_tracked.item<int64_t>(), 0);
    EXPECT_TRUE(x.grad().defined()) << "the gradient flows through the shortcut";
    if (projection) {
      for (const auto& p : block.slot("shortcut_conv").ptr()->parameters()) EXPECT_TRUE(p.grad().defined());
    }
  }
  // Over many forwards at p = 0.5 the block drops exactly where the functional form, drawing from the same stream,
  // gives a zero branch; a kept branch is computed (and passed through unchanged: one draw per forward).
  BasicBlock block(4, 4, 1);
  block.train();
  const at::Tensor x = at::randn({2, 4, 5, 5});
  block.replace_slot("residual_gate", torch::nn::AnyModule(StochasticDepthGate("block", 0.5, Rng(7, {1}))));
  auto* bn1 = block.slot("bn1").ptr()->as<torch::nn::BatchNorm2dImpl>();
  Rng reference(7, {1});
  int dropped = 0;
  for (int i = 0; i < 40; ++i) {
    const bool keep = stochastic_depth(at::ones({1}), 0.5, "block", true, reference).item<float>() == 1.0f;
    const int64_t tracked = bn1->num_batches_tracked.item<int64_t>();
    const at::Tensor y = block.forward(x);
    EXPECT_EQ(bn1->num_batches_tracked.item<int64_t>(), tracked + (keep ? 1 : 0)) << i;
    if (!keep) {
      ++dropped;
      EXPECT_TRUE(at::equal(y, x.relu())) << i;
    } else {
      EXPECT_FALSE(at::equal(y, x.relu())) << i;
    }
  }
  const auto* gate = block.slot("residual_gate").ptr()->as<StochasticDepthGateImpl>();
  EXPECT_EQ(gate->rng, reference) << "one draw per forward, kept or dropped";
  EXPECT_GT(dropped, 10);
  EXPECT_LT(dropped, 30);
  // Sample mode and evaluation compute every branch.
  StochasticDepthGate sample("sample", 1.0);
  EXPECT_FALSE(sample->skip_branch());
  StochasticDepthGate evaluating("block", 1.0);
  evaluating->eval();
  EXPECT_FALSE(evaluating->skip_branch());
  EXPECT_TRUE(StochasticDepth(StochasticDepthOptions()).spec().leaves_parameters_unused);
  EXPECT_FALSE(StochasticDepth(StochasticDepthOptions().stochastic_method("sample")).spec().leaves_parameters_unused);
}

TEST(StochasticDepth, OnTheGptADroppedBlockIsNotComputedAndEachBlockGetsItsRate) {
  at::manual_seed(6);
  GPT gpt(GPTOptions().vocab_size(16).max_seq_length(8).d_model(16).n_layers(3).n_heads(2));
  EXPECT_EQ(count_stochastic_depth(gpt), 3) << "one gate per block";
  const Batch batch = testing::tiny_text(2)->get_batch({0, 1});
  gpt.eval();
  const at::Tensor plain = gpt.forward(batch);
  const auto gates = apply_stochastic_depth(gpt, StochasticDepthOptions().drop_rate(0.3));
  ASSERT_EQ(gates.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_DOUBLE_EQ(gates[i]->drop_rate, (i + 1) / 3.0 * 0.3) << i;
  // Every block dropped: the model is its embeddings, final norm and head; the blocks get no gradient.
  for (auto gate : gates) gate->drop_rate = 1.0;
  gpt.train();
  const at::Tensor y = gpt.forward(batch);
  const at::Tensor x = gpt.slot("embed").forward(batch.input()) + gpt.slot("pos_embed").forward(at::arange(8));
  EXPECT_TRUE(at::equal(y, gpt.slot("head").forward(gpt.slot("ln_f").forward(x)).transpose(1, 2)));
  y.sum().backward();
  for (const auto& item : gpt.named_parameters()) {
    EXPECT_EQ(item.value().grad().defined(), item.key().rfind("blocks.", 0) != 0) << item.key();
  }
  // Evaluation scales each block's update by its survival probability: 0 drop rate, the plain model.
  for (auto gate : gates) gate->drop_rate = 0.0;
  gpt.eval();
  EXPECT_TRUE(at::allclose(gpt.forward(batch), plain, 1e-5, 1e-6));
}

TEST(StochasticDepth, SurgeryOnResNetGivesEachBlockItsRate) {
  ResNet resnet(ResNetOptions().depth(20).width(4).in_channels(3).num_classes(10));
  const std::string before = weights_fingerprint(resnet);
  const auto keys = resnet.named_parameters().keys();
  EXPECT_EQ(count_stochastic_depth(resnet), 9);
  const auto gates = apply_stochastic_depth(resnet, StochasticDepthOptions().drop_rate(0.3));
  ASSERT_EQ(gates.size(), 9u);
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_DOUBLE_EQ(gates[i]->drop_rate, (i + 1) / 9.0 * 0.3) << i;
    EXPECT_EQ(resnet.blocks()[i]->slot("residual_gate").ptr().get(), gates[i].ptr().get()) << "forward order";
  }
  EXPECT_EQ(weights_fingerprint(resnet), before) << "no parameter or buffer changes";
  EXPECT_EQ(resnet.named_parameters().keys(), keys);
  EXPECT_EQ(count_stochastic_depth(resnet), 9) << "the gates are still in the slots";
  ResNet warm(ResNetOptions().depth(8).width(4).in_channels(3).num_classes(10));
  for (const auto& g : apply_stochastic_depth(warm, StochasticDepthOptions().drop_warmup(0.5))) {
    EXPECT_EQ(g->drop_rate, 0.0) << "with a warmup the rates start at 0";
  }
  CNN cnn(CNNOptions().in_channels(1).num_classes(3).width(4));
  EXPECT_EQ(count_stochastic_depth(cnn), 0);
  EXPECT_TRUE(apply_stochastic_depth(cnn, StochasticDepthOptions()).empty());
}

Components resnet_components(std::shared_ptr<Algorithm> algorithm) {
  Components c = testing::tiny_components();
  at::manual_seed(0);
  c.model = std::make_shared<ResNet>(ResNetOptions().depth(8).width(4).in_channels(3).num_classes(4));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(32).input_shape({3, 8, 8}).num_classes(4).seed(3)), 8);
  c.evaluators.clear();
  c.algorithms = {std::move(algorithm)};
  return c;
}

TEST(StochasticDepth, TrainingIsDeterministicPerSeedAndTheWarmupRaisesTheRates) {
  std::vector<std::string> prints;
  for (const char* method : {"block", "sample", "block"}) {
    auto sd = std::make_shared<StochasticDepth>(
        StochasticDepthOptions().stochastic_method(method).drop_rate(0.5).drop_warmup(0.5));
    Components c = resnet_components(sd);
    auto model = c.model;
    Trainer t(TrainerOptions().max_duration(Time::parse("2ep")).threads(1).seed(9), std::move(c));
    ASSERT_EQ(sd->gates().size(), 3u);
    t.fit();
    // 8 batches; the last BeforeDataloader is at elapsed 7/8 >= the warmup: full rates.
    for (size_t i = 0; i < 3; ++i) EXPECT_DOUBLE_EQ(sd->gates()[i]->drop_rate, (i + 1) / 3.0 * 0.5);
    for (const auto& p : model->parameters()) EXPECT_TRUE(p.isfinite().all().item<bool>());
    prints.push_back(weights_fingerprint(*model));
  }
  EXPECT_EQ(prints[0], prints[2]) << "the same seed draws the same drops";
  EXPECT_NE(prints[0], prints[1]) << "sample mode draws other drops";
}

TEST(StochasticDepth, TheWarmupRampsEveryBlocksRateBatchByBatch) {
  // drop_rate 0.6 over a warmup of half the run (8 batches): at elapsed fraction e < 0.5 block i of 3 drops with
  // (e / 0.5) * 0.6 * (i + 1) / 3, from 0 at the first batch; from e = 0.5 on with 0.6 * (i + 1) / 3.
  auto sd = std::make_shared<StochasticDepth>(StochasticDepthOptions().drop_rate(0.6).drop_warmup(0.5));
  struct Rates : Callback {
    explicit Rates(std::shared_ptr<StochasticDepth> a) : sd(std::move(a)) {}
    std::string name() const override { return "rates"; }
    void run_event(Event event, State& state, Logger&) override {
      if (event != Event::BeforeForward) return;
      elapsed.push_back(state.elapsed_fraction());
      std::vector<double> r;
      for (const auto& g : sd->gates()) r.push_back(g->drop_rate);
      rates.push_back(r);
    }
    std::shared_ptr<StochasticDepth> sd;
    std::vector<double> elapsed;
    std::vector<std::vector<double>> rates;
  };
  auto rates = std::make_shared<Rates>(sd);
  Components c = resnet_components(sd);
  c.callbacks = {rates};
  Trainer t(TrainerOptions().max_duration(Time::parse("2ep")).threads(1).seed(9), std::move(c));
  t.fit();
  ASSERT_EQ(rates->rates.size(), 8u);
  for (size_t b = 0; b < 8; ++b) {
    const double e = static_cast<double>(b) / 8.0;
    EXPECT_DOUBLE_EQ(rates->elapsed[b], e);
    const double scale = e < 0.5 ? e / 0.5 : 1.0;
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_NEAR(rates->rates[b][i], scale * 0.6 * static_cast<double>(i + 1) / 3.0, 1e-12) << "batch " << b << " block " << i;
    }
  }
  EXPECT_EQ(rates->rates[0], (std::vector<double>{0.0, 0.0, 0.0})) << "nothing is dropped at the start";
}

TEST(StochasticDepth, AlgorithmSpecValidationAndRefusalWithoutResidualBlocks) {
  EXPECT_THROW(StochasticDepth(StochasticDepthOptions().stochastic_method("layer")), InputError);
  EXPECT_THROW(StochasticDepth(StochasticDepthOptions().drop_rate(1.5)), InputError);
  EXPECT_THROW(StochasticDepth(StochasticDepthOptions().drop_distribution("quadratic")), InputError);
  EXPECT_THROW(StochasticDepth(StochasticDepthOptions().drop_warmup(1.0)), InputError);
  StochasticDepth algo;
  EXPECT_EQ(algo.options().stochastic_method(), "block");
  EXPECT_DOUBLE_EQ(algo.options().drop_rate(), 0.2);
  EXPECT_EQ(algo.options().drop_distribution(), "linear");
  EXPECT_TRUE(algo.spec().required_on_load);
  EXPECT_TRUE(algo.spec().acts_on(Event::Init));
  EXPECT_TRUE(algo.spec().acts_on(Event::BeforeDataloader));
  EXPECT_FALSE(algo.spec().writes(Resource::OptimizerGroups)) << "the gates have no parameters";
  Components c = testing::tiny_components();
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(3).width(4));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.algorithms = {std::make_shared<StochasticDepth>()};
  const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_NE(msg.find("stochastic_depth: the model has no residual_gate slot (no residual block"), std::string::npos)
      << msg;
}

}  // namespace
}  // namespace tessera::algorithms
