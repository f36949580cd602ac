// The Trainer loop: the exact event sequence, gradient accumulation, evaluation intervals, stopping,
// learning-rate schedules applied per batch, and bitwise determinism.
#include <ATen/Context.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support.h"

namespace tessera {
namespace {

using testing::FakeAlgorithm;
using testing::spec_on;
using testing::GradCapture;

std::vector<Event> every_event() { return {all_events().begin(), all_events().end()}; }

std::vector<std::string> expected_sequence(int epochs, int batches, int microbatches) {
  std::vector<std::string> seq{"init", "before_load", "after_load", "fit_start"};
  for (int e = 0; e < epochs; ++e) {
    if (e == 0) seq.push_back("iteration_start");
    seq.push_back("epoch_start");
    for (int b = 0; b < batches; ++b) {
      for (const char* ev : {"before_dataloader", "after_dataloader", "batch_start", "before_train_batch"}) seq.push_back(ev);
      for (int m = 0; m < microbatches; ++m) {
        for (const char* ev : {"before_forward", "after_forward", "before_loss", "after_loss", "before_backward",
                               "after_backward"}) {
          seq.push_back(ev);
        }
      }
      for (const char* ev : {"after_train_batch", "batch_end", "batch_checkpoint"}) seq.push_back(ev);
    }
    seq.push_back("epoch_end");
    for (const char* ev : {"eval_before_all", "eval_start", "eval_batch_start", "eval_before_forward",
                           "eval_after_forward", "eval_batch_end", "eval_end", "eval_after_all"}) {
      seq.push_back(ev);
    }
    seq.push_back("epoch_checkpoint");
  }
  for (const char* ev : {"iteration_end", "iteration_checkpoint", "fit_end"}) seq.push_back(ev);
  return seq;
}

TEST(Trainer, EventSequenceTwoEpochsThreeBatchesTwoMicrobatchesEvalEveryEpoch) {
  auto log = std::make_shared<std::vector<std::string>>();
  Components c = testing::tiny_components(/*train_size=*/12, /*batch_size=*/4);
  c.algorithms.push_back(std::make_shared<FakeAlgorithm>(spec_on("rec", every_event()), log));
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).microbatch_size(2).threads(1), std::move(c));
  trainer.fit();
  std::vector<std::string> seen;
  for (const auto& s : *log) seen.push_back(s.substr(4));  // strip "rec@"
  EXPECT_EQ(seen, expected_sequence(2, 3, 2));
  EXPECT_EQ(trainer.state().timestamp.epoch, 2);
  EXPECT_EQ(trainer.state().timestamp.batch, 6);
  EXPECT_EQ(trainer.state().timestamp.sample, 24);
  EXPECT_EQ(trainer.trace().at("rec/before_forward").count, 12);
  EXPECT_EQ(trainer.trace().at("rec/after_dataloader").count, 6);
  EXPECT_EQ(trainer.trace().at("rec/eval_start").count, 2);
}

std::vector<at::Tensor> first_batch_grads(int64_t microbatch_size) {
  Components c = testing::tiny_components(/*train_size=*/32, /*batch_size=*/32);
  auto capture = std::make_shared<GradCapture>();
  c.algorithms.push_back(capture);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("1ba")).microbatch_size(microbatch_size).threads(1),
                  std::move(c));
  trainer.fit();
  return capture->grads;
}

TEST(Trainer, FourMicrobatchesGiveTheFullBatchGradient) {
  auto full = first_batch_grads(0);
  auto micro = first_batch_grads(8);
  ASSERT_EQ(full.size(), micro.size());
  ASSERT_FALSE(full.empty());
  for (size_t i = 0; i < full.size(); ++i) {
    // Summation order differs between one batch and four chunks: equal up to float rounding.
    EXPECT_TRUE(at::allclose(full[i], micro[i], /*rtol=*/1e-5, /*atol=*/1e-7)) << "parameter " << i;
    EXPECT_GT(full[i].abs().sum().item<double>(), 0.0);
  }
  // Uneven split (32 = 12 + 12 + 8) is weighted by chunk size too.
  auto uneven = first_batch_grads(12);
  for (size_t i = 0; i < full.size(); ++i) EXPECT_TRUE(at::allclose(full[i], uneven[i], 1e-5, 1e-7));
}

std::vector<at::Tensor> train_weights(uint64_t seed, int64_t workers) {
  Components c = testing::tiny_components(64, 8, /*model seed=*/3);
  c.train_dataloader = std::make_shared<data::DataLoader>(
      testing::tiny_data(64), data::DataLoaderOptions().batch_size(8).workers(workers),
      std::vector<std::shared_ptr<const data::BatchTransform>>{
          std::make_shared<data::HorizontalFlip>(data::HorizontalFlipOptions())});
  Trainer trainer(TrainerOptions().max_duration(Time::parse("3ep")).seed(static_cast<int64_t>(seed)).threads(2),
                  std::move(c));
  trainer.fit();
  std::vector<at::Tensor> out;
  for (const auto& p : trainer.state().model->parameters()) out.push_back(p.detach().clone());
  return out;
}

TEST(Trainer, SameSeedGivesBitwiseIdenticalWeights) {
  auto a = train_weights(11, 0);
  auto b = train_weights(11, 2);
  auto c = train_weights(12, 0);
  ASSERT_EQ(a.size(), b.size());
  bool any_diff = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i], b[i])) << "parameter " << i;
    any_diff = any_diff || !at::equal(a[i], c[i]);
  }
  EXPECT_TRUE(any_diff) << "a different seed must give a different run";
}

TEST(Trainer, BatchDurationStopsMidEpochAndEvaluatesAtFitEnd) {
  Components c = testing::tiny_components(40, 8);  // 5 batches per epoch
  auto log = std::make_shared<std::vector<std::string>>();
  c.algorithms.push_back(std::make_shared<FakeAlgorithm>(spec_on("rec", {Event::EpochEnd, Event::EvalStart}), log));
  Trainer trainer(TrainerOptions().max_duration(Time::parse("7ba")).threads(1), std::move(c));
  trainer.fit();
  EXPECT_EQ(trainer.state().timestamp.batch, 7);
  EXPECT_EQ(trainer.state().timestamp.epoch, 1);
  EXPECT_EQ(trainer.state().timestamp.batch_in_epoch, 2);
  // epoch end after batch 5 evaluates (interval 1ep), and fit end evaluates again at batch 7.
  EXPECT_EQ(*log, (std::vector<std::string>{"rec@epoch_end", "rec@eval_start", "rec@eval_start"}));
  EXPECT_TRUE(trainer.state().metrics.count("metrics/eval/accuracy"));
}

TEST(Trainer, BatchIntervalEvaluation) {
  Components c = testing::tiny_components(40, 8);
  c.evaluators[0].interval = Time::parse("2ba");
  auto log = std::make_shared<std::vector<std::string>>();
  c.algorithms.push_back(std::make_shared<FakeAlgorithm>(spec_on("rec", {Event::EvalStart}), log));
  Trainer trainer(TrainerOptions().max_duration(Time::parse("6ba")).threads(1), std::move(c));
  trainer.fit();
  EXPECT_EQ(trainer.trace().at("rec/eval_start").count, 3);  // after batches 2, 4, 6; not again at fit end
  EXPECT_EQ(trainer.trace().at("rec/eval_start").first_batch, 2);
}

class StopAt : public Algorithm {
 public:
  explicit StopAt(int64_t batch) : batch_(batch) { spec_ = spec_on("stop_at", {Event::BatchEnd}); }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& s, Logger&) override {
    if (s.timestamp.batch == batch_) s.stop_training();
  }

 private:
  int64_t batch_;
  AlgorithmSpec spec_;
};

TEST(Trainer, StopTrainingEndsAfterTheCurrentBatch) {
  Components c = testing::tiny_components(40, 8);
  c.algorithms.push_back(std::make_shared<StopAt>(3));
  Trainer trainer(TrainerOptions().max_duration(Time::parse("4ep")).threads(1), std::move(c));
  trainer.fit();
  EXPECT_EQ(trainer.state().timestamp.batch, 3);
}

class LrRecorder : public Algorithm {
 public:
  LrRecorder() { spec_ = spec_on("lr_recorder", {Event::BeforeTrainBatch}); }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& s, Logger&) override {
    lrs.push_back(s.optimizer->param_groups()[0].lr);
    momenta.push_back(s.optimizer->momentum().value_or(-1));
  }
  std::vector<double> lrs;
  std::vector<double> momenta;  ///< set by a schedule, or -1

 private:
  AlgorithmSpec spec_;
};

TEST(Trainer, SchedulerSetsTheRateOfEachBatchFromItsOwnTimestamp) {
  Components c = testing::tiny_components(32, 8);  // 4 batches per epoch
  c.schedulers.push_back(optim::make_linear_scheduler(
      optim::LinearSchedulerOptions().alpha_i(1.0).alpha_f(0.0).t_max(Time::parse("8ba"))));
  auto rec = std::make_shared<LrRecorder>();
  c.algorithms.push_back(rec);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  trainer.fit();
  ASSERT_EQ(rec->lrs.size(), 8u);
  for (int t = 0; t < 8; ++t) EXPECT_DOUBLE_EQ(rec->lrs[t], 0.1 * (1.0 - t / 8.0)) << "batch " << t;
}

TEST(Trainer, SchedulersSteppedPerEpochHoldTheRateOfTheEpochsFirstBatch) {
  // torch's usual loop, scheduler.step() after each epoch: a cosine over 4 epochs, the lr constant within each.
  Components c = testing::tiny_components(32, 8);  // 4 batches per epoch
  c.schedulers.push_back(optim::make_cosine_scheduler(optim::CosineSchedulerOptions().t_max(Time::parse("4ep"))));
  auto rec = std::make_shared<LrRecorder>();
  c.algorithms.push_back(rec);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("3ep")).step_schedulers_every_batch(false).threads(1),
                  std::move(c));
  trainer.fit();
  ASSERT_EQ(rec->lrs.size(), 12u);
  for (int t = 0; t < 12; ++t) {
    EXPECT_NEAR(rec->lrs[t], 0.1 * (1 + std::cos(M_PI * (t / 4) / 4.0)) / 2, 1e-15) << "batch " << t;
  }
  EXPECT_NE(rec->lrs[3], rec->lrs[4]);
}

TEST(Trainer, AOneCycleThatCyclesTheMomentumSetsEachBatchsMomentumAgainstItsRate) {
  Components c = testing::tiny_components(32, 8);  // 4 batches per epoch
  c.schedulers.push_back(optim::make_onecycle_scheduler(
      optim::OneCycleSchedulerOptions().pct_start(0.5).cycle_momentum(true).base_momentum(0.8).max_momentum(0.9)));
  c.schedulers.push_back(optim::make_constant_scheduler(optim::ConstantSchedulerOptions().alpha(0.5)));
  auto rec = std::make_shared<LrRecorder>();
  c.algorithms.push_back(rec);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  trainer.fit();
  ASSERT_EQ(rec->momenta.size(), 8u);
  // t_max 1dur = 8 batches, the peak at batch 4: the momentum falls from 0.9 to 0.8 as the rate rises, then back.
  for (int t = 0; t < 8; ++t) {
    const double p = t <= 4 ? t / 4.0 : (t - 4) / 4.0;
    const double cos_part = (1 + std::cos(M_PI * p)) / 2;
    const double momentum = t <= 4 ? 0.8 + 0.1 * cos_part : 0.9 - 0.1 * cos_part;
    EXPECT_NEAR(rec->momenta[t], momentum, 1e-15) << "batch " << t;
    const double alpha = t <= 4 ? 1 - (1 - 1 / 25.0) * cos_part : 1 / 25e4 + (1 - 1 / 25e4) * cos_part;
    EXPECT_NEAR(rec->lrs[t], 0.1 * 0.5 * alpha, 1e-15) << "batch " << t;
  }
  // Refused before step 1: an optimizer without a momentum, or two schedules that would both set it.
  Components adagrad = testing::tiny_components();
  adagrad.optimizer = std::make_shared<optim::Adagrad>(adagrad.model->parameters(), optim::AdagradOptions());
  adagrad.schedulers.push_back(
      optim::make_onecycle_scheduler(optim::OneCycleSchedulerOptions().cycle_momentum(true)));
  EXPECT_THAT(testing::input_error_of([&] { Trainer(TrainerOptions(), adagrad); }),
              ::testing::HasSubstr("trainer: schedulers[0] (onecycle) sets the optimizer's momentum, but adagrad has "
                                   "none to set"));
  Components two = testing::tiny_components();
  for (int i = 0; i < 2; ++i) {
    two.schedulers.push_back(
        optim::make_onecycle_scheduler(optim::OneCycleSchedulerOptions().cycle_momentum(true)));
  }
  EXPECT_THAT(testing::input_error_of([&] { Trainer(TrainerOptions(), two); }),
              ::testing::HasSubstr("trainer: schedulers[0] (onecycle), schedulers[1] (onecycle) all set the "
                                   "optimizer's momentum; expected at most one"));
}

TEST(Trainer, APlateauReducesTheRateAfterTheEvaluationsThatDoNotImprove) {
  // The accuracy can never improve by 2 after its first value: with patience 0 every later evaluation (each
  // epoch's end) halves the lr of the batches after it; the cosine beside it multiplies.
  Components c = testing::tiny_components(32, 8);  // 4 batches per epoch
  c.schedulers.push_back(optim::make_plateau_scheduler(optim::PlateauSchedulerOptions()
                                                           .monitor("accuracy")
                                                           .factor(0.5)
                                                           .patience(0)
                                                           .threshold(2)
                                                           .threshold_mode("abs")));
  c.schedulers.push_back(
      optim::make_cosine_scheduler(optim::CosineSchedulerOptions().t_max(Time::parse("8ep"))));
  auto rec = std::make_shared<LrRecorder>();
  c.algorithms.push_back(rec);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("4ep")).threads(1), std::move(c));
  trainer.fit();
  ASSERT_EQ(rec->lrs.size(), 16u);
  for (int t = 0; t < 16; ++t) {
    const double plateau = t < 8 ? 1.0 : t < 12 ? 0.5 : 0.25;
    EXPECT_NEAR(rec->lrs[t], 0.1 * plateau * (1 + std::cos(M_PI * t / 32.0)) / 2, 1e-15) << "batch " << t;
  }
  // What it watches must be in the run: refused before step 1.
  Components missing = testing::tiny_components();
  missing.schedulers.push_back(
      optim::make_plateau_scheduler(optim::PlateauSchedulerOptions().monitor("accuracy").label("test")));
  EXPECT_THAT(testing::input_error_of([&] { Trainer(TrainerOptions(), missing); }),
              ::testing::HasSubstr(
                  "schedulers[0] (plateau) at init: plateau.label: no evaluator is labelled \"test\" (the run's: "
                  "eval)"));
}

TEST(Trainer, ScaleScheduleRatioShortensTrainingAndCompressesTheSchedules) {
  // 4 batches an epoch; 4ep x 0.5 = 2ep. The step schedule halves every 2ep (scaled: every 1ep = 4 batches), the
  // cosine's 1dur follows the scaled run (8 batches), the 2ba warmup is not scaled.
  Components c = testing::tiny_components(32, 8);
  c.schedulers.push_back(optim::make_step_scheduler(
      optim::StepSchedulerOptions().step_size(Time::parse("2ep")).gamma(0.5).warmup(Time::parse("2ba"))));
  c.schedulers.push_back(optim::make_cosine_scheduler({}));
  auto rec = std::make_shared<LrRecorder>();
  c.algorithms.push_back(rec);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("4ep")).scale_schedule_ratio(0.5).threads(1),
                  std::move(c));
  EXPECT_EQ(trainer.state().time.max_duration, Time::parse("2ep"));
  trainer.fit();
  ASSERT_EQ(rec->lrs.size(), 8u);
  for (int t = 0; t < 8; ++t) {
    const double step = std::pow(0.5, t / 4) * std::min(1.0, (t + 1) / 2.0);
    const double cosine = (1 + std::cos(M_PI * t / 8.0)) / 2;
    EXPECT_NEAR(rec->lrs[t], 0.1 * step * cosine, 1e-15) << "batch " << t;
  }
  // Epochs that would not be whole become batches: 3ep x 0.5 = 1.5 epochs = 6 batches.
  Trainer half(TrainerOptions().max_duration(Time::parse("3ep")).scale_schedule_ratio(0.5).threads(1),
               testing::tiny_components(32, 8));
  EXPECT_EQ(half.state().time.max_duration, Time::parse("6ba"));
  half.fit();
  EXPECT_EQ(half.state().timestamp.batch, 6);
  // Nothing left: an error naming the option and both values.
  try {
    Trainer(TrainerOptions().max_duration(Time::parse("10ba")).scale_schedule_ratio(0.05), testing::tiny_components());
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "trainer.scale_schedule_ratio: max_duration 10ba scaled by 0.05 is 0ba; expected a ratio "
                           "that leaves a training longer than 0");
  }
  EXPECT_THROW(Trainer(TrainerOptions().scale_schedule_ratio(0), testing::tiny_components()), InputError);
  // Too much: an InputError too (not an arithmetic failure of the time counters).
  EXPECT_THAT(
      testing::input_error_of([] {
        Trainer(TrainerOptions().max_duration(Time::parse("4ba")).scale_schedule_ratio(1e300),
                testing::tiny_components());
      }),
      ::testing::HasSubstr("trainer.scale_schedule_ratio: max_duration 4ba scaled by 1e+300 is too long"));
}

TEST(Trainer, RefusesEvaluatorsThatEvaluateNothingOrOtherClassesBeforeStepOne) {
  Components none = testing::tiny_components();
  none.evaluators[0].subset_batches = 0;
  EXPECT_THAT(testing::input_error_of([&] { Trainer(TrainerOptions(), none); }),
              ::testing::HasSubstr("evaluator \"eval\": it would evaluate no batch (subset_batches is 0)"));
  Components other = testing::tiny_components();
  other.evaluators[0].dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(16).input_shape({1, 4, 4}).num_classes(5)), 16,
      false);
  EXPECT_THAT(
      testing::input_error_of([&] { Trainer(TrainerOptions(), other); }),
      ::testing::HasSubstr("evaluator \"eval\": the model classifies into 3 classes, its data has 5"));
}

TEST(Trainer, RejectsBadSetup) {
  EXPECT_THROW(Trainer(TrainerOptions().max_duration(Time::parse("0.5dur")), testing::tiny_components()), InputError);
  Components no_model = testing::tiny_components();
  no_model.model = nullptr;
  EXPECT_THROW(Trainer(TrainerOptions(), std::move(no_model)), InputError);
  EXPECT_THROW(Trainer(TrainerOptions().microbatch_size(-1), testing::tiny_components()), InputError);
}

TEST(Trainer, TrainingLearnsTheSyntheticTask) {
  Components c = testing::tiny_components(256, 16);
  c.evaluators[0].dataloader = testing::loader(testing::tiny_data(128, 7), 64, false);  // same distribution
  Trainer trainer(TrainerOptions().max_duration(Time::parse("4ep")).threads(1), std::move(c));
  trainer.fit();
  EXPECT_GT(trainer.state().metrics.at("metrics/eval/accuracy"), 0.8);
  auto values = trainer.evaluate();
  EXPECT_DOUBLE_EQ(values.at("metrics/eval/accuracy"), trainer.state().metrics.at("metrics/eval/accuracy"));
}

/// predict: each batch's outputs in order (the last batch short), bitwise the model's forward in evaluation mode, the
/// predict events around each forward, the training mode restored; subset_batches stops early.
TEST(Trainer, PredictReturnsEachBatchsOutputsAndFiresThePredictEvents) {
  auto log = std::make_shared<std::vector<std::string>>();
  Components c = testing::tiny_components();
  c.algorithms.push_back(std::make_shared<FakeAlgorithm>(
      spec_on("probe", {Event::PredictStart, Event::PredictBatchStart, Event::PredictBeforeForward,
                        Event::PredictAfterForward, Event::PredictBatchEnd, Event::PredictEnd}),
      log));
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  trainer.fit();
  const auto data = testing::tiny_data(40, 11);
  data::DataLoader loader(data, data::DataLoaderOptions().batch_size(16).shuffle(false));
  trainer.state().model->train();
  const std::vector<at::Tensor> outputs = trainer.predict(loader);
  EXPECT_TRUE(trainer.state().model->is_training()) << "predict restores the training mode";
  ASSERT_EQ(outputs.size(), 3u);
  trainer.state().model->eval();
  for (int64_t b = 0; b < 3; ++b) {
    std::vector<int64_t> ids;
    for (int64_t i = 16 * b; i < std::min<int64_t>(40, 16 * (b + 1)); ++i) ids.push_back(i);
    at::NoGradGuard no_grad;
    const at::Tensor want = trainer.state().model->forward(data->get_batch(ids));
    EXPECT_EQ(outputs[static_cast<size_t>(b)].sizes(), want.sizes());
    EXPECT_TRUE(at::equal(outputs[static_cast<size_t>(b)], want)) << "batch " << b;
    EXPECT_FALSE(outputs[static_cast<size_t>(b)].requires_grad());
  }
  std::vector<std::string> want_log{"probe@predict_start"};
  for (int b = 0; b < 3; ++b) {
    for (const char* e : {"predict_batch_start", "predict_before_forward", "predict_after_forward", "predict_batch_end"}) {
      want_log.push_back(std::string("probe@") + e);
    }
  }
  want_log.push_back("probe@predict_end");
  EXPECT_EQ(*log, want_log);

  const std::vector<at::Tensor> two = trainer.predict(loader, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_TRUE(at::equal(two[1], outputs[1]));
}

TEST(TrainerDevice, CudaWhereThereIsNoneIsRefusedBeforeInit) {
  if (at::hasCUDA()) GTEST_SKIP() << "a CUDA device is visible";
  for (const std::string device : {"cuda", "cuda:0", "cuda:1"}) {
    auto log = std::make_shared<std::vector<std::string>>();
    Components c = testing::tiny_components();
    c.algorithms.push_back(std::make_shared<FakeAlgorithm>(spec_on("probe", {Event::Init}), log));
    try {
      Trainer trainer(TrainerOptions().device(device), std::move(c));
      ADD_FAILURE() << device << " was accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()), "trainer.device: " + device +
                                           " was requested but CUDA is not available here (no CUDA device is "
                                           "visible, or this LibTorch was built without CUDA); use device: cpu "
                                           "or auto");
    }
    EXPECT_TRUE(log->empty()) << "Init ran before the device was checked";
  }
  try {
    Trainer trainer(TrainerOptions().device("cuda:x"), testing::tiny_components());
    ADD_FAILURE() << "cuda:x was accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              "trainer.device: \"cuda:x\" is not a device (did you mean \"cuda\"?); expected cpu, cuda, cuda:N (N = 0, "
              "1, ...) or auto");
  }
}

TEST(TrainerDevice, CpuAndAutoTrainBitwiseLikeTheDefault) {
  auto train = [](const std::string* device) {
    TrainerOptions options = TrainerOptions().max_duration(Time::parse("2ep")).threads(1);
    if (device) options.device(*device);
    Trainer trainer(options, testing::tiny_components());
    trainer.fit();
    EXPECT_EQ(trainer.state().device, c10::Device(c10::kCPU));
    for (const auto& p : trainer.state().model->parameters()) EXPECT_TRUE(p.is_cpu());
    return std::make_pair(weights_fingerprint(*trainer.state().model), trainer.state().metrics);
  };
  const std::string cpu = "cpu", automatic = "auto";
  const auto reference = train(&cpu);
  EXPECT_EQ(TrainerOptions().device(), "auto");
  if (at::hasCUDA()) GTEST_SKIP() << "auto means cuda:0 here";
  EXPECT_EQ(train(nullptr), reference);
  EXPECT_EQ(train(&automatic), reference);
}

}  // namespace
}  // namespace tessera
