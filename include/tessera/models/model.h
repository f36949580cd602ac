#pragma once
/// The model contract: a torch module tree that maps a Batch to outputs and outputs to a loss.
///
/// Model surgery (BlurPool and friends) must be able to swap layers after construction. LibTorch forward
/// functions usually call layers through member holders, which surgery cannot see, so Tessera models call
/// swappable layers through *slots*: `register_slot("conv1", torch::nn::Conv2d(...))` registers the child
/// under that name (state-dict keys are unchanged) and `call("conv1", x)` runs whatever module sits in the slot
/// now (reporting its inputs and output to an activation observer when one is installed: LayerObserver below).
/// Surgery walks the module tree and swaps slots with `replace_slot`.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>

#include <tessera/batch.h>

namespace tessera {

class Algorithm;
namespace optim { class Optimizer; }

/// How a loss reduces over examples. `None` gives one loss per example (selective backprop scores with it).
enum class Reduction { Mean, Sum, None };

class SlottedModule;

/// Called during a forward with each floating-point tensor a layer takes and gives: `layer` is its dotted name in the
/// model ("layer1.0.conv1"), `port` "input.<i>" for its i-th tensor argument (before the layer runs) and "output"
/// (or "output.<i>" when it gives several). Used by activation_monitor (callbacks/activation_monitor.h); installed
/// with Model::observe_layers.
using LayerObserver = std::function<void(const std::string& layer, const std::string& port, const at::Tensor& value)>;

namespace detail {
/// An observer of slot calls, and the names of the slotted modules it observes.
struct SlotObservation {
  LayerObserver observer;
  std::map<const SlottedModule*, std::string> prefixes;  // module -> its dotted name in the model + "." ("" for the root)
};
/// The observations installed on this thread (Model::observe_layers), in the order they were installed; each
/// removes itself when its handle goes, in whatever order the handles go.
extern thread_local std::vector<SlotObservation*> slot_observations;
}  // namespace detail

/// A module whose swappable layers live in named slots.
class SlottedModule : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;

  /// Runs the module in slot `name` on `args` (as slot(name).forward(args...)) and returns its output tensor. While
  /// Model::observe_layers has an observer installed on this thread, the slot's tensor arguments and its output go
  /// to it too. Models call their layers this way so that surgery's replacements and the activation monitor see
  /// every call.
  template <class... Args>
  at::Tensor call(const std::string& name, Args&&... args) {
    torch::nn::AnyModule& module = slot(name);
    if (detail::slot_observations.empty()) return module.forward(std::forward<Args>(args)...);
    size_t index = 0;
    (report_argument(name, index, args), ...);
    at::Tensor out = module.forward(std::forward<Args>(args)...);
    if (out.defined() && out.is_floating_point()) report(name, "output", out);
    return out;
  }

  /// Registers `module` as child `name` and as a slot of the same name. Returns the slot.
  torch::nn::AnyModule& register_slot(const std::string& name, torch::nn::AnyModule module);
  /// The module currently in slot `name` (an Error naming the slots if absent).
  torch::nn::AnyModule& slot(const std::string& name);
  /// Puts `module` into slot `name` and re-registers it as the child of that name.
  void replace_slot(const std::string& name, torch::nn::AnyModule module);
  /// All slots, by name.
  const std::map<std::string, torch::nn::AnyModule>& slots() const noexcept { return slots_; }

 private:
  /// Gives `value` to each observation of this thread that observes this module, as slot `slot`'s `port`.
  void report(const std::string& slot, const std::string& port, const at::Tensor& value) const;
  template <class Arg>
  void report_argument(const std::string& slot, size_t& index, const Arg& arg) const {
    if constexpr (std::is_convertible_v<const Arg&, const at::Tensor&>) {
      const at::Tensor& tensor = arg;
      if (tensor.defined() && tensor.is_floating_point()) report(slot, "input." + std::to_string(index), tensor);
    }
    ++index;
  }

  std::map<std::string, torch::nn::AnyModule> slots_;
};

/// A trainable model.
class Model : public SlottedModule {
 public:
  using SlottedModule::SlottedModule;

  /// Outputs (e.g. logits) for a batch.
  virtual at::Tensor forward(const Batch& batch) = 0;
  /// Loss of `outputs` against the batch's targets. Classification models accept integer class targets
  /// and dense (soft) targets of the outputs' shape.
  virtual at::Tensor loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction = Reduction::Mean) = 0;
  /// Whether `loss(..., Reduction::None)` gives per-example losses (checked at plan time by algorithms
  /// that need it).
  virtual bool supports_per_example_loss() const { return true; }
  /// Number of classes for classifiers (0 otherwise).
  virtual int64_t num_classes() const { return 0; }
  /// Whether `loss(outputs, batch, r)` is exactly `cross_entropy(outputs, batch.target(), r)`, so that
  /// algorithms may substitute an equivalent fused loss (label smoothing).
  virtual bool loss_is_cross_entropy() const { return false; }
  /// How many terms the (Mean) loss averages over, per example: int64 [N] on the batch's device, or an undefined tensor
  /// when every example is one term. Asked once per training batch that has several parts (microbatches or ranks; one
  /// part weighs 1), after the first microbatch's forward and loss (the batch as the algorithms left it), and, when
  /// batches train in parts, once of an example batch of the training data when the Trainer is built (so that an answer
  /// of the wrong shape or type is refused before step 1): it reads the batch, not state of a forward. The Trainer
  /// weighs each microbatch's mean loss (and, on several ranks, each rank's) by its share of the terms of the whole
  /// global batch (loss_term_weights, microbatching.h), so that gradient accumulation and data parallelism give the
  /// gradient of the global batch's loss whatever the split. The default: for a cross-entropy loss
  /// (loss_is_cross_entropy()) on integer targets, the positions whose target is not kIgnoreTarget (the bert model's
  /// masked tokens; a language model's positions that are not padding); otherwise undefined. A model whose loss is a
  /// mean over something else overrides it.
  virtual at::Tensor loss_terms(const Batch& batch) const;
  /// Whether `loss` reads the batch's targets as they are at BeforeLoss (false for a model that computes its
  /// loss inside forward, from the labels it was given): algorithms that change the targets for the loss
  /// (label smoothing) check it at plan time.
  virtual bool loss_reads_targets() const { return true; }

  /// Has `observer` called with every layer's floating-point inputs and outputs during this thread's forwards until
  /// the returned handle is destroyed. Layers are reported where they are called: the default observes the slot
  /// calls (SlottedModule::call) of every slotted module of this model, nested ones included, named by their
  /// dotted path; a model whose layers live elsewhere overrides it (a Python module: forward hooks on every
  /// submodule). nullptr when the model's layers cannot be observed (a TorchScript module), or, by default, when the
  /// model has no slots (a Classifier around a module of one's own: LibTorch modules have no forward hooks).
  virtual std::shared_ptr<void> observe_layers(LayerObserver observer);

  /// Surgery on layers that are not LibTorch modules in slots. A model whose layers live elsewhere (a Python
  /// torch.nn.Module: python/src/py_model.cpp) performs the surgery of `algorithm` (found by its spec name)
  /// on them and returns the number of layers replaced, by kind ({"convs": 3, "maxpools": 1}); with `dry_run`
  /// it only counts (plan-time checks). It throws InputError when it cannot do that surgery (say, a TorchScript
  /// module), naming the algorithm and the reason. std::nullopt (the default) means the layers are C++ modules:
  /// the algorithm does its surgery on the slots (surgery.h).
  virtual std::optional<std::map<std::string, int64_t>> external_surgery(const Algorithm& algorithm,
                                                                         optim::Optimizer* optimizer, bool dry_run) {
    (void)algorithm, (void)optimizer, (void)dry_run;
    return std::nullopt;
  }
};

/// Cross-entropy of logits [N, C, ...] against integer targets [N, ...] or dense targets [N, C, ...]
/// (soft labels: -sum_c t_c log softmax(x)_c), reduced as asked: Mean over every position with a target, Sum, or
/// None: per example, the mean over its positions. Integer targets kIgnoreTarget count nowhere (a per-example loss is
/// the mean over that example's other positions, 0 when it has none).
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets, Reduction reduction = Reduction::Mean);
/// Reduces per-position losses `per` [N, ...] (0 where the integer `targets` [N, ...] are kIgnoreTarget) as
/// cross_entropy does: Mean over the positions with a target, Sum, or None: per example, the mean over its positions
/// with a target (0 when it has none). Without ignored positions, bitwise per.mean(), per.sum() and
/// per.flatten(1).mean(1) (per itself for [N]).
at::Tensor reduce_over_targets(const at::Tensor& per, const at::Tensor& targets, Reduction reduction);

/// For plan-time checks of an algorithm against the model: runs `fn(batch)` with `model` in eval mode (no
/// batch-norm statistics move, no dropout draws) and without gradient, `batch` moved to the device of the model's
/// parameters, and restores the mode. Returns "" on success, else the first line of what `fn` threw (a torch error
/// without its C++ backtrace), for a message that says why the model cannot take what the algorithm will give it.
///
///     std::string error = tessera::try_on_example(*model, small, [&](const Batch& b) { model->forward(b); });
std::string try_on_example(Model& model, const Batch& batch, const std::function<void(const Batch&)>& fn);

/// A fingerprint of a module's exact weights: FNV-1a (64 bit) over every parameter, then every buffer, in
/// named_parameters()/named_buffers() order: the name's bytes, a 0 byte, then the tensor's bytes (contiguous,
/// on the CPU); 16 lowercase hex digits. Two models have the same fingerprint exactly when their weights are
/// bitwise equal (up to hash collisions). `tessera-run` prints it as `weights-fingerprint: <hex>`.
std::string weights_fingerprint(const torch::nn::Module& module);

/// A classifier around any torch module with `forward(Tensor) -> Tensor` (e.g. a user's own module):
///
///     auto model = std::make_shared<tessera::Classifier<MyNetImpl>>(std::make_shared<MyNetImpl>(), 10);
template <class Net>
class Classifier : public Model {
 public:
  Classifier(std::shared_ptr<Net> net, int64_t num_classes) : net_(register_module("net", std::move(net))), num_classes_(num_classes) {}
  at::Tensor forward(const Batch& batch) override { return net_->forward(batch.input()); }
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction = Reduction::Mean) override {
    return cross_entropy(outputs, batch.target(), reduction);
  }
  int64_t num_classes() const override { return num_classes_; }
  bool loss_is_cross_entropy() const override { return true; }
  Net& net() { return *net_; }

 private:
  std::shared_ptr<Net> net_;
  int64_t num_classes_;
};

}  // namespace tessera
