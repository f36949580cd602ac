// Recipes: parsing, overrides, read_options, and building runs through the registry.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <ATen/Context.h>
#include <tessera/callbacks/metric_writers.h>
#include <tessera/callbacks/progress_bar.h>
#include <tessera/checkpoint.h>
#include <tessera/models/cnn.h>
#include <tessera/models/mlp.h>
#include <tessera/optim/optimizer.h>
#include <tessera/optim/scheduler.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
#include <unistd.h>

#include "support.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace tessera {
namespace {

// A small valid recipe; the bad recipes below are edits of it, so their line:column are easy to check.
// Line numbers:
//   1 max_duration, 2 seed, 3 model, 4 mlp, 5 data, 6 train, 7 dataset, 8 loader, 9 optimizer, 10 sgd
constexpr const char* kBase = R"(max_duration: 2ba
seed: 1
model:
  mlp: {hidden: [16]}
data:
  train:
    dataset: {synthetic: {size: 64, input_shape: [1, 4, 4], num_classes: 3}}
    loader: {batch_size: 16, workers: 0}
optimizer:
  sgd: {lr: 0.1, momentum: 0.9}
)";

/// kBase with the first occurrence of `from` replaced by `to` (`from` must occur).
std::string edit(const std::string& from, const std::string& to) {
  std::string text = kBase;
  const size_t at = text.find(from);
  if (at == std::string::npos) throw std::logic_error("edit: \"" + from + "\" is not in the base recipe");
  return text.replace(at, from.size(), to);
}
std::string append(const std::string& more) { return std::string(kBase) + more; }

/// The InputError message of parsing + building, or a marker when there is none.
std::string build_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    tessera::Run run = build_run(Recipe::parse(text, "<string>", overrides));
    return "(no error)";
  } catch (const InputError& e) {
    return e.what();
  }
}

struct BadRecipe {
  std::string name;
  std::string text;
  std::vector<std::string> overrides;
  std::vector<std::string> fragments;  ///< each must occur in the message
};

std::vector<BadRecipe> bad_recipes() {
  return {
      {"unknown_top_level_key",
       edit("seed: 1", "sed: 1"),
       {},
       {"<string>:2:1: sed: unknown key \"sed\" in the recipe", "did you mean \"seed\"?",
        "(known keys: max_duration,"}},
      {"misspelled_option",
       edit("momentum: 0.9", "momentom: 0.9"),
       {},
       {"<string>:10:18: optimizer.sgd.momentom: unknown key \"momentom\" in optimizer.sgd; did you mean "
        "\"momentum\"?",
        "(known keys: lr, momentum, dampening, nesterov, weight_decay, decoupled_weight_decay, groups)"}},
      {"negative_lr",
       edit("lr: 0.1", "lr: -0.1"),
       {},
       {"<string>:10:13: optimizer.sgd.lr: -0.1 is out of range; expected a number > 0"}},
      {"momentum_too_large",
       edit("momentum: 0.9", "momentum: 1.5"),
       {},
       {"<string>:10:28: optimizer.sgd.momentum: 1.5 is out of range; expected a number in [0, 1)"}},
      {"fractional_batches",
       edit("max_duration: 2ba", "max_duration: 1.5ba"),
       {},
       {"<string>:1:15: max_duration: invalid time \"1.5ba\"", "must be a whole number"}},
      {"time_without_unit",
       edit("max_duration: 2ba", "max_duration: 10"),
       {},
       {"<string>:1:15: max_duration: invalid time \"10\"", "the unit is missing"}},
      {"max_duration_as_duration",
       edit("max_duration: 2ba", "max_duration: 0.5dur"),
       {},
       {"<string>:1:15: max_duration: \"0.5dur\" is not allowed; expected epochs, batches or samples"}},
      {"unknown_model",
       edit("mlp: {hidden: [16]}", "mpl: {hidden: [16]}"),
       {},
       {"<string>:4:3: model.mpl: unknown model \"mpl\"; did you mean \"mlp\"? (known models: bert, "
        "bert_classifier, "
        "cnn, gpt, mlp, resnet)"}},
      {"model_given_twice",
       edit("mlp: {hidden: [16]}", "mlp: {}\n  cnn: {}"),
       {},
       {"<string>:4:3: model: expected exactly one model, got 2 (mlp, cnn)", "expected {name: {options}}"}},
      {"duplicate_top_level_key",
       append("model: {cnn: {}}\n"),
       {},
       {"<string>:11:1: model: duplicate key \"model\" (first given at line 3)"}},
      {"unknown_algorithm",
       append("algorithms: [{label_smothing: {alpha: 0.1}}]\n"),
       {},
       {"<string>:11:15: algorithms[0].label_smothing: unknown algorithm \"label_smothing\"",
        "(known algorithms:"}},
      {"string_for_batch_size",
       edit("batch_size: 16", "batch_size: abc"),
       {},
       {"<string>:8:26: data.train.loader.batch_size: expected a whole number, got \"abc\""}},
      {"fraction_for_batch_size",
       edit("batch_size: 16", "batch_size: 16.5"),
       {},
       {"data.train.loader.batch_size: expected a whole number, got \"16.5\""}},
      {"list_where_map_expected",
       edit("loader: {batch_size: 16, workers: 0}", "loader: [16]"),
       {},
       {"<string>:8:13: data.train.loader: expected a map of options", "got a list"}},
      {"list_for_optimizer",
       edit("  sgd: {lr: 0.1, momentum: 0.9}", "  - sgd"),
       {},
       {"<string>:10:3: optimizer: expected an optimizer as {name: {options}}, got a list",
        "adadelta, adafactor, adagrad, adam, adamax, adamw, lamb, lars, lion, muon, nadam, radam, rmsprop, sgd"}},
      {"optimizer_group_that_sets_nothing",
       edit("momentum: 0.9}", "momentum: 0.9, groups: [{names: [\"fc*\"]}]}"),
       {},
       {"<string>:10:42: optimizer.sgd.groups[0]: sets neither lr nor weight_decay, so the parameters it "
        "selects "
        "(names [fc*]) would train exactly as the others"}},
      {"optimizer_group_misspelled_key",
       edit("momentum: 0.9}", "momentum: 0.9, groups: [{name: [\"fc*\"], lr: 1}]}"),
       {},
       {"<string>:10:43: optimizer.sgd.groups[0].name: unknown key \"name\"", "did you mean \"names\"?"}},
      {"bool_expected",
       edit("workers: 0}", "workers: 0, shuffle: maybe}"),
       {},
       {"<string>:8:51: data.train.loader.shuffle: expected true or false, got \"maybe\""}},
      {"list_of_numbers_expected",
       edit("workers: 0}", "workers: 0}\n    transforms: [{normalize: {mean: abc}}]"),
       {},
       {"<string>:9:37: data.train.transforms[0].normalize.mean: expected a list of numbers, got \"abc\""}},
      {"bad_transform_option",
       edit("workers: 0}", "workers: 0}\n    transforms: [{random_crop: {padding: -1}}]"),
       {},
       {"<string>:9:42: data.train.transforms[0].random_crop.padding: -1 is out of range; expected a whole "
        "number >= 0"}},
      {"unknown_transform",
       edit("workers: 0}", "workers: 0}\n    transforms: [{random_flip: {}}]"),
       {},
       {"data.train.transforms[0].random_flip: unknown transform \"random_flip\"",
        "(known transforms: horizontal_flip, mask_tokens, normalize, random_crop)"}},
      {"unknown_scheduler",
       append("schedulers: [{cosin: {warmup: 1ba}}]\n"),
       {},
       {"<string>:11:15: schedulers[0].cosin: unknown scheduler \"cosin\"; did you mean \"cosine\"?"}},
      {"bad_scheduler_time",
       append("schedulers: [{cosine: {warmup: 1.5ba}}]\n"),
       {},
       {"<string>:11:32: schedulers[0].cosine.warmup: invalid time \"1.5ba\""}},
      {"sequential_part_misspelled",
       append("schedulers:\n  - sequential: {schedulers: [constant, {cosine: {t_mx: 2ba}}], milestones: "
              "[1ba]}\n"),
       {},
       {"<string>:12:", "schedulers[0].sequential.schedulers[1].cosine.t_mx: unknown key \"t_mx\"",
        "did you mean \"t_max\"?"}},
      {"sequential_milestones_short",
       append("schedulers:\n  - sequential: {schedulers: [constant, constant]}\n"),
       {},
       {"<string>:12:", "0 milestones for 2 schedules; expected one fewer milestones than schedules"}},
      {"sequential_late_part_horizon_before_warmup",
       append("schedulers:\n  - sequential:\n      schedulers: [constant, {cosine: {t_max: 1dur, warmup: "
              "1ep}}]\n"
              "      milestones: [1ba]\n"),
       {},
       {"<string>:",
        "schedulers[1] (cosine): t_max: 1dur is 2 batches in this run, not more than the cosine "
        "scheduler's warmup 1ep (4 batches)"}},
      {"recursive_alias",
       append("model2: &a {b: *a}\n"),
       {},
       {"<string>:11:", "an alias inside the value of its own anchor, which never ends"}},
      {"alias_bomb",
       append("a1: &a1 [x, x, x, x, x, x, x, x, x, x]\n"
              "a2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]\n"
              "a3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2]\n"
              "a4: &a4 [*a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3]\n"
              "a5: &a5 [*a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4]\n"
              "a6: &a6 [*a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5]\n"
              "a7: &a7 [*a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6]\n"),
       {},
       {"the recipe holds more than 100000 values once its aliases are expanded"}},
      {"second_document",
       append("---\nmax_duration: 100ba\n"),
       {},
       {"<string>:12:", "a second YAML document (after --- or ...); a recipe is one document"}},
      {"two_loggers_one_file",
       append("loggers: [{csv: {path: m.txt}}, {jsonl: {path: m.txt}}]\n"),
       {},
       {"<string>:11:48: loggers[1].jsonl.path: another logger writes ",
        "m.txt already; two writers would mix"}},
      {"infinite_normalize_mean",
       edit("workers: 0}", "workers: 0}\n    transforms: [{normalize: {mean: [.inf]}}]"),
       {},
       {"<string>:9:38: data.train.transforms[0].normalize.mean[0]: .inf is out of range; expected a finite "
        "number"}},
      {"muon_coefficient_not_a_number",
       edit("  sgd: {lr: 0.1, momentum: 0.9}", "  muon: {lr: 0.01, ns_coefficients: [.nan, 1, 1]}"),
       {},
       {"<string>:10:", "ns_coefficients: nan is not a finite number"}},
      {"empty_train_metrics",
       edit("workers: 0}", "workers: 0}\n    metrics: []"),
       {},
       {"<string>:9:", "data.train.metrics: no metrics given"}},
      {"plateau_in_a_sequence",
       append(
           "schedulers:\n  - sequential: {schedulers: [constant, {plateau: {monitor: loss, label: train}}], "
           "milestones: [1ba]}\n"),
       {},
       {"<string>:12:",
        "schedulers[1]: a plateau follows a metric, not time, so it has no place in a sequence"}},
      {"cycled_momentum_in_a_sequence",
       append("schedulers:\n  - sequential: {schedulers: [constant, {onecycle: {cycle_momentum: true}}], "
              "milestones: [1ba]}\n"),
       {},
       {"<string>:12:", "schedulers[1]: onecycle sets the optimizer's momentum (cycle_momentum)",
        "put it beside the sequential"}},
      {"plateau_factor_out_of_range",
       append("schedulers: [{plateau: {monitor: loss, label: train, factor: 1.5}}]\n"),
       {},
       {"<string>:11:", "schedulers[0].plateau.factor: 1.5 is out of range"}},
      {"inverse_sqrt_without_timescale_or_warmup",
       append("schedulers: [inverse_sqrt]\n"),
       {},
       {"<string>:11:14: schedulers[0].inverse_sqrt: scheduler.timescale: 0 (the default) means the warmup's length, "
        "and there is no warmup"}},
      {"plateau_without_monitor",
       append("schedulers: [plateau]\n"),
       {},
       {"<string>:11:14: schedulers[0].plateau: plateau.monitor: is empty; name the metric to watch"}},
      {"unknown_metric",
       edit("workers: 0}", "workers: 0}\n    metrics: [acuracy]"),
       {},
       {"<string>:9:15: data.train.metrics[0]: unknown metric \"acuracy\"; did you mean \"accuracy\"?"}},
      {"macro_average_class_count_out_of_range",
       edit("workers: 0}", "workers: 0}\n    metrics: [accuracy, {f1: {num_classes: -3}}]"),
       {},
       {"<string>:9:", "data.train.metrics[1].f1.num_classes: -3 is out of range"}},
      {"unknown_metric_option",
       edit("workers: 0}", "workers: 0}\n    metrics: [{recall: {classes: 3}}]"),
       {},
       {"<string>:9:", "data.train.metrics[0].recall.classes: unknown key \"classes\""}},
      {"unknown_dataset",
       edit("{synthetic: {size: 64", "{sythetic: {size: 64"),
       {},
       {"<string>:7:15: data.train.dataset.sythetic: unknown dataset \"sythetic\"; did you mean "
        "\"synthetic\"?"}},
      {"unknown_key_in_data_train",
       edit("    loader:", "    loaders:"),
       {},
       {"<string>:8:5: data.train.loaders: unknown key \"loaders\" in data.train; did you mean \"loader\"?"}},
      {"choice_not_allowed",
       append("precision: fp61\n"),
       {},
       {"<string>:11:12: precision: \"fp61\" is not allowed; expected one of: fp32, amp_bf16, amp_fp16 (did "
        "you "
        "mean \"fp32\"?)"}},
      {"microbatch_size_not_a_size",
       append("microbatch_size: half\n"),
       {},
       {"<string>:11:18: microbatch_size: \"half\" is not a microbatch size; expected a whole number >= 0 (0 "
        "= the "
        "whole batch) or auto"}},
      {"microbatch_size_negative",
       append("microbatch_size: -4\n"),
       {},
       {"<string>:11:18: microbatch_size: \"-4\" is not a microbatch size; expected a whole number >= 0 (0 = "
        "the "
        "whole batch) or auto"}},
      {"loss_scaling_not_allowed",
       append("loss_scaling: static\n"),
       {},
       {"<string>:11:15: loss_scaling: \"static\" is not allowed; expected one of: auto, dynamic, none"}},
      {"device_not_a_device",
       append("device: bogus\n"),
       {},
       {"<string>:11:9: device: \"bogus\" is not a device; expected cpu, cuda, cuda:N (N = 0, 1, ...) or "
        "auto"}},
      {"device_cuda_index_not_a_number",
       append("device: cuda:x\n"),
       {},
       {"<string>:11:9: device: \"cuda:x\" is not a device", "expected cpu, cuda, cuda:N"}},
      {"device_misspelt",
       append("device: cdua\n"),
       {},
       {"<string>:11:9: device: \"cdua\" is not a device (did you mean \"cuda\"?)"}},
      {"device_override",
       kBase,
       {"device=gpu"},
       {"<command line> override 1: device: \"gpu\" is not a device (did you mean \"cuda\"?)"}},
      {"split_choice",
       edit("{synthetic: {size: 64, input_shape: [1, 4, 4], num_classes: 3}}",
            "{fashion_mnist: {split: tset}}"),
       {},
       {"<string>:7:38: data.train.dataset.fashion_mnist.split: \"tset\" is not allowed",
        "expected one of: train, test (did you mean \"test\"?)"}},
      {"seed_out_of_range",
       edit("seed: 1", "seed: -1"),
       {},
       {"<string>:2:7: seed: -1 is out of range; expected a whole number in [0, 4294967295]"}},
      {"whole_number_too_large",
       edit("seed: 1", "seed: 1e20"),
       {},
       {"<string>:2:7: seed: 1e20 is out of range; expected a whole number in [0, 4294967295]"}},
      {"missing_model",
       edit("model:\n  mlp: {hidden: [16]}\n", ""),
       {},
       {"missing key \"model\"", "expected model: {mlp:"}},
      {"missing_train_data",
       edit("  train:", "  training:"),
       {},
       {"<string>:6:3: data.training: unknown key \"training\" in data; did you mean \"train\"?"}},
      {"unknown_logger",
       append("loggers: [{jsnol: {}}]\n"),
       {},
       {"<string>:11:12: loggers[0].jsnol: unknown logger \"jsnol\"; did you mean \"jsonl\"? (known loggers: "
        "csv, jsonl, tensorboard)"}},
      {"callback_option_typo",
       append("callbacks: [{progress_bar: {widht: 20}}]\n"),
       {},
       {"<string>:11:29: callbacks[0].progress_bar.widht: unknown key \"widht\" in "
        "callbacks[0].progress_bar; did you "
        "mean \"width\"?"}},
      {"autoresume_without_folder",
       append("checkpoint: {folder: ck, autoresume: true}\n"),
       {"checkpoint.folder="},
       {"<string>:11:", "checkpoint.autoresume: autoresume is on but checkpoint.folder is empty",
        "expected a checkpoint.folder, or autoresume: false"}},
      {"checkpoint_keep_zero",
       append("checkpoint: {keep: 0}\n"),
       {},
       {"<string>:11:20: checkpoint.keep: 0 is out of range; expected a whole number >= 1"}},
      {"eval_label_train",
       edit("    loader: {batch_size: 16, workers: 0}\n",
            "    loader: {batch_size: 16, workers: 0}\n  eval: {label: train, dataset: {synthetic: {}}}\n"),
       {},
       {"<string>:9:17: data.eval.label: \"train\" is the label of the training metrics"}},
      {"eval_without_dataset",
       edit("    loader: {batch_size: 16, workers: 0}\n",
            "    loader: {batch_size: 16, workers: 0}\n  eval: {label: test}\n"),
       {},
       {"<string>:9:9: data.eval: missing key \"dataset\""}},
      {"model_constructor_error",
       edit("mlp: {hidden: [16]}", "resnet: {depth: 9}"),
       {},
       {"<string>:4:19: model.resnet.depth: 9 is not of the form 6n+2"}},  // at the option the error names
      {"yaml_syntax_error",
       edit("momentum: 0.9}", "momentum: 0.9"),
       {},
       {"<string>:11:1: YAML syntax error:"}},
      {"not_a_map", "- a\n- b\n", {}, {"<string>:1:1: a recipe must be a map of keys"}},
      // overrides
      {"bad_override_syntax",
       kBase,
       {"optimizer.sgd.lr0.05"},
       {"override \"optimizer.sgd.lr0.05\": expected key.path=value"}},
      {"override_empty_key",
       kBase,
       {"=3"},
       {"override \"=3\": the key path is empty; expected key.path=value"}},
      {"override_missing_parent",
       kBase,
       {"optimizer.sdg.lr=0.05"},
       {"override \"optimizer.sdg.lr=0.05\": optimizer.sdg does not exist; did you mean \"optimizer.sgd\"?",
        "(keys of optimizer: sgd)"}},
      {"override_through_scalar", kBase, {"seed.value=3"}, {"override \"seed.value=3\": seed is not a map"}},
      {"override_unknown_leaf",
       kBase,
       {"seed=3", "optimizer.sgd.lrr=0.05"},
       {"<command line> override 2: optimizer.sgd.lrr: unknown key \"lrr\" in optimizer.sgd; did you mean "
        "\"lr\"?"}},
      {"override_bad_value",
       kBase,
       {"optimizer.sgd.lr=-1"},
       {"<command line> override 1: optimizer.sgd.lr: -1 is out of range; expected a number > 0"}},
      {"override_bad_yaml",
       kBase,
       {"model={mlp: {hidden: [16}}"},
       {"<command line> override 1: model: invalid YAML value \"{mlp: {hidden: [16}}\""}},
      {"override_subtree_error",
       kBase,
       {"model={cnn: {widht: 4}}"},
       {"<command line> override 1: model.cnn.widht: unknown key \"widht\" in model.cnn; did you mean "
        "\"width\"?"}},
      // checks that need the run's length or a constructor, located at the option they name
      {"scheduler_horizon_before_warmup",
       append("schedulers:\n  - cosine: {t_max: 1dur, warmup: 1ep}\n"),
       {},
       {"<string>:12:",
        "schedulers[0].cosine.t_max: 1dur is 2 batches in this run, not more than the cosine "
        "scheduler's warmup 1ep (4 batches); expected a t_max after the warmup"}},
      {"scheduler_horizon_from_an_override",
       append("schedulers:\n  - cosine: {t_max: 4ep, warmup: 1ep}\n"),
       {"schedulers[0].cosine.t_max=3ba"},
       {"<command line> override 1: schedulers[0].cosine.t_max: 3ba is 3 batches in this run"}},
      {"constructor_check_at_its_override",
       edit("mlp: {hidden: [16]}", "resnet: {depth: 8}"),
       {"model.resnet.depth=9"},
       {"<command line> override 1: model.resnet.depth: 9 is not of the form 6n+2"}},
      {"huge_whole_number_gets_the_options_range",
       kBase,
       {"data.train.loader.batch_size=100000000000000000000"},
       {"<command line> override 1: data.train.loader.batch_size: 100000000000000000000 is out of range; "
        "expected "
        "a whole number >= 1 (at most 9223372036854775807)"}},
      {"override_list_index_out_of_range",
       append("schedulers: []\n"),
       {"schedulers[3]={cosine: {}}"},
       {"override \"schedulers[3]={cosine: {}}\": schedulers has 0 entries"}},
      // found by fuzzing (tests/fuzz/corpus/fuzz_recipe/regress_override_index_digits): std::stoul's
      // out_of_range
      {"override_list_index_too_large",
       append("schedulers: []\n"),
       {"schedulers[99999999999999999999]={cosine: {}}"},
       {"override \"schedulers[99999999999999999999]={cosine: {}}\": list index 99999999999999999999 is too "
        "large; "
        "expected key.path=value"}},
      {"override_dotted_list_index_too_large",
       append("schedulers: [{cosine: {t_max: 2ep}}]\n"),
       {"schedulers.66666666666666666666666666666666666660=4"},
       {"override \"schedulers.66666666666666666666666666666666666660=4\": list index "
        "66666666666666666666666666666666666660 is too large"}},
      // A section an override creates is blamed on that override, not on the file's first line.
      {"unknown_section_created_by_an_override",
       kBase,
       {"seed=3", "chekpoint.folder=x"},
       {"<command line> override 2: chekpoint: unknown key \"chekpoint\" in the recipe",
        "did you mean \"checkpoint\""}},
      // Keys that do nothing without another are refused, not ignored.
      {"checkpoint_interval_without_folder",
       append("checkpoint: {interval: 2ba}\n"),
       {},
       {"<string>:11:14: checkpoint.interval: it sets how often checkpoints are written to the folder, and the "
        "checkpoint section has no folder, so it would do nothing; expected a folder beside it, or no interval"}},
      {"checkpoint_keep_without_folder",
       append("checkpoint:\n  keep: 2\n"),
       {},
       {"<string>:12:3: checkpoint.keep: it sets how many checkpoints the folder keeps, and the checkpoint section "
        "has no folder"}},
      {"checkpoint_weights_only_without_load_path",
       append("checkpoint: {folder: ck, weights_only: true}\n"),
       {},
       {"<string>:11:26: checkpoint.weights_only:", "has no load_path, so it would do nothing"}},
      {"checkpoint_strict_without_load_path_or_autoresume",
       append("checkpoint: {folder: ck, strict: false}\n"),
       {},
       {"<string>:11:26: checkpoint.strict:", "has no load_path or autoresume"}},
      {"checkpoint_fresh_start_without_autoresume",
       kBase,
       {"checkpoint.fresh_start_if_invalid=true"},
       {"<command line> override 1: checkpoint.fresh_start_if_invalid:", "has no autoresume"}},
      // More than the machine's memory, refused with the numbers rather than an allocator's failure.
      {"synthetic_data_larger_than_memory",
       edit("size: 64,", "size: 100000000000,"),
       {},
       {"<string>:7:33: data.train.dataset.synthetic.size: 100000000000 examples of 16 values (3 classes) take "
        "8e+03 GB in memory, more than this machine's"}},
  };
}

void PrintTo(const BadRecipe& c, std::ostream* os) { *os << c.name; }

class BadRecipeTest : public ::testing::TestWithParam<BadRecipe> {};

TEST_P(BadRecipeTest, FailsWithLocationAndReason) {
  const BadRecipe& c = GetParam();
  const std::string message = build_error(c.text, c.overrides);
  for (const auto& fragment : c.fragments) {
    EXPECT_NE(message.find(fragment), std::string::npos)
        << "message: " << message << "\nexpected to contain: " << fragment;
  }
}

INSTANTIATE_TEST_SUITE_P(Recipe, BadRecipeTest, ::testing::ValuesIn(bad_recipes()),
                         [](const ::testing::TestParamInfo<BadRecipe>& info) { return info.param.name; });

TEST(RecipeTest, TableHasAtLeastTwentyCases) { EXPECT_GE(bad_recipes().size(), 20u); }

TEST(RecipeTest, MissingFileNamesThePath) {
  try {
    Recipe::load("/nonexistent/tessera/recipe.yaml");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "recipe file \"/nonexistent/tessera/recipe.yaml\" not found");
  }
}

TEST(RecipeTest, FileErrorsCarryTheFileName) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("tessera_recipe_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = (dir / "bad.yaml").string();
  std::ofstream(path) << edit("lr: 0.1", "lr: -0.1");
  try {
    build_run(Recipe::load(path));
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              path + ":10:13: optimizer.sgd.lr: -0.1 is out of range; expected a number > 0");
  }
  std::filesystem::remove_all(dir);
}

TEST(RecipeTest, ConfigNodeNavigation) {
  const Recipe recipe = Recipe::parse(kBase, "base.yaml");
  const ConfigNode root = recipe.root();
  EXPECT_TRUE(root.is_map());
  EXPECT_EQ(root.keys(), (std::vector<std::string>{"max_duration", "seed", "model", "data", "optimizer"}));
  const ConfigNode lr = root.child("optimizer").child("sgd").child("lr");
  EXPECT_TRUE(lr.present());
  EXPECT_TRUE(lr.is_scalar());
  EXPECT_EQ(lr.path(), "optimizer.sgd.lr");
  EXPECT_EQ(lr.line(), 10);
  EXPECT_EQ(lr.column(), 13);
  EXPECT_EQ(lr.location(), "base.yaml:10:13");
  EXPECT_DOUBLE_EQ(lr.as_double(), 0.1);
  const ConfigNode shape =
      root.child("data").child("train").child("dataset").child("synthetic").child("input_shape");
  EXPECT_TRUE(shape.is_sequence());
  EXPECT_EQ(shape.as_ints(), (std::vector<int64_t>{1, 4, 4}));
  ASSERT_EQ(shape.elements().size(), 3u);
  EXPECT_EQ(shape.elements()[2].path(), "data.train.dataset.synthetic.input_shape[2]");
  EXPECT_EQ(root.child("max_duration").as_time(), Time(2, TimeUnit::Batch));
  const ConfigNode absent = root.child("optimizer").child("adamw");
  EXPECT_FALSE(absent.present());
  EXPECT_EQ(absent.path(), "optimizer.adamw");
  EXPECT_FALSE(root.has("schedulers"));
  EXPECT_EQ(root.child("seed").as_int(), 1);
}

TEST(RecipeTest, TypedReads) {
  const Recipe r = Recipe::parse("a: 1e4\nb: yes\nc: [1ep, 300ba]\nd:\ne: \"12\"\nf: [x, y]\n");
  const ConfigNode root = r.root();
  EXPECT_EQ(root.child("a").as_int(), 10000);
  EXPECT_TRUE(root.child("b").as_bool());
  EXPECT_EQ(root.child("c").as_times(),
            (std::vector<Time>{Time(1, TimeUnit::Epoch), Time(300, TimeUnit::Batch)}));
  EXPECT_TRUE(root.child("d").is_null());
  EXPECT_EQ(root.child("d").as_string(), "");
  EXPECT_EQ(root.child("d").location(), "<string>:4:1");  // an empty value is located at its key
  EXPECT_EQ(root.child("e").as_int(), 12);
  EXPECT_EQ(root.child("f").as_strings(), (std::vector<std::string>{"x", "y"}));
}

TEST(RecipeTest, ReadOptionsFillsFieldsAndKeepsDefaults) {
  const Recipe r = Recipe::parse("opt: {milestones: [2ep, 5ep], gamma: 0.5}\nsgd: {nesterov: true}\n");
  optim::MultiStepSchedulerOptions ms;
  read_options(r.root().child("opt"), ms, "opt");
  EXPECT_EQ(ms.milestones(), (std::vector<Time>{Time(2, TimeUnit::Epoch), Time(5, TimeUnit::Epoch)}));
  EXPECT_DOUBLE_EQ(ms.gamma(), 0.5);
  EXPECT_EQ(ms.warmup(), Time(0, TimeUnit::Batch));  // default kept
  optim::SGDOptions sgd;
  read_options(r.root().child("sgd"), sgd, "sgd");
  EXPECT_TRUE(sgd.nesterov());
  EXPECT_DOUBLE_EQ(sgd.lr(), 0.1);
  EXPECT_DOUBLE_EQ(sgd.momentum(), 0.9);
  // An absent node reads nothing.
  optim::SGDOptions untouched;
  read_options(r.root().child("missing"), untouched, "missing");
  EXPECT_DOUBLE_EQ(untouched.lr(), 0.1);
}

TEST(RecipeTest, OverridesReplaceAndCreate) {
  const Recipe r = Recipe::parse(
      kBase, "base.yaml",
      {"optimizer.sgd.lr=0.05", "seed=7", "eval_interval=3ba", "data.train.loader.batch_size=8",
       "model={cnn: {width: 4}}", "algorithms=[]", "schedulers=[]", "schedulers[0]={cosine: {}}"});
  const ConfigNode root = r.root();
  EXPECT_DOUBLE_EQ(root.child("optimizer").child("sgd").child("lr").as_double(), 0.05);
  EXPECT_DOUBLE_EQ(root.child("optimizer").child("sgd").child("momentum").as_double(), 0.9);  // untouched
  EXPECT_EQ(root.child("seed").as_int(), 7);
  EXPECT_EQ(root.child("eval_interval").as_time(), Time(3, TimeUnit::Batch));
  EXPECT_EQ(root.child("data").child("train").child("loader").child("batch_size").as_int(), 8);
  EXPECT_EQ(root.child("model").keys(), (std::vector<std::string>{"cnn"}));
  EXPECT_TRUE(root.child("algorithms").is_sequence());
  EXPECT_EQ(root.child("algorithms").size(), 0u);
  ASSERT_EQ(root.child("schedulers").size(), 1u);
  EXPECT_EQ(root.child("schedulers").elements()[0].keys(), (std::vector<std::string>{"cosine"}));
  // Key order is kept; new keys come last.
  EXPECT_EQ(root.keys(), (std::vector<std::string>{"max_duration", "seed", "model", "data", "optimizer",
                                                   "eval_interval", "algorithms", "schedulers"}));
  // Locations: values set by overrides point at the override.
  EXPECT_EQ(root.child("seed").location(), "<command line> override 2");
  EXPECT_EQ(root.child("model").child("cnn").child("width").location(), "<command line> override 5");
  EXPECT_EQ(root.child("optimizer").child("sgd").child("momentum").location(), "base.yaml:10:28");
  EXPECT_EQ(r.overrides().size(), 8u);

  tessera::Run run = build_run(r);
  EXPECT_EQ(run.trainer.seed(), 7);
  EXPECT_EQ(run.trainer.eval_interval(), Time(3, TimeUnit::Batch));
  auto sgd = std::dynamic_pointer_cast<optim::SGD>(run.components.optimizer);
  ASSERT_TRUE(sgd);
  EXPECT_DOUBLE_EQ(sgd->options().lr(), 0.05);
  EXPECT_DOUBLE_EQ(sgd->param_groups().at(0).initial_lr, 0.05);
  auto cnn = std::dynamic_pointer_cast<CNN>(run.components.model);
  ASSERT_TRUE(cnn);
  EXPECT_EQ(run.model_name, "cnn");
  EXPECT_EQ(cnn->options().width(), 4);
  EXPECT_EQ(cnn->options().in_channels(), 1);  // filled from the data
  EXPECT_EQ(cnn->options().num_classes(), 3);
  EXPECT_EQ(tessera::testing::as_loader(run.components.train_dataloader).options().batch_size(), 8);
  EXPECT_EQ(run.components.train_dataloader->num_batches(), 8);
  ASSERT_EQ(run.components.schedulers.size(), 1u);
  EXPECT_EQ(run.components.schedulers[0]->name(), "cosine");
}

TEST(RecipeTest, OptimizerGroupsSelectParametersByNameAndShape) {
  const Recipe r = Recipe::parse(
      edit("sgd: {lr: 0.1, momentum: 0.9}",
           "adamw: {lr: 0.01, weight_decay: 0.1, groups: [{names: [\"head.*\"], lr: 0.1}, {max_dims: 1, weight_decay: 0}]}"),
      "groups.yaml");
  tessera::Run run = build_run(r);
  const auto& groups = run.components.optimizer->param_groups();
  ASSERT_EQ(groups.size(), 3u);
  std::map<const void*, std::string> name_of;
  for (const auto& item : run.components.model->named_parameters()) name_of[item.value().unsafeGetTensorImpl()] = item.key();
  auto names = [&](size_t g) {
    std::vector<std::string> out;
    for (const auto& p : groups[g].params) out.push_back(name_of.at(p.unsafeGetTensorImpl()));
    return out;
  };
  EXPECT_EQ(names(0), std::vector<std::string>({"fc1.weight"}));
  EXPECT_EQ(names(1), std::vector<std::string>({"head.weight", "head.bias"}));
  EXPECT_EQ(names(2), std::vector<std::string>({"fc1.bias"}));
  EXPECT_DOUBLE_EQ(groups[1].initial_lr, 0.1);
  EXPECT_DOUBLE_EQ(groups[1].weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(groups[2].initial_lr, 0.01);
  EXPECT_DOUBLE_EQ(groups[2].weight_decay, 0.0);

  // An entry that selects nothing is refused before step 1 (after Init: it may select what surgery adds).
  try {
    make_trainer(Recipe::parse(edit("momentum: 0.9}", "momentum: 0.9, groups: [{names: [\"*.bais\"], weight_decay: 0}]}"),
                               "typo.yaml", {"run_dir=\"\""}));
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_THAT(std::string(e.what()),
                ::testing::HasSubstr("typo.yaml:10:42: optimizer.sgd.groups[0]: names [*.bais] selects none of the "
                                     "model's 4 "
                                     "parameters; the parameters are named like fc1.weight, fc1.bias, head.weight, "
                                     "head.bias"));
  }
}

TEST(RecipeTest, OverridesCreateMissingSections) {
  // kBase has no checkpoint section: the issue's command line must work as given.
  const Recipe r = Recipe::parse(kBase, "base.yaml",
                                 {"checkpoint.folder=runs/x", "checkpoint.interval=10ba", "checkpoint.autoresume=true"});
  tessera::Run run = build_run(r);
  EXPECT_NE(run.checkpoint.folder().find("runs/x"), std::string::npos);
  EXPECT_EQ(run.checkpoint.interval(), Time(10, TimeUnit::Batch));
  EXPECT_TRUE(run.checkpoint.autoresume());
  // A created section is validated like any other: an unknown key is still caught.
  try {
    build_run(Recipe::parse(kBase, "base.yaml", {"checkpoint.foldr=x"}));
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean \"folder\""), std::string::npos) << e.what();
  }
}

TEST(RecipeTest, CheckpointKeysBesideAnEmptyFolderAreAChoice) {
  // checkpoint.folder= on the command line turns a recipe's checkpoints off; its interval and keep stay.
  tessera::Run run = build_run(Recipe::parse(append("checkpoint: {folder: ck, interval: 2ba, keep: 2}\n"), "<string>",
                                             {"checkpoint.folder="}));
  EXPECT_TRUE(run.checkpoint.folder().empty());
}

/// The InputError of make_trainer, or a marker.
std::string trainer_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    make_trainer(Recipe::parse(text, "<string>", overrides));
    return "(no error)";
  } catch (const InputError& e) {
    return e.what();
  }
}

TEST(RecipeTest, TrainerErrorsPointAtTheRecipeLine) {
  // Found by the Trainer (the parts against each other, at init), reported at the part's line, or at the option
  // its message names.
  const std::string with_eval = edit("    loader: {batch_size: 16, workers: 0}\n",
                                     "    loader: {batch_size: 16, workers: 0}\n"
                                     "  eval:\n"
                                     "    dataset: {synthetic: {size: 32, input_shape: [1, 4, 4], num_classes: 5}}\n"
                                     "    loader: {batch_size: 16}\n");
  EXPECT_THAT(trainer_error(with_eval),
              ::testing::HasSubstr("<string>:10:5: data.eval: evaluator \"eval\": the model classifies into 3 "
                                   "classes, its data has 5"));
  EXPECT_THAT(trainer_error(
                  append("callbacks:\n  - progress_bar\n  - early_stopper: {monitor: acuracy, label: train}\n")),
              ::testing::HasSubstr("<string>:13:30: callbacks[1].early_stopper.monitor: the training metrics have no "
                                   "\"acuracy\"; they are: loss, accuracy"));
  // The monitor left out: at the stopper's options.
  EXPECT_THAT(trainer_error(append("callbacks: [{early_stopper: {label: test}}]\n"),
                            {"callbacks[0].early_stopper.monitor=loss"}),
              ::testing::HasSubstr(
                  "<string>:11:37: callbacks[0].early_stopper.label: no evaluator is labelled \"test\""));
  EXPECT_THAT(trainer_error(append("schedulers: [{plateau: {monitor: accuracy}}]\n")),
              ::testing::HasSubstr("<string>:11:14: schedulers[0]: plateau.label: no evaluator is labelled \"eval\" "
                                   "(the run's: none)"));
  // A momentum schedule with an optimizer that has none: at the schedule.
  EXPECT_THAT(trainer_error(edit("  sgd: {lr: 0.1, momentum: 0.9}", "  adagrad: {lr: 0.1}") +
                            "schedulers: [constant, {onecycle: {cycle_momentum: true}}]\n"),
              ::testing::HasSubstr("<string>:11:24: schedulers[1]: trainer: schedulers[1] (onecycle) sets the "
                                   "optimizer's momentum, but adagrad has none to set"));
  // Algorithms that cannot run together: at the first one refused.
  EXPECT_THAT(trainer_error(append("algorithms: [label_smoothing, blurpool, label_smoothing]\n")),
              ::testing::HasSubstr("<string>:11:41: algorithms[2]: the algorithms of this run cannot run together:\n"
                                   "  - label_smoothing appears 2 times"));
  // An override's value: at the override.
  EXPECT_THAT(trainer_error(append("callbacks: [{early_stopper: {monitor: loss, label: train}}]\n"),
                            {"callbacks[0].early_stopper.label=test"}),
              ::testing::HasSubstr("<command line> override 1: callbacks[0].early_stopper.label: no evaluator is "
                                   "labelled \"test\""));
}

TEST(RecipeTest, TextIsTheRecipeAsRun) {
  const Recipe r = Recipe::parse(kBase, "base.yaml", {"optimizer.sgd.lr=0.05", "run_dir=\"\""});
  const Recipe again = Recipe::parse(r.text(), "again.yaml");
  const ConfigNode root = again.root();
  EXPECT_DOUBLE_EQ(root.child("optimizer").child("sgd").child("lr").as_double(), 0.05);
  EXPECT_EQ(root.child("run_dir").as_string(), "");
  EXPECT_EQ(root.child("max_duration").as_time(), Time(2, TimeUnit::Batch));
  EXPECT_EQ(
      root.child("data").child("train").child("dataset").child("synthetic").child("input_shape").as_ints(),
      (std::vector<int64_t>{1, 4, 4}));
  // Quoted strings stay strings.
  const Recipe q = Recipe::parse("label: \"10\"\n");
  EXPECT_NE(q.text().find("\"10\""), std::string::npos) << q.text();
}

TEST(RecipeTest, DefaultsFillIn) {
  tessera::Run run = build_run(Recipe::parse(kBase));
  EXPECT_EQ(run.trainer.max_duration(), Time(2, TimeUnit::Batch));
  EXPECT_EQ(run.trainer.microbatch_size(), 0);
  EXPECT_EQ(run.trainer.eval_interval(), Time(1, TimeUnit::Epoch));
  EXPECT_EQ(run.trainer.precision(), "fp32");
  EXPECT_EQ(run.trainer.loss_scaling(), "auto");
  EXPECT_EQ(run.trainer.log_interval(), 1);
  EXPECT_EQ(run.checkpoint.folder(), "");
  EXPECT_EQ(run.checkpoint.keep(), 3);
  EXPECT_TRUE(run.checkpoint.strict());
  const auto& loader = tessera::testing::as_loader(run.components.train_dataloader).options();
  EXPECT_TRUE(loader.shuffle());
  EXPECT_FALSE(loader.drop_last());
  EXPECT_EQ(loader.prefetch(), 4);
  auto mlp = std::dynamic_pointer_cast<MLP>(run.components.model);
  ASSERT_TRUE(mlp);
  EXPECT_EQ(mlp->options().in_features(), 16);  // 1 * 4 * 4
  EXPECT_EQ(mlp->options().num_classes(), 3);
  EXPECT_EQ(mlp->options().hidden(), (std::vector<int64_t>{16}));
  EXPECT_DOUBLE_EQ(mlp->options().dropout(), 0.0);
  ASSERT_EQ(run.components.train_metrics.size(), 1u);
  EXPECT_EQ(run.components.train_metrics[0]->name(), "accuracy");
  EXPECT_TRUE(run.components.evaluators.empty());
  EXPECT_TRUE(run.components.schedulers.empty());
  EXPECT_TRUE(run.components.algorithms.empty());
  EXPECT_TRUE(run.components.callbacks.empty());
  EXPECT_TRUE(run.metric_files.empty());
}

TEST(RecipeTest, SyntheticRunHasTheComponentsAsked) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("tessera_registry_test_" + std::to_string(::getpid()));
  const std::string text = R"(max_duration: 3ep
seed: 5
threads: 1
eval_interval: 2ba
run_dir: )" + dir.string() +
                           R"(
model:
  mlp: {hidden: [8, 8], dropout: 0.25}
data:
  train:
    dataset: {synthetic: {size: 40, input_shape: [2, 3, 3], num_classes: 4, seed: 3}}
    loader: {batch_size: 10, shuffle: false, workers: 0}
    transforms: [{normalize: {mean: [0.5, 0.5], std: [2, 2]}}, {horizontal_flip: {p: 0.25}}]
    metrics: [accuracy, cross_entropy]
  eval:
    label: test
    subset_batches: 2
    dataset: {synthetic: {size: 30, input_shape: [2, 3, 3], num_classes: 4, seed: 3}}
    loader: {batch_size: 15, shuffle: false}
    metrics: [top2_accuracy, cross_entropy]
optimizer: {adamw: {lr: 0.002, weight_decay: 0.05}}
schedulers: [{cosine: {warmup: 2ba, alpha_f: 0.1}}, constant]
callbacks: [{progress_bar: {width: 12}}]
loggers: [{jsonl: {}}, {csv: {path: sub/m.csv}}]
checkpoint: {folder: ckpt, interval: 2ep, keep: 2}
)";
  tessera::Run run = build_run(Recipe::parse(text));
  EXPECT_EQ(run.trainer.max_duration(), Time(3, TimeUnit::Epoch));
  EXPECT_EQ(run.trainer.threads(), 1);
  EXPECT_EQ(run.model_name, "mlp");
  auto mlp = std::dynamic_pointer_cast<MLP>(run.components.model);
  ASSERT_TRUE(mlp);
  EXPECT_EQ(mlp->options().in_features(), 18);
  EXPECT_EQ(mlp->options().num_classes(), 4);
  EXPECT_EQ(mlp->options().hidden(), (std::vector<int64_t>{8, 8}));
  EXPECT_DOUBLE_EQ(mlp->options().dropout(), 0.25);

  const auto& train = tessera::testing::as_loader(run.components.train_dataloader);
  EXPECT_EQ(train.dataset().size(), 40);
  EXPECT_EQ(train.dataset().input_shape(), (std::vector<int64_t>{2, 3, 3}));
  EXPECT_EQ(train.num_batches(), 4);
  EXPECT_FALSE(train.options().shuffle());
  ASSERT_EQ(run.components.train_metrics.size(), 2u);
  EXPECT_EQ(run.components.train_metrics[1]->name(), "cross_entropy");

  ASSERT_EQ(run.components.evaluators.size(), 1u);
  const Evaluator& ev = run.components.evaluators[0];
  EXPECT_EQ(ev.label, "test");
  EXPECT_EQ(ev.interval, Time(2, TimeUnit::Batch));  // from eval_interval
  EXPECT_EQ(ev.subset_batches, 2);
  EXPECT_EQ(ev.dataloader->num_batches(), 2);
  ASSERT_EQ(ev.metrics.size(), 2u);
  EXPECT_EQ(ev.metrics[0]->name(), "top2_accuracy");

  auto adamw = std::dynamic_pointer_cast<optim::AdamW>(run.components.optimizer);
  ASSERT_TRUE(adamw);
  EXPECT_DOUBLE_EQ(adamw->options().lr(), 0.002);
  EXPECT_DOUBLE_EQ(adamw->options().weight_decay(), 0.05);
  EXPECT_DOUBLE_EQ(adamw->options().beta2(), 0.999);
  size_t params = 0;
  for (const auto& g : adamw->param_groups()) params += g.params.size();
  EXPECT_EQ(params, mlp->parameters().size());

  ASSERT_EQ(run.components.schedulers.size(), 2u);
  EXPECT_EQ(run.components.schedulers[0]->name(), "cosine");
  EXPECT_EQ(run.components.schedulers[1]->name(), "constant");

  ASSERT_EQ(run.components.callbacks.size(), 3u);
  auto bar = std::dynamic_pointer_cast<callbacks::ProgressBar>(run.components.callbacks[0]);
  ASSERT_TRUE(bar);
  EXPECT_EQ(bar->options().width(), 12);
  auto jsonl = std::dynamic_pointer_cast<callbacks::JsonlWriter>(run.components.callbacks[1]);
  ASSERT_TRUE(jsonl);
  EXPECT_EQ(jsonl->options().path(), (dir / "metrics.jsonl").string());
  auto csv = std::dynamic_pointer_cast<callbacks::CsvWriter>(run.components.callbacks[2]);
  ASSERT_TRUE(csv);
  EXPECT_EQ(csv->options().path(), (dir / "sub" / "m.csv").string());
  EXPECT_EQ(run.metric_files,
            (std::vector<std::string>{(dir / "metrics.jsonl").string(), (dir / "sub" / "m.csv").string()}));

  EXPECT_EQ(resolve_against_run_dir(run.checkpoint, run.trainer.run_dir()).folder(), (dir / "ckpt").string());
  EXPECT_EQ(run.checkpoint.interval(), Time(2, TimeUnit::Epoch));
  EXPECT_EQ(run.checkpoint.keep(), 2);
  EXPECT_FALSE(std::filesystem::exists(dir / "ckpt"));  // nothing is created for checkpoints

  for (auto& cb : run.components.callbacks) cb->close();
  std::filesystem::remove_all(dir);
}

TEST(RecipeTest, SeedMakesModelInitReproducible) {
  auto weights = [](const std::vector<std::string>& overrides) {
    tessera::Run run = build_run(Recipe::parse(kBase, "<string>", overrides));
    return run.components.model->parameters()[0].clone();
  };
  const at::Tensor a = weights({"seed=3"});
  const at::Tensor b = weights({"seed=3"});
  const at::Tensor c = weights({"seed=4"});
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, c));
}

TEST(RecipeTest, EvaluatorsAsAList) {
  const std::string text =
      edit("    loader: {batch_size: 16, workers: 0}\n",
           "    loader: {batch_size: 16, workers: 0}\n"
           "  eval:\n"
           "    - {label: a, interval: 1ba, dataset: {synthetic: {size: 8, input_shape: [1, 4, 4], "
           "num_classes: 3}}}\n"
           "    - {label: b, dataset: {synthetic: {size: 8, input_shape: [1, 4, 4], num_classes: 3}}}\n");
  tessera::Run run = build_run(Recipe::parse(text));
  ASSERT_EQ(run.components.evaluators.size(), 2u);
  EXPECT_EQ(run.components.evaluators[0].label, "a");
  EXPECT_EQ(run.components.evaluators[0].interval, Time(1, TimeUnit::Batch));
  EXPECT_EQ(run.components.evaluators[1].label, "b");
  EXPECT_EQ(run.components.evaluators[1].interval, Time(1, TimeUnit::Epoch));

  std::string twice = text;
  twice.replace(twice.find("label: b"), 8, "label: a");
  const std::string message = build_error(twice);
  EXPECT_NE(message.find("<string>:11:15: data.eval[1].label: label \"a\" is used by another evaluator"),
            std::string::npos)
      << message;
}

TEST(RecipeTest, DeviceDefaultsToAutoAndResolvesToTheCpuWithoutCuda) {
  tessera::Run run = build_run(Recipe::parse(kBase));
  EXPECT_EQ(run.trainer.device(), "auto");
  if (at::hasCUDA()) GTEST_SKIP() << "a CUDA device is visible: auto means cuda:0 here";
  EXPECT_EQ(make_trainer(Recipe::parse(kBase))->state().device, c10::Device(c10::kCPU));
  EXPECT_EQ(make_trainer(Recipe::parse(append("device: auto\n")))->state().device, c10::Device(c10::kCPU));
  EXPECT_EQ(make_trainer(Recipe::parse(append("device: cpu\n")))->state().device, c10::Device(c10::kCPU));
}

TEST(RecipeTest, CudaWithoutCudaFailsAtTheDeviceKey) {
  if (at::hasCUDA()) GTEST_SKIP() << "a CUDA device is visible";
  EXPECT_EQ(build_error(append("device: cuda\n")),
            "<string>:11:9: device: cuda was requested but CUDA is not available here (no CUDA device is visible, "
            "or this LibTorch was built without CUDA); use device: cpu or auto");
  EXPECT_NE(build_error(append("device: cuda:1\n")).find("<string>:11:9: device: cuda:1 was requested but CUDA is "
                                                          "not available here"),
            std::string::npos);
  EXPECT_NE(build_error(kBase, {"device=cuda"}).find("<command line> override 1: device: cuda was requested"),
            std::string::npos);
}

TEST(RecipeTest, MakeTrainerCompilesThePlan) {
  auto trainer = make_trainer(Recipe::parse(kBase));
  ASSERT_TRUE(trainer);
  EXPECT_EQ(trainer->options().max_duration(), Time(2, TimeUnit::Batch));
  EXPECT_TRUE(trainer->plan().at(Event::AfterDataloader).empty());
}

TEST(RegistryTest, RegisteredNames) {
  const std::vector<std::string> models{"bert", "bert_classifier", "cnn", "gpt", "mlp", "resnet"};
  EXPECT_EQ(registered_names("models"), models);
  EXPECT_EQ(registered_names("model"), models);
  EXPECT_EQ(registered_names("datasets"),
            (std::vector<std::string>{"fashion_mnist", "streaming", "synthetic", "text", "text_classification"}));
  EXPECT_EQ(registered_names("transforms"),
            (std::vector<std::string>{"horizontal_flip", "mask_tokens", "normalize", "random_crop"}));
  EXPECT_EQ(registered_names("optimizers"),
            (std::vector<std::string>{"adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw", "lamb", "lars",
                                      "lion", "muon", "nadam", "radam", "rmsprop", "sgd"}));
  EXPECT_EQ(
      registered_names("schedulers"),
      (std::vector<std::string>{"constant", "cosine", "cosine_warm_restarts", "exponential", "inverse_sqrt",
                                "linear", "multistep", "onecycle", "plateau", "polynomial", "sequential", "step"}));
  EXPECT_EQ(registered_names("callbacks"),
            (std::vector<std::string>{"activation_monitor", "console_summary", "early_stopper", "generate",
                                      "image_visualizer", "lr_monitor", "memory_monitor", "optimizer_monitor",
                                      "progress_bar", "runtime_estimator", "speed_monitor", "system_metrics_monitor",
                                      "threshold_stopper"}));
  EXPECT_EQ(registered_names("loggers"), (std::vector<std::string>{"csv", "jsonl", "tensorboard"}));
  EXPECT_EQ(registered_names("metrics"),
            (std::vector<std::string>{"accuracy", "cross_entropy", "f1", "perplexity", "precision", "recall",
                                      "top5_accuracy", "weighted_f1", "weighted_precision", "weighted_recall"}));
  EXPECT_NO_THROW(registered_names("algorithms"));
  try {
    registered_names("modles");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean \"models\"?"), std::string::npos) << e.what();
  }
}

TEST(RegistryTest, UnknownAlgorithmThroughMakeAlgorithm) {
  const Recipe r = Recipe::parse("algorithms: [nonexistent_algorithm]\n");
  try {
    make_algorithm(r.root().child("algorithms").elements()[0]);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "<string>:1:14: algorithms[0]: unknown algorithm \"nonexistent_algorithm\""),
              std::string::npos)
        << e.what();
  }
}

TEST(RecipeTest, SuggestName) {
  const std::vector<std::string> known = {"lr", "momentum", "dampening", "nesterov", "weight_decay"};
  EXPECT_EQ(suggest_name("momentom", known), "momentum");
  EXPECT_EQ(suggest_name("weight_dacay", known), "weight_decay");
  EXPECT_EQ(suggest_name("lf", known), "lr");
  EXPECT_EQ(suggest_name("x", known), "");
  EXPECT_EQ(suggest_name("training", {"train", "eval"}), "train");
  EXPECT_EQ(suggest_name("mom", known), "momentum");
  EXPECT_EQ(suggest_name("completely_different", known), "");
}

}  // namespace
}  // namespace tessera
