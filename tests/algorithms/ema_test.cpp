// EMA: the smoothing from a half-life, bad options refused by name, compute_ema against the formula, a run's
// average against a hand computation in double precision (start, interval, buffers), evaluation on the averages
// with the training weights restored bit for bit, skipped steps not averaged, and surgery after the start refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>

#include <ATen/ATen.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <tessera/algorithms/ema.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

TEST(EMA, SmoothingFromAHalfLife) {
  // Composer's default: half-life 1000 batches, an update every batch.
  EXPECT_DOUBLE_EQ(ema_smoothing(EMAOptions()), std::exp2(-1.0 / 1000));
  EXPECT_NEAR(ema_smoothing(EMAOptions()), std::exp(-std::log(2.0) / 1000), 1e-15);
  // Epochs: the default interval is 1ep.
  EMAOptions epochs;
  epochs.half_life(Time::parse("10ep"));
  EXPECT_EQ(ema_update_interval(epochs).str(), "1ep");
  EXPECT_DOUBLE_EQ(ema_smoothing(epochs), std::exp2(-0.1));
  // An interval of 5 batches with a half-life of 50: each update weighs 5 batches.
  EXPECT_DOUBLE_EQ(ema_smoothing(EMAOptions().half_life(Time::parse("50ba")).update_interval(Time::parse("5ba"))),
                   std::exp2(-0.1));
  // Other units are converted to batches with the run: 0.1 of 10 epochs of 6 batches is 6 batches.
  TimeContext run;
  run.max_duration = Time::parse("10ep");
  run.batches_per_epoch = 6;
  run.samples_per_epoch = 48;
  EXPECT_DOUBLE_EQ(ema_smoothing(EMAOptions().half_life(Time::parse("0.1dur")), &run), std::exp2(-1.0 / 6));
  EXPECT_DOUBLE_EQ(ema_smoothing(EMAOptions().half_life(Time::parse("1ep")).update_interval(Time::parse("2ba")), &run),
                   std::exp2(-2.0 / 6));
  // 96 samples in batches of 8 (48 samples in 6 batches per epoch) are 12 batches.
  EXPECT_DOUBLE_EQ(ema_smoothing(EMAOptions().half_life(Time::parse("96sp")), &run), std::exp2(-1.0 / 12));
  const std::string needs_run =
      testing::input_error_of([] { ema_smoothing(EMAOptions().half_life(Time::parse("0.1dur"))); });
  EXPECT_NE(needs_run.find("ema.half_life: 0.1dur is in another unit"), std::string::npos) << needs_run;
  // smoothing given directly wins; the interval is then one batch.
  EXPECT_EQ(ema_smoothing(EMAOptions().smoothing(0.99)), 0.99);
  EXPECT_EQ(ema_update_interval(EMAOptions().smoothing(0.99)).str(), "1ba");
}

TEST(EMA, BadOptionsAreRefusedNamingTheOption) {
  auto error_of = [](EMAOptions o) { return testing::input_error_of([&] { EMA ema(o); }); };
  EXPECT_NE(error_of(EMAOptions().half_life(Time::parse("10tok"))).find("ema.half_life: \"10tok\" is not supported"),
            std::string::npos);
  EXPECT_NE(error_of(EMAOptions().half_life(Time::parse("0ba"))).find("ema.half_life: must be > 0, got 0ba"),
            std::string::npos);
  EXPECT_NE(error_of(EMAOptions().smoothing(1.0)).find("ema.smoothing"), std::string::npos);
  EXPECT_NE(error_of(EMAOptions().smoothing(-0.5)).find("ema.smoothing"), std::string::npos);
  EXPECT_NE(error_of(EMAOptions().update_interval(Time::parse("0.5dur"))).find("ema.update_interval: \"0.5dur\""),
            std::string::npos);
  EXPECT_NE(error_of(EMAOptions().ema_start(Time::parse("5tok"))).find("ema.ema_start: \"5tok\""), std::string::npos);
  const std::string both = error_of(EMAOptions().half_life(Time::parse("50ba")).smoothing(0.9));
  EXPECT_NE(both.find("ema: give half_life or smoothing, not both"), std::string::npos) << both;

  const std::string range = testing::input_error_of([] { compute_ema({at::zeros({2})}, {at::ones({2})}, 1.5); });
  EXPECT_NE(range.find("compute_ema.smoothing"), std::string::npos) << range;
  const std::string count =
      testing::input_error_of([] { compute_ema({at::zeros({2})}, {at::ones({2}), at::ones({2})}, 0.5); });
  EXPECT_NE(count.find("compute_ema: 1 averages for 2 tensors"), std::string::npos) << count;
  const std::string shape = testing::input_error_of([] { compute_ema({at::zeros({2})}, {at::ones({3})}, 0.5); });
  EXPECT_NE(shape.find("compute_ema: tensor 0 does not match its average"), std::string::npos) << shape;
}

TEST(EMA, ComputeEmaIsTheFormulaAndCopiesIntegerTensors) {
  at::Tensor ema = at::tensor({1.0f, 2.0f, -4.0f});
  at::Tensor ema64 = at::tensor({1.0, 0.5}, at::kDouble);
  at::Tensor count = at::tensor({3}, at::kLong);
  compute_ema({ema, ema64, count},
              {at::tensor({3.0f, 2.0f, 0.0f}), at::tensor({0.0, 1.5}, at::kDouble), at::tensor({7}, at::kLong)}, 0.75);
  EXPECT_TRUE(at::allclose(ema, at::tensor({1.5f, 2.0f, -3.0f})));  // 0.75·ema + 0.25·w
  EXPECT_TRUE(at::allclose(ema64, at::tensor({0.75, 0.75}, at::kDouble)));
  EXPECT_EQ(count.item<int64_t>(), 7);
  // smoothing 1 keeps the average, 0 copies the weights.
  at::Tensor keep = at::tensor({0.1f, 0.2f});
  compute_ema({keep}, {at::tensor({5.0f, 6.0f})}, 1.0);
  EXPECT_TRUE(at::equal(keep, at::tensor({0.1f, 0.2f})));

  // Modules, matched by name: parameters and batch-norm statistics.
  torch::nn::Sequential net(torch::nn::Linear(3, 2), torch::nn::BatchNorm1d(2));
  auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(net->clone());
  {
    at::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(1.0);
    net->named_buffers()["1.running_mean"].fill_(2.0);
    net->named_buffers()["1.num_batches_tracked"].fill_(5);
  }
  std::map<std::string, at::Tensor> before;
  for (const auto& item : copy->named_parameters()) before[item.key()] = item.value().detach().clone();
  compute_ema(*net, *copy, 0.9);
  for (const auto& item : copy->named_parameters()) {
    const at::Tensor expected = before[item.key()] * 0.9 + net->named_parameters()[item.key()].detach() * 0.1;
    EXPECT_TRUE(at::allclose(item.value(), expected)) << item.key();
  }
  EXPECT_TRUE(at::allclose(copy->named_buffers()["1.running_mean"], at::full({2}, 0.2f)));  // 0.9·0 + 0.1·2
  EXPECT_EQ(copy->named_buffers()["1.num_batches_tracked"].item<int64_t>(), 5);
  torch::nn::Sequential other(torch::nn::Linear(3, 2));
  const std::string missing = testing::input_error_of([&] { compute_ema(*net, *other, 0.9); });
  EXPECT_NE(missing.find("compute_ema: ema_model has no param/1.weight"), std::string::npos) << missing;
}

// ------------------------------------------------------------------------------------------------ in a run

/// A CNN with batch norm on 1x8x8 images, 48 examples in batches of 8 (6 batches per epoch).
Components cnn_components(bool evaluator = false) {
  Components c;
  at::manual_seed(5);
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(3).width(2));
  auto images = [](int64_t size, uint64_t seed) {
    return data::make_synthetic(data::SyntheticOptions().size(size).input_shape({1, 8, 8}).num_classes(3).seed(seed));
  };
  c.train_dataloader = testing::loader(images(48, 7), 8);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  if (evaluator) {
    Evaluator ev;
    ev.label = "eval";
    ev.dataloader = testing::loader(images(16, 99), 8, false);
    ev.metrics = {std::make_shared<Accuracy>(1)};
    ev.interval = Time::parse("2ba");
    c.evaluators.push_back(ev);
  }
  return c;
}

using Weights = std::vector<std::pair<std::string, at::Tensor>>;

Weights copy_weights(Model& model) {
  Weights out;
  for (const auto& item : model.named_parameters(true)) {
    out.emplace_back("param/" + item.key(), item.value().detach().clone());
  }
  for (const auto& item : model.named_buffers(true)) {
    out.emplace_back("buffer/" + item.key(), item.value().detach().clone());
  }
  return out;
}

bool equal(const Weights& a, const Weights& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || !at::equal(a[i].second, b[i].second)) return false;
  }
  return true;
}

/// The weights after every batch (BatchEnd, after the algorithms), the averages then, and what the model held at
/// each EvalStart and EvalEnd.
class Watch : public Callback {
 public:
  explicit Watch(std::shared_ptr<EMA> ema) : ema_(std::move(ema)) {}
  std::string name() const override { return "watch"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::BatchEnd) {
      weights[s.timestamp.batch] = copy_weights(*s.model);
      Weights avg;
      for (const auto& [name, t] : ema_->averages()) avg.emplace_back(name, t.clone());
      averages[s.timestamp.batch] = avg;
    }
    if (event == Event::EvalStart) at_eval_start.emplace_back(s.timestamp.batch, copy_weights(*s.model));
    if (event == Event::EvalEnd) at_eval_end.emplace_back(s.timestamp.batch, copy_weights(*s.model));
  }
  std::map<int64_t, Weights> weights, averages;
  std::vector<std::pair<int64_t, Weights>> at_eval_start, at_eval_end;

 private:
  std::shared_ptr<EMA> ema_;
};

TEST(EMA, AfterNStepsTheAverageIsTheHandComputationInDoublePrecision) {
  // Starts at 0.25 of 12 batches (batch 3), updates every 2 batches: a copy at batch 4, then 6, 8, 10, 12.
  auto ema = std::make_shared<EMA>(
      EMAOptions().half_life(Time::parse("3ba")).update_interval(Time::parse("2ba")).ema_start(Time::parse("0.25dur")));
  auto watch = std::make_shared<Watch>(ema);
  Components c = cnn_components();
  c.algorithms = {ema};
  c.callbacks = {watch};
  auto model = c.model;
  Trainer t(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  t.fit();

  EXPECT_TRUE(watch->averages.at(3).empty()) << "not started before batch 4";
  EXPECT_TRUE(equal(watch->averages.at(4), watch->weights.at(4))) << "the average starts as a copy";
  EXPECT_EQ(t.trace().at("ema/batch_end").count, 5);
  EXPECT_EQ(t.trace().at("ema/batch_end").first_batch, 4);
  const double s = std::exp2(-2.0 / 3);
  std::vector<at::Tensor> hand;
  for (const auto& [name, w] : watch->weights.at(4)) hand.push_back(w.to(at::kDouble));
  for (int64_t b : {6, 8, 10, 12}) {
    const Weights& w = watch->weights.at(b);
    for (size_t i = 0; i < hand.size(); ++i) {
      if (at::isFloatingType(w[i].second.scalar_type())) {
        hand[i] = s * hand[i] + (1 - s) * w[i].second.to(at::kDouble);
      } else {
        hand[i] = w[i].second.to(at::kDouble);  // num_batches_tracked: copied
      }
    }
    // Between updates the average does not move.
    if (b < 12) {
      EXPECT_TRUE(equal(watch->averages.at(b + 1), watch->averages.at(b))) << "batch " << b + 1;
    }
  }
  const auto averages = ema->averages();
  ASSERT_EQ(averages.size(), hand.size());
  bool has_buffers = false;
  for (size_t i = 0; i < hand.size(); ++i) {
    has_buffers = has_buffers || averages[i].first.rfind("buffer/", 0) == 0;
    EXPECT_TRUE(at::allclose(averages[i].second.to(at::kDouble), hand[i], 1e-5, 1e-6)) << averages[i].first;
  }
  EXPECT_TRUE(has_buffers) << "batch-norm statistics are averaged too";
  // A completed run leaves the averages in the model.
  EXPECT_TRUE(ema->holds_averaged_weights());
  Weights final_averages;
  for (const auto& [name, t] : averages) final_averages.emplace_back(name, t);
  EXPECT_TRUE(equal(copy_weights(*model), final_averages));
  EXPECT_FALSE(equal(copy_weights(*model), watch->weights.at(12)));
}

TEST(EMA, EvaluationRunsOnTheAveragesAndRestoresTheTrainingWeightsBitwise) {
  auto make = [](bool evaluator) {
    auto ema = std::make_shared<EMA>(EMAOptions().half_life(Time::parse("2ba")));
    auto watch = std::make_shared<Watch>(ema);
    Components c = cnn_components(evaluator);
    c.algorithms = {ema};
    c.callbacks = {watch};
    auto t = std::make_unique<Trainer>(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));
    t->fit();
    return std::make_tuple(std::move(t), ema, watch);
  };
  auto [plain, plain_ema, plain_watch] = make(false);
  auto [evaluated, ema, watch] = make(true);
  // Evaluations after batches 2, 4 and 6 (6 also at the end of fit: once).
  ASSERT_EQ(watch->at_eval_start.size(), 3u);
  ASSERT_EQ(watch->at_eval_end.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const int64_t b = watch->at_eval_start[i].first;
    EXPECT_EQ(b, static_cast<int64_t>(2 * (i + 1)));
    EXPECT_TRUE(equal(watch->at_eval_start[i].second, watch->averages.at(b))) << "the evaluation at batch " << b;
    EXPECT_FALSE(equal(watch->at_eval_start[i].second, watch->weights.at(b)));
    EXPECT_EQ(watch->at_eval_end[i].first, b);
    EXPECT_TRUE(equal(watch->at_eval_end[i].second, watch->weights.at(b))) << "training weights restored at " << b;
  }
  // Evaluating changes nothing in the training: the same weights and averages after every batch.
  for (int64_t b = 1; b <= 6; ++b) {
    EXPECT_TRUE(equal(watch->weights.at(b), plain_watch->weights.at(b))) << "batch " << b;
    EXPECT_TRUE(equal(watch->averages.at(b), plain_watch->averages.at(b))) << "batch " << b;
  }
  EXPECT_EQ(weights_fingerprint(*evaluated->state().model), weights_fingerprint(*plain->state().model));
  // The metric is the averaged model's: evaluating the final model (the averages) again gives the same accuracy.
  const double at_end = evaluated->state().metrics.at("metrics/eval/accuracy");
  EXPECT_EQ(evaluated->evaluate().at("metrics/eval/accuracy"), at_end);
  EXPECT_TRUE(ema->holds_averaged_weights()) << "evaluate() after fit keeps the averages in the model";
}

TEST(EMA, SkippedStepsAreNotAveraged) {
  for (const std::string kind : {"loss_scaler", "nonfinite_loss_skip"}) {
    SCOPED_TRACE(kind);
    auto ema = std::make_shared<EMA>(EMAOptions().smoothing(0.5));
    auto watch = std::make_shared<Watch>(ema);
    Components c = cnn_components();
    TrainerOptions options = TrainerOptions().max_duration(Time::parse("6ba")).threads(1);
    if (kind == "loss_scaler") {
      c.algorithms = {std::make_shared<testing::OverflowAt>(2), ema};  // the third batch's step is skipped
      options.precision("amp_bf16").loss_scaling("dynamic");
    } else {
      c.algorithms = {std::make_shared<testing::NanInputs>(2), ema};
      options.nonfinite_loss("skip");
    }
    c.callbacks = {watch};
    Trainer t(options, std::move(c));
    t.fit();
    EXPECT_EQ(t.skipped_steps() + t.skipped_batches(), 1);
    EXPECT_EQ(t.trace().at("ema/batch_end").count, 5) << "6 batches, one without a step";
    EXPECT_TRUE(equal(watch->averages.at(3), watch->averages.at(2))) << "the skipped step's batch left the average";
    EXPECT_FALSE(equal(watch->averages.at(4), watch->averages.at(3)));
    // The update after the skipped step is the ordinary one: 0.5·average + 0.5·weights.
    const Weights& before = watch->averages.at(3);
    const Weights& w = watch->weights.at(4);
    const Weights& after = watch->averages.at(4);
    for (size_t i = 0; i < after.size(); ++i) {
      if (!at::isFloatingType(w[i].second.scalar_type())) continue;
      EXPECT_TRUE(at::allclose(after[i].second, before[i].second * 0.5 + w[i].second * 0.5)) << after[i].first;
    }
  }
}

TEST(EMA, AModelChangedAfterTheStartIsRefusedWithTheReason) {
  EMA ema(EMAOptions().smoothing(0.5));
  State s;
  s.model = testing::tiny_model(1);
  s.optimizer = std::make_shared<optim::SGD>(s.model->parameters(), optim::SGDOptions().lr(0.1));
  s.time.max_duration = Time::parse("10ba");
  s.timestamp.batch = 1;
  Logger logger;
  ASSERT_TRUE(ema.match(Event::BatchEnd, s));
  ema.apply(Event::BatchEnd, s, logger);
  EXPECT_TRUE(ema.started());
  EXPECT_FALSE(ema.match(Event::BatchEnd, s)) << "no optimizer step since the start";
  // Surgery after the start: another model (a wider hidden layer).
  auto net = std::make_shared<testing::TinyNetImpl>(16, 10, 3);
  s.model = std::make_shared<Classifier<testing::TinyNetImpl>>(net, 3);
  s.optimizer->set_step_count(1);
  s.timestamp.batch = 2;
  try {
    ema.apply(Event::BatchEnd, s, logger);
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the model was changed after averaging started"), std::string::npos)
        << e.what();
  }
}

TEST(EMA, CheckpointsOfACompletedRunAndAfterFitResumeWithTheRightWeightsInTheModel) {
  std::string root = (std::filesystem::temp_directory_path() / "tessera-ema-test-XXXXXX").string();
  ASSERT_NE(::mkdtemp(root.data()), nullptr);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{root};
  auto run = [](const char* duration, CheckpointOptions checkpoint) {
    auto ema = std::make_shared<EMA>(EMAOptions().half_life(Time::parse("2ba")));
    Components c = cnn_components();
    c.algorithms = {ema};
    auto t = std::make_unique<Trainer>(TrainerOptions().max_duration(Time::parse(duration)).threads(1), std::move(c),
                                       std::move(checkpoint));
    return std::make_pair(std::move(t), ema);
  };
  const std::string folder = root + "/ck";
  auto [first, first_ema] = run("1ep", CheckpointOptions().folder(folder));
  first->fit();
  ASSERT_TRUE(first_ema->holds_averaged_weights());
  const std::string averaged = weights_fingerprint(*first->state().model);
  // The final checkpoint was written before fit_end, with the training weights as the model's: resuming the
  // completed run leaves the averages in the model, as at the end of the run.
  auto [complete, complete_ema] = run("1ep", CheckpointOptions().folder(folder).autoresume(true));
  EXPECT_EQ(complete->loaded_checkpoint(), folder + "/ep1-ba6.ckpt");
  EXPECT_TRUE(complete_ema->holds_averaged_weights());
  EXPECT_EQ(weights_fingerprint(*complete->state().model), averaged);
  // A checkpoint saved after fit (the averages in the model) also keeps the training weights: a longer run
  // resumed from it trains on from the training weights, bitwise as a run in one go.
  first->save_checkpoint(root + "/after_fit.ckpt");
  auto [longer, longer_ema] = run("2ep", CheckpointOptions().load_path(root + "/after_fit.ckpt"));
  EXPECT_FALSE(longer_ema->holds_averaged_weights());
  longer->fit();
  auto [whole, whole_ema] = run("2ep", CheckpointOptions());
  whole->fit();
  EXPECT_EQ(weights_fingerprint(*longer->state().model), weights_fingerprint(*whole->state().model));
  EXPECT_NE(weights_fingerprint(*whole->state().model), averaged);
}

TEST(EMA, SpecDeclaresItsEventsAndAccesses) {
  const EMA batches;
  EXPECT_EQ(batches.spec().events(), (std::vector<Event>{Event::BatchEnd, Event::EvalStart, Event::EvalEnd,
                                                          Event::FitEnd, Event::AfterLoad}));
  EXPECT_TRUE(batches.spec().reads(Resource::Buffers, Event::BatchEnd));
  EXPECT_TRUE(batches.spec().writes(Resource::Parameters, Event::EvalStart));
  EXPECT_FALSE(batches.spec().writes(Resource::Parameters, Event::BatchEnd));
  const EMA epochs(EMAOptions().half_life(Time::parse("2ep")));
  EXPECT_TRUE(epochs.spec().acts_on(Event::EpochEnd));
  EXPECT_FALSE(epochs.spec().acts_on(Event::BatchEnd));
}

}  // namespace
}  // namespace tessera::algorithms
