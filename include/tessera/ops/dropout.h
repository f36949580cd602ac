#pragma once
/// Counter-based dropout: inverted dropout whose mask is a hash of (seed, element index) instead of one draw of
/// torch's generator per element. On the CPU it is computed in one parallel pass (no mask tensor is stored: the
/// backward hashes the same indices again), several times faster than torch's dropout there, whose per-element
/// Bernoulli draws dominate the op (bench_kernels, docs/kernels.md). On other devices it is torch's dropout.
///
///     at::Tensor y = tessera::ops::counter_dropout(x, 0.1, seed);   // the same (x, p, seed): the same y
///     model: register_slot("drop", torch::nn::AnyModule(tessera::CounterDropout(0.1)));
///
/// Element i of x (in its contiguous order) is kept iff h(seed, i) >= p · 2^32, h a 32-bit hash with full avalanche
/// over i and the seed, and then scaled by 1 / (1 − p); y = 0 elsewhere.
#include <cstdint>
#include <ostream>

#include <ATen/Tensor.h>
#include <torch/nn/modules/dropout.h>

namespace tessera::ops {

/// x with each element kept with probability 1 − p (scaled by 1/(1 − p)) or zeroed, the choice a pure function of
/// (seed, the element's index in x's contiguous order); differentiable in x (the backward applies the same mask).
/// p = 0 returns x. On a device other than the CPU: torch's dropout (at::dropout, its own generator; `seed` unused).
/// InputError for p outside [0, 1) or x not floating point.
at::Tensor counter_dropout(const at::Tensor& x, double p, uint64_t seed);

}  // namespace tessera::ops

namespace tessera {

/// A torch::nn::Dropout (so surgery that replaces dropout layers, gyro_dropout, replaces it too) whose training
/// forward is ops::counter_dropout with a seed drawn from torch's default generator (one 62-bit draw per call):
/// seeded runs are reproducible and resume exactly (the trainer checkpoints torch's generators), and each rank of a
/// data-parallel run, seeded seed + rank, drops its own units. In evaluation, the identity.
class CounterDropoutImpl : public torch::nn::DropoutImpl {
 public:
  explicit CounterDropoutImpl(double p = 0.5);
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
};
TORCH_MODULE(CounterDropout);

}  // namespace tessera
