#include <fmt/format.h>
#include <tessera/callbacks/console_summary.h>

#include <cmath>
#include <iostream>
#include <utility>
#include <vector>

namespace tessera::callbacks {

ConsoleSummary::ConsoleSummary(ConsoleSummaryOptions options) : ConsoleSummary(std::move(options), nullptr) {}

ConsoleSummary::ConsoleSummary(ConsoleSummaryOptions options, std::ostream* out)
    : options_(std::move(options)), out_(out ? out : &std::cerr) {
  validate_options(options_, "console_summary");
}

void ConsoleSummary::run_event(Event event, State& state, Logger& logger) {
  if (state.rank != 0) return;
  if (event == Event::FitStart) {
    fit_start_ = std::chrono::steady_clock::now();
    fit_started_ = true;
  } else if (event == Event::FitEnd) {
    const double wall =
        fit_started_ ? std::chrono::duration<double>(std::chrono::steady_clock::now() - fit_start_).count()
                     : -1.0;
    *out_ << summary(state, wall);
    out_->flush();
  }
}

std::string ConsoleSummary::summary(const State& state, double wall_seconds) {
  const Timestamp& ts = state.timestamp;
  std::vector<std::pair<std::string, std::string>> rows;
  rows.emplace_back("epochs", std::to_string(ts.epoch));
  rows.emplace_back("batches", std::to_string(ts.batch));
  rows.emplace_back("samples", std::to_string(ts.sample));
  const double wall = wall_seconds >= 0 ? wall_seconds : ts.total_wct;
  rows.emplace_back("wall time", fmt::format("{:.2f} s", wall));
  if (ts.total_wct > 0 && wall_seconds >= 0)
    rows.emplace_back("train time", fmt::format("{:.2f} s", ts.total_wct));
  const double train_seconds = ts.total_wct > 0 ? ts.total_wct : wall;
  if (train_seconds > 0 && ts.sample > 0) {
    rows.emplace_back("throughput",
                      fmt::format("{:.1f} samples/s", static_cast<double>(ts.sample) / train_seconds));
  }
  if (auto it = state.metrics.find("loss/train/total"); it != state.metrics.end()) {
    rows.emplace_back("final train loss", fmt::format("{:.4f}", it->second));
  }
  for (const auto& [key, value] : state.metrics) {
    if (key.rfind("metrics/", 0) == 0) rows.emplace_back(key, fmt::format("{:.4f}", value));
  }

  size_t width = 0;
  for (const auto& row : rows) width = std::max(width, row.first.size());
  std::string out = "tessera: training summary\n";
  for (const auto& [name, value] : rows) out += fmt::format("  {:<{}}  {}\n", name, width, value);
  return out;
}

}  // namespace tessera::callbacks
