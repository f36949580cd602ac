#pragma once
/// Channels-last: stores the model's 4-D parameters and buffers (convolution weights) in NHWC memory order
/// (torch::MemoryFormat::ChannelsLast), once at Init, after every surgery algorithm (so that the layers surgery
/// made are converted too). The convolutions then run their channels-last kernels (oneDNN on the CPU, cuDNN's
/// NHWC kernels on a GPU) and give channels-last activations; the batch's input is not converted (the first
/// convolution's output already is channels-last, and converting the input measured no faster: README.md).
///
/// The tensors keep their identity (their storage is replaced in place, like `module.to(memory_format=...)` in
/// PyTorch), so the optimizer, hooks and a Python module sharing them see the change; gradients that already
/// exist and optimizer state of the same shape follow. The logical values never change: checkpoints (written in
/// logical order) and `weights_fingerprint` do not depend on the memory format.
///
///     trainer components: algorithms.push_back(std::make_shared<tessera::algorithms::ChannelsLast>());
///     functional:         tessera::algorithms::apply_channels_last(*model, &optimizer);
#include <cstdint>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera::optim {
class Optimizer;
}

namespace tessera::algorithms {

/// No options: the conversion is all or nothing (4-D tensors only; others have no channels-last layout).
struct ChannelsLastOptions {
  template <class V>
  void visit(V&) {}
};

/// Converts each 4-D tensor of `tensors` to channels-last in place (same tensor, new storage: `set_data`), with
/// its gradient when it has one. Tensors of other ranks are left alone. Returns how many tensors were 4-D.
int64_t to_channels_last(const std::vector<at::Tensor>& tensors);

/// Functional form: converts every 4-D parameter and buffer of `model` (recursively) to channels-last in place,
/// and, when given, the optimizer's state tensors of those parameters. Returns how many tensors were 4-D (0 for a
/// model without convolutions). Idempotent.
int64_t apply_channels_last(torch::nn::Module& model, optim::Optimizer* optimizer = nullptr);

/// Whether `t` is a dense 4-D tensor that torch treats as channels-last (suggest_memory_format()): the strides
/// `Tensor.to(memory_format=torch.channels_last)` gives, also for C == 1 or H == W == 1 where they are ambiguous.
bool is_channels_last(const at::Tensor& t);

/// The algorithm (recipe name "channels_last"): apply_channels_last at Init, after every writer of the model
/// structure there. A model with no 4-D parameter or buffer is refused at plan time (it would have no effect).
class ChannelsLast : public Algorithm {
 public:
  explicit ChannelsLast(ChannelsLastOptions options = ChannelsLastOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  void check(const State& state) const override;
  const ChannelsLastOptions& options() const noexcept { return options_; }
  /// How many tensors the last application converted (4-D parameters and buffers).
  int64_t converted() const noexcept { return converted_; }

 private:
  ChannelsLastOptions options_;
  AlgorithmSpec spec_;
  int64_t converted_ = 0;
};

}  // namespace tessera::algorithms
