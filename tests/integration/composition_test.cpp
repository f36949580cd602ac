// Composition of the algorithms: the pinned plan of the composed recipe, every pair training together with its
// invariants, the recipe with every compatible algorithm (trains and resumes bitwise), the generated interactions
// document, and repeats refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include <unistd.h>

#include <tessera/algorithms/augmix.h>
#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/channels_last.h>
#include <tessera/algorithms/colout.h>
#include <tessera/algorithms/cutmix.h>
#include <tessera/algorithms/cutout.h>
#include <tessera/algorithms/ema.h>
#include <tessera/algorithms/factorize.h>
#include <tessera/algorithms/ghost_batchnorm.h>
#include <tessera/algorithms/gradient_clipping.h>
#include <tessera/algorithms/gyro_dropout.h>
#include <tessera/algorithms/label_smoothing.h>
#include <tessera/algorithms/layer_freezing.h>
#include <tessera/algorithms/mixup.h>
#include <tessera/algorithms/progressive_resizing.h>
#include <tessera/algorithms/randaugment.h>
#include <tessera/algorithms/selective_backprop.h>
#include <tessera/algorithms/sam.h>
#include <tessera/algorithms/squeeze_excite.h>
#include <tessera/algorithms/stochastic_depth.h>
#include <tessera/algorithms/weight_standardization.h>
#include <tessera/algorithms/swa.h>

#include "support.h"
#include "tfevents_support.h"

namespace tessera {
namespace {

std::vector<std::string> order(const Plan& plan, Event e) {
  std::vector<std::string> out;
  for (const auto& entry : plan.at(e)) out.push_back(entry.algorithm->name());
  return out;
}

/// The composed recipe with its data swapped for small synthetic images (the plan does not depend on it).
Recipe mosaic_on_synthetic() {
  return Recipe::load(std::string(TESSERA_SOURCE_DIR) + "/examples/recipes/fashion_mnist_mosaic.yaml",
                      {"data.train.dataset={synthetic: {size: 64, input_shape: [1, 16, 16], num_classes: 10}}",
                       "data.eval.dataset={synthetic: {size: 32, input_shape: [1, 16, 16], num_classes: 10}}",
                       "callbacks=[]", "loggers=[]"});
}

TEST(Composition, MosaicRecipePlanIsPinned) {
  auto trainer = make_trainer(mosaic_on_synthetic());
  const Plan& plan = trainer->plan();
  EXPECT_EQ(order(plan, Event::Init), (std::vector<std::string>{"blurpool", "channels_last"}));
  // after_* events reverse the recipe order, but selective backprop's declared rule keeps it first.
  EXPECT_EQ(order(plan, Event::AfterDataloader), (std::vector<std::string>{"selective_backprop", "progressive_resizing"}));
  EXPECT_EQ(order(plan, Event::BeforeLoss), std::vector<std::string>{"label_smoothing"});
  EXPECT_EQ(order(plan, Event::AfterLoss), std::vector<std::string>{"label_smoothing"});
  EXPECT_EQ(order(plan, Event::EpochEnd), std::vector<std::string>{"layer_freezing"});
  EXPECT_EQ(order(plan, Event::AfterLoad), std::vector<std::string>{"layer_freezing"});
  const std::string table = plan.table();
  EXPECT_NE(table.find("why: selective_backprop before writers of inputs: its scores must see the clean, full-resolution batch"),
            std::string::npos)
      << table;
  EXPECT_TRUE(plan.warnings().empty());
}

TEST(Composition, RepeatedAlgorithmInARecipeIsRefused) {
  try {
    make_trainer(Recipe::load(std::string(TESSERA_SOURCE_DIR) + "/examples/recipes/fashion_mnist_mosaic.yaml",
                              {"data.train.dataset={synthetic: {size: 64, input_shape: [1, 16, 16]}}",
                               "data.eval.dataset={synthetic: {size: 32, input_shape: [1, 16, 16]}}", "callbacks=[]",
                               "loggers=[]", "algorithms=[label_smoothing, {label_smoothing: {smoothing: 0.2}}]"}));
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("label_smoothing appears 2 times"), std::string::npos) << e.what();
  }
}

std::shared_ptr<Algorithm> eager(const std::string& name) {
  // Options that make each algorithm act within a few batches.
  using namespace algorithms;
  if (name == "blurpool") return std::make_shared<BlurPool>(BlurPoolOptions().min_channels(4));
  if (name == "label_smoothing") return std::make_shared<LabelSmoothing>();
  if (name == "channels_last") return std::make_shared<ChannelsLast>();
  if (name == "colout") return std::make_shared<ColOut>();
  if (name == "randaugment") return std::make_shared<RandAugment>();
  if (name == "augmix") return std::make_shared<AugMix>(AugMixOptions().width(2));
  if (name == "cutmix") return std::make_shared<CutMix>();
  if (name == "cutout") return std::make_shared<CutOut>(CutOutOptions().num_holes(2));
  if (name == "mixup") return std::make_shared<MixUp>(MixUpOptions().alpha(1.0));
  if (name == "ema") return std::make_shared<EMA>(EMAOptions().half_life(Time::parse("2ba")));
  if (name == "factorize") {
    return std::make_shared<Factorize>(
        FactorizeOptions().min_channels(8).latent_channels(0.25).min_features(4).latent_features(2));
  }
  if (name == "ghost_batchnorm") return std::make_shared<GhostBatchNorm>(GhostBatchNormOptions().ghost_batch_size(4));
  if (name == "squeeze_excite") return std::make_shared<SqueezeExcite>(SqueezeExciteOptions().min_channels(8).latent_channels(4));
  if (name == "stochastic_depth")
    return std::make_shared<StochasticDepth>(StochasticDepthOptions().drop_rate(0.5).drop_warmup(0.25));
  if (name == "weight_standardization") return std::make_shared<WeightStandardization>();
  if (name == "gyro_dropout") return std::make_shared<GyroDropout>(GyroDropoutOptions().sigma(4).tau(2));
  if (name == "gradient_clipping")
    return std::make_shared<GradientClipping>(GradientClippingOptions().clipping_threshold(0.01));
  if (name == "sam") return std::make_shared<SAM>(SAMOptions().rho(0.1));
  if (name == "swa") {  // snapshots after batches 2 to 6 of 8, the average in at 6, the SWA learning rate from 2
    return std::make_shared<SWA>(SWAOptions()
                                     .swa_start(Time::parse("2ba"))
                                     .swa_end(Time::parse("6ba"))
                                     .update_interval(Time::parse("1ba"))
                                     .schedule_swa_lr(true)
                                     .anneal_steps(2)
                                     .swa_lr(0.01));
  }
  if (name == "selective_backprop")
    return std::make_shared<SelectiveBackprop>(SelectiveBackpropOptions().start(0).end(1).interrupt(0));
  if (name == "progressive_resizing")
    return std::make_shared<ProgressiveResizing>(
        ProgressiveResizingOptions().initial_scale(0.5).delay_fraction(0).finetune_fraction(0.5));
  return std::make_shared<LayerFreezing>(LayerFreezingOptions().freeze_start(0).freeze_level(1));
}

/// Checks per microbatch that the loss is finite and records batch sizes and widths.
class Invariants : public Algorithm {
 public:
  Invariants() { spec_ = testing::spec_on("invariants", {Event::AfterLoss, Event::BeforeForward}); }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event e, State& s, Logger&) override {
    if (e == Event::BeforeForward) {
      sizes.push_back(s.batch.size());
      widths.push_back(s.batch.input().size(3));
      last_input = s.batch.input().clone();
    } else {
      finite = finite && std::isfinite(s.loss.item<double>());
    }
  }
  std::vector<int64_t> sizes, widths;
  at::Tensor last_input;
  bool finite = true;
  AlgorithmSpec spec_;
};

class Pairwise : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(Pairwise, TrainsWithBothAndKeepsTheirInvariants) {
  const auto [first, second] = GetParam();
  Components c;
  at::manual_seed(0);
  // Stochastic depth needs residual blocks, gyro dropout a dropout layer: a ResNet-8 (with dropout before its
  // classifier) for their pairs (the CNN's slot checks below are skipped).
  const bool residual = first == "stochastic_depth" || second == "stochastic_depth";
  const bool dropout = first == "gyro_dropout" || second == "gyro_dropout";
  const bool resnet = residual || dropout;
  if (resnet) {
    c.model = std::make_shared<ResNet>(
        ResNetOptions().depth(8).width(8).in_channels(1).num_classes(4).dropout(dropout ? 0.25 : 0.0));
  } else {
    c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(4).width(8));
  }
  auto synthetic = data::make_synthetic(data::SyntheticOptions().size(64).input_shape({1, 16, 16}).num_classes(4));
  const bool augments = first == "augmix" || first == "randaugment" || second == "augmix" || second == "randaugment";
  auto train_loader = testing::loader(augments ? testing::unit_interval(*synthetic) : synthetic, 16);  // [0, 1] images
  c.train_dataloader = train_loader;
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.05));
  auto inv = std::make_shared<Invariants>();
  const std::vector<std::shared_ptr<Algorithm>> pair = {eager(first), eager(second)};
  c.algorithms = {pair[0], pair[1], inv};
  auto model = c.model;
  auto opt = c.optimizer;
  if (first == "cutmix" && second == "mixup") {  // refused before step 1, with the reason
    EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
                ::testing::HasSubstr("cutmix and mixup cannot be combined: both mix each example with a permuted partner"));
    return;
  }
  Trainer t(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  t.fit();
  EXPECT_TRUE(inv->finite);
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.isfinite().all().item<bool>());
  for (const std::string& name : {first, second}) {
    int64_t applied = 0;
    for (const auto& [key, rec] : t.trace()) {
      if (key.rfind(name + "/", 0) == 0 && key != name + "/after_load") applied += rec.count;
    }
    EXPECT_GT(applied, 0) << name << " never acted";
  }
  auto has = [&](const std::string& n) { return first == n || second == n; };
  // the data pipeline ran the augmentations (in recipe order), on the loader's threads
  std::vector<std::string> in_loader;
  for (const auto& tr : train_loader->algorithm_transforms()) in_loader.push_back(tr->name());
  std::vector<std::string> augmenters;
  for (const std::string& n : {first, second}) {
    if (n == "augmix" || n == "randaugment") augmenters.push_back(n);
  }
  EXPECT_EQ(in_loader, augmenters);
  if (has("selective_backprop")) EXPECT_EQ(inv->sizes.front(), 8);  // half of 16 from the first batch
  if (has("progressive_resizing")) EXPECT_LT(inv->widths.front(), 16);
  if (has("colout")) {  // ⌊0.85·16⌋ = 13 rows and columns (then scaled by progressive resizing, pinned to 4)
    EXPECT_EQ(inv->widths.front(), has("progressive_resizing") ? 8 : 13);
    EXPECT_EQ(inv->last_input.size(2), inv->last_input.size(3));
  }
  for (const auto& a : pair) {  // the loss was interpolated with a mixing weight in [0, 1], the override removed
    if (auto* m = dynamic_cast<algorithms::MixingAlgorithm*>(a.get())) {
      EXPECT_GE(m->last_lambda(), 0.0);
      EXPECT_LE(m->last_lambda(), 1.0);
      EXPECT_EQ(m->last_indices().numel(), inv->sizes.back()) << "one partner per example of the last batch";
      EXPECT_FALSE(static_cast<bool>(t.state().loss_override));
    }
  }
  if (residual) {  // one gate per block, at its full linear rate after the warmup (0.25 of the run)
    auto sd = std::dynamic_pointer_cast<algorithms::StochasticDepth>(pair[first == "stochastic_depth" ? 0 : 1]);
    ASSERT_EQ(sd->gates().size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_DOUBLE_EQ(sd->gates()[i]->drop_rate, (i + 1) / 3.0 * 0.5);
      EXPECT_EQ(std::dynamic_pointer_cast<ResNet>(model)->blocks()[i]->slot("residual_gate").ptr().get(),
                sd->gates()[i].ptr().get());
    }
  }
  if (dropout) {  // 8 batches in periods of floor(8 / 4) * 2 = 4: the last batch trained period 1's masks
    auto gyro = std::dynamic_pointer_cast<algorithms::GyroDropout>(pair[first == "gyro_dropout" ? 0 : 1]);
    ASSERT_EQ(gyro->layers().size(), 1u);
    EXPECT_EQ(gyro->layers()[0]->period(), 1);
    auto* layer = model->slot("dropout").ptr()->as<algorithms::GyroDropoutLayerImpl>();
    ASSERT_NE(layer, nullptr);
    EXPECT_EQ(layer->masks(), gyro->layers()[0]);
  }
  if (has("weight_standardization")) {  // every conv in a slot, also inside blurpool's and squeeze-excite's wrappers
    int64_t standardized = 0;
    for (const auto& m : model->modules()) standardized += m->as<algorithms::WeightStandardizedConvImpl>() != nullptr;
    // ResNet-8: stem, 6 block convs, 2 projections; CNN: 3 convs (5 when factorize splits conv2 and conv3)
    EXPECT_EQ(standardized, resnet ? 9 : has("factorize") ? 5 : 3);
  }
  auto conv2 = resnet ? nullptr : model->slot("conv2").ptr();
  if (has("squeeze_excite") && !resnet) {  // conv2 (8 -> 16) and conv3 (16 -> 32) got SE blocks, conv1 (1 -> 8) none
    auto* se = conv2->as<algorithms::SqueezeExciteConv2dImpl>();
    ASSERT_NE(se, nullptr);
    EXPECT_NE(model->slot("conv3").ptr()->as<algorithms::SqueezeExciteConv2dImpl>(), nullptr);
    EXPECT_EQ(model->slot("conv1").ptr()->as<algorithms::SqueezeExciteConv2dImpl>(), nullptr);
    conv2 = se->slot("conv").ptr();  // blurpool (ordered after it) blurs the conv inside
    if (!has("layer_freezing")) EXPECT_TRUE(opt->contains(se->se->fc1->weight)) << "new parameters in the optimizer";
  }
  if (has("factorize") && !resnet) {  // conv2 (8 -> 16, rank 2), conv3 (16 -> 32, rank 4) and fc (32 -> 4, rank 2); not conv1
    auto* factors = conv2->as<algorithms::FactorizedConv2dImpl>();  // (inside SE's slot, ordered before it)
    ASSERT_NE(factors, nullptr);
    EXPECT_EQ(factors->rank(), 2);
    EXPECT_NE(model->slot("fc").ptr()->as<algorithms::FactorizedLinearImpl>(), nullptr);
    EXPECT_EQ(model->slot("conv1").ptr()->as<algorithms::FactorizedConv2dImpl>(), nullptr);
    const auto second = factors->slot("module1").ptr();  // standardized by weight_standardization (ordered after it)
    const at::Tensor second_weight = has("weight_standardization")
                                         ? second->as<algorithms::WeightStandardizedConvImpl>()->weight
                                         : second->as<torch::nn::Conv2dImpl>()->weight;
    if (!has("layer_freezing")) EXPECT_TRUE(opt->contains(second_weight)) << "the factors in the optimizer";
    conv2 = factors->slot("module0").ptr();  // blurpool (ordered after it) blurs the strided factor
  }
  if (has("ghost_batchnorm") && !resnet) {
    for (const char* bn : {"bn1", "bn2", "bn3"}) {
      auto* ghost = model->slot(bn).ptr()->as<algorithms::GhostBatchNormLayerImpl>();
      ASSERT_NE(ghost, nullptr) << bn;
      // At least one ghost batch per microbatch of 8 or 16 rows, so more updates than batches (4 per epoch).
      if (!has("ema")) EXPECT_GT(ghost->num_batches_tracked.item<int64_t>(), 8) << bn;  // (EMA averages it)
      EXPECT_TRUE(ghost->running_var.isfinite().all().item<bool>()) << bn;
    }
  }
  for (const auto& a : pair) {  // the last batch the model saw has CutOut's holes, on its final size
    if (auto* cut = dynamic_cast<algorithms::CutOut*>(a.get())) {
      ASSERT_EQ(cut->last_holes().size(), 2u);
      for (const auto& h : cut->last_holes()) {
        EXPECT_LE(h.left + h.width, inv->widths.back());
        EXPECT_EQ(inv->last_input.narrow(2, h.top, h.height).narrow(3, h.left, h.width).ne(0).sum().item<int64_t>(), 0);
      }
    }
  }
  if (has("blurpool") && !resnet) {
    EXPECT_NE(conv2->as<algorithms::BlurConv2dImpl>(), nullptr);
    if (has("weight_standardization")) {  // ordered after blurpool: the blurred conv is standardized
      EXPECT_NE(conv2->as<algorithms::BlurConv2dImpl>()->slot("conv").ptr()->as<algorithms::WeightStandardizedConvImpl>(),
                nullptr);
    }
  }
  if (has("channels_last")) {
    for (const auto& p : model->parameters()) {
      if (p.dim() == 4) EXPECT_TRUE(algorithms::is_channels_last(p)) << "channels-last after training";
    }
  }
  if (has("gradient_clipping")) {
    double sum = 0;  // the last step's gradients were clipped (0.01) and are still there
    for (const auto& p : model->parameters()) {
      if (p.grad().defined()) sum += p.grad().pow(2).sum().item<double>();
    }
    EXPECT_LE(std::sqrt(sum), 0.01 + 1e-6);
  }
  if (has("sam")) {  // the double pass on every batch: two forwards per batch, weights put back after the second
    EXPECT_EQ(t.trace().at("sam/after_train_batch").count, 8);
    EXPECT_EQ(inv->sizes.size(), 16u);
  }
  for (const auto& a : pair) {
    auto ema = std::dynamic_pointer_cast<algorithms::EMA>(a);
    if (!ema) continue;
    // The completed run left the averages in the model, over its final structure (after any surgery at init).
    ASSERT_TRUE(ema->holds_averaged_weights());
    const auto averages = ema->averages();
    size_t i = 0;
    for (const auto& item : model->named_parameters(true)) {
      ASSERT_LT(i, averages.size());
      EXPECT_EQ(averages[i].first, "param/" + item.key());
      EXPECT_TRUE(at::equal(averages[i++].second, item.value())) << item.key();
    }
    for (const auto& item : model->named_buffers(true)) {
      ASSERT_LT(i, averages.size());
      EXPECT_EQ(averages[i].first, "buffer/" + item.key());
      EXPECT_TRUE(at::equal(averages[i++].second, item.value())) << item.key();
    }
    EXPECT_EQ(i, averages.size());
  }
  for (const auto& a : pair) {  // the average replaced the weights; the SWA learning rate held to the end
    auto swa = std::dynamic_pointer_cast<algorithms::SWA>(a);
    if (!swa) continue;
    EXPECT_TRUE(swa->finished());
    EXPECT_GT(swa->count(), 0);
    for (const auto& g : opt->param_groups()) EXPECT_DOUBLE_EQ(g.lr, 0.01);
  }
  if (has("layer_freezing")) {
    // Every model parameter is either trainable and in the optimizer, or frozen and out of it.
    for (const auto& p : model->parameters()) EXPECT_EQ(p.requires_grad(), opt->contains(p));
  }
}

std::vector<std::pair<std::string, std::string>> pairs() {
  const std::vector<std::string> names{"augmix", "blurpool", "channels_last", "colout", "cutmix", "cutout", "ema",
                                       "factorize", "ghost_batchnorm", "gradient_clipping", "gyro_dropout",
                                       "label_smoothing",
                                       "layer_freezing", "mixup", "progressive_resizing", "randaugment", "sam",
                                       "selective_backprop", "squeeze_excite", "stochastic_depth", "swa",
                                       "weight_standardization"};
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < names.size(); ++i) {
    for (size_t j = i + 1; j < names.size(); ++j) out.emplace_back(names[i], names[j]);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(ShippedAlgorithms, Pairwise, ::testing::ValuesIn(pairs()),
                         [](const auto& info) { return info.param.first + "_" + info.param.second; });

TEST(Composition, InteractionsDocumentIsUpToDate) {
  std::ifstream in(std::string(TESSERA_SOURCE_DIR) + "/docs/interactions.md");
  ASSERT_TRUE(in.good()) << "docs/interactions.md is missing: run tessera-run --interactions > docs/interactions.md";
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), interactions_markdown())
      << "docs/interactions.md is stale: run tessera-run --interactions > docs/interactions.md";
}

// ---------------------------------------------------------------------------------------------------------------
// examples/recipes/fashion_mnist_everything.yaml: every compatible algorithm at once (issue 16).

/// Records "ba<batch> <weights fingerprint>" at FitStart and after every batch; at BatchEnd of `stop_after`
/// (when > 0) stops training, as a job whose time is up.
class FingerprintTrail : public Callback {
 public:
  explicit FingerprintTrail(int64_t stop_after = 0) : stop_after_(stop_after) {}
  std::string name() const override { return "fingerprint_trail"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event != Event::FitStart && event != Event::BatchEnd) return;
    lines.push_back(fmt::format("ba{} {}", s.timestamp.batch, weights_fingerprint(*s.model)));
    if (event == Event::BatchEnd && s.timestamp.batch == stop_after_) s.stop_training();
  }
  std::vector<std::string> lines;

 private:
  int64_t stop_after_;
};

/// The recipe on 128 Fashion-MNIST training images in batches of 32 for 4 epochs (16 batches), so that every
/// algorithm acts within the run: its time options are fractions of the run or in epochs.
Recipe everything_recipe(std::vector<std::string> overrides = {}) {
  overrides.insert(overrides.begin(),
                   {"data.train.dataset={fashion_mnist: {split: train, limit: 128}}", "data.train.loader.batch_size=32",
                    "data.eval.dataset={fashion_mnist: {split: test, limit: 64}}", "max_duration=4ep", "callbacks=[]",
                    "loggers=[]", "run_dir=\"\"", "checkpoint={}",
                    // the macro averages too, and each class's precision: evaluated after every algorithm, and equal
                    // in the resumed runs' logs
                    "data.eval.metrics=[accuracy, cross_entropy, {precision: {per_class: true}}, f1]"});
  return Recipe::load(std::string(TESSERA_SOURCE_DIR) + "/examples/recipes/fashion_mnist_everything.yaml", overrides);
}

/// The everything recipe on a ResNet with GroupNorms under bf16 autocast (its evaluations too), ghost batchnorm
/// (which needs BatchNorms) swapped for low-precision GroupNorm (which needs GroupNorms and mixed precision): the
/// sixth entry of its list.
Recipe group_norm_everything_recipe(std::vector<std::string> overrides = {}) {
  overrides.insert(overrides.begin(), {"model.resnet.norm=group", "precision=amp_bf16", "eval_precision=amp_bf16",
                                       "algorithms[5]={low_precision_groupnorm: {}}"});
  return everything_recipe(overrides);
}

/// The algorithms that only a language model takes (fortunes_gpt_everything.yaml composes them).
const std::set<std::string> kSequenceMethods{"alibi", "gated_linear_units", "low_precision_layernorm",
                                             "seq_length_warmup"};

/// The text recipe on 64 sequences of 32 bytes in batches of 16 for 4 epochs (16 batches), so that every algorithm
/// acts within the run.
Recipe text_everything_recipe(std::vector<std::string> overrides = {}) {
  overrides.insert(overrides.begin(),
                   {"data.train.dataset={text: {split: train, seq_length: 32, limit: 64}}", "data.train.loader.batch_size=16",
                    "data.eval.dataset={text: {split: test, seq_length: 32, limit: 16}}", "model.gpt.d_model=32",
                    "model.gpt.n_layers=2", "model.gpt.n_heads=2", "max_duration=4ep", "callbacks=[]", "loggers=[]",
                    "run_dir=\"\"", "checkpoint={}", "data.eval.metrics=[accuracy, cross_entropy, perplexity, recall]"});
  return Recipe::load(std::string(TESSERA_SOURCE_DIR) + "/examples/recipes/fortunes_gpt_everything.yaml", overrides);
}

bool fortunes_installed() { return std::filesystem::exists("/usr/share/games/fortunes/fortunes"); }

bool fashion_mnist_installed() {
  return std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
}

TEST(Composition, EveryCompatibleAlgorithmRecipeHasThemAllAndOnlyTheDeclaredWarnings) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "Fashion-MNIST is not installed (apt install dataset-fashion-mnist)";
  tessera::Run run = build_run(everything_recipe());
  std::set<std::string> in_recipe;
  for (const auto& a : run.components.algorithms) in_recipe.insert(a->name());
  std::set<std::string> expected;
  for (const auto& name : registered_names("algorithms")) {
    // CutMix is refused beside MixUp, the no-op model beside model surgery; the sequence methods need a language
    // model (the text recipe below has them); low-precision GroupNorm needs GroupNorms and mixed precision (the
    // group-norm variant below has it).
    if (name != "cutmix" && name != "no_op_model" && name != "low_precision_groupnorm" &&
        kSequenceMethods.count(name) == 0) {
      expected.insert(name);
    }
  }
  EXPECT_EQ(in_recipe, expected) << "a new algorithm belongs in fashion_mnist_everything.yaml";
  // The group-norm variant: the same but ghost batchnorm, swapped for low-precision GroupNorm.
  std::set<std::string> in_group_norm_recipe;
  for (const auto& a : build_run(group_norm_everything_recipe()).components.algorithms) {
    in_group_norm_recipe.insert(a->name());
  }
  expected.erase("ghost_batchnorm");
  expected.insert("low_precision_groupnorm");
  EXPECT_EQ(in_group_norm_recipe, expected);
  Trainer trainer(run.trainer, std::move(run.components));
  // Compatible, with the two soft conflicts declared as warnings: AugMix with RandAugment (compounding distortions)
  // and SWA with EMA (EMA's averages, not SWA's, are the final model).
  std::vector<std::string> pairs;
  for (const auto& w : trainer.plan().warnings()) pairs.push_back(w.substr(0, w.find(" may not compose well: ")));
  EXPECT_THAT(pairs, ::testing::UnorderedElementsAre("augmix and randaugment", "swa and ema"))
      << ::testing::PrintToString(trainer.plan().warnings());
  // And the one left out is refused with the reason.
  const std::string refused = testing::input_error_of([] {
    make_trainer(everything_recipe({"algorithms=[mixup, cutmix]"}));
  });
  EXPECT_NE(refused.find("mixup and cutmix cannot be combined"), std::string::npos) << refused;
}

/// The scalars and pictures of a TensorBoard file, each event without its wall time (the notes, the settings and
/// the profiler's messages name folders and checkpoints, so a stopped and resumed run's differ from one run's).
std::vector<std::string> scalars_and_images(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> out;
  for (auto& event : testing::tfevents_payloads(std::string(std::istreambuf_iterator<char>(in), {}))) {
    const std::string tag = testing::first_tag(event);
    if (tag.rfind("log/", 0) == 0 || tag == "hyperparameters" || tag.rfind("_hparams_/", 0) == 0) continue;
    out.push_back(std::move(event));
  }
  return out;
}

/// Trains the recipe `make({})` makes (16 batches) while recording the weights after every batch, then stops it
/// after batches 7 (mid-epoch, the schedules running) and 13 (averaging, layers frozen) and resumes a trainer built
/// afresh from the recipe: the same weights after every batch. The stopped and resumed runs trace every batch with
/// the profiler, which must change nothing. Every run writes a TensorBoard file (with `images`, image_visualizer's
/// grids too, every third batch): the stopped and resumed runs' one file holds the same scalars and pictures as the
/// uninterrupted run's, and the evaluation the stop brought; activation_monitor logs every layer's activations every
/// fifth batch into it, the layers surgery put in included. `optimizer` replaces the recipe's (each caller gives
/// another optimizer with parameter groups, so that every algorithm runs with every optimizer's kind of state).
void expect_trains_and_resumes_bitwise(const std::function<Recipe(std::vector<std::string>)>& make, const std::string& name,
                                       bool images, const std::string& optimizer) {
  const auto logged = [&](const std::string& folder, std::vector<std::string> overrides) {
    overrides.push_back("optimizer=" + optimizer);
    overrides.push_back("loggers=[{tensorboard: {path: " + folder + "/events.out.tfevents.x}}]");
    overrides.push_back(std::string("callbacks=[{activation_monitor: {interval: 5}}") +
                        (images ? ", {image_visualizer: {interval: 3, num_images: 4}}]" : "]"));
    return make(overrides);
  };
  const std::string whole = (std::filesystem::temp_directory_path() /
                             ("tessera_" + name + "_" + std::to_string(::getpid()) + "_whole"))
                                .string();
  std::filesystem::remove_all(whole);
  auto trail = std::make_shared<FingerprintTrail>();
  {
    tessera::Run run = build_run(logged(whole, {}));
    run.components.callbacks.push_back(trail);
    Trainer trainer(run.trainer, std::move(run.components));
    trainer.fit();
    EXPECT_TRUE(std::isfinite(trainer.state().loss.item<double>()));
  }
  ASSERT_EQ(trail->lines.size(), 17u);  // FitStart and 16 batches
  const std::vector<std::string> whole_events = scalars_and_images(whole + "/events.out.tfevents.x");
  std::filesystem::remove_all(whole);
  size_t pictures = 0, activations = 0;
  for (const auto& e : whole_events) {
    pictures += testing::first_tag(e).rfind("images/", 0) == 0;
    activations += testing::first_tag(e).rfind("activations/", 0) == 0;
  }
  EXPECT_GT(activations, 0u) << "activation_monitor logged nothing";
  EXPECT_TRUE(std::any_of(whole_events.begin(), whole_events.end(), [](const std::string& e) {
    return e.find("metrics/test/f1") != std::string::npos || e.find("metrics/test/recall") != std::string::npos;
  })) << "the macro average the recipes evaluate is in the logs";
  const auto in_logs = [&](const char* key) {
    return std::any_of(whole_events.begin(), whole_events.end(),
                       [&](const std::string& e) { return e.find(key) != std::string::npos; });
  };
  if (make({}).text().find("per_class: true") != std::string::npos) {  // the image recipes' precision
    EXPECT_TRUE(in_logs("metrics/test/precision/class_9")) << "each class's precision is in the logs";
  }
  EXPECT_EQ(pictures, images ? 6u + 4u : 0u);  // batches 0, 3, ..., 15; the first batch of each of 4 evaluations
  for (const int64_t k : {7, 13}) {
    SCOPED_TRACE("stopped after batch " + std::to_string(k));
    const std::string folder = (std::filesystem::temp_directory_path() /
                                ("tessera_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(k)))
                                   .string();
    std::filesystem::remove_all(folder);
    const std::string ck = "checkpoint={folder: " + folder + ", interval: 1ep, autoresume: true}";
    const std::string traced = "profiler={warmup: 0, active: 4, repeat: 0, folder: " + folder + "/traces}";
    auto first = std::make_shared<FingerprintTrail>(k);
    {
      tessera::Run run = build_run(logged(folder, {ck, traced}));
      run.components.callbacks.push_back(first);
      Trainer trainer(run.trainer, std::move(run.components), run.checkpoint);
      trainer.fit();
      EXPECT_FALSE(trainer.traces().empty());
    }
    EXPECT_EQ(first->lines, std::vector<std::string>(trail->lines.begin(), trail->lines.begin() + k + 1));
    auto resumed = std::make_shared<FingerprintTrail>();
    {
      tessera::Run run = build_run(logged(folder, {ck, traced}));
      run.components.callbacks.push_back(resumed);
      Trainer trainer(run.trainer, std::move(run.components), run.checkpoint);
      trainer.fit();
      EXPECT_FALSE(trainer.traces().empty());
    }
    EXPECT_EQ(resumed->lines, std::vector<std::string>(trail->lines.begin() + k, trail->lines.end()));
    // The stopped run evaluated when it stopped (after batch k, which is no evaluation point here) and checkpointed
    // after that evaluation: its file keeps those events; every other one is the uninterrupted run's.
    std::vector<std::string> events = scalars_and_images(folder + "/events.out.tfevents.x"), at_stop;
    for (auto it = events.begin(); it != events.end();) {
      const std::string tag = testing::first_tag(*it);
      const bool evaluation = tag.rfind("metrics/test/", 0) == 0 || tag.rfind("images/test", 0) == 0;
      if (evaluation && it->rfind("\x10" + std::string(1, static_cast<char>(k)), 0) == 0) {
        at_stop.push_back(*it);
        it = events.erase(it);
      } else {
        ++it;
      }
    }
    EXPECT_EQ(at_stop.size(), images ? 2u : 1u);  // the metrics, and the evaluation's first batch as a picture
    EXPECT_EQ(events, whole_events);
    std::filesystem::remove_all(folder);
  }
}

TEST(Composition, EveryCompatibleAlgorithmRecipeTrainsAndResumesBitwise) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "Fashion-MNIST is not installed (apt install dataset-fashion-mnist)";
  // The recipe's SGD with squeeze_excite's gates (added at init) in a group of their own, no decay on 1-D parameters.
  expect_trains_and_resumes_bitwise(everything_recipe, "everything", true,
                                    "{sgd: {lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4, groups: "
                                    "[{names: [\"*.se.*\"], lr: 0.2}, {max_dims: 1, weight_decay: 0}]}}");
}

TEST(Composition, EveryCompatibleAlgorithmOnGroupNormsUnderAutocastTrainsAndResumesBitwise) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "Fashion-MNIST is not installed (apt install dataset-fashion-mnist)";
  expect_trains_and_resumes_bitwise(group_norm_everything_recipe, "group_norm_everything", true,
                                    "{adam: {lr: 1.0e-3, weight_decay: 1.0e-4, amsgrad: true, groups: "
                                    "[{max_dims: 1, weight_decay: 0}]}}");
}

TEST(Composition, EveryCompatibleAlgorithmUnderACycledMomentumTrainsAndResumesBitwise) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "Fashion-MNIST is not installed (apt install dataset-fashion-mnist)";
  // onecycle sets AdamW's beta1 every batch (a function of time, so the resumed runs set the same), beside what the
  // algorithms do to the optimizer: SAM's second step, layer freezing, surgery's new parameters, SWA's lr.
  const auto with_one_cycle = [](std::vector<std::string> overrides) {
    overrides.push_back("schedulers=[{onecycle: {pct_start: 0.3, cycle_momentum: true, base_momentum: 0.8}}]");
    return everything_recipe(overrides);
  };
  expect_trains_and_resumes_bitwise(
      with_one_cycle, "everything_cycled_momentum", false,
      "{adamw: {lr: 1.0e-3, weight_decay: 0.05, groups: [{max_dims: 1, weight_decay: 0}]}}");
}

TEST(Composition, EveryCompatibleAlgorithmTrainedInPartsTakesTheStepsOfTheRunInOneGo) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "Fashion-MNIST is not installed (apt install dataset-fashion-mnist)";
  // fit(until) pauses inside an epoch (batch 7: the schedules running) and at an epoch's end (batch 12: averaging,
  // layers frozen), with an evaluation at each pause (EMA and SWA swap their weights in and out for it); every
  // algorithm's state stays as it was, so each batch ends with the weights of the run in one go.
  const auto trail_of = [](const std::vector<std::string>& untils) {
    tessera::Run run = build_run(everything_recipe());
    auto trail = std::make_shared<FingerprintTrail>();
    run.components.callbacks.push_back(trail);
    Trainer trainer(run.trainer, std::move(run.components));
    for (const auto& until : untils) {
      trainer.fit(Time::parse(until));
      EXPECT_FALSE(trainer.evaluate().empty());
    }
    trainer.fit();
    return trail->lines;
  };
  const std::vector<std::string> whole = trail_of({});
  ASSERT_EQ(whole.size(), 17u);  // FitStart and 16 batches
  EXPECT_EQ(trail_of({"7ba", "3ep"}), whole);
}

/// Every other optimizer (the tests above train SGD, Adam with AMSGrad, Muon and LAMB) with every compatible
/// algorithm: each keeps its own kind of state (second moments, factored moments, accumulators, momentum buffers,
/// trust ratios) through surgery, freezing, SAM's second step, SWA and EMA, in parameter groups, and resumes it
/// bitwise. `*.se.*` selects the squeeze-excite gates that surgery adds at init.
class EveryOptimizer : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(EveryOptimizer, WithEveryCompatibleAlgorithmTrainsAndResumesBitwise) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "Fashion-MNIST is not installed (apt install dataset-fashion-mnist)";
  const auto& [name, entry] = GetParam();
  expect_trains_and_resumes_bitwise(everything_recipe, "everything_" + name, false, entry);
}

INSTANTIATE_TEST_SUITE_P(
    Composition, EveryOptimizer,
    ::testing::Values(
        std::pair{"adamw", "{adamw: {lr: 1.0e-3, weight_decay: 0.05, amsgrad: true, decoupled_weight_decay: true, "
                           "groups: [{max_dims: 1, weight_decay: 0}]}}"},
        std::pair{"lion", "{lion: {lr: 1.0e-4, weight_decay: 0.1, groups: [{names: [\"*.se.*\"], lr: 2.0e-4}, "
                          "{max_dims: 1, weight_decay: 0}]}}"},
        std::pair{"nadam", "{nadam: {lr: 2.0e-3, weight_decay: 0.01, decoupled_weight_decay: true, "
                           "groups: [{max_dims: 1, weight_decay: 0}]}}"},
        std::pair{"radam", "{radam: {lr: 1.0e-3, weight_decay: 1.0e-4, groups: [{max_dims: 1, weight_decay: 0}]}}"},
        std::pair{"rmsprop", "{rmsprop: {lr: 1.0e-3, momentum: 0.9, centered: true, weight_decay: 1.0e-4, "
                             "groups: [{names: [\"*.se.*\"], lr: 2.0e-3}]}}"},
        std::pair{"adagrad", "{adagrad: {lr: 0.01, lr_decay: 0.01, initial_accumulator_value: 0.1, "
                             "weight_decay: 1.0e-4, groups: [{max_dims: 1, weight_decay: 0}]}}"},
        std::pair{"lars", "{lars: {lr: 1.0, momentum: 0.9, weight_decay: 5.0e-4, trust_clip: true, "
                          "groups: [{max_dims: 1, weight_decay: 0}]}}"},
        std::pair{"adamax", "{adamax: {lr: 2.0e-3, weight_decay: 1.0e-4, groups: [{max_dims: 1, weight_decay: 0}]}}"},
        std::pair{"adadelta", "{adadelta: {lr: 1.0, rho: 0.9, weight_decay: 1.0e-4, "
                              "groups: [{max_dims: 1, weight_decay: 0}]}}"},
        std::pair{"adafactor",
                  "{adafactor: {lr: 0.01, weight_decay: 0.01, groups: [{max_dims: 1, weight_decay: 0}]}}"}),
    [](const ::testing::TestParamInfo<std::pair<std::string, std::string>>& info) { return info.param.first; });

TEST(Composition, EveryLanguageModelAlgorithmRecipeHasThemAllAndOnlyTheDeclaredWarning) {
  if (!fortunes_installed()) GTEST_SKIP() << "the fortunes text is not installed (apt install fortunes)";
  tessera::Run run = build_run(text_everything_recipe());
  std::set<std::string> in_recipe;
  for (const auto& a : run.components.algorithms) in_recipe.insert(a->name());
  // Every algorithm that trains a GPT: the four sequence methods and those the language-model composition test
  // finds training on text.
  const std::set<std::string> expected{"alibi", "ema", "factorize", "gated_linear_units", "gradient_clipping",
                                       "gyro_dropout", "label_smoothing", "layer_freezing", "low_precision_layernorm",
                                       "sam", "selective_backprop", "seq_length_warmup", "stochastic_depth", "swa"};
  EXPECT_EQ(in_recipe, expected) << "a new algorithm that trains a GPT belongs in fortunes_gpt_everything.yaml";
  for (const auto& name : kSequenceMethods) EXPECT_EQ(expected.count(name), 1u) << name;
  Trainer trainer(run.trainer, std::move(run.components));
  std::vector<std::string> pairs;
  for (const auto& w : trainer.plan().warnings()) pairs.push_back(w.substr(0, w.find(" may not compose well: ")));
  EXPECT_THAT(pairs, ::testing::UnorderedElementsAre("swa and ema")) << ::testing::PrintToString(trainer.plan().warnings());
}

TEST(Composition, EveryLanguageModelAlgorithmRecipeTrainsAndResumesBitwise) {
  if (!fortunes_installed()) GTEST_SKIP() << "the fortunes text is not installed (apt install fortunes)";
  // Muon: the matrices that surgery adds (gated linear units, factorize) or freezing removes keep their update.
  expect_trains_and_resumes_bitwise(text_everything_recipe, "text_everything", false,
                                    "{muon: {lr: 0.02, weight_decay: 0.01, adamw_names: [\"embed.*\", "
                                    "\"pos_embed.*\", \"head.*\"], adamw_lr: 3.0e-3, groups: [{max_dims: 1, "
                                    "weight_decay: 0}]}}");
}

/// The same algorithms on the bert model, which learns from masked tokens.
Recipe bert_everything_recipe(std::vector<std::string> overrides = {}) {
  overrides.insert(overrides.begin(), {"model={bert: {d_model: 32, n_layers: 2, n_heads: 2, dropout: 0.1, "
                                       "attention_dropout: 0.1}}",
                                       "data.train.transforms=[mask_tokens]", "data.eval.transforms=[mask_tokens]"});
  return text_everything_recipe(overrides);
}

TEST(Composition, EveryLanguageModelAlgorithmOnBertTrainsAndResumesBitwise) {
  if (!fortunes_installed()) GTEST_SKIP() << "the fortunes text is not installed (apt install fortunes)";
  expect_trains_and_resumes_bitwise(bert_everything_recipe, "bert_everything", false,
                                    "{lamb: {lr: 3.0e-3, weight_decay: 1.0e-2, trust_clip: true, groups: "
                                    "[{max_dims: 1, weight_decay: 0}]}}");
}

}  // namespace
}  // namespace tessera
