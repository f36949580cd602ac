// Training your own LibTorch module with Tessera.
//
// A user-defined network (an ordinary torch::nn::Module, written the TORCH_MODULE way) is wrapped in
// tessera::Classifier, trained by tessera::Trainer on synthetic data with SGD and a cosine schedule, and
// evaluated on held-out examples. The program exits with 1 when the accuracy is not clearly above chance,
// so it doubles as a smoke test of the installed API (tests/install builds it outside the project).
#include <tessera/tessera.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <vector>

namespace {

/// The user's network: a two-layer perceptron on flattened inputs.
struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t in_features, int64_t hidden, int64_t classes)
      : fc1(register_module("fc1", torch::nn::Linear(in_features, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, classes))) {}

  at::Tensor forward(const at::Tensor& x) {
    return fc2->forward(torch::nn::functional::relu(fc1->forward(x.flatten(1))));
  }

  torch::nn::Linear fc1;
  torch::nn::Linear fc2;
};
TORCH_MODULE(Mlp);

/// The examples of `all` from `begin` to `end` as their own data set.
std::shared_ptr<tessera::data::TensorDataset> slice(const tessera::data::Dataset& all, int64_t begin,
                                                    int64_t end) {
  std::vector<int64_t> indices;
  for (int64_t i = begin; i < end; ++i) indices.push_back(i);
  tessera::Batch batch = all.get_batch(indices);
  return std::make_shared<tessera::data::TensorDataset>(batch.input(), batch.target(), all.num_classes(),
                                                        "synthetic");
}

int run() {
  constexpr int64_t kClasses = 10;
  constexpr int64_t kTrain = 4096;
  constexpr int64_t kEval = 1024;

  // One synthetic set (the class patterns are a function of its seed), split into train and eval.
  auto all = tessera::data::make_synthetic(tessera::data::SyntheticOptions()
                                               .size(kTrain + kEval)
                                               .input_shape({1, 8, 8})
                                               .num_classes(kClasses)
                                               .noise(3.0)
                                               .seed(7));
  auto train_loader = std::make_shared<tessera::data::DataLoader>(
      slice(*all, 0, kTrain), tessera::data::DataLoaderOptions().batch_size(32).shuffle(true));
  auto eval_loader = std::make_shared<tessera::data::DataLoader>(
      slice(*all, kTrain, kTrain + kEval), tessera::data::DataLoaderOptions().batch_size(256).shuffle(false));

  // The user's module, wrapped so that the Trainer knows how to compute the loss.
  auto model =
      std::make_shared<tessera::Classifier<MlpImpl>>(std::make_shared<MlpImpl>(64, 128, kClasses), kClasses);

  auto optimizer = std::make_shared<tessera::optim::SGD>(model->parameters(),
                                                         tessera::optim::SGDOptions().lr(0.05).momentum(0.9));
  std::shared_ptr<tessera::optim::Scheduler> cosine = tessera::optim::make_cosine_scheduler(
      tessera::optim::CosineSchedulerOptions().warmup(tessera::Time::parse("20ba")));

  tessera::Evaluator evaluator;
  evaluator.label = "eval";
  evaluator.dataloader = eval_loader;
  evaluator.metrics = {std::make_shared<tessera::Accuracy>()};
  evaluator.interval = tessera::Time::parse("1ep");

  tessera::Components components;
  components.model = model;
  components.train_dataloader = train_loader;
  components.optimizer = optimizer;
  components.schedulers = {cosine};
  components.evaluators = {evaluator};
  components.callbacks = {std::make_shared<tessera::callbacks::ProgressBar>(),
                          std::make_shared<tessera::callbacks::ConsoleSummary>()};

  // 3 epochs of 128 batches.
  tessera::Trainer trainer(tessera::TrainerOptions().max_duration(tessera::Time::parse("3ep")).seed(17),
                           std::move(components));
  trainer.fit();

  const auto results = trainer.evaluate();
  const auto it = results.find("metrics/eval/accuracy");
  if (it == results.end()) {
    std::fprintf(stderr, "custom_model: the evaluator reported no accuracy\n");
    return 1;
  }
  const double accuracy = it->second;
  const double chance = 1.0 / static_cast<double>(kClasses);
  std::printf("final eval accuracy: %.4f (chance %.2f)\n", accuracy, chance);
  if (!(accuracy > chance + 0.3)) {
    std::fprintf(stderr, "custom_model: accuracy %.4f is not clearly above chance %.2f\n", accuracy, chance);
    return 1;
  }
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "custom_model: %s\n", e.what());
    return 1;
  }
}
