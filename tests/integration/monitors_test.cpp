// The monitors (include/tessera/callbacks/monitors.h): what each logs, against what the run did.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/record_function.h>
#include <tessera/algorithms/gradient_clipping.h>
#include <torch/version.h>

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support.h"

namespace tessera {
namespace {

using callbacks::LrMonitor;
using callbacks::LrMonitorOptions;
using callbacks::MemoryMonitor;
using callbacks::MemoryMonitorOptions;
using callbacks::OptimizerMonitor;
using callbacks::OptimizerMonitorOptions;
using callbacks::SpeedMonitor;
using callbacks::SpeedMonitorOptions;
using ::testing::HasSubstr;
using testing::RecordingDestination;

/// The logged entries that hold `key`, with the batch each was logged at.
std::vector<std::pair<int64_t, std::map<std::string, double>>> entries_with(const RecordingDestination& d,
                                                                            const std::string& key) {
  std::vector<std::pair<int64_t, std::map<std::string, double>>> out;
  for (size_t i = 0; i < d.metrics.size(); ++i) {
    if (d.metrics[i].count(key)) out.emplace_back(d.batches[i], d.metrics[i]);
  }
  return out;
}

/// What the trainer's timestamp says at each BatchEnd.
class Timestamps : public Callback {
 public:
  std::string name() const override { return "timestamps"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event == Event::BatchEnd) at_batch_end.push_back(state.timestamp);
  }
  std::vector<Timestamp> at_batch_end;
};

TEST(SpeedMonitor, ThroughputIsTheWindowsSamplesOverItsBatchTimesAndTimesAddUp) {
  Components c = testing::tiny_components();  // 6 batches of 8 an epoch, evaluated at each epoch end
  auto stamps = std::make_shared<Timestamps>();
  auto log = std::make_shared<RecordingDestination>();
  c.callbacks = {stamps,
                 std::make_shared<SpeedMonitor>(
                     SpeedMonitorOptions().window(3).flops_per_sample(1000).peak_flops(1e6).time_unit("seconds")),
                 log};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), c);
  trainer.fit();

  const auto logged = entries_with(*log, "time/train");
  ASSERT_EQ(logged.size(), 12u) << "one entry per batch end";
  double eval_seconds = 0;
  for (size_t i = 0; i < logged.size(); ++i) {
    const auto& [batch, v] = logged[i];
    const Timestamp& ts = stamps->at_batch_end[i];
    EXPECT_EQ(batch, ts.batch);
    EXPECT_EQ(v.at("time/train"), ts.total_wct);
    EXPECT_EQ(v.at("time/total"), v.at("time/train") + v.at("time/eval"));
    if (i < 6) {
      EXPECT_EQ(v.at("time/eval"), 0.0) << "no evaluation has run before the first epoch ends";
    } else {
      if (i == 6) eval_seconds = v.at("time/eval");
      EXPECT_GT(v.at("time/eval"), 0.0);
      EXPECT_EQ(v.at("time/eval"), eval_seconds) << "the second evaluation runs after the last batch end";
    }
    if (i < 2) {
      EXPECT_EQ(v.count("throughput/samples_per_sec"), 0u) << "the window of 3 batches is not full at batch " << i;
      continue;
    }
    double seconds = 0;
    for (size_t j = i - 2; j <= i; ++j) seconds += stamps->at_batch_end[j].batch_wct;
    EXPECT_EQ(v.at("throughput/samples_per_sec"), 24.0 / seconds);
    EXPECT_EQ(v.at("throughput/batches_per_sec"), 3.0 / seconds);
    EXPECT_EQ(v.at("throughput/device/samples_per_sec"), v.at("throughput/samples_per_sec"));
    EXPECT_EQ(v.at("throughput/flops_per_sec"), 24.0 / seconds * 1000);
    EXPECT_EQ(v.at("throughput/device/mfu"), 24.0 / seconds * 1000 / 1e6);
    EXPECT_EQ(v.count("throughput/tokens_per_sec"), 0u) << "the samples have no tokens";
  }
}

/// The FLOPs a FlopCounter counts while `run` runs.
double counted(const std::function<void()>& run) {
  callbacks::FlopCounter counter;
  run();
  return counter.flops();
}

TEST(FlopCounter, CountsMatrixProductsConvolutionsAndAttentionFromTheirShapes) {
  at::manual_seed(0);
  const at::Tensor a = at::randn({3, 5}), b = at::randn({5, 7});
  EXPECT_EQ(counted([&] { at::mm(a, b); }), 2.0 * 3 * 5 * 7);
  EXPECT_EQ(counted([&] { at::addmm(at::zeros({7}), a, b); }), 2.0 * 3 * 5 * 7);
  const at::Tensor x = at::randn({2, 3, 5});
  EXPECT_EQ(counted([&] { at::linear(x, b.t(), at::zeros({7})); }), 2.0 * 6 * 5 * 7) << "matmul's mm, once";
  EXPECT_EQ(counted([&] { at::matmul(x, at::randn({2, 5, 4})); }), 2.0 * 2 * 3 * 5 * 4);
  EXPECT_EQ(counted([&] { at::baddbmm(at::zeros({2, 3, 4}), x, at::randn({2, 5, 4})); }), 2.0 * 2 * 3 * 5 * 4);
  // Convolutions: each output element takes C_in / groups · k_h · k_w multiply-adds; transposed, each input element.
  const at::Tensor image = at::randn({2, 3, 8, 8});
  EXPECT_EQ(counted([&] { at::conv2d(image, at::randn({4, 3, 3, 3}), {}, 1, 1); }), 2.0 * (2 * 4 * 8 * 8) * 27);
  EXPECT_EQ(counted([&] { at::conv2d(image, at::randn({6, 1, 3, 3}), {}, 2, 1, 1, 3); }), 2.0 * (2 * 6 * 4 * 4) * 9);
  EXPECT_EQ(counted([&] { at::conv_transpose2d(at::randn({2, 4, 5, 5}), at::randn({4, 3, 3, 3})); }),
            2.0 * (2 * 4 * 5 * 5) * 27);
#if TORCH_VERSION_MAJOR >= 2
  // Fused or not (a fused kernel where there is one, else two matmuls): q·kᵀ and softmax·v.
  const at::Tensor q = at::randn({2, 2, 6, 4}), k = at::randn({2, 2, 5, 4}), v = at::randn({2, 2, 5, 3});
  EXPECT_EQ(counted([&] { at::scaled_dot_product_attention(q, k, v); }), 2.0 * (2 * 2 * 6) * 5 * (4 + 3));
#endif
  EXPECT_EQ(counted([&] { (a * 2).relu().sum(); }), 0.0) << "elementwise ops and reductions are not counted";

  // Under autocast, mm runs again on the cast inputs: counted once. Counters nest, each counting what runs in it.
  {
    callbacks::FlopCounter outer;
    {
      AutocastScope bf16(Precision::AmpBf16, c10::Device(c10::kCPU));
      callbacks::FlopCounter inner;
      EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
      EXPECT_EQ(inner.flops(), 2.0 * 3 * 5 * 7);
    }
    at::mm(a, b);
    EXPECT_EQ(outer.flops(), 2 * 2.0 * 3 * 5 * 7);
  }
  EXPECT_FALSE(at::hasThreadLocalCallbacks()) << "the op observer goes with the last counter";
}

/// Feeds a speed monitor batches by hand: `samples` and `tokens` a batch, each taking `seconds`.
std::vector<std::map<std::string, double>> feed(SpeedMonitor& monitor, State& state, int64_t batches, int64_t samples,
                                                int64_t tokens, double seconds) {
  RecordingDestination d;
  Logger logger({&d});
  for (int64_t b = 0; b < batches; ++b) {
    monitor.run_event(Event::BatchStart, state, logger);
    state.timestamp = state.timestamp.to_next_batch(samples, tokens, seconds);
    monitor.run_event(Event::BatchEnd, state, logger);
  }
  return d.metrics;
}

TEST(SpeedMonitor, CountedFlopsAreThreeTimesEachBatchsForward) {
  // The tiny model: Linear 16 → 8, ReLU, Linear 8 → 3 on batches of 8.
  const double forward = 2.0 * 8 * (16 * 8 + 8 * 3);
  Components c = testing::tiny_components();
  auto stamps = std::make_shared<Timestamps>();
  auto log = std::make_shared<RecordingDestination>();
  c.callbacks = {stamps, std::make_shared<SpeedMonitor>(SpeedMonitorOptions().window(2).count_flops(true).peak_flops(1e9)),
                 log};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("4ba")).threads(1).microbatch_size(3), c);
  trainer.fit();
  const auto logged = entries_with(*log, "throughput/flops_per_sec");
  ASSERT_EQ(logged.size(), 3u);
  for (size_t i = 0; i < logged.size(); ++i) {
    const double seconds = stamps->at_batch_end[i].batch_wct + stamps->at_batch_end[i + 1].batch_wct;
    const auto& v = logged[i].second;
    // Microbatches of 3, 3 and 2 examples: their forwards add up to the batch's.
    EXPECT_DOUBLE_EQ(v.at("throughput/flops_per_sec"), 2 * 3 * forward / seconds);
    EXPECT_DOUBLE_EQ(v.at("throughput/device/mfu"), 2 * 3 * forward / seconds / 1e9);
  }
  EXPECT_THAT(testing::input_error_of([] { SpeedMonitor(SpeedMonitorOptions().count_flops(true).flops_per_sample(5)); }),
              HasSubstr("give one of them"));
}

TEST(SpeedMonitor, TokensAndOneDevicesShareWithSeveralRanks) {
  SpeedMonitor monitor(SpeedMonitorOptions().window(2).time_unit("minutes"));
  State state;
  state.world_size = 4;
  const auto values = feed(monitor, state, 3, 32, 32 * 128, 0.5);
  ASSERT_EQ(values.size(), 3u);
  const auto& v = values.back();
  EXPECT_EQ(v.at("throughput/samples_per_sec"), 64.0);
  EXPECT_EQ(v.at("throughput/device/samples_per_sec"), 16.0);
  EXPECT_EQ(v.at("throughput/batches_per_sec"), 2.0);
  EXPECT_EQ(v.at("throughput/device/batches_per_sec"), 2.0);
  EXPECT_EQ(v.at("throughput/tokens_per_sec"), 64.0 * 128);
  EXPECT_EQ(v.at("throughput/device/tokens_per_sec"), 16.0 * 128);
  EXPECT_EQ(v.count("throughput/flops_per_sec"), 0u) << "no flops_per_sample given";
  EXPECT_EQ(v.at("time/train"), 1.5 / 60);

  // Other ranks measure nothing (they have no logger destinations).
  SpeedMonitor other(SpeedMonitorOptions().window(1));
  State rank1;
  rank1.rank = 1;
  rank1.world_size = 2;
  EXPECT_TRUE(feed(other, rank1, 2, 8, 0, 0.1).empty());
}

TEST(SpeedMonitor, TheEvaluationTimeIsKeptInItsStateAndTheWindowStartsAfreshOnResume) {
  SpeedMonitor first(SpeedMonitorOptions().window(2).time_unit("seconds"));
  RecordingDestination d;
  Logger logger({&d});
  State state;
  first.run_event(Event::EvalStart, state, logger);
  first.run_event(Event::EvalEnd, state, logger);
  feed(first, state, 2, 8, 0, 0.25);
  const StateDict saved = first.state_dict();
  const double eval_seconds = saved.at("eval_seconds").item<double>();
  EXPECT_GT(eval_seconds, 0.0);

  SpeedMonitor resumed(SpeedMonitorOptions().window(2).time_unit("seconds"));
  resumed.load_state_dict(saved);
  resumed.run_event(Event::FitStart, state, logger);
  const auto values = feed(resumed, state, 2, 8, 0, 0.25);
  EXPECT_EQ(values[0].count("throughput/samples_per_sec"), 0u) << "the window holds the resumed run's batches only";
  EXPECT_EQ(values[1].at("throughput/samples_per_sec"), 32.0);
  EXPECT_EQ(values[1].at("time/eval"), eval_seconds);
  EXPECT_EQ(values[1].at("time/train"), 1.0);
}

TEST(LrMonitor, LogsEveryGroupsRateAsTheScheduleSetsIt) {
  Components c = testing::tiny_components();
  auto params = c.model->parameters();
  c.optimizer = std::make_shared<optim::SGD>(std::vector<at::Tensor>{params[0]}, optim::SGDOptions().lr(0.1));
  optim::ParamGroup rest;
  rest.params.assign(params.begin() + 1, params.end());
  rest.initial_lr = rest.lr = 0.02;
  c.optimizer->param_groups().push_back(rest);
  c.schedulers.push_back(optim::make_linear_scheduler(optim::LinearSchedulerOptions().alpha_f(0.5)));
  auto log = std::make_shared<RecordingDestination>();
  c.callbacks = {std::make_shared<LrMonitor>(LrMonitorOptions().interval(4)), log};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), c);
  trainer.fit();

  const auto logged = entries_with(*log, "lr-sgd/group0");
  ASSERT_EQ(logged.size(), 3u);  // batches 0, 4, 8 of 12
  for (size_t i = 0; i < logged.size(); ++i) {
    const auto& [batch, v] = logged[i];
    EXPECT_EQ(batch, static_cast<int64_t>(4 * i));
    const double alpha = 1.0 - 0.5 * static_cast<double>(batch) / 12.0;
    EXPECT_DOUBLE_EQ(v.at("lr-sgd/group0"), 0.1 * alpha);
    EXPECT_DOUBLE_EQ(v.at("lr-sgd/group1"), 0.02 * alpha);
    EXPECT_EQ(v.size(), 2u);
  }
}

/// Each parameter's gradient norm as the optimizer step sees it, and its weight's norm before the step, by name, at
/// after_train_batch.
class GradNorms : public Callback {
 public:
  std::string name() const override { return "grad_norms"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event != Event::AfterTrainBatch) return;
    std::map<std::string, double> norms, weights;
    for (const auto& p : state.model->named_parameters()) {
      if (!p.value().grad().defined()) continue;
      norms[p.key()] = p.value().grad().norm().item<double>();
      weights[p.key()] = p.value().norm().item<double>();
    }
    at_step.push_back(norms);
    weights_at_step.push_back(weights);
  }
  std::vector<std::map<std::string, double>> at_step, weights_at_step;
};

TEST(OptimizerMonitor, NormsAreThoseOfTheGradientsTheStepTakesAfterClipping) {
  Components c = testing::tiny_components();
  c.model->parameters()[0].requires_grad_(false);  // a frozen parameter has no gradient and no entry
  c.algorithms.push_back(std::make_shared<algorithms::GradientClipping>(
      algorithms::GradientClippingOptions().clipping_type("norm").clipping_threshold(0.05)));
  auto norms = std::make_shared<GradNorms>();
  auto log = std::make_shared<RecordingDestination>();
  c.callbacks = {std::make_shared<OptimizerMonitor>(OptimizerMonitorOptions().interval(5)), norms, log};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), c);
  trainer.fit();

  const auto logged = entries_with(*log, "l2_norm/grad/global");
  ASSERT_EQ(logged.size(), 3u);  // batches 0, 5, 10
  const auto named = c.model->named_parameters();
  for (size_t i = 0; i < logged.size(); ++i) {
    const auto& [batch, v] = logged[i];
    EXPECT_EQ(batch, static_cast<int64_t>(5 * i));
    const auto& expected = norms->at_step[static_cast<size_t>(batch)];
    ASSERT_EQ(expected.size(), named.size() - 1);
    double squares = 0;
    double weight_squares = 0;
    for (const auto& [key, norm] : expected) {
      EXPECT_FLOAT_EQ(v.at("l2_norm/grad/" + key), norm) << key;
      const double weight = norms->weights_at_step[static_cast<size_t>(batch)].at(key);
      EXPECT_FLOAT_EQ(v.at("l2_norm/param/" + key), weight) << key;
      squares += norm * norm;
      weight_squares += weight * weight;
    }
    EXPECT_NEAR(v.at("l2_norm/param/global"), std::sqrt(weight_squares), 1e-5);
    EXPECT_NEAR(v.at("l2_norm/grad/global"), std::sqrt(squares), 1e-6);
    EXPECT_LE(v.at("l2_norm/grad/global"), 0.05 * (1 + 1e-5)) << "gradient clipping ran before it";
    EXPECT_EQ(v.count("l2_norm/grad/" + named[0].key()), 0u) << "the frozen parameter";
    EXPECT_EQ(v.size(), 2 * expected.size() + 2);
  }

  // Only the global norms without per_parameter.
  Components g = testing::tiny_components();
  auto global_log = std::make_shared<RecordingDestination>();
  g.callbacks = {std::make_shared<OptimizerMonitor>(OptimizerMonitorOptions().interval(100).per_parameter(false)),
                 global_log};
  Trainer(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), g).fit();
  const auto global = entries_with(*global_log, "l2_norm/grad/global");
  ASSERT_EQ(global.size(), 1u);
  EXPECT_EQ(global[0].second.size(), 2u);
}

TEST(MemoryMonitor, LogsTheProcesssResidentMemoryInGigabytes) {
  const callbacks::HostMemory host = callbacks::host_memory();
  EXPECT_GT(host.rss_bytes, 1 << 20);
  EXPECT_GE(host.peak_rss_bytes, host.rss_bytes);

  Components c = testing::tiny_components();
  auto log = std::make_shared<RecordingDestination>();
  c.callbacks = {std::make_shared<MemoryMonitor>(MemoryMonitorOptions().interval(3)), log};
  Trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), c).fit();
  const auto logged = entries_with(*log, "memory/host_rss_mem");
  ASSERT_EQ(logged.size(), 2u);  // batches 0 and 3 of 6
  for (const auto& [batch, v] : logged) {
    EXPECT_EQ(batch % 3, 0);
    EXPECT_GT(v.at("memory/host_rss_mem"), 1e-3);  // over a megabyte
    EXPECT_LT(v.at("memory/host_rss_mem"), 1e3);
    EXPECT_GE(v.at("memory/host_peak_rss_mem"), v.at("memory/host_rss_mem"));
    EXPECT_EQ(v.count("memory/current_allocated_mem"), 0u) << "the CUDA allocator's values only on a CUDA device";
  }
}

TEST(Monitors, LeaveTrainingBitwiseAlone) {
  auto run = [](bool monitored) {
    Components c = testing::tiny_components();
    if (monitored) {
      c.callbacks = {std::make_shared<SpeedMonitor>(SpeedMonitorOptions().window(2).count_flops(true)),
                     std::make_shared<LrMonitor>(),
                     std::make_shared<OptimizerMonitor>(OptimizerMonitorOptions().interval(1)),
                     std::make_shared<MemoryMonitor>(), std::make_shared<RecordingDestination>()};
    }
    Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1).seed(5), c);
    trainer.fit();
    return c.model->parameters();
  };
  const auto plain = run(false), monitored = run(true);
  ASSERT_EQ(plain.size(), monitored.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(plain[i].equal(monitored[i])) << "parameter " << i;
}

TEST(Monitors, BadSettingsAreClearErrors) {
  EXPECT_THAT(testing::input_error_of([] { SpeedMonitor(SpeedMonitorOptions().window(0)); }),
              HasSubstr("speed_monitor.window"));
  EXPECT_THAT(testing::input_error_of([] { SpeedMonitor(SpeedMonitorOptions().time_unit("weeks")); }),
              HasSubstr("one of: seconds, minutes, hours, days"));
  EXPECT_THAT(testing::input_error_of([] { SpeedMonitor(SpeedMonitorOptions().peak_flops(-1)); }),
              HasSubstr("speed_monitor.peak_flops"));
  EXPECT_THAT(testing::input_error_of([] { OptimizerMonitor(OptimizerMonitorOptions().interval(0)); }),
              HasSubstr("optimizer_monitor.interval"));
  EXPECT_THAT(testing::input_error_of([] { LrMonitor(LrMonitorOptions().interval(-2)); }),
              HasSubstr("lr_monitor.interval"));
  EXPECT_THAT(testing::input_error_of([] { MemoryMonitor(MemoryMonitorOptions().interval(0)); }),
              HasSubstr("memory_monitor.interval"));
}

}  // namespace
}  // namespace tessera
