#pragma once
/// Stopping training on a metric (Composer's EarlyStopper and ThresholdStopper).
///
///     callbacks: [{early_stopper: {monitor: accuracy, label: eval, patience: 3ep, min_delta: 0.001}},
///                 {threshold_stopper: {monitor: accuracy, label: eval, threshold: 0.9}}]
///
/// Both watch one value (tessera/metric_watch.h): "metrics/<label>/<monitor>" (an evaluator's metric, checked
/// at the end of each of that evaluator's runs but the final one, after training, which decides nothing), or
/// with label "train" the training metric "metrics/train/<monitor>" (monitor "loss": the training loss
/// "loss/train/total"), checked at each epoch end. The value is the same on every rank (evaluation and
/// training metrics are reduced over the ranks), so every rank stops at the same batch. A stop is kept in the
/// callback's checkpointed state: a run resumed from a checkpoint written after it stops at once, as the
/// uninterrupted run did.
#include <tessera/callback.h>
#include <tessera/metric_watch.h>
#include <tessera/options.h>
#include <tessera/time.h>

#include <cstdint>
#include <limits>
#include <string>

namespace tessera::callbacks {

struct EarlyStopperOptions {
  TESSERA_OPTION(std::string, monitor) = "";
  TESSERA_OPTION(std::string, label) = "eval";
  TESSERA_OPTION(std::string, comp) = "auto";
  /// An improvement is a change beyond the best value by more than this.
  TESSERA_OPTION(double, min_delta) = 0;
  /// How long the value may go without improving (ep, ba, sp or tok) before training stops.
  TESSERA_OPTION(Time, patience) = Time(1, TimeUnit::Epoch);
  template <class V>
  void visit(V& v) {
    v("monitor", monitor_, "the metric watched (accuracy, cross_entropy, ...; with label train also loss)", Any{});
    v("label", label_, "an evaluator's label, or train", Any{});
    v("comp", comp_, "which way is better: auto, greater or less", Choices{{"auto", "greater", "less"}});
    v("min_delta", min_delta_, "least change that counts as an improvement", Range::at_least(0));
    v("patience", patience_, "time without improvement before stopping (ep, ba, sp or tok)", Any{});
  }
};

struct ThresholdStopperOptions {
  TESSERA_OPTION(std::string, monitor) = "";
  TESSERA_OPTION(std::string, label) = "eval";
  TESSERA_OPTION(std::string, comp) = "auto";
  /// Training stops once the value reaches this (>= for greater, <= for less).
  TESSERA_OPTION(double, threshold) = std::numeric_limits<double>::quiet_NaN();
  template <class V>
  void visit(V& v) {
    v("monitor", monitor_, "the metric watched (accuracy, cross_entropy, ...; with label train also loss)", Any{});
    v("label", label_, "an evaluator's label, or train", Any{});
    v("comp", comp_, "which way is better: auto, greater or less", Choices{{"auto", "greater", "less"}});
    v("threshold", threshold_, "the value that ends training once reached", Any{});
  }
};

/// Watches one metric and calls `observe` each time it is computed; what the stoppers share.
class MetricStopper : public Callback {
 public:
  /// The key in State::metrics ("metrics/eval/accuracy", "loss/train/total").
  const std::string& key() const noexcept { return watch_.key(); }
  /// Whether larger values are better.
  bool greater_is_better() const noexcept { return watch_.greater_is_better(); }
  /// Whether this callback has stopped the run (kept in its state).
  bool stopped() const noexcept { return stopped_; }
  void run_event(Event event, State& state, Logger& logger) override;

 protected:
  MetricStopper(std::string name, MetricWatch watch);
  /// A new value of the metric at `state.timestamp`.
  virtual void observe(double value, State& state, Logger& logger) = 0;
  /// Stops training, saying why.
  void stop(State& state, Logger& logger, const std::string& why);
  bool stopped_ = false;

 private:
  std::string name_;
  MetricWatch watch_;
};

/// Stops training when the metric has not improved for `patience` ("early_stopper" in recipes).
class EarlyStopper : public MetricStopper {
 public:
  explicit EarlyStopper(EarlyStopperOptions options);
  std::string name() const override { return "early_stopper"; }
  /// "best" (NaN before the first value), "best_at" (the patience unit's counter then) and "stopped".
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;
  /// The best value so far (NaN before the first).
  double best() const noexcept { return best_; }

 protected:
  void observe(double value, State& state, Logger& logger) override;

 private:
  EarlyStopperOptions options_;
  double best_ = std::numeric_limits<double>::quiet_NaN();
  int64_t best_at_ = 0;
};

/// Stops training once the metric reaches `threshold` ("threshold_stopper" in recipes).
class ThresholdStopper : public MetricStopper {
 public:
  explicit ThresholdStopper(ThresholdStopperOptions options);
  std::string name() const override { return "threshold_stopper"; }
  /// "stopped".
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 protected:
  void observe(double value, State& state, Logger& logger) override;

 private:
  ThresholdStopperOptions options_;
};

}  // namespace tessera::callbacks
