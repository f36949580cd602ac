// Your own LibTorch module and model surgery (docs/cpp-own-model.md).
//
// The same small network twice: written the plain LibTorch way (layers are members called through their holders),
// and surgery-ready (a tessera::SlottedModule whose layers are registered and called as slots). BlurPool must refuse
// the plain one before training, saying that its layers are not in slots, and replace the strided convolution and
// the max-pool of the slotted one, which then trains. The program exits with 1 when either does not happen, so it
// doubles as a test of the installed API (tests/install builds it outside the project).
#include <tessera/algorithms/blurpool.h>
#include <tessera/tessera.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>

namespace {

/// The plain way: layers are members.
struct PlainNetImpl : torch::nn::Module {
  PlainNetImpl()
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 16, 3).padding(1)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 16, 3).stride(2).padding(1)))),
        pool(register_module("pool", torch::nn::MaxPool2d(2))),
        fc(register_module("fc", torch::nn::Linear(16 * 2 * 2, 4))) {}
  at::Tensor forward(const at::Tensor& x) {
    return fc->forward(pool->forward(at::relu(conv2->forward(at::relu(conv1->forward(x))))).flatten(1));
  }
  torch::nn::Conv2d conv1, conv2;
  torch::nn::MaxPool2d pool;
  torch::nn::Linear fc;
};

/// Surgery-ready: the layers live in slots and are called through them.
struct SlottedNetImpl : tessera::SlottedModule {
  SlottedNetImpl() {
    register_slot("conv1", torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 16, 3).padding(1))));
    register_slot("conv2",
                  torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 16, 3).stride(2).padding(1))));
    register_slot("pool", torch::nn::AnyModule(torch::nn::MaxPool2d(2)));
    register_slot("fc", torch::nn::AnyModule(torch::nn::Linear(16 * 2 * 2, 4)));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = at::relu(call("conv2", at::relu(call("conv1", x))));
    return call("fc", call("pool", h).flatten(1));
  }
};

/// A run of `Net` (8x8 RGB images of 4 classes) with BlurPool.
template <class Net>
std::unique_ptr<tessera::Trainer> make_trainer() {
  tessera::seed_everything(5);
  auto model = std::make_shared<tessera::Classifier<Net>>(std::make_shared<Net>(), 4);
  auto data = tessera::data::make_synthetic(
      tessera::data::SyntheticOptions().size(64).input_shape({3, 8, 8}).num_classes(4).seed(3));
  tessera::Components c;
  c.model = model;
  c.train_dataloader =
      std::make_shared<tessera::data::DataLoader>(data, tessera::data::DataLoaderOptions().batch_size(16));
  c.optimizer = std::make_shared<tessera::optim::SGD>(model->parameters(), tessera::optim::SGDOptions().lr(0.05));
  c.algorithms = {std::make_shared<tessera::algorithms::BlurPool>()};
  return std::make_unique<tessera::Trainer>(
      tessera::TrainerOptions().max_duration(tessera::Time::parse("1ep")).seed(5), std::move(c));
}

int run() {
  // 1. The plain module: refused before training, with the reason and the fix.
  try {
    make_trainer<PlainNetImpl>();
    std::fprintf(stderr, "surgery_ready_model: blurpool accepted a module whose layers are not in slots\n");
    return 1;
  } catch (const tessera::InputError& e) {
    const std::string msg = e.what();
    std::printf("plain module refused as expected:\n%s\n", msg.c_str());
    for (const char* part : {"not in slots", "net.conv2 (Conv2d, 16 input channels, stride 2)", "SlottedModule",
                             "register_slot", "docs/cpp-own-model.md"}) {
      if (msg.find(part) == std::string::npos) {
        std::fprintf(stderr, "surgery_ready_model: the refusal does not mention \"%s\"\n", part);
        return 1;
      }
    }
  }
  // 2. The slotted module: one strided convolution and one max-pool replaced, and it trains.
  auto trainer = make_trainer<SlottedNetImpl>();
  const auto& blurpool = dynamic_cast<const tessera::algorithms::BlurPool&>(*trainer->engine().algorithms().at(0));
  std::printf("blurpool replaced %lld convolution(s) and %lld max-pool(s)\n",
              static_cast<long long>(blurpool.counts().convs), static_cast<long long>(blurpool.counts().maxpools));
  if (blurpool.counts().convs != 1 || blurpool.counts().maxpools != 1) {
    std::fprintf(stderr, "surgery_ready_model: expected 1 convolution and 1 max-pool replaced\n");
    return 1;
  }
  trainer->fit();
  const double loss = trainer->state().metrics.at("loss/train/total");
  if (!std::isfinite(loss)) {
    std::fprintf(stderr, "surgery_ready_model: the loss after training is %f\n", loss);
    return 1;
  }
  std::printf("trained with blurpool: loss %.4f\n", loss);
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "surgery_ready_model: %s\n", e.what());
    return 1;
  }
}
