#include "gated_linear_units.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/linear.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

namespace tessera::algorithms {

namespace nn = torch::nn;

std::shared_ptr<GatedFeedForward> gate(FeedForward& original, const GatedLinearUnitsOptions& options) {
  auto* fc = original.slot("fc").ptr()->as<nn::LinearImpl>();
  if (fc == nullptr) {
    throw InputError("gated_linear_units: the feed-forward network's fc slot holds no torch::nn::Linear (another "
                     "surgery replaced it); put gated_linear_units before it");
  }
  return std::make_shared<GatedFeedForward>(fc->options.in_features(), fc->options.out_features(),
                                            original.activation(), options.gated_layer_bias(),
                                            options.non_gated_layer_bias(), original.slot("proj"));
}

at::Tensor gated_linear_unit(const at::Tensor& x, const at::Tensor& w_gated, const at::Tensor& b_gated,
                             const at::Tensor& w_linear, const at::Tensor& b_linear, const std::string& activation) {
  return activate(at::linear(x, w_gated, b_gated), activation) * at::linear(x, w_linear, b_linear);
}

int64_t apply_gated_linear_units(torch::nn::Module& model, const GatedLinearUnitsOptions& options,
                                 optim::Optimizer* optimizer) {
  return replace_slots(model, optimizer,
                       [&](const std::string&, nn::AnyModule& current) -> std::optional<nn::AnyModule> {
                         auto* ff = dynamic_cast<FeedForward*>(current.ptr().get());
                         if (ff == nullptr) return std::nullopt;
                         return nn::AnyModule(gate(*ff, options));
                       });
}

GatedLinearUnits::GatedLinearUnits(GatedLinearUnitsOptions options) : options_(std::move(options)) {
  validate_options(options_, "gated_linear_units");
  spec_.name = "gated_linear_units";
  spec_.accesses = {{Event::Init, {Resource::ModelStructure},
                     {Resource::ModelStructure, Resource::Parameters, Resource::OptimizerGroups}}};
  spec_.required_on_load = true;
}

void GatedLinearUnits::check(const State& state) const {
  if (count_slots(*state.model, [](torch::nn::Module& m) { return dynamic_cast<FeedForward*>(&m) != nullptr; }) == 0) {
    const auto gated = [](torch::nn::Module& m) { return dynamic_cast<GatedFeedForward*>(&m) != nullptr; };
    if (count_slots(*state.model, gated) > 0) {
      throw InputError("gated_linear_units: the model's feed-forward networks are gated linear units already (the "
                       "gpt model's gated: true), so it would have no effect; remove it");
    }
    throw InputError(
        "gated_linear_units: the model has no tessera::FeedForward in a slot (the feed-forward networks of the gpt "
        "model, models/gpt.h), so it would have no effect; use the gpt model or remove it");
  }
}

void GatedLinearUnits::apply(Event, State& state, Logger& logger) {
  replaced_ = apply_gated_linear_units(*state.model, options_, state.optimizer.get());
  logger.info(fmt::format("gated_linear_units: {} feed-forward networks are gated linear units now", replaced_));
}

}  // namespace tessera::algorithms
