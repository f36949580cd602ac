#include <fmt/format.h>
#include <tessera/callbacks/stoppers.h>

#include <tessera/error.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace tessera::callbacks {
namespace {

/// Whether larger values of `monitor` are better under `comp` ("auto": not for losses, cross-entropies,
/// perplexities and error rates).
bool larger_is_better(const std::string& monitor, const std::string& comp) {
  if (comp != "auto") return comp == "greater";
  for (const char* lower : {"loss", "cross_entropy", "perplexity", "error"}) {
    if (monitor.find(lower) != std::string::npos) return false;
  }
  return true;
}

std::string metric_names(const Evaluator& ev) {
  std::string out;
  for (const auto& m : ev.metrics) out += (out.empty() ? "" : ", ") + m->name();
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------------ MetricStopper

MetricStopper::MetricStopper(std::string name, WatchedMetric watched)
    : name_(std::move(name)), watched_(std::move(watched)) {
  if (watched_.monitor.empty()) {
    throw InputError(name_ + ": monitor is empty; name the metric to watch (accuracy, cross_entropy, ...; with "
                             "label train also loss)");
  }
  if (watched_.label.empty()) throw InputError(name_ + ": label is empty; an evaluator's label (eval), or train");
  key_ = watched_.label == "train" && watched_.monitor == "loss" ? "loss/train/total"
                                                                 : "metrics/" + watched_.label + "/" + watched_.monitor;
  greater_ = larger_is_better(watched_.monitor, watched_.comp);
}

void MetricStopper::check_against_run(const State& state) const {
  if (watched_.label == "train") {
    const auto& names = state.train_metric_names;
    if (watched_.monitor == "loss" || std::find(names.begin(), names.end(), watched_.monitor) != names.end()) return;
    std::string known = "loss";
    for (const auto& n : names) known += ", " + n;
    throw InputError(fmt::format("{}: the training metrics have no \"{}\"; they are: {}", name_, watched_.monitor,
                                 known));
  }
  std::string labels;
  for (const Evaluator& ev : state.evaluators) {
    if (ev.label == watched_.label) {
      for (const auto& m : ev.metrics) {
        if (m->name() == watched_.monitor) return;
      }
      throw InputError(fmt::format("{}: the evaluator \"{}\" has no metric \"{}\"; its metrics: {}", name_,
                                   watched_.label, watched_.monitor, metric_names(ev)));
    }
    labels += (labels.empty() ? "" : ", ") + ev.label;
  }
  throw InputError(fmt::format("{}: no evaluator is labelled \"{}\" (the run's: {}); give one of them, or train for "
                               "the training metrics",
                               name_, watched_.label, labels.empty() ? "none" : labels));
}

void MetricStopper::run_event(Event event, State& state, Logger& logger) {
  if (event == Event::Init) check_against_run(state);
  if (event == Event::FitStart && stopped_) {
    logger.info(name_ + ": the run was stopped by it before this checkpoint; it stays stopped");
    state.stop_training();
    return;
  }
  const bool computed = watched_.label == "train" ? event == Event::EpochEnd
                                                  : event == Event::EvalEnd && state.eval_label == watched_.label;
  if (!computed || stopped_) return;
  const auto it = state.metrics.find(key_);
  if (it == state.metrics.end()) {
    std::string known;
    for (const auto& [k, v] : state.metrics) {
      if (k.rfind("metrics/train/", 0) == 0 || k == "loss/train/total") known += (known.empty() ? "" : ", ") + k;
    }
    throw InputError(fmt::format("{}: the run has no {} to watch; the training values are: {}", name_, key_,
                                 known.empty() ? "none" : known));
  }
  observe(it->second, state, logger);
}

void MetricStopper::stop(State& state, Logger& logger, const std::string& why) {
  stopped_ = true;
  logger.info(fmt::format("{}: {}; training stops at batch {} (epoch {})", name_, why, state.timestamp.batch,
                          state.timestamp.epoch));
  state.stop_training();
}

// ------------------------------------------------------------------------------------------------ EarlyStopper

EarlyStopper::EarlyStopper(EarlyStopperOptions options)
    : MetricStopper("early_stopper", {options.monitor(), options.label(), options.comp()}),
      options_(std::move(options)) {
  validate_options(options_, "early_stopper");
  if (options_.patience().unit() == TimeUnit::Duration) {
    throw InputError("early_stopper: patience " + options_.patience().str() +
                     " is a fraction of the run; give it in ep, ba, sp or tok");
  }
}

void EarlyStopper::observe(double value, State& state, Logger& logger) {
  const int64_t now = state.timestamp.get(options_.patience().unit());
  const bool improved = std::isnan(best_) || (greater_is_better() ? value > best_ + options_.min_delta()
                                                                   : value < best_ - options_.min_delta());
  if (improved) {
    best_ = value;
    best_at_ = now;
    return;
  }
  const Time waited(now - best_at_, options_.patience().unit());
  if (waited.value() >= options_.patience().value()) {
    stop(state, logger,
         fmt::format("{} has not improved on its best {:.6g} (by more than min_delta {}) for {} (patience {})", key(),
                     best_, options_.min_delta(), waited.str(), options_.patience().str()));
  }
}

StateDict EarlyStopper::state_dict() const {
  return {{"best", at::scalar_tensor(best_, at::kDouble)},
          {"best_at", at::scalar_tensor(best_at_, at::kLong)},
          {"stopped", at::scalar_tensor(stopped_ ? 1 : 0, at::kLong)}};
}

void EarlyStopper::load_state_dict(const StateDict& state) {
  best_ = state.at("best").item<double>();
  best_at_ = state.at("best_at").item<int64_t>();
  stopped_ = state.at("stopped").item<int64_t>() != 0;
}

// ------------------------------------------------------------------------------------------------ ThresholdStopper

ThresholdStopper::ThresholdStopper(ThresholdStopperOptions options)
    : MetricStopper("threshold_stopper", {options.monitor(), options.label(), options.comp()}),
      options_(std::move(options)) {
  validate_options(options_, "threshold_stopper");
  if (!std::isfinite(options_.threshold())) {
    throw InputError("threshold_stopper: threshold is not set; give the value that ends training once reached "
                     "(threshold: 0.9)");
  }
}

void ThresholdStopper::observe(double value, State& state, Logger& logger) {
  const double t = options_.threshold();
  if (greater_is_better() ? value >= t : value <= t) {
    stop(state, logger, fmt::format("{} is {:.6g}, {} the threshold {}", key(), value,
                                    greater_is_better() ? "at or above" : "at or below", t));
  }
}

StateDict ThresholdStopper::state_dict() const { return {{"stopped", at::scalar_tensor(stopped_ ? 1 : 0, at::kLong)}}; }

void ThresholdStopper::load_state_dict(const StateDict& state) { stopped_ = state.at("stopped").item<int64_t>() != 0; }

}  // namespace tessera::callbacks
