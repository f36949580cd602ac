#pragma once
/// What flows through the model's layers ("activation_monitor" in recipes; Composer's ActivationMonitor): every
/// `interval` batches, the L2 norm, mean, maximum and kurtosis of each layer's inputs and output during the training
/// forward, and of the model's input and output. A layer whose activations grow without bound or collapse
/// to a constant shows here before the loss does (the symptom of a learning rate too high for a transformer).
///
///     callbacks: [{activation_monitor: {interval: 100, ignore: ["*dropout*"]}}]
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/callback.h>
#include <tessera/options.h>

namespace tessera::callbacks {

struct ActivationMonitorOptions {
  /// Watches the training forward of every this many batches (at batch 0, interval, 2·interval, ...).
  TESSERA_OPTION(int64_t, interval) = 25;
  /// Layers to leave out, by dotted name ("layer1.0.bn1"); `*` matches any run of characters, `?` one.
  TESSERA_OPTION(std::vector<std::string>, ignore) = {};
  /// Also each layer's inputs (most are the previous layer's output); otherwise outputs only.
  TESSERA_OPTION(bool, inputs) = true;
  template <class V>
  void visit(V& v) {
    v("interval", interval_, "batches between two watched forwards", Range::at_least(1));
    v("ignore", ignore_, "layers to leave out, by dotted name (* and ? wildcards)", Any{});
    v("inputs", inputs_, "also each layer's inputs, not only its output", Any{});
  }
};

/// The statistics activation_monitor logs of one tensor, as Composer's ActivationMonitor computes them: over the
/// vectors of the last dimension (a token's hidden vector in [N, S, D], a row of a convolution's map in [N, C, H, W]),
/// averaged over those vectors: {mean L2 norm, mean of all the elements, mean maximum, mean kurtosis E[z^4] (3 for a
/// normal distribution; z = (x - mean) / std within the vector, population std; 0 for a constant vector)}. A tensor
/// [4] on the value's device, in float32 (float64 for a float64 value), computed without gradient and without reading
/// anything back. InputError for an empty or non-floating-point tensor.
at::Tensor activation_statistics(const at::Tensor& value);

/// The metric names of activation_statistics's values, in its order: l2_norm, average, max, kurtosis (logged as
/// activations/<statistic>/<name>).
const std::vector<std::string>& activation_statistic_names();

/// Logs, at each watched batch, activations/{l2_norm,average,max,kurtosis}/<name> (activation_statistics) where <name> is
/// "<layer>_input.<i>" for a layer's i-th tensor argument, "<layer>_output" for its output ("<layer>_output.<i>" for
/// a Python layer giving several; Composer's names each example's output apart, "<layer>_output.<example>"), and model_input / model_output for the model's (the batch's input when it is
/// floating point; token ids are not). Layers are the modules in the model's slots (called through
/// SlottedModule::call: every layer of the built-in models and of surgery's replacements, nested ones by their
/// dotted path), or for a Python model every submodule (forward hooks). A model whose layers cannot be observed (a
/// TorchScript module; a C++ module without slots) gets its input and output logged and a warning once. Only the
/// first microbatch of a watched batch is observed, on rank 0; evaluation is not. The statistics are computed on
/// the device as the forward runs (inputs before the layer runs) and read back once per watched batch; a tensor
/// reported twice unchanged (a layer's output, the next layer's input) is measured once (the watched forward holds
/// the tensors it measured until it ends). It only reads: training is bitwise the same with or without it.
class ActivationMonitor : public Callback {
 public:
  explicit ActivationMonitor(ActivationMonitorOptions options = {});
  ~ActivationMonitor() override;
  std::string name() const override { return "activation_monitor"; }
  void run_event(Event event, State& state, Logger& logger) override;
  void close() override;

 private:
  void record(const std::string& name, const at::Tensor& value);

  ActivationMonitorOptions options_;
  std::shared_ptr<void> observing_;  // the layer observer installed for the watched forward
  bool watching_ = false;            // between BeforeForward and AfterForward of a watched forward
  int64_t watched_batch_ = -1;       // the batch whose forward was watched last (its other microbatches are not)
  bool warned_ = false;
  std::vector<std::string> names_;
  std::vector<at::Tensor> statistics_;
  /// The tensors measured in this forward (held, so that their addresses stay theirs) at the version they were
  /// measured at, and where their statistics are: a layer's output that is the next layer's input is measured once.
  struct Measured {
    at::Tensor tensor;
    int64_t version = 0;
    size_t index = 0;
  };
  std::unordered_map<const void*, Measured> measured_;
};

}  // namespace tessera::callbacks
