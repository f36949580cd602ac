#include <tessera/trainer.h>

#include <chrono>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <tessera/amp.h>
#include <tessera/error.h>

#include "checkpoint/checkpoint_file.h"
#include "checkpoint/checkpoint_folder.h"
#include "checkpoint/recipe_changes.h"
#include "distributed/data_parallel.h"
#include "profiler.h"
#include "retry_point.h"
#include "trainer_checks.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : std::string(strsignal(sig));
}

/// Per-rank seed derived from the run seed (rank 0 uses the run seed itself).
uint64_t rank_seed(uint64_t seed, int rank) { return seed + static_cast<uint64_t>(rank); }

/// Whether a batch/sample/duration interval `every` was crossed by the last batch (from `before` to `now`).
/// InputError naming `who` (only built then: this runs every batch) for units that cannot be used.
template <class Who>
bool interval_crossed(const Time& every, const Timestamp& before, const Timestamp& now, const TimeContext& time,
                      const Who& who) {
  if (every.unit() == TimeUnit::Epoch || every.unit() == TimeUnit::Token) {
    throw InputError(who() + ": interval " + every.str() + " is not supported; use ep, ba, sp or dur");
  }
  return tessera::interval_crossed(every, before, now, time);
}

/// max_duration scaled by scale_schedule_ratio: whole epochs when the product is whole, else batches (2ep x
/// 0.75 = 1.5 epochs of batches, where Composer would truncate to 1ep), truncated; InputError when nothing is
/// left. For an evaluation or a prediction: the model in eval mode and the training batch put aside, both put
/// back (and the evaluator's label cleared) by restore() or on the way out, an exception included.
class OutOfTraining {
 public:
  explicit OutOfTraining(State& s)
      : s_(s), was_training_(s.model->is_training()), saved_(std::move(s.batch)) {
    s.model->eval();
  }
  OutOfTraining(const OutOfTraining&) = delete;
  OutOfTraining& operator=(const OutOfTraining&) = delete;
  ~OutOfTraining() {
    try {
      restore();
    } catch (...) {  // (a Python module's train() raising on the way out of another exception)
    }
  }
  void restore() {
    if (restored_) return;
    restored_ = true;
    s_.eval_label.clear();
    s_.batch = std::move(saved_);
    if (was_training_) s_.model->train();
  }

 private:
  State& s_;
  bool was_training_;
  Batch saved_;
  bool restored_ = false;
};

/// Closes the callbacks on the way out of a failure, or in the destructor: a callback that fails to close is
/// reported on stderr rather than thrown over the exception in flight (or out of a destructor).
void close_callbacks_quietly(Engine& engine) noexcept {
  try {
    engine.close();
  } catch (const std::exception& e) {
    const std::string what = e.what();
    std::cerr << "tessera: warning: closing the callbacks failed: " << what.substr(0, what.find('\n'))
              << "\n";
  } catch (...) {
    std::cerr
        << "tessera: warning: closing the callbacks failed (an exception that is not a std::exception)\n";
  }
}

Time scaled_duration(const Time& max, double ratio, int64_t batches_per_epoch) {
  if (ratio == 1.0) return max;
  const double epochs = max.as_double() * ratio;
  std::ostringstream r;
  r << ratio;
  const double batches = epochs * static_cast<double>(batches_per_epoch);  // (for a max_duration in epochs)
  if (!((max.unit() == TimeUnit::Epoch ? batches : epochs) < 9e18)) {      // past what a counter holds
    throw InputError("trainer.scale_schedule_ratio: max_duration " + max.str() + " scaled by " + r.str() +
                     " is too long to count; expected a ratio that leaves a run of a countable length");
  }
  const Time scaled = max.unit() == TimeUnit::Epoch && epochs != std::floor(epochs)
                          ? Time(static_cast<int64_t>(batches), TimeUnit::Batch)
                          : max * ratio;
  if (scaled.as_double() <= 0) {
    throw InputError("trainer.scale_schedule_ratio: max_duration " + max.str() + " scaled by " + r.str() + " is " +
                     scaled.str() + "; expected a ratio that leaves a training longer than 0");
  }
  return scaled;
}

/// Every part of `batch` on `device` (host to GPU: pinned, then copied asynchronously).
Batch batch_to_device(const Batch& batch, c10::Device device) {
  Batch out;
  for (const auto& [key, t] : batch.parts()) out.set(key, to_device(t, device));
  return out;
}

}  // namespace

void configure_runtime(int64_t threads, bool deterministic) {
#if defined(__GLIBC__)
  // Activations of a training step are tens of MB; glibc serves such blocks with mmap and returns them to
  // the kernel on free, so every step page-faults its memory in again (measured: an evaluation pass 10x
  // slower). Keep blocks up to 256 MB in the heap and trim only above 1 GB of free memory.
  static const bool malloc_tuned = [] {
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)malloc_tuned;
#endif
  choose_blas_kernels();
  int64_t n = threads;
  if (n <= 0) n = default_threads();
  if (at::get_num_threads() != n) at::set_num_threads(static_cast<int>(n));
  at::globalContext().setDeterministicAlgorithms(deterministic, /*warn_only=*/false);
  if (deterministic) {
    // cuBLAS picks reduction orders per stream workspace unless told a fixed workspace; it reads this when
    // its first handle is created, so it must be set before any CUDA work (no-op on the CPU).
    ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    at::globalContext().setDeterministicCuDNN(true);
    at::globalContext().setBenchmarkCuDNN(false);
  }
}

void seed_everything(uint64_t seed) { at::manual_seed(seed); }

namespace {

/// The run's intra-op threads and deterministic settings for the life of the scope, and what was there before
/// afterwards: a Trainer changes them while it works (constructor, fit, evaluate), not for the rest of the
/// process (a Python session that trains, then runs its own code, gets its own settings back).
class RuntimeScope {
 public:
  RuntimeScope(int64_t threads, bool deterministic)
      : threads_(at::get_num_threads()),
        deterministic_(at::globalContext().deterministicAlgorithms()),
        warn_only_(at::globalContext().deterministicAlgorithmsWarnOnly()),
        deterministic_cudnn_(at::globalContext().deterministicCuDNN()),
        benchmark_cudnn_(at::globalContext().benchmarkCuDNN()) {
    configure_runtime(threads, deterministic);
  }
  ~RuntimeScope() {
    if (at::get_num_threads() != threads_) at::set_num_threads(threads_);
    at::globalContext().setDeterministicAlgorithms(deterministic_, warn_only_);
    at::globalContext().setDeterministicCuDNN(deterministic_cudnn_);
    at::globalContext().setBenchmarkCuDNN(benchmark_cudnn_);
  }
  RuntimeScope(const RuntimeScope&) = delete;
  RuntimeScope& operator=(const RuntimeScope&) = delete;

 private:
  int threads_;
  bool deterministic_, warn_only_, deterministic_cudnn_, benchmark_cudnn_;
};

}  // namespace

Trainer::Trainer(TrainerOptions options, Components components, CheckpointOptions checkpoint, std::string recipe_text)
    : Trainer(BeforeInit{}, std::move(options), std::move(components), std::move(checkpoint), std::move(recipe_text)) {
  start();  // when it throws, the destructor runs (this object is constructed)
}

Trainer::Trainer(BeforeInit, TrainerOptions options, Components components, CheckpointOptions checkpoint,
                 std::string recipe_text)
    : options_(std::move(options)),
      checkpoint_(resolve_against_run_dir(std::move(checkpoint), options_.run_dir())),
      recipe_text_(std::move(recipe_text)) {
  validate_options(checkpoint_, "checkpoint");
  detail::check_checkpoint_options(checkpoint_);
  if (!checkpoint_.folder().empty() && checkpoint_.interval().unit() == TimeUnit::Token) {
    throw InputError("checkpoint.interval: \"" + checkpoint_.interval().str() +
                     "\" is not supported; expected epochs, batches, samples or a duration (e.g. 1ep, 200ba)");
  }
  validate_options(options_, "trainer");
  // Before anything else happens: asking for CUDA where there is none fails here, before step 1.
  state_.device = resolve_device(options_.device());
  const char* hook = std::getenv("TESSERA_TEST_DEFERRED_READBACK");
  deferred_ = state_.device.is_cuda() || (hook != nullptr && std::string(hook) == "1");
  if (!components.model) throw InputError("trainer: no model given");
  if (!components.train_dataloader) throw InputError("trainer: no training data given");
  if (!components.optimizer) throw InputError("trainer: no optimizer given");
  const Time& given = options_.max_duration();
  const bool tokens_unknown = given.unit() == TimeUnit::Token && components.train_dataloader->tokens_per_example() <= 0;
  if (given.unit() == TimeUnit::Duration || tokens_unknown) {
    throw InputError("trainer.max_duration: \"" + given.str() +
                     "\" is not allowed; expected epochs, batches or samples (e.g. 10ep, 500ba, 60000sp)" +
                     (tokens_unknown ? ", or tokens when the training data is token sequences (it is not)" : ""));
  }
  if (given.as_double() <= 0) throw InputError("trainer.max_duration: must be > 0, got " + given.str());
  if (components.train_dataloader->num_batches() <= 0) {
    throw InputError("trainer: the training data yields no batches (" + components.train_dataloader->describe() + ")",
                     components.train_dataloader.get());
  }
  const Time max = scaled_duration(given, options_.scale_schedule_ratio(), components.train_dataloader->num_batches());

  // Several ranks (torchrun, tessera-run --nproc, srun): a process group now, so that a bad environment fails
  // before anything else; then each rank trains on its share of the data.
  ddp_ = dist::DataParallel::from(components, state_.device);
  if (ddp_) {
    state_.rank = ddp_->rank();
    state_.world_size = ddp_->world_size();
    ddp_->setup(components, components.evaluators);
    if (options_.threads() == 0) {  // "all cores" means this rank's share of them
      options_.threads(default_threads(ddp_->comm().environment().local_world_size));
    }
  }

  const RuntimeScope runtime(options_.threads(), options_.deterministic());
  state_.seed = static_cast<uint64_t>(options_.seed());
  seed_everything(rank_seed(state_.seed, state_.rank));
  state_.rng = Rng(rank_seed(state_.seed, state_.rank), {kAlgorithmStream});

  state_.model = std::move(components.model);
  state_.optimizer = std::move(components.optimizer);
  state_.schedulers = std::move(components.schedulers);
  state_.train_dataloader = std::move(components.train_dataloader);
  state_.evaluators = std::move(components.evaluators);
  for (const auto& ev : state_.evaluators) {
    if (!ev.dataloader) throw InputError("evaluator \"" + ev.label + "\": no data given");
  }
  state_.time.max_duration = max;
  state_.time.schedule_ratio = options_.scale_schedule_ratio();
  state_.time.batches_per_epoch = state_.train_dataloader->num_batches();
  state_.time.samples_per_epoch = state_.train_dataloader->num_samples();
  state_.time.tokens_per_sample = state_.train_dataloader->tokens_per_example();
  state_.microbatch_size = options_.microbatch_size().examples();
  state_.precision = parse_precision(options_.precision(), "trainer.precision");
  check_precision_supported(state_.precision, state_.device);
  eval_precision_ = parse_precision(options_.eval_precision(), "trainer.eval_precision");
  if (const std::string problem = precision_problem(eval_precision_, state_.device); !problem.empty()) {
    throw InputError("eval_precision: " + problem);
  }
  if (options_.loss_scaling() == "dynamic" || (options_.loss_scaling() == "auto" && state_.precision == Precision::AmpFp16)) {
    scaler_ = std::make_unique<GradScaler>(GradScalerOptions(), state_.device);
  }
  // A loss scaler unscales each microbatch's gradients as they come, and with microbatch_size auto a rank may
  // abandon a batch midway: the gradients are then averaged over the ranks after the last backward, not during it.
  if (ddp_) ddp_->set_sync_after_backward(scaler_ != nullptr || options_.microbatch_size().is_auto());
  train_metrics_ = std::move(components.train_metrics);
  if (train_metrics_.empty()) train_metrics_.push_back(std::make_shared<Accuracy>(1));
  for (auto& m : train_metrics_) {
    m->set_deferred(deferred_);
    state_.train_metric_names.push_back(m->name());
  }
  for (auto& ev : state_.evaluators) {
    for (auto& m : ev.metrics) m->set_deferred(deferred_);
  }

  // The parts against each other, before the plan and before Init (so before any surgery).
  detail::check_optimizer_matches_model(*state_.model, *state_.optimizer);
  detail::check_class_counts(*state_.model, *state_.train_dataloader);
  detail::check_evaluators(*state_.model, state_.evaluators);
  if (ddp_ || options_.microbatch_size().is_auto() || state_.microbatch_size > 0) {
    detail::check_loss_terms_of_example(*state_.model, *state_.train_dataloader);
  }
  for (size_t i = 0; i < state_.schedulers.size(); ++i) {
    // The schedules against the run's length (a horizon that ends before its warmup): errors now, not at step 1.
    try {
      state_.schedulers[i]->check(state_.time);
    } catch (const InputError& e) {
      throw e.with_context("schedulers[" + std::to_string(i) + "] (" + state_.schedulers[i]->name() + ")",
                           state_.schedulers[i].get());
    }
  }
  detail::check_momentum_schedules(state_.schedulers, *state_.optimizer);

  if (options_.profiler().enabled()) {
    const std::filesystem::path folder(options_.profiler().folder());
    profiler_ = std::make_unique<Profiler>(
        options_.profiler(),
        folder.is_absolute() || options_.run_dir().empty() ? folder.string() : (std::filesystem::path(options_.run_dir()) / folder).string(),
        state_.rank, state_.world_size, state_.device);
  }
  engine_ = std::make_unique<Engine>(std::move(components.algorithms), std::move(components.callbacks));
  engine_->set_profiler(profiler_.get());
  // The plan is compiled before Init so that refused combinations fail before any surgery.
  engine_->compile(state_);
  detail::install_data_transforms(engine_->plan(), *state_.train_dataloader);
}

void Trainer::start() {
  const RuntimeScope runtime(options_.threads(), options_.deterministic());
  try {
    initialize();
  } catch (...) {
    close_callbacks_quietly(*engine_);  // opened at Init; a caller keeping this Trainer calls none of them again
    throw;
  }
}

void Trainer::initialize() {
  engine_->run_event(Event::Init, state_);
  state_.optimizer->check_groups(state_.model->named_parameters());  // after surgery, which may add to groups
  if (!recipe_text_.empty()) {  // the run's settings, once: the recipe's values by path ("optimizer.sgd.lr")
    std::map<std::string, std::string> settings;
    for (auto& [path, value] : checkpoint::recipe_values(recipe_text_)) settings[path] = std::move(value);
    engine_->logger().log_hyperparameters(settings);
  }
  if (ddp_) ddp_->sync_batch_norm(*state_.model, options_.microbatch_size().is_auto() || state_.microbatch_size > 0);
  // After Init, so that modules made by surgery move too, and before loading, so that a checkpoint's tensors
  // are copied to where the model is. The optimizer holds the same parameter tensors (Module::to replaces
  // their data in place) and has no state yet unless the caller stepped it.
  move_model_to_device();
  // BeforeLoad, the checkpoint asked for (if any), AfterLoad.
  load_initial_checkpoint();
  if (ddp_) ddp_->broadcast_model(*state_.model);  // every rank starts from rank 0's weights
  // Re-seed so that random numbers consumed by surgery or loading do not shift the run (a resumed run has
  // its generators from the checkpoint instead).
  if (!restored_generators_) seed_everything(rank_seed(state_.seed, state_.rank));
}

Trainer::~Trainer() {
  if (engine_) close_callbacks_quietly(*engine_);
}

std::vector<ProfiledWindow> Trainer::profiled_windows() const {
  return profiler_ ? profiler_->windows() : std::vector<ProfiledWindow>();
}

std::vector<std::string> Trainer::traces() const {
  std::vector<std::string> files;
  for (const ProfiledWindow& w : profiled_windows()) files.push_back(w.file);
  return files;
}

void Trainer::move_model_to_device() {
  const c10::Device device = state_.device;
  bool elsewhere = false;
  for (const auto& p : state_.model->parameters(true)) elsewhere = elsewhere || p.device() != device;
  for (const auto& b : state_.model->buffers(true)) elsewhere = elsewhere || b.device() != device;
  if (!elsewhere) return;  // the usual CPU run: nothing to do
  state_.model->to(device);
  // State made before the move (a caller that stepped the optimizer) follows its parameters; step counters
  // (integer scalars) stay on the host, as the optimizers keep them.
  for (auto& [key, slots] : state_.optimizer->state()) {
    for (auto& t : slots) {
      if (t.defined() && !(t.dim() == 0 && !t.is_floating_point())) t = to_device(t, device);
    }
  }
}

Error Trainer::nonfinite_error(int64_t batch, double loss) const {
  const State& s = state_;
  const bool now = batch == s.timestamp.batch;
  const int64_t per_epoch = std::max<int64_t>(1, s.time.batches_per_epoch);
  const int64_t epoch = now ? s.timestamp.epoch : batch / per_epoch;
  const int64_t in_epoch = now ? s.timestamp.batch_in_epoch : batch % per_epoch;
  std::string where = "at batch " + std::to_string(batch) + " (epoch " + std::to_string(epoch) + ", batch " +
                      std::to_string(in_epoch) + " of the epoch)";
  if (!now) {
    where += ", found at the next read-back (on " + s.device.str() +
             " the loss is read back only at log intervals, checkpoints, evaluations and the end)";
  }
  return Error("trainer: the training loss is " + std::to_string(loss) + " " + where + "; the run stops here" +
               (last_checkpoint_.empty() ? std::string() : " (last good checkpoint: " + last_checkpoint_ + ")") +
               ". Lower the learning rate, or drop such batches with nonfinite_loss \"skip\" (" +
               (recipe_text_.empty() ? "TrainerOptions().nonfinite_loss(\"skip\")" : "nonfinite_loss: skip in the recipe") +
               ")");
}

void Trainer::read_back() {
  if (!pending_loss_.defined()) return;
  const double loss = pending_loss_.item<double>();
  pending_loss_ = at::Tensor();
  state_.metrics["loss/train/total"] = loss;
  if (nonfinite_.recorded()) {
    if (auto bad = nonfinite_.first()) throw nonfinite_error(bad->batch, bad->loss);
  }
}

void Trainer::update_learning_rate() {
  Timestamp at = state_.timestamp;
  if (!options_.step_schedulers_every_batch()) {  // the epoch's first batch
    at.batch -= at.batch_in_epoch;
    at.sample -= at.sample_in_epoch;
    at.token -= at.token_in_epoch;
    at.batch_in_epoch = at.sample_in_epoch = at.token_in_epoch = 0;
  }
  double alpha = 1.0;
  std::optional<double> momentum;  // from the one schedule that sets it (checked before step 1)
  for (const auto& s : state_.schedulers) {
    alpha *= s->alpha(at, state_.time);
    if (std::optional<double> m = s->momentum(at, state_.time)) momentum = m;
  }
  state_.optimizer->set_lr_factor(alpha);
  if (momentum) state_.optimizer->set_momentum(momentum);
}

void Trainer::check_callable(const char* what, DuringFit during_fit) const {
  if (!load_failure_.empty()) {
    throw Error(std::string(what) +
                ": a checkpoint load into this trainer failed after it had begun to change it (" +
                load_failure_ +
                "), so it holds parts of two runs and can no longer train, evaluate or save. Make a "
                "new Trainer and load the checkpoint into it");
  }
  if (!failure_.empty()) {
    const std::string why = interrupted_ ? "was " + failure_ + "; its callbacks and loggers were closed"
                                         : "failed (" + failure_ + "), which may have left it in the middle of a batch";
    throw Error(std::string(what) + ": this trainer's fit() " + why +
                ", so it can no longer train, evaluate or save. Make a new Trainer; with checkpoint autoresume it "
                "continues from the last checkpoint" +
                (last_checkpoint_.empty() ? std::string() : " (" + last_checkpoint_ + ")"));
  }
  if (!fitting_.load()) return;
  if (std::this_thread::get_id() != fit_thread_) {
    throw InputError(std::string(what) + ": called from another thread while fit() runs; call it from a callback "
                     "(at batch_end or a checkpoint event) or after fit() returns");
  }
  if (during_fit == DuringFit::Refused) {
    throw InputError(std::string(what) + ": not while fit() runs (it was called from a callback); call it before "
                     "fit() or after it returns");
  }
  if (in_batch_) {
    throw InputError(std::string(what) + ": called in the middle of batch " + std::to_string(state_.timestamp.batch) +
                     ", where the weights, the batch and the data position do not describe one point of the run; "
                     "call it from a callback at batch_end, batch_checkpoint, epoch_end, epoch_checkpoint or "
                     "fit_end, or outside fit()");
  }
}

void Trainer::fit() { run_fit(nullptr); }

void Trainer::fit(const Time& until) { run_fit(&until); }

void Trainer::run_fit(const Time* until) {
  check_callable("fit", DuringFit::Refused);
  State& s = state_;
  if (until != nullptr) {
    double batches = 0;
    try {
      batches = s.time.to_batches(*until);
    } catch (const Error& e) {
      throw InputError(std::string("trainer.fit: until: ") + e.what());
    }
    if (batches > s.time.total_batches() + 1e-9) {
      throw InputError("trainer.fit: until " + until->str() + " is past max_duration " + s.time.max_duration.str() +
                       "; give a time within the run");
    }
    if (s.time.reached(s.timestamp, *until)) {
      throw InputError("trainer.fit: until " + until->str() + " is already reached: the run is at " +
                       std::to_string(s.timestamp.batch) + " batches; give a later time");
    }
  }
  Engine& engine = *engine_;
  const RuntimeScope runtime(options_.threads(), options_.deterministic());
  fit_thread_ = std::this_thread::get_id();
  fitting_ = true;
  struct Done {
    Trainer& t;
    ~Done() {
      t.fitting_ = false;
      t.in_batch_ = false;
      t.state_.pass_over_training_data = nullptr;
    }
  } done{*this};
  data::BatchSource& loader = *s.train_dataloader;
  const int64_t batches_per_epoch = loader.num_batches();
  s.pass_over_training_data = [&](const std::function<void(const Batch&)>& visit,
                                   const std::vector<at::Tensor>& average) -> int64_t {
    if (in_batch_) {
      throw Error("trainer: pass_over_training_data was called in the middle of batch " +
                  std::to_string(s.timestamp.batch) + "; call it between batches (batch_end, epoch_end)");
    }
    int64_t n = 0;
    loader.start_epoch(s.seed, s.timestamp.epoch, 0);
    while (std::optional<Batch> b = loader.next()) {
      visit(s.device.is_cpu() ? *b : batch_to_device(*b, s.device));
      ++n;
    }
    if (ddp_) {
      for (at::Tensor t : average) ddp_->mean_over_ranks(t);
    }
    // Back where training left it (at the end of an epoch the loop starts the next one itself).
    if (s.timestamp.batch_in_epoch > 0 && s.timestamp.batch_in_epoch < batches_per_epoch) {
      loader.start_epoch(s.seed, s.timestamp.epoch, s.timestamp.batch_in_epoch);
    }
    return n;
  };
  auto finished = [&] { return s.stop_requested() || s.time.reached(s.timestamp, s.time.max_duration); };
  auto pause_due = [&] { return until != nullptr && s.time.reached(s.timestamp, *until); };
  // Resumed from a checkpoint of the last batch, written before the epoch's end, the final evaluation and the
  // final checkpoint: those are still to do (the loop below does the epoch's end even when no batch is left).
  auto epoch_end_due = [&] { return s.timestamp.batch_in_epoch >= batches_per_epoch; };
  const bool resumed = !loaded_checkpoint_.empty() && !loaded_weights_only_;
  if (finished() && s.fit_complete && resumed && !s.stop_requested()) {
    // Resumed from the checkpoint written at the end of training: there is nothing left to do.
    engine.logger().info("the run is complete at " + std::to_string(s.timestamp.batch) + " batches (checkpoint " +
                         loaded_checkpoint_ + "); nothing to train");
    return;
  }
  if (finished() && !(resumed && !s.fit_complete)) {
    throw InputError("trainer: nothing to train: the run is already at " + std::to_string(s.timestamp.batch) +
                     " batches, max_duration is " + s.time.max_duration.str());
  }
  // What follows a batch's end and an epoch's end; a run resumed from a checkpoint that a stop signal forced
  // during their evaluations does the rest of them first.
  auto after_batch_end = [&] {
    run_evaluators(Event::BatchEnd);
    engine.run_event(Event::BatchCheckpoint, s);
    checkpoint_if_due(Event::BatchCheckpoint);
    stop_if_signalled();
  };
  auto after_epoch_end = [&] {
    run_evaluators(Event::EpochEnd);
    engine.run_event(Event::EpochCheckpoint, s);
    checkpoint_if_due(Event::EpochCheckpoint);
    stop_if_signalled();
  };
  const std::optional<Event> pending = std::exchange(pending_evaluations_, std::nullopt);
  try {
    // A run paused by fit(until) continues: its fit started already, and its loader stands where it paused.
    const bool continuing = std::exchange(paused_, false);
    bool positioned = continuing && s.timestamp.batch_in_epoch > 0;
    if (!continuing) engine.run_event(Event::FitStart, s);
    s.model->train();
    if (pending == Event::BatchEnd) after_batch_end();
    if (pending == Event::EpochEnd) after_epoch_end();
    while ((!finished() && !pause_due()) || epoch_end_due()) {
      if (profiler_) profiler_->batch_begins(s.timestamp, batches_per_epoch, engine.logger());
      if (s.timestamp.epoch_in_iteration == 0 && s.timestamp.batch_in_epoch == 0) engine.run_event(Event::IterationStart, s);
      if (s.timestamp.batch_in_epoch == 0) engine.run_event(Event::EpochStart, s);
      const auto epoch_t0 = Clock::now();
      const double epoch_wct0 = s.timestamp.epoch_wct;
      if (!std::exchange(positioned, false)) loader.start_epoch(s.seed, s.timestamp.epoch, s.timestamp.batch_in_epoch);
      while (s.timestamp.batch_in_epoch < batches_per_epoch && !finished() && !pause_due()) {
        if (profiler_) profiler_->batch_begins(s.timestamp, batches_per_epoch, engine.logger());
        const auto t0 = Clock::now();
        engine.run_event(Event::BeforeDataloader, s);
        std::optional<Batch> next = loader.next();
        if (!next) throw Error("trainer: the training data ended after " + std::to_string(s.timestamp.batch_in_epoch) +
                               " batches; expected " + std::to_string(batches_per_epoch));
        s.batch = std::move(*next);
        in_batch_ = true;
        if (!s.device.is_cpu()) s.batch = batch_to_device(s.batch, s.device);
        // Counted before algorithms change the batch; over all ranks.
        const int64_t samples = ddp_ ? ddp_->global_batch_size() : s.batch.size();
        {
          // The batch's place in the global batch, from AfterDataloader (selective backprop's scoring forward) to
          // AfterTrainBatch; unset at BatchEnd (SWA's statistics pass) and after a failure.
          BatchPlace& place = *s.batch_place;
          if (ddp_) {
            place = ddp_->last_share_place();
          } else {
            place = BatchPlace{};
            place.rows = place.rank_rows = place.share_end = place.global_rows = s.batch.size();
          }
          struct Unset {
            BatchPlace& place;
            ~Unset() { place = BatchPlace{}; }
          } unset{place};
          engine.run_event(Event::AfterDataloader, s);
          update_learning_rate();  // before BatchStart, so that callbacks there see this batch's rate
          engine.run_event(Event::BatchStart, s);
          train_batch();
        }
        Timestamp next_ts = s.timestamp.to_next_batch(samples, samples * s.time.tokens_per_sample, seconds_since(t0));
        next_ts.epoch_wct = epoch_wct0 + seconds_since(epoch_t0);
        previous_timestamp_ = s.timestamp;
        s.timestamp = next_ts;
        in_batch_ = false;
        engine.run_event(Event::BatchEnd, s);
        after_batch_end();
      }
      if (epoch_end_due()) {
        previous_timestamp_ = s.timestamp;
        s.timestamp = s.timestamp.to_next_epoch();
        engine.run_event(Event::EpochEnd, s);
        after_epoch_end();
      }
    }
    read_back();  // deferred: the last loss, and a non-finite one since the last log
    if (!finished()) {  // paused by fit(until) before the run's end: the next fit continues from here
      paused_ = true;
      if (profiler_) profiler_->finish(engine.logger());
      // (Also ends a progress bar's open line.)
      engine.logger().info("paused at batch " + std::to_string(s.timestamp.batch) + " (fit until " + until->str() +
                           "); the next fit continues the run");
      return;
    }
    if (s.time.reached(s.timestamp, s.time.max_duration) && pending != Event::FitEnd) {
      engine.run_event(Event::IterationEnd, s);
      engine.run_event(Event::IterationCheckpoint, s);
    }
    // Final evaluation before fit_end, so that loggers and summaries at fit_end see the final metrics.
    run_evaluators(Event::FitEnd);
    s.fit_complete = s.time.reached(s.timestamp, s.time.max_duration);
    checkpoint_if_due(Event::FitEnd);
    engine.logger().log_hyperparameters({{"weights_fingerprint", weights_fingerprint(*s.model)}});
    engine.run_event(Event::FitEnd, s);
    if (ddp_) ddp_->sync_buffers(*s.model);  // every rank ends with rank 0's model (EMA's averages, if swapped in)
    if (profiler_) profiler_->finish(engine.logger());
    write_run_summary(s.stop_requested() ? "stopped" : "complete");
  } catch (const Interrupted& e) {
    failure_ = e.what();
    interrupted_ = true;
    if (profiler_) profiler_->finish(engine.logger());
    close_callbacks_quietly(engine);  // not over the exception in flight
    write_run_summary("interrupted");
    throw;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    failure_ = what.substr(0, what.find('\n'));  // c10::Error appends a backtrace
    if (profiler_) profiler_->finish(engine.logger());
    close_callbacks_quietly(engine);  // not over the exception in flight
    write_run_summary("failed");
    throw;
  } catch (...) {
    failure_ = "an exception that is not a std::exception";
    if (profiler_) profiler_->finish(engine.logger());
    close_callbacks_quietly(engine);  // not over the exception in flight
    write_run_summary("failed");
    throw;
  }
}

void Trainer::train_batch() {
  State& s = state_;
  Engine& engine = *engine_;
  engine.run_event(Event::BeforeTrainBatch, s);
  s.optimizer->zero_grad(true);
  if (ddp_) ddp_->sync_buffers(*s.model);
  const Batch full = s.batch;
  if (full.size() == 0) throw Error("trainer: batch " + std::to_string(s.timestamp.batch) + " is empty after the algorithms ran");
  const bool log_now = (s.timestamp.batch % options_.log_interval()) == 0;
  // A skipped batch must leave no trace: keep the buffers (batch-norm statistics) its forward passes update.
  std::vector<at::Tensor> buffers_before;
  const bool skip_nonfinite = options_.nonfinite_loss() == "skip";
  if (skip_nonfinite) {
    for (const auto& b : s.model->buffers(true)) buffers_before.push_back(b.detach().clone());
  }
  bool finite = true;
  at::Tensor loss_sum;
  LossTerms terms;  // counted in the first microbatch
  if (!options_.microbatch_size().is_auto()) {
    loss_sum = run_microbatches(full, terms, log_now, skip_nonfinite, finite);
  } else {
    const detail::RetryPoint before(s);
    for (;;) {
      bool here = false;  // this rank ran out of memory
      try {
        loss_sum = run_microbatches(full, terms, log_now, skip_nonfinite, finite);
      } catch (const c10::Error& e) {
        if (!is_out_of_memory(e)) throw;
        here = true;
        release_failed_attempt(s);
      }
      // Every rank counts the terms once (a collective), before it learns whether any ran out of memory: a rank
      // whose first microbatch failed before counting counts now.
      if (ddp_ && !terms.counted) terms = count_loss_terms(full);
      // On several ranks every rank retries, or none: a rank whose batch fitted learns of another's error here
      // (no collective ran during the backward passes: DataParallel::sync_after_backward).
      if (!(ddp_ ? ddp_->any(here) : here)) break;
      const int64_t failed = s.microbatch_size <= 0 ? full.size() : s.microbatch_size;
      int64_t next = 0;  // 0: this rank cannot halve any more
      std::string cannot;
      try {
        next = halve_microbatch_size(s.microbatch_size, full.size());
      } catch (const Error& e) {
        cannot = e.what();
      }
      if (ddp_) next = ddp_->min_over_ranks(next);  // one size for all (the shares may differ by an example)
      if (next == 0) {  // every rank stops, after the agreement (none is left waiting in it)
        throw Error(here && !cannot.empty() ? cannot
                                            : "microbatch_size auto: another rank ran out of memory with microbatches "
                                              "of 1 example; the model does not fit its device at all");
      }
      s.microbatch_size = next;
      before.restore(s);
      s.optimizer->zero_grad(true);
      if (scaler_) scaler_->clear_found_inf();
      s.metrics["trainer/microbatch_size"] = static_cast<double>(s.microbatch_size);
      engine.logger().warn("batch " + std::to_string(s.timestamp.batch) + ": out of memory with microbatches of " +
                           std::to_string(failed) + " examples; microbatch_size auto retries the batch with " +
                           std::to_string(s.microbatch_size) + " and keeps that size for the run");
    }
  }
  s.batch = full;
  double loss_value = finish_pass(loss_sum, skip_nonfinite, finite);
  {
    // SAM's second pass (or any algorithm's at after_train_batch): the same microbatches, at the parameters then.
    s.recompute_gradients = [&]() -> at::Tensor {
      s.optimizer->zero_grad(true);
      bool again_finite = true;
      at::Tensor again;
      try {
        again = run_microbatches(full, terms, /*log_now=*/false, skip_nonfinite, again_finite);
      } catch (const c10::Error& e) {
        if (!is_out_of_memory(e)) throw;
        // The first pass fitted at this microbatch size; retrying the batch from its start is not done here.
        throw Error("trainer: out of memory in the second forward and backward of batch " +
                    std::to_string(s.timestamp.batch) + " (recompute_gradients, at after_train_batch) with microbatches "
                    "of " + std::to_string(s.microbatch_size <= 0 ? full.size() : s.microbatch_size) +
                    " examples; set a smaller fixed microbatch_size");
      }
      s.batch = full;
      const double again_value = finish_pass(again, skip_nonfinite, again_finite);
      if (finite && !again_finite) {
        finite = false;
        loss_value = again_value;
      }
      return again;
    };
    struct Clear {
      State& s;
      ~Clear() { s.recompute_gradients = nullptr; }
    } clear{s};
    engine.run_event(Event::AfterTrainBatch, s);
  }
  // With a loss scaler, inf/NaN gradients of a finite loss are its business: the step is skipped, the scale
  // backs off, the batch still counts in time (schedules keep their time). A non-finite loss stays
  // nonfinite_loss's (error, or skip with the buffers put back).
  const bool overflow = finite && scaler_ && scaler_->found_inf();
  if (scaler_) scaler_->update();
  if (finite && !overflow) {
    s.optimizer->step();
  } else if (overflow) {
    s.optimizer->zero_grad(true);
    ++skipped_steps_;
    s.metrics["trainer/skipped_steps"] = static_cast<double>(skipped_steps_);
    engine.logger().warn("batch " + std::to_string(s.timestamp.batch) + ": inf/NaN gradients at loss scale " +
                         std::to_string(scaler_->scale_value() / scaler_->options().backoff_factor()) +
                         "; the step was skipped and the scale backed off to " +
                         std::to_string(scaler_->scale_value()) + " (" + std::to_string(skipped_steps_) +
                         " skipped so far)");
  } else {
    s.optimizer->zero_grad(true);
    at::NoGradGuard no_grad;
    const auto buffers = s.model->buffers(true);
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(buffers_before[i]);
    ++skipped_batches_;
    s.metrics["trainer/skipped_batches"] = static_cast<double>(skipped_batches_);
    engine.logger().warn("batch " + std::to_string(s.timestamp.batch) + ": the loss is " +
                         std::to_string(loss_value) + "; its update was skipped (" +
                         std::to_string(skipped_batches_) + " skipped so far)");
  }

  if (deferred_) {
    pending_loss_ = loss_sum;
    if (!log_now) return;  // metrics["loss/train/total"] keeps the value of the last read-back
    read_back();           // the one synchronisation of a logged batch
    loss_value = s.metrics["loss/train/total"];
  } else {
    s.metrics["loss/train/total"] = loss_value;
    if (!log_now) return;
  }
  std::map<std::string, double> values{{"loss/train/total", loss_value}};
  values["lr"] = s.optimizer->param_groups().empty() ? 0.0 : s.optimizer->param_groups()[0].lr;
  if (ddp_) ddp_->reduce(train_metrics_);
  std::map<std::string, double> metrics;
  for (auto& m : train_metrics_) add_metric_values(*m, "metrics/train/" + m->name(), metrics);
  for (const auto& [k, v] : metrics) values[k] = s.metrics[k] = v;
  engine.logger().log_metrics(values, s.timestamp);
}

double Trainer::finish_pass(at::Tensor& loss_sum, bool skip_nonfinite, bool& finite) {
  const State& s = state_;
  if (ddp_) {
    ddp_->sync_gradients();  // with sync_after_backward; done during the last backward otherwise
    if (scaler_) ddp_->agree_on_overflow(scaler_->found_inf_record());
    // The loss of the global batch, the same on every rank (so is the decision on a non-finite one).
    loss_sum = loss_sum.clone();
    ddp_->mean_over_ranks(loss_sum);
    if (deferred_ && skip_nonfinite) finite = at::isfinite(loss_sum).item<bool>();
  }
  double loss_value = 0.0;
  if (deferred_) {
    if (!skip_nonfinite) nonfinite_.record(loss_sum, s.timestamp.batch);
    if (!finite) loss_value = loss_sum.item<double>();  // only for the warning in train_batch
  } else {
    loss_value = loss_sum.item<double>();
    finite = std::isfinite(loss_value);
    if (!finite && !skip_nonfinite) throw nonfinite_error(s.timestamp.batch, loss_value);
  }
  return loss_value;
}

Trainer::LossTerms Trainer::count_loss_terms(const Batch& full) {
  LossTerms terms;
  terms.counted = true;
  terms.per_example = state_.model->loss_terms(full);
  detail::check_loss_terms(terms.per_example, full.size());
  if (!terms.per_example.defined()) return terms;
  terms.global = terms.per_example.sum();
  if (ddp_) ddp_->sum_over_ranks(terms.global);
  return terms;
}

at::Tensor Trainer::run_microbatches(const Batch& full, LossTerms& terms, bool log_now, bool skip_nonfinite,
                                     bool& finite) {
  State& s = state_;
  Engine& engine = *engine_;
  const int64_t n = full.size();
  if (log_now) {
    for (auto& m : train_metrics_) m->reset();
  }
  std::vector<at::Tensor> params;
  if (scaler_) params = s.model->parameters(true);
  // Deferred read-back (CUDA): the loss stays on the device. Only nonfinite_loss: skip needs a value on the
  // host every batch (whether to step is the host's decision: the optimizers' first-step state and step
  // counts live there), and it reads it before the last backward is queued, not after the whole batch.
  at::Tensor loss_sum;
  std::vector<Batch> microbatches = full.split(s.microbatch_size);
  std::vector<at::Tensor> weights;  // per microbatch, from the terms (none: by examples)
  BatchPlace& place = *s.batch_place;  // each microbatch's rows within the batch, then the whole batch again
  place.rank_rows = n;
  int64_t first = 0;
  for (size_t i = 0; i < microbatches.size(); ++i) {
    s.batch = std::move(microbatches[i]);
    place.first = first;
    place.rows = s.batch.size();
    first += place.rows;
    {
      const AutocastScope autocast(s.precision, s.device);  // the forward and the loss, not the backward
      engine.run_event(Event::BeforeForward, s);
      inject_out_of_memory(s.batch.size(), oom_test_limit_);
      s.outputs = s.model->forward(s.batch);
      engine.run_event(Event::AfterForward, s);
      engine.run_event(Event::BeforeLoss, s);
      s.loss = s.compute_loss(s.outputs, s.batch);
      engine.run_event(Event::AfterLoss, s);
    }
    engine.run_event(Event::BeforeBackward, s);
    // One part (the whole batch on one rank) weighs 1 whatever its terms: nothing to count then.
    if (i == 0 && (microbatches.size() > 1 || ddp_)) {
      if (!terms.counted) terms = count_loss_terms(full);
      if (terms.per_example.defined()) {
        weights = loss_term_weights(terms.per_example, s.microbatch_size, terms.global, ddp_ ? ddp_->world_size() : 1);
      }
    }
    // Each microbatch's mean loss is weighted by its share of the global batch's loss terms (the positions with a
    // target: Composer's accumulate_train_batch_on_tokens) or, for a model without terms, of the batch's examples,
    // so that the summed gradient, averaged over the ranks, is the gradient of the global batch's mean loss (uneven
    // shares of the global batch included). A microbatch without terms adds nothing (its mean over no terms is
    // 0/0 for a cross-entropy).
    at::Tensor scaled;
    if (!weights.empty()) {
      const at::Tensor& w = weights[i];
      scaled = at::where(w.gt(0), s.loss * w.to(s.loss.scalar_type()), at::zeros_like(s.loss));
    } else {
      const double share =
          static_cast<double>(s.batch.size()) / static_cast<double>(n) * (ddp_ ? ddp_->loss_weight() : 1.0);
      scaled = share == 1.0 ? s.loss : s.loss * share;
    }
    at::Tensor detached = scaled.detach();
    loss_sum = loss_sum.defined() ? loss_sum + detached : detached;
    const bool last = i + 1 == microbatches.size();
    // Several ranks decide on a non-finite loss together, on the mean over ranks (train_batch).
    if (deferred_ && skip_nonfinite && last && !ddp_) finite = at::isfinite(loss_sum).item<bool>();
    // On several ranks the last microbatch's backward also averages the gradients over the ranks (or
    // train_batch does after it, with a loss scaler or microbatch_size auto). With a loss scaler, AfterBackward
    // sees unscaled gradients (GradScaler::backward).
    if (ddp_) ddp_->before_backward(*s.model, last);
    if (scaler_) {
      scaler_->backward(scaled, params);
    } else {
      scaled.backward();
    }
    if (ddp_) ddp_->after_backward();
    engine.run_event(Event::AfterBackward, s);
    if (log_now) {
      at::NoGradGuard no_grad;
      at::Tensor outputs = s.outputs.detach();
      for (auto& m : train_metrics_) m->update(outputs, s.batch);
    }
  }
  place.first = 0;
  place.rows = n;
  return loss_sum;
}

bool Trainer::eval_due(const Evaluator& ev, Event event) const {
  const State& s = state_;
  const Time& every = ev.interval;
  if (event == Event::FitEnd) return true;  // the caller skips evaluators already run at this batch
  if (every.as_double() <= 0) return false;
  if (every.unit() == TimeUnit::Epoch) {
    return event == Event::EpochEnd && s.timestamp.epoch % every.value() == 0;
  }
  if (event != Event::BatchEnd) return false;
  return interval_crossed(every, previous_timestamp_, s.timestamp, s.time,
                          [&] { return "evaluator \"" + ev.label + "\""; });
}

void Trainer::run_evaluators(Event event) {
  State& s = state_;
  if (last_eval_batch_.size() != s.evaluators.size()) last_eval_batch_.assign(s.evaluators.size(), -1);
  std::vector<size_t> due;
  for (size_t i = 0; i < s.evaluators.size(); ++i) {
    // Not twice at one batch: at FitEnd after the last batch's or epoch's; resumed, those a stop let finish.
    if (last_eval_batch_[i] == s.timestamp.batch) continue;
    if (eval_due(s.evaluators[i], event)) due.push_back(i);
  }
  if (due.empty()) return;
  read_back();  // deferred: evaluate only weights that no non-finite loss went into
  evaluating_ = event;
  s.final_evaluation = event == Event::FitEnd;
  struct Done {
    std::optional<Event>& evaluating;
    bool& final_evaluation;
    ~Done() {
      evaluating.reset();
      final_evaluation = false;
    }
  } done{evaluating_, s.final_evaluation};
  engine_->run_event(Event::EvalBeforeAll, s);
  for (size_t i : due) eval_loop(i);  // each marks itself done (last_eval_batch_)
  engine_->run_event(Event::EvalAfterAll, s);
}

void Trainer::eval_loop(size_t index) {
  State& s = state_;
  Evaluator& ev = s.evaluators[index];
  Engine& engine = *engine_;
  OutOfTraining aside(s);
  s.eval_label = ev.label;
  {
    at::NoGradGuard no_grad;
    engine.run_event(Event::EvalStart, s);
    if (ddp_) ddp_->sync_buffers(*s.model);  // every rank evaluates with rank 0's statistics (EMA's, if swapped in)
    for (auto& m : ev.metrics) m->reset();
    const int64_t done = forward_batches(
        *ev.dataloader, ev.subset_batches,
        {Event::EvalBatchStart, Event::EvalBeforeForward, Event::EvalAfterForward, Event::EvalBatchEnd},
        [&] {
          for (auto& m : ev.metrics) m->update(s.outputs, s.batch);
        });
    // On several ranks a signal is acted on at the next batch boundary, where the ranks agree (stop_if_signalled):
    // a rank leaving its evaluation alone would leave the others waiting in the metrics' all-reduce.
    if (const int sig = ddp_ ? 0 : stop_signal(); sig != 0) {
      aside.restore();
      if (fitting_) stop_if_signalled();  // a checkpoint of the training state, then Interrupted
      throw Interrupted(sig, "stopped by " + signal_name(sig) + " during evaluation \"" + ev.label + "\" after " +
                                 std::to_string(done) + " batches; its metrics were not computed");
    }
    if (ddp_) ddp_->reduce(ev.metrics);  // sums over every rank's share
    std::map<std::string, double> values;
    for (auto& m : ev.metrics) add_metric_values(*m, "metrics/" + ev.label + "/" + m->name(), values);
    // They replace all the evaluator's earlier values ("metrics/<label>/..."): a part one evaluation reported and
    // the next did not (a Python metric's dict) is not left behind as if new.
    const std::string prefix = "metrics/" + ev.label + "/";
    for (auto it = s.metrics.lower_bound(prefix); it != s.metrics.end() && it->first.rfind(prefix, 0) == 0;) {
      it = s.metrics.erase(it);
    }
    s.metrics.insert(values.begin(), values.end());
    engine.logger().log_metrics(values, s.timestamp);
    // In fit (run_evaluators), done before EvalEnd, where a callback may save: a run resumed from that checkpoint
    // does the evaluations still pending, not this one again.
    if (evaluating_) last_eval_batch_[index] = s.timestamp.batch;
    engine.run_event(Event::EvalEnd, s);
  }
}

int64_t Trainer::forward_batches(data::BatchSource& data, int64_t limit, const std::array<Event, 4>& events,
                                 const std::function<void()>& use) {
  State& s = state_;
  data.start_epoch(s.seed, 0, 0);
  int64_t done = 0;
  while (limit < 0 || done < limit) {
    if (!ddp_ && stop_signal() != 0) break;  // Ctrl-C or SIGTERM: stop at the next batch, log nothing partial
    std::optional<Batch> next = data.next();
    if (!next) break;
    s.batch = std::move(*next);
    if (!s.device.is_cpu()) s.batch = batch_to_device(s.batch, s.device);
    engine_->run_event(events[0], s);
    engine_->run_event(events[1], s);
    {
      const AutocastScope autocast(eval_precision_, s.device);
      s.outputs = s.model->forward(s.batch);
    }
    engine_->run_event(events[2], s);
    use();
    engine_->run_event(events[3], s);
    ++done;
  }
  return done;
}

std::vector<at::Tensor> Trainer::predict(data::BatchSource& data, int64_t subset_batches) {
  check_callable("predict", DuringFit::Refused);
  const RuntimeScope runtime(options_.threads(), options_.deterministic());
  State& s = state_;
  read_back();
  OutOfTraining aside(s);
  std::vector<at::Tensor> outputs;
  int64_t done = 0;
  {
    at::NoGradGuard no_grad;
    engine_->run_event(Event::PredictStart, s);
    done = forward_batches(data, subset_batches,
                           {Event::PredictBatchStart, Event::PredictBeforeForward, Event::PredictAfterForward,
                            Event::PredictBatchEnd},
                           [&] { outputs.push_back(s.outputs.detach().to(c10::Device(c10::kCPU))); });
    if (ddp_ || stop_signal() == 0) engine_->run_event(Event::PredictEnd, s);  // not after a stop signal
  }
  aside.restore();
  if (const int sig = ddp_ ? 0 : stop_signal(); sig != 0) {
    throw Interrupted(sig, "stopped by " + signal_name(sig) + " during predict after " + std::to_string(done) +
                               " batches");
  }
  return outputs;
}

std::map<std::string, double> Trainer::evaluate() {
  check_callable("evaluate", DuringFit::Refused);
  const RuntimeScope runtime(options_.threads(), options_.deterministic());
  State& s = state_;
  read_back();
  engine_->run_event(Event::EvalStandaloneStart, s);
  std::map<std::string, double> out;
  for (size_t i = 0; i < s.evaluators.size(); ++i) {
    eval_loop(i);  // replaces the evaluator's values ("metrics/<label>/<name>", and parts "<name>/class_3")
    const std::string prefix = "metrics/" + s.evaluators[i].label + "/";
    for (auto it = s.metrics.lower_bound(prefix); it != s.metrics.end() && it->first.rfind(prefix, 0) == 0; ++it) {
      out.insert(*it);
    }
  }
  engine_->run_event(Event::EvalStandaloneEnd, s);
  return out;
}

}  // namespace tessera

namespace tessera {

void Trainer::load_initial_checkpoint() {
  engine_->run_event(Event::BeforeLoad, state_);
  const CheckpointOptions& c = checkpoint_;
  std::optional<std::pair<std::string, checkpoint::File>> found;
  if (c.autoresume()) {  // with a folder: detail::check_checkpoint_options ran in the constructor
    std::vector<std::string> rejected;
    try {
      found = checkpoint::read_newest_valid(c.folder(), &rejected);
    } catch (const CheckpointError& e) {
      if (!c.fresh_start_if_invalid()) {
        throw CheckpointError(std::string(e.what()) +
                              "; remove them or " + how_to_set("fresh_start_if_invalid", "true") + " to start fresh");
      }
      engine_->logger().warn(std::string(e.what()) + "; starting fresh (fresh_start_if_invalid)");
    }
    for (const auto& r : rejected) engine_->logger().warn(r + "; using an older checkpoint");
  }
  bool resumed = false;
  if (found) {
    check_recipe_changes(found->second, found->first);
    apply_checkpoint(found->second, found->first, /*weights_only=*/false, c.strict());
    resumed = true;
  } else if (!c.load_path().empty()) {  // a file, or another run's checkpoint folder (its newest valid one)
    std::vector<std::string> rejected;
    const auto [path, file] = checkpoint::read_file_or_newest(c.load_path(), "checkpoint.load_path", &rejected);
    for (const auto& r : rejected) engine_->logger().warn(r + "; using an older checkpoint");
    apply_checkpoint(file, path, c.weights_only(), c.strict());
    resumed = !c.weights_only();
  }
  if (!resumed && !c.folder().empty() && state_.rank == 0) {
    // A fresh start where an earlier run left checkpoints: theirs would outrank this run's when resuming, and
    // take the places `keep` leaves. They are kept, out of the way.
    const std::string aside = checkpoint::move_earlier_run_aside(c.folder());
    if (!aside.empty()) {
      engine_->logger().warn("checkpoint.folder " + c.folder() +
                             " held the checkpoints of an earlier run; this run "
                             "starts fresh, so they were moved to " +
                             aside);
    }
  }
  engine_->run_event(Event::AfterLoad, state_);
}

void Trainer::check_recipe_changes(const checkpoint::File& file, const std::string& path) {
  const std::string before = file.meta.value("recipe", std::string());
  if (before.empty() || recipe_text_.empty()) return;  // not both runs came from a recipe
  std::vector<checkpoint::RecipeChange> altering, harmless;
  for (auto& change : checkpoint::recipe_changes(before, recipe_text_)) {
    (change.alters_training ? altering : harmless).push_back(std::move(change));
  }
  if (!altering.empty() && !checkpoint_.resume_changed_recipe()) {
    throw InputError(
        "checkpoint.autoresume: " + path +
        " was written by a run whose recipe differs in what trains: " + checkpoint::describe(altering) +
        ". Resuming it would mix two runs. Use a new run folder (run_dir), or set checkpoint.autoresume to "
        "false to start this run fresh (the earlier run's checkpoints are then moved aside, into "
        "earlier-<N>), or checkpoint.resume_changed_recipe to true to resume anyway");
  }
  if (!altering.empty()) {
    engine_->logger().warn("resuming " + path + " although the recipe changed what trains (resume_changed_recipe): " +
                           checkpoint::describe(altering));
  }
  if (!harmless.empty()) {
    engine_->logger().info("resuming " + path + " with changes that do not alter the training: " +
                           checkpoint::describe(harmless));
  }
}

void Trainer::checkpoint_if_due(Event event, bool force) {
  const std::string& folder = checkpoint_.folder();
  if (folder.empty()) return;
  const State& s = state_;
  const Time& every = checkpoint_.interval();
  bool due = force || event == Event::FitEnd;
  if (!due && every.as_double() > 0) {
    if (event == Event::EpochCheckpoint) {
      due = every.unit() == TimeUnit::Epoch && s.timestamp.epoch % every.value() == 0;
    } else if (event == Event::BatchCheckpoint && every.unit() != TimeUnit::Epoch) {
      due = interval_crossed(every, previous_timestamp_, s.timestamp, s.time, [] { return std::string("checkpoint"); });
    }
  }
  if (!due) return;
  const std::string path = (std::filesystem::path(folder) / checkpoint::file_name(s.timestamp)).string();
  // This state is already on disk, unless now it says more: that the run is complete, that a stop came during
  // evaluations (the file written at the last batch or epoch said neither).
  const bool on_disk = path == last_checkpoint_ || (path == loaded_checkpoint_ && !loaded_weights_only_);
  if (on_disk && !(event == Event::FitEnd && s.fit_complete) && !(force && evaluating_)) return;
  read_back();  // deferred: never write weights that a non-finite loss went into; save the latest loss
  if (ddp_) rank_generators_ = gather_rank_generators();  // a collective: every rank, before rank 0 writes
  if (state_.rank != 0) {  // rank 0 writes; every rank holds the same state
    last_checkpoint_ = path;
    return;
  }
  const bool traced = profiler_ && profiler_->recording();
  const double began = traced ? profiler_->now() : 0.0;
  save_checkpoint(path);  // creates the folder when it does not exist
  if (traced) profiler_->span("checkpoint", "phase", began, profiler_->now());
  rank_generators_.clear();
  checkpoint::write_text_atomically((std::filesystem::path(folder) / "latest").string(),
                                    std::filesystem::path(path).filename().string() + "\n");
  last_checkpoint_ = path;
  checkpoint::prune(folder, checkpoint_.keep(), path);
}

void Trainer::stop_if_signalled() {
  int sig = stop_signal();
  // Every rank stops after the same batch, also when the signal reached only some of them.
  if (ddp_ && ddp_->any(sig != 0) && sig == 0) sig = SIGTERM;
  if (sig == 0) return;
  checkpoint_if_due(Event::BatchCheckpoint, /*force=*/true);
  const std::string where = "after batch " + std::to_string(state_.timestamp.batch);
  std::string saved = last_checkpoint_.empty() ? std::string("no checkpoint folder is set, so nothing was saved")
                                               : "checkpoint " + last_checkpoint_;
  if (!last_checkpoint_.empty() && last_checkpoint_ != (std::filesystem::path(checkpoint_.folder()) /
                                                        checkpoint::file_name(state_.timestamp)).string()) {
    saved = "the newest checkpoint is " + last_checkpoint_;
  }
  throw Interrupted(sig, "stopped by " + signal_name(sig) + " " + where + "; " + saved);
}

}  // namespace tessera
