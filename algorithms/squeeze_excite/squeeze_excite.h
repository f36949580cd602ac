#pragma once
/// Squeeze-and-Excitation (Hu et al. 2018; reference §2.2): channel attention after convolutions, by model surgery.
///
/// Every Conv2d in a model slot with min(in_channels, out_channels) >= min_channels becomes the conv followed by an
/// SE block
///     SE(y) = y ⊙ σ(W₂ · ReLU(W₁ · GAP(y)))
/// with GAP the global average over the spatial dimensions, W₁: C → d and W₂: d → C bias-free linear maps (the same
/// as 1x1 convolutions on the pooled [N, C, 1, 1]), d = latent_channels when it is at least 1, else
/// max(1, int(latent_channels · C)). The conv stays in a slot ("conv") of the new module, so that a later surgery
/// (blurpool) can still replace it; the new parameters join the optimizer's first group. Runs once at Init;
/// required on checkpoint load.
///
///     trainer components: algorithms.push_back(std::make_shared<tessera::algorithms::SqueezeExcite>());
///     functional:         tessera::algorithms::apply_squeeze_excite(model, SqueezeExciteOptions(), &optimizer);
///                         at::Tensor y = tessera::algorithms::squeeze_excite(x, w1, w2);
#include <cstdint>
#include <ostream>
#include <string>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <tessera/algorithm.h>
#include <tessera/models/model.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct SqueezeExciteOptions {
  /// Channels d of the bottleneck: a count when >= 1, else a fraction of the conv's output channels.
  TESSERA_OPTION(double, latent_channels) = 64;
  /// Convolutions with fewer input or output channels are left alone.
  TESSERA_OPTION(int64_t, min_channels) = 128;
  template <class V>
  void visit(V& v) {
    v("latent_channels", latent_channels_,
      "bottleneck channels of the SE block (>= 1: a count; below 1: a fraction of the conv's output channels)",
      Range::positive());
    v("min_channels", min_channels_, "minimum input and output channels of a convolution that gets an SE block",
      Range::at_least(1));
  }
};

/// The bottleneck width d for a conv with `channels` output channels: latent_channels when it is at least 1
/// (truncated), else max(1, int(latent_channels · channels)).
int64_t squeeze_excite_latent(double latent_channels, int64_t channels);

/// Functional form of the SE block: x ⊙ σ(w2 · ReLU(w1 · mean_{H,W}(x))) for x [N, C, H, W], w1 [d, C], w2 [C, d].
at::Tensor squeeze_excite(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2);

/// The SE block on its own: two bias-free linear maps "fc1" (C → d) and "fc2" (d → C).
class SqueezeExcite2dImpl : public torch::nn::Module {
 public:
  SqueezeExcite2dImpl(int64_t channels, int64_t latent);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(SqueezeExcite2d);

/// A conv followed by an SE block: slot "conv" (the original conv, its parameters kept) and child "se".
class SqueezeExciteConv2dImpl : public SlottedModule {
 public:
  SqueezeExciteConv2dImpl(torch::nn::Conv2d conv, int64_t latent);
  at::Tensor forward(const at::Tensor& x);
  SqueezeExcite2d se{nullptr};
};
TORCH_MODULE(SqueezeExciteConv2d);

/// Functional form: adds an SE block after every eligible Conv2d in the slots of any module tree (see models/model.h
/// on slots); when given, the new parameters join `optimizer`'s first group. Returns how many convs got one.
int64_t apply_squeeze_excite(torch::nn::Module& model, const SqueezeExciteOptions& options,
                             optim::Optimizer* optimizer = nullptr);

/// How many convolutions apply_squeeze_excite would extend in the slots of `model`, without changing it.
int64_t count_squeeze_excite(torch::nn::Module& model, const SqueezeExciteOptions& options);

/// The algorithm (recipe name "squeeze_excite"): apply_squeeze_excite at Init, before the other surgeries (so that
/// blurpool still blurs the strided convs it wraps). A model with no eligible conv in a slot is refused at plan time.
class SqueezeExcite : public Algorithm {
 public:
  explicit SqueezeExcite(SqueezeExciteOptions options = SqueezeExciteOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  void check(const State& state) const override;
  const SqueezeExciteOptions& options() const noexcept { return options_; }
  /// How many convolutions the last application extended.
  int64_t replaced() const noexcept { return replaced_; }

 private:
  SqueezeExciteOptions options_;
  AlgorithmSpec spec_;
  int64_t replaced_ = 0;
};

}  // namespace tessera::algorithms
