#pragma once
/// BlurPool: anti-aliased downsampling by model surgery (Zhang 2019; reference §2.1).
///
/// Strided convolutions become blur-then-conv (or conv-then-blur) and max-pools become
/// max(stride 1)-then-blur, the blur being the fixed depthwise filter (1/16)[1 2 1]ᵀ[1 2 1] with zero
/// padding 1. Runs once at Init; required on checkpoint load (it changes the module tree).
///
///     trainer components: algorithms.push_back(std::make_shared<tessera::algorithms::BlurPool>());
///     functional:         tessera::algorithms::apply_blurpool(model, BlurPoolOptions(), &optimizer);
///                         at::Tensor y = tessera::algorithms::blur2d(x, 2);
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>

#include <tessera/algorithm.h>
#include <tessera/models/model.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct BlurPoolOptions {
  /// Replace strided Conv2d layers (with at least `min_channels` input channels).
  TESSERA_OPTION(bool, replace_convs) = true;
  /// Replace every MaxPool2d.
  TESSERA_OPTION(bool, replace_maxpools) = true;
  /// Blur before the convolution (stride kept by the conv); otherwise conv at stride 1, then blur with the stride.
  TESSERA_OPTION(bool, blur_first) = true;
  /// Convolutions with fewer input channels are left alone.
  TESSERA_OPTION(int64_t, min_channels) = 16;
  /// Run even when the model has no layer to replace (else the plan refuses it: it would have no effect).
  TESSERA_OPTION(bool, allow_no_change) = false;
  template <class V>
  void visit(V& v) {
    v("replace_convs", replace_convs_, "replace strided convolutions", Any{});
    v("replace_maxpools", replace_maxpools_, "replace max-pools", Any{});
    v("blur_first", blur_first_, "blur before the strided convolution (else after it)", Any{});
    v("min_channels", min_channels_, "minimum input channels of a replaced convolution", Range::at_least(1));
    v("allow_no_change", allow_no_change_,
      "run even when no layer would be replaced (else refused at plan time as having no effect)", Any{});
  }
};

/// The [channels, 1, 3, 3] depthwise weight of the blur filter (1/16)[[1,2,1],[2,4,2],[1,2,1]].
at::Tensor blur_filter(int64_t channels, const at::TensorOptions& options);

/// Depthwise blur of x [N, C, H, W] with zero padding 1 and the given stride (rows, columns). An input
/// smaller than the 3x3 filter (H < 3 or W < 3) passes through unchanged.
at::Tensor blur2d(const at::Tensor& x, std::array<int64_t, 2> stride);
inline at::Tensor blur2d(const at::Tensor& x, int64_t stride = 1) { return blur2d(x, {stride, stride}); }

/// Functional form of BlurMaxPool2d: the max-pool `pool` at stride 1, then the blur with `stride` (the fused
/// kernel where it applies). The Python surgery's BlurMaxPool2d calls it.
at::Tensor blur_maxpool2d(const at::Tensor& x, const torch::nn::MaxPool2dOptions& pool, std::array<int64_t, 2> stride);

/// A strided convolution with anti-aliasing: blur (stride 1) then the original conv, or the conv at stride 1
/// then blur with the original stride. The conv keeps its parameters (the same tensors) and sits in slot "conv", so
/// that a later surgery (weight standardization) can still replace it; `conv` is the original conv.
class BlurConv2dImpl : public SlottedModule {
 public:
  BlurConv2dImpl(torch::nn::Conv2d conv, bool blur_first);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv;
  bool blur_first;
  std::array<int64_t, 2> stride;  ///< the original stride
};
TORCH_MODULE(BlurConv2d);

/// max-pool with stride 1 (same kernel, padding, dilation, ceil mode) then blur with the original stride.
class BlurMaxPool2dImpl : public torch::nn::Module {
 public:
  explicit BlurMaxPool2dImpl(const torch::nn::MaxPool2dOptions& original);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::MaxPool2d pool{nullptr};
  std::array<int64_t, 2> stride;
};
TORCH_MODULE(BlurMaxPool2d);

/// What a surgery replaced.
struct BlurPoolCounts {
  int64_t convs = 0;
  int64_t maxpools = 0;
};

/// Functional form: replaces the layers in the slots of any module tree (see models/model.h on slots) and,
/// when given, keeps `optimizer` consistent (parameters that left the model leave it).
BlurPoolCounts apply_blurpool(torch::nn::Module& model, const BlurPoolOptions& options,
                              optim::Optimizer* optimizer = nullptr);

/// What apply_blurpool would replace in the slots of `model`, without replacing anything.
BlurPoolCounts count_blurpool(torch::nn::Module& model, const BlurPoolOptions& options);

/// The layers apply_blurpool would replace if they were in slots but are not (plain LibTorch members, called
/// through their holders): "net.conv2 (Conv2d, 16 input channels, stride 2)", in module-tree order.
std::vector<std::string> unslotted_blurpool_layers(const torch::nn::Module& model, const BlurPoolOptions& options);

/// The algorithm (recipe name "blurpool"): apply_blurpool at Init. A model in which it would replace nothing is
/// refused at plan time (check), saying whether eligible layers exist outside slots, unless allow_no_change.
class BlurPool : public Algorithm {
 public:
  explicit BlurPool(BlurPoolOptions options = BlurPoolOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  void check(const State& state) const override;
  const BlurPoolOptions& options() const noexcept { return options_; }
  /// What the last application replaced.
  const BlurPoolCounts& counts() const noexcept { return counts_; }

 private:
  BlurPoolOptions options_;
  AlgorithmSpec spec_;
  BlurPoolCounts counts_;
};

}  // namespace tessera::algorithms
