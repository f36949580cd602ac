// What a batch attempt that failed with an out-of-memory error may have changed, captured before it and put
// back before the retry (microbatch_size: auto): the model's buffers (batch-norm statistics), torch's
// generators for the run's device and the project's generator.
#pragma once
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>

#include <tessera/state.h>

namespace tessera::detail {

class RetryPoint {
 public:
  explicit RetryPoint(const State& state);
  void restore(State& state) const;

 private:
  std::vector<at::Tensor> buffers_;
  std::vector<std::pair<at::Generator, at::Tensor>> generators_;
  uint64_t rng_key_ = 0, rng_counter_ = 0;
};

}  // namespace tessera::detail
