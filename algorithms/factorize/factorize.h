#pragma once
/// Factorize (Composer's Factorize; Zhang et al. 2015, "Accelerating very deep convolutional networks for
/// classification and detection"): a wide Conv2d or Linear becomes two smaller layers through a rank-r bottleneck,
/// by model surgery at Init.
///
///     Conv2d(in → out, k×k, stride s, padding p, dilation d, bias b)
///       → Conv2d(in → r, k×k, s, p, d, no bias)  then  Conv2d(r → out, 1×1, bias b)
///     Linear(in → out, bias b)  →  Linear(in → r, no bias)  then  Linear(r → out, bias b)
///
/// The two layers start from the truncated SVD of the original weight W, reshaped to [out, in·k·k] = U S Vᵀ:
/// first factor S_r^½ V_rᵀ [r, in·k·k], second U_r S_r^½ [out, r] (the singular values split evenly, so both factors
/// have the same scale), whose product U_r S_r V_rᵀ is the best rank-r approximation of W in the Frobenius norm
/// (Eckart–Young): the factorized layer computes approximately what the original did, exactly when r is W's rank,
/// and the error ‖W − U_r S_r V_rᵀ‖_F is the root-sum-square of the discarded singular values. Data-free (no
/// activations are looked at), unlike Composer, which fits the factors to sampled activations when given them.
///
/// A layer is factorized only when it is wide enough, min(in, out) >= min_channels (min_features for a Linear),
/// and the factorization reduces its multiply-adds per output position: r·(in·k·k + out) < in·out·k·k (k = 1 for a
/// Linear). Grouped convolutions are left alone. r = latent_channels when it is at least 1, else
/// max(1, int(latent_channels · min(in, out))) (latent_features alike). Both new layers sit in slots ("module0",
/// "module1") of the new module, so later surgery (blurpool on a strided module0, weight standardization) reaches
/// them; a layer already factorized is not factorized again. Runs once at Init; required on checkpoint load.
///
///     trainer components: algorithms.push_back(std::make_shared<tessera::algorithms::Factorize>());
///     functional:         tessera::algorithms::apply_factorize(model, FactorizeOptions(), &optimizer);
///                         auto [first, second] = tessera::algorithms::factorize_matrix(weight, rank);
#include <cstdint>
#include <utility>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <tessera/algorithm.h>
#include <tessera/models/model.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct FactorizeOptions {
  /// Factorize Conv2d layers.
  TESSERA_OPTION(bool, factorize_convs) = true;
  /// Factorize Linear layers.
  TESSERA_OPTION(bool, factorize_linears) = true;
  /// Convolutions with fewer input or output channels are left alone.
  TESSERA_OPTION(int64_t, min_channels) = 256;
  /// Rank of a factorized convolution: a count when >= 1, else a fraction of min(in_channels, out_channels).
  TESSERA_OPTION(double, latent_channels) = 0.25;
  /// Linear layers with fewer input or output features are left alone.
  TESSERA_OPTION(int64_t, min_features) = 256;
  /// Rank of a factorized linear layer: a count when >= 1, else a fraction of min(in_features, out_features).
  TESSERA_OPTION(double, latent_features) = 128;
  template <class V>
  void visit(V& v) {
    v("factorize_convs", factorize_convs_, "factorize Conv2d layers", Any{});
    v("factorize_linears", factorize_linears_, "factorize Linear layers", Any{});
    v("min_channels", min_channels_, "minimum input and output channels of a convolution to factorize",
      Range::at_least(1));
    v("latent_channels", latent_channels_,
      "rank of a factorized convolution (>= 1: a count; below 1: a fraction of min(in, out) channels)",
      Range::positive());
    v("min_features", min_features_, "minimum input and output features of a linear layer to factorize",
      Range::at_least(1));
    v("latent_features", latent_features_,
      "rank of a factorized linear layer (>= 1: a count; below 1: a fraction of min(in, out) features)",
      Range::positive());
  }
};

/// The rank r for a layer with `in` inputs and `out` outputs: `latent` (truncated) when it is at least 1, else
/// max(1, int(latent · min(in, out))).
int64_t factorize_latent(double latent, int64_t in, int64_t out);

/// Whether a rank-`rank` factorization reduces the multiply-adds per output position of a layer with `in` inputs,
/// `out` outputs and a kernel of `kernel_area` taps (1 for a Linear): rank·(in·kernel_area + out) < in·out·kernel_area.
bool factorize_reduces_cost(int64_t in, int64_t out, int64_t kernel_area, int64_t rank);

/// The truncated SVD of a matrix W [out, in] (W = U S Vᵀ) as two factors: first = S_r^½ V_rᵀ [rank, in] and
/// second = U_r S_r^½ [out, rank], so that second·first is the best rank-`rank` approximation of W (W itself when
/// rank >= W's rank). Computed in float64 and returned in W's dtype and on its device. 1 <= rank <= min(out, in).
std::pair<at::Tensor, at::Tensor> factorize_matrix(const at::Tensor& weight, int64_t rank);

/// A factorized convolution: slots "module0" (the k×k conv to r channels, no bias) and "module1" (1×1, r → out, the
/// original bias if any).
class FactorizedConv2dImpl : public SlottedModule {
 public:
  /// Factorizes `conv` (groups 1) to rank `rank`, initialised from the truncated SVD of its weight.
  FactorizedConv2dImpl(const torch::nn::Conv2dImpl& conv, int64_t rank);
  at::Tensor forward(const at::Tensor& x);
  int64_t rank() const noexcept { return rank_; }

 private:
  int64_t rank_;
};
TORCH_MODULE(FactorizedConv2d);

/// A factorized linear layer: slots "module0" (in → r, no bias) and "module1" (r → out, the original bias if any).
class FactorizedLinearImpl : public SlottedModule {
 public:
  FactorizedLinearImpl(const torch::nn::LinearImpl& linear, int64_t rank);
  at::Tensor forward(const at::Tensor& x);
  int64_t rank() const noexcept { return rank_; }

 private:
  int64_t rank_;
};
TORCH_MODULE(FactorizedLinear);

/// What a factorize surgery replaced (or would replace).
struct FactorizeCounts {
  int64_t convs = 0;
  int64_t linears = 0;
};

/// Functional form: factorizes every eligible Conv2d and Linear in the slots of any module tree (see models/model.h
/// on slots); when given, `optimizer` follows (the replaced layers' parameters leave it, the factors join its first
/// group).
FactorizeCounts apply_factorize(torch::nn::Module& model, const FactorizeOptions& options,
                                optim::Optimizer* optimizer = nullptr);

/// What apply_factorize would factorize in the slots of `model`, without changing it.
FactorizeCounts count_factorize(torch::nn::Module& model, const FactorizeOptions& options);

/// The algorithm (recipe name "factorize"): apply_factorize at Init. Order against the other writers of the model
/// structure at Init: after squeeze_excite (by squeeze_excite's own rule; it keeps the conv in a slot, so the conv
/// inside is factorized and the gate stays on the conv's output), before blurpool and weight_standardization (named
/// rules: blurpool keeps no slot for the conv it wraps; weight standardization must standardize the factors, not
/// hide the conv from the SVD), independent of ghost_batchnorm; channels_last comes after every surgery by its own
/// rule. A model with nothing to factorize is refused at plan time, naming min_channels and min_features.
class Factorize : public Algorithm {
 public:
  explicit Factorize(FactorizeOptions options = FactorizeOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  void check(const State& state) const override;
  const FactorizeOptions& options() const noexcept { return options_; }
  /// What the last application factorized.
  const FactorizeCounts& counts() const noexcept { return counts_; }

 private:
  FactorizeOptions options_;
  AlgorithmSpec spec_;
  FactorizeCounts counts_;
};

}  // namespace tessera::algorithms
