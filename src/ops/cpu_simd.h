#pragma once
// Helpers for the CPU implementations of the fused ops (private to the library).
//
// The library is compiled for the baseline x86-64 ISA. The hot loops are compiled twice with
// TESSERA_CPU_CLONES (GCC function multi-versioning: an AVX2 clone chosen when the library is loaded on a
// CPU that has AVX2, and the baseline), and reductions and exp use GCC vector extensions of 8 floats, which
// vectorise without -ffast-math (plain loops with a float sum would not).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// Not under ThreadSanitizer (GCC defines __SANITIZE_THREAD__): the clones' ifunc resolvers are instrumented and run
// while the dynamic loader relocates the library, before the TSan runtime is set up, which crashes at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)
#define TESSERA_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TESSERA_CPU_CLONES
#endif
#define TESSERA_ALWAYS_INLINE inline __attribute__((always_inline))

// The 32-byte vectors only live inside always-inlined helpers and the clones that inline them: the ABI note
// GCC gives for them in the baseline clone does not apply. (Left ignored for the including file on purpose.)
#pragma GCC diagnostic ignored "-Wpsabi"

namespace tessera::ops::simd {

typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

TESSERA_ALWAYS_INLINE f8 splat(float v) { return f8{v, v, v, v, v, v, v, v}; }
TESSERA_ALWAYS_INLINE f8 load(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
TESSERA_ALWAYS_INLINE void store(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }
/// Lane-wise maximum; a NaN in `b` is kept, a NaN in `a` is dropped (callers propagate NaN through sums).
TESSERA_ALWAYS_INLINE f8 max(f8 a, f8 b) { return a > b ? a : b; }
TESSERA_ALWAYS_INLINE float hsum(f8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}
TESSERA_ALWAYS_INLINE float hmax(f8 v) {
  float m = v[0];
  for (int i = 1; i < 8; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

/// e^x for x <= 88 (Cephes' single-precision range reduction and polynomial, about 1 ulp), 0 below
/// -87.3 (where e^x is subnormal), NaN for NaN. Used on arguments x - max <= 0 only.
TESSERA_ALWAYS_INLINE f8 exp(f8 x) {
  const f8 hi = splat(88.0f), lo = splat(-87.33654f);
  const f8 in = x;
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const f8 fx = x * 1.44269504088896341f + 0.5f;
  i8 n = __builtin_convertvector(fx, i8);  // truncation; fix to floor below
  n += __builtin_convertvector(n, f8) > fx;  // true is -1
  const f8 nf = __builtin_convertvector(n, f8);
  x = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  f8 y = splat(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * (x * x) + x + 1.0f;
  const i8 bits = (n + 127) << 23;
  y = y * (f8)bits;  // a vector cast reinterprets the bits
  return in < lo ? splat(0.0f) : y;
}

}  // namespace tessera::ops::simd

