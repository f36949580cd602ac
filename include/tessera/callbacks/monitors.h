#pragma once
/// Monitors: callbacks that measure the run and log what they measure (Composer's SpeedMonitor, LRMonitor,
/// OptimizerMonitor, MemoryMonitor and RuntimeEstimator, under the same metric names).
///
///     callbacks: [{speed_monitor: {window: 50}}, lr_monitor, {optimizer_monitor: {interval: 10}}, memory_monitor,
///                 runtime_estimator]
///
/// They only read: training is bitwise the same with or without them. Their values go to every logger destination
/// (the jsonl and csv files, tessera-report) through Logger::log_metrics. With several ranks, rank 0 measures and
/// logs (the other ranks have no logger destinations); its gradients and weights are every rank's.
#include <tessera/callback.h>
#include <tessera/evaluator.h>
#include <tessera/options.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tessera::callbacks {

/// Counts the floating-point operations of the matrix products (mm, addmm, bmm, baddbmm), convolutions (also
/// transposed) and fused attention kernels (scaled_dot_product_attention's flash, efficient and cuDNN ones) that this
/// thread runs while it lives: 2 per multiply-add, from the shapes, as torch's FLOP counter does. An op called from
/// inside a counted one (autocast calling mm again on the cast inputs, a convolution done with mm) is counted once.
/// Elementwise ops, normalisations and reductions are not counted. Counters nest: each counts what runs while it lives.
class FlopCounter {
 public:
  FlopCounter();
  ~FlopCounter();
  FlopCounter(const FlopCounter&) = delete;
  FlopCounter& operator=(const FlopCounter&) = delete;
  /// The FLOPs counted so far.
  double flops() const noexcept { return flops_; }

 private:
  friend struct FlopCounterAccess;
  double flops_ = 0;
  uint64_t handle_ = 0;            // the thread-local op observer (the outermost counter's)
  FlopCounter* outer_ = nullptr;   // the counter that was live on this thread when this one began
};

struct SpeedMonitorOptions {
  /// Batches the throughput is averaged over; nothing is logged before that many batches have run.
  TESSERA_OPTION(int64_t, window) = 100;
  /// Floating-point operations of one training sample (forward and backward); 0: no FLOP rates are logged, unless
  /// count_flops.
  TESSERA_OPTION(double, flops_per_sample) = 0;
  /// Count each batch's FLOPs as it trains (FlopCounter around each forward, the backward taken as twice it).
  TESSERA_OPTION(bool, count_flops) = false;
  /// Peak floating-point operations per second of one device, for the model FLOP utilisation; 0: not logged.
  TESSERA_OPTION(double, peak_flops) = 0;
  /// The unit of the time/* values.
  TESSERA_OPTION(std::string, time_unit) = "hours";
  template <class V>
  void visit(V& v) {
    v("window", window_, "batches the throughput is averaged over", Range::at_least(1));
    v("flops_per_sample", flops_per_sample_, "FLOPs of one training sample (forward and backward); 0: none",
      Range::at_least(0));
    v("count_flops", count_flops_, "count each batch's FLOPs (forward counted, backward taken as twice it)", Any{});
    v("peak_flops", peak_flops_, "peak FLOP/s of one device, for throughput/device/mfu; 0: none", Range::at_least(0));
    v("time_unit", time_unit_, "unit of time/train, time/eval and time/total",
      Choices{{"seconds", "minutes", "hours", "days"}});
  }
};

/// Throughput over the last `window` batches and the time spent training and evaluating ("speed_monitor" in
/// recipes). At each batch end, once `window` batches have run:
///   throughput/batches_per_sec, throughput/samples_per_sec (all ranks), throughput/device/batches_per_sec,
///   throughput/device/samples_per_sec (one rank's share), throughput/tokens_per_sec and
///   throughput/device/tokens_per_sec (when samples have tokens), throughput/flops_per_sec,
///   throughput/device/flops_per_sec (with flops_per_sample or count_flops), throughput/device/mfu (with peak_flops
///   too);
/// and at every batch end time/train (the timestamp's training time: data loading and the step, not evaluation or
/// checkpoints), time/eval (the evaluations' time) and time/total (their sum), in `time_unit`. A batch's time is the
/// trainer's (Timestamp::batch_wct, from asking for the batch to the end of its step). The evaluation time is kept
/// in the callback's state, so the times continue across a resume; the window starts afresh.
///
/// With count_flops, a FlopCounter runs around every training forward (each microbatch's, SAM's second pass's) on
/// rank 0, and a batch's FLOPs are three times its forward's (the backward of a matrix product or convolution
/// computes two of the same size: the input's and the weight's gradients). That follows batches whose size or shape
/// changes (progressive resizing, sequence-length warmup, selective backprop); throughput/flops_per_sec is rank 0's
/// count times the number of ranks. Forwards outside the training step (selective backprop's scoring, evaluation)
/// are not counted.
class SpeedMonitor : public Callback {
 public:
  explicit SpeedMonitor(SpeedMonitorOptions options = {});
  std::string name() const override { return "speed_monitor"; }
  void run_event(Event event, State& state, Logger& logger) override;
  /// "eval_seconds": the evaluations' time so far.
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  struct Step {
    int64_t samples = 0, tokens = 0;
    double seconds = 0;
    double flops = 0;  // counted (count_flops), rank 0's
  };
  SpeedMonitorOptions options_;
  double unit_seconds_ = 3600;
  std::deque<Step> window_;
  int64_t sample_at_start_ = 0, token_at_start_ = 0;  // the counters when the current batch started
  std::unique_ptr<FlopCounter> counter_;                // during a training forward, with count_flops
  double batch_flops_ = 0;                              // the current batch's forwards so far
  double eval_seconds_ = 0;
  std::chrono::steady_clock::time_point eval_start_{};
  bool in_eval_ = false;
};

/// The options of lr_monitor and memory_monitor.
struct IntervalOptions {
  /// Logs every this many batches (at batch 0, interval, 2·interval, ...).
  TESSERA_OPTION(int64_t, interval) = 1;
  template <class V>
  void visit(V& v) {
    v("interval", interval_, "batches between two logged values", Range::at_least(1));
  }
};
using LrMonitorOptions = IntervalOptions;

/// The learning rate of every parameter group ("lr_monitor" in recipes): lr-<optimizer>/group<i> (lr-sgd/group0,
/// lr-adamw/group1, ...), logged at batch start, when the schedulers have set the rate this batch uses; with a
/// schedule that sets the momentum (onecycle's cycle_momentum) also that momentum: momentum-<optimizer> or
/// beta1-<optimizer> (momentum-sgd, beta1-adamw).
class LrMonitor : public Callback {
 public:
  explicit LrMonitor(LrMonitorOptions options = {});
  std::string name() const override { return "lr_monitor"; }
  void run_event(Event event, State& state, Logger& logger) override;

 private:
  LrMonitorOptions options_;
};

struct OptimizerMonitorOptions {
  /// Logs every this many batches (at batch 0, interval, 2·interval, ...).
  TESSERA_OPTION(int64_t, interval) = 10;
  /// Also each parameter's norms, under its name in the model; otherwise only the global ones.
  TESSERA_OPTION(bool, per_parameter) = true;
  template <class V>
  void visit(V& v) {
    v("interval", interval_, "batches between two logged values", Range::at_least(1));
    v("per_parameter", per_parameter_, "also each parameter's norms (by its name in the model)", Any{});
  }
};

/// L2 norms of the gradients and the weights ("optimizer_monitor" in recipes), at after_train_batch: after the
/// algorithms there (gradient clipping, SAM's second pass), so the gradients are the ones the optimizer step takes,
/// unscaled by the loss scaler and averaged over the ranks. Logged: l2_norm/grad/global and l2_norm/param/global (the
/// norm of all of them together, as torch's clip_grad_norm_ computes it), and with per_parameter
/// l2_norm/grad/<name> and l2_norm/param/<name> for each parameter the optimizer updates. Parameters without a
/// gradient (frozen ones) are left out. The norms are computed on the device and read back once per logged batch.
class OptimizerMonitor : public Callback {
 public:
  explicit OptimizerMonitor(OptimizerMonitorOptions options = {});
  std::string name() const override { return "optimizer_monitor"; }
  void run_event(Event event, State& state, Logger& logger) override;

 private:
  OptimizerMonitorOptions options_;
};

using MemoryMonitorOptions = IntervalOptions;

/// Memory in use ("memory_monitor" in recipes), at after_train_batch, in GB (10^9 bytes) as Composer's: on a CUDA
/// device the caching allocator's memory/current_allocated_mem, memory/peak_allocated_mem,
/// memory/current_reserved_mem, memory/peak_reserved_mem (peaks since the process started) and memory/alloc_retries
/// (cudaMalloc retries after freeing the cache: a sign of fragmentation or a batch close to the limit); on every
/// device the process's memory/host_rss_mem and memory/host_peak_rss_mem (resident set, as the kernel counts it).
class MemoryMonitor : public Callback {
 public:
  explicit MemoryMonitor(MemoryMonitorOptions options = {});
  std::string name() const override { return "memory_monitor"; }
  void run_event(Event event, State& state, Logger& logger) override;

 private:
  MemoryMonitorOptions options_;
};

struct RuntimeEstimatorOptions {
  /// Batches of each run (process) whose time the estimate leaves out: the first ones pay for warm-up (allocations,
  /// kernel selection, a data cache filling).
  TESSERA_OPTION(int64_t, skip_batches) = 1;
  /// The unit of the estimate.
  TESSERA_OPTION(std::string, time_unit) = "hours";
  template <class V>
  void visit(V& v) {
    v("skip_batches", skip_batches_, "batches of each run left out of the estimate (warm-up)", Range::at_least(0));
    v("time_unit", time_unit_, "unit of wall_clock/remaining_estimate", Choices{{"seconds", "minutes", "hours", "days"}});
  }
};

/// Times each evaluation of this process (EvalStart to EvalEnd) by evaluator label, and from those the time the
/// run's evaluations still to come will take: for each evaluator, the evaluations it has left (evaluations_left)
/// times the mean time of its evaluations so far (the first one left out once there are more: it pays for warm-up
/// too); an evaluator that has not run yet adds nothing until it has. Used by runtime_estimator and the progress
/// bar's ETA.
class EvaluationClock {
 public:
  /// Notes EvalStart and EvalEnd; other events are ignored.
  void run_event(Event event, const State& state);
  /// Seconds the evaluations left after the batch end of state.timestamp will take, as measured so far.
  double seconds_left(const State& state) const;
  /// Each evaluator's evaluation times so far, by label.
  std::map<std::string, std::vector<double>>& runs() noexcept { return runs_; }
  const std::map<std::string, std::vector<double>>& runs() const noexcept { return runs_; }

 private:
  std::map<std::string, std::vector<double>> runs_;
  std::chrono::steady_clock::time_point start_{};
  bool running_ = false;
};

/// How long the run has left ("runtime_estimator" in recipes; Composer's RuntimeEstimator): at each batch end after
/// the first `skip_batches` of the run, wall_clock/remaining_estimate = the mean time of this run's batches since
/// then (Timestamp::batch_wct: data loading and the step) times the batches left to max_duration, plus for each
/// evaluator the evaluations it has left (evaluations_left) times the mean time of its evaluations so far (the first
/// one left out once there are more: it pays for warm-up too); an evaluator that has not run yet adds nothing until it
/// has. The evaluations' times are kept in the callback's state, so a resumed run knows them. Batches whose cost
/// changes over the run (progressive resizing, sequence-length warmup) make the early estimates low.
class RuntimeEstimator : public Callback {
 public:
  explicit RuntimeEstimator(RuntimeEstimatorOptions options = {});
  std::string name() const override { return "runtime_estimator"; }
  void run_event(Event event, State& state, Logger& logger) override;
  /// "eval_seconds/<label>": each evaluator's evaluation times so far (float64 [runs]).
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  RuntimeEstimatorOptions options_;
  double unit_seconds_ = 3600;
  int64_t batches_seen_ = 0;  // this run's batches
  int64_t batches_timed_ = 0;
  double seconds_timed_ = 0;
  EvaluationClock evaluations_;
};

/// How many more times `evaluator` runs in a run of `time`, counted at the batch end of `now` (an evaluation due at
/// this batch end, or at the epoch end it closes, is still to come): one per multiple of its interval up to
/// max_duration, plus the one at the end of fit when the last batch is not such a multiple (interval 0: only that).
int64_t evaluations_left(const Evaluator& evaluator, const Timestamp& now, const TimeContext& time);

/// The process's resident memory now and at its peak, in bytes (Linux: /proc/self/statm and getrusage).
struct HostMemory {
  int64_t rss_bytes = 0;
  int64_t peak_rss_bytes = 0;
};
HostMemory host_memory();

}  // namespace tessera::callbacks
