// Gyro dropout: the preselected masks and the selections as documented (0/1, kept fraction 1 - p, distinct picks,
// pure functions of seed, layer and period), the period length, the functional form against a hand computation
// (rows floor(n · tau / N), broadcast over channels' positions, gradient), the layer (identity in evaluation, the
// period's masks in training, one number of features; following the trainer's batch place, each microbatch's rows get
// the whole batch's masks), surgery on the MLP, ResNet and GPT slots (no new state-dict key; the GPT's tokens as rows),
// the periods a training run goes through, determinism per seed, and the plan-time refusals.
#include <gtest/gtest.h>

#include <set>

#include <tessera/algorithms/gyro_dropout.h>
#include <tessera/state.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

TEST(GyroDropout, PreselectedMasksAreZeroOrOneKeepOneMinusPAndDependOnSeedAndLayer) {
  const at::Tensor m = gyro_dropout_masks(/*seed=*/3, /*layer=*/1, /*features=*/50, /*p=*/0.3, /*sigma=*/200);
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{200, 50}));
  EXPECT_EQ(m.scalar_type(), at::kFloat);
  EXPECT_TRUE(((m == 0) | (m == 1)).all().item<bool>());
  EXPECT_NEAR(m.mean().item<double>(), 0.7, 0.01) << "a unit is kept with probability 1 - p";
  EXPECT_TRUE(at::equal(m, gyro_dropout_masks(3, 1, 50, 0.3, 200))) << "a pure function of its arguments";
  EXPECT_FALSE(at::equal(m, gyro_dropout_masks(4, 1, 50, 0.3, 200))) << "another seed";
  EXPECT_FALSE(at::equal(m, gyro_dropout_masks(3, 2, 50, 0.3, 200))) << "another layer";
  // Larger sigma extends the same draws: mask s is the same whatever comes after it.
  EXPECT_TRUE(at::equal(gyro_dropout_masks(3, 1, 50, 0.3, 300).slice(0, 0, 200), m));
  EXPECT_TRUE(gyro_dropout_masks(3, 1, 7, 0.0, 5).eq(1).all().item<bool>()) << "p = 0 keeps everything";
  EXPECT_THROW(gyro_dropout_masks(3, 1, 0, 0.3, 5), InputError);
}

TEST(GyroDropout, EachPeriodSelectsTauDistinctMasksUniformly) {
  std::vector<int64_t> counts(16, 0);
  for (int64_t period = 0; period < 2000; ++period) {
    const std::vector<int64_t> picks = gyro_dropout_selection(9, 0, period, 16, 4);
    ASSERT_EQ(picks.size(), 4u);
    EXPECT_EQ(std::set<int64_t>(picks.begin(), picks.end()).size(), 4u) << "distinct masks, period " << period;
    for (int64_t s : picks) {
      ASSERT_TRUE(s >= 0 && s < 16) << s;
      ++counts[static_cast<size_t>(s)];
    }
    EXPECT_EQ(picks, gyro_dropout_selection(9, 0, period, 16, 4)) << "a pure function of (seed, layer, period)";
  }
  for (int64_t c : counts) EXPECT_NEAR(static_cast<double>(c) / 2000.0, 4.0 / 16.0, 0.04);
  EXPECT_NE(gyro_dropout_selection(9, 0, 0, 16, 4), gyro_dropout_selection(9, 1, 0, 16, 4)) << "per layer";
  std::vector<int64_t> all = gyro_dropout_selection(1, 0, 0, 5, 5);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<int64_t>{0, 1, 2, 3, 4})) << "tau = sigma trains every mask";
  EXPECT_THROW(gyro_dropout_selection(1, 0, 0, 4, 5), InputError);
}

TEST(GyroDropout, PeriodLengthIsComposersRuleAndNeverZero) {
  EXPECT_EQ(gyro_dropout_period_length(1000, 256, 16), 3 * 16);
  EXPECT_EQ(gyro_dropout_period_length(18, 4, 2), 4 * 2);
  EXPECT_EQ(gyro_dropout_period_length(100, 256, 16), 16) << "a run shorter than sigma batches: one tau per period";
  EXPECT_EQ(gyro_dropout_period_length(0, 256, 16), 16);
  EXPECT_THROW(gyro_dropout_period_length(std::numeric_limits<double>::infinity(), 256, 16), InputError);
  EXPECT_THROW(gyro_dropout_period_length(-1, 256, 16), InputError);
}

TEST(GyroDropout, FunctionalFormGivesExampleNMaskFloorOfNTauOverN) {
  at::manual_seed(1);
  const at::Tensor selected = at::tensor({1.f, 0.f, 1.f, 1.f, 0.f, 1.f, 0.f, 1.f, 1.f, 1.f, 0.f, 0.f}).view({3, 4});
  // N = 7, 3 masks: rows 0 0 0 1 1 2 2.
  const at::Tensor x = at::randn({7, 4}).requires_grad_();
  const at::Tensor y = gyro_dropout(x, selected, 0.5);
  const std::vector<int64_t> rows{0, 0, 0, 1, 1, 2, 2};
  for (int64_t n = 0; n < 7; ++n) {
    EXPECT_TRUE(at::equal(y[n], x[n].detach() * selected[rows[static_cast<size_t>(n)]] * 2.0)) << n;
  }
  y.sum().backward();
  for (int64_t n = 0; n < 7; ++n) EXPECT_TRUE(at::equal(x.grad()[n], selected[rows[static_cast<size_t>(n)]] * 2.0)) << n;
  // N = 6 divisible by 3: Composer's repeat_interleave (two examples per mask).
  const at::Tensor x6 = at::randn({6, 4});
  EXPECT_TRUE(at::equal(gyro_dropout(x6, selected, 0.5), x6 * selected.repeat_interleave(2, 0) * 2.0));
  // Feature maps [N, C, H, W]: the mask of channel c covers all its positions.
  const at::Tensor maps = at::randn({3, 4, 2, 5});
  const at::Tensor out = gyro_dropout(maps, selected, 0.25);
  for (int64_t n = 0; n < 3; ++n) {
    EXPECT_TRUE(at::equal(out[n], maps[n] * (selected[n] / 0.75).view({4, 1, 1}))) << n;
  }
  EXPECT_TRUE(at::equal(gyro_dropout(x6, selected, 0.0), x6 * selected.repeat_interleave(2, 0)));
  EXPECT_EQ(gyro_dropout(at::randn({0, 4}), selected, 0.5).size(0), 0);
  const std::string features = testing::input_error_of([&] { gyro_dropout(at::randn({6, 5}), selected, 0.5); });
  EXPECT_NE(features.find("gyro_dropout: the input has 5 features (dimension 1 of [6, 5]); the masks have 4"),
            std::string::npos)
      << features;
  EXPECT_THROW(gyro_dropout(at::randn({6}), selected, 0.5), InputError);
  EXPECT_THROW(gyro_dropout(x6, selected, 1.0), InputError);
  EXPECT_THROW(gyro_dropout(x6, selected.flatten(), 0.5), InputError);
}

TEST(GyroDropoutLayer, IsTheIdentityInEvaluationAndTrainsThePeriodsMasks) {
  const auto opts = GyroDropoutOptions().p(0.4).sigma(10).tau(3);
  GyroDropoutLayer layer(std::make_shared<GyroDropoutMasks>(opts, /*layer=*/2));
  const at::Tensor x = at::randn({9, 6});
  layer->eval();
  EXPECT_TRUE(layer->forward(x).is_same(x));
  layer->train();
  auto& masks = *layer->masks();
  masks.select(/*seed=*/5, /*period=*/0);
  const at::Tensor y0 = layer->forward(x);
  const at::Tensor expected_masks = gyro_dropout_masks(5, 2, 6, 0.4, 10).index_select(
      0, at::tensor(gyro_dropout_selection(5, 2, 0, 10, 3), at::kLong));
  EXPECT_TRUE(at::equal(masks.selected(6), expected_masks));
  EXPECT_TRUE(at::allclose(y0, gyro_dropout(x, expected_masks, 0.4), 0, 0)) << "bitwise the functional form";
  EXPECT_TRUE(at::equal(layer->forward(x), y0)) << "the same masks within a period";
  masks.select(5, 1);
  EXPECT_FALSE(at::equal(layer->forward(x), y0)) << "new masks in the next period";
  masks.select(5, 0);
  EXPECT_TRUE(at::equal(layer->forward(x), y0)) << "and period 0's again when asked";
  // Under bfloat16 (autocast's dtype on the CPU), the masks in the input's dtype.
  const at::Tensor yb = layer->forward(x.to(at::kBFloat16));
  EXPECT_EQ(yb.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(yb, gyro_dropout(x.to(at::kBFloat16), expected_masks, 0.4)));
  const std::string msg = testing::input_error_of([&] { layer->forward(at::randn({9, 7})); });
  EXPECT_NE(msg.find("gyro_dropout: layer 2's input has 7 features (dimension 1 of [9, 7]), and had 6 before"),
            std::string::npos)
      << msg;
  EXPECT_THROW(masks.selected(5), InputError);
  EXPECT_THROW(GyroDropoutMasks(GyroDropoutOptions().sigma(2).tau(3), 0), InputError);
}

TEST(GyroDropoutLayer, FollowingTheBatchPlaceEachMicrobatchTrainsTheWholeBatchsMasks) {
  // 8 examples, 4 masks: in microbatches of 3, 3 and 2 each example trains the mask it trains in the whole batch
  // (floor(n · 4 / 8)), where spread over its own rows a microbatch of 2 would train masks 0 and 2 only; the same for
  // token rows (5 per example).
  const auto masks = std::make_shared<GyroDropoutMasks>(GyroDropoutOptions().p(0.5).sigma(6).tau(4), /*layer=*/1);
  masks->select(/*seed=*/2, /*period=*/0);
  const auto place = std::make_shared<BatchPlace>();
  masks->follow(place);
  at::manual_seed(3);
  for (const int64_t per : {1, 5}) {
    const at::Tensor x = at::randn({8 * per, 6});
    const at::Tensor whole = gyro_dropout(x, masks->selected(6), 0.5);
    EXPECT_TRUE(at::equal(masks->forward(x, true), whole)) << "unset: the input's own rows";
    place->rows = place->rank_rows = place->share_end = place->global_rows = 8;
    EXPECT_TRUE(at::equal(masks->forward(x, true), whole));
    for (const auto& [first, rows] : std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {3, 3}, {6, 2}}) {
      place->first = first;
      place->rows = rows;
      EXPECT_TRUE(at::equal(masks->forward(x.slice(0, first * per, (first + rows) * per), true),
                            whole.slice(0, first * per, (first + rows) * per)))
          << "rows " << first << " to " << first + rows << ", " << per << " per example";
    }
    // Spread over its own rows (the functional form), the last microbatch would train masks 0 and 2, not 3.
    const at::Tensor last = x.slice(0, 6 * per, 8 * per);
    EXPECT_FALSE(at::equal(masks->forward(last, true), gyro_dropout(last, masks->selected(6), 0.5)));
    *place = BatchPlace();
  }
  place->first = 0;
  place->rows = 2;
  place->rank_rows = place->share_end = place->global_rows = 8;
  const std::string msg = testing::input_error_of([&] { masks->forward(at::randn({5, 6}), true); });
  EXPECT_NE(msg.find("gyro_dropout: layer 1's input has 5 rows for a batch of 2 examples"), std::string::npos) << msg;
  EXPECT_TRUE(masks->forward(at::randn({5, 6}), false).defined()) << "evaluation needs no place";
}

TEST(GyroDropout, SurgeryReplacesTheDropoutSlotsOfMlpAndResNetAndNoKey) {
  MLP mlp(MLPOptions().in_features(16).hidden({8, 8}).num_classes(3).dropout(0.2));
  MLP plain(MLPOptions().in_features(16).hidden({8, 8}).num_classes(3));
  EXPECT_EQ(count_gyro_dropout(plain), 0);
  EXPECT_EQ(count_gyro_dropout(mlp), 2);
  std::vector<std::string> keys;
  for (const auto& item : mlp.named_parameters()) keys.push_back(item.key());
  mlp.eval();
  const Batch batch(at::randn({5, 1, 4, 4}), at::zeros({5}, at::kLong));
  const at::Tensor before = mlp.forward(batch);
  const auto layers = apply_gyro_dropout(mlp, GyroDropoutOptions().sigma(4).tau(2));
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0]->layer(), 0);
  EXPECT_EQ(layers[1]->layer(), 1);
  EXPECT_EQ(count_gyro_dropout(mlp), 0) << "nothing left to replace";
  EXPECT_NE(dynamic_cast<GyroDropoutLayerImpl*>(mlp.slot("dropout1").ptr().get()), nullptr);
  std::vector<std::string> after;
  for (const auto& item : mlp.named_parameters()) after.push_back(item.key());
  EXPECT_EQ(after, keys);
  EXPECT_TRUE(mlp.named_buffers().is_empty());
  EXPECT_TRUE(at::equal(mlp.forward(batch), before)) << "evaluation is unchanged";
  mlp.train();
  EXPECT_FALSE(at::equal(mlp.forward(batch), before));

  ResNet resnet(ResNetOptions().depth(8).width(4).in_channels(1).num_classes(3).dropout(0.1));
  EXPECT_EQ(count_gyro_dropout(resnet), 1);
  EXPECT_EQ(count_gyro_dropout(*std::make_shared<ResNet>(ResNetOptions().depth(8).width(4).in_channels(1).num_classes(3))), 0);
}

TEST(GyroDropout, OnTheGptEachTokenOfExampleNTrainsMaskFloorOfNTauOverN) {
  at::manual_seed(4);
  GPT gpt(GPTOptions().vocab_size(16).max_seq_length(8).d_model(16).n_layers(2).n_heads(2).dropout(0.1));
  ASSERT_EQ(count_gyro_dropout(gpt), 5) << "the embeddings' and each block's two branches'";
  const Batch batch = testing::tiny_text(4)->get_batch({0, 1, 2, 3});
  gpt.eval();
  const at::Tensor before = gpt.forward(batch);
  const auto layers = apply_gyro_dropout(gpt, GyroDropoutOptions().p(0.5).sigma(4).tau(2));
  ASSERT_EQ(layers.size(), 5u);
  EXPECT_TRUE(at::equal(gpt.forward(batch), before)) << "evaluation is unchanged";
  // The embeddings' dropout layer by hand: the tokens [N·S, D] of examples 0-1 get mask 0, of examples 2-3 mask 1,
  // each over the D = 16 features of a token.
  gpt.train();
  const at::Tensor ids = batch.input();
  const at::Tensor x = (gpt.slot("embed").forward(ids) + gpt.slot("pos_embed").forward(at::arange(8))).reshape({32, 16});
  auto* layer = dynamic_cast<GyroDropoutLayerImpl*>(gpt.slot("embed_dropout").ptr().get());
  ASSERT_NE(layer, nullptr);
  const at::Tensor masks = layer->masks()->selected(16);
  ASSERT_EQ(masks.sizes(), (std::vector<int64_t>{2, 16}));
  const at::Tensor expected = x * at::cat({masks[0].expand({16, 16}), masks[1].expand({16, 16})}) * 2.0;
  EXPECT_TRUE(at::allclose(gpt.slot("embed_dropout").forward(x), expected, 1e-6, 1e-7));
  EXPECT_FALSE(at::allclose(gpt.forward(batch), before, 1e-3, 1e-3)) << "training drops";
}

Components mlp_components(std::shared_ptr<Algorithm> algorithm, uint64_t seed = 0) {
  Components c = testing::tiny_components(/*train_size=*/48, /*batch_size=*/8, seed);
  at::manual_seed(seed);
  c.model = std::make_shared<MLP>(MLPOptions().in_features(16).hidden({12, 12}).num_classes(3).dropout(0.3));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  c.evaluators.clear();
  c.algorithms = {std::move(algorithm)};
  return c;
}

TEST(GyroDropout, TrainingMovesEveryLayerThroughThePeriodsAndIsDeterministicPerSeed) {
  // 3 epochs of 6 batches: T = 18, sigma 4, tau 2: periods of floor(18 / 4) * 2 = 8 batches.
  struct Periods : Callback {
    explicit Periods(std::shared_ptr<GyroDropout> a) : gyro(std::move(a)) {}
    std::string name() const override { return "periods"; }
    void run_event(Event event, State& state, Logger&) override {
      if (event != Event::BeforeForward) return;
      for (const auto& layer : gyro->layers()) seen.emplace_back(state.timestamp.batch, layer->period());
    }
    std::shared_ptr<GyroDropout> gyro;
    std::vector<std::pair<int64_t, int64_t>> seen;
  };
  std::vector<std::string> prints;
  for (uint64_t seed : {3, 4, 3}) {
    auto gyro = std::make_shared<GyroDropout>(GyroDropoutOptions().sigma(4).tau(2));
    auto periods = std::make_shared<Periods>(gyro);
    Components c = mlp_components(gyro);
    c.callbacks = {periods};
    auto model = c.model;
    Trainer t(TrainerOptions().max_duration(Time::parse("3ep")).threads(1).seed(seed), std::move(c));
    ASSERT_EQ(gyro->layers().size(), 2u);
    t.fit();
    ASSERT_EQ(periods->seen.size(), 36u);
    for (const auto& [batch, period] : periods->seen) EXPECT_EQ(period, batch / 8) << "batch " << batch;
    for (const auto& p : model->parameters()) EXPECT_TRUE(p.isfinite().all().item<bool>());
    prints.push_back(weights_fingerprint(*model));
  }
  EXPECT_EQ(prints[0], prints[2]) << "the same seed trains the same subnetworks";
  EXPECT_NE(prints[0], prints[1]);
}

TEST(GyroDropout, SpecDefaultsAndRefusals) {
  GyroDropout algo;
  EXPECT_DOUBLE_EQ(algo.options().p(), 0.5);
  EXPECT_EQ(algo.options().sigma(), 256);
  EXPECT_EQ(algo.options().tau(), 16);
  EXPECT_TRUE(algo.spec().required_on_load);
  EXPECT_TRUE(algo.spec().acts_on(Event::Init));
  EXPECT_TRUE(algo.spec().acts_on(Event::BeforeDataloader));
  EXPECT_FALSE(algo.spec().writes(Resource::OptimizerGroups)) << "the layers have no parameters";
  EXPECT_THROW(GyroDropout(GyroDropoutOptions().p(1.0)), InputError);
  EXPECT_THROW(GyroDropout(GyroDropoutOptions().sigma(0)), InputError);
  const std::string tau = testing::input_error_of([] { GyroDropout(GyroDropoutOptions().sigma(8).tau(9)); });
  EXPECT_NE(tau.find("tau (9) must be at most sigma (8)"), std::string::npos) << tau;
  // A model without a dropout module: refused before step 1, with what to do.
  Components c = testing::tiny_components();
  c.model = std::make_shared<MLP>(MLPOptions().in_features(16).hidden({8}).num_classes(3));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.algorithms = {std::make_shared<GyroDropout>()};
  const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_NE(msg.find("gyro_dropout: the model has no dropout layer in a slot"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mlp, resnet and gpt: dropout: 0.1"), std::string::npos) << msg;
}

}  // namespace
}  // namespace tessera::algorithms
