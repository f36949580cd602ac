// The run summary: run_dir/run.json (when the run writes to that folder), written when fit() ends (completed, stopped, interrupted or failed), for
// people and for tessera-report (docs/report.md): the recipe, the plan with its reasons, what ran and the time
// it took, the final metrics and where the run ended.
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include <tessera/models/model.h>
#include <tessera/trainer.h>

#include "checkpoint/checkpoint_file.h"

namespace tessera {

void Trainer::write_run_summary(const std::string& status) const noexcept {
  // Only into a run folder the run writes to (metric files, checkpoints): a Trainer used without files leaves none.
  if (state_.rank != 0) return;  // data-parallel: rank 0 writes the run's files (docs/distributed.md)
  std::error_code ec;
  if (options_.run_dir().empty() || !std::filesystem::is_directory(options_.run_dir(), ec)) return;
  const std::string path = (std::filesystem::path(options_.run_dir()) / "run.json").string();
  try {
    const State& s = state_;
    nlohmann::ordered_json j;
    j["format"] = "tessera-run-summary/1";
    j["status"] = status;
    if (!failure_.empty()) j["error"] = failure_;
    j["recipe"] = recipe_text_;
    j["seed"] = s.seed;
    j["device"] = s.device.str();
    j["max_duration"] = s.time.max_duration.str();
    j["batches_per_epoch"] = s.time.batches_per_epoch;
    j["samples_per_epoch"] = s.time.samples_per_epoch;
    j["timestamp"] = {{"epoch", s.timestamp.epoch}, {"batch", s.timestamp.batch}, {"sample", s.timestamp.sample},
                      {"train_seconds", s.timestamp.total_wct}};
    j["metrics"] = nlohmann::ordered_json::object();
    for (const auto& [key, value] : s.metrics) j["metrics"][key] = value;
    nlohmann::ordered_json events = nlohmann::ordered_json::array();
    const Plan& plan = engine_->plan();
    for (int e = 0; e < kNumEvents; ++e) {
      const auto& entries = plan.at(static_cast<Event>(e));
      if (entries.empty()) continue;
      nlohmann::ordered_json algorithms = nlohmann::ordered_json::array();
      for (const PlanEntry& entry : entries) {
        algorithms.push_back({{"name", entry.algorithm->name()}, {"reasons", entry.reasons}});
      }
      events.push_back({{"event", event_name(static_cast<Event>(e))}, {"algorithms", algorithms}});
    }
    j["plan"] = {{"events", events}, {"warnings", plan.warnings()}};
    j["trace"] = nlohmann::ordered_json::object();
    for (const auto& [key, r] : engine_->trace()) {
      j["trace"][key] = {{"count", r.count}, {"first_batch", r.first_batch}, {"last_batch", r.last_batch},
                         {"seconds", r.seconds}};
    }
    if (profiler_) {
      nlohmann::ordered_json windows = nlohmann::ordered_json::array();
      for (const ProfiledWindow& w : profiled_windows()) windows.push_back(nlohmann::ordered_json::parse(w.to_json()));
      j["profiler_windows"] = windows;
    }
    if (status != "failed") j["weights_fingerprint"] = weights_fingerprint(*s.model);
    checkpoint::write_text_atomically(path, j.dump(1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n");
  } catch (const std::exception& e) {
    // The summary is a report, not the run: a failure to write it must not replace the run's own outcome.
    std::cerr << "tessera: warning: could not write the run summary " << path << ": " << e.what() << "\n";
  }
}

}  // namespace tessera
