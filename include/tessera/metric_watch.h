#pragma once
/// One metric a plugin follows through the run: the stoppers (callbacks/stoppers.h) and the `plateau` schedule
/// (optim/scheduler.h).
///
/// The value is "metrics/<label>/<monitor>" (an evaluator's metric, new at the end of each of that evaluator's
/// runs), or with label "train" the training metric "metrics/train/<monitor>" (monitor "loss": the training loss
/// "loss/train/total"), new at each epoch end; a monitor may name a part of a metric ("recall/class_3", with
/// per_class). It is the same on every rank (evaluation and training metrics are
/// reduced over the ranks), so whatever follows it decides alike on every rank.
#include <optional>
#include <string>

#include <tessera/event.h>

namespace tessera {

struct State;

class MetricWatch {
 public:
  /// `owner` names the plugin in errors ("early_stopper", "schedulers[1] (plateau)"). `comp`: "greater" (larger
  /// is better), "less", or "auto": less for names with loss, cross_entropy, perplexity or error in them, greater
  /// otherwise. InputError for an empty monitor or label.
  MetricWatch(std::string owner, std::string monitor, std::string label, const std::string& comp);
  /// The key in State::metrics ("metrics/eval/accuracy", "loss/train/total").
  const std::string& key() const noexcept { return key_; }
  bool greater_is_better() const noexcept { return greater_; }
  /// InputError, naming what the run has, when its evaluators or training metrics do not compute the metric (at
  /// Init, before step 1).
  void check_against_run(const State& state) const;
  /// The metric's new value when `event` is where it is computed (its evaluator's EvalEnd, but the final evaluation's;
  /// EpochEnd for the training metrics), else nullopt. InputError when it should be there and is not.
  std::optional<double> new_value(Event event, const State& state) const;

 private:
  std::string owner_, monitor_, label_, key_;
  bool greater_ = true;
};

}  // namespace tessera
