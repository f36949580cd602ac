// tessera-run: trains a model from a YAML recipe (schema: docs/recipes.md).
//
//   tessera-run RECIPE [key.path=value ...] [--plan] [--dry-run] [--print-recipe] [--nproc N]
//
// Under torchrun (or srun), each rank runs this program and the Trainer joins the process group from the
// environment; --nproc N starts N local ranks itself (docs/distributed.md).
//
// Exit codes: 0 success, 2 bad input (recipe, overrides, refused algorithm combinations, invalid
// checkpoints), 128 + signal when stopped by SIGTERM/SIGINT (after writing a checkpoint), 1 anything else.
// The last line of a finished run is `weights-fingerprint: <16 hex digits>` (tessera::weights_fingerprint).
#include <fmt/format.h>
#include <tessera/device.h>
#include <tessera/distributed/launcher.h>
#include <tessera/callbacks/metric_writers.h>
#include <tessera/data/tokenizer.h>
#include <tessera/error.h>
#include <tessera/models/generate.h>
#include <tessera/models/huggingface.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
#include <tessera/trainer.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cerrno>
#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

namespace {

/// The "cpu threads:" line: what choose_openmp_waiting chose, or what the user set.
std::string openmp_waiting_note() {
  if (const char* chosen = std::getenv("TESSERA_OPENMP_WAITING")) return chosen;
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const char* spins = std::getenv("GOMP_SPINCOUNT");
  return fmt::format("OpenMP waiting as set in the environment: OMP_WAIT_POLICY={}, GOMP_SPINCOUNT={}",
                     policy ? policy : "(unset)", spins ? spins : "(unset)");
}

std::string join(const std::vector<std::string>& items, const std::string& none = "none") {
  if (items.empty()) return none;
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

/// 1234567 -> "1,234,567".
std::string grouped(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string describe_loader(const tessera::data::BatchSource& source) {
  if (const auto* loader = dynamic_cast<const tessera::data::DataLoader*>(&source)) {
    return fmt::format("{}: {} examples in {} batches of {}", loader->dataset().describe(), loader->num_samples(),
                       loader->num_batches(), loader->options().batch_size());
  }
  return fmt::format("{}: {} examples in {} batches", source.describe(), source.num_samples(), source.num_batches());
}

/// The --dry-run paragraph.
std::string summary(const tessera::Recipe& recipe, const tessera::Run& run) {
  const tessera::Components& c = run.components;
  int64_t params = 0;
  for (const auto& p : c.model->parameters()) params += p.numel();
  tessera::TimeContext time;
  time.max_duration = run.trainer.max_duration();
  time.batches_per_epoch = c.train_dataloader->num_batches();
  time.samples_per_epoch = c.train_dataloader->num_samples();
  const auto steps = static_cast<int64_t>(std::ceil(time.total_batches()));

  std::string out = fmt::format(
      "dry run of {}: model {} with {} parameters; training data {} per epoch; "
      "max_duration {} = {} steps",
      recipe.path(), run.model_name, grouped(params), describe_loader(*c.train_dataloader),
      run.trainer.max_duration().str(), grouped(steps));
  std::vector<std::string> train_metrics;
  for (const auto& m : c.train_metrics) train_metrics.push_back(m->name());
  out += "; train metrics: " + join(train_metrics);
  for (const auto& ev : c.evaluators) {
    std::vector<std::string> names;
    for (const auto& m : ev.metrics) names.push_back(m->name());
    out += fmt::format("; evaluator \"{}\" on {} every {}{} (metrics: {})", ev.label,
                       describe_loader(*ev.dataloader), ev.interval.str(),
                       ev.subset_batches >= 0 ? fmt::format(", at most {} batches", ev.subset_batches) : "",
                       join(names));
  }
  std::vector<std::string> schedulers, algorithms, callbacks;
  for (const auto& s : c.schedulers) schedulers.push_back(s->name());
  for (const auto& a : c.algorithms) algorithms.push_back(a->name());
  for (const auto& cb : c.callbacks) callbacks.push_back(cb->name());
  out += "; device " + tessera::resolve_device(run.trainer.device()).str();
  out += fmt::format("; optimizer {}; schedulers: {}; algorithms: {}; callbacks and loggers: {}",
                     c.optimizer->name(), join(schedulers), join(algorithms), join(callbacks));
  out += "; metrics files: " + join(run.metric_files);
  const tessera::CheckpointOptions ck = tessera::resolve_against_run_dir(run.checkpoint, run.trainer.run_dir());
  out += "; checkpoints: " +
         (ck.folder().empty() ? std::string("none")
                              : fmt::format("{} every {}, keeping {}{}", ck.folder(), ck.interval().str(), ck.keep(),
                                            ck.autoresume() ? ", autoresume" : ""));
  if (!ck.load_path().empty()) out += fmt::format("; loads {}{}", ck.load_path(), ck.weights_only() ? " (weights only)" : "");
  out += ". Everything was validated and built; no training was run.\n";
  return out;
}

/// "accuracy" values as percentages, everything else as a plain number.
std::string format_metric(const std::string& name, double value) {
  const std::string suffix = "accuracy";
  const bool is_accuracy =
      name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  return is_accuracy ? fmt::format("{:.2f}%", 100.0 * value) : fmt::format("{:.4f}", value);
}

/// What tessera-run does with the run it builds: train it (the default), or one of the flags.
struct Actions {
  bool plan = false, dry_run = false, print_recipe = false;
  bool evaluate = false;             ///< --evaluate
  std::vector<std::string> prompts;  ///< --generate
  std::string generate_options;      ///< --generate-options: a YAML mapping of generate's options
  std::string export_path;           ///< --export: a safetensors file of the weights
  std::string export_huggingface;    ///< --export-huggingface: a Hugging Face GPT-2 or Llama folder
  bool uses_trained_weights() const {
    return evaluate || !prompts.empty() || !export_path.empty() || !export_huggingface.empty();
  }
};

/// The byte-level BPE tokenizer of the recipe's text data (data.train.dataset.text.tokenizer), or null when its
/// tokens are bytes.
std::shared_ptr<const tessera::data::Tokenizer> recipe_tokenizer(const tessera::Recipe& recipe) {
  const tessera::ConfigNode path = recipe.root().child("data").child("train").child("dataset").child("text").child("tokenizer");
  if (!path.is_scalar() || path.as_string().empty()) return nullptr;
  return std::make_shared<const tessera::data::Tokenizer>(tessera::data::Tokenizer::load(path.as_string()));
}

/// --evaluate, --generate, --export and --export-huggingface: the weights of the checkpoint the recipe loads,
/// evaluated by every evaluator, continuing the prompts (in the tokens of the recipe's text data), written as a
/// safetensors file and as a Hugging Face GPT-2 folder, without training. Without a checkpoint, a gpt model that
/// starts from a Hugging Face GPT-2 folder (`pretrained`) has those weights.
int use_trained_weights(tessera::Trainer& trainer, const Actions& actions, const tessera::Recipe& recipe) {
  const auto* pretrained = dynamic_cast<const tessera::GPT*>(trainer.state().model.get());
  const std::string folder = pretrained != nullptr ? pretrained->options().pretrained() : "";
  if (trainer.loaded_checkpoint().empty() && folder.empty()) {
    throw tessera::InputError(
        "--evaluate, --generate and the exports use trained weights, and the recipe loads none: give "
        "checkpoint.load_path=FILE, "
        "or a checkpoint.folder that holds checkpoints with checkpoint.autoresume=true (or a gpt model's "
        "pretrained: a Hugging Face GPT-2 folder)");
  }
  const tessera::Timestamp& ts = trainer.state().timestamp;
  if (trainer.loaded_checkpoint().empty()) {
    std::cerr << fmt::format("tessera-run: weights from {} (the pretrained Hugging Face GPT-2 checkpoint)\n", folder);
  } else {
    std::cerr << fmt::format("tessera-run: weights from {} (epoch {}, batch {})\n", trainer.loaded_checkpoint(),
                             ts.epoch, ts.batch);
  }
  tessera::GenerateOptions options;
  if (!actions.generate_options.empty()) {
    tessera::read_options(tessera::Recipe::parse(actions.generate_options, "--generate-options").root(), options,
                          "--generate-options");
  }
  tessera::Model& model = *trainer.state().model;
  const auto tokenizer =
      actions.prompts.empty() && actions.export_huggingface.empty() ? nullptr : recipe_tokenizer(recipe);
  options = tessera::resolve_eos_text(options, tokenizer.get());
  const int64_t vocab = tokenizer ? tokenizer->vocab_size() : 256;
  if (!actions.prompts.empty() && model.num_classes() != vocab) {
    throw tessera::InputError(fmt::format(
        "--generate continues text and needs a language model of the recipe's text vocabulary ({} tokens: {}), as "
        "the gpt model on that data has; this model has {} classes",
        vocab, tokenizer ? "its tokenizer's" : "bytes", model.num_classes()));
  }
  for (const std::string& prompt : actions.prompts) {
    if (prompt.empty()) throw tessera::InputError("--generate: a prompt is empty; give at least one byte of text");
  }
  if (actions.evaluate) {
    for (const auto& [key, value] : trainer.evaluate()) std::cout << fmt::format("{}: {}\n", key, value);
  }
  for (const std::string& prompt : actions.prompts) {
    const at::Tensor tokens =
        tessera::generate(model, tessera::text_to_tokens(prompt, tokenizer.get()).unsqueeze(0), options);
    std::cout << tessera::tokens_to_text(tokens[0], tokenizer.get()) << "\n";
  }
  if (!actions.export_path.empty()) {
    trainer.export_weights(actions.export_path);
    std::cerr << fmt::format("tessera-run: wrote the model's {} weights to {} (safetensors)\n",
                             model.named_parameters().size() + model.named_buffers().size(), actions.export_path);
  }
  if (!actions.export_huggingface.empty()) {
    tessera::save_huggingface(model, actions.export_huggingface, tokenizer.get());
    std::cerr << fmt::format("tessera-run: wrote a Hugging Face checkpoint to {} (config.json, model.safetensors{}: "
                             "transformers' AutoModelForCausalLM.from_pretrained reads it)\n",
                             actions.export_huggingface, tokenizer ? ", the data's tokenizer.json" : "");
  }
  std::cout << std::flush;
  return 0;
}

int run(const std::string& recipe_path, const std::vector<std::string>& overrides, const Actions& actions) {
  const bool plan = actions.plan, dry_run = actions.dry_run;
  const tessera::Recipe recipe = tessera::Recipe::load(recipe_path, overrides);
  if (actions.print_recipe) std::cout << recipe.text() << std::flush;
  tessera::Run run = tessera::build_run(recipe);
  const std::vector<std::string> metric_files = run.metric_files;
  const tessera::CheckpointOptions checkpoint = tessera::resolve_against_run_dir(run.checkpoint, run.trainer.run_dir());
  const std::string dry_summary = dry_run ? summary(recipe, run) : "";
  if (plan || dry_run) {
    // No checkpoint is loaded: the plan and the summary depend on the recipe alone.
    run.checkpoint.autoresume(false).load_path("");
  }
  if (actions.uses_trained_weights()) {
    // The run's metric files stay as the training left them (a loaded checkpoint would cut them back to its batch).
    auto& callbacks = run.components.callbacks;
    callbacks.erase(std::remove_if(callbacks.begin(), callbacks.end(),
                                   [](const std::shared_ptr<tessera::Callback>& c) {
                                     return dynamic_cast<tessera::callbacks::JsonlWriter*>(c.get()) != nullptr ||
                                            dynamic_cast<tessera::callbacks::CsvWriter*>(c.get()) != nullptr;
                                   }),
                    callbacks.end());
  }
  // Errors the Trainer finds (an evaluator of other classes, algorithms that cannot run together) at the recipe's
  // line too.
  const std::unique_ptr<tessera::Trainer> built = tessera::make_trainer(std::move(run), recipe.text());
  tessera::Trainer& trainer = *built;
  if (plan) {
    std::cout << trainer.plan().table() << std::flush;
    return 0;
  }
  if (dry_run) {
    std::cout << dry_summary << std::flush;
    return 0;
  }
  if (actions.uses_trained_weights()) return use_trained_weights(trainer, actions, recipe);

  if (!trainer.loaded_checkpoint().empty()) {
    const tessera::Timestamp& ts = trainer.state().timestamp;
    std::cerr << fmt::format("tessera-run: resumed from {} (epoch {}, batch {})\n", trainer.loaded_checkpoint(),
                             ts.epoch, ts.batch);
  }
  const auto start = std::chrono::steady_clock::now();
  trainer.fit();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // "metrics/<label>/<name>" -> "final <label> <name>: <value>"
  const std::string prefix = "metrics/";
  for (const auto& [key, value] : trainer.state().metrics) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = key.substr(prefix.size());
    const size_t slash = rest.find('/');
    if (slash == std::string::npos) continue;
    const std::string label = rest.substr(0, slash), name = rest.substr(slash + 1);
    std::cout << "final " << label << " " << name << ": " << format_metric(name, value) << "\n";
  }
  std::cout << "device: " << trainer.state().device.str() << "\n";
  std::cout << "cpu threads: " << openmp_waiting_note() << "\n";
  if (const std::string note = tessera::choose_blas_kernels(); !note.empty()) std::cout << "cpu kernels: " << note << "\n";
  std::cout << fmt::format("wall time: {:.1f} s\n", seconds);
  std::cout << "metrics written to: " << join(metric_files) << "\n";
  if (checkpoint.folder().empty()) {
    std::cout << "checkpoints: none\n";
  } else {
    std::cout << "checkpoints: " << checkpoint.folder() << " (latest: "
              << (trainer.last_checkpoint().empty() ? trainer.loaded_checkpoint() : trainer.last_checkpoint()) << ")\n";
  }
  if (const auto traces = trainer.traces(); !traces.empty()) {  // the profiler's windows (docs/recipes.md, "Profiling")
    std::vector<std::string> names;
    for (const auto& t : traces) names.push_back(std::filesystem::path(t).filename().string());
    if (names.size() > 4) names = {names.front(), "...", names.back()};
    std::cout << "profiler traces: " << std::filesystem::path(traces.front()).parent_path().string() << " ("
              << traces.size() << (traces.size() == 1 ? " window: " : " windows: ") << join(names) << ")\n";
  }
  if (trainer.skipped_batches() > 0) {
    std::cout << "skipped batches (non-finite loss): " << trainer.skipped_batches() << "\n";
  }
  std::cout << "weights-fingerprint: " << tessera::weights_fingerprint(*trainer.state().model) << "\n" << std::flush;
  return 0;
}

/// How OpenMP's threads wait between parallel regions, chosen for this run on this machine when the user has
/// not chosen (neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set). Spinning wakes fastest but holds a core;
/// sleeping frees the core but each wake-up costs microseconds. With R ranks on this machine, T intra-op threads
/// and W loader threads each, and C cores:
///   R*(T+W) <= C  every busy thread has a core of its own: spin (ACTIVE);
///   R*T <= C      the compute threads fit, the loader's share them: spin up to 300,000 times (libgomp's own
///                 default, a few milliseconds), then sleep;
///   otherwise     more compute threads than cores: a spinning thread would take the time of one that has work,
///                 so sleep at once (PASSIVE).
/// Measured on a 2-core machine (benchmarks/bench_wait_policy.py, docs/results.md "OpenMP waiting"). libgomp
/// reads these variables when it loads, before main, so the runner sets them and starts itself again; a recipe
/// that cannot be read changes nothing here (the run then reports it).
void choose_openmp_waiting(const std::string& recipe_path, const std::vector<std::string>& overrides,
                           char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  int64_t threads = 0, workers = 1, ranks = 1;
  try {
    const tessera::ConfigNode root = tessera::Recipe::load(recipe_path, overrides).root();
    if (root.child("threads").is_scalar()) threads = root.child("threads").as_int();
    const tessera::ConfigNode loader = root.child("data").child("train").child("loader");
    if (loader.child("workers").is_scalar()) workers = std::max<int64_t>(0, loader.child("workers").as_int());
    if (const char* local = std::getenv("LOCAL_WORLD_SIZE")) ranks = std::max<int64_t>(1, std::atoll(local));
  } catch (const std::exception&) {
    return;
  }
  // Cores counted, and threads: 0 resolved, as the Trainer does.
  const int64_t cores = tessera::available_cores();
  if (threads <= 0) threads = tessera::default_threads(ranks);
  std::string how;
  if (ranks * (threads + workers) <= cores) {
    ::setenv("OMP_WAIT_POLICY", "ACTIVE", 1);
    how = "spin (OMP_WAIT_POLICY=ACTIVE)";
  } else if (ranks * threads <= cores) {
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    ::setenv("GOMP_SPINCOUNT", "300000", 1);
    how = "spin, then sleep (OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=300000)";
  } else {
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    how = "sleep (OMP_WAIT_POLICY=PASSIVE)";
  }
  const std::string note = fmt::format("{} intra-op + {} loader thread{}{} on {} core{}: OpenMP threads {}", threads,
                                       workers, workers == 1 ? "" : "s",
                                       ranks > 1 ? fmt::format(" per rank, {} ranks", ranks) : "", cores,
                                       cores == 1 ? "" : "s", how);
  ::setenv("TESSERA_OPENMP_WAITING", note.c_str(), 1);
  ::execv("/proc/self/exe", argv);
  // Only on failure: libgomp keeps what it read at load; carry on, and say so.
  ::setenv("TESSERA_OPENMP_WAITING",
           fmt::format("OpenMP waiting left as it was: the restart to apply {} failed: {}", how, std::strerror(errno))
               .c_str(),
           1);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains a model from a YAML recipe (see docs/recipes.md).", "tessera-run"};
  std::string recipe_path;
  std::vector<std::string> overrides;
  Actions actions;
  bool interactions = false;
  int nproc = 0;
  app.add_option("recipe", recipe_path, "the YAML recipe");
  app.add_option("overrides", overrides,
                 "overrides key.path=value (e.g. optimizer.sgd.lr=0.05 algorithms=[])");
  auto* plan_flag =
      app.add_flag("--plan", actions.plan, "print the algorithm plan (per event, in run order) and exit");
  auto* dry_flag = app.add_flag("--dry-run", actions.dry_run, "validate and build everything, print a summary, do not train")
                       ->excludes(plan_flag);
  app.add_flag("--print-recipe", actions.print_recipe, "print the recipe as run (overrides applied) first");
  app.add_flag("--evaluate", actions.evaluate,
               "do not train: run every evaluator once on the weights of the checkpoint the recipe loads "
               "(checkpoint.load_path, or autoresume) and print metrics/<label>/<name>: value")
      ->excludes(plan_flag, dry_flag);
  auto* generate_flag =
      app.add_option(
             "--generate", actions.prompts,
             "do not train: continue this text (repeatable) with the language model of the checkpoint the "
             "recipe loads and print it (docs/language-models.md)")
          ->allow_extra_args(false)  // one prompt each: the overrides after it stay overrides
          ->excludes(plan_flag, dry_flag);
  app.add_option("--generate-options", actions.generate_options,
                 "generate's options as a YAML mapping, e.g. '{max_new_tokens: 80, temperature: 0.8, top_k: 40}'")
      ->needs(generate_flag);
  app.add_option("--export", actions.export_path,
                 "do not train: write the weights of the checkpoint the recipe loads to this safetensors file "
                 "(docs/checkpoints.md, \"Weights for other programs\")")
      ->excludes(plan_flag, dry_flag);
  app.add_option("--export-huggingface", actions.export_huggingface,
                 "do not train: write the gpt model of the checkpoint the recipe loads to this folder as a Hugging "
                 "Face GPT-2 or Llama checkpoint (by its architecture), with the data's tokenizer.json "
                 "(docs/language-models.md, \"Hugging Face checkpoints\")")
      ->excludes(plan_flag, dry_flag);
  app.add_option("--nproc", nproc, "start N local ranks of data-parallel training (Gloo over loopback on the CPU)")
      ->check(CLI::Range(1, 1024));
  app.add_flag("--interactions", interactions,
               "print docs/interactions.md (every pair of registered algorithms, from the engine) and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (interactions) {
    std::cout << tessera::interactions_markdown();
    return 0;
  }
  if (recipe_path.empty()) {
    std::cerr << "tessera-run: error: a recipe is required (tessera-run RECIPE [key.path=value ...]); see --help\n";
    return 2;
  }

  if (nproc > 0 && actions.uses_trained_weights()) {
    std::cerr << "tessera-run: error: --evaluate, --generate and the exports run in one process; leave out --nproc\n";
    return 2;
  }
  if (nproc > 0 && !actions.plan && !actions.dry_run) {
    std::vector<std::string> args{recipe_path};
    args.insert(args.end(), overrides.begin(), overrides.end());
    if (actions.print_recipe) args.emplace_back("--print-recipe");
    try {
      return tessera::dist::launch_local(nproc, "/proc/self/exe", args).exit_code;
    } catch (const std::exception& e) {
      std::cerr << "tessera-run: error: " << e.what() << "\n";
      return 1;
    }
  }

  choose_openmp_waiting(recipe_path, overrides, argv);
  tessera::install_stop_signal_handlers();
  try {
    return run(recipe_path, overrides, actions);
  } catch (const tessera::Interrupted& e) {
    std::cerr << "tessera-run: " << e.what() << "\n";
    return 128 + e.signal();
  } catch (const tessera::InputError& e) {
    std::cerr << "tessera-run: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "tessera-run: error: " << e.what() << "\n";
    return 1;
  }
}
