// Counter-based generator: output i of a stream is a pure function of (key, i), so a stream can be
// restored from two integers and split without sharing numbers.
#include <tessera/error.h>
#include <tessera/rng.h>

#include <cmath>
#include <numeric>
#include <utility>

namespace tessera {
namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio, SplitMix64's increment

// SplitMix64's finaliser (Stafford's "Mix13"): a bijection with good avalanche.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Folds one stream id into a key. Order matters: {1, 2} and {2, 1} give different keys.
inline uint64_t combine(uint64_t key, uint64_t id) {
  return mix64(rotl(key, 23) ^ mix64(id + kGamma) ^ 0x6A09E667F3BCC909ull);
}

}  // namespace

Rng::Rng(uint64_t seed, std::initializer_list<uint64_t> stream) : key_(mix64(seed ^ 0x243F6A8885A308D3ull)) {
  for (uint64_t id : stream) key_ = combine(key_, id);
}

uint64_t Rng::next_u64() {
  // Two rounds: the second, keyed by xor, keeps two keys that differ by a multiple of kGamma (which
  // would make SplitMix64 streams overlap with a shift) from producing shifted copies of each other.
  const uint64_t z = mix64(key_ + counter_ * kGamma);
  ++counter_;
  return mix64(z ^ rotl(key_, 17));
}

double Rng::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

uint64_t Rng::below(uint64_t n) {
  if (n == 0) throw Error("Rng::below(n): n must be > 0");
  // Reject the lowest (2^64 mod n) values so every residue class is equally likely.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = next_u64();
    if (r >= threshold) return r % n;
  }
}

double Rng::normal() {
  // Box-Muller, cosine branch only, so that the state stays (key, counter). 1 - uniform() is in (0, 1].
  const double u1 = 1.0 - uniform();
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

std::vector<int64_t> Rng::permutation(int64_t n) {
  if (n < 0) throw Error("Rng::permutation(n): n must be >= 0, got " + std::to_string(n));
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), int64_t{0});
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(below(static_cast<uint64_t>(i) + 1));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

Rng Rng::derive(std::initializer_list<uint64_t> stream) const {
  Rng r;
  uint64_t key = combine(key_, 0xD1B54A32D192ED03ull);  // a derived stream never equals a constructed one
  for (uint64_t id : stream) key = combine(key, id);
  r.set_state(key, 0);
  return r;
}

}  // namespace tessera
