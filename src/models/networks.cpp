// The registry's image classifiers: MLP, CNN and a CIFAR-style ResNet.
#include <fmt/format.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <tessera/error.h>
#include <tessera/models/branch_gate.h>
#include <tessera/models/cnn.h>
#include <tessera/models/mlp.h>
#include <tessera/models/resnet.h>

#include "option_checks.h"

namespace tessera {
namespace {

namespace nn = torch::nn;

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

/// Kaiming-normal (fan_out, ReLU) for every convolution below `module`; BN and Linear keep torch's defaults
/// (BN weight 1, bias 0).
void init_convolutions(nn::Module& module) {
  for (const auto& child : module.modules(/*include_self=*/false)) {
    if (auto* c = child->as<nn::Conv2dImpl>()) {
      nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    }
  }
}

/// The normalisation of `channels` channels: BatchNorm2d, or GroupNorm with `groups` groups when positive.
nn::AnyModule norm(int64_t channels, int64_t groups) {
  if (groups > 0) return nn::AnyModule(nn::GroupNorm(nn::GroupNormOptions(groups, channels)));
  return nn::AnyModule(nn::BatchNorm2d(channels));
}

/// The forward of `owner`'s slot `name` on `x`. A torch::nn::GroupNorm given an input of another dtype than its weight (autocast's
/// bf16 or fp16 activations) computes in its weight's dtype: on CUDA autocast runs group_norm in fp32 anyway, and
/// LibTorch 1.13's CPU group_norm refuses a bf16 input with fp32 weights. Other layers (a BatchNorm2d, or a
/// low-precision GroupNorm put in by surgery) take `x` as it is.
at::Tensor normalize(SlottedModule& owner, const std::string& name, const at::Tensor& x) {
  if (const auto* gn = owner.slot(name).ptr()->as<nn::GroupNormImpl>()) {
    if (gn->weight.defined() && x.scalar_type() != gn->weight.scalar_type()) {
      return owner.call(name, x.to(gn->weight.scalar_type()));
    }
  }
  return owner.call(name, x);
}

/// Checks that `x` is [N, channels, H, W].
void check_image(const at::Tensor& x, int64_t channels, const char* model) {
  if (x.dim() != 4 || x.size(1) != channels) {
    std::string sizes;
    for (auto s : x.sizes()) sizes += (sizes.empty() ? "" : ", ") + std::to_string(s);
    throw InputError(
        fmt::format("{}: input of shape [{}]; expected images [N, {}, H, W]", model, sizes, channels));
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------ MLP

MLP::MLP(MLPOptions options) : options_(std::move(options)) {
  validate_options(options_, "model");
  require_positive(options_.in_features(), "in_features");
  require_positive(options_.num_classes(), "num_classes");
  int64_t in = options_.in_features();
  for (size_t i = 0; i < options_.hidden().size(); ++i) {
    const int64_t out = options_.hidden()[i];
    layers_.push_back("fc" + std::to_string(i + 1));
    register_slot(layers_.back(), nn::AnyModule(nn::Linear(in, out)));
    // A module in a slot (not a functional call), so that surgery can replace it (gyro_dropout).
    if (options_.dropout() > 0) {
      register_slot("dropout" + std::to_string(i + 1), nn::AnyModule(nn::Dropout(options_.dropout())));
    }
    in = out;
  }
  register_slot("head", nn::AnyModule(nn::Linear(in, options_.num_classes())));
}

at::Tensor MLP::forward(const Batch& batch) {
  const at::Tensor& input = batch.input();
  if (input.dim() < 2 || input.numel() / std::max<int64_t>(input.size(0), 1) != options_.in_features()) {
    throw InputError(fmt::format("mlp: input has {} features per example; expected in_features = {}",
                                 input.dim() < 2 ? 1 : input.numel() / std::max<int64_t>(input.size(0), 1),
                                 options_.in_features()));
  }
  at::Tensor x = input.flatten(1);
  for (size_t i = 0; i < layers_.size(); ++i) {
    x = call(layers_[i], x).relu_();
    if (options_.dropout() > 0) x = call("dropout" + std::to_string(i + 1), x);
  }
  return call("head", x);
}

at::Tensor MLP::loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction) {
  return cross_entropy(outputs, batch.target(), reduction);
}

// ------------------------------------------------------------------------------------------------ CNN

CNN::CNN(CNNOptions options) : options_(std::move(options)) {
  validate_options(options_, "model");
  require_positive(options_.in_channels(), "in_channels");
  require_positive(options_.num_classes(), "num_classes");
  const int64_t w = options_.width();
  register_slot("conv1", nn::AnyModule(conv(options_.in_channels(), w, 3, 1)));
  register_slot("bn1", nn::AnyModule(nn::BatchNorm2d(w)));
  register_slot("conv2", nn::AnyModule(conv(w, 2 * w, 3, 2)));
  register_slot("bn2", nn::AnyModule(nn::BatchNorm2d(2 * w)));
  register_slot("pool", nn::AnyModule(nn::MaxPool2d(nn::MaxPool2dOptions(2))));
  register_slot("conv3", nn::AnyModule(conv(2 * w, 4 * w, 3, 1)));
  register_slot("bn3", nn::AnyModule(nn::BatchNorm2d(4 * w)));
  register_slot("fc", nn::AnyModule(nn::Linear(4 * w, options_.num_classes())));
  init_convolutions(*this);
}

at::Tensor CNN::forward(const Batch& batch) {
  const at::Tensor& input = batch.input();
  check_image(input, options_.in_channels(), "cnn");
  at::Tensor x = call("bn1", call("conv1", input)).relu_();
  x = call("bn2", call("conv2", x)).relu_();
  x = call("pool", x);
  x = call("bn3", call("conv3", x)).relu_();
  return call("fc", x.mean({2, 3}));
}

at::Tensor CNN::loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction) {
  return cross_entropy(outputs, batch.target(), reduction);
}

// ------------------------------------------------------------------------------------------------ ResNet

BasicBlock::BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, int64_t group_norm_groups)
    : projection_(stride != 1 || in_channels != out_channels) {
  register_slot("conv1", nn::AnyModule(conv(in_channels, out_channels, 3, stride)));
  register_slot("bn1", norm(out_channels, group_norm_groups));
  register_slot("conv2", nn::AnyModule(conv(out_channels, out_channels, 3, 1)));
  register_slot("bn2", norm(out_channels, group_norm_groups));
  register_slot("residual_gate", nn::AnyModule(nn::Identity()));
  if (projection_) {
    register_slot("shortcut_conv", nn::AnyModule(conv(in_channels, out_channels, 1, stride)));
    register_slot("shortcut_bn", norm(out_channels, group_norm_groups));
  }
}

at::Tensor BasicBlock::forward(const at::Tensor& x) {
  auto* gate = dynamic_cast<BranchGate*>(slot("residual_gate").ptr().get());
  if (gate != nullptr && gate->skip_branch()) {
    // The branch adds exactly nothing (as multiplied by 0): only the shortcut is computed.
    return (projection_ ? normalize(*this, "shortcut_bn", call("shortcut_conv", x)) : x).relu();
  }
  at::Tensor out = normalize(*this, "bn1", call("conv1", x)).relu_();
  out = call("residual_gate", normalize(*this, "bn2", call("conv2", out)));
  if (projection_) {
    out.add_(normalize(*this, "shortcut_bn", call("shortcut_conv", x)));
  } else {
    out.add_(x);
  }
  return out.relu_();
}

ResNet::ResNet(ResNetOptions options) : options_(std::move(options)) {
  validate_options(options_, "model");
  if ((options_.depth() - 2) % 6 != 0) {
    throw InputError(
        fmt::format("model.depth: {} is not of the form 6n+2; expected e.g. 8, 14, 20, 32, 44, 56 or 110",
                    options_.depth()));
  }
  require_positive(options_.in_channels(), "in_channels");
  require_positive(options_.num_classes(), "num_classes");
  const int64_t n = (options_.depth() - 2) / 6;
  const int64_t w = options_.width();
  const bool group = options_.norm() == "group";
  if (group && w % options_.groups() != 0) {
    throw InputError(fmt::format("model.groups: {} does not divide the width {}; expected a divisor of it (norm: group "
                                 "splits the w, 2w and 4w channels of each stage into that many groups)",
                                 options_.groups(), w));
  }
  const int64_t groups = group ? options_.groups() : 0;
  register_slot("conv1", nn::AnyModule(conv(options_.in_channels(), w, 3, 1)));
  register_slot("bn1", norm(w, groups));
  int64_t in = w;
  for (int64_t stage = 0; stage < 3; ++stage) {
    const int64_t out = w << stage;
    nn::ModuleList layer;
    for (int64_t i = 0; i < n; ++i) {
      auto block = std::make_shared<BasicBlock>(in, out, (stage > 0 && i == 0) ? 2 : 1, groups);
      layer->push_back(block);
      blocks_.push_back(std::move(block));
      in = out;
    }
    register_module("layer" + std::to_string(stage + 1), layer);
  }
  if (options_.dropout() > 0) register_slot("dropout", nn::AnyModule(nn::Dropout(options_.dropout())));
  register_slot("fc", nn::AnyModule(nn::Linear(in, options_.num_classes())));
  init_convolutions(*this);
}

at::Tensor ResNet::forward(const Batch& batch) {
  const at::Tensor& input = batch.input();
  check_image(input, options_.in_channels(), "resnet");
  at::Tensor x = normalize(*this, "bn1", call("conv1", input)).relu_();
  for (const auto& block : blocks_) x = block->forward(x);
  x = x.mean({2, 3});
  if (options_.dropout() > 0) x = call("dropout", x);
  return call("fc", x);
}

at::Tensor ResNet::loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction) {
  return cross_entropy(outputs, batch.target(), reduction);
}

}  // namespace tessera
