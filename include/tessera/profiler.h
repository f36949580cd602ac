#pragma once
/// The profiler's settings: which batches of each epoch to trace, and where the traces go.
///
/// A trace is a Chrome trace-event JSON file (open it in Perfetto's UI or chrome://tracing) with, on one line per
/// rank, the run's phases (data loading, forward, loss, backward, the optimizer step, evaluation, checkpoints),
/// every event the engine fired, and inside each event every algorithm and callback that ran, with their host
/// times; with `torch_ops`, the torch operators underneath them on their threads (docs/recipes.md, "Profiling").
///
///     trainer options: TrainerOptions().profiler(ProfilerOptions().enabled(true).active(8))
///     recipe:          profiler: {active: 8}      (a profiler section turns it on)
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <tessera/options.h>

namespace tessera {

/// Composer's cyclic schedule, per epoch (its batch index restarts at each epoch): the first `skip_first` batches
/// are skipped, then cycles of `wait` batches untraced, `warmup` batches traced and discarded (so that the
/// profiler's own start-up cost stays out of the trace), and `active` batches traced and written to one file;
/// `repeat` cycles per epoch (0: cycles until the epoch ends). A window also ends with its epoch.
struct ProfilerOptions {
  TESSERA_OPTION(bool, enabled) = false;
  TESSERA_OPTION(int64_t, skip_first) = 0;
  TESSERA_OPTION(int64_t, wait) = 0;
  TESSERA_OPTION(int64_t, warmup) = 1;
  TESSERA_OPTION(int64_t, active) = 4;
  TESSERA_OPTION(int64_t, repeat) = 1;
  /// Where the traces go; relative to the run folder unless absolute. Each window writes
  /// "ep<epoch>-ba<first traced batch>-rank<rank>.json".
  TESSERA_OPTION(std::string, folder) = "traces";
  /// Also record the torch operators (LibTorch's profiler, on the CPU threads that run them).
  TESSERA_OPTION(bool, torch_ops) = true;
  /// With torch_ops: each operator's input shapes in its arguments.
  TESSERA_OPTION(bool, record_shapes) = false;
  template <class V>
  void visit(V& v) {
    v("enabled", enabled_, "trace batches (a recipe's profiler section sets it unless it says otherwise)", Any{});
    v("skip_first", skip_first_, "batches of each epoch never traced", Range::at_least(0));
    v("wait", wait_, "untraced batches at the start of each cycle", Range::at_least(0));
    v("warmup", warmup_, "batches traced and discarded before the active ones", Range::at_least(0));
    v("active", active_, "batches traced and written per cycle", Range::at_least(1));
    v("repeat", repeat_, "cycles per epoch (0 = until the epoch ends)", Range::at_least(0));
    v("folder", folder_, "folder of the trace files (relative to run_dir unless absolute)", Any{});
    v("torch_ops", torch_ops_, "record the torch operators too", Any{});
    v("record_shapes", record_shapes_, "the operators' input shapes (with torch_ops)", Any{});
  }
};

/// Where the batches of one traced window went (the trace file has every span).
struct ProfiledWindow {
  std::string file;
  int64_t epoch = 0, first_batch = 0, last_batch = 0;
  /// Batches whose whole `batch` span is in the window (a failed run's last one is not); the means below are over them.
  int64_t complete_batches = 0;
  double batch_ms = 0;
  /// Per batch, in this order where they ran: dataloader, forward, loss, backward, optimizer_step.
  std::vector<std::pair<std::string, double>> phases_ms;
  /// Per batch, each algorithm's time over every event, slowest first.
  std::vector<std::pair<std::string, double>> algorithms_ms;
  /// In all, over the window (they happen once in a while).
  double evaluation_ms = 0, checkpoint_ms = 0;
  /// "per batch 53.5 ms: dataloader 0.305, forward 17.8, ..., selective_backprop 9.09[; evaluation 95 ms]"
  /// (the three slowest algorithms); "" without a complete batch.
  std::string describe() const;
  /// A JSON object of the fields above (run.json's profiler_windows entries; Python's trainer.profiled_windows).
  std::string to_json() const;
};

/// What the schedule does with a batch.
enum class ProfilerAction { Skip, Warmup, Active, ActiveAndSave };

/// The schedule's action for the batch `batch_in_epoch` of an epoch of `batches_per_epoch` batches (the last
/// batch of an epoch ends its window: ActiveAndSave).
ProfilerAction profiler_action(const ProfilerOptions& options, int64_t batch_in_epoch, int64_t batches_per_epoch);

}  // namespace tessera
