// The built-in learning-rate schedules. Every Time is converted to (possibly fractional) batches with the
// run's TimeContext at each call, so `dur` and `ep` horizons follow the run's length; every time but the warmups
// through schedule_to_batches, which applies the trainer's scale_schedule_ratio.
#include <tessera/optim/scheduler.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/metric_watch.h>

namespace tessera::optim {
namespace {

constexpr double kPi = 3.14159265358979323846;
// Conversions of `dur`/`sp` times give fractional batches; a boundary that lands a rounding error away
// from an integer still counts as reached.
constexpr double kSlack = 1e-9;

void check_convertible(const Time& t, const char* name) {
  if (t.unit() == TimeUnit::Token) {
    throw InputError(std::string("scheduler.") + name + ": " + t.str() +
                     " is in tokens; schedulers take ep, ba, sp or dur times");
  }
}

/// The shared warmup factor min(1, (t + 1) / W), 1 without warmup.
double warmup_factor(double t, double warmup_batches) {
  return warmup_batches > 0 ? std::min(1.0, (t + 1) / warmup_batches) : 1.0;
}

/// A number of batches as people write it: 469, 30, 12.5.
std::string batch_count(double batches) {
  return batches == std::floor(batches) && std::fabs(batches) < 1e15 ? std::to_string(static_cast<int64_t>(batches))
                                                                     : fmt::format("{:.2f}", batches);
}

/// Progress tau in [0, 1] of the schedule after warmup; InputError when t_max <= warmup.
double progress(double t, const Time& t_max, const Time& warmup, const TimeContext& ctx,
                double* warmup_batches, const char* scheduler) {
  const double w = ctx.to_batches(warmup);
  const double end = ctx.schedule_to_batches(t_max);
  if (!(end > w)) {
    throw InputError(fmt::format("t_max: {} is {} batches in this run, not more than the {} scheduler's warmup {} ({} "
                                 "batches); expected a t_max after the warmup: lengthen t_max (or max_duration, when "
                                 "t_max is in dur), or shorten the warmup (a fraction such as 0.05dur scales with the run)",
                                 t_max.str(), batch_count(end), scheduler, warmup.str(), batch_count(w)));
  }
  *warmup_batches = w;
  return std::clamp((t - w) / (end - w), 0.0, 1.0);
}

/// A period of the schedule in batches for this run (scaled by the run's schedule ratio); InputError when it is not positive (such as 0.001dur of a short run).
double positive_batches(const Time& period, const char* name, const TimeContext& ctx) {
  const double batches = ctx.schedule_to_batches(period);
  if (!(batches > 0)) {
    throw InputError(fmt::format("scheduler.{}: {} is {} batches in this run; expected more than 0", name, period.str(),
                                 batch_count(batches)));
  }
  return batches;
}

/// Construction-time checks of a period: convertible to batches and greater than 0.
void check_period(const Time& period, const char* name) {
  check_convertible(period, name);
  if (!(period.as_double() > 0)) {
    throw InputError(std::string("scheduler.") + name + ": " + period.str() + " must be greater than 0");
  }
}

/// Cosine interpolation from `start` (pct 0) to `end` (pct 1), exact at both ends.
double cosine_anneal(double start, double end, double pct) {
  const double c = 0.5 * (1 + std::cos(kPi * pct));
  return start * c + end * (1 - c);
}

class ConstantScheduler : public Scheduler {
 public:
  explicit ConstantScheduler(ConstantSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    return o_.alpha() * warmup_factor(static_cast<double>(now.batch), ctx.to_batches(o_.warmup()));
  }
  std::string name() const override { return "constant"; }

 private:
  ConstantSchedulerOptions o_;
};

class StepScheduler : public Scheduler {
 public:
  explicit StepScheduler(StepSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const double t = static_cast<double>(now.batch);
    const double steps = std::floor(t / ctx.schedule_to_batches(o_.step_size()) + kSlack);
    return std::pow(o_.gamma(), steps) * warmup_factor(t, ctx.to_batches(o_.warmup()));
  }
  std::string name() const override { return "step"; }

 private:
  StepSchedulerOptions o_;
};

class MultiStepScheduler : public Scheduler {
 public:
  explicit MultiStepScheduler(MultiStepSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const double t = static_cast<double>(now.batch);
    int passed = 0;
    for (const auto& m : o_.milestones()) passed += t + kSlack >= ctx.schedule_to_batches(m) ? 1 : 0;
    return std::pow(o_.gamma(), passed) * warmup_factor(t, ctx.to_batches(o_.warmup()));
  }
  void check(const TimeContext& ctx) const override {
    Scheduler::check(ctx);
    const auto& ms = o_.milestones();
    for (size_t i = 1; i < ms.size(); ++i) {  // of different units: ordered by this run's lengths
      const double before = ctx.schedule_to_batches(ms[i - 1]), at = ctx.schedule_to_batches(ms[i]);
      if (!(before + kSlack < at)) {
        throw InputError(
            fmt::format("scheduler.milestones: {} (batch {} of this run) is followed by {} (batch {}); "
                        "expected strictly increasing milestones",
                        ms[i - 1].str(), batch_count(before), ms[i].str(), batch_count(at)));
      }
    }
  }
  std::string name() const override { return "multistep"; }

 private:
  MultiStepSchedulerOptions o_;
};

class LinearScheduler : public Scheduler {
 public:
  explicit LinearScheduler(LinearSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const double t = static_cast<double>(now.batch);
    double w = 0;
    const double tau = progress(t, o_.t_max(), o_.warmup(), ctx, &w, "linear");
    return (o_.alpha_i() + (o_.alpha_f() - o_.alpha_i()) * tau) * warmup_factor(t, w);
  }
  std::string name() const override { return "linear"; }

 private:
  LinearSchedulerOptions o_;
};

class CosineScheduler : public Scheduler {
 public:
  explicit CosineScheduler(CosineSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const double t = static_cast<double>(now.batch);
    double w = 0;
    const double tau = progress(t, o_.t_max(), o_.warmup(), ctx, &w, "cosine");
    return cosine_anneal(1.0, o_.alpha_f(), tau) * warmup_factor(t, w);
  }
  std::string name() const override { return "cosine"; }

 private:
  CosineSchedulerOptions o_;
};

class OneCycleScheduler : public Scheduler {
 public:
  explicit OneCycleScheduler(OneCycleSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const double peak = o_.max_alpha();
    const double initial = peak / o_.div_factor();
    const auto [rising, p] = phase(now, ctx);
    return rising ? cosine_anneal(initial, peak, p) : cosine_anneal(peak, initial / o_.final_div_factor(), p);
  }
  std::string name() const override { return "onecycle"; }
  bool sets_momentum() const override { return o_.cycle_momentum(); }
  std::optional<double> momentum(const Timestamp& now, const TimeContext& ctx) const override {
    if (!o_.cycle_momentum()) return std::nullopt;
    const auto [rising, p] = phase(now, ctx);
    return rising ? cosine_anneal(o_.max_momentum(), o_.base_momentum(), p)
                  : cosine_anneal(o_.base_momentum(), o_.max_momentum(), p);
  }

 private:
  /// Whether `now` is in the rising phase, and the fraction of its phase done (held at 1 past t_max).
  std::pair<bool, double> phase(const Timestamp& now, const TimeContext& ctx) const {
    const double t = static_cast<double>(now.batch);
    const double end = positive_batches(o_.t_max(), "t_max", ctx);
    const double up = o_.pct_start() * end;
    if (t <= up) return {true, t / up};
    return {false, std::min(1.0, (t - up) / (end - up))};
  }

  OneCycleSchedulerOptions o_;
};

class ExponentialScheduler : public Scheduler {
 public:
  explicit ExponentialScheduler(ExponentialSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const double t = static_cast<double>(now.batch);
    const double period = positive_batches(o_.decay_period(), "decay_period", ctx);
    return std::pow(o_.gamma(), t / period) * warmup_factor(t, ctx.to_batches(o_.warmup()));
  }
  std::string name() const override { return "exponential"; }

 private:
  ExponentialSchedulerOptions o_;
};

class PolynomialScheduler : public Scheduler {
 public:
  explicit PolynomialScheduler(PolynomialSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const double t = static_cast<double>(now.batch);
    double w = 0;
    const double tau = progress(t, o_.t_max(), o_.warmup(), ctx, &w, "polynomial");
    return (o_.alpha_f() + (1 - o_.alpha_f()) * std::pow(1 - tau, o_.power())) * warmup_factor(t, w);
  }
  std::string name() const override { return "polynomial"; }

 private:
  PolynomialSchedulerOptions o_;
};

class CosineWarmRestartsScheduler : public Scheduler {
 public:
  explicit CosineWarmRestartsScheduler(CosineWarmRestartsSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const double t = static_cast<double>(now.batch);
    double length = positive_batches(o_.t_0(), "t_0", ctx);
    double start = 0;
    if (o_.t_mult() == 1.0) {
      start = std::floor(t / length + kSlack) * length;
    } else {
      // Cycles grow geometrically, so this takes O(log t) steps.
      while (start + length <= t + kSlack) {
        start += length;
        length *= o_.t_mult();
      }
    }
    const double pct = std::clamp((t - start) / length, 0.0, 1.0);
    return cosine_anneal(1.0, o_.alpha_f(), pct) * warmup_factor(t, ctx.to_batches(o_.warmup()));
  }
  std::string name() const override { return "cosine_warm_restarts"; }

 private:
  CosineWarmRestartsSchedulerOptions o_;
};

class InverseSqrtScheduler : public Scheduler {
 public:
  explicit InverseSqrtScheduler(InverseSqrtSchedulerOptions o) : o_(std::move(o)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const double t = static_cast<double>(now.batch);
    const double w = ctx.to_batches(o_.warmup());
    if (t < w) return warmup_factor(t, w);
    const double scale = timescale(ctx);
    return std::sqrt(scale / (t - w + scale));
  }
  void check(const TimeContext& ctx) const override { (void)timescale(ctx); }
  std::string name() const override { return "inverse_sqrt"; }

 private:
  /// The timescale in batches (the warmup's for 0); InputError when it is not positive in this run.
  double timescale(const TimeContext& ctx) const {
    if (o_.timescale().as_double() > 0) return positive_batches(o_.timescale(), "timescale", ctx);
    const double w = ctx.to_batches(o_.warmup());
    if (!(w > 0)) {
      throw InputError(fmt::format("scheduler.timescale: 0 means the warmup's length, and the warmup {} is {} batches "
                                   "in this run; expected a timescale or a warmup of more than 0 batches",
                                   o_.warmup().str(), batch_count(w)));
    }
    return w;
  }

  InverseSqrtSchedulerOptions o_;
};

class SequentialScheduler : public Scheduler {
 public:
  SequentialScheduler(std::vector<std::shared_ptr<Scheduler>> schedulers, std::vector<Time> milestones)
      : schedulers_(std::move(schedulers)), milestones_(std::move(milestones)) {}
  double alpha(const Timestamp& now, const TimeContext& ctx) const override {
    const std::vector<int64_t> starts = first_batches(ctx);
    size_t i = 0;
    while (i + 1 < starts.size() &&
           static_cast<double>(now.batch) + kSlack >= static_cast<double>(starts[i + 1]))
      ++i;
    Timestamp shifted = now;
    shifted.batch = now.batch - starts[i];
    return schedulers_[i]->alpha(shifted, ctx);
  }
  void check(const TimeContext& ctx) const override {
    (void)first_batches(ctx);
    for (size_t i = 0; i < schedulers_.size(); ++i) {  // every schedule against the run's length
      try {
        schedulers_[i]->check(ctx);
      } catch (const InputError& e) {
        throw InputError("schedulers[" + std::to_string(i) + "] (" + schedulers_[i]->name() +
                         "): " + e.what());
      }
    }
  }
  std::string name() const override { return "sequential"; }

 private:
  /// The first batch of each schedule: the first at which its milestone counts as reached.
  std::vector<int64_t> first_batches(const TimeContext& ctx) const {
    std::vector<int64_t> starts{0};
    for (const auto& m : milestones_) {
      const double at = ctx.schedule_to_batches(m);
      const auto first = static_cast<int64_t>(std::ceil(at - kSlack));
      if (first <= starts.back()) {
        throw InputError(fmt::format("scheduler.milestones: {} is batch {} of this run, not after the milestone before "
                                     "it (batch {}); expected strictly increasing milestones",
                                     m.str(), batch_count(at), starts.back()));
      }
      starts.push_back(first);
    }
    return starts;
  }
  std::vector<std::shared_ptr<Scheduler>> schedulers_;
  std::vector<Time> milestones_;
};

class PlateauScheduler : public Scheduler {
 public:
  explicit PlateauScheduler(PlateauSchedulerOptions options)
      : options_(std::move(options)),
        watch_("plateau", options_.monitor(), options_.label(), options_.comp()),
        best_(watch_.greater_is_better() ? -std::numeric_limits<double>::infinity()
                                         : std::numeric_limits<double>::infinity()) {}
  double alpha(const Timestamp&, const TimeContext&) const override { return alpha_; }
  std::string name() const override { return "plateau"; }
  void run_event(Event event, const State& state, Logger& logger) override {
    if (event == Event::Init) watch_.check_against_run(state);
    if (const std::optional<double> value = watch_.new_value(event, state)) observe(*value, logger);
  }
  StateDict state_dict() const override {
    return {{"best", at::scalar_tensor(best_, at::kDouble)},
            {"bad", at::scalar_tensor(bad_, at::kLong)},
            {"cooldown", at::scalar_tensor(cooldown_, at::kLong)},
            {"alpha", at::scalar_tensor(alpha_, at::kDouble)}};
  }
  void load_state_dict(const StateDict& state) override {
    best_ = state.at("best").item<double>();
    bad_ = state.at("bad").item<int64_t>();
    cooldown_ = state.at("cooldown").item<int64_t>();
    alpha_ = state.at("alpha").item<double>();
  }

 private:
  /// torch's ReduceLROnPlateau.step(value), on alpha.
  void observe(double value, Logger& logger) {
    if (improves(value)) {
      best_ = value;
      bad_ = 0;
    } else {
      ++bad_;
    }
    if (cooldown_ > 0) {  // the values after a reduction are not counted
      --cooldown_;
      bad_ = 0;
    }
    if (bad_ <= options_.patience()) return;
    const double reduced = std::max(alpha_ * options_.factor(), options_.min_alpha());
    if (alpha_ - reduced > options_.eps()) {
      logger.info(
          fmt::format("plateau: {} has not improved on its best {:.6g} for {} value{} (patience {}): lr "
                      "multiplier {:.6g} -> {:.6g}",
                      watch_.key(), best_, bad_, bad_ == 1 ? "" : "s", options_.patience(), alpha_, reduced));
      alpha_ = reduced;
    }
    cooldown_ = options_.cooldown();
    bad_ = 0;
  }
  bool improves(double value) const {
    const bool rel = options_.threshold_mode() == "rel";
    const double t = options_.threshold();
    if (watch_.greater_is_better()) return value > (rel ? best_ * (1 + t) : best_ + t);
    return value < (rel ? best_ * (1 - t) : best_ - t);
  }
  PlateauSchedulerOptions options_;
  MetricWatch watch_;
  double best_;  // the worst value at first, so that the first value improves on it
  int64_t bad_ = 0;
  int64_t cooldown_ = 0;
  double alpha_ = 1.0;
};

}  // namespace

std::unique_ptr<Scheduler> make_constant_scheduler(ConstantSchedulerOptions options) {
  validate_options(options, "scheduler");
  check_convertible(options.warmup(), "warmup");
  return std::make_unique<ConstantScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_step_scheduler(StepSchedulerOptions options) {
  validate_options(options, "scheduler");
  check_convertible(options.warmup(), "warmup");
  check_period(options.step_size(), "step_size");
  return std::make_unique<StepScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_multistep_scheduler(MultiStepSchedulerOptions options) {
  validate_options(options, "scheduler");
  check_convertible(options.warmup(), "warmup");
  const auto& ms = options.milestones();
  for (size_t i = 0; i < ms.size(); ++i) {
    check_convertible(ms[i], "milestones");
    // Times of different units can only be ordered with the run's context; those are not checked here.
    if (i > 0 && ms[i].unit() == ms[i - 1].unit() && !(ms[i - 1] < ms[i])) {
      throw InputError("scheduler.milestones: " + ms[i - 1].str() + " is followed by " + ms[i].str() +
                       "; expected strictly increasing milestones");
    }
  }
  return std::make_unique<MultiStepScheduler>(std::move(options));
}

/// Validation shared by the schedules with a warmup followed by a horizon (linear, cosine, polynomial).
template <class Options>
void check_warmup_horizon(Options& options) {
  validate_options(options, "scheduler");
  check_convertible(options.warmup(), "warmup");
  check_convertible(options.t_max(), "t_max");
  if (options.t_max().unit() == options.warmup().unit() && !(options.warmup() < options.t_max())) {
    throw InputError("scheduler.t_max: " + options.t_max().str() + " must be greater than warmup (" +
                     options.warmup().str() + ")");
  }
}

std::unique_ptr<Scheduler> make_linear_scheduler(LinearSchedulerOptions options) {
  check_warmup_horizon(options);
  return std::make_unique<LinearScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_cosine_scheduler(CosineSchedulerOptions options) {
  check_warmup_horizon(options);
  return std::make_unique<CosineScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_onecycle_scheduler(OneCycleSchedulerOptions options) {
  validate_options(options, "scheduler");
  check_period(options.t_max(), "t_max");
  return std::make_unique<OneCycleScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_exponential_scheduler(ExponentialSchedulerOptions options) {
  validate_options(options, "scheduler");
  check_convertible(options.warmup(), "warmup");
  check_period(options.decay_period(), "decay_period");
  return std::make_unique<ExponentialScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_polynomial_scheduler(PolynomialSchedulerOptions options) {
  check_warmup_horizon(options);
  return std::make_unique<PolynomialScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_cosine_warm_restarts_scheduler(CosineWarmRestartsSchedulerOptions options) {
  validate_options(options, "scheduler");
  check_convertible(options.warmup(), "warmup");
  check_period(options.t_0(), "t_0");
  return std::make_unique<CosineWarmRestartsScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_inverse_sqrt_scheduler(InverseSqrtSchedulerOptions options) {
  validate_options(options, "scheduler");
  check_convertible(options.warmup(), "warmup");
  check_convertible(options.timescale(), "timescale");
  if (options.timescale().as_double() == 0 && !(options.warmup().as_double() > 0)) {
    throw InputError("scheduler.timescale: 0 (the default) means the warmup's length, and there is no warmup; give a "
                     "timescale (the time over which alpha falls to 1/sqrt(2), e.g. 1000ba) or a warmup");
  }
  return std::make_unique<InverseSqrtScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_plateau_scheduler(PlateauSchedulerOptions options) {
  validate_options(options, "scheduler");
  return std::make_unique<PlateauScheduler>(std::move(options));
}

std::unique_ptr<Scheduler> make_sequential_scheduler(std::vector<std::shared_ptr<Scheduler>> schedulers,
                                                     std::vector<Time> milestones) {
  if (schedulers.empty()) throw InputError("scheduler.schedulers: empty; expected at least one schedule");
  for (size_t i = 0; i < schedulers.size(); ++i) {
    if (!schedulers[i]) throw InputError("scheduler.schedulers[" + std::to_string(i) + "]: null; expected a schedule");
    if (dynamic_cast<const PlateauScheduler*>(schedulers[i].get()) != nullptr) {
      throw InputError(
          "scheduler.schedulers[" + std::to_string(i) +
          "]: a plateau follows a metric, not time, so it "
          "has no place in a sequence of schedules; put it beside the sequential in schedulers: (the "
          "schedules multiply)");
    }
    if (schedulers[i]->sets_momentum()) {
      throw InputError("scheduler.schedulers[" + std::to_string(i) + "]: " + schedulers[i]->name() +
                       " sets the optimizer's momentum (cycle_momentum), which a sequence could not hand on to the "
                       "next schedule; put it beside the sequential in schedulers: (the schedules multiply; it "
                       "sets the momentum over the whole run)");
    }
  }
  if (milestones.size() + 1 != schedulers.size()) {
    throw InputError(fmt::format("scheduler.milestones: {} milestones for {} schedules; expected one fewer milestones "
                                 "than schedules (each milestone starts the next schedule)",
                                 milestones.size(), schedulers.size()));
  }
  for (size_t i = 0; i < milestones.size(); ++i) {
    check_period(milestones[i], "milestones");
    if (i > 0 && milestones[i].unit() == milestones[i - 1].unit() && !(milestones[i - 1] < milestones[i])) {
      throw InputError("scheduler.milestones: " + milestones[i - 1].str() + " is followed by " + milestones[i].str() +
                       "; expected strictly increasing milestones");
    }
  }
  return std::make_unique<SequentialScheduler>(std::move(schedulers), std::move(milestones));
}

}  // namespace tessera::optim
