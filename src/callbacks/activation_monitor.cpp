// activation_monitor: statistics of every layer's inputs and outputs during a watched training forward.
#include <tessera/callbacks/activation_monitor.h>

#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>
#include <tessera/models/model.h>
#include <tessera/optim/optimizer.h>

namespace tessera::callbacks {

at::Tensor activation_statistics(const at::Tensor& value) {
  if (!value.defined() || !value.is_floating_point() || value.numel() == 0) {
    throw InputError(fmt::format("activation_statistics: expected a non-empty floating-point tensor, got {}",
                                 value.defined() ? c10::str(value.scalar_type(), " ", value.sizes()) : "undefined"));
  }
  at::NoGradGuard no_grad;
  const at::Tensor x = value.detach().to(value.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  const at::Tensor rows = x.reshape({-1, x.dim() == 0 ? 1 : x.size(-1)});  // one row per vector of the last dim
  const at::Tensor centred = rows - rows.mean(1, /*keepdim=*/true);
  const at::Tensor squares = centred.square();
  const at::Tensor variance = squares.mean(1);
  const at::Tensor spread = variance.gt(0);
  const at::Tensor safe = at::where(spread, variance, at::ones_like(variance));  // no 0/0 in a constant row
  const at::Tensor kurtosis = at::where(spread, squares.square().mean(1) / safe.square(), at::zeros_like(variance));
  return at::stack({at::norm(rows, 2, {1}).mean(), x.mean(), at::amax(rows, {1}).mean(), kurtosis.mean()});
}

const std::vector<std::string>& activation_statistic_names() {
  static const std::vector<std::string> names{"l2_norm", "average", "max", "kurtosis"};
  return names;
}

ActivationMonitor::ActivationMonitor(ActivationMonitorOptions options) : options_(std::move(options)) {
  validate_options(options_, "activation_monitor");
}

ActivationMonitor::~ActivationMonitor() = default;

void ActivationMonitor::record(const std::string& name, const at::Tensor& value) {
  if (!value.defined() || !value.is_floating_point() || value.numel() == 0) return;
  names_.push_back(name);
  const void* key = value.unsafeGetTensorImpl();
  const auto seen = measured_.find(key);
  if (seen != measured_.end() && seen->second.version == value._version()) {  // unchanged since: the same values
    statistics_.push_back(statistics_[seen->second.index]);
    return;
  }
  statistics_.push_back(activation_statistics(value));
  measured_[key] = Measured{value, value._version(), statistics_.size() - 1};
}

void ActivationMonitor::run_event(Event event, State& state, Logger& logger) {
  if (event == Event::BeforeForward) {
    observing_.reset();  // (a forward that threw leaves its observer behind)
    watching_ = false;
    const int64_t batch = state.timestamp.batch;
    if (state.rank != 0 || !state.model || batch == watched_batch_ || batch % options_.interval() != 0) return;
    watching_ = true;
    watched_batch_ = batch;  // SAM's second pass and the other microbatches run this batch's forward again
    names_.clear();
    statistics_.clear();
    measured_.clear();
    if (state.batch.has(Batch::kInput)) record("model_input", state.batch.input());
    observing_ = state.model->observe_layers([this](const std::string& layer, const std::string& port,
                                                    const at::Tensor& value) {
      if (!options_.inputs() && port.rfind("input", 0) == 0) return;
      for (const auto& pattern : options_.ignore()) {
        if (optim::glob_match(pattern, layer)) return;
      }
      record(layer + "_" + port, value);
    });
    if (!observing_ && !warned_) {
      warned_ = true;
      logger.warn("activation_monitor: the model's layers cannot be observed (a TorchScript module, or a C++ model "
                  "without slots: LibTorch modules have no forward hooks; call the layers through "
                  "SlottedModule::call, docs/cpp-own-model.md); logging the model's input and output only");
    }
    return;
  }
  if (event != Event::AfterForward || !watching_) return;
  observing_.reset();
  watching_ = false;
  record("model_output", state.outputs);
  measured_.clear();
  if (statistics_.empty()) return;
  const at::Tensor all = at::stack(statistics_).to(at::kDouble).cpu();  // one read-back per watched batch
  const auto* values = all.data_ptr<double>();
  const auto& statistics = activation_statistic_names();
  std::map<std::string, double> metrics;
  for (size_t i = 0; i < names_.size(); ++i) {
    for (size_t j = 0; j < statistics.size(); ++j) {
      metrics["activations/" + statistics[j] + "/" + names_[i]] = values[i * statistics.size() + j];
    }
  }
  names_.clear();
  statistics_.clear();
  logger.log_metrics(metrics, state.timestamp);
}

void ActivationMonitor::close() {
  observing_.reset();
  watching_ = false;
  measured_.clear();
}

}  // namespace tessera::callbacks
