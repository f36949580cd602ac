// Mixed precision on the CPU: step time of precision amp_bf16 against fp32, same model, data and settings, in
// one process, alternating, with the median ratio printed per model (MLP, CNN, ResNet-8 on 28x28 inputs); then
// the same for an evaluation pass (eval_precision amp_bf16 against fp32, no gradients) over the same batches.
//
//   ./benchmarks/bench_precision [--steps 20] [--rounds 3] [--threads 2] [--models mlp,cnn,resnet]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/version.h>

#include <tessera/tessera.h>

namespace {

using Clock = std::chrono::steady_clock;

struct Setup {
  int64_t steps = 20;
  int64_t batch_size = 128;
  int64_t rounds = 3;
  int64_t threads = 2;
  std::string models = "mlp,cnn,resnet";
};

std::shared_ptr<tessera::Model> make_model(const std::string& name) {
  at::manual_seed(0);
  if (name == "mlp") {
    return std::make_shared<tessera::MLP>(tessera::MLPOptions().in_features(784).hidden({256, 256}).num_classes(10));
  }
  if (name == "cnn") {
    return std::make_shared<tessera::CNN>(tessera::CNNOptions().in_channels(1).num_classes(10).width(16));
  }
  return std::make_shared<tessera::ResNet>(tessera::ResNetOptions().in_channels(1).num_classes(10).depth(8).width(16));
}

/// Seconds per step of one epoch of `steps` batches (the first step, which warms up, is not counted).
double seconds_per_step(const Setup& s, const std::string& model, const std::string& precision,
                        const std::shared_ptr<tessera::data::TensorDataset>& ds) {
  struct StepTimer : tessera::Callback {
    std::string name() const override { return "step_timer"; }
    void run_event(tessera::Event event, tessera::State& state, tessera::Logger&) override {
      if (event == tessera::Event::BatchEnd && state.timestamp.batch == 1) t0 = Clock::now();
    }
    Clock::time_point t0;
  };
  auto timer = std::make_shared<StepTimer>();
  tessera::Components c;
  c.model = make_model(model);
  c.train_dataloader =
      std::make_shared<tessera::data::DataLoader>(ds, tessera::data::DataLoaderOptions().batch_size(s.batch_size));
  c.optimizer = std::make_shared<tessera::optim::SGD>(c.model->parameters(),
                                                      tessera::optim::SGDOptions().lr(0.05).momentum(0.9));
  c.callbacks.push_back(timer);
  tessera::Trainer trainer(
      tessera::TrainerOptions().max_duration(tessera::Time::parse("1ep")).threads(s.threads).precision(precision),
      std::move(c));
  trainer.fit();
  return std::chrono::duration<double>(Clock::now() - timer->t0).count() / static_cast<double>(s.steps - 1);
}

/// Seconds per batch of an evaluation pass over `ds` in batches of the setup's size (Trainer::evaluate, timed after
/// a first pass that warms up).
double seconds_per_eval_batch(const Setup& s, const std::string& model, const std::string& eval_precision,
                              const std::shared_ptr<tessera::data::TensorDataset>& ds) {
  tessera::Components c;
  c.model = make_model(model);
  c.train_dataloader =
      std::make_shared<tessera::data::DataLoader>(ds, tessera::data::DataLoaderOptions().batch_size(s.batch_size));
  c.optimizer = std::make_shared<tessera::optim::SGD>(c.model->parameters(), tessera::optim::SGDOptions().lr(0.05));
  tessera::Evaluator ev;
  ev.label = "eval";
  ev.dataloader = std::make_shared<tessera::data::DataLoader>(
      ds, tessera::data::DataLoaderOptions().batch_size(s.batch_size).shuffle(false));
  ev.metrics = {std::make_shared<tessera::Accuracy>(1)};
  c.evaluators.push_back(ev);
  tessera::Trainer trainer(tessera::TrainerOptions().threads(s.threads).eval_precision(eval_precision), std::move(c));
  trainer.evaluate();
  const auto t0 = Clock::now();
  trainer.evaluate();
  return std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(s.steps);
}

/// The middle value (the upper one of an even count).
double median(std::vector<double> v) {
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

/// One row per model of s.models: `seconds(model, "fp32")` and `seconds(model, "amp_bf16")` in ms (the median of
/// s.rounds, alternating) and the median of their per-round ratios.
void compare(const Setup& s, const std::function<double(const std::string&, const std::string&)>& seconds) {
  std::string rest = s.models + ",";
  for (size_t at = rest.find(','); at != std::string::npos; rest = rest.substr(at + 1), at = rest.find(',')) {
    const std::string model = rest.substr(0, at);
    if (model.empty()) continue;
    std::vector<double> fp32, bf16, ratio;
    for (int64_t r = 0; r < s.rounds; ++r) {
      fp32.push_back(seconds(model, "fp32"));
      bf16.push_back(seconds(model, "amp_bf16"));
      ratio.push_back(bf16.back() / fp32.back());
    }
    std::printf("%-8s %14.1f %14.1f %10.2f\n", model.c_str(), 1e3 * median(fp32), 1e3 * median(bf16), median(ratio));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Setup s;
  const std::map<std::string, int64_t*> counts{{"--steps", &s.steps}, {"--rounds", &s.rounds}, {"--threads", &s.threads}};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--models") {
      s.models = argv[i + 1];
    } else if (counts.count(flag) != 0) {
      *counts.at(flag) = std::atoll(argv[i + 1]);
    }
  }
  if (s.steps < 2) s.steps = 2;
  const auto ds = tessera::data::make_synthetic(
      tessera::data::SyntheticOptions().size(s.steps * s.batch_size).input_shape({1, 28, 28}).num_classes(10).seed(1));
  std::printf("precision on the CPU: %lld steps of %lld, %lld rounds alternating, %lld threads, LibTorch %s\n",
              static_cast<long long>(s.steps), static_cast<long long>(s.batch_size), static_cast<long long>(s.rounds),
              static_cast<long long>(s.threads), TORCH_VERSION);
  std::printf("%-8s %14s %14s %10s\n", "model", "fp32 ms/step", "bf16 ms/step", "bf16/fp32");
  compare(s, [&](const std::string& model, const std::string& precision) {
    return seconds_per_step(s, model, precision, ds);
  });
  std::printf("\nevaluation (eval_precision), %lld batches of %lld\n", static_cast<long long>(s.steps),
              static_cast<long long>(s.batch_size));
  std::printf("%-8s %14s %14s %10s\n", "model", "fp32 ms/batch", "bf16 ms/batch", "bf16/fp32");
  compare(s, [&](const std::string& model, const std::string& precision) {
    return seconds_per_eval_batch(s, model, precision, ds);
  });
  return 0;
}
