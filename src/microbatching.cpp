#include <tessera/microbatching.h>

#include <cstdlib>
#include <mutex>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

#ifdef TESSERA_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <tessera/error.h>
#include <tessera/state.h>

#include "retry_point.h"

namespace tessera {

MicrobatchSize::MicrobatchSize(int64_t examples) : examples_(examples) {
  if (examples < 0) {
    throw InputError("microbatch_size: " + std::to_string(examples) +
                     " is out of range; expected a whole number >= 0 (0 = the whole batch) or \"auto\"");
  }
}

MicrobatchSize MicrobatchSize::automatic() {
  MicrobatchSize m;
  m.auto_ = true;
  return m;
}

MicrobatchSize MicrobatchSize::parse(const std::string& text, const std::string& where) {
  if (text == "auto") return automatic();
  size_t used = 0;
  int64_t n = -1;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || used == 0 || n < 0) {
    throw InputError(where + ": \"" + text + "\" is not a microbatch size; expected a whole number >= 0 (0 = the "
                     "whole batch) or \"auto\"");
  }
  return MicrobatchSize(n);
}

std::string MicrobatchSize::str() const { return auto_ ? "auto" : std::to_string(examples_); }

bool is_out_of_memory(const c10::Error& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  const std::string what = e.what();
  return what.find("CUBLAS_STATUS_ALLOC_FAILED") != std::string::npos ||
         what.find("CUDNN_STATUS_ALLOC_FAILED") != std::string::npos;
}

void release_failed_attempt(State& state) {
  state.outputs = at::Tensor();
  state.loss = at::Tensor();
#ifdef TESSERA_CUDA
  if (state.device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

int64_t halve_microbatch_size(int64_t current, int64_t batch_size) {
  const int64_t size = current <= 0 || current > batch_size ? batch_size : current;
  if (size <= 1) {
    throw Error("microbatch_size auto: the device ran out of memory with microbatches of 1 example; the model "
                "does not fit this device at all (use a smaller model or a device with more memory)");
  }
  return size / 2;
}

std::vector<at::Tensor> loss_term_weights(const at::Tensor& terms, int64_t microbatch_size,
                                          const at::Tensor& global_terms, int64_t world_size) {
  if (!terms.defined() || terms.dim() != 1 || at::isFloatingType(terms.scalar_type())) {
    throw Error("loss_term_weights: expected integer counts per example [N], got " +
                (terms.defined() ? std::string(c10::toString(terms.scalar_type())) + " of " +
                                       std::to_string(terms.dim()) + " dimensions"
                                 : std::string("an undefined tensor")));
  }
  const int64_t n = terms.size(0);
  const int64_t chunk = microbatch_size <= 0 || microbatch_size >= n ? std::max<int64_t>(n, 1) : microbatch_size;
  // Integer counts below 2^53 are exact as doubles, so each quotient is the correctly rounded value of the same
  // ratio as the examples' (the bitwise guarantee above).
  const at::Tensor counts = terms.to(at::kDouble);
  const at::Tensor rank = counts.sum();
  const at::Tensor global = global_terms.to(counts.device(), at::kDouble).clamp_min(1.0);
  const at::Tensor across = rank.mul(static_cast<double>(world_size)).div(global);
  const at::Tensor within = rank.clamp_min(1.0);
  std::vector<at::Tensor> out;
  for (const at::Tensor& part : counts.split(chunk, 0)) out.push_back(part.sum().div(within).mul(across));
  return out;
}

int64_t injected_out_of_memory_limit() {
  const char* value = std::getenv("TESSERA_TEST_OOM_ABOVE");
  return value == nullptr ? -1 : std::stoll(value);
}

void inject_out_of_memory(int64_t microbatch_examples, int64_t limit) {
  if (limit >= 0 && microbatch_examples > limit) {
    throw c10::OutOfMemoryError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                                "CUDA out of memory (injected by TESSERA_TEST_OOM_ABOVE=" + std::to_string(limit) +
                                    " for a microbatch of " + std::to_string(microbatch_examples) + " examples)");
  }
}

}  // namespace tessera

namespace tessera::detail {

RetryPoint::RetryPoint(const State& state) {
  for (const auto& b : state.model->buffers(true)) buffers_.push_back(b.detach().clone());
  std::vector<at::Generator> gens{at::globalContext().defaultGenerator(at::Device(at::kCPU))};
  if (!state.device.is_cpu()) gens.push_back(at::globalContext().defaultGenerator(state.device));
  for (auto& gen : gens) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    generators_.emplace_back(gen, gen.get_state());
  }
  rng_key_ = state.rng.key();
  rng_counter_ = state.rng.counter();
}

void RetryPoint::restore(State& state) const {
  at::NoGradGuard no_grad;
  const auto buffers = state.model->buffers(true);
  for (size_t i = 0; i < buffers.size() && i < buffers_.size(); ++i) buffers[i].copy_(buffers_[i]);
  for (const auto& [gen, saved] : generators_) {
    at::Generator g = gen;
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_state(saved);
  }
  state.rng.set_state(rng_key_, rng_counter_);
}

}  // namespace tessera::detail
