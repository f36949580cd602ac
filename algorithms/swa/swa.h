#pragma once
/// SWA: stochastic weight averaging (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better
/// Generalization"), as Composer's SWA: an equal-weight running average of the weights between swa_start and
/// swa_end replaces the model's weights at swa_end, with the batch-norm statistics recomputed for them.
///
/// From `swa_start` on, every `update_interval` (at BatchEnd for batches, EpochEnd for epochs, after the optimizer
/// step), the weights are added to the running mean of the snapshots taken so far: with n snapshots averaged,
/// W_swa ← (n·W_swa + W)/(n + 1) for every parameter and floating-point buffer (integer buffers are copied); the
/// first snapshot starts the average as a copy. It is EMA's multi-tensor update (compute_ema) with smoothing
/// n/(n + 1). A snapshot with no optimizer step since the previous one (a step skipped by the loss scaler or a
/// batch dropped by nonfinite_loss: skip) is not taken: the weights did not move.
///
/// At the first BatchEnd or EpochEnd where `swa_end` is reached (an epoch-interval average ends at the epoch's
/// end, after its last snapshot) the averages are copied into the model and, with `recompute_batchnorm`, every
/// batch norm's running statistics are recomputed for the averaged weights as the equal-weight mean of the
/// batch statistics over one epoch of the training data (torch.optim.swa_utils.update_bn's method: reset, then
/// momentum None), in microbatches of the run's microbatch size, averaged over the ranks. Training then goes on
/// from the averaged weights until max_duration (Composer's default swa_end of 0.97dur leaves 3% of the run).
///
/// With `schedule_swa_lr`, from swa_start on the learning rate of every group is set at BatchStart (after the
/// schedulers) to (1 − f(p))·lr0 + f(p)·swa_lr: lr0 the group's rate at swa_start as the schedulers set it, p the
/// progress min(1, (batches since swa_start)/(anneal_steps·update_interval)), f(p) = p (linear) or
/// (1 − cos(πp))/2 (cos); swa_lr 0 holds lr0. The schedulers are overridden until the end of the run.
///
/// Checkpoints hold the averages, the snapshot count, whether the average was applied, and the SWA learning
/// rate's starting point, so a resumed run continues exactly.
///
///     tessera::algorithms::SWA swa(tessera::algorithms::SWAOptions().swa_start(tessera::Time::parse("0.6dur")));
///     tessera::algorithms::swa_update(average_copy, *model, count++);  // functional form
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>

#include <tessera/algorithm.h>
#include <tessera/batch.h>
#include <tessera/options.h>
#include <tessera/time.h>

namespace tessera::algorithms {

struct SWAOptions {
  TESSERA_OPTION(Time, swa_start) = Time::fraction(0.7);
  TESSERA_OPTION(Time, swa_end) = Time::fraction(0.97);
  TESSERA_OPTION(Time, update_interval) = Time(1, TimeUnit::Epoch);
  TESSERA_OPTION(bool, schedule_swa_lr) = false;
  TESSERA_OPTION(std::string, anneal_strategy) = "linear";
  TESSERA_OPTION(int64_t, anneal_steps) = 10;
  TESSERA_OPTION(double, swa_lr) = 0.0;
  TESSERA_OPTION(bool, recompute_batchnorm) = true;
  template <class V>
  void visit(V& v) {
    v("swa_start", swa_start_, "when averaging starts (ep, ba, sp or dur; before swa_end)", Any{});
    v("swa_end", swa_end_, "when the average replaces the weights (ep, ba, sp or dur; at most max_duration)", Any{});
    v("update_interval", update_interval_, "time between snapshots, in ba or ep (> 0)", Any{});
    v("schedule_swa_lr", schedule_swa_lr_, "from swa_start on, anneal the learning rate to swa_lr, then hold it",
      Any{});
    v("anneal_strategy", anneal_strategy_, "shape of the annealing to swa_lr", Choices{{"linear", "cos"}});
    v("anneal_steps", anneal_steps_, "length of the annealing, in update intervals (0: swa_lr at once)",
      Range::at_least(0));
    v("swa_lr", swa_lr_, "the learning rate annealed to (0: the rate at swa_start, held)", Range::at_least(0));
    v("recompute_batchnorm", recompute_batchnorm_,
      "at swa_end, recompute the batch-norm statistics for the averaged weights with a pass over the training data",
      Any{});
  }
};

/// Checks what the ranges in `visit` cannot say (units of the times, a positive update interval, start before end
/// when both have one unit); InputError "<where>.<option>: ..." naming the option and what is allowed.
void check_swa_options(const SWAOptions& options, const std::string& where = "swa");

/// Functional form of one snapshot: average ← (count·average + current)/(count + 1), in place, for every
/// floating-point pair (EMA's multi-tensor update with smoothing count/(count + 1): count 0 copies); other dtypes
/// are copied. `count` is the number of snapshots already in the average (>= 0). The lists pair up by position
/// and must match in shape, dtype and device (InputError naming the first pair that does not).
void swa_update(const std::vector<at::Tensor>& average, const std::vector<at::Tensor>& current, int64_t count);

/// The same on named tensors matched by name (Python's tessera.functional.swa_update uses it).
void swa_update_by_name(const std::vector<std::pair<std::string, at::Tensor>>& weights,
                        const std::vector<std::pair<std::string, at::Tensor>>& averages, int64_t count);

/// The same on modules: `average_model` (a copy of `model`, e.g. from clone()) takes `model`'s parameters and
/// buffers as its (count + 1)-th snapshot, matched by name.
void swa_update(torch::nn::Module& average_model, torch::nn::Module& model, int64_t count);

/// The SWA learning rate: (1 − f(p))·start_lr + f(p)·swa_lr with p = progress clamped to [0, 1] and f(p) = p
/// ("linear") or (1 − cos(πp))/2 ("cos"). InputError for another strategy or a negative rate.
double swa_annealed_lr(double start_lr, double swa_lr, double progress, const std::string& strategy = "linear");

/// The batch norms whose statistics recompute_batchnorm recomputes (torch's BatchNorm1d/2d/3d and Ghost
/// BatchNorm's layers). InputError naming a module that keeps running statistics of another kind (its momentum
/// cannot be switched to a cumulative average).
int64_t count_batchnorm(torch::nn::Module& model);

/// Recomputes every batch norm's running statistics as the equal-weight mean of the batch statistics of the
/// forwards that `forwards` runs (torch.optim.swa_utils.update_bn's method): resets them (mean 0, variance 1, count
/// 0), switches their momentum to a cumulative average and the model to training mode, calls forwards() without
/// gradient, then restores the momenta and the mode. Returns the running statistics (the model's tensors, e.g. to
/// average them over ranks); none without batch norms, and then `forwards` is not called. InputError as
/// count_batchnorm.
std::vector<at::Tensor> recompute_batchnorm(torch::nn::Module& model, const std::function<void()>& forwards);

/// The same with model.forward over a list of batches.
std::vector<at::Tensor> recompute_batchnorm(Model& model, const std::vector<Batch>& batches);

/// The algorithm (recipe name "swa").
class SWA : public Algorithm {
 public:
  explicit SWA(SWAOptions options = SWAOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  bool match(Event event, const State& state) const override;
  void apply(Event event, State& state, Logger& logger) override;
  /// Against the run: swa_start before swa_end and swa_end within max_duration (in batches), batch norms of a
  /// kind recompute_batchnorm knows.
  void check(const State& state) const override;
  /// "count", "finished" (0/1), "steps_at_update" (the optimizer's step count at the last snapshot),
  /// "lr_start_batch" (-1 before the SWA learning rate starts) and "lr_start_factor" (the schedulers' factor
  /// then), and "param/<name>" and "buffer/<name>" (the averages, until they are applied).
  StateDict state_dict() const override;
  /// Keeps a state_dict() to restore; it is matched against the model at the next AfterLoad (an InputError naming
  /// a missing or mismatched entry).
  void load_state_dict(const StateDict& state) override;

  /// Snapshots in the average so far.
  int64_t count() const noexcept { return count_; }
  /// Whether swa_end was reached and the averaged weights went into the model.
  bool finished() const noexcept { return finished_; }
  /// The averages by name, parameters ("param/<name>") then buffers ("buffer/<name>"); empty before the first
  /// snapshot and after they were applied.
  std::vector<std::pair<std::string, at::Tensor>> averages() const;
  const SWAOptions& options() const noexcept { return options_; }

 private:
  bool update_due(Event event, const State& state) const;
  bool end_due(Event event, const State& state) const;
  void update(State& state);
  void finish(State& state, Logger& logger);
  void set_learning_rate(State& state);
  void after_load(State& state);

  SWAOptions options_;
  AlgorithmSpec spec_;
  Event update_event_;
  int64_t count_ = 0;
  bool finished_ = false;
  int64_t steps_at_update_ = 0;
  int64_t lr_start_batch_ = -1;
  double lr_start_factor_ = 1.0;
  std::vector<std::string> names_;  ///< "param/<name>" then "buffer/<name>", in the model's order
  std::vector<at::Tensor> average_;  ///< aligned with names_
  StateDict loaded_;                 ///< a loaded state_dict awaiting AfterLoad
};

}  // namespace tessera::algorithms
