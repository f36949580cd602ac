#pragma once
/// The registry: recipe names -> components, and a whole run built from a recipe.
///
///     auto recipe = tessera::Recipe::load("examples/recipes/fashion_mnist_resnet.yaml", {"seed=7"});
///     tessera::Run run = tessera::build_run(recipe);
///     tessera::Trainer trainer(run.trainer, run.components);
///     trainer.fit();
///
/// One explicit list per kind (src/registry.cpp) maps a recipe name to a factory that reads the
/// component's Options from the recipe and constructs it. The kinds are "algorithms", "models", "datasets",
/// "transforms", "optimizers", "schedulers", "callbacks", "loggers" and "metrics". The recipe schema is in
/// docs/recipes.md.
#include <tessera/algorithm.h>
#include <tessera/checkpoint.h>
#include <tessera/recipe.h>
#include <tessera/trainer.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

/// Everything a recipe describes, built and ready for a Trainer.
struct Run {
  TrainerOptions trainer;
  Components components;
  CheckpointOptions checkpoint;
  /// The recipe name of the model ("resnet").
  std::string model_name;
  /// The files the logger destinations write (paths resolved against run_dir), in recipe order.
  std::vector<std::string> metric_files;
  /// The recipe's root, and the recipe node each part was built from, by the part's address (the data sources,
  /// model, optimizer, each schedule, algorithm, callback and logger): make_trainer points the Trainer's errors
  /// about a part (InputError::subject) at its line.
  ConfigNode recipe_root;
  std::vector<std::pair<const void*, ConfigNode>> sources;
};

/// Parts of a run given as objects instead of recipe sections: the user's own model and data (the Python API
/// passes a torch.nn.Module and DataLoaders this way; C++ callers may too).
struct GivenParts {
  /// Replaces the recipe's `model:` section, which must then be absent; the optimizer is built over its
  /// parameters.
  std::shared_ptr<Model> model;
  /// The name the run reports for `model` ("user").
  std::string model_name = "user";
  /// Replaces the recipe's `data.train`, which must then be absent.
  std::shared_ptr<data::BatchSource> train_data;
  /// The training metrics of `train_data` (default: accuracy); only with `train_data`.
  std::optional<std::vector<std::shared_ptr<Metric>>> train_metrics;
  /// Evaluators added after those of the recipe's `data.eval` (labels must stay distinct); they run every
  /// `eval_interval` of the recipe.
  std::vector<Evaluator> evaluators;
};

/// Builds a run from a recipe, in order: trainer and checkpoint options, data (train, then eval), model
/// (in_channels/in_features/num_classes left at 0 are filled from the training data), optimizer over the
/// model's parameters, schedulers, algorithms, callbacks, loggers, evaluators. Seeds torch from the recipe's
/// seed before building the model so that initial weights are reproducible. Creates nothing on disk
/// except through the loggers. Throws InputError with the location of the first problem.
Run build_run(const Recipe& recipe, const GivenParts& given = {});

/// build_run, then a Trainer with the recipe's checkpoint options (whose constructor compiles the plan, so refused
/// algorithm combinations throw InputError here, and loads or resumes what the checkpoint section asks for).
std::unique_ptr<Trainer> make_trainer(const Recipe& recipe);

/// The Trainer of a run built by build_run (changed since, or not). The InputErrors its constructor throws are
/// given the recipe's file:line:col: of the part they are about (an evaluator of other classes, an early stopper
/// watching a metric no evaluator has, algorithms that cannot run together), or of the option they name
/// ("checkpoint.interval: ..."); others pass unchanged.
std::unique_ptr<Trainer> make_trainer(Run run, const std::string& recipe_text);

/// The same, for a caller whose plugins may keep references into the Trainer from its Init event on (the Python
/// bindings hand their plugins views of its State and Logger): `out` holds the Trainer from before Init, so that when
/// Init or a later step throws (a checkpoint that does not load), `out` still holds it, its callbacks closed, and
/// what the plugins kept stays valid for as long as the caller keeps `out`.
void make_trainer(Run run, const std::string& recipe_text, std::unique_ptr<Trainer>& out);

/// The recipe names registered for `kind` ("models", "algorithms", ...; the singular works too), sorted.
/// InputError for an unknown kind.
std::vector<std::string> registered_names(const std::string& kind);

/// Builds one algorithm from a `{name: {options}}` node (or a bare name, for default options).
std::shared_ptr<Algorithm> make_algorithm(const ConfigNode& node);

/// docs/interactions.md, generated from the engine: every registered algorithm's declared spec, and for
/// every pair (default options) the events both act on, their order there in either recipe order with the
/// reasons, and refused or warned combinations. `tessera-run --interactions` prints it.
std::string interactions_markdown();

}  // namespace tessera
