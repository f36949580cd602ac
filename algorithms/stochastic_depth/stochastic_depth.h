#pragma once
/// Stochastic depth (Huang et al. 2016; Composer's StochasticDepth): randomly drop the residual branch of residual
/// blocks in training, by model surgery on their residual gates.
///
/// Every `residual_gate` slot (the Identity slot of tessera::BasicBlock, models/resnet.h, applied to the residual
/// branch before the shortcut is added) becomes a StochasticDepthGate. Block i of L (0-based, in the order the slots
/// are visited, which is forward order for ResNet) gets the drop rate
///     p_i = (i + 1) / L · drop_rate   (drop_distribution "linear")   or   p_i = drop_rate   ("uniform").
/// In training, mode "block" keeps the whole branch of a forward with probability 1 − p_i (one draw per forward:
/// kept iff ⌊(1 − p_i) + u⌋ = 1, u uniform in [0, 1)), else the branch is multiplied by 0; mode "sample" draws one
/// u per example and multiplies the branch of example n by ⌊(1 − p_i) + u_n⌋ (no 1/(1 − p) rescale of the kept
/// ones, as Composer). In evaluation the branch is scaled by the survival probability 1 − p_i (not at all when
/// p_i = 0). In block mode the gate is a tessera::BranchGate (models/branch_gate.h): the block asks it before
/// computing the branch, and a branch dropped whole is not computed at all, as Composer does (its parameters get no
/// gradient for that step, its batch norms keep their running statistics). In sample mode every branch is computed
/// and multiplied by its mask.
///
/// With drop_warmup w > 0 the rates ramp from 0: at elapsed fraction e < w of the run, drop_rate is replaced by
/// (e / w) · drop_rate (set at each BeforeDataloader).
///
/// Randomness: at BeforeDataloader, gate i gets Rng(seed, {kAlgorithmStream, stream, batch, rank, i}); each training forward
/// (every microbatch, SAM's second pass) draws from it in turn. Draws are a pure function of (seed, batch, rank), so
/// resume is exact with no algorithm state, and every rank draws its own masks deterministically.
///
///     trainer components: algorithms.push_back(std::make_shared<tessera::algorithms::StochasticDepth>());
///     functional:         tessera::algorithms::apply_stochastic_depth(model, StochasticDepthOptions());
///                         at::Tensor y = tessera::algorithms::stochastic_depth(branch, 0.1, "sample", true, rng);
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>

#include <tessera/algorithm.h>
#include <tessera/models/branch_gate.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

struct StochasticDepthOptions {
  /// "block": drop a block's whole residual branch for the (micro)batch; "sample": drop it per example.
  TESSERA_OPTION(std::string, stochastic_method) = "block";
  /// Drop rate of the last block (linear) or of every block (uniform).
  TESSERA_OPTION(double, drop_rate) = 0.2;
  /// "linear": block i of L gets (i + 1) / L · drop_rate; "uniform": every block gets drop_rate.
  TESSERA_OPTION(std::string, drop_distribution) = "linear";
  /// Fraction of the run over which the drop rate ramps linearly from 0 (0: no warmup).
  TESSERA_OPTION(double, drop_warmup) = 0.0;
  template <class V>
  void visit(V& v) {
    v("stochastic_method", stochastic_method_, "drop a block's residual branch for the whole batch or per example",
      Choices{{"block", "sample"}});
    v("drop_rate", drop_rate_, "probability of dropping the last block (linear) or every block (uniform)",
      Range::closed(0, 1));
    v("drop_distribution", drop_distribution_, "drop rate by depth: growing linearly, or the same for every block",
      Choices{{"linear", "uniform"}});
    v("drop_warmup", drop_warmup_, "fraction of the run over which the drop rate ramps from 0",
      Range::closed_open(0, 1));
  }
};

/// The drop rate of each of `num_blocks` blocks: (i + 1) / num_blocks · drop_rate for "linear", drop_rate for
/// "uniform". InputError on a bad distribution, a rate outside [0, 1] or num_blocks < 1.
std::vector<double> stochastic_depth_drop_rates(int64_t num_blocks, double drop_rate,
                                                const std::string& drop_distribution);

/// The drop rate at elapsed fraction `elapsed` of the run: drop_rate, or (elapsed / drop_warmup) · drop_rate while
/// elapsed < drop_warmup.
double stochastic_depth_warmup_rate(double drop_rate, double drop_warmup, double elapsed);

/// Functional form: the residual branch `branch` [N, ...] as a block with drop rate `drop_rate` passes it on.
/// training: "block" draws one u from `rng` and returns branch if ⌊(1 − p) + u⌋ = 1, else branch · 0; "sample"
/// draws N values u_n in order and returns branch · m with m_n = ⌊(1 − p) + u_n⌋ (in the branch's dtype and
/// device, broadcast over the other dimensions). Not training: branch · (1 − p), or branch itself when p = 0.
at::Tensor stochastic_depth(const at::Tensor& branch, double drop_rate, const std::string& mode, bool training,
                            Rng& rng);

/// The gate that replaces an Identity residual gate: holds its block's drop rate and random stream.
class StochasticDepthGateImpl : public torch::nn::Module, public BranchGate {
 public:
  StochasticDepthGateImpl(std::string mode, double drop_rate, Rng rng = Rng());
  /// The branch as stochastic_depth passes it on (drawing from `rng`), or unchanged when skip_branch() has drawn
  /// for this forward already and kept it.
  at::Tensor forward(const at::Tensor& branch);
  /// Block mode in training: draws this forward's u (the draw forward would make) and returns true when the branch
  /// is dropped; otherwise false, without drawing.
  bool skip_branch() override;
  void pretty_print(std::ostream& stream) const override;

  std::string mode;
  double drop_rate;
  Rng rng;

 private:
  bool kept_ = false;  ///< skip_branch() drew "keep" for the forward under way
};
TORCH_MODULE(StochasticDepthGate);

/// Functional form: replaces every `residual_gate` slot of any module tree (see models/model.h on slots) by a
/// StochasticDepthGate with its drop rate (stochastic_depth_drop_rates over the slots in visiting order; with a
/// warmup, the rates at the start of the run, 0). Returns the gates, in that order. Parameters do not change, so
/// no optimizer is needed.
std::vector<StochasticDepthGate> apply_stochastic_depth(torch::nn::Module& model,
                                                        const StochasticDepthOptions& options);

/// How many `residual_gate` slots `model` has (what apply_stochastic_depth would replace).
int64_t count_stochastic_depth(torch::nn::Module& model);

/// The algorithm (recipe name "stochastic_depth"): apply_stochastic_depth at Init; at each BeforeDataloader, every gate's
/// drop rate (warmup) and random stream for the batch. A model without residual gates (no residual blocks: mlp,
/// cnn) is refused at plan time.
class StochasticDepth : public Algorithm {
 public:
  explicit StochasticDepth(StochasticDepthOptions options = StochasticDepthOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  void check(const State& state) const override;
  const StochasticDepthOptions& options() const noexcept { return options_; }
  /// The gates of the last application (empty before Init).
  const std::vector<StochasticDepthGate>& gates() const noexcept { return gates_; }

 private:
  StochasticDepthOptions options_;
  AlgorithmSpec spec_;
  std::vector<StochasticDepthGate> gates_;
};

}  // namespace tessera::algorithms
