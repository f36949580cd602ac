// activation_monitor (include/tessera/callbacks/activation_monitor.h): the statistics, which layers report, when,
// and that training does not change.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <tessera/algorithms/gyro_dropout.h>
#include <tessera/algorithms/sam.h>
#include <tessera/callbacks/activation_monitor.h>

#include "support.h"

namespace tessera {
namespace {

using callbacks::activation_statistics;
using callbacks::ActivationMonitor;
using callbacks::ActivationMonitorOptions;
using ::testing::HasSubstr;
using testing::RecordingDestination;

std::vector<double> values_of(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

TEST(ActivationMonitor, StatisticsAreComposersOverTheLastDimensionAveragedOverItsVectors) {
  // Row 1: mean 4, deviations -3 -2 -1 0 6: variance 50/5 = 10, fourth moment 1394/5 = 278.8, kurtosis 2.788.
  // Row 2: mean 1, deviations -1 -1 -1 -1 4: variance 20/5 = 4, fourth moment 260/5 = 52, kurtosis 3.25.
  const at::Tensor x = at::tensor({1.0f, 2.0f, 3.0f, 4.0f, 10.0f, 0.0f, 0.0f, 0.0f, 0.0f, 5.0f}).view({2, 5});
  const at::Tensor s = activation_statistics(x);
  EXPECT_EQ(s.scalar_type(), at::kFloat);
  EXPECT_EQ(s.sizes(), at::IntArrayRef({4}));
  const auto v = values_of(s);
  EXPECT_NEAR(v[0], (std::sqrt(130.0) + 5.0) / 2, 1e-5);  // the rows' norms, averaged
  EXPECT_DOUBLE_EQ(v[1], 2.5);                             // the mean of every element
  EXPECT_DOUBLE_EQ(v[2], 7.5);                             // the rows' maxima, averaged
  EXPECT_NEAR(v[3], (2.788 + 3.25) / 2, 1e-6);
  // [N, S, D] is N·S vectors of D: the same as [N·S, D].
  at::manual_seed(3);
  const at::Tensor h = at::randn({2, 3, 8});
  EXPECT_TRUE(activation_statistics(h).equal(activation_statistics(h.reshape({6, 8}))));

  // A normal sample: kurtosis near 3 (Composer's, not the excess); float64 stays float64.
  const auto n = values_of(activation_statistics(at::randn({4, 50000}, at::kDouble)));
  EXPECT_EQ(activation_statistics(at::randn({3}, at::kDouble)).scalar_type(), at::kDouble);
  EXPECT_NEAR(n[1], 0.0, 0.01);
  EXPECT_NEAR(n[3], 3.0, 0.05);

  // A constant vector (a zero-initialised gate's output) has no spread: kurtosis 0, not NaN.
  const auto c = values_of(activation_statistics(at::full({2, 3}, 0.5, at::kHalf)));
  EXPECT_NEAR(c[0], std::sqrt(3 * 0.25), 1e-6);
  EXPECT_EQ(c[1], 0.5);
  EXPECT_EQ(c[2], 0.5);
  EXPECT_EQ(c[3], 0.0);
  EXPECT_EQ(activation_statistics(at::ones({2}, at::kBFloat16)).scalar_type(), at::kFloat);
  EXPECT_EQ(values_of(activation_statistics(at::scalar_tensor(-2.0)))[2], -2.0);  // 0-d: one vector of one

  EXPECT_THAT(testing::input_error_of([] { activation_statistics(at::ones({3}, at::kLong)); }),
              HasSubstr("expected a non-empty floating-point tensor"));
  EXPECT_THAT(testing::input_error_of([] { activation_statistics(at::ones({0, 3})); }),
              HasSubstr("expected a non-empty floating-point tensor"));
}

/// The statistics of every layer of the MLP (fc1, fc2, head), recomputed from the first microbatch's input through
/// its own slots after the forward (the monitor, earlier in the callbacks, has removed its observer by then).
class MlpActivations : public Callback {
 public:
  explicit MlpActivations(int64_t interval) : interval_(interval) {}
  std::string name() const override { return "mlp_activations"; }
  void run_event(Event event, State& state, Logger&) override {
    const int64_t batch = state.timestamp.batch;
    if (event == Event::BeforeForward && batch % interval_ == 0 && expected.count(batch) == 0) {
      input_ = state.batch.input().clone();
      watching_ = true;
    }
    if (event != Event::AfterForward || !watching_) return;
    watching_ = false;
    at::NoGradGuard no_grad;
    auto& model = dynamic_cast<MLP&>(*state.model);
    auto& out = expected[batch];
    const at::Tensor x = input_.flatten(1);
    const at::Tensor h1 = model.slot("fc1").forward(x);
    const at::Tensor h2 = model.slot("fc2").forward(h1.relu());
    const at::Tensor y = model.slot("head").forward(h2.relu());
    EXPECT_TRUE(y.equal(state.outputs.detach()));
    for (const auto& [name, value] : std::map<std::string, at::Tensor>{
             {"model_input", input_}, {"fc1_input.0", x}, {"fc1_output", h1}, {"fc2_input.0", h1.relu()},
             {"fc2_output", h2}, {"head_input.0", h2.relu()}, {"head_output", y}, {"model_output", y}}) {
      out[name] = values_of(activation_statistics(value));
    }
  }
  std::map<int64_t, std::map<std::string, std::vector<double>>> expected;  // batch -> name -> statistics

 private:
  int64_t interval_;
  bool watching_ = false;
  at::Tensor input_;
};

Components mlp_components(double dropout = 0) {
  Components c = testing::tiny_components(48, 8);
  at::manual_seed(2);
  c.model = std::make_shared<MLP>(MLPOptions().in_features(16).hidden({8, 6}).num_classes(3).dropout(dropout));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  return c;
}

TEST(ActivationMonitor, LogsEachLayersInputsAndOutputOfTheFirstMicrobatchOfEveryIntervalBatches) {
  Components c = mlp_components();
  auto probe = std::make_shared<MlpActivations>(4);
  auto log = std::make_shared<RecordingDestination>();
  c.callbacks = {std::make_shared<ActivationMonitor>(ActivationMonitorOptions().interval(4)), probe, log};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).microbatch_size(4).threads(1), c);
  trainer.fit();

  std::vector<int64_t> batches;
  const auto& names = callbacks::activation_statistic_names();
  for (size_t i = 0; i < log->metrics.size(); ++i) {
    const auto& logged = log->metrics[i];
    if (logged.count("activations/l2_norm/model_input") == 0) continue;
    const int64_t batch = log->batches[i];
    batches.push_back(batch);
    const auto& expected = probe->expected.at(batch);
    EXPECT_EQ(logged.size(), expected.size() * names.size()) << "batch " << batch;
    for (const auto& [name, stats] : expected) {
      for (size_t j = 0; j < names.size(); ++j) {
        const std::string key = "activations/" + names[j] + "/" + name;
        ASSERT_EQ(logged.count(key), 1u) << key;
        EXPECT_DOUBLE_EQ(logged.at(key), stats[j]) << key << " at batch " << batch;
      }
    }
  }
  EXPECT_EQ(batches, (std::vector<int64_t>{0, 4, 8}));  // 12 batches of 2 microbatches: one entry each
  EXPECT_TRUE(log->texts.empty());
}

TEST(ActivationMonitor, NamesNestedLayersByTheirPathAndLeavesOutIgnoredOnesAndInputsWhenAsked) {
  auto names_logged = [](ActivationMonitorOptions options) {
    Components c = testing::gpt_components();
    auto log = std::make_shared<RecordingDestination>();
    c.callbacks = {std::make_shared<ActivationMonitor>(options.interval(100)), log};
    Trainer trainer(TrainerOptions().max_duration(Time::parse("2ba")).threads(1), c);
    trainer.fit();
    std::set<std::string> out;
    for (const auto& logged : log->metrics) {
      for (const auto& [key, value] : logged) {
        if (key.rfind("activations/max/", 0) == 0) out.insert(key.substr(16));
      }
    }
    return out;
  };
  const std::set<std::string> all = names_logged(ActivationMonitorOptions());
  for (const char* name : {"blocks.0.ln1_input.0", "blocks.0.ln1_output", "blocks.0.attn_output",
                           "blocks.0.attn.qkv_output", "blocks.0.attn.proj_input.0", "blocks.1.mlp.fc_output",
                           "blocks.1.mlp.proj_output", "blocks.1.mlp_output", "ln_f_output", "head_output",
                           "embed_output", "pos_embed_output", "model_output"}) {
    EXPECT_EQ(all.count(name), 1u) << name;
  }
  EXPECT_EQ(all.count("model_input"), 0u) << "token ids are not floating point";
  EXPECT_EQ(all.count("embed_input.0"), 0u);

  const std::set<std::string> some =
      names_logged(ActivationMonitorOptions().ignore({"blocks.?.mlp*", "*.ln?"}).inputs(false));
  for (const auto& name : some) {
    EXPECT_EQ(name.find("_input"), std::string::npos) << name;
    EXPECT_EQ(name.find(".mlp"), std::string::npos) << name;
    EXPECT_EQ(name.find(".ln"), std::string::npos) << name;
  }
  EXPECT_EQ(some.count("blocks.1.attn.qkv_output"), 1u);
  EXPECT_EQ(some.count("ln_f_output"), 1u);  // "*.ln?" needs a dot before: ln_f is the model's own
  EXPECT_EQ(some.count("model_output"), 1u);
}

TEST(ActivationMonitor, AModelWithoutSlotsGetsItsInputAndOutputLoggedAndOneWarning) {
  Components c = testing::tiny_components();  // a Classifier around a plain torch module
  auto log = std::make_shared<RecordingDestination>();
  c.callbacks = {std::make_shared<ActivationMonitor>(ActivationMonitorOptions().interval(2)), log};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), c);
  trainer.fit();
  int entries = 0;
  for (const auto& logged : log->metrics) {
    if (logged.count("activations/max/model_output") == 0) continue;
    ++entries;
    EXPECT_EQ(logged.size(), 8u);  // model_input and model_output, 4 statistics each
  }
  EXPECT_EQ(entries, 3);  // batches 0, 2, 4 of 6
  ASSERT_EQ(log->texts.size(), 1u);
  EXPECT_THAT(log->texts[0], HasSubstr("the model's layers cannot be observed"));
}

TEST(ActivationMonitor, LeavesTrainingBitwiseAloneWithSurgerySamAndMicrobatches) {
  auto run = [](bool monitored) {
    Components c = mlp_components(0.25);
    c.algorithms = {std::make_shared<algorithms::GyroDropout>(algorithms::GyroDropoutOptions().sigma(4).tau(2)),
                    std::make_shared<algorithms::SAM>(algorithms::SAMOptions().rho(0.05))};
    if (monitored) c.callbacks = {std::make_shared<ActivationMonitor>(ActivationMonitorOptions().interval(1))};
    Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).microbatch_size(4).threads(1).seed(5), c);
    trainer.fit();
    return c.model->parameters();
  };
  const auto plain = run(false), monitored = run(true);
  ASSERT_EQ(plain.size(), monitored.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(plain[i].equal(monitored[i])) << "parameter " << i;
}

TEST(ActivationMonitor, TwoMonitorsInOneRunEachLogTheirOwnAndLeaveNoObserverBehind) {
  Components c = mlp_components();
  auto log = std::make_shared<RecordingDestination>();
  // At a batch both watch, the first installs its observer first and removes it first: not last in, first out.
  c.callbacks = {std::make_shared<ActivationMonitor>(ActivationMonitorOptions().interval(2)),
                 std::make_shared<ActivationMonitor>(ActivationMonitorOptions().interval(3).inputs(false)), log};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), c);
  trainer.fit();
  EXPECT_TRUE(detail::slot_observations.empty());
  std::vector<std::pair<int64_t, size_t>> entries;  // (batch, values)
  for (size_t i = 0; i < log->metrics.size(); ++i) {
    if (log->metrics[i].count("activations/max/model_output") != 0) entries.emplace_back(log->batches[i], log->metrics[i].size());
  }
  // every input and output (8 names), and the outputs and the model's input (5), 4 statistics each
  EXPECT_EQ(entries, (std::vector<std::pair<int64_t, size_t>>{{0, 32}, {0, 20}, {2, 32}, {3, 20}, {4, 32}}));
}

TEST(ActivationMonitor, BadSettingsAreClearErrors) {
  EXPECT_THAT(testing::input_error_of([] { ActivationMonitor(ActivationMonitorOptions().interval(0)); }),
              HasSubstr("activation_monitor.interval"));
}

}  // namespace
}  // namespace tessera
