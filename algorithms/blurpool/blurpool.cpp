#include "blurpool.h"

#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

#include "blurpool_ops.h"
#include "src/slot_owners.h"

namespace tessera::algorithms {
namespace {

std::array<int64_t, 2> pair_of(const torch::ExpandingArray<2>& a) { return {(*a)[0], (*a)[1]}; }

enum class BlurKind { None, Conv, MaxPool };

/// What apply_blurpool does with `module` when it sits in a slot.
BlurKind blur_kind(const torch::nn::Module& module, const BlurPoolOptions& options) {
  if (options.replace_convs()) {
    if (const auto* conv = module.as<torch::nn::Conv2dImpl>()) {
      const auto s = pair_of(conv->options.stride());
      if (std::max(s[0], s[1]) > 1 && conv->options.in_channels() >= options.min_channels()) return BlurKind::Conv;
    }
  }
  if (options.replace_maxpools() && module.as<torch::nn::MaxPool2dImpl>() != nullptr) return BlurKind::MaxPool;
  return BlurKind::None;
}

/// replace_slots with blur_kind deciding; `build` makes the replacements (else it only counts). The convs that a
/// BlurConv2d holds already (in its slot "conv", where weight standardization reaches them) are not wrapped again,
/// so applying blurpool twice changes nothing the second time.
BlurPoolCounts blurpool_slots(torch::nn::Module& model, const BlurPoolOptions& options, optim::Optimizer* optimizer,
                              bool build) {
  const std::set<const torch::nn::Module*> blurred = detail::slots_of<BlurConv2dImpl>(model);
  BlurPoolCounts counts;
  replace_slots(model, optimizer, [&](const std::string&, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
    const auto module = current.ptr();
    if (blurred.count(module.get())) return std::nullopt;
    switch (blur_kind(*module, options)) {
      case BlurKind::Conv:
        ++counts.convs;
        if (!build) return std::nullopt;
        return torch::nn::AnyModule(BlurConv2d(torch::nn::Conv2d(std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(module)),
                                               options.blur_first()));
      case BlurKind::MaxPool:
        ++counts.maxpools;
        if (!build) return std::nullopt;
        return torch::nn::AnyModule(BlurMaxPool2d(module->as<torch::nn::MaxPool2dImpl>()->options));
      case BlurKind::None: break;
    }
    return std::nullopt;
  });
  return counts;
}

/// "no strided Conv2d with >= 16 input channels and no MaxPool2d", for the kinds the options replace.
std::string eligible_kinds(const BlurPoolOptions& options) {
  std::string convs = fmt::format("strided Conv2d with >= {} input channels", options.min_channels());
  if (!options.replace_maxpools()) return convs;
  if (!options.replace_convs()) return "MaxPool2d";
  return convs + " or MaxPool2d";
}

}  // namespace

at::Tensor blur_filter(int64_t channels, const at::TensorOptions& options) {
  const at::Tensor row = at::tensor({1.0, 2.0, 1.0}, options.dtype(at::kDouble));
  const at::Tensor k = (row.unsqueeze(1) * row.unsqueeze(0)) / 16.0;  // outer product, sums to 1
  return k.to(options.dtype()).view({1, 1, 3, 3}).expand({channels, 1, 3, 3}).contiguous();
}

at::Tensor blur2d(const at::Tensor& x, std::array<int64_t, 2> stride) {
  TORCH_CHECK(x.dim() == 4, "blur2d: expected an input [N, C, H, W], got ", x.sizes());
  if (x.size(2) < 3 || x.size(3) < 3) return x;
  // The op tessera::blur2d (blurpool_ops.cpp): the fused kernel where the library has one for x's device, else
  // reference_blur2d (the depthwise conv).
  return fused_blur2d(x, stride);
}

BlurConv2dImpl::BlurConv2dImpl(torch::nn::Conv2d original, bool blur_first_)
    : conv(std::move(original)), blur_first(blur_first_), stride(pair_of(conv->options.stride())) {
  if (!blur_first) conv->options.stride(1);  // the conv now runs at full resolution; the blur downsamples
  register_slot("conv", torch::nn::AnyModule(conv));
}

at::Tensor BlurConv2dImpl::forward(const at::Tensor& x) {
  if (blur_first) return call("conv", blur2d(x, 1));
  return blur2d(call("conv", x), stride);
}

BlurMaxPool2dImpl::BlurMaxPool2dImpl(const torch::nn::MaxPool2dOptions& original) : stride(pair_of(original.stride())) {
  torch::nn::MaxPool2dOptions opts = original;
  opts.stride(1);
  pool = register_module("pool", torch::nn::MaxPool2d(opts));
}

at::Tensor blur_maxpool2d(const at::Tensor& x, const torch::nn::MaxPool2dOptions& pool, std::array<int64_t, 2> stride) {
  return blur_maxpool2d_forward(x, pool, stride);
}

at::Tensor BlurMaxPool2dImpl::forward(const at::Tensor& x) { return blur_maxpool2d(x, pool->options, stride); }

BlurPoolCounts apply_blurpool(torch::nn::Module& model, const BlurPoolOptions& options, optim::Optimizer* optimizer) {
  return blurpool_slots(model, options, optimizer, /*build=*/true);
}

BlurPoolCounts count_blurpool(torch::nn::Module& model, const BlurPoolOptions& options) {
  return blurpool_slots(model, options, nullptr, /*build=*/false);
}

std::vector<std::string> unslotted_blurpool_layers(const torch::nn::Module& model, const BlurPoolOptions& options) {
  std::set<const torch::nn::Module*> in_slots;
  auto note_slots = [&](const torch::nn::Module& m) {
    if (const auto* slotted = dynamic_cast<const SlottedModule*>(&m)) {
      for (const auto& [name, slot] : slotted->slots()) in_slots.insert(slot.ptr().get());
    }
  };
  note_slots(model);
  const auto modules = model.named_modules("", /*include_self=*/false);
  for (const auto& item : modules) note_slots(*item.value());
  std::vector<std::string> found;
  std::vector<std::string> blurred;  // the layers inside BlurConv2d/BlurMaxPool2d are done already
  for (const auto& item : modules) {
    const torch::nn::Module& m = *item.value();
    const std::string& name = item.key();
    if (m.as<BlurConv2dImpl>() != nullptr || m.as<BlurMaxPool2dImpl>() != nullptr) blurred.push_back(name + ".");
    bool done = false;
    for (const auto& prefix : blurred) done = done || name.rfind(prefix, 0) == 0;
    if (done || in_slots.count(&m)) continue;
    switch (blur_kind(m, options)) {
      case BlurKind::Conv: {
        const auto& o = m.as<torch::nn::Conv2dImpl>()->options;
        const auto st = pair_of(o.stride());
        found.push_back(fmt::format("{} (Conv2d, {} input channels, stride {})", name, o.in_channels(),
                                    st[0] == st[1] ? std::to_string(st[0]) : fmt::format("{}x{}", st[0], st[1])));
        break;
      }
      case BlurKind::MaxPool: found.push_back(name + " (MaxPool2d)"); break;
      case BlurKind::None: break;
    }
  }
  return found;
}

BlurPool::BlurPool(BlurPoolOptions options) : options_(std::move(options)) {
  validate_options(options_, "blurpool");
  if (!options_.replace_convs() && !options_.replace_maxpools()) {
    throw InputError("blurpool: replace_convs and replace_maxpools are both false, so it would do nothing; "
                     "expected at least one of them true");
  }
  spec_.name = "blurpool";
  spec_.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure, Resource::OptimizerGroups}}};
  spec_.required_on_load = true;
}

void BlurPool::check(const State& state) const {
  if (options_.allow_no_change()) return;
  BlurPoolCounts counts;
  auto external = state.model->external_surgery(*this, nullptr, /*dry_run=*/true);
  if (external) {
    counts = BlurPoolCounts{(*external)["convs"], (*external)["maxpools"]};
  } else {
    counts = count_blurpool(*state.model, options_);
  }
  if (counts.convs + counts.maxpools > 0) return;
  const std::string allow = "set allow_no_change to run it anyway (BlurPoolOptions().allow_no_change(true); in a "
                            "recipe, blurpool: {allow_no_change: true})";
  const std::vector<std::string> outside = unslotted_blurpool_layers(*state.model, options_);
  if (!outside.empty()) {
    std::string names;
    for (size_t i = 0; i < outside.size() && i < 5; ++i) names += (i ? ", " : "") + outside[i];
    if (outside.size() > 5) names += fmt::format(" and {} more", outside.size() - 5);
    throw InputError(fmt::format(
        "the model's layers are not in slots, so surgery cannot replace them: {} layer(s) it would replace are "
        "ordinary module members ({}). Model surgery swaps only layers that a tessera::SlottedModule registers "
        "with register_slot(\"conv1\", torch::nn::Conv2d(...)) and calls through call(\"conv1\", x) (see "
        "docs/cpp-own-model.md); make the network a SlottedModule and register those layers as slots, or {}",
        outside.size(), names, allow));
  }
  throw InputError(fmt::format("the model has no layer to replace (no {}{}), so it would have no effect; remove "
                               "it{}, or {}",
                               eligible_kinds(options_), external ? "" : ", in a slot or elsewhere",
                               options_.replace_convs() ? ", lower min_channels" : "", allow));
}

void BlurPool::apply(Event, State& state, Logger& logger) {
  if (auto external = state.model->external_surgery(*this, state.optimizer.get(), /*dry_run=*/false)) {
    counts_ = BlurPoolCounts{(*external)["convs"], (*external)["maxpools"]};
  } else {
    counts_ = apply_blurpool(*state.model, options_, state.optimizer.get());
  }
  if (counts_.convs + counts_.maxpools == 0) {
    logger.warn(fmt::format("blurpool: no layer was replaced (no {} in a model slot); it has no effect "
                            "(allow_no_change)",
                            eligible_kinds(options_)));
  } else {
    logger.info(fmt::format("blurpool: replaced {} strided convolutions and {} max-pools", counts_.convs,
                            counts_.maxpools));
  }
}

}  // namespace tessera::algorithms
