#pragma once
/// EMA: an exponential moving average of the weights (parameters and buffers), evaluated instead of the
/// training weights and kept by the model at the end of a completed run.
///
/// After an optimizer step, every `update_interval` (at BatchEnd for batches, EpochEnd for epochs) once
/// `ema_start` is reached: W_ema ← s·W_ema + (1 − s)·W for every parameter and floating-point buffer (batch-norm
/// running statistics); integer buffers (num_batches_tracked) are copied. The first update after `ema_start`
/// starts the average as a copy of the weights. With half-life h and update interval u (in the same time, batches
/// when their units differ), s = 2^(−u/h) = exp(−ln 2 · u/h), so an update's weight halves every h of training.
/// An update with no optimizer step since the previous one (a step skipped by the loss scaler, or a batch dropped
/// by nonfinite_loss: skip) is skipped too: the weights did not move.
///
/// Evaluation runs on the averaged weights: they are copied into the model at EvalStart and the training weights,
/// kept aside, are copied back at EvalEnd (bit for bit). When the run completes (max_duration reached) the model
/// keeps the averaged weights from FitEnd on. Checkpoints hold the training weights as the model's and the
/// averaged ones as this algorithm's state, so a resumed run continues both exactly.
///
///     tessera::algorithms::EMA ema(tessera::algorithms::EMAOptions().half_life(tessera::Time::parse("50ba")));
///     tessera::algorithms::compute_ema(ema_copy, model->parameters(), 0.99);  // functional form
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>
#include <tessera/time.h>

namespace tessera::algorithms {

struct EMAOptions {
  TESSERA_OPTION(Time, half_life) = Time(1000, TimeUnit::Batch);
  TESSERA_OPTION(double, smoothing) = 0.0;
  TESSERA_OPTION(Time, ema_start) = Time::fraction(0.0);
  TESSERA_OPTION(Time, update_interval) = Time(0, TimeUnit::Batch);
  template <class V>
  void visit(V& v) {
    v("half_life", half_life_, "time for an update's weight in the average to halve (ba, ep, sp or dur; > 0)", Any{});
    v("smoothing", smoothing_, "the decay s per update, given directly instead of half_life (0: from half_life)",
      Range::closed_open(0, 1));
    v("ema_start", ema_start_, "when averaging starts (a Time; the average starts as a copy of the weights)", Any{});
    v("update_interval", update_interval_,
      "time between updates, in ba or ep (0: one unit of half_life's unit: 1ep for ep, else 1ba)", Any{});
  }
};

/// Checks what the ranges in `visit` cannot say (units, a positive half-life, half_life and smoothing not both
/// given); InputError "<where>.<option>: ..." naming the option and what is allowed.
void check_ema_options(const EMAOptions& options, const std::string& where = "ema");

/// The update interval in use: `update_interval`, or for 0 one unit of half_life's unit (1ep when half_life is
/// in epochs, 1ba otherwise).
Time ema_update_interval(const EMAOptions& options);

/// The decay per update: `smoothing` when given, else 2^(−u/h) with u the update interval and h the half-life.
/// Same units need no run (`time` may be null); different units are converted to batches with `time` (an
/// InputError naming half_life when it is needed and null).
double ema_smoothing(const EMAOptions& options, const TimeContext* time = nullptr);

/// Functional form: ema ← s·ema + (1 − s)·current, in place, for every floating-point pair (one multi-tensor
/// multiply and one multi-tensor add per dtype and device, no host synchronisation); other dtypes (integer
/// buffers) are copied. `ema` and `current` pair up by position and must match in shape, dtype and device
/// (InputError naming the first pair that does not); `smoothing` in [0, 1].
void compute_ema(const std::vector<at::Tensor>& ema, const std::vector<at::Tensor>& current, double smoothing);

/// The same on named tensors, matched by name (InputError naming one that the other list lacks): `averages`
/// follow `weights`. The module form below and Python's tessera.functional.compute_ema use it.
void compute_ema_by_name(const std::vector<std::pair<std::string, at::Tensor>>& weights,
                         const std::vector<std::pair<std::string, at::Tensor>>& averages, double smoothing);

/// The same on modules, as Composer's compute_ema(model, ema_model, smoothing): `ema_model` (a copy of `model`,
/// e.g. from clone()) averages `model`'s parameters and buffers, matched by name (InputError naming a missing or
/// extra one).
void compute_ema(torch::nn::Module& model, torch::nn::Module& ema_model, double smoothing);

/// The tensors EMA and SWA average: the model's defined parameters ("param/<name>") then buffers
/// ("buffer/<name>"), in its order.
std::vector<std::pair<std::string, at::Tensor>> averaged_weights(torch::nn::Module& model);

/// The model's averaged_weights() as tensors, checked against the names and layouts `averages` were started on
/// (aligned with `names`): an Error naming `who` when the model changed since (surgery after averaging started).
std::vector<at::Tensor> weights_matching(torch::nn::Module& model, const std::vector<std::string>& names,
                                         const std::vector<at::Tensor>& averages, const std::string& who);

/// The algorithm (recipe name "ema").
class EMA : public Algorithm {
 public:
  explicit EMA(EMAOptions options = EMAOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  bool match(Event event, const State& state) const override;
  void apply(Event event, State& state, Logger& logger) override;
  /// Units against the run (a half-life in epochs with a batch update interval needs the batches per epoch).
  void check(const State& state) const override;
  /// "started" (0/1), "steps_at_update" (the optimizer's step count at the last update), "param/<name>" and
  /// "buffer/<name>" (the averages), and "training/<name>" for each parameter and buffer while the model holds
  /// the averaged weights (a checkpoint written after fit or during an evaluation).
  StateDict state_dict() const override;
  /// Keeps a state_dict() to restore; it is matched against the model at the next AfterLoad (an InputError naming
  /// a missing or mismatched entry).
  void load_state_dict(const StateDict& state) override;

  /// Whether averaging has started (ema_start reached and a first update made).
  bool started() const noexcept { return started_; }
  /// Whether the model holds the averaged weights now (during an evaluation, and after a completed fit).
  bool holds_averaged_weights() const noexcept { return !training_.empty(); }
  /// The averages by name, parameters ("param/<name>") then buffers ("buffer/<name>"); empty before the start.
  std::vector<std::pair<std::string, at::Tensor>> averages() const;
  /// Copies the averaged weights into `model` (the same parameter and buffer names), e.g. to keep them after a
  /// run that was stopped early. InputError before the start or for another model.
  void copy_averages_to(torch::nn::Module& model) const;
  const EMAOptions& options() const noexcept { return options_; }

 private:
  void update(State& state, Logger& logger);
  /// Copies the averages into the model, keeping the training weights aside (no-op when already in).
  void swap_in(torch::nn::Module& model);
  /// Copies the training weights back (no-op when they are in).
  void swap_out(torch::nn::Module& model);
  /// Matches a loaded state against the model after a checkpoint was loaded (names, shapes, devices).
  void after_load(State& state);

  EMAOptions options_;
  AlgorithmSpec spec_;
  Time interval_;
  bool started_ = false;
  int64_t steps_at_update_ = 0;
  std::vector<std::string> names_;   ///< "param/<name>" then "buffer/<name>", in the model's order
  std::vector<at::Tensor> ema_;      ///< the averages, aligned with names_
  std::vector<at::Tensor> training_;  ///< the training weights while the model holds the averages
  bool swapped_for_eval_ = false;     ///< the averages went in at EvalStart and go out at EvalEnd
  StateDict loaded_;                  ///< a loaded state_dict awaiting AfterLoad
};

}  // namespace tessera::algorithms
