#pragma once
/// Model surgery: swap layers in the slots of a model tree and keep the optimizer consistent.
///
///     int64_t n = tessera::replace_slots(*state.model, state.optimizer.get(),
///         [](const std::string& path, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
///           if (auto* conv = current.ptr()->as<torch::nn::Conv2dImpl>()) return make_replacement(*conv);
///           return std::nullopt;   // keep
///         });
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/options/batchnorm.h>

#include <tessera/models/model.h>
#include <tessera/optim/optimizer.h>

namespace tessera {

/// Decides the fate of one slot: a replacement module, or nullopt to keep it. `path` is the slot's full
/// name in the model ("stage2.block0.conv1").
using SlotPolicy = std::function<std::optional<torch::nn::AnyModule>(const std::string& path, torch::nn::AnyModule& current)>;

/// Applies `policy` to every slot of every SlottedModule in `model` (the model itself included), visiting
/// the modules that existed before the call (replacements are not visited again; each takes the training or
/// evaluation mode of the module it replaces). Then, when `optimizer` is
/// given, parameters that left the model leave the optimizer (with their state) and new parameters join the
/// first param group. Returns the number of slots replaced.
int64_t replace_slots(torch::nn::Module& model, optim::Optimizer* optimizer, const SlotPolicy& policy);

/// The number of slots, over every SlottedModule in `model` (the model itself included), whose module `matches`:
/// what a surgery with that test would replace (an algorithm's check before step 1).
int64_t count_slots(torch::nn::Module& model, const std::function<bool(torch::nn::Module&)>& matches);

/// How many layers a surgery algorithm replaces (or, with `dry_run`, would replace) and who does it.
struct SurgeryCount {
  int64_t layers = 0;
  bool external = false;  ///< the model's own surgery (a Python model's torch.nn layers), not the slots'
};
/// The surgery of `algorithm` on `model`: the model's own when it does it (Model::external_surgery; the count it
/// reports under `key`, 0 when absent), else `on_slots()`, which replaces (or with `dry_run` counts) the slots'
/// layers and returns how many. What an algorithm's check (dry_run) and its apply at init share.
SurgeryCount surgery(Model& model, const Algorithm& algorithm, optim::Optimizer* optimizer, bool dry_run,
                     const std::string& key, const std::function<int64_t()>& on_slots);

/// Makes `optimizer` hold exactly the parameters of `after` that it held in `before` plus the ones new in
/// `after`: removed parameters (and their state) leave, new ones join the group that selects their name
/// (Optimizer::add_parameter), as if they had been there when the optimizer was built.
void sync_optimizer(optim::Optimizer& optimizer, const std::vector<at::Tensor>& before,
                    const optim::NamedParameters& after);

/// The parts of a torch::nn::BatchNorm1d/2d/3d, for a layer that replaces it: such a layer registers the very same
/// tensors under the same names (undefined ones too: not affine, no running statistics), so that the optimizer and
/// the state-dict keys do not change (ghost_batchnorm, distributed.sync_batch_norm).
struct BatchNormParts {
  const torch::nn::BatchNormOptions* options = nullptr;
  std::vector<int64_t> input_dims;  ///< the input ranks it takes: {2, 3} (1d), {4} (2d), {5} (3d)
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};
/// The parts of `module` when it is a torch BatchNorm1d, 2d or 3d; std::nullopt otherwise.
std::optional<BatchNormParts> find_batch_norm(torch::nn::Module& module);

}  // namespace tessera
