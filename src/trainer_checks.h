#pragma once
// Plan-time checks of the Trainer's parts against each other (src/trainer_checks.cpp): each throws InputError
// with the reason and the fix, before Init (so before any surgery) and before step 1.
#include <memory>
#include <vector>

#include <tessera/algorithm.h>
#include <tessera/checkpoint.h>
#include <tessera/data/batch_source.h>
#include <tessera/engine.h>
#include <tessera/models/model.h>
#include <tessera/optim/optimizer.h>
#include <tessera/optim/scheduler.h>

namespace tessera::detail {

/// The optimizer holds the model's trainable parameters and no others (a model's frozen parameters, with
/// requires_grad false, may be missing from it).
void check_optimizer_matches_model(const Model& model, const optim::Optimizer& optimizer);

/// At most one schedule sets the momentum (onecycle's cycle_momentum, torch's schedulers that cycle it), and the
/// optimizer has one for it to set (its momentum_option()). After the schedules' own checks (a torch scheduler
/// followed as torch steps it knows only then whether it moves the momentum).
void check_momentum_schedules(const std::vector<std::shared_ptr<optim::Scheduler>>& schedulers,
                              const optim::Optimizer& optimizer);

/// The model's class count agrees with the training data's (when both are known), or, when the data's is
/// unknown, with the example batch's integer targets.
void check_class_counts(const Model& model, data::BatchSource& train_data);

/// Each evaluator evaluates some batch (its metrics would be made up otherwise), and its data's class count,
/// when known, is the model's (a mismatch would fail at the first evaluation, after a whole epoch of
/// training, or give a meaningless accuracy).
void check_evaluators(const Model& model, const std::vector<Evaluator>& evaluators);

/// Model::loss_terms's answer for a batch of `examples`: undefined (every example one term), or integer counts of
/// shape [examples]; an InputError saying what it returned otherwise.
void check_loss_terms(const at::Tensor& terms, int64_t examples);

/// When batches train in several parts (microbatches or ranks, where the Trainer weighs them by their terms): the
/// model's loss_terms of an example batch of the training data keeps that contract, so that a wrong one is refused
/// before step 1 rather than at the first batch.
void check_loss_terms_of_example(const Model& model, data::BatchSource& train_data);

/// autoresume needs a checkpoint folder (checked before Init, so that no surgery runs first).
void check_checkpoint_options(const CheckpointOptions& checkpoint);

/// Sets the data transforms of the algorithms in `plan` (Algorithm::data_transform, in plan order at
/// before_dataloader) on the training data; an InputError naming them when the data cannot run transforms.
void install_data_transforms(const Plan& plan, data::BatchSource& train_data);

}  // namespace tessera::detail
