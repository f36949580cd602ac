#pragma once
/// The Trainer: the training loop of reference §1.2 with every event in its place.
///
///     tessera::Trainer trainer(tessera::TrainerOptions().max_duration(tessera::Time::parse("2ep")),
///                              {model, train_loader, optimizer, schedulers, algorithms, callbacks, evaluators});
///     trainer.fit();
#include <tessera/algorithm.h>
#include <tessera/callback.h>
#include <tessera/checkpoint.h>
#include <tessera/data/dataloader.h>
#include <tessera/device.h>
#include <tessera/distributed/comm.h>
#include <tessera/engine.h>
#include <tessera/evaluator.h>
#include <tessera/grad_scaler.h>
#include <tessera/microbatching.h>
#include <tessera/options.h>
#include <tessera/profiler.h>
#include <tessera/state.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tessera {

namespace checkpoint { struct File; }  // the parsed file (src/checkpoint/checkpoint_file.h)
namespace dist { class DataParallel; }  // src/distributed/data_parallel.h
class Profiler;                          // src/profiler.h
struct Run;                              // registry.h

struct TrainerOptions {
  TESSERA_OPTION(Time, max_duration) = Time(1, TimeUnit::Epoch);
  /// Composer's scale schedule: training lasts max_duration × ratio (in batches when whole epochs would not be exact:
  /// 2ep × 0.75 is 1.5 epochs of batches; truncated to whole batches, samples or tokens) and every scheduler time but
  /// the warmups is scaled by the ratio (times in dur follow the scaled max_duration). 0.5 trains half as long on the same schedule compressed; evaluation and checkpoint intervals
  /// and the algorithms' own times are not scaled.
  TESSERA_OPTION(double, scale_schedule_ratio) = 1.0;
  /// Composer's trainer argument: true sets the lr from the schedulers before every batch; false only as each
  /// epoch starts (the schedules evaluated at the epoch's first batch, as torch's schedulers stepped once per
  /// epoch), so the lr holds through the epoch.
  TESSERA_OPTION(bool, step_schedulers_every_batch) = true;
  /// Examples per microbatch for gradient accumulation (0 = the whole batch at once), or
  /// MicrobatchSize::automatic() ("auto": halve on out-of-memory errors, see microbatching.h).
  TESSERA_OPTION(MicrobatchSize, microbatch_size) = 0;
  TESSERA_OPTION(int64_t, seed) = 42;
  /// Intra-op threads (0 = this rank's share of the cores the process may use: default_threads()).
  TESSERA_OPTION(int64_t, threads) = 0;
  /// Default interval of evaluators that do not set their own.
  TESSERA_OPTION(Time, eval_interval) = Time(1, TimeUnit::Epoch);
  /// Use deterministic kernels (on CUDA: cuDNN/cuBLAS settings too).
  TESSERA_OPTION(bool, deterministic) = false;
  /// "fp32", "amp_bf16" (CPU, CUDA) or "amp_fp16" (CUDA): autocast around the forward and the loss (amp.h).
  TESSERA_OPTION(std::string, precision) = "fp32";
  /// Precision of the evaluation forward: "fp32" (no autocast, whatever `precision` trains in), or "amp_bf16" /
  /// "amp_fp16": autocast around each evaluation forward, as Composer evaluates in its training precision.
  /// Metrics accumulate in float32 or wider either way.
  TESSERA_OPTION(std::string, eval_precision) = "fp32";
  /// Dynamic loss scaling (GradScaler, grad_scaler.h): "auto" = on for amp_fp16 only; "dynamic" = on for any
  /// precision; "none" = off (amp_fp16 then risks gradients that underflow to zero).
  TESSERA_OPTION(std::string, loss_scaling) = "auto";
  /// Folder for metrics files and (later) checkpoints.
  TESSERA_OPTION(std::string, run_dir) = "runs/tessera";
  /// Log train metrics every N batches (the loss is logged every batch).
  TESSERA_OPTION(int64_t, log_interval) = 1;
  /// What a non-finite (NaN/Inf) training loss does: "error" stops the run naming the batch (the last good
  /// checkpoint is kept); "skip" drops that batch's update, counts it and logs it.
  TESSERA_OPTION(std::string, nonfinite_loss) = "error";
  /// Where to train: "cpu", "cuda" (= cuda:0), "cuda:N" or "auto" (cuda:0 when a CUDA device is visible, else
  /// the CPU). The trainer moves the model, every batch and the metrics there; asking for CUDA where there is
  /// none is an InputError before step 1. On CUDA, values are read back to the host only at log intervals,
  /// checkpoints, evaluations and the end (docs/recipes.md, "Devices").
  TESSERA_OPTION(std::string, device) = "auto";
  /// Traces of chosen batches (data loading, forward, backward, step, every event, algorithm and callback, and
  /// the torch operators) as Chrome trace files in run_dir/traces (profiler.h; docs/recipes.md, "Profiling").
  TESSERA_OPTION(ProfilerOptions, profiler);
  template <class V>
  void visit(V& v) {
    v("max_duration", max_duration_, "length of training (ep, ba or sp)", Any{});
    v("scale_schedule_ratio", scale_schedule_ratio_, "scales max_duration and the schedulers' times (not warmups)",
      Range::positive());
    v("step_schedulers_every_batch", step_schedulers_every_batch_,
      "set the lr before every batch (true) or once per epoch, at its first batch (false)", Any{});
    v("microbatch_size", microbatch_size_, "examples per microbatch (0 = whole batch, auto = halve on out-of-memory)",
      Any{});
    v("seed", seed_, "run seed", Range::closed(0, 4294967295.0));
    v("threads", threads_, "intra-op threads (0 = this rank's share of the cores the process may use)",
      Range::closed(0, 1024));
    v("eval_interval", eval_interval_, "default evaluation interval", Any{});
    v("deterministic", deterministic_, "deterministic kernels", Any{});
    v("precision", precision_, "numeric precision of the forward and the loss", Choices{{"fp32", "amp_bf16", "amp_fp16"}});
    v("eval_precision", eval_precision_, "numeric precision of the evaluation forward",
      Choices{{"fp32", "amp_bf16", "amp_fp16"}});
    v("loss_scaling", loss_scaling_, "dynamic loss scaling: auto (amp_fp16 only), dynamic or none",
      Choices{{"auto", "dynamic", "none"}});
    v("run_dir", run_dir_, "folder for metrics and checkpoints", Any{});
    v("log_interval", log_interval_, "batches between train-metric logs", Range::at_least(1));
    v("nonfinite_loss", nonfinite_loss_, "on a NaN/Inf loss: error, or skip the batch", Choices{{"error", "skip"}});
    // Checked by resolve_device (device.h): by the Trainer, and by build_run with the recipe's line:column.
    v("device", device_, "where to train: cpu, cuda, cuda:N or auto", Any{});
    v("profiler", profiler_, "traces of chosen batches (a recipe's profiler section turns it on)", Any{});
  }
};

/// The parts of a run.
struct Components {
  std::shared_ptr<Model> model;
  /// Tessera's DataLoader, or any other data::BatchSource (the Python adapters).
  std::shared_ptr<data::BatchSource> train_dataloader;
  std::shared_ptr<optim::Optimizer> optimizer;
  std::vector<std::shared_ptr<optim::Scheduler>> schedulers;
  std::vector<std::shared_ptr<Algorithm>> algorithms;
  std::vector<std::shared_ptr<Callback>> callbacks;
  std::vector<Evaluator> evaluators;
  /// Metrics computed on training batches (default: accuracy).
  std::vector<std::shared_ptr<Metric>> train_metrics;
  /// Data-parallel training (docs/distributed.md): a process group, or none to let the Trainer make one when
  /// the environment describes several ranks (torchrun, tessera-run --nproc, srun); and its settings.
  std::shared_ptr<dist::Comm> comm;
  dist::DistributedOptions distributed;
};

/// Thrown by Trainer::fit when a stop signal (SIGTERM, SIGINT) ended training after the current batch (and
/// after writing a checkpoint when a checkpoint folder is set). `tessera-run` exits with 128 + signal.
class Interrupted : public Error {
 public:
  Interrupted(int signal, const std::string& message) : Error(message), signal_(signal) {}
  int signal() const noexcept { return signal_; }

 private:
  int signal_;
};

class Trainer {
 public:
  /// Validates the options and resolves the device (CUDA asked for where there is none: InputError), checks the
  /// parts against each other (the optimizer holds the model's trainable parameters, the model's class count fits
  /// the data's, autoresume has a folder: InputError otherwise), seeds torch's generators and the algorithms' from
  /// `seed` for what happens from here on (data order, dropout, algorithms' draws; a model already built keeps its
  /// weights: seed before building it with seed_everything(seed) for reproducible initial weights), compiles the
  /// plan (refused combinations and algorithms' plan-time checks throw InputError here), fires Init (model
  /// surgery happens there, on the model where the caller built it), moves the model to the device (in place:
  /// the optimizer's parameters stay the same tensors), then BeforeLoad, loads a checkpoint when `checkpoint`
  /// asks for one (autoresume: the newest valid one in its folder; else load_path; tensors are mapped to the
  /// device), and AfterLoad. With a checkpoint folder, fit() saves every `checkpoint.interval`, at the end, and
  /// on a stop signal. `recipe_text` (the recipe as run, when the run comes from one) is logged at Init as the run's
  /// hyperparameters (its values by path) and stored in checkpoints; autoresume compares it with the checkpoint's
  /// and refuses a recipe that changed what trains (CheckpointOptions::resume_changed_recipe). When a step from Init
  /// on throws, the callbacks (opened at Init) are closed before the exception leaves.
  Trainer(TrainerOptions options, Components components, CheckpointOptions checkpoint = {}, std::string recipe_text = "");
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Trains until max_duration (or stop_training()). When fit() throws (a bad loss, an error in a plugin, a
  /// stop signal), the trainer is done: fit, evaluate, save_checkpoint and load_checkpoint then throw an Error
  /// naming the failure, since the state may be in the middle of a batch; a new Trainer with autoresume
  /// continues from the last checkpoint.
  void fit();
  /// Trains until `until` (a time of the run: `3ba`, `1ep`, `0.5dur`; at most max_duration) and returns there, at
  /// that batch's end (its evaluations and checkpoints done), with the run paused: no IterationEnd, final evaluation
  /// or FitEnd. The next fit() or fit(until) continues the same run without firing FitStart again, so a run trained in
  /// parts takes the steps of the run in one go (its weights bitwise). While paused, evaluate, predict and
  /// save_checkpoint may be called. An `until` already reached, or past max_duration, is an InputError.
  void fit(const Time& until);
  /// Runs every evaluator once (EvalStandaloneStart/End) and returns "metrics/<label>/<name>" values. Not while
  /// fit() runs (evaluators run at their intervals there): InputError.
  std::map<std::string, double> evaluate();
  /// The model's outputs for each batch of `data` (a data::DataLoader or any data::BatchSource; targets are not
  /// needed), in order, detached and on the CPU; at most `subset_batches` batches when it is >= 0. The predict_*
  /// events fire (PredictStart; per batch PredictBatchStart, PredictBeforeForward, PredictAfterForward,
  /// PredictBatchEnd; PredictEnd), the forward runs in evaluation mode without gradients and in eval_precision, and
  /// the model's mode is restored. After a fit the model holds what fit left (EMA's or SWA's averages). Not while
  /// fit() runs: InputError. With several ranks each rank predicts what its `data` gives it. A stop signal ends it
  /// at a batch boundary with Interrupted.
  std::vector<at::Tensor> predict(data::BatchSource& data, int64_t subset_batches = -1);

  /// Writes the whole run state to `path` atomically. Only at a batch boundary: before or after fit(), or from
  /// a callback at batch_end, batch_checkpoint, epoch_end, epoch_checkpoint or fit_end; anywhere inside a batch
  /// (after_dataloader ... after_train_batch) it throws InputError, as does a call from another thread while
  /// fit() runs. Tensors are written from the CPU whatever the device, so a file written on CUDA loads on a
  /// CPU-only machine.
  void save_checkpoint(const std::string& path) const;
  /// Writes the model's parameters and buffers, by name, to `path` as a safetensors file (include/tessera/
  /// safetensors.h) atomically, for programs that read Hugging Face's format (`safetensors.torch.load_file`). The
  /// weights as they are now: after a completed run with ema or swa, the averages. Metadata: format "pt", producer,
  /// epoch and batch. When save_checkpoint may be called.
  void export_weights(const std::string& path) const;
  /// Fires BeforeLoad, loads `path` (a checkpoint file, or a run's checkpoint folder: its newest valid checkpoint)
  /// and fires AfterLoad. Not while fit() runs (InputError: loading would rewind the run under the running loop).
  /// Everything (weights, optimizer, time, generators,
  /// algorithm and callback state, data position) unless `weights_only`; `strict` refuses parameter names or
  /// shapes that differ from the model's. CheckpointError when the file is invalid; InputError when it does
  /// not fit this run (other model, optimizer, algorithms or data size). A `.safetensors` file holds weights alone
  /// (export_weights, or another program's): it loads with `weights_only`, floating-point weights converted to the
  /// model's dtype.
  void load_checkpoint(const std::string& path, bool weights_only = false, bool strict = true);
  /// The checkpoint this trainer resumed from or loaded ("" = none).
  const std::string& loaded_checkpoint() const noexcept { return loaded_checkpoint_; }
  /// The last checkpoint this trainer wrote ("" = none).
  const std::string& last_checkpoint() const noexcept { return last_checkpoint_; }
  const CheckpointOptions& checkpoint_options() const noexcept { return checkpoint_; }
  /// The recipe text stored in checkpoints' metadata (give it to the constructor instead for autoresume to
  /// compare it with the checkpoint's).
  void set_recipe_text(std::string text) { recipe_text_ = std::move(text); }
  /// Training batches whose update was dropped because their loss was not finite (nonfinite_loss: skip).
  int64_t skipped_batches() const noexcept { return skipped_batches_; }
  /// Optimizer steps the loss scaler skipped because a gradient was inf/NaN (the batch still counts in time).
  int64_t skipped_steps() const noexcept { return skipped_steps_; }
  /// The loss scaler (precision amp_fp16, or loss_scaling: dynamic); nullptr when there is none.
  const GradScaler* grad_scaler() const noexcept { return scaler_.get(); }
  /// The trace files the profiler wrote so far (TrainerOptions::profiler), in order; empty without it.
  std::vector<std::string> traces() const;
  /// The same windows with where their batches went (also in run.json's profiler_windows).
  std::vector<ProfiledWindow> profiled_windows() const;

  State& state() noexcept { return state_; }
  const State& state() const noexcept { return state_; }
  const Plan& plan() const noexcept { return engine_->plan(); }
  const Trace& trace() const noexcept { return engine_->trace(); }
  Engine& engine() noexcept { return *engine_; }
  const TrainerOptions& options() const noexcept { return options_; }

 private:
  /// make_trainer's two steps (registry.h): the constructor up to the plan, then start() (Init and what follows).
  friend void make_trainer(Run run, const std::string& recipe_text, std::unique_ptr<Trainer>& out);
  struct BeforeInit {};
  Trainer(BeforeInit, TrainerOptions options, Components components, CheckpointOptions checkpoint,
          std::string recipe_text);
  /// Init, the model to its device, BeforeLoad, the checkpoint, AfterLoad: the constructor's second step. When it
  /// throws, the callbacks are closed first.
  void start();
  void initialize();  ///< start()'s steps

  void train_batch();
  /// The model's loss terms of a training batch (Model::loss_terms; undefined when every example is one) and
  /// their sum over every rank (a collective), counted once per batch.
  struct LossTerms {
    at::Tensor per_example, global;
    bool counted = false;
  };
  LossTerms count_loss_terms(const Batch& full);
  /// The forward, loss and backward of every microbatch of `full`; the summed loss, each microbatch's weighted by
  /// its share of the global batch's terms (loss_term_weights) or, without terms, of its examples. Counts `terms`
  /// after the first microbatch's loss when the batch has several parts (microbatches or ranks), if not counted
  /// yet (a user's model knows from its first outputs whether the loss is its own).
  at::Tensor run_microbatches(const Batch& full, LossTerms& terms, bool log_now, bool skip_nonfinite, bool& finite);
  /// After a pass over every microbatch: the gradients averaged over the ranks (and the loss scaler's overflow
  /// record agreed on), the loss averaged over the ranks, and the decision on a non-finite loss (`finite`; an
  /// error for nonfinite_loss: error). Returns the loss on the host where it was read (immediate path, or a
  /// non-finite one), else 0.
  double finish_pass(at::Tensor& loss_sum, bool skip_nonfinite, bool& finite);
  void run_evaluators(Event event);
  /// One run of the evaluator s.evaluators[index] (its label, metrics, events).
  void eval_loop(size_t index);
  /// fit() (`until` null) and fit(until).
  void run_fit(const Time* until);
  /// The batches of `data` (at most `limit`; < 0: all) through the model without gradients and in eval_precision:
  /// per batch, the four `events` (batch start, before forward, after forward, batch end) with `use` after the third.
  /// Stops early at a stop signal (without several ranks: they stop at a training batch boundary). Returns the
  /// number of batches run. The caller puts the model in evaluation mode and restores the batch.
  int64_t forward_batches(data::BatchSource& data, int64_t limit, const std::array<Event, 4>& events,
                          const std::function<void()>& use);
  bool eval_due(const Evaluator& evaluator, Event event) const;
  void update_learning_rate();
  /// Moves the model (and any optimizer state) to state_.device; nothing when it is there already.
  void move_model_to_device();
  /// The deferred path (CUDA): reads the last batch's loss into metrics["loss/train/total"] and throws the
  /// error of nonfinite_loss: error when a non-finite loss was recorded since the last read. No-op when
  /// nothing is pending (and always on the immediate path).
  void read_back();
  /// The error for a non-finite loss at `batch` (detected at the current batch when that is later).
  Error nonfinite_error(int64_t batch, double loss) const;
  /// Resolves `checkpoint_` (autoresume, load_path) and loads, between BeforeLoad and AfterLoad.
  void load_initial_checkpoint();
  /// Autoresume: refuses (or reports) differences between the checkpoint's recipe and this run's.
  void check_recipe_changes(const checkpoint::File& file, const std::string& path);
  /// Loads a checkpoint already read (and verified) from `path`.
  void apply_checkpoint(const checkpoint::File& file, const std::string& path, bool weights_only, bool strict);
  /// Saves into the checkpoint folder when `event` (BatchCheckpoint, EpochCheckpoint, FitEnd or a stop)
  /// calls for it; prunes to `keep`.
  void checkpoint_if_due(Event event, bool force = false);
  /// Data-parallel: the torch generator states of ranks 1.. (a collective), keyed as in checkpoints.
  std::map<std::string, at::Tensor> gather_rank_generators();
  /// Throws Interrupted (after saving) when a stop signal arrived.
  void stop_if_signalled();
  /// Writes run_dir/run.json (src/run_summary.cpp) with `status` ("complete", "stopped", "interrupted",
  /// "failed"); a failure to write it is a warning.
  void write_run_summary(const std::string& status) const noexcept;
  /// Throws when `what` cannot be done now: after a failed fit(), or (`during_fit`: "refused"/"boundary") while
  /// fit() runs.
  enum class DuringFit { Refused, AtBoundary };
  void check_callable(const char* what, DuringFit during_fit) const;
  /// How the user sets checkpoint option `option` to `value` in the API they called: load_checkpoint's argument,
  /// the recipe's `checkpoint.<option>` (tessera-run), or the Trainer's CheckpointOptions.
  std::string how_to_set(const std::string& option, const std::string& value) const;

  TrainerOptions options_;
  State state_;
  std::vector<std::shared_ptr<Metric>> train_metrics_;
  std::unique_ptr<Engine> engine_;
  Timestamp previous_timestamp_;
  std::vector<int64_t> last_eval_batch_;  ///< per evaluator, the batch of its last run (-1 = never)
  CheckpointOptions checkpoint_;
  std::string recipe_text_;
  std::string loaded_checkpoint_;
  bool loaded_weights_only_ =
      false;  ///< loaded_checkpoint_ gave the weights alone (its state is not this run's)
  std::string last_checkpoint_;
  /// The event whose evaluations run_evaluators is running (a checkpoint a stop signal forces then records
  /// it).
  std::optional<Event> evaluating_;
  /// Loaded from a checkpoint forced during evaluations at this event: fit() first runs those not done.
  std::optional<Event> pending_evaluations_;
  bool paused_ = false;  ///< fit(until) returned before max_duration: the next fit continues without FitStart
  int64_t last_checkpoint_batch_ = -1;
  int64_t skipped_batches_ = 0;
  int64_t skipped_steps_ = 0;
  const int64_t oom_test_limit_ = injected_out_of_memory_limit();  ///< the test hook's limit (-1: off), read once
  std::unique_ptr<GradScaler> scaler_;
  Precision eval_precision_ = Precision::Fp32;  ///< options_.eval_precision, parsed and checked
  bool loading_by_call_ = false;      ///< inside load_checkpoint (for how_to_set)
  bool restored_generators_ = false;  ///< a full checkpoint set torch's generators: do not re-seed them
  /// Data-parallel: the other ranks' torch generator states ("generator/<device>@rank<r>"), gathered by every rank
  /// for the checkpoint rank 0 is writing (checkpoint_if_due), so that each rank resumes its own.
  std::map<std::string, at::Tensor> rank_generators_;
  std::atomic<bool> fitting_{false};  ///< fit() runs (read by calls from other threads)
  std::thread::id fit_thread_;        ///< the thread running fit()
  bool in_batch_ = false;             ///< between the data of a batch and the end of its step
  std::string failure_;               ///< what made fit() throw ("" = it did not)
  std::string load_failure_;          ///< what stopped a checkpoint load after it had changed the trainer
  bool interrupted_ = false;          ///< fit() was stopped by a signal (failure_ says which), at a batch boundary
  /// Deferred read-back (on CUDA, or forced by the test hook TESSERA_TEST_DEFERRED_READBACK=1): the loss and
  /// the train metrics stay on the device between log intervals; non-finite losses are tracked there.
  bool deferred_ = false;
  at::Tensor pending_loss_;      ///< deferred: the last batch's loss, not yet read back
  NonfiniteTracker nonfinite_;   ///< deferred, nonfinite_loss: error
  std::unique_ptr<dist::DataParallel> ddp_;  ///< more than one rank (docs/distributed.md); null otherwise
  std::unique_ptr<Profiler> profiler_;       ///< options_.profiler enabled; null otherwise
};

/// Installs SIGTERM and SIGINT handlers: the first signal asks every running Trainer to stop after its
/// current batch (writing a checkpoint when it has a folder) and to throw Interrupted; a second signal exits
/// the process at once with 128 + signal (the newest complete checkpoint stays intact: files are renamed
/// into place only when complete). tessera-run installs them; library users may.
void install_stop_signal_handlers();
/// The stop signal received (0 = none).
int stop_signal() noexcept;
/// Clears a received stop signal (tests; a process that handled it and wants to train again).
void clear_stop_signal() noexcept;

/// For its lifetime, the stop handler above on each of `signals` (SIGINT, SIGTERM), with any stop signal received
/// before cleared; at the end the handlers found are put back. The Python bindings hold one for each fit() and
/// evaluate() on the main thread, so that Ctrl-C and SIGTERM stop there as they do in tessera-run.
class StopSignalScope {
 public:
  explicit StopSignalScope(const std::vector<int>& signals);
  ~StopSignalScope();
  StopSignalScope(const StopSignalScope&) = delete;
  StopSignalScope& operator=(const StopSignalScope&) = delete;

 private:
  struct Saved;
  std::vector<std::unique_ptr<Saved>> saved_;
};

/// Sets intra-op threads (0 = default_threads()) and, when asked, deterministic algorithms, for the process.
/// (A Trainer applies its `threads` and `deterministic` only while its constructor, fit() and evaluate() run, and
/// puts back the previous settings when they return.) With glibc it also keeps
/// large freed blocks in the heap (mmap threshold 256 MB, trim threshold 1 GB): without that, every step
/// page-faults its activations in again. It also calls choose_blas_kernels().
void configure_runtime(int64_t threads, bool deterministic);
/// The cores this process may use: the CPUs of its affinity mask (which taskset, numactl, cpusets, SLURM and
/// container runtimes restrict), fewer when a cgroup CPU quota (cgroup v2 cpu.max, v1 cpu.cfs_quota_us) allows fewer
/// (its quota / period, rounded up); std::thread::hardware_concurrency() where neither can be read. At least 1.
int64_t available_cores();
/// What `threads: 0` means: the share of the available cores of one of `ranks_on_machine` ranks,
/// max(1, available_cores() / ranks_on_machine).
int64_t default_threads(int64_t ranks_on_machine = 1);
/// Where LibTorch's matrix products run on OpenBLAS (Debian's LibTorch) and OpenBLAS did not know the processor
/// model, it falls back to its generic SSE3 ("Prescott") kernels: 2.5x slower training of an MLP on an
/// AVX-512 Xeon that OpenBLAS 0.3.21 does not know (docs/results.md). This switches it, once per process, to the
/// AVX-512 ("SkylakeX") or AVX2 ("Haswell") kernels when the processor has them, and returns a one-line note
/// saying so ("" when nothing was changed: another BLAS, a processor OpenBLAS knows, or OPENBLAS_CORETYPE set by
/// the user, which always wins). Results stay deterministic on a machine; they differ in the last bits from
/// runs with the generic kernels. Call it before other threads run matrix products (the Trainer's constructor
/// does).
std::string choose_blas_kernels();
/// Seeds torch's generators (CPU and CUDA) from `seed`. Call it before building a model in C++ so that its initial
/// weights are a function of the seed (the Trainer cannot re-seed a model that already exists):
///
///     tessera::seed_everything(17);
///     auto model = std::make_shared<tessera::Classifier<Net>>(std::make_shared<Net>(), 10);  // same weights every run
///     tessera::Trainer trainer(tessera::TrainerOptions().seed(17), {model, ...});
void seed_everything(uint64_t seed);

}  // namespace tessera
