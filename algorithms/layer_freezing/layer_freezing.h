#pragma once
/// Layer freezing (reference §2.1): progressively stop training the early layers.
///
/// At each EpochEnd, with e the elapsed fraction: φ = freeze_level·(e − freeze_start)/(1 − freeze_start)
/// when e > freeze_start (else 0). The layers are the leaf modules (no children) owning at least one
/// parameter, in depth-first order; the first ⌊φ·(L − 1)⌋ are frozen (the last layer never is): their
/// parameters stop requiring gradients and leave the optimizer together with their optimizer state.
/// Freezing never reverses. Unlike the original, it resumes: the frozen depth is its state and is
/// re-applied on load, so a resumed run trains exactly the layers the uninterrupted one does.
///
///     int64_t depth = tessera::algorithms::freeze_layers(model, optimizer.get(), /*depth=*/3);
#include <cstdint>
#include <vector>

#include <torch/nn/module.h>

#include <tessera/algorithm.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct LayerFreezingOptions {
  TESSERA_OPTION(double, freeze_start) = 0.5;
  TESSERA_OPTION(double, freeze_level) = 1.0;
  template <class V>
  void visit(V& v) {
    v("freeze_start", freeze_start_, "fraction of training before freezing starts", Range::closed_open(0, 1));
    v("freeze_level", freeze_level_, "fraction of the layers frozen at the end of training", Range::closed(0, 1));
  }
};

/// The freezable layers: leaf modules owning parameters, depth-first.
std::vector<std::shared_ptr<torch::nn::Module>> freezable_layers(torch::nn::Module& model);

/// The number of layers to freeze at elapsed fraction `e` out of `num_layers`.
int64_t freeze_depth(double e, int64_t num_layers, double freeze_start, double freeze_level);

/// Functional form: freezes the first `depth` freezable layers (requires_grad off; removed from `optimizer`
/// with their state when given). Already-frozen layers stay frozen. Returns the number of layers frozen.
int64_t freeze_layers(torch::nn::Module& model, optim::Optimizer* optimizer, int64_t depth);

/// The algorithm (recipe name "layer_freezing").
class LayerFreezing : public Algorithm {
 public:
  explicit LayerFreezing(LayerFreezingOptions options = LayerFreezingOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// {"frozen_depth": n}.
  StateDict state_dict() const override;
  /// Restores the depth; the layers are frozen again at the next AfterLoad (or by `reapply`).
  void load_state_dict(const StateDict& state) override;
  /// Re-freezes the saved depth on a (re)built model and optimizer.
  void reapply(State& state);
  int64_t frozen_depth() const noexcept { return frozen_depth_; }
  const LayerFreezingOptions& options() const noexcept { return options_; }

 private:
  LayerFreezingOptions options_;
  AlgorithmSpec spec_;
  int64_t frozen_depth_ = 0;
};

}  // namespace tessera::algorithms
