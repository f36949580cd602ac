#include "low_precision_groupnorm.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/normalization.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

#include "../../src/amp_compat.h"

namespace tessera::algorithms {

at::Tensor low_precision_group_norm(const at::Tensor& x, int64_t num_groups, const at::Tensor& weight,
                                    const at::Tensor& bias, double eps) {
  const c10::DeviceType device = x.device().type();
  if (!compat::autocast_enabled(device)) return at::group_norm(x, num_groups, weight, bias, eps);
  const c10::ScalarType dtype = compat::autocast_dtype(device);
  const compat::AutocastOff off(device);
  return at::group_norm(compat::cast_if_defined(x, dtype), num_groups, compat::cast_if_defined(weight, dtype),
                        compat::cast_if_defined(bias, dtype), eps);
}

LowPrecisionGroupNormImpl::LowPrecisionGroupNormImpl(int64_t num_groups, double eps, at::Tensor weight, at::Tensor bias)
    : num_groups_(num_groups), eps_(eps) {
  // The same tensors under the same names: no state-dict key, optimizer entry or value changes.
  if (weight.defined()) weight_ = register_parameter("weight", weight);
  if (bias.defined()) bias_ = register_parameter("bias", bias);
}

at::Tensor LowPrecisionGroupNormImpl::forward(const at::Tensor& x) {
  return low_precision_group_norm(x, num_groups_, weight_, bias_, eps_);
}

int64_t apply_low_precision_groupnorm(torch::nn::Module& model) {
  return replace_slots(model, nullptr,
                       [](const std::string&, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
                         auto* gn = current.ptr()->as<torch::nn::GroupNormImpl>();
                         if (gn == nullptr) return std::nullopt;
                         return torch::nn::AnyModule(std::make_shared<LowPrecisionGroupNormImpl>(
                             gn->options.num_groups(), gn->options.eps(), gn->weight, gn->bias));
                       });
}

LowPrecisionGroupNorm::LowPrecisionGroupNorm(LowPrecisionGroupNormOptions options) : options_(std::move(options)) {
  spec_.name = "low_precision_groupnorm";
  spec_.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure}}};
  spec_.required_on_load = true;
  spec_.refused_precisions = {Precision::Fp32};
  spec_.precision_reason =
      "without mixed precision it changes nothing (GroupNorm runs in fp32 then); use precision amp_bf16 or amp_fp16, "
      "or remove it";
  spec_.precision_note = "GroupNorms compute in the autocast dtype (bf16 or fp16), where autocast would use fp32";
  // After the surgeries that add GroupNorms (Composer sorts it last for that reason): none of Tessera's does.
}

void LowPrecisionGroupNorm::check(const State& state) const {
  const SurgeryCount planned = surgery(*state.model, *this, nullptr, /*dry_run=*/true, "groupnorms", [&] {
    return count_slots(*state.model, [](torch::nn::Module& m) { return m.as<torch::nn::GroupNormImpl>() != nullptr; });
  });
  if (planned.layers == 0) {
    throw InputError(fmt::format("low_precision_groupnorm: the model has no {} (the resnet model has them with norm: "
                                 "group), so it would have no effect; remove it",
                                 planned.external ? "torch.nn.GroupNorm" : "torch::nn::GroupNorm in a slot"));
  }
}

void LowPrecisionGroupNorm::apply(Event, State& state, Logger& logger) {
  replaced_ = surgery(*state.model, *this, state.optimizer.get(), /*dry_run=*/false, "groupnorms", [&] {
                return apply_low_precision_groupnorm(*state.model);
              }).layers;
  logger.info(fmt::format("low_precision_groupnorm: {} GroupNorms compute in {}", replaced_,
                          precision_name(state.precision)));
}

}  // namespace tessera::algorithms
