#include "blurpool.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/callback.h>
#include <tessera/surgery.h>

#include "blurpool_ops.h"

namespace tessera::algorithms {
namespace {

std::array<int64_t, 2> pair_of(const torch::ExpandingArray<2>& a) { return {(*a)[0], (*a)[1]}; }

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
  register_module("conv", conv);
}

at::Tensor BlurConv2dImpl::forward(const at::Tensor& x) {
  if (blur_first) return conv->forward(blur2d(x, 1));
  return blur2d(conv->forward(x), stride);
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
  BlurPoolCounts counts;
  replace_slots(model, optimizer, [&](const std::string&, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
    const auto module = current.ptr();
    if (options.replace_convs()) {
      if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(module)) {
        const auto s = pair_of(conv->options.stride());
        if (std::max(s[0], s[1]) > 1 && conv->options.in_channels() >= options.min_channels()) {
          ++counts.convs;
          return torch::nn::AnyModule(BlurConv2d(torch::nn::Conv2d(conv), options.blur_first()));
        }
      }
    }
    if (options.replace_maxpools()) {
      if (auto pool = std::dynamic_pointer_cast<torch::nn::MaxPool2dImpl>(module)) {
        ++counts.maxpools;
        return torch::nn::AnyModule(BlurMaxPool2d(pool->options));
      }
    }
    return std::nullopt;
  });
  return counts;
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

void BlurPool::apply(Event, State& state, Logger& logger) {
  if (auto external = state.model->external_surgery(*this, state.optimizer.get(), /*dry_run=*/false)) {
    counts_ = BlurPoolCounts{(*external)["convs"], (*external)["maxpools"]};
  } else {
    counts_ = apply_blurpool(*state.model, options_, state.optimizer.get());
  }
  if (counts_.convs + counts_.maxpools == 0) {
    logger.warn(fmt::format("blurpool: no layer was replaced (no strided Conv2d with >= {} input channels and no "
                            "MaxPool2d in a model slot); it has no effect",
                            options_.min_channels()));
  } else {
    logger.info(fmt::format("blurpool: replaced {} strided convolutions and {} max-pools", counts_.convs,
                            counts_.maxpools));
  }
}

}  // namespace tessera::algorithms
