#include "low_precision_layernorm.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/normalization.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

#include "../../src/amp_compat.h"

namespace tessera::algorithms {

at::Tensor low_precision_layer_norm(const at::Tensor& x, const std::vector<int64_t>& normalized_shape,
                                    const at::Tensor& weight, const at::Tensor& bias, double eps) {
  const c10::DeviceType device = x.device().type();
  if (!compat::autocast_enabled(device)) return at::layer_norm(x, normalized_shape, weight, bias, eps);
  const c10::ScalarType dtype = compat::autocast_dtype(device);
  const compat::AutocastOff off(device);
  return at::layer_norm(compat::cast_if_defined(x, dtype), normalized_shape, compat::cast_if_defined(weight, dtype),
                        compat::cast_if_defined(bias, dtype), eps);
}

LowPrecisionLayerNormImpl::LowPrecisionLayerNormImpl(std::vector<int64_t> normalized_shape, double eps,
                                                     at::Tensor weight, at::Tensor bias)
    : normalized_shape_(std::move(normalized_shape)), eps_(eps) {
  // The same tensors under the same names: no state-dict key, optimizer entry or value changes.
  if (weight.defined()) weight_ = register_parameter("weight", weight);
  if (bias.defined()) bias_ = register_parameter("bias", bias);
}

at::Tensor LowPrecisionLayerNormImpl::forward(const at::Tensor& x) {
  return low_precision_layer_norm(x, normalized_shape_, weight_, bias_, eps_);
}

int64_t apply_low_precision_layernorm(torch::nn::Module& model) {
  return replace_slots(model, nullptr,
                       [](const std::string&, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
                         auto* ln = current.ptr()->as<torch::nn::LayerNormImpl>();
                         if (ln == nullptr) return std::nullopt;
                         return torch::nn::AnyModule(std::make_shared<LowPrecisionLayerNormImpl>(
                             ln->options.normalized_shape(), ln->options.eps(), ln->weight, ln->bias));
                       });
}

LowPrecisionLayerNorm::LowPrecisionLayerNorm(LowPrecisionLayerNormOptions options) : options_(std::move(options)) {
  spec_.name = "low_precision_layernorm";
  spec_.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure}}};
  spec_.required_on_load = true;
  spec_.refused_precisions = {Precision::Fp32};
  spec_.precision_reason =
      "without mixed precision it changes nothing (LayerNorm runs in fp32 then); use precision amp_bf16 or amp_fp16, "
      "or remove it";
  spec_.precision_note = "LayerNorms compute in the autocast dtype (bf16 or fp16), where autocast would use fp32";
  // After the surgeries that add LayerNorms (Composer sorts it last for that reason): none of Tessera's does yet.
}

void LowPrecisionLayerNorm::check(const State& state) const {
  const SurgeryCount planned = surgery(*state.model, *this, nullptr, /*dry_run=*/true, "layernorms", [&] {
    return count_slots(*state.model, [](torch::nn::Module& m) { return m.as<torch::nn::LayerNormImpl>() != nullptr; });
  });
  if (planned.layers == 0) {
    throw InputError(fmt::format("low_precision_layernorm: the model has no {} (the gpt model has them), so it would "
                                 "have no effect; remove it",
                                 planned.external ? "torch.nn.LayerNorm" : "torch::nn::LayerNorm in a slot"));
  }
}

void LowPrecisionLayerNorm::apply(Event, State& state, Logger& logger) {
  replaced_ = surgery(*state.model, *this, state.optimizer.get(), /*dry_run=*/false, "layernorms", [&] {
                return apply_low_precision_layernorm(*state.model);
              }).layers;
  logger.info(fmt::format("low_precision_layernorm: {} LayerNorms compute in {}", replaced_,
                          precision_name(state.precision)));
}

}  // namespace tessera::algorithms
