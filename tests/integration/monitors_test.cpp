// The monitors (include/tessera/callbacks/monitors.h): what each logs, against what the run did.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/record_function.h>
#include <fmt/format.h>
#include <tessera/algorithms/gradient_clipping.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <tessera/callbacks/system_metrics.h>

#include "support.h"

namespace tessera {
namespace {

using callbacks::LrMonitor;
using callbacks::LrMonitorOptions;
using callbacks::MemoryMonitor;
using callbacks::MemoryMonitorOptions;
using callbacks::OptimizerMonitor;
using callbacks::OptimizerMonitorOptions;
using callbacks::RuntimeEstimator;
using callbacks::RuntimeEstimatorOptions;
using callbacks::SpeedMonitor;
using callbacks::SpeedMonitorOptions;
using callbacks::SystemMetricsMonitor;
using callbacks::SystemMetricsMonitorOptions;
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

/// At each batch end, how many evaluations runtime_estimator's count says each evaluator has left; and the batch
/// of every evaluation that ran, by label.
class EvaluationProbe : public Callback {
 public:
  std::string name() const override { return "evaluation_probe"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event == Event::EvalStart) ran[state.eval_label].push_back(state.timestamp.batch);
    if (event != Event::BatchEnd) return;
    std::map<std::string, int64_t> left;
    for (const Evaluator& ev : state.evaluators) left[ev.label] = callbacks::evaluations_left(ev, state.timestamp, state.time);
    at_batch_end.emplace_back(state.timestamp.batch, left);
  }
  std::map<std::string, std::vector<int64_t>> ran;
  std::vector<std::pair<int64_t, std::map<std::string, int64_t>>> at_batch_end;
};

TEST(RuntimeEstimator, EvaluationsLeftAreTheOnesTheTrainerRuns) {
  // 6 batches an epoch, 11 batches: "eval" at epoch ends (batch 6) and at the end of fit (11); "two" every 2 batches
  // and at the end; "dur" every 0.3 of the run (3.3 batches: 4, 7, 10) and at the end; "end" only at the end.
  for (const char* max_duration : {"11ba", "2ep"}) {
    Components c = testing::tiny_components();
    const Evaluator base = c.evaluators[0];
    for (auto [label, interval] : {std::pair<const char*, const char*>{"two", "2ba"}, {"dur", "0.3dur"}, {"end", "0ba"}}) {
      Evaluator ev = base;
      ev.label = label;
      ev.interval = Time::parse(interval);
      c.evaluators.push_back(ev);
    }
    auto probe = std::make_shared<EvaluationProbe>();
    c.callbacks = {probe};
    Trainer(TrainerOptions().max_duration(Time::parse(max_duration)).threads(1), c).fit();
    SCOPED_TRACE(max_duration);
    ASSERT_EQ(probe->ran.size(), 4u);
    EXPECT_EQ(probe->ran["end"], std::vector<int64_t>{probe->at_batch_end.back().first});
    for (const auto& [batch, left] : probe->at_batch_end) {
      for (const auto& [label, runs] : probe->ran) {
        const auto to_come = std::count_if(runs.begin(), runs.end(), [&](int64_t b) { return b >= batch; });
        EXPECT_EQ(left.at(label), to_come) << label << " at the end of batch " << batch;
      }
    }
  }
}

TEST(RuntimeEstimator, EstimateIsTheMeanBatchTimeTimesTheBatchesLeftPlusTheEvaluationsLeft) {
  Components c = testing::tiny_components();  // 6 batches of 8 an epoch, evaluated at each epoch end
  auto stamps = std::make_shared<Timestamps>();
  auto log = std::make_shared<RecordingDestination>();
  auto estimator = std::make_shared<RuntimeEstimator>(RuntimeEstimatorOptions().skip_batches(2).time_unit("seconds"));
  c.callbacks = {stamps, estimator, log};
  Trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), c).fit();

  const StateDict state = estimator->state_dict();
  ASSERT_EQ(state.count("eval_seconds/eval"), 1u);
  const at::Tensor evals = state.at("eval_seconds/eval");
  ASSERT_EQ(evals.numel(), 2);  // at the two epoch ends
  const auto logged = entries_with(*log, "wall_clock/remaining_estimate");
  ASSERT_EQ(logged.size(), 10u) << "none for the two skipped batches";
  for (size_t i = 0; i < logged.size(); ++i) {
    const auto& [batch, v] = logged[i];
    ASSERT_EQ(batch, static_cast<int64_t>(i) + 3);
    double seconds = 0;
    for (size_t j = 2; j < i + 3; ++j) seconds += stamps->at_batch_end[j].batch_wct;
    double expected = seconds / static_cast<double>(i + 1) * static_cast<double>(12 - batch);
    // From batch 7 on, the epoch-end evaluation at batch 12 is still to come, costing what the first one cost.
    if (batch > 6) expected += evals[0].item<double>();
    EXPECT_DOUBLE_EQ(v.at("wall_clock/remaining_estimate"), expected) << "batch " << batch;
  }

  // The evaluations' times survive a resume; the hours are the seconds over 3600.
  RuntimeEstimator resumed(RuntimeEstimatorOptions().skip_batches(0));
  resumed.load_state_dict(state);
  EXPECT_TRUE(resumed.state_dict().at("eval_seconds/eval").equal(evals));
  State s;
  s.time.max_duration = Time::parse("4ba");
  s.evaluators = c.evaluators;  // every epoch (of 1 batch here): at the ends of batches 1 to 4
  s.timestamp.batch = 1;
  s.timestamp.batch_wct = 36.0;
  RecordingDestination d;
  Logger logger({&d});
  resumed.run_event(Event::FitStart, s, logger);
  resumed.run_event(Event::BatchEnd, s, logger);
  ASSERT_EQ(d.metrics.size(), 1u);
  // Two runs: the first is left out of the mean.
  EXPECT_DOUBLE_EQ(d.metrics[0].at("wall_clock/remaining_estimate"), (36.0 * 3 + 4 * evals[1].item<double>()) / 3600);
}

namespace {

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

/// A /proc of the files the system monitor reads, with the counters given.
std::string fake_proc(const std::filesystem::path& root, uint64_t idle, uint64_t read_bytes,
                      uint64_t received) {
  write_file(root / "stat", fmt::format("cpu  100 0 50 {} 10 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n", idle));
  write_file(root / "meminfo", "MemTotal:       8000000 kB\nMemFree:  1000000 kB\nMemAvailable:   2000000 kB\n");
  write_file(root / "loadavg", "1.50 0.80 0.40 2/300 4242\n");
  write_file(root / "self" / "io", fmt::format("rchar: 1\nwchar: 2\nread_bytes: {}\nwrite_bytes: 5000000\n", read_bytes));
  write_file(root / "net" / "dev",
             fmt::format("Inter-|   Receive   |  Transmit\n face |bytes packets|bytes\n"
                         "    lo: 999999 1 0 0 0 0 0 0 999999 1 0 0 0 0 0 0\n"
                         "  eth0: {} 10 0 0 0 0 0 0 3000000 10 0 0 0 0 0 0\n",
                         received));
  return root.string();
}

}  // namespace

TEST(SystemMetricsMonitor, RatesComeFromTwoReadingsOfTheKernelsCounters) {
  const auto root = std::filesystem::temp_directory_path() / ("tessera_system_metrics_" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  callbacks::SystemSample a = callbacks::read_system_sample(fake_proc(root / "a", 800, 1000000, 1000000));
  callbacks::SystemSample b = callbacks::read_system_sample(fake_proc(root / "b", 1000, 5000000, 9000000));
  a.seconds = 10;
  b.seconds = 12;
  a.process_cpu_seconds = 3.0;  // read from the process's clock, not from the folder
  b.process_cpu_seconds = 4.5;
  const auto v = callbacks::system_metrics(a, b);
  // CPU: busy 160 ticks of 960 (a: user 100 + system 50 + iowait 10 + idle 800), then 160 of 1160: 0 of 200 busy.
  EXPECT_DOUBLE_EQ(v.at("system/cpu_percent"), 0.0);
  EXPECT_DOUBLE_EQ(v.at("system/process_cpu_percent"), 75.0);
  EXPECT_DOUBLE_EQ(v.at("system/memory_used_percent"), 75.0);
  EXPECT_DOUBLE_EQ(v.at("system/memory_used_gb"), 6000000.0 * 1024 / 1e9);
  EXPECT_DOUBLE_EQ(v.at("system/load_average"), 1.5);
  EXPECT_DOUBLE_EQ(v.at("system/process_read_mb_per_sec"), 2.0);
  EXPECT_DOUBLE_EQ(v.at("system/process_write_mb_per_sec"), 0.0);
  EXPECT_DOUBLE_EQ(v.at("system/network_recv_mb_per_sec"), 4.0) << "loopback is left out";
  EXPECT_DOUBLE_EQ(v.at("system/network_sent_mb_per_sec"), 0.0);

  // A busier second reading, and a /proc without the files: nothing is made up.
  callbacks::SystemSample c = callbacks::read_system_sample(fake_proc(root / "c", 850, 5000000, 9000000));
  write_file(root / "c" / "stat", "cpu  300 0 50 850 10 0 0 0 0 0\n");
  c = callbacks::read_system_sample((root / "c").string());
  c.seconds = 14;
  EXPECT_DOUBLE_EQ(callbacks::system_metrics(a, c).at("system/cpu_percent"), 100.0 * 200 / 250);
  const callbacks::SystemSample none = callbacks::read_system_sample((root / "missing").string());
  EXPECT_TRUE(callbacks::system_metrics(none, none).empty());
  std::filesystem::remove_all(root);
}

/// Keeps a core busy for `seconds` at every batch end.
class BusyBatches : public Callback {
 public:
  explicit BusyBatches(double seconds) : seconds_(seconds) {}
  std::string name() const override { return "busy_batches"; }
  void run_event(Event event, State&, Logger&) override {
    if (event != Event::BatchEnd) return;
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds_);
    volatile uint64_t spins = 0;
    while (std::chrono::steady_clock::now() < until) spins = spins + 1;
  }

 private:
  double seconds_;
};

TEST(SystemMetricsMonitor, LogsTheMachinesLoadEveryIntervalBatches) {
  const callbacks::SystemSample here = callbacks::read_system_sample();
  EXPECT_TRUE(here.cpu_ticks && here.process_cpu_seconds && here.memory_total_available && here.load_average);
  std::string why;
  const auto gpus = callbacks::read_gpus(&why);
  EXPECT_TRUE(!gpus.empty() || !why.empty()) << "no GPU comes with the reason";

  Components c = testing::tiny_components();
  auto log = std::make_shared<RecordingDestination>();
  // The kernel counts CPU time in ticks (10 ms): each batch spins 25 ms so that the readings have something to show.
  c.callbacks = {std::make_shared<BusyBatches>(0.025),
                 std::make_shared<SystemMetricsMonitor>(SystemMetricsMonitorOptions().interval(3)), log};
  Trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), c).fit();
  const auto logged = entries_with(*log, "system/memory_used_percent");
  ASSERT_EQ(logged.size(), 2u);  // after batches 3 and 6
  for (const auto& [batch, v] : logged) {
    EXPECT_EQ(batch % 3, 0);
    for (const char* key : {"system/cpu_percent", "system/memory_used_percent", "system/disk_used_percent"}) {
      EXPECT_GE(v.at(key), 0.0) << key;
      EXPECT_LE(v.at(key), 100.0) << key;
    }
    EXPECT_GT(v.at("system/process_cpu_percent"), 30.0) << "this process spun in between";
    EXPECT_GT(v.at("system/cpu_percent"), 0.0);
    EXPECT_GT(v.at("system/memory_used_gb"), 0.0);
    for (const auto& [key, value] : v) EXPECT_EQ(key.find("system/gpu"), std::string::npos) << "a CPU run: " << key;
  }
  EXPECT_TRUE(log->texts.empty()) << "no warning on a CPU run";
}

TEST(Monitors, LeaveTrainingBitwiseAlone) {
  auto run = [](bool monitored) {
    Components c = testing::tiny_components();
    if (monitored) {
      c.callbacks = {std::make_shared<SpeedMonitor>(SpeedMonitorOptions().window(2).count_flops(true)),
                     std::make_shared<LrMonitor>(),
                     std::make_shared<OptimizerMonitor>(OptimizerMonitorOptions().interval(1)),
                     std::make_shared<MemoryMonitor>(), std::make_shared<RuntimeEstimator>(),
                     std::make_shared<SystemMetricsMonitor>(SystemMetricsMonitorOptions().interval(1)),
                     std::make_shared<RecordingDestination>()};
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
  EXPECT_THAT(testing::input_error_of([] { RuntimeEstimator(RuntimeEstimatorOptions().skip_batches(-1)); }),
              HasSubstr("runtime_estimator.skip_batches"));
  EXPECT_THAT(testing::input_error_of([] { RuntimeEstimator(RuntimeEstimatorOptions().time_unit("weeks")); }),
              HasSubstr("one of: seconds, minutes, hours, days"));
  EXPECT_THAT(testing::input_error_of([] { SystemMetricsMonitor(SystemMetricsMonitorOptions().interval(0)); }),
              HasSubstr("system_metrics_monitor.interval"));
  EXPECT_THAT(testing::input_error_of([] { SystemMetricsMonitor(SystemMetricsMonitorOptions().disk_path("")); }),
              HasSubstr("system_metrics_monitor.disk_path: empty"));
  EXPECT_THAT(testing::input_error_of(
                  [] { SystemMetricsMonitor(SystemMetricsMonitorOptions().disk_path("/no/such/folder")); }),
              HasSubstr("system_metrics_monitor.disk_path: '/no/such/folder' cannot be read"));
}

}  // namespace
}  // namespace tessera
