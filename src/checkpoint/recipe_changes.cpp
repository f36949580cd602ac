#include "recipe_changes.h"

#include <map>
#include <set>
#include <utility>

#include <tessera/recipe.h>

namespace tessera::checkpoint {
namespace {

/// Every scalar (and empty value) of `node`, by key path, in document order.
void flatten(const ConfigNode& node, const std::string& path, std::vector<std::pair<std::string, std::string>>& out) {
  if (node.is_map()) {
    if (node.size() == 0) out.emplace_back(path, "{}");
    for (const auto& key : node.keys()) flatten(node.child(key), path.empty() ? key : path + "." + key, out);
  } else if (node.is_sequence()) {
    if (node.size() == 0) out.emplace_back(path, "[]");
    const auto items = node.elements();
    for (size_t i = 0; i < items.size(); ++i) flatten(items[i], path + "[" + std::to_string(i) + "]", out);
  } else {
    out.emplace_back(path, node.is_null() ? "~" : node.scalar());
  }
}

bool alters_training(const std::string& path) {
  static const std::set<std::string> harmless = {"max_duration", "run_dir", "threads",   "log_interval", "eval_interval",
                                                 "device",       "loggers", "callbacks", "checkpoint",   "profiler"};
  const std::string top = path.substr(0, path.find_first_of(".["));
  if (harmless.count(top) != 0) return false;
  return !(path.rfind("data.eval", 0) == 0);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> recipe_values(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  flatten(Recipe::parse(text, "<recipe>").root(), "", out);
  return out;
}

std::vector<RecipeChange> recipe_changes(const std::string& before, const std::string& after) {
  std::vector<std::pair<std::string, std::string>> a;
  flatten(Recipe::parse(before, "<checkpoint recipe>").root(), "", a);
  const auto b = recipe_values(after);
  const std::map<std::string, std::string> old_values(a.begin(), a.end());
  std::set<std::string> seen;
  std::vector<RecipeChange> out;
  for (const auto& [path, value] : b) {
    seen.insert(path);
    auto it = old_values.find(path);
    const std::string old = it == old_values.end() ? "(absent)" : it->second;
    if (old != value) out.push_back({path, old, value, alters_training(path)});
  }
  for (const auto& [path, value] : a) {
    if (seen.count(path) == 0) out.push_back({path, value, "(absent)", alters_training(path)});
  }
  return out;
}

std::string describe(const std::vector<RecipeChange>& changes) {
  std::string out;
  for (const auto& c : changes) out += (out.empty() ? "" : "; ") + c.path + ": " + c.before + " -> " + c.after;
  return out;
}

}  // namespace tessera::checkpoint
