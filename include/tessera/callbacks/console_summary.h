#pragma once
/// A short table printed at the end of training.
///
///     tessera: training summary
///       epochs              3
///       batches             384
///       samples             12288
///       wall time           2.41 s
///       throughput          5098.8 samples/s
///       final train loss    0.2314
///       metrics/eval/accuracy  0.9121
#include <tessera/callback.h>
#include <tessera/options.h>

#include <chrono>
#include <iosfwd>
#include <string>

namespace tessera::callbacks {

struct ConsoleSummaryOptions {
  template <class V>
  void visit(V& v) {}
};

/// Prints the summary at FitEnd ("console_summary" in recipes). Only rank 0 prints.
class ConsoleSummary : public LoggerDestination {
 public:
  /// Prints to stderr.
  explicit ConsoleSummary(ConsoleSummaryOptions options = {});
  /// Prints to `out` (stderr when null).
  ConsoleSummary(ConsoleSummaryOptions options, std::ostream* out);

  std::string name() const override { return "console_summary"; }
  void run_event(Event event, State& state, Logger& logger) override;

  /// The table for the current state (what FitEnd prints). `wall_seconds` < 0: use the timestamp's
  /// total_wct.
  static std::string summary(const State& state, double wall_seconds = -1.0);

 private:
  ConsoleSummaryOptions options_;
  std::ostream* out_;
  std::chrono::steady_clock::time_point fit_start_{};
  bool fit_started_ = false;
};

}  // namespace tessera::callbacks
