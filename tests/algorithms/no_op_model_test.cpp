// No-op model: the stand-in's outputs, loss and gradient; the algorithm swaps the model and the optimizer's
// parameters at Init and the real model never trains; what it is refused with; every other algorithm with it either
// trains or is refused before step 1 with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/no_op_model.h>
#include <tessera/optim/optimizer.h>

#include "support.h"

namespace tessera {
namespace {

using algorithms::make_no_op_model;
using algorithms::NoOpModel;
using algorithms::NoOpModelImpl;

TEST(NoOpModel, StandInScoresTheTargetsAndLearnsFromCrossEntropy) {
  auto model = testing::tiny_model();
  auto stand_in = make_no_op_model(*model);
  EXPECT_EQ(stand_in->num_classes(), 3);
  ASSERT_EQ(stand_in->parameters().size(), 1u);
  EXPECT_EQ(stand_in->weight().item<double>(), 1.5);
  // Class targets [N]: one-hot scores [N, C] times the weight, so the argmax is the target.
  const Batch b = testing::tiny_data(6)->get_batch({0, 1, 2, 3, 4, 5});
  const at::Tensor out = stand_in->forward(b);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{6, 3}));
  EXPECT_TRUE(at::equal(out, at::one_hot(b.target(), 3).to(at::kFloat) * 1.5));
  EXPECT_TRUE(at::equal(out.argmax(1), b.target()));
  // Its loss is cross-entropy against the targets, per example too, with a gradient for the weight.
  const at::Tensor loss = stand_in->loss(out, b);
  EXPECT_TRUE(at::allclose(loss, at::cross_entropy_loss(out, b.target())));
  EXPECT_EQ(stand_in->loss(out, b, Reduction::None).sizes(), (std::vector<int64_t>{6}));
  loss.backward();
  EXPECT_LT(stand_in->weight().grad().item<double>(), 0.0);  // a larger weight, a surer (right) prediction
  // Token targets [N, S]: scores [N, C, S], classes in dimension 1.
  auto gpt = testing::tiny_gpt();
  const Batch text = testing::tiny_text(2)->get_batch({0, 1});
  const at::Tensor token_scores = make_no_op_model(*gpt)->forward(text);
  ASSERT_EQ(token_scores.sizes(), (std::vector<int64_t>{2, 16, 8}));
  EXPECT_TRUE(at::equal(token_scores.argmax(1), text.target()));
  // Dense targets [N, C] are the scores.
  Batch soft = b;
  soft.set(Batch::kTarget, at::softmax(at::randn({6, 3}), 1));
  EXPECT_TRUE(at::allclose(stand_in->forward(soft), soft.target() * 1.5));
}

TEST(NoOpModel, ReplacesTheModelAndTheOptimizersParametersAndTheModelNeverTrains) {
  Components c = testing::tiny_components();
  auto original = c.model;
  const std::string before = weights_fingerprint(*original);
  auto optimizer = c.optimizer;
  auto no_op = std::make_shared<NoOpModel>();
  c.algorithms = {no_op};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  auto* stand_in = dynamic_cast<NoOpModelImpl*>(trainer.state().model.get());
  ASSERT_NE(stand_in, nullptr) << "the model was not replaced at Init";
  ASSERT_EQ(optimizer->param_groups().size(), 1u);
  ASSERT_EQ(optimizer->param_groups()[0].params.size(), 1u);
  EXPECT_TRUE(optimizer->contains(stand_in->weight()));
  for (const auto& p : original->parameters()) EXPECT_FALSE(optimizer->contains(p));
  trainer.fit();
  EXPECT_EQ(trainer.state().timestamp.batch, 12);  // 48 examples in batches of 8, 2 epochs
  EXPECT_EQ(weights_fingerprint(*original), before);
  EXPECT_GT(stand_in->weight().item<double>(), 1.5);  // SGD raised it: every prediction is right
  // Its evaluation is meaningless but runs: the stand-in predicts the labels.
  EXPECT_EQ(trainer.state().metrics.at("metrics/eval/accuracy"), 1.0);
}

TEST(NoOpModel, IsRefusedWithModelSurgeryAndOnAModelWithoutClasses) {
  Components c = testing::tiny_components();
  c.algorithms = {std::make_shared<NoOpModel>(), std::make_shared<algorithms::BlurPool>()};
  EXPECT_NE(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); })
                .find("no_op_model and blurpool cannot be combined: no_op_model replaces the whole model by a "
                      "stand-in, so the other's model surgery would change a model that never trains"),
            std::string::npos);
  EXPECT_NE(testing::input_error_of([] { NoOpModelImpl stand_in(0); }).find("expected >= 1"), std::string::npos);
  // A model that does not say its classes (a user's module) takes the data's; without either, an error.
  struct Unknown : Model {
    at::Tensor forward(const Batch& b) override { return b.input(); }
    at::Tensor loss(const at::Tensor& out, const Batch& b, Reduction r) override { return cross_entropy(out, b.target(), r); }
  } unknown;
  EXPECT_EQ(make_no_op_model(unknown, 7)->num_classes(), 7);
  EXPECT_NE(testing::input_error_of([&] { make_no_op_model(unknown); }).find("no_op_model needs the number of classes"),
            std::string::npos);
  // Parameter groups would select nothing of the stand-in: refused before step 1.
  Components grouped = testing::tiny_components();
  grouped.optimizer = std::make_shared<optim::SGD>(
      grouped.model->named_parameters(), optim::SGDOptions().groups({optim::ParamGroupOptions().max_dims(1).lr(1)}));
  grouped.algorithms = {std::make_shared<NoOpModel>()};
  EXPECT_NE(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(grouped)); })
                .find("the optimizer's 1 parameter groups (groups:) would select nothing; leave groups out"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------------------------
// Every other algorithm with the no-op model, on a CNN over 16x16 images: trains, or is refused before step 1.

/// Recipe text: a CNN trained 6 batches on synthetic images with the no-op model and `algorithm` (a recipe entry);
/// the test gives it images in [0, 1] instead.
std::string recipe(const std::string& algorithm) {
  return fmt::format(R"(
max_duration: 6ba
seed: 1
threads: 1
run_dir: {}
model: {{cnn: {{width: 8}}}}
data:
  train:
    dataset: {{synthetic: {{size: 48, input_shape: [1, 16, 16], num_classes: 4}}}}
    loader: {{batch_size: 8}}
optimizer: {{sgd: {{lr: 0.05}}}}
algorithms: [no_op_model, {}]
callbacks: []
loggers: []
)",
                     (std::filesystem::temp_directory_path() / "tessera_no_op_runs").string(), algorithm);
}

/// Options that make each algorithm act within 6 batches where the defaults would not.
std::string entry(const std::string& name) {
  static const std::map<std::string, std::string> eager = [] {
    auto out = testing::short_run_entries();
    out["progressive_resizing"] = "{progressive_resizing: {delay_fraction: 0}}";
    out["augmix"] = "{augmix: {width: 2}}";
    return out;
  }();
  return testing::entry_of(name, eager);
}

/// The algorithms refused with the no-op model, and the start of the reason (model surgery, or a refusal of their
/// own on this run).
const std::map<std::string, std::string>& refused_with_no_op() {
  static const std::map<std::string, std::string> refused = [] {
    std::map<std::string, std::string> out;
    for (const char* name : {"alibi", "blurpool", "factorize", "gated_linear_units", "ghost_batchnorm",
                             "gyro_dropout", "squeeze_excite", "stochastic_depth", "weight_standardization"}) {
      out[name] = fmt::format("no_op_model and {} cannot be combined: no_op_model replaces the whole model", name);
    }
    out["low_precision_groupnorm"] = "no_op_model and low_precision_groupnorm cannot be combined";
    out["low_precision_layernorm"] = "no_op_model and low_precision_layernorm cannot be combined";
    out["seq_length_warmup"] = "seq_length_warmup: ";  // token sequences, not images
    return out;
  }();
  return refused;
}

class WithNoOpModel : public ::testing::TestWithParam<std::string> {};

TEST_P(WithNoOpModel, TrainsOrIsRefusedBeforeStepOne) {
  const std::string name = GetParam();
  auto make = [&] {
    tessera::Run run = build_run(Recipe::parse(recipe(entry(name)), "<string>"));
    // Images with intensities in [0, 1], as RandAugment and AugMix need.
    run.components.train_dataloader = testing::loader(
        testing::unit_interval(*data::make_synthetic(
            data::SyntheticOptions().size(48).input_shape({1, 16, 16}).num_classes(4))),
        8);
    return std::make_unique<Trainer>(run.trainer, std::move(run.components));
  };
  auto trainer = testing::trainer_unless_refused(name, make, refused_with_no_op());
  if (!trainer) return;  // refused, with the expected reason
  trainer->fit();
  EXPECT_EQ(trainer->state().timestamp.batch, 6);
  EXPECT_TRUE(std::isfinite(trainer->state().loss.item<double>()));
  EXPECT_NE(dynamic_cast<NoOpModelImpl*>(trainer->state().model.get()), nullptr);
  EXPECT_GT(testing::times_acted(*trainer, name), 0) << name << " never acted";
}

std::vector<std::string> others() {
  std::vector<std::string> out;
  for (const auto& name : registered_names("algorithms")) {
    if (name != "no_op_model") out.push_back(name);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(EveryAlgorithm, WithNoOpModel, ::testing::ValuesIn(others()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tessera
