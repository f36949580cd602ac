#pragma once
// What changed between the recipe a checkpoint was written by and the recipe of the run resuming it
// (autoresume compares them: checkpoint.resume_changed_recipe in checkpoint.h).
#include <string>
#include <utility>
#include <vector>

namespace tessera::checkpoint {

struct RecipeChange {
  std::string path;    ///< "optimizer.sgd.lr", "algorithms[1].label_smoothing.smoothing"
  std::string before;  ///< the checkpoint's value as YAML ("(absent)" when it had none)
  std::string after;   ///< the current value
  bool alters_training = true;
};

/// The differences between two recipe texts, value by value (maps by key, lists by position), in the order
/// of the keys. Changes under max_duration, run_dir, threads, log_interval, eval_interval, device, loggers,
/// callbacks, checkpoint and data.eval do not alter what trains; every other one does.
std::vector<RecipeChange> recipe_changes(const std::string& before, const std::string& after);

/// Every value of a recipe text by its path ("optimizer.sgd.lr" -> "0.1"; "~" for null, "{}" and "[]" for empty
/// maps and lists), in document order: what the Trainer logs as the run's hyperparameters.
std::vector<std::pair<std::string, std::string>> recipe_values(const std::string& text);

/// "optimizer.sgd.lr: 0.1 -> 0.3; seed: (absent) -> 7".
std::string describe(const std::vector<RecipeChange>& changes);

}  // namespace tessera::checkpoint
