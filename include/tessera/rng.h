#pragma once
/// The project's own random number generator.
///
/// Counter-based (SplitMix64 over a 64-bit key and counter), so that a stream is a pure function of
/// (seed, stream ids...): the shuffle of epoch e is `Rng(seed, {kShuffleStream, e})`, the same on every
/// standard library and every machine, and resuming needs only the counters, not a replay.
#include <cstdint>
#include <initializer_list>
#include <vector>

namespace tessera {

class Rng {
 public:
  /// A generator for `seed`, optionally split into an independent stream by a list of ids.
  explicit Rng(uint64_t seed = 0, std::initializer_list<uint64_t> stream = {});

  /// The next 64 random bits.
  uint64_t next_u64();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Uniform integer in [0, n), without modulo bias. n must be > 0.
  uint64_t below(uint64_t n);
  /// Standard normal (Box-Muller, two draws per value). Unlike the other draws, which are integer or exact
  /// arithmetic and identical everywhere, this goes through libm's log and cos: identical on one libm,
  /// possibly different in the last bit on another.
  double normal();
  /// Fisher-Yates shuffle of 0..n-1.
  std::vector<int64_t> permutation(int64_t n);
  /// A new generator whose stream is derived from this one's key and the given ids (does not advance this).
  Rng derive(std::initializer_list<uint64_t> stream) const;

  /// Saved and restored exactly by checkpoints.
  uint64_t key() const noexcept { return key_; }
  uint64_t counter() const noexcept { return counter_; }
  void set_state(uint64_t key, uint64_t counter) noexcept { key_ = key; counter_ = counter; }

  bool operator==(const Rng& o) const noexcept { return key_ == o.key_ && counter_ == o.counter_; }

 private:
  uint64_t key_ = 0;
  uint64_t counter_ = 0;
};

/// Well-known stream ids, so that independent uses never share random numbers.
enum RngStream : uint64_t {
  kShuffleStream = 1,
  kTransformStream = 2,
  kAlgorithmStream = 3,
  kInitStream = 4,
  kGenerateStream = 5,  ///< text generation (models/generate.h), with the row and step
};

}  // namespace tessera
