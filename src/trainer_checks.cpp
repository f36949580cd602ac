#include "trainer_checks.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <tessera/error.h>

#include <filesystem>
#include <string>
#include <unordered_set>

namespace tessera::detail {
namespace {

/// "a, b, c" for the first `limit` items, then "and N more".
std::string first_items(const std::vector<std::string>& items, size_t limit = 5) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > limit) out += fmt::format(" and {} more", items.size() - limit);
  return out;
}

}  // namespace

void check_optimizer_matches_model(const Model& model, const optim::Optimizer& optimizer) {
  std::unordered_set<const void*> held;
  std::vector<at::Tensor> held_params;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params) {
      if (held.insert(p.unsafeGetTensorImpl()).second) held_params.push_back(p);
    }
  }
  std::unordered_set<const void*> owned;
  std::vector<std::string> missing;
  int64_t trainable = 0;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    owned.insert(item.value().unsafeGetTensorImpl());
    if (!item.value().requires_grad()) continue;  // frozen: an optimizer need not hold it
    ++trainable;
    if (!held.count(item.value().unsafeGetTensorImpl())) missing.push_back(item.key());
  }
  std::vector<std::string> foreign;
  for (const auto& p : held_params) {
    if (!owned.count(p.unsafeGetTensorImpl())) foreign.push_back("a tensor of shape " + c10::str(p.sizes()));
  }
  if (missing.empty() && foreign.empty()) return;
  std::string what;
  if (!missing.empty()) {
    what += fmt::format("{} of the model's {} trainable parameters are missing from the optimizer ({}), so they "
                        "would never train",
                        missing.size(), trainable, first_items(missing));
  }
  if (!foreign.empty()) {
    what += fmt::format("{}{} of the optimizer's {} parameters are not the model's ({}): it would update another "
                        "module",
                        what.empty() ? "" : "; ", foreign.size(), held_params.size(), first_items(foreign));
  }
  throw InputError("trainer: the optimizer does not hold the model's parameters: " + what +
                   ". Build the optimizer over the parameters of the model given to the Trainer (e.g. "
                   "optim::SGD(model->parameters(), ...)), after the model is complete");
}

void check_momentum_schedules(const std::vector<std::shared_ptr<optim::Scheduler>>& schedulers,
                              const optim::Optimizer& optimizer) {
  std::vector<std::string> setting;
  std::vector<const void*> where;  // the schedules, which a recipe's error names by their line
  for (size_t i = 0; i < schedulers.size(); ++i) {
    if (!schedulers[i]->sets_momentum()) continue;
    setting.push_back(fmt::format("schedulers[{}] ({})", i, schedulers[i]->name()));
    where.push_back(schedulers[i].get());
  }
  if (setting.size() > 1) {
    throw InputError(fmt::format("trainer: {} all set the optimizer's momentum; expected at most one schedule that "
                                 "does (give cycle_momentum to one of them)",
                                 first_items(setting)),
                     where[1]);
  }
  if (!setting.empty() && optimizer.momentum_option().empty()) {
    throw InputError(fmt::format("trainer: {} sets the optimizer's momentum, but {} has none to set (a momentum "
                                 "schedule sets sgd's, rmsprop's or lars's momentum, or the beta1 of adam, adamw, "
                                 "nadam, radam, adamax, lion or lamb); give cycle_momentum false, or one of those "
                                 "optimizers",
                                 setting[0], optimizer.name()),
                     where[0]);
  }
}

void check_class_counts(const Model& model, data::BatchSource& train_data) {
  const int64_t model_classes = model.num_classes();
  if (model_classes <= 0) return;
  const int64_t data_classes = train_data.num_classes();
  if (data_classes > 0) {
    if (data_classes != model_classes) {
      throw InputError(fmt::format("trainer: the model classifies into {} classes, the training data has {} ({}); "
                                   "build the model with num_classes {} (or use data of {} classes)",
                                   model_classes, data_classes, train_data.describe(), data_classes, model_classes),
                       &train_data);
    }
    return;
  }
  // Unknown class count: the example batch's integer targets must be class ids of the model.
  const Batch example = train_data.example_batch();
  if (!example.has(Batch::kTarget)) return;
  const at::Tensor& y = example.target();
  if (!y.defined() || y.numel() == 0 || at::isFloatingType(y.scalar_type()) || y.scalar_type() == at::kBool) return;
  const int64_t lo = y.min().item<int64_t>();
  const int64_t hi = y.max().item<int64_t>();
  if (lo < 0 || hi >= model_classes) {
    throw InputError(fmt::format("trainer: the training data has class id {} (in its first batch), but the model "
                                 "classifies into {} classes (ids 0..{}); build the model with as many classes as the "
                                 "data has ({})",
                                 lo < 0 ? lo : hi, model_classes, model_classes - 1, train_data.describe()),
                     &train_data);
  }
}

void check_evaluators(const Model& model, const std::vector<Evaluator>& evaluators) {
  for (const Evaluator& ev : evaluators) {
    if (ev.subset_batches == 0 || ev.dataloader->num_batches() == 0) {
      throw InputError(fmt::format(
          "evaluator \"{}\": it would evaluate no batch ({}), so its metrics would be made "
          "up; give it data (subset_batches -1 for all, or at least 1), or leave it out",
          ev.label,
          ev.subset_batches == 0 ? "subset_batches is 0" : ev.dataloader->describe() + " yields none"),
          ev.dataloader.get());
    }
    const int64_t model_classes = model.num_classes(), data_classes = ev.dataloader->num_classes();
    if (model_classes > 0 && data_classes > 0 && model_classes != data_classes) {
      throw InputError(
          fmt::format("evaluator \"{}\": the model classifies into {} classes, its data has {} ({}); "
                      "evaluate on data of the model's classes",
                      ev.label, model_classes, data_classes, ev.dataloader->describe()),
          ev.dataloader.get());
    }
  }
}

void check_loss_terms(const at::Tensor& terms, int64_t examples) {
  if (!terms.defined()) return;
  const auto type = terms.scalar_type();
  if (terms.dim() != 1 || terms.size(0) != examples || at::isFloatingType(type) || at::isComplexType(type)) {
    throw InputError(fmt::format("loss_terms returned {} of shape {}; expected integer counts per example, shape [{}] "
                                 "(Model::loss_terms, models/model.h)",
                                 c10::toString(type), c10::str(terms.sizes()), examples));
  }
}

void check_loss_terms_of_example(const Model& model, data::BatchSource& train_data) {
  const Batch example = train_data.example_batch();
  try {
    check_loss_terms(model.loss_terms(example), example.size());
  } catch (const InputError& e) {
    throw InputError(fmt::format("{} (asked of an example batch of the training data, {}, before step 1: batches "
                                 "train in several parts, weighed by their loss terms)",
                                 e.what(), train_data.describe()));
  }
}

void check_checkpoint_options(const CheckpointOptions& checkpoint) {
  if (checkpoint.autoresume() && checkpoint.folder().empty()) {
    throw InputError("checkpoint: autoresume is on but no checkpoint folder is set, so there is nothing to resume "
                     "from; set a folder (CheckpointOptions().folder(\"checkpoints\")) or turn autoresume off");
  }
  std::error_code ec;
  if (!checkpoint.folder().empty() && std::filesystem::exists(checkpoint.folder(), ec) &&
      !std::filesystem::is_directory(checkpoint.folder(), ec)) {  // found now, not at the first save
    throw InputError("checkpoint.folder: '" + checkpoint.folder() +
                     "' exists and is not a folder; give a folder "
                     "(it is made when missing)");
  }
}

void install_data_transforms(const Plan& plan, data::BatchSource& train_data) {
  std::vector<std::shared_ptr<const data::BatchTransform>> transforms;
  std::vector<std::string> names;
  for (const PlanEntry& entry : plan.at(Event::BeforeDataloader)) {
    if (auto t = entry.algorithm->data_transform()) {
      transforms.push_back(std::move(t));
      names.push_back(entry.algorithm->name());
    }
  }
  if (train_data.set_algorithm_transforms(std::move(transforms))) return;
  std::string list;
  for (size_t i = 0; i < names.size(); ++i) list += (i ? ", " : "") + names[i];
  throw InputError(fmt::format(
      "{} {} in the data pipeline (a transform on the training DataLoader's threads, keyed by (seed, epoch, batch) "
      "so that resuming is exact), but the training data ({}) cannot run transforms; give a Tessera DataLoader "
      "(data.train in a recipe, tessera::data::DataLoader in C++, train_data= in Python), or augment the "
      "images in your own pipeline with the functional form (randaugment_images, augmix_images) and leave the "
      "algorithm out",
      list, names.size() == 1 ? "runs" : "run", train_data.describe()));
}

}  // namespace tessera::detail
