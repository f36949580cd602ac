#pragma once
/// The Trainer: the training loop of reference §1.2 with every event in its place.
///
///     tessera::Trainer trainer(tessera::TrainerOptions().max_duration(tessera::Time::parse("2ep")),
///                              {model, train_loader, optimizer, schedulers, algorithms, callbacks, evaluators});
///     trainer.fit();
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <tessera/algorithm.h>
#include <tessera/callback.h>
#include <tessera/data/dataloader.h>
#include <tessera/engine.h>
#include <tessera/evaluator.h>
#include <tessera/options.h>
#include <tessera/state.h>

namespace tessera {

struct TrainerOptions {
  TESSERA_OPTION(Time, max_duration) = Time(1, TimeUnit::Epoch);
  /// Examples per microbatch for gradient accumulation (0 = the whole batch at once).
  TESSERA_OPTION(int64_t, microbatch_size) = 0;
  TESSERA_OPTION(int64_t, seed) = 42;
  /// Intra-op threads (0 = all cores).
  TESSERA_OPTION(int64_t, threads) = 0;
  /// Default interval of evaluators that do not set their own.
  TESSERA_OPTION(Time, eval_interval) = Time(1, TimeUnit::Epoch);
  /// Use deterministic kernels (on CUDA: cuDNN/cuBLAS settings too).
  TESSERA_OPTION(bool, deterministic) = false;
  TESSERA_OPTION(std::string, precision) = "fp32";
  /// Folder for metrics files and (later) checkpoints.
  TESSERA_OPTION(std::string, run_dir) = "runs/tessera";
  /// Log train metrics every N batches (the loss is logged every batch).
  TESSERA_OPTION(int64_t, log_interval) = 1;
  template <class V>
  void visit(V& v) {
    v("max_duration", max_duration_, "length of training (ep, ba or sp)", Any{});
    v("microbatch_size", microbatch_size_, "examples per microbatch (0 = whole batch)", Range::at_least(0));
    v("seed", seed_, "run seed", Range::closed(0, 4294967295.0));
    v("threads", threads_, "intra-op threads (0 = all cores)", Range::closed(0, 1024));
    v("eval_interval", eval_interval_, "default evaluation interval", Any{});
    v("deterministic", deterministic_, "deterministic kernels", Any{});
    v("precision", precision_, "numeric precision", Choices{{"fp32"}});
    v("run_dir", run_dir_, "folder for metrics and checkpoints", Any{});
    v("log_interval", log_interval_, "batches between train-metric logs", Range::at_least(1));
  }
};

/// The parts of a run.
struct Components {
  std::shared_ptr<Model> model;
  std::shared_ptr<data::DataLoader> train_dataloader;
  std::shared_ptr<optim::Optimizer> optimizer;
  std::vector<std::shared_ptr<optim::Scheduler>> schedulers;
  std::vector<std::shared_ptr<Algorithm>> algorithms;
  std::vector<std::shared_ptr<Callback>> callbacks;
  std::vector<Evaluator> evaluators;
  /// Metrics computed on training batches (default: accuracy).
  std::vector<std::shared_ptr<Metric>> train_metrics;
};

class Trainer {
 public:
  /// Validates the options, seeds everything from `seed`, fires Init (model surgery happens there),
  /// compiles the plan (refused combinations throw InputError here), then BeforeLoad/AfterLoad.
  Trainer(TrainerOptions options, Components components);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Trains until max_duration (or stop_training()).
  void fit();
  /// Runs every evaluator once (EvalStandaloneStart/End) and returns "metrics/<label>/<name>" values.
  std::map<std::string, double> evaluate();

  State& state() noexcept { return state_; }
  const State& state() const noexcept { return state_; }
  const Plan& plan() const noexcept { return engine_->plan(); }
  const Trace& trace() const noexcept { return engine_->trace(); }
  Engine& engine() noexcept { return *engine_; }
  const TrainerOptions& options() const noexcept { return options_; }

 private:
  void train_batch();
  void train_microbatch(Batch& microbatch, int64_t full_batch_size);
  void run_evaluators(Event event);
  void eval_loop(Evaluator& evaluator);
  bool eval_due(const Evaluator& evaluator, Event event) const;
  void update_learning_rate();

  TrainerOptions options_;
  State state_;
  std::vector<std::shared_ptr<Metric>> train_metrics_;
  std::unique_ptr<Engine> engine_;
  Timestamp previous_timestamp_;
  std::vector<int64_t> last_eval_batch_;  ///< per evaluator, the batch of its last run (-1 = never)
};

/// Sets intra-op threads (0 = all cores) and, when asked, deterministic algorithms. With glibc it also keeps
/// large freed blocks in the heap (mmap threshold 256 MB, trim threshold 1 GB): without that, every step
/// page-faults its activations in again.
void configure_runtime(int64_t threads, bool deterministic);
/// Seeds torch's generators (CPU and CUDA) from `seed`.
void seed_everything(uint64_t seed);

}  // namespace tessera
