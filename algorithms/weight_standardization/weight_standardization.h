#pragma once
/// Weight standardization (Qiao et al. 2019; Composer's WeightStandardization): convolutions use their weights
/// standardized per output channel, by model surgery.
///
/// Every Conv1d/Conv2d/Conv3d in a model slot, except the last n_last_layers_ignore of them (in the order of
/// model.named_modules(), which is registration order: forward order for the project's models), becomes a
/// WeightStandardizedConv that holds the same weight and bias tensors under the same names (state-dict keys and the
/// optimizer are unchanged) and at every forward convolves with
///     Ŵ[o] = (W[o] − mean(W[o])) / sqrt(var(W[o]) + eps)
/// the mean and (population, unbiased = false) variance taken over everything but the output channel o; the
/// gradient flows through the standardization to W. Runs once at Init, after the other writers of the model structure
/// (so that the convs squeeze-excite and blurpool wrap in slots are standardized too); required on checkpoint load.
///
///     trainer components: algorithms.push_back(std::make_shared<tessera::algorithms::WeightStandardization>());
///     functional:         tessera::algorithms::apply_weight_standardization(model, WeightStandardizationOptions());
///                         at::Tensor w_hat = tessera::algorithms::standardize_weight(conv->weight, 1e-5);
#include <cstdint>
#include <ostream>
#include <string>
#include <variant>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct WeightStandardizationOptions {
  /// How many of the last convolutions keep their raw weights (e.g. a segmentation head made of convs).
  TESSERA_OPTION(int64_t, n_last_layers_ignore) = 0;
  /// Added to the variance before the square root.
  TESSERA_OPTION(double, eps) = 1e-5;
  template <class V>
  void visit(V& v) {
    v("n_last_layers_ignore", n_last_layers_ignore_, "how many of the last convolutions are left unstandardized",
      Range::at_least(0));
    v("eps", eps_, "added to each output channel's weight variance before the square root", Range::positive());
  }
};

/// Functional form: (w − mean) / sqrt(var + eps) per output channel (dimension 0), the population mean and variance
/// over the other dimensions. `w` needs at least 2 dimensions.
at::Tensor standardize_weight(const at::Tensor& w, double eps = 1e-5);

/// A convolution (1-, 2- or 3-d) that standardizes its weight at every forward. Holds the replaced conv's "weight"
/// and "bias" tensors (the same tensors, under those names) and its options; any padding mode of the conv.
class WeightStandardizedConvImpl : public torch::nn::Module {
 public:
  /// The options of the conv it replaces (conv->options of a Conv1d, Conv2d or Conv3d).
  using Options = std::variant<torch::nn::detail::ConvNdOptions<1>, torch::nn::detail::ConvNdOptions<2>,
                               torch::nn::detail::ConvNdOptions<3>>;
  /// `reversed_padding`: the conv's padding per side, last dimension first (torch's _reversed_padding_repeated_twice,
  /// used when its padding mode is not zeros; see weight_standardization_padding).
  WeightStandardizedConvImpl(Options options, at::Tensor weight, at::Tensor bias,
                             std::vector<int64_t> reversed_padding, double eps);
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  Options options;
  std::vector<int64_t> reversed_padding;
  double eps;
  at::Tensor weight, bias;
};
TORCH_MODULE(WeightStandardizedConv);

/// The padding a conv applies itself when its padding mode is not zeros (reflect, replicate, circular): torch's
/// `_reversed_padding_repeated_twice`, a protected member of the conv.
std::vector<int64_t> weight_standardization_padding(const torch::nn::Module& conv);

/// Functional form: replaces every Conv1d/2d/3d in the slots of any module tree (see models/model.h on slots) but
/// the last `n_last_layers_ignore` by a WeightStandardizedConv; returns how many. The parameters stay the same
/// tensors, so `optimizer` (accepted for a uniform signature with the other surgeries) needs no change.
int64_t apply_weight_standardization(torch::nn::Module& model, const WeightStandardizationOptions& options,
                                     optim::Optimizer* optimizer = nullptr);

/// How many convolutions apply_weight_standardization would replace, without replacing anything.
int64_t count_weight_standardization(torch::nn::Module& model, const WeightStandardizationOptions& options);

/// The algorithm (recipe name "weight_standardization"). A model with no convolution in a slot left to standardize
/// is refused at plan time.
class WeightStandardization : public Algorithm {
 public:
  explicit WeightStandardization(WeightStandardizationOptions options = WeightStandardizationOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  void check(const State& state) const override;
  const WeightStandardizationOptions& options() const noexcept { return options_; }
  /// How many convolutions the last application replaced.
  int64_t replaced() const noexcept { return replaced_; }

 private:
  WeightStandardizationOptions options_;
  AlgorithmSpec spec_;
  int64_t replaced_ = 0;
};

}  // namespace tessera::algorithms
