#pragma once
/// Sequence-length warmup (Li et al. 2022, "The Stability-Efficiency Dilemma"; Composer's SeqLengthWarmup): train a
/// language model on short sequences first and lengthen them linearly to the full length over the first
/// `duration` of training.
///
/// At AfterDataloader of batch b (counted over the run), with T the run's length in batches, W = ⌊T·duration⌋,
/// n = ⌊(max − min)/step⌋ and every = max(1, ⌊W/max(1, n)⌋), Composer's schedule:
///   L(b) = min(max, min + step·⌊b/every⌋)
/// (the length reaches max near batch W), and L = max throughout when W = 0. Composer divides by zero when W < n
/// or n = 0; here those runs lengthen by one step per batch.
/// `truncate: false` (the default) re-chunks the batch's tokens ([N, S] → [⌊N·S/L⌋, L], the remainder dropped), so a
/// batch keeps its tokens; `truncate: true` (Composer's default) keeps the first L tokens of every sequence part of
/// the batch ([N, S] → [N, L]) and drops the rest (measured worse here: the card). Every part whose second dimension is the input's sequence length changes the same way, so targets stay
/// aligned with inputs.
///
///     int64_t len = tessera::algorithms::warmup_seq_length(batch, total_batches, options);
///     Batch shorter = tessera::set_seq_length(batch, len, /*truncate=*/false);   // batch.h
#include <cstdint>

#include <tessera/algorithm.h>
#include <tessera/batch.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct SeqLengthWarmupOptions {
  /// Fraction of training over which the length grows.
  TESSERA_OPTION(double, duration) = 0.3;
  /// Length at the start.
  TESSERA_OPTION(int64_t, min_seq_length) = 8;
  /// Length at the end of the warmup (0 = the training data's sequence length).
  TESSERA_OPTION(int64_t, max_seq_length) = 0;
  /// Lengths grow by this many tokens at a time.
  TESSERA_OPTION(int64_t, step_size) = 8;
  /// false: re-chunk the batch's tokens into more, shorter sequences; true: cut every sequence to the length.
  TESSERA_OPTION(bool, truncate) = false;
  template <class V>
  void visit(V& v) {
    v("duration", duration_, "fraction of training over which the length grows", Range::closed(0, 1));
    v("min_seq_length", min_seq_length_, "sequence length at the start", Range::at_least(1));
    v("max_seq_length", max_seq_length_, "length at the end of the warmup (0 = the data's)", Range::at_least(0));
    v("step_size", step_size_, "lengths grow by this many tokens at a time", Range::at_least(1));
    v("truncate", truncate_, "cut sequences (true) or re-chunk the batch's tokens (false)", Any{});
  }
};

/// L(b) of the schedule above for batch `batch` of a run of `total_batches`, with `max_seq_length` the resolved
/// maximum (options().max_seq_length(), or the data's length when that is 0).
int64_t warmup_seq_length(int64_t batch, int64_t total_batches, double duration, int64_t min_seq_length,
                          int64_t max_seq_length, int64_t step_size);

/// The algorithm (recipe name "seq_length_warmup").
class SeqLengthWarmup : public Algorithm {
 public:
  explicit SeqLengthWarmup(SeqLengthWarmupOptions options = SeqLengthWarmupOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// Token sequences [N, S] in the training data with S >= max_seq_length >= min_seq_length, and a model that
  /// takes the shortest sequences (a forward on the example batch cut to min_seq_length).
  void check(const State& state) const override;
  const SeqLengthWarmupOptions& options() const noexcept { return options_; }
  /// The sequence length of the last batch (0 before the first).
  int64_t last_seq_length() const noexcept { return last_seq_length_; }

 private:
  SeqLengthWarmupOptions options_;
  AlgorithmSpec spec_;
  int64_t last_seq_length_ = 0;
};

}  // namespace tessera::algorithms
