#pragma once
// What the Hugging Face checkpoint tests share (hf_gpt2_test.cpp, hf_llama_test.cpp).
#include <cstdint>
#include <memory>

#include <ATen/ATen.h>

#include <tessera/models/gpt.h>

namespace tessera::testing {

/// A gpt model of `options` in evaluation mode whose every weight is random, norms and biases too (so that a weight
/// read or written in the wrong place shows).
inline std::shared_ptr<GPT> random_gpt(const GPTOptions& options, uint64_t seed = 5) {
  at::manual_seed(seed);
  auto model = std::make_shared<GPT>(options);
  at::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(at::randn_like(p), 0.1);
  model->eval();
  return model;
}

}  // namespace tessera::testing
