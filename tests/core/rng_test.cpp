#include <gtest/gtest.h>
#include <tessera/error.h>
#include <tessera/rng.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

using tessera::Rng;

namespace {
std::vector<uint64_t> draw(Rng r, int n) {
  std::vector<uint64_t> out;
  for (int i = 0; i < n; ++i) out.push_back(r.next_u64());
  return out;
}
}  // namespace

TEST(Rng, SameSeedAndStreamGiveTheSameSequence) {
  EXPECT_EQ(draw(Rng(42), 100), draw(Rng(42), 100));
  EXPECT_EQ(draw(Rng(42, {1, 7}), 100), draw(Rng(42, {1, 7}), 100));
}

TEST(Rng, KnownValuesAreStableAcrossBuilds) {
  // Pins the algorithm (integer arithmetic only, so every compiler and machine must agree): a change here
  // silently changes every shuffle, augmentation and resumed run of every user.
  Rng a(0);
  EXPECT_EQ(a.next_u64(), 17172217724642031408ull);
  EXPECT_EQ(a.next_u64(), 1681208229457674890ull);
  EXPECT_EQ(a.counter(), 2u);
  EXPECT_EQ(Rng(42, {tessera::kShuffleStream, 3}).next_u64(), 3932585116241417031ull);
  EXPECT_EQ(Rng(7, {tessera::kShuffleStream, 0}).permutation(10),
            (std::vector<int64_t>{5, 1, 0, 8, 2, 4, 6, 3, 7, 9}));
  Rng c(1);
  EXPECT_EQ(c.uniform(), 0.68087744021731711);
  EXPECT_EQ(c.below(1000), 8u);
}

TEST(Rng, DifferentSeedsOrStreamsGiveDifferentSequences) {
  const auto base = draw(Rng(1), 64);
  EXPECT_NE(base, draw(Rng(2), 64));
  EXPECT_NE(base, draw(Rng(1, {0}), 64));
  EXPECT_NE(draw(Rng(1, {1, 2}), 64), draw(Rng(1, {2, 1}), 64));
  EXPECT_NE(draw(Rng(1, {tessera::kShuffleStream, 0}), 64), draw(Rng(1, {tessera::kShuffleStream, 1}), 64));
  // No shared values at all between neighbouring streams (a shifted copy would share almost all).
  std::set<uint64_t> seen;
  for (uint64_t id = 0; id < 16; ++id)
    for (uint64_t v : draw(Rng(7, {id}), 256)) seen.insert(v);
  EXPECT_EQ(seen.size(), 16u * 256u);
}

TEST(Rng, DeriveIsDeterministicAndDoesNotAdvance) {
  Rng r(9);
  r.next_u64();
  const Rng before = r;
  const Rng d1 = r.derive({5});
  const Rng d2 = r.derive({5});
  EXPECT_EQ(r, before);
  EXPECT_EQ(d1, d2);
  EXPECT_EQ(d1.counter(), 0u);
  EXPECT_NE(draw(d1, 32), draw(r.derive({6}), 32));
  EXPECT_NE(draw(d1, 32), draw(r, 32));
}

TEST(Rng, StateRoundTripsThroughKeyAndCounter) {
  Rng r(3, {4});
  for (int i = 0; i < 10; ++i) r.next_u64();
  Rng restored;
  restored.set_state(r.key(), r.counter());
  EXPECT_EQ(draw(r, 50), draw(restored, 50));
}

TEST(Rng, UniformIsInUnitIntervalWithMeanOneHalf) {
  Rng r(11);
  double sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  // Standard error of the mean is 1/sqrt(12 n) ~ 0.0009; allow 5 of them.
  EXPECT_NEAR(sum / n, 0.5, 0.0046);
}

TEST(Rng, BelowIsInRangeAndUniform) {
  Rng r(2024);
  const uint64_t k = 10;
  const int n = 100000;
  std::vector<int> counts(k, 0);
  for (int i = 0; i < n; ++i) {
    const uint64_t x = r.below(k);
    ASSERT_LT(x, k);
    ++counts[x];
  }
  // Expected 10000 each, standard deviation ~95: a tolerance of 5% is more than 5 standard deviations.
  for (int c : counts) EXPECT_NEAR(c, n / static_cast<int>(k), 500);
  EXPECT_EQ(r.below(1), 0u);
  EXPECT_THROW(r.below(0), tessera::Error);
  // Huge bounds (where rejection matters most) stay in range.
  const uint64_t big = (uint64_t{1} << 63) + 12345;
  for (int i = 0; i < 1000; ++i) ASSERT_LT(r.below(big), big);
}

TEST(Rng, NormalHasZeroMeanAndUnitVariance) {
  Rng r(5);
  const int n = 100000;
  double s = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    const double x = r.normal();
    ASSERT_TRUE(std::isfinite(x));
    s += x;
    s2 += x * x;
  }
  const double mean = s / n;
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(s2 / n - mean * mean, 1.0, 0.03);
}

TEST(Rng, PermutationIsAPermutationAndDeterministic) {
  for (int64_t n : {0, 1, 2, 17, 1000}) {
    auto p = Rng(3, {tessera::kShuffleStream, 0}).permutation(n);
    ASSERT_EQ(static_cast<int64_t>(p.size()), n);
    auto sorted = p;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
    EXPECT_EQ(p, Rng(3, {tessera::kShuffleStream, 0}).permutation(n));
  }
  EXPECT_NE(Rng(3).permutation(100), Rng(4).permutation(100));
  // Each position is equally likely to receive element 0 (n = 4, 40000 shuffles, 10000 expected each).
  Rng r(8);
  std::vector<int> where(4, 0);
  for (int i = 0; i < 40000; ++i) {
    auto p = r.permutation(4);
    ++where[std::find(p.begin(), p.end(), 0) - p.begin()];
  }
  for (int c : where) EXPECT_NEAR(c, 10000, 500);
}
