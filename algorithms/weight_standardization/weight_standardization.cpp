#include "weight_standardization.h"

#include <unordered_set>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/padding.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

namespace tessera::algorithms {
namespace F = torch::nn::functional;
namespace {

/// The conv in `module` (Conv1d, 2d or 3d), as a WeightStandardizedConv's constructor arguments; nullopt otherwise.
struct FoundConv {
  WeightStandardizedConvImpl::Options options;
  at::Tensor weight, bias;
  std::vector<int64_t> reversed_padding;
};

/// The conv's padding for non-zero padding modes (a protected member of ConvNdImpl: read through a derived type).
template <size_t D, class Derived>
struct PaddingOf : torch::nn::ConvNdImpl<D, Derived> {
  static const std::vector<int64_t>& of(const torch::nn::ConvNdImpl<D, Derived>& conv) {
    return conv.*(&PaddingOf::_reversed_padding_repeated_twice);
  }
};

template <size_t D, class Impl>
std::optional<FoundConv> take(torch::nn::Module& module) {
  auto* conv = module.as<Impl>();
  if (conv == nullptr) return std::nullopt;
  return FoundConv{conv->options, conv->weight, conv->bias, PaddingOf<D, Impl>::of(*conv)};
}

std::optional<FoundConv> find_conv(torch::nn::Module& module) {
  if (auto c = take<1, torch::nn::Conv1dImpl>(module)) return c;
  if (auto c = take<2, torch::nn::Conv2dImpl>(module)) return c;
  return take<3, torch::nn::Conv3dImpl>(module);
}

/// The padding mode's name ("kZeros", "kReflect", ...): the same call on LibTorch 1.13's c10::variant and 2.x's
/// std::variant.
std::string mode_name(const torch::nn::detail::conv_padding_mode_t& mode) { return torch::enumtype::get_enum_name(mode); }

F::PadFuncOptions::mode_t pad_mode(const std::string& name) {
  if (name == "kReflect") return torch::kReflect;
  if (name == "kReplicate") return torch::kReplicate;
  return torch::kCircular;
}

template <size_t D>
at::Tensor conv_nd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                   const torch::nn::detail::ConvNdOptions<D>& o, const std::vector<int64_t>& reversed_padding) {
  at::Tensor input = x;
  typename torch::nn::detail::ConvNdOptions<D>::padding_t padding = o.padding();
  const std::string mode = mode_name(o.padding_mode());
  if (mode != "kZeros") {  // as torch::nn::Conv: pad with the mode, then convolve without padding
    input = F::pad(x, F::PadFuncOptions(reversed_padding).mode(pad_mode(mode)));
    padding = torch::ExpandingArray<D>(0);
  }
  if constexpr (D == 1) return F::detail::conv1d(input, w, b, o.stride(), padding, o.dilation(), o.groups());
  if constexpr (D == 2) return F::detail::conv2d(input, w, b, o.stride(), padding, o.dilation(), o.groups());
  if constexpr (D == 3) return F::detail::conv3d(input, w, b, o.stride(), padding, o.dilation(), o.groups());
}

/// The convs in slots, in named_modules order, less the last `ignore`: the modules to replace.
std::unordered_set<const torch::nn::Module*> standardized_convs(torch::nn::Module& model, int64_t ignore) {
  std::unordered_set<const torch::nn::Module*> in_slots;
  replace_slots(model, nullptr, [&](const std::string&, torch::nn::AnyModule& current) {
    if (find_conv(*current.ptr())) in_slots.insert(current.ptr().get());
    return std::optional<torch::nn::AnyModule>();
  });
  std::vector<const torch::nn::Module*> ordered;
  for (const auto& m : model.modules(/*include_self=*/false)) {  // a conv in a slot is a child, never the root
    if (in_slots.count(m.get()) != 0) ordered.push_back(m.get());
  }
  const auto keep = static_cast<int64_t>(ordered.size()) - ignore;
  std::unordered_set<const torch::nn::Module*> out;
  for (int64_t i = 0; i < keep; ++i) out.insert(ordered[static_cast<size_t>(i)]);
  return out;
}

}  // namespace

at::Tensor standardize_weight(const at::Tensor& w, double eps) {
  TORCH_CHECK(w.defined() && w.dim() >= 2, "standardize_weight: expected a weight with an output-channel dimension and "
              "at least one more ([out, in, k...]), got ", w.defined() ? c10::str(w.sizes()) : std::string("undefined"));
  TORCH_CHECK(eps > 0, "standardize_weight: eps must be positive, got ", eps);
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < w.dim(); ++d) dims.push_back(d);
  const auto [var, mean] = at::var_mean(w, dims, /*unbiased=*/false, /*keepdim=*/true);
  return (w - mean) / (var + eps).sqrt();
}

std::vector<int64_t> weight_standardization_padding(const torch::nn::Module& conv) {
  if (const auto* c = conv.as<torch::nn::Conv1dImpl>()) return PaddingOf<1, torch::nn::Conv1dImpl>::of(*c);
  if (const auto* c = conv.as<torch::nn::Conv2dImpl>()) return PaddingOf<2, torch::nn::Conv2dImpl>::of(*c);
  if (const auto* c = conv.as<torch::nn::Conv3dImpl>()) return PaddingOf<3, torch::nn::Conv3dImpl>::of(*c);
  throw InputError(fmt::format("weight_standardization_padding: expected a Conv1d, Conv2d or Conv3d, got {}", conv.name()));
}

WeightStandardizedConvImpl::WeightStandardizedConvImpl(Options options_, at::Tensor weight_, at::Tensor bias_,
                                                       std::vector<int64_t> reversed_padding_, double eps_)
    : options(std::move(options_)), reversed_padding(std::move(reversed_padding_)), eps(eps_) {
  if (!(eps > 0)) throw InputError(fmt::format("WeightStandardizedConv: eps must be positive, got {}", eps));
  if (!weight_.defined() || weight_.dim() < 3) {
    throw InputError("WeightStandardizedConv: expected a convolution weight [out, in / groups, k...]");
  }
  // The same tensors under the same names as in the conv: state-dict keys and the optimizer do not change.
  weight = register_parameter("weight", weight_, weight_.requires_grad());
  bias = register_parameter("bias", bias_, bias_.defined() && bias_.requires_grad());
}

at::Tensor WeightStandardizedConvImpl::forward(const at::Tensor& x) {
  const at::Tensor w = standardize_weight(weight, eps);
  if (const auto* o = std::get_if<torch::nn::detail::ConvNdOptions<1>>(&options)) {
    return conv_nd<1>(x, w, bias, *o, reversed_padding);
  }
  if (const auto* o = std::get_if<torch::nn::detail::ConvNdOptions<2>>(&options)) {
    return conv_nd<2>(x, w, bias, *o, reversed_padding);
  }
  return conv_nd<3>(x, w, bias, std::get<torch::nn::detail::ConvNdOptions<3>>(options), reversed_padding);
}

void WeightStandardizedConvImpl::pretty_print(std::ostream& stream) const {
  std::visit([&](const auto& o) { stream << "tessera::WeightStandardizedConv(" << o.in_channels() << ", "
                                         << o.out_channels() << ", eps=" << eps << ")"; },
             options);
}

int64_t apply_weight_standardization(torch::nn::Module& model, const WeightStandardizationOptions& options,
                                     optim::Optimizer* optimizer) {
  WeightStandardizationOptions checked = options;
  validate_options(checked, "weight_standardization");
  const auto chosen = standardized_convs(model, options.n_last_layers_ignore());
  return replace_slots(model, optimizer, [&](const std::string&, torch::nn::AnyModule& current) {
    if (chosen.count(current.ptr().get()) == 0) return std::optional<torch::nn::AnyModule>();
    FoundConv found = *find_conv(*current.ptr());
    return std::optional<torch::nn::AnyModule>(torch::nn::AnyModule(WeightStandardizedConv(
        std::move(found.options), found.weight, found.bias, std::move(found.reversed_padding), options.eps())));
  });
}

int64_t count_weight_standardization(torch::nn::Module& model, const WeightStandardizationOptions& options) {
  return static_cast<int64_t>(standardized_convs(model, options.n_last_layers_ignore()).size());
}

WeightStandardization::WeightStandardization(WeightStandardizationOptions options) : options_(std::move(options)) {
  validate_options(options_, "weight_standardization");
  spec_.name = "weight_standardization";
  // The parameters stay the same tensors: no optimizer change.
  spec_.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure}}};
  spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::ModelStructure), Event::Init,
                         "it standardizes the convs that other surgery keeps in slots (inside blurpool's BlurConv2d and "
                         "squeeze-excite's SqueezeExciteConv2d); before them, they would find no Conv2d to wrap"});
  spec_.precision_note = "the weights are standardized in their own dtype (float32 parameters) before autocast casts "
                         "them for the convolution";
  spec_.required_on_load = true;
}

void WeightStandardization::check(const State& state) const {
  const SurgeryCount planned = surgery(*state.model, *this, nullptr, /*dry_run=*/true, "convs",
                                       [&] { return count_weight_standardization(*state.model, options_); });
  if (planned.layers > 0) return;
  throw InputError(fmt::format(
      "the model has no Conv1d, Conv2d or Conv3d{} to standardize{}, so it would have no effect; remove it from the "
      "algorithms{}",
      planned.external ? "" : " in a slot",
      options_.n_last_layers_ignore() > 0 ? fmt::format(" once the last {} are ignored (n_last_layers_ignore)",
                                                        options_.n_last_layers_ignore())
                                          : "",
      options_.n_last_layers_ignore() > 0 ? " or lower n_last_layers_ignore" : ""));
}

void WeightStandardization::apply(Event, State& state, Logger& logger) {
  replaced_ = surgery(*state.model, *this, state.optimizer.get(), /*dry_run=*/false, "convs", [&] {
                return apply_weight_standardization(*state.model, options_, state.optimizer.get());
              }).layers;
  logger.info(fmt::format("weight_standardization: {} convolutions standardize their weights", replaced_));
}

}  // namespace tessera::algorithms
