#pragma once
/// Gyro dropout (Lee et al., MLSys 2022; Composer's GyroDropout): dropout over a small, fixed set of subnetworks, by
/// model surgery on the dropout layers.
///
/// Every torch::nn::Dropout in a model slot becomes a GyroDropoutLayer. Layer l keeps sigma preselected masks over
/// the features of its input (dimension 1: the features of [N, F], the channels of [N, C, ...]), unit f of mask s
/// kept iff u >= p, u uniform from Rng(seed, {kAlgorithmStream, stream, 0, l}). The run is cut into periods of
///     L = max(1, floor(T / sigma)) · tau   batches (T: the run's length in batches; Composer's rule),
/// and in period k the layer trains tau distinct masks drawn without replacement from Rng(seed, {kAlgorithmStream,
/// stream, 1, l, k}): example n of a global batch of N examples (all ranks' rows) gets mask floor(n · tau / N), and
///     y_n = x_n ⊙ mask_{floor(n · tau / N)} / (1 − p),
/// whether the batch trains whole or in microbatches, on one rank or several (the layers read State::batch_place).
/// In evaluation the layer is the identity (inverted dropout, as torch's). Masks and selections are pure functions of
/// (seed, layer, period): resume is exact with no algorithm state, and every rank trains the same subnetworks.
///
///     trainer components: algorithms.push_back(std::make_shared<tessera::algorithms::GyroDropout>());
///     functional:         tessera::algorithms::apply_gyro_dropout(model, GyroDropoutOptions());
///                         at::Tensor y = tessera::algorithms::gyro_dropout(x, selected, 0.5);
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera {
struct BatchPlace;
}

namespace tessera::algorithms {

struct GyroDropoutOptions {
  /// Probability that a unit is dropped in a preselected mask (replaces the dropout layers' own p, as Composer).
  TESSERA_OPTION(double, p) = 0.5;
  /// Number of preselected masks (subnetworks) per layer.
  TESSERA_OPTION(int64_t, sigma) = 256;
  /// Number of masks trained at once (each on its share of the batch); at most sigma.
  TESSERA_OPTION(int64_t, tau) = 16;
  template <class V>
  void visit(V& v) {
    v("p", p_, "probability that a unit is dropped in a preselected mask", Range::closed_open(0, 1));
    v("sigma", sigma_, "number of preselected masks (subnetworks) per dropout layer", Range::at_least(1));
    v("tau", tau_, "number of masks trained at once, each on its share of the batch (at most sigma)",
      Range::at_least(1));
  }
};

/// The sigma preselected masks of layer `layer`: a float CPU tensor [sigma, features] of 0 and 1, unit f of mask s
/// kept (1) iff the (s · features + f)-th draw u of Rng(seed, {kAlgorithmStream, stream, 0, layer}) has u >= p.
at::Tensor gyro_dropout_masks(uint64_t seed, int64_t layer, int64_t features, double p, int64_t sigma);

/// The tau distinct masks (indices in [0, sigma)) that layer `layer` trains in period `period`: the first tau of a
/// Fisher-Yates shuffle of 0..sigma-1 by Rng(seed, {kAlgorithmStream, stream, 1, layer, period}).
std::vector<int64_t> gyro_dropout_selection(uint64_t seed, int64_t layer, int64_t period, int64_t sigma, int64_t tau);

/// Batches per period: max(1, floor(total_batches / sigma)) · tau.
int64_t gyro_dropout_period_length(double total_batches, int64_t sigma, int64_t tau);

/// Functional form: x [N, F, ...] times selected [M, F] (0/1 masks) row floor(n · M / N) for example n, broadcast
/// over the dimensions after 1, divided by 1 − p. Differentiable in x.
at::Tensor gyro_dropout(const at::Tensor& x, const at::Tensor& selected, double p);

/// The masks of one gyro dropout layer and the period it trains, shared by its C++ module (GyroDropoutLayer) and,
/// for a Python model, the Python module that replaced its torch.nn.Dropout (python/tessera/_surgery.py). The
/// algorithm moves every layer to the current period before each batch; until then a layer trains period 0 of
/// seed 0. The masks are made at the first training forward, when the number of features is known.
class GyroDropoutMasks {
 public:
  GyroDropoutMasks(GyroDropoutOptions options, int64_t layer);
  /// Trains the masks of `period` of the run seeded `seed` from now on.
  void select(uint64_t seed, int64_t period);
  /// Spreads the masks over the global batch by `place` (the trainer's State::batch_place) while it is set, over
  /// the input's own rows otherwise or when null (the default).
  void follow(std::shared_ptr<const BatchPlace> place) { place_ = std::move(place); }
  /// In training, gyro dropout of x with the current period's masks (row n of x [N, F, ...] gets the mask of the
  /// part of the batch it falls in: follow()); otherwise x. Throws InputError when x has fewer than 2 dimensions, a
  /// number of features (dimension 1) other than the one the masks were made for, or, following a place, a number of
  /// rows that is not a multiple of the batch's examples.
  at::Tensor forward(const at::Tensor& x, bool training);
  int64_t layer() const noexcept { return layer_; }
  int64_t period() const noexcept { return period_; }
  /// The masks trained now ([tau, features], 0/1, on the CPU), made for `features` if not made yet (InputError when
  /// they were made for another number of features).
  at::Tensor selected(int64_t features);

 private:
  GyroDropoutOptions options_;
  int64_t layer_;
  uint64_t seed_ = 0;
  int64_t period_ = 0;
  at::Tensor masks_;     // [sigma, features] for seed_, undefined until the first training forward
  at::Tensor selected_;  // [tau, features] of period_, scaled by 1/(1-p), in the dtype and on the device last used
  std::shared_ptr<const BatchPlace> place_;
};

/// The layer that replaces a torch::nn::Dropout (no parameters, no buffers: state-dict keys are unchanged).
class GyroDropoutLayerImpl : public torch::nn::Module {
 public:
  explicit GyroDropoutLayerImpl(std::shared_ptr<GyroDropoutMasks> masks);
  at::Tensor forward(const at::Tensor& x);
  const std::shared_ptr<GyroDropoutMasks>& masks() const noexcept { return masks_; }
  void pretty_print(std::ostream& stream) const override;

 private:
  std::shared_ptr<GyroDropoutMasks> masks_;
};
TORCH_MODULE(GyroDropoutLayer);

/// Functional form: replaces every torch::nn::Dropout in the slots of any module tree (see models/model.h on slots),
/// numbering the layers 0, 1, ... in visiting order. Returns their masks, in that order.
std::vector<std::shared_ptr<GyroDropoutMasks>> apply_gyro_dropout(torch::nn::Module& model,
                                                                  const GyroDropoutOptions& options);

/// How many torch::nn::Dropout layers apply_gyro_dropout would replace in the slots of `model`, without changing it.
int64_t count_gyro_dropout(torch::nn::Module& model);

/// The algorithm (recipe name "gyro_dropout"): apply_gyro_dropout at Init, the layers following the trainer's
/// State::batch_place; before each batch (BeforeDataloader, so that selective backprop's scoring forward and SAM's
/// second pass use the batch's masks too), every layer moves to period floor(batch / L). A model with no dropout
/// layer is refused at plan time.
class GyroDropout : public Algorithm {
 public:
  explicit GyroDropout(GyroDropoutOptions options = GyroDropoutOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  void check(const State& state) const override;
  const GyroDropoutOptions& options() const noexcept { return options_; }
  /// A new layer's masks, numbered after the ones before (a Python model's surgery calls it per layer it replaces).
  std::shared_ptr<GyroDropoutMasks> add_layer();
  /// The layers of the last application.
  const std::vector<std::shared_ptr<GyroDropoutMasks>>& layers() const noexcept { return layers_; }

 private:
  GyroDropoutOptions options_;
  AlgorithmSpec spec_;
  std::vector<std::shared_ptr<GyroDropoutMasks>> layers_;
  std::shared_ptr<const BatchPlace> place_;  // the state's, from Init
};

}  // namespace tessera::algorithms
