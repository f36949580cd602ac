#pragma once
/// The composition engine: orders algorithms per event, refuses impossible combinations, runs events.
///
/// The plan is compiled once, before step 1, from the algorithms in recipe order:
///   * per event, the algorithms that act on it, in recipe order on before/start events and reversed on
///     after_* events (so paired changes undo in reverse), then declared OrderRules override both (a
///     stable topological sort; a cycle is an InputError naming the cycle);
///   * hard conflicts and repeated algorithms are InputErrors with the reasons; soft conflicts and
///     multiple loss interpolators are warnings;
///   * each algorithm's `check(state)` runs, so misconfigurations surface here.
/// At run time, per event: algorithms (those whose `match` is true, in plan order), then callbacks, then
/// logger destinations (at Init: loggers first). Every algorithm call is recorded in the Trace.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <tessera/algorithm.h>
#include <tessera/callback.h>
#include <tessera/event.h>

namespace tessera {

class Profiler;  // src/profiler.h: the trainer's, when TrainerOptions::profiler is enabled

/// One algorithm at one event in the plan, with why it is where it is when a rule moved it.
struct PlanEntry {
  /// Not owned: the algorithm passed to compile_plan (an Engine's, or a Trainer's through it). A Plan, and the
  /// entries copied from it, are valid only while those algorithms live.
  Algorithm* algorithm = nullptr;
  std::vector<std::string> reasons;
};

class Plan {
 public:
  /// The algorithms acting on `event`, in run order.
  const std::vector<PlanEntry>& at(Event event) const { return per_event_[static_cast<int>(event)]; }
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }
  /// A readable table: one block per event with the ordered algorithms and the reasons for the order,
  /// then the warnings.
  std::string table() const;
  /// Names per event as JSON text: {"after_dataloader": ["selective_backprop", ...], ...}.
  std::string to_json() const;

 private:
  friend Plan compile_plan(const std::vector<Algorithm*>&, const State*);
  std::vector<std::vector<PlanEntry>> per_event_ = std::vector<std::vector<PlanEntry>>(kNumEvents);
  std::vector<std::string> warnings_;
};

/// Compiles the plan (see the file comment). `state` may be null (no run-specific checks).
/// Throws InputError listing every refused combination with its reason.
Plan compile_plan(const std::vector<Algorithm*>& algorithms, const State* state = nullptr);

/// Dependencies between two algorithms across events, which no per-event order governs: one writes a resource at
/// one event that the other reads or writes at another event (blurpool's surgery at init changes the layers that
/// layer freezing lists at epoch_end; layer freezing's requires_grad at epoch_end changes what EMA averages at
/// batch_end). One line each, "<a> writes <resource> at <event>; <b> reads it at <event>", in the order of the
/// specs' accesses; empty when the two share no resource across events.
std::vector<std::string> cross_event_dependencies(const AlgorithmSpec& a, const AlgorithmSpec& b);

/// What ran: per "algorithm/event", how many times, at which batches first and last, and the host time its
/// apply() took in all (on CUDA, kernels run asynchronously: their launch, not their run).
struct TraceRecord {
  int64_t count = 0;
  int64_t first_batch = -1;
  int64_t last_batch = -1;
  double seconds = 0.0;
};
using Trace = std::map<std::string, TraceRecord>;

class Engine {
 public:
  Engine(std::vector<std::shared_ptr<Algorithm>> algorithms, std::vector<std::shared_ptr<Callback>> callbacks);

  /// Compiles (or recompiles) the plan against the run; throws InputError on refused combinations.
  const Plan& compile(const State& state);
  const Plan& plan() const noexcept { return plan_; }

  /// Runs one event: algorithms, callbacks, loggers.
  void run_event(Event event, State& state);
  /// Calls close() on every callback (idempotent).
  void close();

  /// Reports each event, algorithm and callback to `profiler` while it records (null: none; not owned).
  void set_profiler(Profiler* profiler) noexcept { profiler_ = profiler; }

  Logger& logger() noexcept { return logger_; }
  const Trace& trace() const noexcept { return trace_; }
  const std::vector<std::shared_ptr<Algorithm>>& algorithms() const noexcept { return algorithms_; }
  const std::vector<std::shared_ptr<Callback>>& callbacks() const noexcept { return callbacks_; }

 private:
  std::vector<std::shared_ptr<Algorithm>> algorithms_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::vector<Callback*> plain_callbacks_;
  std::vector<Callback*> loggers_;
  Logger logger_;
  Plan plan_;
  Trace trace_;
  // trace keys precomputed per (event, algorithm) so the hot path does no string work
  std::vector<std::vector<TraceRecord*>> trace_slots_;
  Profiler* profiler_ = nullptr;
  bool closed_ = false;
};

}  // namespace tessera
