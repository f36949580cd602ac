#include <fmt/format.h>
#include <tessera/metric_watch.h>

#include <tessera/error.h>
#include <tessera/state.h>

#include <algorithm>
#include <utility>

namespace tessera {
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

/// Whether the metric `name` reports `monitor`: its value, or one of its parts ("recall/class_3").
bool reports(const std::string& name, const std::string& monitor) {
  return monitor == name || monitor.rfind(name + "/", 0) == 0;
}

std::string metric_names(const Evaluator& ev) {
  std::string out;
  for (const auto& m : ev.metrics) out += (out.empty() ? "" : ", ") + m->name();
  return out;
}

}  // namespace

MetricWatch::MetricWatch(std::string owner, std::string monitor, std::string label, const std::string& comp)
    : owner_(std::move(owner)), monitor_(std::move(monitor)), label_(std::move(label)) {
  if (monitor_.empty()) {
    throw InputError(owner_ + ".monitor: is empty; name the metric to watch (accuracy, cross_entropy, ...; with "
                              "label train also loss)");
  }
  if (label_.empty()) throw InputError(owner_ + ".label: is empty; an evaluator's label (eval), or train");
  key_ = label_ == "train" && monitor_ == "loss" ? "loss/train/total" : "metrics/" + label_ + "/" + monitor_;
  greater_ = larger_is_better(monitor_, comp);
}

void MetricWatch::check_against_run(const State& state) const {
  if (label_ == "train") {
    const auto& names = state.train_metric_names;
    if (monitor_ == "loss" ||
        std::any_of(names.begin(), names.end(), [&](const std::string& n) { return reports(n, monitor_); })) {
      return;
    }
    std::string known = "loss";
    for (const auto& n : names) known += ", " + n;
    throw InputError(
        fmt::format("{}.monitor: the training metrics have no \"{}\"; they are: {}", owner_, monitor_, known));
  }
  std::string labels;
  for (const Evaluator& ev : state.evaluators) {
    if (ev.label == label_) {
      for (const auto& m : ev.metrics) {
        if (reports(m->name(), monitor_)) return;
      }
      throw InputError(fmt::format("{}.monitor: the evaluator \"{}\" has no metric \"{}\"; its metrics: {}", owner_,
                                   label_, monitor_, metric_names(ev)));
    }
    labels += (labels.empty() ? "" : ", ") + ev.label;
  }
  throw InputError(fmt::format("{}.label: no evaluator is labelled \"{}\" (the run's: {}); give one of them, or train "
                               "for the training metrics",
                               owner_, label_, labels.empty() ? "none" : labels));
}

std::optional<double> MetricWatch::new_value(Event event, const State& state) const {
  const bool computed = label_ == "train" ? event == Event::EpochEnd
                                          : event == Event::EvalEnd && state.eval_label == label_ &&
                                                !state.final_evaluation;
  if (!computed) return std::nullopt;
  const auto it = state.metrics.find(key_);
  if (it == state.metrics.end()) {
    // A part a metric did not report (a class beyond its count, a Python metric's key that it does not return).
    std::string known;
    for (const auto& [k, v] : state.metrics) {
      if (k.rfind("metrics/" + label_ + "/", 0) == 0 || (label_ == "train" && k == "loss/train/total")) {
        known += (known.empty() ? "" : ", ") + k;
      }
    }
    const std::string whose = label_ == "train" ? "training" : "\"" + label_ + "\"";
    throw InputError(fmt::format("{}: the run has no {} to watch; the {} values are: {}", owner_, key_, whose,
                                 known.empty() ? "none" : known));
  }
  return it->second;
}

}  // namespace tessera
