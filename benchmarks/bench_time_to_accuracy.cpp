// Time to accuracy: recipes trained side by side in one process, alternating, over several seeds.
//
// For each seed, the baseline and every candidate recipe train in turn (the order rotates with the seed);
// test accuracy is recorded against training wall-clock time (evaluation time excluded) at every
// evaluation. The target is the median final accuracy of the baseline; the table reports, per recipe, the
// median final accuracy, the median training time, the median time to reach the target and the speed-up
// (baseline's median time to target / the recipe's), plus the recipe's accuracy against the baseline's at
// equal time (the baseline's accuracy when the recipe finished).
//
//   bench_time_to_accuracy --baseline base.yaml --candidate a.yaml [--candidate "b.yaml key=value ..." ...]
//                          [--seeds 3] [--set key=value ...] [--markdown out.md] [--runs DIR]
//   (--set applies an override to every recipe, e.g. --set max_duration=2ep; overrides after a candidate's path,
//   separated by spaces, apply to that candidate only. Checkpoints, callbacks and loggers are turned off; the
//   harness sets the seed: 1000, 1001, ...)
//   --runs DIR: each run writes DIR/<recipe name>-seed<seed>/ with metrics.jsonl and run.json (a JSONL logger is
//   added), the folders tessera-report reads (docs/report.md); without it nothing is written.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <tessera/tessera.h>

namespace {

using tessera::Event;

/// Records (training seconds, test accuracy) at every evaluation.
class Curve : public tessera::Callback {
 public:
  std::string name() const override { return "accuracy_curve"; }
  void run_event(Event event, tessera::State& state, tessera::Logger&) override {
    if (event != Event::EvalEnd) return;
    for (const auto& [key, value] : state.metrics) {
      if (key.rfind("metrics/", 0) == 0 && key.find("/train/") == std::string::npos &&
          key.size() > 9 && key.compare(key.size() - 9, 9, "/accuracy") == 0) {
        points.emplace_back(state.timestamp.total_wct, value);
      }
    }
  }
  std::vector<std::pair<double, double>> points;
};

struct Result {
  double final_accuracy = 0;
  double train_seconds = 0;
  std::vector<std::pair<double, double>> curve;
  double time_to(double target) const {
    for (const auto& [t, acc] : curve) {
      if (acc >= target) return t;
    }
    return std::numeric_limits<double>::infinity();
  }
  double accuracy_at(double seconds) const {
    double best = 0;
    for (const auto& [t, acc] : curve) {
      if (t <= seconds + 1e-9) best = acc;
    }
    return best;
  }
};

/// "path key=value ..." (a candidate with its own overrides) -> {path, overrides...}. A word that does not start
/// with `key=` continues the previous override, so values may contain spaces: "r.yaml algorithms=[{a: {b: 1}}]".
std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) {
    const size_t eq = w.find('=');
    const bool starts_override = eq != std::string::npos && eq > 0 &&
                                 std::all_of(w.begin(), w.begin() + eq, [](char c) {
                                   return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
                                 });
    if (words.size() > 1 && !starts_override) {
      words.back() += " " + w;
    } else {
      words.push_back(w);
    }
  }
  return words;
}

Result train(const std::string& candidate, uint64_t seed, const std::vector<std::string>& sets,
             const std::string& run_dir) {
  std::vector<std::string> words = split_words(candidate);
  std::vector<std::string> overrides = sets;
  overrides.insert(overrides.end(), words.begin() + 1, words.end());
  overrides.push_back("seed=" + std::to_string(seed));
  overrides.push_back("callbacks=[]");
  if (run_dir.empty()) {
    overrides.push_back("loggers=[]");
  } else {
    overrides.push_back("run_dir=" + run_dir);
    overrides.push_back("loggers=[{jsonl: {}}]");
  }
  overrides.push_back("checkpoint={}");  // no autoresume from an earlier run of the same recipe
  const tessera::Recipe recipe = tessera::Recipe::load(words.front(), overrides);
  tessera::Run run = tessera::build_run(recipe);
  auto curve = std::make_shared<Curve>();
  run.components.callbacks.push_back(curve);
  // The recipe text goes into run.json, where tessera-report finds the seeds of one recipe (docs/report.md).
  tessera::Trainer trainer(run.trainer, std::move(run.components), {}, recipe.text());
  trainer.fit();
  Result r;
  r.curve = curve->points;
  r.final_accuracy = r.curve.empty() ? 0 : r.curve.back().second;
  r.train_seconds = trainer.state().timestamp.total_wct;
  return r;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string seconds(double s) { return std::isinf(s) ? std::string("not reached") : fmt::format("{:.1f} s", s); }

}  // namespace

int main(int argc, char** argv) {
  std::string baseline, markdown, runs_dir;
  std::vector<std::string> candidates, sets;
  int seeds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--baseline") baseline = value();
    else if (a == "--candidate") candidates.push_back(value());
    else if (a == "--seeds") seeds = std::stoi(value());
    else if (a == "--set") sets.push_back(value());
    else if (a == "--markdown") markdown = value();
    else if (a == "--runs") runs_dir = value();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (baseline.empty()) {
    std::fprintf(stderr, "usage: %s --baseline base.yaml --candidate a.yaml [--seeds 3] [--set k=v] [--markdown out.md] [--runs DIR]\n", argv[0]);
    return 2;
  }
  std::vector<std::string> recipes{baseline};
  recipes.insert(recipes.end(), candidates.begin(), candidates.end());
  for (const auto& r : recipes) {
    if (split_words(r).empty()) {
      std::fprintf(stderr, "--baseline/--candidate: expected a recipe path and optional key=value overrides, got '%s'\n",
                   r.c_str());
      return 2;
    }
  }
  // Run folder names: the recipe file's stem, with its position when two recipes share a stem.
  std::map<std::string, std::string> names;
  for (size_t k = 0; k < recipes.size(); ++k) {
    std::string name = std::filesystem::path(split_words(recipes[k]).front()).stem().string();
    for (size_t j = 0; j < k; ++j) {
      if (names[recipes[j]] == name) name += "-" + std::to_string(k);
    }
    names[recipes[k]] = name;
  }
  std::map<std::string, std::vector<Result>> results;
  try {
    for (int s = 0; s < seeds; ++s) {
      for (size_t k = 0; k < recipes.size(); ++k) {
        const std::string& r = recipes[(k + s) % recipes.size()];  // rotate the order with the seed
        const std::string run_dir =
            runs_dir.empty() ? "" : fmt::format("{}/{}-seed{}", runs_dir, names[r], 1000 + s);
        Result res = train(r, 1000 + s, sets, run_dir);
        std::printf("seed %d  %-55s final %.2f%%  train %.1f s\n", 1000 + s, r.c_str(), 100 * res.final_accuracy,
                    res.train_seconds);
        std::string curve = "    curve (s: %):";
        for (const auto& [t, acc] : res.curve) curve += fmt::format(" {:.0f}: {:.2f}", t, 100 * acc);
        std::printf("%s\n", curve.c_str());
        std::fflush(stdout);
        results[r].push_back(std::move(res));
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::vector<double> base_final;
  for (const auto& r : results[baseline]) base_final.push_back(r.final_accuracy);
  const double target = median(base_final);
  std::vector<double> base_ttt;
  for (const auto& r : results[baseline]) base_ttt.push_back(r.time_to(target));
  const double base_time = median(base_ttt);
  std::vector<double> base_tt;
  for (const auto& r : results[baseline]) base_tt.push_back(r.train_seconds);
  const double base_train = median(base_tt);

  std::string table = fmt::format(
      "Target: the baseline's median final test accuracy, {:.2f}%. {} seeds each, alternating, one process.\n\n"
      "| recipe | final accuracy (median) | training time (median) | baseline time / recipe time | time to target "
      "(median; seeds that reached it) | speed-up to target | accuracy at equal time: recipe vs baseline "
      "|\n|---|---|---|---|---|---|---|\n",
      100 * target, seeds);
  for (const auto& r : recipes) {
    std::vector<double> fin, tt, ttt, base_at;
    for (size_t i = 0; i < results[r].size(); ++i) {
      const Result& x = results[r][i];
      fin.push_back(x.final_accuracy);
      tt.push_back(x.train_seconds);
      ttt.push_back(x.time_to(target));
      base_at.push_back(results[baseline][i].accuracy_at(x.train_seconds));
    }
    const double t = median(ttt);
    const auto reached = std::count_if(ttt.begin(), ttt.end(), [](double v) { return !std::isinf(v); });
    table += fmt::format("| {} | {:.2f}% | {:.1f} s | {:.2f}x | {} ({}/{}) | {} | {:.2f}% vs {:.2f}% |\n", r,
                         100 * median(fin), median(tt), base_train / median(tt), seconds(t), reached, ttt.size(),
                         std::isinf(t) || std::isinf(base_time) ? std::string("-") : fmt::format("{:.2f}x", base_time / t),
                         100 * median(fin), 100 * median(base_at));
  }
  std::printf("\n%s", table.c_str());
  if (!markdown.empty()) std::ofstream(markdown) << table;
  return 0;
}
