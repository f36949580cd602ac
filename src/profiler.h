#pragma once
// The trainer's profiler (private): records host-time spans of one window of batches at a time and writes each
// window as a Chrome trace-event JSON file (include/tessera/profiler.h has the settings and the schedule).
//
// The Engine reports each event it runs and each algorithm and callback in it; the profiler turns pairs of events
// into the trainer's phases between them (after before_forward ends and before after_forward begins: "forward").
// Nothing here runs, and nothing is measured, while no window is being recorded.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include <tessera/event.h>
#include <tessera/profiler.h>
#include <tessera/time.h>

namespace tessera {

class Logger;

class Profiler {
 public:
  /// `folder` is where the traces go (already resolved against the run folder); it is created here, so that a
  /// folder that cannot be made fails before step 1 (InputError).
  Profiler(ProfilerOptions options, std::string folder, int rank, int world_size, c10::Device device);
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  bool recording() const noexcept { return state_ != State::Off; }

  /// Before a training batch (the first of an epoch: before its epoch's start events): ends the window when the
  /// schedule says so (writing it), starts one when it says so. Idempotent for the same batch.
  void batch_begins(const Timestamp& next, int64_t batches_per_epoch, Logger& logger);
  /// The end of fit (or its failure): writes the window being recorded, if any. Never throws.
  void finish(Logger& logger) noexcept;

  /// Microseconds on the trace's time axis (the Unix epoch's, so that several ranks' traces line up).
  double now() const;
  /// The engine's reports (only while recording()).
  void event_begins(Event event, double at);
  void event_ends(Event event, double begin, double end);
  /// A span on the trainer's line: `name` ("algorithm/cutmix"), its category, and `event` (or nullptr).
  void span(std::string name, const char* category, double begin, double end, const char* event = nullptr);

  /// The windows written so far, in order (their files: absolute or run-folder-relative paths, as configured).
  const std::vector<ProfiledWindow>& windows() const noexcept { return windows_; }

 private:
  enum class State { Off, Warming, Active };
  struct Counter {  // memory at the end of an event: host resident set, the CUDA allocator's (-1: not sampled)
    double at;
    double host_rss_mb, cuda_allocated_mb, cuda_reserved_mb;
  };
  /// The CUDA allocator's counts on a CUDA device, and the host's resident set with `host`.
  void sample_memory(double at, bool host);
  struct Span {
    std::string name;
    const char* category;
    const char* event;
    double begin, end;
    int64_t batch;
  };
  struct TorchOp {  // one operator LibTorch's profiler recorded, on the trace's clock
    std::string name;
    uint64_t thread;
    double begin, end;
    std::vector<std::vector<int64_t>> shapes;  // with record_shapes
  };
  void start(State state, double at);
  /// Writes the window and stops recording; a file that cannot be written is a warning (training goes on).
  void write_window(Logger& logger);
  /// Where the window's batches went, from its spans.
  ProfiledWindow summarize() const;
  void stop_torch_ops();
  void reset_phases();

  ProfilerOptions options_;
  std::string folder_;
  int rank_, world_size_;
  c10::Device device_;
  std::chrono::steady_clock::time_point anchor_steady_;
  double anchor_us_ = 0;  // Unix time at anchor_steady_, microseconds

  State state_ = State::Off;
  int64_t decided_batch_ = -1;  // the batch batch_begins last decided on: the one running (-1 after finish)
  bool save_due_ = false;       // the last batch ended its cycle
  int64_t window_epoch_ = 0;
  int64_t first_batch_ = 0, last_batch_ = 0;
  double active_since_ = 0;     // spans and operators before it were warm-up
  std::vector<Span> spans_;
  std::vector<Counter> counters_;
  std::vector<double> phase_open_;  // per phase rule: when it opened, NaN when closed

  bool torch_on_ = false;
  bool torch_refused_ = false;  // torch's profiler was busy (someone else's): not tried again
  double torch_clock_at_ = 0;    // our clock at the clock scope (profiler.cpp)
  std::vector<TorchOp> torch_ops_;  // the window's, collected when torch's profiler stops
  std::vector<ProfiledWindow> windows_;
};

}  // namespace tessera
