#pragma once
/// Microbatch sizes, fixed or automatic.
///
///     tessera::TrainerOptions().microbatch_size(16);                                     // accumulate over 16s
///     tessera::TrainerOptions().microbatch_size(tessera::MicrobatchSize::automatic());   // "auto"
///
/// With "auto" the trainer starts with the whole batch as one microbatch; when the device runs out of memory
/// in a batch (c10::OutOfMemoryError), it halves the size, puts back what the failed attempt changed (gradients,
/// batch-norm statistics, generators, train metrics) and runs the same batch again, so that the run equals one
/// configured with the size it found from the start. The size is logged, kept for the rest of the run and saved
/// in checkpoints. An out-of-memory error at size 1 is the error it is.
#include <cstdint>
#include <ostream>
#include <string>

namespace tessera {

class MicrobatchSize {
 public:
  /// Examples per microbatch; 0 = the whole batch. InputError for a negative size.
  MicrobatchSize(int64_t examples = 0);  // NOLINT(google-explicit-constructor): sizes read as numbers
  static MicrobatchSize automatic();
  /// "auto" or a whole number >= 0 (InputError naming `where` otherwise).
  static MicrobatchSize parse(const std::string& text, const std::string& where = "microbatch_size");

  bool is_auto() const noexcept { return auto_; }
  /// The fixed size (0 for "auto": the search starts from the whole batch).
  int64_t examples() const noexcept { return examples_; }
  /// "auto" or the number.
  std::string str() const;

  friend bool operator==(const MicrobatchSize& a, const MicrobatchSize& b) {
    return a.auto_ == b.auto_ && a.examples_ == b.examples_;
  }
  friend bool operator!=(const MicrobatchSize& a, const MicrobatchSize& b) { return !(a == b); }
  friend std::ostream& operator<<(std::ostream& os, const MicrobatchSize& m) { return os << m.str(); }

 private:
  int64_t examples_ = 0;
  bool auto_ = false;
};

/// The size after an out-of-memory error with microbatches of `current` examples (the whole batch of
/// `batch_size` when `current` is 0): half of it, at least 1. Error when `current` is already 1.
int64_t halve_microbatch_size(int64_t current, int64_t batch_size);

/// Test hook (no GPU needed): the environment variable TESSERA_TEST_OOM_ABOVE=N, read once by each Trainer when
/// it is made (-1 when unset): inject_out_of_memory then throws c10::OutOfMemoryError when a microbatch of more
/// than N examples starts its forward.
int64_t injected_out_of_memory_limit();
void inject_out_of_memory(int64_t microbatch_examples, int64_t limit);

}  // namespace tessera
