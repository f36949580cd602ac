#include <fmt/format.h>
#include <tessera/callbacks/stoppers.h>

#include <tessera/error.h>

#include <ATen/ATen.h>

#include <cmath>
#include <utility>

namespace tessera::callbacks {

// ------------------------------------------------------------------------------------------------ MetricStopper

MetricStopper::MetricStopper(std::string name, MetricWatch watch)
    : name_(std::move(name)), watch_(std::move(watch)) {}

void MetricStopper::run_event(Event event, State& state, Logger& logger) {
  if (event == Event::Init) watch_.check_against_run(state);
  if (event == Event::FitStart && stopped_) {
    logger.info(name_ + ": the run was stopped by it before this checkpoint; it stays stopped");
    state.stop_training();
    return;
  }
  if (stopped_) return;
  if (const std::optional<double> value = watch_.new_value(event, state)) observe(*value, state, logger);
}

void MetricStopper::stop(State& state, Logger& logger, const std::string& why) {
  stopped_ = true;
  logger.info(fmt::format("{}: {}; training stops at batch {} (epoch {})", name_, why, state.timestamp.batch,
                          state.timestamp.epoch));
  state.stop_training();
}

// ------------------------------------------------------------------------------------------------ EarlyStopper

EarlyStopper::EarlyStopper(EarlyStopperOptions options)
    : MetricStopper("early_stopper",
                    MetricWatch("early_stopper", options.monitor(), options.label(), options.comp())),
      options_(std::move(options)) {
  validate_options(options_, "early_stopper");
  if (options_.patience().unit() == TimeUnit::Duration) {
    throw InputError("early_stopper.patience: " + options_.patience().str() +
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
    : MetricStopper("threshold_stopper",
                    MetricWatch("threshold_stopper", options.monitor(), options.label(), options.comp())),
      options_(std::move(options)) {
  validate_options(options_, "threshold_stopper");
  if (!std::isfinite(options_.threshold())) {
    throw InputError("threshold_stopper.threshold: not set, or not a finite number (" +
                     fmt::format("{}", options_.threshold()) +
                     "); give the value that ends training once reached "
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
