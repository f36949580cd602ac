// Counter-based dropout (include/tessera/ops/dropout.h).
#include <tessera/ops/dropout.h>

#include <algorithm>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include <tessera/error.h>

#include "cpu_simd.h"

namespace tessera::ops {
namespace {

/// A 32-bit integer hash with full avalanche (Wellons' "lowbias32"). Not rng.h's 64-bit SplitMix: AVX2 has no
/// 64-bit multiply, and 32-bit lanes let the loop below run 8 elements at a time.
TESSERA_ALWAYS_INLINE uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

/// The hash of element i under (s0, s1), the two halves of the seed: two rounds, the index's high word in the second.
TESSERA_ALWAYS_INLINE uint32_t element_hash(uint64_t i, uint32_t s0, uint32_t s1) {
  return mix32(mix32(static_cast<uint32_t>(i) ^ s0) ^ s1 ^ static_cast<uint32_t>(i >> 32));
}

/// out[i] = keep(i) ? in[i] · scale : 0 for i in [begin, end), a range within one 2^32 block of indices (the hash's
/// high word constant): written so that GCC vectorises it (8 lanes with AVX2).
template <class T>
TESSERA_ALWAYS_INLINE void dropout_block(const T* __restrict in, T* __restrict out, int64_t begin, int64_t end,
                                         uint32_t threshold, float scale, uint32_t s0, uint32_t s1) {
  const uint32_t high = s1 ^ static_cast<uint32_t>(static_cast<uint64_t>(begin) >> 32);
  const auto low = static_cast<uint32_t>(begin);
  const auto count = static_cast<uint32_t>(end - begin);
  const T* src = in + begin;
  T* dst = out + begin;
  for (uint32_t k = 0; k < count; ++k) {
    const uint32_t h = mix32(mix32((low + k) ^ s0) ^ high);
    dst[k] = static_cast<T>(static_cast<float>(src[k]) * (h >= threshold ? scale : 0.0f));
  }
}

/// One block of indices of each dtype (AVX2 clones; bf16 and half through float, double in double).
TESSERA_CPU_CLONES void dropout_range(const float* in, float* out, int64_t begin, int64_t end, uint32_t threshold,
                                      double p, uint32_t s0, uint32_t s1) {
  dropout_block(in, out, begin, end, threshold, static_cast<float>(1.0 / (1.0 - p)), s0, s1);
}

TESSERA_CPU_CLONES void dropout_range(const at::BFloat16* in, at::BFloat16* out, int64_t begin, int64_t end,
                                      uint32_t threshold, double p, uint32_t s0, uint32_t s1) {
  dropout_block(in, out, begin, end, threshold, static_cast<float>(1.0 / (1.0 - p)), s0, s1);
}

TESSERA_CPU_CLONES void dropout_range(const at::Half* in, at::Half* out, int64_t begin, int64_t end,
                                      uint32_t threshold, double p, uint32_t s0, uint32_t s1) {
  dropout_block(in, out, begin, end, threshold, static_cast<float>(1.0 / (1.0 - p)), s0, s1);
}

void dropout_range(const double* in, double* out, int64_t begin, int64_t end, uint32_t threshold, double p,
                   uint32_t s0, uint32_t s1) {
  const double scale = 1.0 / (1.0 - p);
  for (int64_t i = begin; i < end; ++i) {
    out[i] = element_hash(static_cast<uint64_t>(i), s0, s1) >= threshold ? in[i] * scale : 0.0;
  }
}

/// Splits [begin, end) at multiples of 2^32 and runs `block` on each part.
template <class F>
void by_blocks(int64_t begin, int64_t end, const F& block) {
  constexpr int64_t kBlock = int64_t{1} << 32;
  while (begin < end) {
    const int64_t stop = std::min(end, (begin / kBlock + 1) * kBlock);
    block(begin, stop);
    begin = stop;
  }
}

/// The masked, scaled copy of x (the forward, and the backward on the gradient).
at::Tensor apply_mask_cpu(const at::Tensor& x, double p, uint64_t seed) {
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
  // Kept iff hash >= p · 2^32: probability 1 − p up to 2^-32.
  const auto threshold = static_cast<uint32_t>(std::min(p * 4294967296.0, 4294967295.0));
  const auto s0 = static_cast<uint32_t>(seed), s1 = static_cast<uint32_t>(seed >> 32);
  const int64_t n = in.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.scalar_type(), "counter_dropout", [&] {
    const auto* src = in.data_ptr<scalar_t>();
    auto* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
      by_blocks(begin, end, [&](int64_t b, int64_t e) { dropout_range(src, dst, b, e, threshold, p, s0, s1); });
    });
  });
  return out.view(x.sizes());
}

/// y = mask(seed) ⊙ x / (1 − p); the backward is the same masking of the gradient (no mask stored).
struct CounterDropoutFunction : public torch::autograd::Function<CounterDropoutFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, double p, int64_t seed) {
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    return apply_mask_cpu(x, p, static_cast<uint64_t>(seed));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const double p = ctx->saved_data["p"].toDouble();
    const auto seed = static_cast<uint64_t>(ctx->saved_data["seed"].toInt());
    return {apply_mask_cpu(grads[0], p, seed), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor counter_dropout(const at::Tensor& x, double p, uint64_t seed) {
  if (!(p >= 0.0 && p < 1.0)) {
    throw InputError(fmt::format("counter_dropout: p is {}; expected a probability in [0, 1)", p));
  }
  if (!x.defined() || !at::isFloatingType(x.scalar_type())) {
    throw InputError(fmt::format("counter_dropout: expected a floating-point tensor, got {}",
                                 x.defined() ? c10::toString(x.scalar_type()) : "an undefined tensor"));
  }
  if (p == 0.0) return x;
  if (!x.device().is_cpu()) return at::dropout(x, p, /*train=*/true);
  return CounterDropoutFunction::apply(x, p, static_cast<int64_t>(seed));
}

}  // namespace tessera::ops

namespace tessera {

CounterDropoutImpl::CounterDropoutImpl(double p) : torch::nn::DropoutImpl(p) {}

at::Tensor CounterDropoutImpl::forward(const at::Tensor& x) {
  if (!is_training() || options.p() == 0.0) return x;
  if (!x.device().is_cpu()) return at::dropout(x, options.p(), /*train=*/true);  // torch's, on its device's generator
  // One draw of torch's default generator per call: the seed of this call's mask.
  const int64_t seed = at::randint(int64_t{1} << 62, {1}, at::TensorOptions().dtype(at::kLong)).item<int64_t>();
  return ops::counter_dropout(x, options.p(), static_cast<uint64_t>(seed));
}

void CounterDropoutImpl::pretty_print(std::ostream& stream) const {
  stream << "tessera::CounterDropout(p=" << options.p() << ")";
}

}  // namespace tessera
