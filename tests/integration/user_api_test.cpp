// The C++ API as users write it (issue 20): the Trainer's parts are checked against each other before Init, so
// that a wrong optimizer, a class-count mismatch or a checkpoint setting fails with the reason before step 1; the
// learning rate is current at batch_start; seeding covers a model built after seed_everything.
#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tessera/algorithms/blurpool.h>

#include "support.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using testing::input_error_of;

TEST(UserApi, OptimizerOverAnotherModulesParametersIsRefused) {
  Components c = testing::tiny_components();
  auto other = testing::tiny_model(1);
  c.optimizer = std::make_shared<optim::SGD>(other->parameters(), optim::SGDOptions().lr(0.1));
  const std::string msg = input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_THAT(msg, HasSubstr("the optimizer does not hold the model's parameters"));
  EXPECT_THAT(msg, HasSubstr("4 of the model's 4 trainable parameters are missing from the optimizer "
                             "(net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias)"));
  EXPECT_THAT(msg, HasSubstr("4 of the optimizer's 4 parameters are not the model's (a tensor of shape [8, 16]"));
  EXPECT_THAT(msg, HasSubstr("model->parameters()"));
}

TEST(UserApi, OptimizerMissingSomeParametersNamesThem) {
  Components c = testing::tiny_components();
  auto params = c.model->named_parameters();
  c.optimizer = std::make_shared<optim::SGD>(std::vector<at::Tensor>{params["net.fc1.weight"], params["net.fc1.bias"]},
                                             optim::SGDOptions().lr(0.1));
  const std::string msg = input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_THAT(msg, HasSubstr("2 of the model's 4 trainable parameters are missing from the optimizer "
                             "(net.fc2.weight, net.fc2.bias)"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("not the model's")));
}

TEST(UserApi, FrozenParametersMayBeMissingFromTheOptimizer) {
  Components c = testing::tiny_components();
  auto params = c.model->named_parameters();
  params["net.fc1.weight"].requires_grad_(false);
  params["net.fc1.bias"].requires_grad_(false);
  c.optimizer = std::make_shared<optim::SGD>(std::vector<at::Tensor>{params["net.fc2.weight"], params["net.fc2.bias"]},
                                             optim::SGDOptions().lr(0.1));
  Trainer t(TrainerOptions().max_duration(Time::parse("1ba")), std::move(c));
  const at::Tensor frozen = params["net.fc1.weight"].clone();
  const at::Tensor trained = params["net.fc2.weight"].clone();
  t.fit();
  EXPECT_TRUE(at::equal(params["net.fc1.weight"], frozen));
  EXPECT_FALSE(at::equal(params["net.fc2.weight"], trained));
}

TEST(UserApi, ClassCountMismatchIsRefusedNamingBoth) {
  Components c = testing::tiny_components();
  c.model = std::make_shared<Classifier<testing::TinyNetImpl>>(std::make_shared<testing::TinyNetImpl>(16, 8, 5), 5);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions());
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(32).input_shape({1, 4, 4}).num_classes(10).seed(3)), 8);
  const std::string msg = input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_THAT(msg, HasSubstr("the model classifies into 5 classes, the training data has 10"));
  EXPECT_THAT(msg, HasSubstr("build the model with num_classes 10"));
}

TEST(UserApi, ClassIdsBeyondTheModelAreRefusedWhenTheDataDoesNotKnowItsClasses) {
  Components c = testing::tiny_components();
  const at::Tensor inputs = at::randn({8, 1, 4, 4});
  const at::Tensor targets = at::arange(8, at::kLong) % 8;  // ids up to 7; the first example has id 0
  const at::Tensor shifted = (targets + 5) % 8;               // the first example has id 5
  c.train_dataloader = testing::loader(std::make_shared<data::TensorDataset>(inputs, shifted, /*num_classes=*/0), 4);
  const std::string msg = input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_THAT(msg, HasSubstr("the training data has class id 5 (in its first batch), but the model classifies into 3 "
                             "classes (ids 0..2)"));
}

/// Records the optimizer's learning rate at batch_start and at after_train_batch (just before the step).
class LrAtEvents : public Callback {
 public:
  std::string name() const override { return "lr_at_events"; }
  void run_event(Event event, State& state, Logger&) override {
    const double lr = state.optimizer->param_groups()[0].lr;
    if (event == Event::BatchStart) at_start.push_back(lr);
    if (event == Event::AfterTrainBatch) at_step.push_back(lr);
  }
  std::vector<double> at_start, at_step;
};

TEST(UserApi, BatchStartSeesTheLearningRateOfItsBatch) {
  Components c = testing::tiny_components();  // SGD lr 0.1, 6 batches per epoch
  c.schedulers = {optim::make_constant_scheduler(optim::ConstantSchedulerOptions().alpha(1.0).warmup(Time::parse("4ba")))};
  auto lr = std::make_shared<LrAtEvents>();
  c.callbacks = {lr};
  Trainer t(TrainerOptions().max_duration(Time::parse("5ba")), std::move(c));
  t.fit();
  // Warmup min(1, (t + 1) / 4): batch 0 trains at 0.025, not at the rate left from the previous batch (0.1).
  const std::vector<double> expected{0.025, 0.05, 0.075, 0.1, 0.1};
  ASSERT_EQ(lr->at_start.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_DOUBLE_EQ(lr->at_start[i], expected[i]) << "batch " << i;
    EXPECT_DOUBLE_EQ(lr->at_step[i], expected[i]) << "batch " << i;
  }
}

TEST(UserApi, SeedEverythingBeforeBuildingGivesTheSameWeightsAndTheTrainerKeepsThem) {
  auto build = [] {
    return std::make_shared<Classifier<testing::TinyNetImpl>>(std::make_shared<testing::TinyNetImpl>(16, 8, 3), 3);
  };
  seed_everything(1234);
  auto a = build();
  seed_everything(1234);
  auto b = build();
  auto unseeded = build();
  EXPECT_EQ(weights_fingerprint(*a), weights_fingerprint(*b));
  for (const auto& item : a->named_parameters()) {
    EXPECT_TRUE(at::equal(item.value(), b->named_parameters()[item.key()])) << item.key();
  }
  EXPECT_NE(weights_fingerprint(*a), weights_fingerprint(*unseeded));

  // The Trainer seeds its own run (another seed here) but never re-initialises the model it is given.
  const std::string before = weights_fingerprint(*a);
  Components c = testing::tiny_components();
  c.model = a;
  c.optimizer = std::make_shared<optim::SGD>(a->parameters(), optim::SGDOptions());
  Trainer t(TrainerOptions().seed(99), std::move(c));
  EXPECT_EQ(weights_fingerprint(*t.state().model), before);
}

TEST(UserApi, AutoresumeWithoutAFolderIsRefusedBeforeSurgery) {
  Components c = testing::tiny_components();
  c.algorithms = {std::make_shared<algorithms::BlurPool>(algorithms::BlurPoolOptions().allow_no_change(true))};
  auto log = std::make_shared<std::vector<std::string>>();
  c.algorithms.push_back(std::make_shared<testing::FakeAlgorithm>(testing::spec_on("init_probe", {Event::Init}), log));
  const std::string msg = input_error_of(
      [&] { Trainer t(TrainerOptions(), std::move(c), CheckpointOptions().autoresume(true)); });
  EXPECT_THAT(msg, HasSubstr("autoresume is on but no checkpoint folder is set"));
  EXPECT_THAT(msg, HasSubstr("CheckpointOptions().folder("));
  EXPECT_TRUE(log->empty()) << "Init ran before the error";
}

TEST(UserApi, AnAlgorithmWithAnEmptyNameIsRefusedAtPlanCompile) {
  Components c = testing::tiny_components();
  c.algorithms = {std::make_shared<testing::FakeAlgorithm>(testing::spec_on("", {Event::BatchStart}))};
  const std::string msg = input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_THAT(msg, HasSubstr("an algorithm has an empty name in its spec (algorithm 1 of the list)"));
}

TEST(UserApi, CheckpointFixesArePhrasedForTheApiCalled) {
  const std::string dir = (std::filesystem::temp_directory_path() / "tessera_user_api_ck").string();
  std::filesystem::remove_all(dir);
  std::string path;
  {
    Trainer t(TrainerOptions().max_duration(Time::parse("1ba")).seed(1), testing::tiny_components(),
              CheckpointOptions().folder(dir));
    t.fit();
    path = t.last_checkpoint();
  }
  ASSERT_FALSE(path.empty());
  // Another seed: a full resume is refused; the fix names the argument of the call, or the option object.
  Trainer other(TrainerOptions().seed(2), testing::tiny_components());
  const std::string by_call = input_error_of([&] { other.load_checkpoint(path); });
  EXPECT_THAT(by_call, HasSubstr("pass weights_only=true to load_checkpoint"));
  EXPECT_THAT(by_call, ::testing::Not(HasSubstr("checkpoint.weights_only")));
  const std::string by_options = input_error_of(
      [&] { Trainer t(TrainerOptions().seed(2), testing::tiny_components(), CheckpointOptions().load_path(path)); });
  EXPECT_THAT(by_options, HasSubstr("CheckpointOptions().weights_only(true)"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tessera
