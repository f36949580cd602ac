#include "squeeze_excite.h"

#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

namespace tessera::algorithms {
namespace {

bool eligible(const torch::nn::Module& module, const SqueezeExciteOptions& options) {
  const auto* conv = module.as<torch::nn::Conv2dImpl>();
  return conv != nullptr &&
         std::min(conv->options.in_channels(), conv->options.out_channels()) >= options.min_channels();
}

int64_t squeeze_excite_slots(torch::nn::Module& model, const SqueezeExciteOptions& options,
                             optim::Optimizer* optimizer, bool build) {
  int64_t n = 0;
  replace_slots(model, optimizer, [&](const std::string&, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
    const auto module = current.ptr();
    if (!eligible(*module, options)) return std::nullopt;
    ++n;
    if (!build) return std::nullopt;
    auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(module);
    const int64_t latent = squeeze_excite_latent(options.latent_channels(), conv->options.out_channels());
    // The new layers on the conv's device and dtype (surgery at Init runs before the model moves, but a functional
    // call may come later).
    SqueezeExciteConv2d wrapped(torch::nn::Conv2d(conv), latent);
    wrapped->se->to(conv->weight.device(), conv->weight.scalar_type());
    return torch::nn::AnyModule(wrapped);
  });
  return n;
}

}  // namespace

int64_t squeeze_excite_latent(double latent_channels, int64_t channels) {
  if (!(latent_channels > 0)) {
    throw InputError(fmt::format("squeeze_excite: latent_channels must be positive, got {}", latent_channels));
  }
  if (latent_channels >= 1) return static_cast<int64_t>(latent_channels);
  return std::max<int64_t>(1, static_cast<int64_t>(latent_channels * static_cast<double>(channels)));
}

at::Tensor squeeze_excite(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  TORCH_CHECK(x.dim() == 4, "squeeze_excite: expected an input [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(w1.dim() == 2 && w1.size(1) == x.size(1), "squeeze_excite: w1 must be [d, C] with C = ", x.size(1),
              " (the input's channels), got ", w1.sizes());
  TORCH_CHECK(w2.dim() == 2 && w2.size(0) == x.size(1) && w2.size(1) == w1.size(0),
              "squeeze_excite: w2 must be [C, d] = [", x.size(1), ", ", w1.size(0), "], got ", w2.sizes());
  const at::Tensor pooled = x.mean({2, 3});                               // [N, C]
  const at::Tensor gate = at::linear(at::linear(pooled, w1).relu(), w2).sigmoid();  // [N, C]
  return x * gate.unsqueeze(-1).unsqueeze(-1);
}

SqueezeExcite2dImpl::SqueezeExcite2dImpl(int64_t channels, int64_t latent) {
  if (channels < 1 || latent < 1) {
    throw InputError(fmt::format("SqueezeExcite2d: channels and latent must be at least 1, got {} and {}", channels,
                                 latent));
  }
  fc1 = register_module("fc1", torch::nn::Linear(torch::nn::LinearOptions(channels, latent).bias(false)));
  fc2 = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(latent, channels).bias(false)));
}

at::Tensor SqueezeExcite2dImpl::forward(const at::Tensor& x) { return squeeze_excite(x, fc1->weight, fc2->weight); }

SqueezeExciteConv2dImpl::SqueezeExciteConv2dImpl(torch::nn::Conv2d conv, int64_t latent) {
  const int64_t channels = conv->options.out_channels();
  register_slot("conv", torch::nn::AnyModule(std::move(conv)));
  se = register_module("se", SqueezeExcite2d(channels, latent));
}

at::Tensor SqueezeExciteConv2dImpl::forward(const at::Tensor& x) { return se->forward(call("conv", x)); }

int64_t apply_squeeze_excite(torch::nn::Module& model, const SqueezeExciteOptions& options,
                             optim::Optimizer* optimizer) {
  SqueezeExciteOptions checked = options;
  validate_options(checked, "squeeze_excite");
  return squeeze_excite_slots(model, options, optimizer, /*build=*/true);
}

int64_t count_squeeze_excite(torch::nn::Module& model, const SqueezeExciteOptions& options) {
  return squeeze_excite_slots(model, options, nullptr, /*build=*/false);
}

SqueezeExcite::SqueezeExcite(SqueezeExciteOptions options) : options_(std::move(options)) {
  validate_options(options_, "squeeze_excite");
  spec_.name = "squeeze_excite";
  spec_.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure, Resource::OptimizerGroups}}};
  spec_.order.push_back({OrderRule::Relation::Before, Selector::writers_of(Resource::ModelStructure), Event::Init,
                         "it wraps each conv and keeps it in a slot, so later surgery still reaches it (blurpool "
                         "blurs the strided ones); after blurpool, the convs inside BlurConv2d would get no SE block"});
  spec_.required_on_load = true;
}

void SqueezeExcite::check(const State& state) const {
  const SurgeryCount planned = surgery(*state.model, *this, nullptr, /*dry_run=*/true, "convs",
                                       [&] { return count_squeeze_excite(*state.model, options_); });
  if (planned.layers > 0) return;
  throw InputError(fmt::format(
      "the model has no Conv2d{} with at least {} input and output channels (min_channels), so it would have no "
      "effect; lower min_channels (in a recipe, squeeze_excite: {{min_channels: 16}}) or remove it",
      planned.external ? "" : " in a slot", options_.min_channels()));
}

void SqueezeExcite::apply(Event, State& state, Logger& logger) {
  replaced_ = surgery(*state.model, *this, state.optimizer.get(), /*dry_run=*/false, "convs", [&] {
                return apply_squeeze_excite(*state.model, options_, state.optimizer.get());
              }).layers;
  logger.info(fmt::format("squeeze_excite: added an SE block after {} convolutions", replaced_));
}

}  // namespace tessera::algorithms
