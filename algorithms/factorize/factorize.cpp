#include "factorize.h"

#include <algorithm>
#include <set>
#include <string>
#include <tuple>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/container/any.h>
#include <torch/utils.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

#include "src/slot_owners.h"

namespace tessera::algorithms {
namespace {

/// What the surgery does with one module.
enum class Verdict {
  Other,      ///< not a layer it factorizes (or disabled, or grouped, or factorized already)
  TooNarrow,  ///< below min_channels / min_features
  NoSaving,   ///< wide enough, but rank r would not reduce the multiply-adds
  Conv,       ///< factorize this Conv2d
  Linear,     ///< factorize this Linear
};

struct Decision {
  Verdict verdict = Verdict::Other;
  int64_t rank = 0;
};

Decision decide(const torch::nn::Module& module, const FactorizeOptions& options) {
  if (const auto* conv = module.as<torch::nn::Conv2dImpl>()) {
    const auto& o = conv->options;
    if (!options.factorize_convs() || o.groups() != 1) return {};
    const int64_t in = o.in_channels(), out = o.out_channels();
    if (std::min(in, out) < options.min_channels()) return {Verdict::TooNarrow, 0};
    const int64_t rank = factorize_latent(options.latent_channels(), in, out);
    const int64_t area = (*o.kernel_size())[0] * (*o.kernel_size())[1];
    if (!factorize_reduces_cost(in, out, area, rank)) return {Verdict::NoSaving, rank};
    return {Verdict::Conv, rank};
  }
  if (const auto* linear = module.as<torch::nn::LinearImpl>()) {
    if (!options.factorize_linears()) return {};
    const int64_t in = linear->options.in_features(), out = linear->options.out_features();
    if (std::min(in, out) < options.min_features()) return {Verdict::TooNarrow, 0};
    const int64_t rank = factorize_latent(options.latent_features(), in, out);
    if (!factorize_reduces_cost(in, out, 1, rank)) return {Verdict::NoSaving, rank};
    return {Verdict::Linear, rank};
  }
  return {};
}

/// replace_slots with `decide`; `build` makes the replacements (else it only counts). `no_saving` (when given)
/// counts the layers that were wide enough but whose rank would not save multiply-adds.
FactorizeCounts factorize_slots(torch::nn::Module& model, const FactorizeOptions& options,
                                optim::Optimizer* optimizer, bool build, int64_t* no_saving = nullptr) {
  // The factors of a factorized layer are not factorized again.
  const std::set<const torch::nn::Module*> done = detail::slots_of<FactorizedConv2dImpl, FactorizedLinearImpl>(model);
  FactorizeCounts counts;
  replace_slots(model, optimizer, [&](const std::string&, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
    const auto module = current.ptr();
    if (done.count(module.get())) return std::nullopt;
    const Decision d = decide(*module, options);
    if (d.verdict == Verdict::NoSaving && no_saving != nullptr) ++*no_saving;
    if (d.verdict == Verdict::Conv) {
      ++counts.convs;
      if (build) return torch::nn::AnyModule(FactorizedConv2d(*module->as<torch::nn::Conv2dImpl>(), d.rank));
    } else if (d.verdict == Verdict::Linear) {
      ++counts.linears;
      if (build) return torch::nn::AnyModule(FactorizedLinear(*module->as<torch::nn::LinearImpl>(), d.rank));
    }
    return std::nullopt;
  });
  return counts;
}

/// Puts the factors of `weight` ([out, ...], viewed as [out, fan_in]) into the weights of the two new layers.
void initialise_factors(const at::Tensor& weight, int64_t rank, torch::nn::Module& first, torch::nn::Module& second,
                        const at::Tensor& bias) {
  // The new layers on the original's device and dtype (surgery at Init runs before the model moves, but a
  // functional call may come later).
  first.to(weight.device(), weight.scalar_type());
  second.to(weight.device(), weight.scalar_type());
  const auto [a, b] = factorize_matrix(weight.detach().reshape({weight.size(0), -1}), rank);
  torch::NoGradGuard no_grad;
  at::Tensor w0 = first.named_parameters(/*recurse=*/false)["weight"];
  at::Tensor w1 = second.named_parameters(/*recurse=*/false)["weight"];
  w0.copy_(a.view(w0.sizes()));
  w1.copy_(b.view(w1.sizes()));
  if (bias.defined()) second.named_parameters(/*recurse=*/false)["bias"].copy_(bias.detach());
}

}  // namespace

int64_t factorize_latent(double latent, int64_t in, int64_t out) {
  if (!(latent > 0)) throw InputError(fmt::format("factorize: the latent size must be positive, got {}", latent));
  if (in < 1 || out < 1) {
    throw InputError(fmt::format("factorize: a layer needs at least one input and output, got {} and {}", in, out));
  }
  if (latent >= 1) return static_cast<int64_t>(latent);
  return std::max<int64_t>(1, static_cast<int64_t>(latent * static_cast<double>(std::min(in, out))));
}

bool factorize_reduces_cost(int64_t in, int64_t out, int64_t kernel_area, int64_t rank) {
  if (in < 1 || out < 1 || kernel_area < 1 || rank < 1) {
    throw InputError(fmt::format("factorize_reduces_cost: in, out, kernel_area and rank must be at least 1, got {}, "
                                 "{}, {} and {}", in, out, kernel_area, rank));
  }
  const int64_t fan_in = in * kernel_area;
  return rank * (fan_in + out) < fan_in * out;
}

std::pair<at::Tensor, at::Tensor> factorize_matrix(const at::Tensor& weight, int64_t rank) {
  if (!weight.defined() || weight.dim() != 2 || !weight.is_floating_point()) {
    throw InputError(fmt::format("factorize_matrix: expected a floating-point matrix [out, in], got {}",
                                 weight.defined() ? fmt::format("a {}-D {} tensor", weight.dim(),
                                                                std::string(c10::toString(weight.scalar_type())))
                                                  : std::string("an undefined tensor")));
  }
  const int64_t most = std::min(weight.size(0), weight.size(1));
  if (rank < 1 || rank > most) {
    throw InputError(fmt::format("factorize_matrix: rank {} is out of range for a [{}, {}] matrix; expected 1 to {}",
                                 rank, weight.size(0), weight.size(1), most));
  }
  at::Tensor u, s, vh;
  std::tie(u, s, vh) = at::linalg_svd(weight.detach().to(at::kDouble), /*full_matrices=*/false);
  const at::Tensor root = s.narrow(0, 0, rank).sqrt();
  const at::Tensor first = root.unsqueeze(1) * vh.narrow(0, 0, rank);   // S_r^½ V_rᵀ  [rank, in]
  const at::Tensor second = u.narrow(1, 0, rank) * root.unsqueeze(0);   // U_r S_r^½   [out, rank]
  return {first.to(weight.options()).contiguous(), second.to(weight.options()).contiguous()};
}

FactorizedConv2dImpl::FactorizedConv2dImpl(const torch::nn::Conv2dImpl& conv, int64_t rank) : rank_(rank) {
  const auto& o = conv.options;
  if (o.groups() != 1) {
    throw InputError(fmt::format("FactorizedConv2d: the conv has groups = {}; only convolutions with groups = 1 "
                                 "can be factorized", o.groups()));
  }
  const int64_t fan_in = o.in_channels() * (*o.kernel_size())[0] * (*o.kernel_size())[1];
  if (rank < 1 || rank > std::min(fan_in, o.out_channels())) {
    throw InputError(fmt::format("FactorizedConv2d: rank {} is out of range for a conv of {} output channels and fan-in "
                                 "{}; expected 1 to {}", rank, o.out_channels(), fan_in,
                                 std::min(fan_in, o.out_channels())));
  }
  // The k x k factor keeps the kernel, stride, padding, dilation and padding mode.
  torch::nn::Conv2d first(torch::nn::Conv2dOptions(o.in_channels(), rank, o.kernel_size())
                              .stride(o.stride())
                              .padding(o.padding())
                              .dilation(o.dilation())
                              .padding_mode(o.padding_mode())
                              .bias(false));
  torch::nn::Conv2d second(torch::nn::Conv2dOptions(rank, o.out_channels(), 1).bias(o.bias()));
  initialise_factors(conv.weight, rank, *first, *second, o.bias() ? conv.bias : at::Tensor());
  register_slot("module0", torch::nn::AnyModule(first));
  register_slot("module1", torch::nn::AnyModule(second));
}

at::Tensor FactorizedConv2dImpl::forward(const at::Tensor& x) {
  return call("module1", call("module0", x));
}

FactorizedLinearImpl::FactorizedLinearImpl(const torch::nn::LinearImpl& linear, int64_t rank) : rank_(rank) {
  const auto& o = linear.options;
  if (rank < 1 || rank > std::min(o.in_features(), o.out_features())) {
    throw InputError(fmt::format("FactorizedLinear: rank {} is out of range for a [{} -> {}] linear layer; expected 1 "
                                 "to {}", rank, o.in_features(), o.out_features(),
                                 std::min(o.in_features(), o.out_features())));
  }
  torch::nn::Linear first(torch::nn::LinearOptions(o.in_features(), rank).bias(false));
  torch::nn::Linear second(torch::nn::LinearOptions(rank, o.out_features()).bias(o.bias()));
  initialise_factors(linear.weight, rank, *first, *second, o.bias() ? linear.bias : at::Tensor());
  register_slot("module0", torch::nn::AnyModule(first));
  register_slot("module1", torch::nn::AnyModule(second));
}

at::Tensor FactorizedLinearImpl::forward(const at::Tensor& x) {
  return call("module1", call("module0", x));
}

FactorizeCounts apply_factorize(torch::nn::Module& model, const FactorizeOptions& options, optim::Optimizer* optimizer) {
  FactorizeOptions checked = options;
  validate_options(checked, "factorize");
  return factorize_slots(model, options, optimizer, /*build=*/true);
}

FactorizeCounts count_factorize(torch::nn::Module& model, const FactorizeOptions& options) {
  return factorize_slots(model, options, nullptr, /*build=*/false);
}

Factorize::Factorize(FactorizeOptions options) : options_(std::move(options)) {
  validate_options(options_, "factorize");
  if (!options_.factorize_convs() && !options_.factorize_linears()) {
    throw InputError("factorize: factorize_convs and factorize_linears are both false, so it would do nothing; "
                     "expected at least one of them true");
  }
  spec_.name = "factorize";
  spec_.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure, Resource::OptimizerGroups}}};
  // The order against the other writers of the model structure at init. squeeze_excite's own rule ("before the
  // writers of the model structure") puts it first: factorize then factorizes the conv it keeps in a slot.
  // channels_last orders itself after every surgery; ghost_batchnorm touches batch norms only (independent). A
  // generic rule ("before the writers of the model structure") would form a cycle with squeeze_excite's, so the
  // two writers that must come later are named.
  spec_.order.push_back({OrderRule::Relation::Before, Selector::named("blurpool"), Event::Init,
                         "blurpool then wraps the strided k x k factor (module0) alone, so without blur_first the "
                         "blur downsamples the r latent channels and the 1x1 factor runs at the lower resolution; "
                         "in the other order factorize would split the conv inside BlurConv2d (stride 1 unless "
                         "blur_first) and both factors would run at full resolution"});
  spec_.order.push_back({OrderRule::Relation::Before, Selector::named("weight_standardization"), Event::Init,
                         "the SVD must see the conv's own weight (a standardized conv is no longer a Conv2d); weight "
                         "standardization then standardizes both factors"});
  spec_.required_on_load = true;
}

void Factorize::check(const State& state) const {
  const auto external = state.model->external_surgery(*this, nullptr, /*dry_run=*/true);
  int64_t no_saving = 0;
  FactorizeCounts counts;
  if (external) {
    counts.convs = external->count("convs") ? external->at("convs") : 0;
    counts.linears = external->count("linears") ? external->at("linears") : 0;
    no_saving = external->count("no_saving") ? external->at("no_saving") : 0;
  } else {
    counts = factorize_slots(*state.model, options_, nullptr, /*build=*/false, &no_saving);
  }
  if (counts.convs + counts.linears > 0) return;
  std::string wanted;
  if (options_.factorize_convs()) {
    wanted = fmt::format("Conv2d with at least {} input and output channels (min_channels)", options_.min_channels());
  }
  if (options_.factorize_linears()) {
    wanted += fmt::format("{}Linear with at least {} input and output features (min_features)",
                          wanted.empty() ? "" : " and no ", options_.min_features());
  }
  const std::string saving =
      no_saving > 0 ? fmt::format("; {} layer(s) are wide enough, but their rank (latent_channels {}, latent_features "
                                  "{}) would not reduce their multiply-adds (r·(in·k·k + out) < in·out·k·k)",
                                  no_saving, options_.latent_channels(), options_.latent_features())
                    : std::string();
  throw InputError(fmt::format(
      "the model has no {}{} that factorizing would make cheaper{}, so it would have no effect; lower min_channels "
      "or min_features (in a recipe, factorize: {{min_channels: 16, latent_channels: 0.25}}) or remove it",
      wanted, external ? "" : " in a slot", saving));
}

void Factorize::apply(Event, State& state, Logger& logger) {
  if (auto external = state.model->external_surgery(*this, state.optimizer.get(), /*dry_run=*/false)) {
    counts_ = FactorizeCounts{(*external)["convs"], (*external)["linears"]};
  } else {
    counts_ = apply_factorize(*state.model, options_, state.optimizer.get());
  }
  logger.info(fmt::format("factorize: factorized {} convolutions and {} linear layers", counts_.convs,
                          counts_.linears));
}

}  // namespace tessera::algorithms
