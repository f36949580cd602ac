#pragma once
/// Learning-rate schedules as pure functions of training time.
///
/// A scheduler gives a multiplier alpha(t); the optimizer's lr is initial_lr times the product of all
/// schedulers' alphas. The trainer sets the lr at the start of every batch from the timestamp of that
/// batch (t = batches done so far), so batch 0 trains with alpha(0) and no batch is wasted at lr 0.
/// Horizons and warmups are Times (`5ep`, `200ba`, `0.1dur`) converted to batches with the run's
/// TimeContext. With the trainer's `step_schedulers_every_batch: false` (torch's usual per-epoch stepping) every
/// schedule is evaluated at the first batch of the current epoch, so the lr changes only between epochs.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <tessera/event.h>
#include <tessera/options.h>
#include <tessera/state_dict.h>
#include <tessera/time.h>

namespace tessera {
struct State;
class Logger;
}  // namespace tessera

namespace tessera::optim {

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  /// The lr multiplier at `now`.
  virtual double alpha(const Timestamp& now, const TimeContext& ctx) const = 0;
  virtual std::string name() const = 0;
  /// Whether the schedule also sets the optimizer's momentum (SGD's momentum, Adam's beta1): onecycle with
  /// cycle_momentum. Known once check() has run. A run takes at most one such schedule.
  virtual bool sets_momentum() const { return false; }
  /// The momentum at `now`, where sets_momentum(); std::nullopt otherwise (the optimizer's own).
  virtual std::optional<double> momentum(const Timestamp& now, const TimeContext& ctx) const { return std::nullopt; }
  /// Before step 1 (the trainer, and the recipe loader at the entry's line): InputError when the schedule
  /// cannot be followed over the run `ctx` describes (a horizon that ends before its warmup). By default,
  /// alpha at the start.
  virtual void check(const TimeContext& ctx) const { (void)alpha(Timestamp(), ctx); }
  /// Each event of the run, after the callbacks. A schedule that follows a metric (plateau) checks at Init
  /// that the run computes it and takes each new value; the schedules of time alone ignore it.
  virtual void run_event(Event event, const State& state, Logger& logger) {}
  /// What alpha depends on besides time (plateau's reductions so far), in checkpoints; empty for the others.
  virtual StateDict state_dict() const { return {}; }
  virtual void load_state_dict(const StateDict& state) {}
};

/// alpha = 1.
struct ConstantSchedulerOptions {
  TESSERA_OPTION(double, alpha) = 1.0;
  TESSERA_OPTION(Time, warmup) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("alpha", alpha_, "constant multiplier", Range::positive());
    v("warmup", warmup_, "linear warmup from 0 (a Time)", Any{});
  }
};

/// alpha = gamma^floor(t / step_size).
struct StepSchedulerOptions {
  TESSERA_OPTION(Time, step_size) = Time(1, TimeUnit::Epoch);
  TESSERA_OPTION(double, gamma) = 0.1;
  TESSERA_OPTION(Time, warmup) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("step_size", step_size_, "period of the decay (a Time)", Any{});
    v("gamma", gamma_, "decay factor", Range::positive());
    v("warmup", warmup_, "linear warmup from 0 (a Time)", Any{});
  }
};

/// alpha = gamma^(number of milestones passed).
struct MultiStepSchedulerOptions {
  TESSERA_OPTION(std::vector<Time>, milestones) = std::vector<Time>{};
  TESSERA_OPTION(double, gamma) = 0.1;
  TESSERA_OPTION(Time, warmup) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("milestones", milestones_, "times at which alpha is multiplied by gamma", Any{});
    v("gamma", gamma_, "decay factor", Range::positive());
    v("warmup", warmup_, "linear warmup from 0 (a Time)", Any{});
  }
};

/// After warmup: alpha = alpha_i + (alpha_f - alpha_i) * tau, tau = min(1, (t - warmup)/(t_max - warmup)).
struct LinearSchedulerOptions {
  TESSERA_OPTION(double, alpha_i) = 1.0;
  TESSERA_OPTION(double, alpha_f) = 0.0;
  TESSERA_OPTION(Time, t_max) = Time::fraction(1.0);
  TESSERA_OPTION(Time, warmup) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("alpha_i", alpha_i_, "initial multiplier", Range::at_least(0));
    v("alpha_f", alpha_f_, "final multiplier", Range::at_least(0));
    v("t_max", t_max_, "end of the schedule (a Time)", Any{});
    v("warmup", warmup_, "linear warmup from 0 (a Time)", Any{});
  }
};

/// After warmup: alpha = alpha_f + (1 - alpha_f) * (1 + cos(pi * tau)) / 2, tau as for Linear.
struct CosineSchedulerOptions {
  TESSERA_OPTION(double, alpha_f) = 0.0;
  TESSERA_OPTION(Time, t_max) = Time::fraction(1.0);
  TESSERA_OPTION(Time, warmup) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("alpha_f", alpha_f_, "final multiplier", Range::at_least(0));
    v("t_max", t_max_, "end of the schedule (a Time)", Any{});
    v("warmup", warmup_, "linear warmup from 0 (a Time)", Any{});
  }
};

/// alpha = gamma^(t / decay_period): a smooth step schedule (gamma per decay_period).
struct ExponentialSchedulerOptions {
  TESSERA_OPTION(double, gamma) = 0.9;
  TESSERA_OPTION(Time, decay_period) = Time(1, TimeUnit::Epoch);
  TESSERA_OPTION(Time, warmup) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("gamma", gamma_, "multiplier per decay_period", Range::positive());
    v("decay_period", decay_period_, "time over which alpha is multiplied by gamma (a Time)", Any{});
    v("warmup", warmup_, "linear warmup from 0 (a Time)", Any{});
  }
};

/// After warmup: alpha = alpha_f + (1 - alpha_f) * (1 - tau)^power, tau as for Linear.
struct PolynomialSchedulerOptions {
  TESSERA_OPTION(double, power) = 1.0;
  TESSERA_OPTION(double, alpha_f) = 0.0;
  TESSERA_OPTION(Time, t_max) = Time::fraction(1.0);
  TESSERA_OPTION(Time, warmup) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("power", power_, "exponent of the decay (1 = linear)", Range::positive());
    v("alpha_f", alpha_f_, "final multiplier", Range::at_least(0));
    v("t_max", t_max_, "end of the schedule (a Time)", Any{});
    v("warmup", warmup_, "linear warmup from 0 (a Time)", Any{});
  }
};

/// Cosine annealing with warm restarts (SGDR): cycle k lasts t_0 * t_mult^k; within a cycle, alpha falls
/// from 1 to alpha_f as for Cosine with tau the fraction of the cycle done, then restarts at 1.
struct CosineWarmRestartsSchedulerOptions {
  TESSERA_OPTION(Time, t_0) = Time(1, TimeUnit::Epoch);
  TESSERA_OPTION(double, t_mult) = 1.0;
  TESSERA_OPTION(double, alpha_f) = 0.0;
  TESSERA_OPTION(Time, warmup) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("t_0", t_0_, "length of the first cycle (a Time)", Any{});
    v("t_mult", t_mult_, "each cycle is t_mult times the length of the one before", Range::at_least(1));
    v("alpha_f", alpha_f_, "multiplier at the end of each cycle", Range::at_least(0));
    v("warmup", warmup_, "linear warmup from 0 (a Time)", Any{});
  }
};

/// After warmup: alpha = sqrt(timescale / (t - warmup + timescale)), t and the times in batches: 1 at the warmup's end,
/// 1/sqrt(2) a timescale later, and on down as the inverse square root of the time (the decay of Transformer training:
/// fairseq's inverse_sqrt, Hugging Face's get_inverse_sqrt_schedule). timescale 0 (the default) is the warmup's length.
struct InverseSqrtSchedulerOptions {
  TESSERA_OPTION(Time, timescale) = Time(0, TimeUnit::Batch);
  TESSERA_OPTION(Time, warmup) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("timescale", timescale_, "time over which alpha falls to 1/sqrt(2) (a Time; 0: the warmup's)", Any{});
    v("warmup", warmup_, "linear warmup from 0 (a Time)", Any{});
  }
};

/// One-cycle: alpha rises from max_alpha/div_factor to max_alpha over pct_start of t_max (cosine), then
/// falls to max_alpha/(div_factor*final_div_factor) (cosine) at t_max and stays there. With T = t_max in
/// batches and U = pct_start * T: alpha(t) = anneal(initial, max, t/U) for t <= U, else
/// anneal(max, final, min(1, (t-U)/(T-U))), where anneal(a, b, p) = b + (a - b)(1 + cos(pi p))/2.
/// With cycle_momentum the momentum moves the other way (torch's OneCycleLR, Smith 2018): anneal(max_momentum,
/// base_momentum, t/U) while alpha rises, then anneal(base_momentum, max_momentum, ...) as it falls, set as the
/// optimizer's momentum (SGD's, RMSprop's, LARS's) or beta1 (the Adams', Lion's, LAMB's) in place of its own.
struct OneCycleSchedulerOptions {
  TESSERA_OPTION(double, max_alpha) = 1.0;
  TESSERA_OPTION(double, pct_start) = 0.25;
  TESSERA_OPTION(double, div_factor) = 25.0;
  TESSERA_OPTION(double, final_div_factor) = 1e4;
  TESSERA_OPTION(Time, t_max) = Time::fraction(1.0);
  TESSERA_OPTION(bool, cycle_momentum) = false;
  TESSERA_OPTION(double, base_momentum) = 0.85;
  TESSERA_OPTION(double, max_momentum) = 0.95;
  template <class V>
  void visit(V& v) {
    v("max_alpha", max_alpha_, "peak multiplier", Range::positive());
    v("pct_start", pct_start_, "fraction of t_max spent rising", Range::open(0, 1));
    v("div_factor", div_factor_, "initial = max_alpha / div_factor", Range::at_least(1));
    v("final_div_factor", final_div_factor_, "final = initial / final_div_factor", Range::at_least(1));
    v("t_max", t_max_, "end of the schedule (a Time)", Any{});
    v("cycle_momentum", cycle_momentum_,
      "also set the optimizer's momentum (or beta1): from max_momentum down to base_momentum as alpha rises, then "
      "back up",
      Any{});
    v("base_momentum", base_momentum_, "the momentum at alpha's peak (with cycle_momentum)", Range::closed_open(0, 1));
    v("max_momentum", max_momentum_, "the momentum at the start and the end (with cycle_momentum)",
      Range::closed_open(0, 1));
  }
};

/// Warmup, shared by the schedules that have one: alpha is multiplied by min(1, (t + 1) / warmup) with t
/// and warmup in batches, so the first batch trains at 1/warmup of the rate (never at 0). The schedules with
/// a horizon (linear, cosine, polynomial) start after the warmup; the others (constant, step, multistep,
/// exponential, cosine_warm_restarts) run on t from 0, the warmup multiplying them.
///
/// The factories validate the options (InputError): ranges, token times (not convertible), step_size > 0,
/// milestones of one unit strictly increasing, t_max > warmup when both have one unit. Checks that need
/// the run's TimeContext (t_max > warmup across units) throw InputError from `check` (and `alpha`). Scheduler
/// names: "constant", "step", "multistep", "linear", "cosine", "onecycle", "exponential", "polynomial",
/// "cosine_warm_restarts" (and "sequential", below).
std::unique_ptr<Scheduler> make_constant_scheduler(ConstantSchedulerOptions options);
std::unique_ptr<Scheduler> make_step_scheduler(StepSchedulerOptions options);
std::unique_ptr<Scheduler> make_multistep_scheduler(MultiStepSchedulerOptions options);
std::unique_ptr<Scheduler> make_linear_scheduler(LinearSchedulerOptions options);
std::unique_ptr<Scheduler> make_cosine_scheduler(CosineSchedulerOptions options);
std::unique_ptr<Scheduler> make_onecycle_scheduler(OneCycleSchedulerOptions options);
std::unique_ptr<Scheduler> make_exponential_scheduler(ExponentialSchedulerOptions options);
std::unique_ptr<Scheduler> make_polynomial_scheduler(PolynomialSchedulerOptions options);
std::unique_ptr<Scheduler> make_cosine_warm_restarts_scheduler(CosineWarmRestartsSchedulerOptions options);
std::unique_ptr<Scheduler> make_inverse_sqrt_scheduler(InverseSqrtSchedulerOptions options);

/// Reduces the lr when a metric stops improving (torch's ReduceLROnPlateau), for runs that decide their
/// schedule from what they see rather than from time. It watches "metrics/<label>/<monitor>" (an evaluator's
/// metric, at the end of each of that evaluator's runs) or, with label "train", a training metric or the loss
/// ("loss") at each epoch end. Each new value either improves on the best so far (by more than `threshold`:
/// relative, best·(1 ∓ threshold), or absolute, best ∓ threshold) or counts as bad (NaN counts as bad); after
/// more than `patience` bad values in a row alpha becomes max(alpha·factor, min_alpha) — unless that changes
/// it by `eps` or less — and the next `cooldown` values are not counted. Alpha starts at 1 and holds between
/// values; the lr of the batches after a reduction is reduced. The best value, the count, the cooldown and
/// alpha are in checkpoints, so a resumed run reduces where the uninterrupted one does. Alpha multiplies the
/// other schedules'. Name: "plateau".
struct PlateauSchedulerOptions {
  TESSERA_OPTION(std::string, monitor) = "";
  TESSERA_OPTION(std::string, label) = "eval";
  TESSERA_OPTION(std::string, comp) = "auto";
  TESSERA_OPTION(double, factor) = 0.1;
  TESSERA_OPTION(int64_t, patience) = 10;
  TESSERA_OPTION(double, threshold) = 1e-4;
  TESSERA_OPTION(std::string, threshold_mode) = "rel";
  TESSERA_OPTION(int64_t, cooldown) = 0;
  TESSERA_OPTION(double, min_alpha) = 0.0;
  TESSERA_OPTION(double, eps) = 1e-8;
  template <class V>
  void visit(V& v) {
    v("monitor", monitor_, "the metric watched (accuracy, cross_entropy, ...; with label train also loss)",
      Any{});
    v("label", label_, "an evaluator's label, or train", Any{});
    v("comp", comp_, "which way is better: auto, greater (torch's mode max) or less (min)",
      Choices{{"auto", "greater", "less"}});
    v("factor", factor_, "alpha is multiplied by this at a plateau", Range::open(0, 1));
    v("patience", patience_, "bad values in a row that are borne before a reduction", Range::at_least(0));
    v("threshold", threshold_, "least improvement on the best that counts", Range::at_least(0));
    v("threshold_mode", threshold_mode_, "rel: best·(1 ∓ threshold); abs: best ∓ threshold",
      Choices{{"rel", "abs"}});
    v("cooldown", cooldown_, "values not counted after a reduction", Range::at_least(0));
    v("min_alpha", min_alpha_, "alpha is never reduced below this", Range::at_least(0));
    v("eps", eps_, "a reduction of alpha by this or less is not made", Range::at_least(0));
  }
};

std::unique_ptr<Scheduler> make_plateau_scheduler(PlateauSchedulerOptions options);

/// One schedule after another (torch's SequentialLR): `schedulers[0]` until `milestones[0]`, then
/// `schedulers[1]` until `milestones[1]`, and so on, each counting its time from the milestone where it
/// starts (so its warmup and horizons are relative to that milestone: a `cosine` with t_max 900ba after a
/// milestone at 100ba ends at batch 1000). Needs one milestone fewer than schedulers, strictly increasing
/// when of one unit, in ep, ba, sp or dur (a milestone is a horizon: scale_schedule_ratio scales it). Its
/// check checks every schedule's, so a bad horizon of a later one is an error before training. A plateau
/// follows a metric, not time, and a schedule that sets the momentum sets it for the whole run: they go beside a
/// sequential, not in it (InputError). Name: "sequential".
std::unique_ptr<Scheduler> make_sequential_scheduler(std::vector<std::shared_ptr<Scheduler>> schedulers,
                                                     std::vector<Time> milestones);

}  // namespace tessera::optim
