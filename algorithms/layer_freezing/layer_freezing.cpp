#include "layer_freezing.h"

#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/callback.h>
#include <tessera/error.h>

namespace tessera::algorithms {

std::vector<std::shared_ptr<torch::nn::Module>> freezable_layers(torch::nn::Module& model) {
  std::vector<std::shared_ptr<torch::nn::Module>> out;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (m->children().empty() && !m->parameters(/*recurse=*/false).empty()) out.push_back(m);
  }
  return out;
}

int64_t freeze_depth(double e, int64_t num_layers, double freeze_start, double freeze_level) {
  if (e <= freeze_start || num_layers < 2) return 0;
  const double phi = freeze_level * (e - freeze_start) / (1.0 - freeze_start);
  // The small tolerance makes exact boundaries exact: (1/3 - 0.2)/(1 - 0.2) * 6 is 0.9999999999999998 in
  // floating point and must freeze 1 layer, not 0.
  const int64_t d =
      static_cast<int64_t>(std::floor(std::min(phi, 1.0) * static_cast<double>(num_layers - 1) + 1e-9));
  return std::clamp<int64_t>(d, 0, num_layers - 1);
}

int64_t freeze_layers(torch::nn::Module& model, optim::Optimizer* optimizer, int64_t depth) {
  const auto layers = freezable_layers(model);
  depth = std::clamp<int64_t>(depth, 0, layers.empty() ? 0 : static_cast<int64_t>(layers.size()) - 1);
  std::vector<at::Tensor> frozen;
  for (int64_t i = 0; i < depth; ++i) {
    for (auto& p : layers[i]->parameters(/*recurse=*/false)) {
      if (!p.requires_grad()) continue;
      p.set_requires_grad(false);
      p.mutable_grad() = at::Tensor();
      frozen.push_back(p);
    }
  }
  if (optimizer != nullptr && !frozen.empty()) optimizer->remove_parameters(frozen);
  return depth;
}

LayerFreezing::LayerFreezing(LayerFreezingOptions options) : options_(std::move(options)) {
  validate_options(options_, "layer_freezing");
  spec_.name = "layer_freezing";
  spec_.accesses = {{Event::EpochEnd, {Resource::ModelStructure}, {Resource::Parameters, Resource::OptimizerGroups}},
                    {Event::AfterLoad, {}, {Resource::Parameters, Resource::OptimizerGroups}}};
  spec_.leaves_parameters_unused = true;
}

void LayerFreezing::apply(Event event, State& state, Logger& logger) {
  if (event == Event::AfterLoad) {
    reapply(state);
    return;
  }
  const int64_t layers = static_cast<int64_t>(freezable_layers(*state.model).size());
  const int64_t want = freeze_depth(state.elapsed_fraction(), layers, options_.freeze_start(), options_.freeze_level());
  if (want <= frozen_depth_) return;  // never unfreezes
  frozen_depth_ = freeze_layers(*state.model, state.optimizer.get(), want);
  logger.info(fmt::format("layer_freezing: {} of {} layers frozen at epoch {}", frozen_depth_, layers, state.timestamp.epoch));
  logger.log_metrics({{"layer_freezing/frozen_layers", static_cast<double>(frozen_depth_)}}, state.timestamp);
}

StateDict LayerFreezing::state_dict() const { return {{"frozen_depth", at::scalar_tensor(frozen_depth_, at::kLong)}}; }

void LayerFreezing::load_state_dict(const StateDict& state) {
  auto it = state.find("frozen_depth");
  if (it == state.end()) throw InputError("layer_freezing: the checkpoint has no frozen_depth entry");
  frozen_depth_ = it->second.item<int64_t>();
}

void LayerFreezing::reapply(State& state) {
  if (frozen_depth_ > 0) freeze_layers(*state.model, state.optimizer.get(), frozen_depth_);
}

}  // namespace tessera::algorithms
