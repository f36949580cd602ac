// SWA: the annealed learning rate against its formula, bad options refused by name, swa_update as the arithmetic
// mean of the snapshots, batch-norm statistics recomputed against a hand computation, and in a run: the average of
// the snapshots replaces the weights at swa_end (epoch or batch intervals, skipped steps not snapshots), the
// statistics recomputed equal a manual recomputation over the epoch's batches, the learning rate schedule from
// swa_start on, and runs refused before step 1.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include <ATen/ATen.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <tessera/algorithms/ema.h>
#include <tessera/algorithms/swa.h>

#include "image_batch_support.h"
#include "support.h"

namespace tessera::algorithms {
namespace {

constexpr double kPi = 3.14159265358979323846;

TEST(SWA, AnnealedLearningRateIsTheFormula) {
  // (1 - f)·start + f·swa with f = p (linear) or (1 - cos(pi p))/2 (cos); p clamped to [0, 1].
  EXPECT_DOUBLE_EQ(swa_annealed_lr(0.1, 0.02, 0.0), 0.1);
  EXPECT_DOUBLE_EQ(swa_annealed_lr(0.1, 0.02, 0.25), 0.08);
  EXPECT_DOUBLE_EQ(swa_annealed_lr(0.1, 0.02, 1.0), 0.02);
  EXPECT_DOUBLE_EQ(swa_annealed_lr(0.1, 0.02, 3.0), 0.02);
  EXPECT_DOUBLE_EQ(swa_annealed_lr(0.1, 0.02, -1.0), 0.1);
  EXPECT_DOUBLE_EQ(swa_annealed_lr(0.1, 0.02, 0.5, "cos"), 0.06);
  const double f = (1 - std::cos(kPi / 4)) / 2;
  EXPECT_DOUBLE_EQ(swa_annealed_lr(0.1, 0.02, 0.25, "cos"), (1 - f) * 0.1 + f * 0.02);
  EXPECT_DOUBLE_EQ(swa_annealed_lr(0.1, 0.02, 1.0, "cos"), 0.02);
  EXPECT_DOUBLE_EQ(swa_annealed_lr(0.01, 0.05, 0.5), 0.03) << "annealing up works too";
  const std::string bad = testing::input_error_of([] { swa_annealed_lr(0.1, 0.02, 0.5, "cosine"); });
  EXPECT_NE(bad.find("swa_annealed_lr.anneal_strategy"), std::string::npos) << bad;
  EXPECT_NE(testing::input_error_of([] { swa_annealed_lr(0.1, -1, 0.5); }).find("swa_annealed_lr.swa_lr"),
            std::string::npos);
}

TEST(SWA, BadOptionsAreRefusedNamingTheOption) {
  auto error_of = [](SWAOptions o) { return testing::input_error_of([&] { SWA swa(o); }); };
  EXPECT_NE(error_of(SWAOptions().swa_start(Time::parse("5tok"))).find("swa.swa_start: \"5tok\" is not supported"),
            std::string::npos);
  EXPECT_NE(error_of(SWAOptions().swa_end(Time::parse("5tok"))).find("swa.swa_end: \"5tok\""), std::string::npos);
  EXPECT_NE(error_of(SWAOptions().update_interval(Time::parse("0.1dur"))).find("swa.update_interval: \"0.1dur\""),
            std::string::npos);
  EXPECT_NE(error_of(SWAOptions().update_interval(Time::parse("0ba"))).find("swa.update_interval: \"0ba\""),
            std::string::npos);
  const std::string order = error_of(SWAOptions().swa_start(Time::parse("0.8dur")).swa_end(Time::parse("0.5dur")));
  EXPECT_NE(order.find("swa.swa_end: 0.5dur is not after swa_start 0.8dur"), std::string::npos) << order;
  EXPECT_NE(error_of(SWAOptions().anneal_strategy("step")).find("swa.anneal_strategy"), std::string::npos);
  EXPECT_NE(error_of(SWAOptions().anneal_steps(-1)).find("swa.anneal_steps"), std::string::npos);
  EXPECT_NE(error_of(SWAOptions().swa_lr(-0.1)).find("swa.swa_lr"), std::string::npos);
  const std::string count = testing::input_error_of([] { swa_update({at::zeros({2})}, {at::ones({2})}, -1); });
  EXPECT_NE(count.find("swa_update: count must be >= 0"), std::string::npos) << count;
  const std::string shape = testing::input_error_of([] { swa_update({at::zeros({2})}, {at::ones({3})}, 1); });
  EXPECT_NE(shape.find("tensor 0 does not match its average"), std::string::npos) << shape;
}

TEST(SWA, SwaUpdateIsTheArithmeticMeanOfTheSnapshots) {
  at::manual_seed(1);
  std::vector<at::Tensor> snapshots;
  for (int i = 0; i < 5; ++i) snapshots.push_back(at::randn({3, 4}));
  at::Tensor average = at::zeros({3, 4});
  at::Tensor count_buffer = at::zeros({1}, at::kLong);
  for (int64_t n = 0; n < 5; ++n) {
    swa_update({average, count_buffer}, {snapshots[n], at::full({1}, n + 10, at::kLong)}, n);
    const at::Tensor mean = at::stack(std::vector<at::Tensor>(snapshots.begin(), snapshots.begin() + n + 1)).mean(0);
    EXPECT_TRUE(at::allclose(average, mean, 1e-6, 1e-6)) << "after " << n + 1 << " snapshots";
    EXPECT_EQ(count_buffer.item<int64_t>(), n + 10) << "integer tensors are copied";
  }
  // The first snapshot (count 0) is a copy, bit for bit.
  at::Tensor first = at::full({2}, 7.0f);
  const at::Tensor w = at::randn({2});
  swa_update({first}, {w}, 0);
  EXPECT_TRUE(at::equal(first, w));

  // Modules, matched by name: parameters and batch-norm statistics.
  torch::nn::Sequential net(torch::nn::Linear(3, 2), torch::nn::BatchNorm1d(2));
  auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(net->clone());
  {
    at::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(1.0);
    net->named_buffers()["1.running_mean"].fill_(2.0);
  }
  std::map<std::string, at::Tensor> before;
  for (const auto& item : copy->named_parameters()) before[item.key()] = item.value().detach().clone();
  swa_update(*copy, *net, 1);  // the second snapshot: (copy + net) / 2
  for (const auto& item : copy->named_parameters()) {
    const at::Tensor expected = (before[item.key()] + net->named_parameters()[item.key()].detach()) / 2;
    EXPECT_TRUE(at::allclose(item.value(), expected)) << item.key();
  }
  EXPECT_TRUE(at::allclose(copy->named_buffers()["1.running_mean"], at::full({2}, 1.0f)));  // (0 + 2) / 2
  torch::nn::Sequential other(torch::nn::Linear(3, 2));
  const std::string missing = testing::input_error_of([&] { swa_update(*other, *net, 1); });
  EXPECT_NE(missing.find("has no param/1.weight"), std::string::npos) << missing;
}

TEST(SWA, RecomputedBatchNormStatisticsAreTheMeanOfTheBatchStatistics) {
  at::manual_seed(2);
  torch::nn::Linear linear(3, 4);
  torch::nn::BatchNorm1d bn(torch::nn::BatchNormOptions(4).momentum(0.3));
  torch::nn::Sequential net(linear, bn);
  net->eval();
  {
    at::NoGradGuard no_grad;
    bn->running_mean.fill_(5.0);  // stale statistics, to be replaced
    bn->num_batches_tracked.fill_(99);
  }
  const std::vector<at::Tensor> xs = {at::randn({8, 3}), at::randn({5, 3}) * 2 + 1, at::randn({6, 3}) - 3};
  const std::vector<at::Tensor> stats = recompute_batchnorm(*net, [&] {
    for (const auto& x : xs) (void)net->forward(x);
  });
  // By hand, in double: the mean over the batches of each batch's mean and unbiased variance of the linear's output.
  at::Tensor mean = at::zeros({4}, at::kDouble), var = at::zeros({4}, at::kDouble);
  {
    at::NoGradGuard no_grad;
    for (const auto& x : xs) {
      const at::Tensor y = linear->forward(x).to(at::kDouble);
      mean += y.mean(0) / 3.0;
      var += y.var(0, /*unbiased=*/true) / 3.0;
    }
  }
  EXPECT_TRUE(at::allclose(bn->running_mean.to(at::kDouble), mean, 1e-5, 1e-6)) << bn->running_mean << mean;
  EXPECT_TRUE(at::allclose(bn->running_var.to(at::kDouble), var, 1e-5, 1e-6)) << bn->running_var << var;
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 3);
  ASSERT_EQ(stats.size(), 2u);  // running_mean and running_var, the module's own tensors
  EXPECT_TRUE(stats[0].is_same(bn->running_mean));
  EXPECT_EQ(bn->options.momentum(), c10::optional<double>(0.3)) << "the momentum is restored";
  EXPECT_FALSE(net->is_training()) << "the mode is restored";
  // No batch norm: nothing to do, the forwards do not run.
  torch::nn::Sequential plain(torch::nn::Linear(3, 2));
  bool ran = false;
  EXPECT_TRUE(recompute_batchnorm(*plain, [&] { ran = true; }).empty());
  EXPECT_FALSE(ran);
  EXPECT_EQ(count_batchnorm(*net), 1);
}

// ------------------------------------------------------------------------------------------------ in a run

/// A CNN with batch norm on 1x8x8 images, 48 examples in batches of 8 (6 batches per epoch).
Components cnn_components() {
  Components c;
  at::manual_seed(5);
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(3).width(2));
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(48).input_shape({1, 8, 8}).num_classes(3).seed(7)), 8);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  return c;
}

using Weights = std::vector<std::pair<std::string, at::Tensor>>;

Weights copy_weights(Model& model) {
  Weights out;
  for (auto& [name, t] : averaged_weights(model)) out.emplace_back(name, t.detach().clone());
  return out;
}

/// The weights after every batch and epoch (BatchEnd and EpochEnd, after the algorithms) and the learning rate of
/// every batch (BatchStart, after the algorithms).
class Watch : public Callback {
 public:
  std::string name() const override { return "watch"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::BatchEnd) weights[s.timestamp.batch] = copy_weights(*s.model);
    if (event == Event::EpochEnd) at_epoch_end[s.timestamp.epoch] = copy_weights(*s.model);
    if (event == Event::BatchStart) {
      lr[s.timestamp.batch] = s.optimizer->param_groups()[0].lr;
      last_group_lr[s.timestamp.batch] = s.optimizer->param_groups().back().lr;
    }
  }
  std::map<int64_t, Weights> weights, at_epoch_end;
  std::map<int64_t, double> lr, last_group_lr;
};

/// The mean of the snapshots in double precision (floating tensors; integer ones are the last snapshot's).
std::vector<at::Tensor> mean_of(const std::vector<const Weights*>& snapshots) {
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < snapshots.front()->size(); ++i) {
    const at::Tensor last = (*snapshots.back())[i].second;
    if (!at::isFloatingType(last.scalar_type())) {
      out.push_back(last.to(at::kDouble));
      continue;
    }
    at::Tensor sum = at::zeros_like(last, at::kDouble);
    for (const Weights* w : snapshots) sum += (*w)[i].second.to(at::kDouble);
    out.push_back(sum / static_cast<double>(snapshots.size()));
  }
  return out;
}

bool is_running_statistic(const std::string& name) {
  return name.find("running_") != std::string::npos || name.find("num_batches_tracked") != std::string::npos;
}

TEST(SWA, TheMeanOfTheSnapshotsReplacesTheWeightsAtSwaEnd) {
  // Snapshots every 2 batches from batch 3 on (at 4, 6, 8); at batch 9 (swa_end) their mean goes into the model.
  auto swa = std::make_shared<SWA>(SWAOptions()
                                       .swa_start(Time::parse("3ba"))
                                       .swa_end(Time::parse("9ba"))
                                       .update_interval(Time::parse("2ba"))
                                       .recompute_batchnorm(false));
  auto watch = std::make_shared<Watch>();
  Components c = cnn_components();
  c.algorithms = {swa};
  c.callbacks = {watch};
  Trainer t(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  t.fit();
  EXPECT_EQ(swa->count(), 3);
  EXPECT_TRUE(swa->finished());
  EXPECT_TRUE(swa->averages().empty()) << "applied averages are not kept";
  EXPECT_EQ(t.trace().at("swa/batch_end").count, 4) << "3 snapshots and the end";
  EXPECT_EQ(t.trace().at("swa/batch_end").first_batch, 4);
  const std::vector<at::Tensor> mean = mean_of({&watch->weights.at(4), &watch->weights.at(6), &watch->weights.at(8)});
  const Weights& at_end = watch->weights.at(9);
  ASSERT_EQ(at_end.size(), mean.size());
  for (size_t i = 0; i < mean.size(); ++i) {
    EXPECT_TRUE(at::allclose(at_end[i].second.to(at::kDouble), mean[i], 1e-5, 1e-6)) << at_end[i].first;
  }
  // Training goes on from the averaged weights.
  EXPECT_FALSE(at::equal(watch->weights.at(10)[0].second, at_end[0].second));
}

TEST(SWA, TheStatisticsPassLeavesTheTrainingBatchesWhereTheyWere) {
  // swa_end at batch 9, in the middle of epoch 2 (6 batches per epoch): the pass over one epoch of training batches
  // for the batch-norm statistics runs there, and training must go on with batch 10 of the epoch's order, exactly
  // the batches of a run without the pass.
  auto run = [](bool recompute) {
    auto inputs = std::make_shared<testing::BatchProbe>("probe");  // the batches the steps are given
    Components c = cnn_components();
    c.algorithms = {std::make_shared<SWA>(SWAOptions()
                                              .swa_start(Time::parse("3ba"))
                                              .swa_end(Time::parse("9ba"))
                                              .update_interval(Time::parse("2ba"))
                                              .recompute_batchnorm(recompute)),
                    inputs};
    Trainer t(TrainerOptions().max_duration(Time::parse("3ep")).threads(1), std::move(c));
    t.fit();
    EXPECT_EQ(t.trace().at("swa/batch_end").count, 4);
    return inputs->inputs;
  };
  const std::vector<at::Tensor> with_pass = run(true), without = run(false);
  ASSERT_EQ(with_pass.size(), 18u);
  ASSERT_EQ(without.size(), 18u);
  for (size_t b = 0; b < 18; ++b) EXPECT_TRUE(at::equal(with_pass[b], without[b])) << "batch " << b + 1;
}

TEST(SWA, BatchNormStatisticsRecomputedEqualAManualRecomputation) {
  // Snapshots at the end of epochs 1 and 2; at the end of epoch 2 (swa_end) the mean goes into the model and the
  // batch-norm statistics are recomputed over the batches of epoch 2's order (the epoch the timestamp is then in).
  auto run = [](bool recompute) {
    auto swa = std::make_shared<SWA>(SWAOptions()
                                         .swa_start(Time::parse("1ep"))
                                         .swa_end(Time::parse("2ep"))
                                         .update_interval(Time::parse("1ep"))
                                         .recompute_batchnorm(recompute));
    auto watch = std::make_shared<Watch>();
    Components c = cnn_components();
    c.algorithms = {swa};
    c.callbacks = {watch};
    auto t = std::make_unique<Trainer>(TrainerOptions().max_duration(Time::parse("3ep")).threads(1), std::move(c));
    t->fit();
    return std::make_tuple(std::move(t), swa, watch);
  };
  auto [t, swa, watch] = run(true);
  auto [plain_t, plain_swa, plain] = run(false);
  EXPECT_EQ(swa->count(), 2);
  EXPECT_EQ(t->trace().at("swa/epoch_end").count, 2);
  EXPECT_EQ(t->trace().at("swa/batch_end").count, 0) << "an epoch-interval average ends at the epoch's end";
  const Weights& averaged = plain->at_epoch_end.at(2);  // the mean, statistics averaged too
  const Weights& recomputed = watch->at_epoch_end.at(2);
  ASSERT_EQ(recomputed.size(), averaged.size());
  for (size_t i = 0; i < averaged.size(); ++i) {
    if (is_running_statistic(averaged[i].first)) continue;
    EXPECT_TRUE(at::equal(recomputed[i].second, averaged[i].second)) << "parameters: the mean " << averaged[i].first;
  }
  // By hand: the averaged model, each batch norm reset and cumulative, one training-mode forward per batch of the
  // epoch-2 order of the same data.
  Components fresh = cnn_components();
  Model& manual = *fresh.model;
  {
    at::NoGradGuard no_grad;
    auto tensors = averaged_weights(manual);
    for (size_t i = 0; i < tensors.size(); ++i) tensors[i].second.copy_(averaged[i].second);
  }
  for (const auto& m : manual.modules()) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->reset_running_stats();
      bn->options.momentum(c10::nullopt);
    }
  }
  manual.train();
  fresh.train_dataloader->start_epoch(t->state().seed, 2, 0);
  int64_t batches = 0;
  while (auto b = fresh.train_dataloader->next()) {
    at::NoGradGuard no_grad;
    (void)manual.forward(*b);
    ++batches;
  }
  EXPECT_EQ(batches, 6);
  const Weights expected = copy_weights(manual);
  bool any = false;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (!is_running_statistic(expected[i].first)) continue;
    any = true;
    EXPECT_TRUE(at::allclose(recomputed[i].second, expected[i].second, 1e-6, 1e-7)) << expected[i].first;
    EXPECT_FALSE(at::allclose(recomputed[i].second.to(at::kDouble), averaged[i].second.to(at::kDouble)))
        << "the averaged statistics were replaced: " << expected[i].first;
  }
  EXPECT_TRUE(any);
  // The pass left the training data where it was: epoch 3 trained on the same batches in both runs (same
  // parameters' path from the same weights, the statistics aside).
  EXPECT_EQ(t->state().timestamp.batch, 18);
}

TEST(SWA, LearningRateIsAnnealedToSwaLrFromSwaStartThenHeld) {
  // lr 0.1 under a linear decay to 0.5x over 12 batches; from batch 4, annealed (cos) over 2 intervals of 2 batches
  // from the rate then to 0.01, held to the end (after swa_end too). A parameter group with lr 0.3 (the biases)
  // anneals from its own rate to the same 0.01.
  auto swa = std::make_shared<SWA>(SWAOptions()
                                       .swa_start(Time::parse("4ba"))
                                       .swa_end(Time::parse("10ba"))
                                       .update_interval(Time::parse("2ba"))
                                       .schedule_swa_lr(true)
                                       .anneal_strategy("cos")
                                       .anneal_steps(2)
                                       .swa_lr(0.01));
  auto watch = std::make_shared<Watch>();
  Components c = cnn_components();
  c.optimizer = std::make_shared<optim::SGD>(
      c.model->named_parameters(),
      optim::SGDOptions().lr(0.1).momentum(0.9).groups({optim::ParamGroupOptions().max_dims(1).lr(0.3)}));
  c.schedulers.push_back(optim::make_linear_scheduler(optim::LinearSchedulerOptions().alpha_i(1.0).alpha_f(0.5)));
  c.algorithms = {swa};
  c.callbacks = {watch};
  Trainer t(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  t.fit();
  auto scheduled = [](int64_t b) { return 0.1 * (1.0 - 0.5 * static_cast<double>(b) / 12.0); };
  for (int64_t b = 0; b < 4; ++b) EXPECT_DOUBLE_EQ(watch->lr.at(b), scheduled(b)) << "batch " << b;
  const double lr0 = scheduled(4);
  for (int64_t b = 0; b < 4; ++b) EXPECT_DOUBLE_EQ(watch->last_group_lr.at(b), 3 * scheduled(b)) << "batch " << b;
  for (int64_t b = 4; b < 12; ++b) {
    const double p = std::min(1.0, static_cast<double>(b - 4) / 4.0);
    const double f = (1 - std::cos(kPi * p)) / 2;
    EXPECT_NEAR(watch->lr.at(b), (1 - f) * lr0 + f * 0.01, 1e-15) << "batch " << b;
    EXPECT_NEAR(watch->last_group_lr.at(b), (1 - f) * 3 * lr0 + f * 0.01, 1e-15) << "group 1, batch " << b;
  }
  EXPECT_NEAR(watch->lr.at(6), (lr0 + 0.01) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(watch->lr.at(11), 0.01);
  EXPECT_TRUE(swa->finished());
}

TEST(SWA, SkippedStepsAreNotSnapshots) {
  auto swa = std::make_shared<SWA>(SWAOptions()
                                       .swa_start(Time::parse("1ba"))
                                       .swa_end(Time::parse("6ba"))
                                       .update_interval(Time::parse("1ba"))
                                       .recompute_batchnorm(false));
  Components c = cnn_components();
  c.algorithms = {std::make_shared<testing::NanInputs>(2), swa};  // batch 2 (the third) is dropped
  auto watch = std::make_shared<Watch>();
  c.callbacks = {watch};
  Trainer t(TrainerOptions().max_duration(Time::parse("6ba")).nonfinite_loss("skip").threads(1), std::move(c));
  t.fit();
  EXPECT_EQ(t.skipped_batches(), 1);
  EXPECT_EQ(swa->count(), 5) << "after batches 1, 2, 4, 5 and 6: the dropped batch 3 moved no weight";
  EXPECT_EQ(t.trace().at("swa/batch_end").count, 5);
  EXPECT_TRUE(swa->finished());
}

TEST(SWA, RunsThatCannotAverageAreRefusedBeforeStepOne) {
  auto refused = [](SWAOptions o, const std::string& max) {
    Components c = cnn_components();
    c.algorithms = {std::make_shared<SWA>(o)};
    return testing::input_error_of(
        [&] { Trainer t(TrainerOptions().max_duration(Time::parse(max)).threads(1), std::move(c)); });
  };
  const std::string late = refused(SWAOptions().swa_start(Time::parse("2ba")).swa_end(Time::parse("3ep")), "2ep");
  EXPECT_NE(late.find("swa: swa_end 3ep (18 batches) is after max_duration 2ep (12 batches)"), std::string::npos)
      << late;
  const std::string order = refused(SWAOptions().swa_start(Time::parse("0.5dur")).swa_end(Time::parse("5ba")), "2ep");
  EXPECT_NE(order.find("swa: swa_start 0.5dur (6 batches) is not before swa_end 5ba (5 batches)"), std::string::npos)
      << order;
  // No snapshot in the window: an Error at swa_end naming the options.
  Components c = cnn_components();
  c.algorithms = {std::make_shared<SWA>(
      SWAOptions().swa_start(Time::parse("2ba")).swa_end(Time::parse("5ba")).update_interval(Time::parse("1ep")))};
  Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));
  try {
    t.fit();
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("swa: swa_end 5ba was reached at batch 5 with no snapshot taken"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tessera::algorithms
