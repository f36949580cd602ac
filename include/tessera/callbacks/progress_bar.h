#pragma once
/// A progress bar for training on the console.
///
///     auto bar = std::make_shared<tessera::callbacks::ProgressBar>(
///         tessera::callbacks::ProgressBarOptions().width(40));
///
/// On a terminal it redraws one line in place ('\r'): epoch k/K, batch i/N of the epoch, a bar, the latest
/// train loss, throughput and the estimated time left (the epoch's mean batch time times the batches left, plus the
/// evaluations left at the mean time of this process's evaluations so far: EvaluationClock, monitors.h). When the stream is not a terminal (a log file, CI)
/// it prints plain lines instead: at the 10% steps of an epoch, but at most one every `plain_seconds` of the
/// epoch (10 s by default, so that a log is not flooded by short epochs), plus one at the end of each epoch.
/// Evaluation results and warnings are printed on their own lines. Only rank 0 prints.
#include <tessera/callback.h>
#include <tessera/callbacks/monitors.h>
#include <tessera/options.h>

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <limits>
#include <map>
#include <optional>
#include <string>

namespace tessera::callbacks {

struct ProgressBarOptions {
  /// Number of characters of the bar itself.
  TESSERA_OPTION(int64_t, width) = 30;
  /// Minimum seconds between two redraws on a terminal.
  TESSERA_OPTION(double, refresh_seconds) = 0.2;
  /// Minimum seconds between two plain lines inside an epoch when not on a terminal (epoch ends always print).
  TESSERA_OPTION(double, plain_seconds) = 10;
  template <class V>
  void visit(V& v) {
    v("width", width_, "characters of the bar", Range::closed(1, 500));
    v("refresh_seconds", refresh_seconds_, "minimum seconds between redraws on a terminal",
      Range::at_least(0));
    v("plain_seconds", plain_seconds_,
      "minimum seconds between two in-epoch lines when not on a terminal (epoch ends always print)",
      Range::at_least(0));
  }
};

/// Progress bar logger destination ("progress_bar" in recipes).
class ProgressBar : public LoggerDestination {
 public:
  /// Prints to stderr; terminal mode when stderr is a terminal.
  explicit ProgressBar(ProgressBarOptions options = {});
  /// Prints to `out` (stderr when null). `terminal` forces in-place redraws (true) or plain lines (false);
  /// when unset, terminal mode is used when `out` is std::cerr/std::clog/std::cout and that file is a tty.
  ProgressBar(ProgressBarOptions options, std::ostream* out, std::optional<bool> terminal = std::nullopt);

  std::string name() const override { return "progress_bar"; }
  void run_event(Event event, State& state, Logger& logger) override;
  /// Collects eval values ("metrics/<label>/<name>", label != "train"; not the parts "<name>/class_3") to print at
  /// EvalEnd.
  void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) override;
  /// Prints "tessera: <level>: <text>" on its own line.
  void log_text(const std::string& level, const std::string& text) override;
  /// The bar shows warnings (on rank 0; other ranks stay silent on purpose).
  bool shows_text() const override { return true; }
  /// Ends a line left open by an in-place redraw.
  void close() override;

  const ProgressBarOptions& options() const noexcept { return options_; }
  /// Whether the bar redraws in place.
  bool terminal() const noexcept { return terminal_; }

 private:
  using Clock = std::chrono::steady_clock;
  /// Where the bar is: copied at BatchEnd so that EpochEnd/FitEnd can redraw it whatever the trainer did to
  /// the in-epoch counters meanwhile.
  struct Snapshot {
    bool valid = false;
    int64_t epoch = 0;            // 0-based epoch being trained
    int64_t batch = 0;            // batches done in the run
    int64_t batch_in_epoch = 0;   // batches done in the epoch
    int64_t sample_in_epoch = 0;  // samples done in the epoch
    double seconds = 0.0;         // seconds spent in the epoch
    double loss = std::numeric_limits<double>::quiet_NaN();
    double eval_seconds_left = 0.0;  // the evaluations still to come
  };
  int64_t epoch_batches(const TimeContext& time) const;
  /// The status line for the snapshot (no '\r' or newline).
  std::string status_line(const TimeContext& time) const;
  void draw(const TimeContext& time);
  void finish_epoch_line(const TimeContext& time);
  void end_open_line();
  void print_eval(const State& state);

  ProgressBarOptions options_;
  std::ostream* out_;
  bool terminal_ = false;
  int rank_ = 0;
  bool line_open_ = false;       // a '\r' line is on screen without its newline
  size_t last_line_length_ = 0;  // to blank leftovers of a longer previous line
  Clock::time_point epoch_start_{};
  Clock::time_point last_draw_{};
  bool drawn_once_ = false;
  bool epoch_line_pending_ = false;  // batches ran since the last end-of-epoch line
  int64_t last_decile_ = 0;          // plain mode: last 10% step printed
  double last_plain_seconds_ = 0.0;  // plain mode: epoch seconds at the last line (0 at the epoch start)
  double latest_loss_ = std::numeric_limits<double>::quiet_NaN();
  Snapshot snapshot_;
  EvaluationClock evaluations_;
  std::map<std::string, double> pending_eval_;
};

}  // namespace tessera::callbacks
