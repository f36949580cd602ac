// Stopping on a metric: early_stopper and threshold_stopper (include/tessera/callbacks/stoppers.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <tessera/tessera.h>

#include "support.h"

namespace tessera {
namespace {

using callbacks::EarlyStopper;
using callbacks::EarlyStopperOptions;
using callbacks::ThresholdStopper;
using callbacks::ThresholdStopperOptions;
using ::testing::HasSubstr;

/// Feeds `values` to `stopper` as the evaluator "eval"'s `key`, one per epoch from `first_epoch` on; returns the
/// epoch it stopped training at (0: it did not).
int64_t feed(callbacks::MetricStopper& stopper, const std::string& key, const std::vector<double>& values,
             int64_t first_epoch = 1) {
  State state;
  Logger logger;
  for (size_t i = 0; i < values.size(); ++i) {
    state.timestamp.epoch = first_epoch + static_cast<int64_t>(i);
    state.metrics[key] = values[i];
    state.eval_label = "eval";
    stopper.run_event(Event::EvalEnd, state, logger);
    if (state.stop_requested()) return state.timestamp.epoch;
  }
  return 0;
}

TEST(EarlyStopper, StopsWhenTheMetricHasNotImprovedByMinDeltaForThePatience) {
  EarlyStopper stopper(EarlyStopperOptions().monitor("accuracy").patience(Time::parse("2ep")).min_delta(0.02));
  EXPECT_EQ(stopper.key(), "metrics/eval/accuracy");
  EXPECT_TRUE(stopper.greater_is_better());
  // 0.6 at epoch 2 is the best; 0.61 (epoch 4) is not 0.02 better; two epochs later it stops.
  EXPECT_EQ(feed(stopper, "metrics/eval/accuracy", {0.5, 0.6, 0.6, 0.61, 0.9}), 4);
  EXPECT_TRUE(stopper.stopped());
  EXPECT_EQ(stopper.best(), 0.6);

  // Every improvement restarts the wait.
  EarlyStopper improving(EarlyStopperOptions().monitor("accuracy").patience(Time::parse("2ep")));
  EXPECT_EQ(feed(improving, "metrics/eval/accuracy", {0.5, 0.5, 0.6, 0.6, 0.7, 0.71, 0.72}), 0);

  // Lower is better for a cross-entropy ("auto"), and other evaluators' ends are not its values.
  EarlyStopper ce(EarlyStopperOptions().monitor("cross_entropy").patience(Time::parse("1ep")));
  EXPECT_FALSE(ce.greater_is_better());
  EXPECT_EQ(feed(ce, "metrics/eval/cross_entropy", {2.0, 1.5, 1.6}), 3);
  EarlyStopper greater(EarlyStopperOptions().monitor("cross_entropy").comp("greater").patience(Time::parse("1ep")));
  EXPECT_EQ(feed(greater, "metrics/eval/cross_entropy", {2.0, 1.5}), 2);
}

TEST(EarlyStopper, StateRoundTripDecidesAsTheUninterruptedOne) {
  const auto options = EarlyStopperOptions().monitor("accuracy").patience(Time::parse("2ep"));
  EarlyStopper whole(options), first(options), second(options);
  const std::vector<double> values{0.5, 0.7, 0.65, 0.69, 0.71};
  EXPECT_EQ(feed(whole, "metrics/eval/accuracy", values), 4);
  EXPECT_EQ(feed(first, "metrics/eval/accuracy", {0.5, 0.7}), 0);
  second.load_state_dict(first.state_dict());
  EXPECT_EQ(feed(second, "metrics/eval/accuracy", {0.65, 0.69, 0.71}, 3), 4)
      << "without the restored best (0.7 at epoch 2) it would not stop at epoch 4";
  EXPECT_EQ(second.state_dict().at("stopped").item<int64_t>(), 1);
}

TEST(ThresholdStopper, StopsOnceTheValueReachesTheThreshold) {
  ThresholdStopper accuracy(ThresholdStopperOptions().monitor("accuracy").threshold(0.75));
  EXPECT_EQ(feed(accuracy, "metrics/eval/accuracy", {0.5, 0.74, 0.75, 0.8}), 3);
  ThresholdStopper loss(ThresholdStopperOptions().monitor("perplexity").threshold(4.0));
  EXPECT_EQ(feed(loss, "metrics/eval/perplexity", {9.0, 4.5, 3.9}), 3);
}

TEST(Stoppers, BadSettingsAreClearErrors) {
  EXPECT_THAT(testing::input_error_of([] { EarlyStopper stopper{EarlyStopperOptions()}; }),
              HasSubstr("early_stopper.monitor: is empty"));
  EXPECT_THAT(testing::input_error_of([] {
                EarlyStopper(EarlyStopperOptions().monitor("accuracy").patience(Time::parse("0.5dur")));
              }),
              HasSubstr("give it in ep, ba, sp or tok"));
  EXPECT_THAT(testing::input_error_of([] { ThresholdStopper(ThresholdStopperOptions().monitor("accuracy")); }),
              HasSubstr("threshold_stopper.threshold: not set"));
  // Against the run, before step 1: an evaluator that is not there, a metric it does not compute.
  for (const auto& [options, message] :
       std::vector<std::pair<EarlyStopperOptions, std::string>>{
           {EarlyStopperOptions().monitor("accuracy").label("test"),
            "early_stopper.label: no evaluator is labelled \"test\" (the run's: eval)"},
           {EarlyStopperOptions().monitor("perplexity"),
            "early_stopper.monitor: the evaluator \"eval\" has no metric \"perplexity\"; its metrics: accuracy"}}) {
    Components c = testing::tiny_components();
    c.callbacks.push_back(std::make_shared<EarlyStopper>(options));
    EXPECT_THAT(testing::input_error_of([&] { Trainer(TrainerOptions(), c); }), HasSubstr(message));
  }
  // A training metric the run does not compute, also before step 1.
  Components c = testing::tiny_components();
  c.callbacks.push_back(std::make_shared<EarlyStopper>(EarlyStopperOptions().monitor("acuracy").label("train")));
  EXPECT_THAT(testing::input_error_of([&] { Trainer(TrainerOptions(), c); }),
              HasSubstr("early_stopper.monitor: the training metrics have no \"acuracy\"; they are: loss, accuracy"));
}

/// A run whose evaluation accuracy can never improve by min_delta 2: the best is epoch 1's, and with patience 2ep
/// training stops at the end of epoch 3 (6 batches an epoch) instead of running 10 epochs.
Trainer* stopping_run(std::unique_ptr<Trainer>& holder, const CheckpointOptions& checkpoint = {},
                      std::shared_ptr<Callback> extra = nullptr) {
  Components c = testing::tiny_components();
  c.callbacks.push_back(std::make_shared<EarlyStopper>(
      EarlyStopperOptions().monitor("accuracy").min_delta(2.0).patience(Time::parse("2ep"))));
  if (extra) c.callbacks.push_back(extra);
  holder = std::make_unique<Trainer>(TrainerOptions().max_duration(Time::parse("10ep")).threads(1).seed(3), c,
                                     checkpoint);
  return holder.get();
}

/// Stops the run at the end of an epoch (a stand-in for a killed process).
class StopAtEpoch : public Callback {
 public:
  explicit StopAtEpoch(int64_t epoch) : epoch_(epoch) {}
  std::string name() const override { return "stop_at_epoch"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event == Event::EpochEnd && state.timestamp.epoch == epoch_) state.stop_training();
  }

 private:
  int64_t epoch_;
};

TEST(EarlyStopper, StopsTheRunAndResumesToTheSameStop) {
  std::unique_ptr<Trainer> holder;
  Trainer* whole = stopping_run(holder);
  whole->fit();
  EXPECT_EQ(whole->state().timestamp.epoch, 3);
  EXPECT_EQ(whole->state().timestamp.batch, 18);
  const std::string want = weights_fingerprint(*whole->state().model);

  const std::string folder = (std::filesystem::temp_directory_path() /
                              ("tessera_early_stopper_" + std::to_string(::getpid())))
                                 .string();
  std::filesystem::remove_all(folder);
  const auto checkpoint = CheckpointOptions().folder(folder).interval(Time::parse("1ep")).autoresume(true);
  {  // stopped after epoch 2, before the early stopper acts; a new trainer resumes there
    std::unique_ptr<Trainer> first_holder, second_holder;
    stopping_run(first_holder, checkpoint, std::make_shared<StopAtEpoch>(2))->fit();
    EXPECT_EQ(first_holder->state().timestamp.epoch, 2);
    Trainer* resumed = stopping_run(second_holder, checkpoint);
    resumed->fit();
    EXPECT_EQ(resumed->state().timestamp.batch, 18) << "the restored best (epoch 1) makes it stop at epoch 3";
    EXPECT_EQ(weights_fingerprint(*resumed->state().model), want);
  }
  {  // resumed from the checkpoint written as it stopped: it stays stopped
    std::unique_ptr<Trainer> again_holder;
    Trainer* again = stopping_run(again_holder, checkpoint);
    again->fit();
    EXPECT_EQ(again->state().timestamp.batch, 18);
    EXPECT_EQ(weights_fingerprint(*again->state().model), want);
  }
  std::filesystem::remove_all(folder);
}

TEST(Stoppers, RecipeEntriesBuildThem) {
  const Recipe recipe = Recipe::parse(R"(
model: {mlp: {hidden: [8]}}
data:
  train: {dataset: {synthetic: {size: 64, input_shape: [1, 4, 4], num_classes: 3}}, loader: {batch_size: 16}}
  eval: {dataset: {synthetic: {size: 32, input_shape: [1, 4, 4], num_classes: 3, seed: 9}}, loader: {batch_size: 16}}
optimizer: {sgd: {lr: 0.1}}
max_duration: 20ep
callbacks: [{threshold_stopper: {monitor: loss, label: train, threshold: 1.0e9}}]
)",
                                      "r.yaml");
  auto trainer = make_trainer(recipe);
  trainer->fit();
  EXPECT_EQ(trainer->state().timestamp.epoch, 1) << "any loss is at or below 1e9: it stops at the first epoch end";
  EXPECT_THAT(testing::input_error_of([] {
                build_run(Recipe::parse("model: {mlp: {hidden: [8]}}\n"
                                        "data: {train: {dataset: {synthetic: {size: 8}}}}\n"
                                        "optimizer: {sgd: {lr: 0.1}}\n"
                                        "callbacks: [{early_stopper: {monitor: accuracy, comp: bigger}}]\n",
                                        "r.yaml"));
              }),
              HasSubstr("r.yaml:4:55: callbacks[0].early_stopper.comp: \"bigger\" is not allowed"));
}

/// A run evaluating each class's recall (per_class), whose threshold stopper watches `monitor`.
std::string per_class_recipe(const std::string& monitor) {
  return R"(
model: {mlp: {hidden: [8]}}
data:
  train: {dataset: {synthetic: {size: 64, input_shape: [1, 4, 4], num_classes: 3}}, loader: {batch_size: 16}}
  eval:
    dataset: {synthetic: {size: 32, input_shape: [1, 4, 4], num_classes: 3, seed: 9}}
    loader: {batch_size: 16}
    metrics: [accuracy, {recall: {num_classes: 3, per_class: true}}]
optimizer: {sgd: {lr: 0.1}}
max_duration: 4ep
callbacks: [{threshold_stopper: {monitor: )" +
         monitor + R"(, threshold: 0.0}}]
)";
}

TEST(Stoppers, WatchOneClassOfAPerClassMetric) {
  auto trainer = make_trainer(Recipe::parse(per_class_recipe("recall/class_1"), "r.yaml"));
  trainer->fit();
  EXPECT_EQ(trainer->state().timestamp.epoch, 1) << "any recall is at or above 0: it stops at the first evaluation";
  const auto& metrics = trainer->state().metrics;
  for (const char* key : {"metrics/eval/recall", "metrics/eval/recall/class_0", "metrics/eval/recall/class_1",
                          "metrics/eval/recall/class_2"}) {
    ASSERT_TRUE(metrics.count(key)) << key;
    EXPECT_GE(metrics.at(key), 0.0);
    EXPECT_LE(metrics.at(key), 1.0);
  }
  EXPECT_FALSE(metrics.count("metrics/eval/recall/class_3"));
  // The macro average is the mean of the classes' recalls (each class is a target in 32 random examples).
  EXPECT_NEAR(metrics.at("metrics/eval/recall"),
              (metrics.at("metrics/eval/recall/class_0") + metrics.at("metrics/eval/recall/class_1") +
               metrics.at("metrics/eval/recall/class_2")) / 3, 1e-12);
  // A metric the run does not have: before step 1; a class it does not report: at the first evaluation.
  EXPECT_THAT(testing::input_error_of([] { make_trainer(Recipe::parse(per_class_recipe("recal/class_1"), "r.yaml")); }),
              HasSubstr("threshold_stopper.monitor: the evaluator \"eval\" has no metric \"recal/class_1\"; its "
                        "metrics: accuracy, recall"));
  auto beyond = make_trainer(Recipe::parse(per_class_recipe("recall/class_3"), "r.yaml"));
  EXPECT_THAT(testing::input_error_of([&] { beyond->fit(); }),
              HasSubstr("threshold_stopper: the run has no metrics/eval/recall/class_3 to watch; the \"eval\" values "
                        "are: metrics/eval/accuracy, metrics/eval/recall, metrics/eval/recall/class_0, "
                        "metrics/eval/recall/class_1, metrics/eval/recall/class_2"));
}

}  // namespace
}  // namespace tessera
