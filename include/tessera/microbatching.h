#pragma once
/// Microbatch sizes, fixed or automatic.
///
///     tessera::TrainerOptions().microbatch_size(16);                                     // accumulate over 16s
///     tessera::TrainerOptions().microbatch_size(tessera::MicrobatchSize::automatic());   // "auto"
///
/// With "auto" the trainer starts with the whole batch as one microbatch; when the device runs out of memory
/// in a batch (c10::OutOfMemoryError, or cuBLAS/cuDNN failing to allocate: is_out_of_memory), it halves the size,
/// drops the failed attempt's graph, puts back what that attempt changed (gradients, batch-norm statistics,
/// generators, train metrics) and runs the same batch again, so that the run equals one
/// configured with the size it found from the start. The size is logged, kept for the rest of the run and saved
/// in checkpoints. An out-of-memory error at size 1 is the error it is.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace tessera {

struct State;

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

/// Whether `e` says the device ran out of memory: c10::OutOfMemoryError (the caching allocator's), or an
/// allocation that failed inside cuBLAS or cuDNN (their workspaces: CUBLAS_STATUS_ALLOC_FAILED,
/// CUDNN_STATUS_ALLOC_FAILED), which LibTorch reports as a plain c10::Error. What microbatch_size auto retries.
bool is_out_of_memory(const c10::Error& e);

/// After an out-of-memory error in a batch: drops what the failed attempt still holds (the state's outputs and
/// loss, with their autograd graph and activations) and, on a CUDA build, returns the caching allocator's free
/// blocks to the device, so that the retry has the memory the failed attempt took.
void release_failed_attempt(State& state);

/// The size after an out-of-memory error with microbatches of `current` examples (the whole batch of
/// `batch_size` when `current` is 0): half of it, at least 1. Error when `current` is already 1.
int64_t halve_microbatch_size(int64_t current, int64_t batch_size);

/// The factors on the mean losses of a rank's microbatches (its batch's rows cut into chunks of
/// `microbatch_size`, as Batch::split cuts them; 0 = one chunk) that make their sum, averaged over the ranks, the
/// mean of the global batch's loss over its terms (Model::loss_terms; a bert batch's masked tokens). `terms` [N]
/// counts each example's terms (int64) and `global_terms` (0-d) is the sum of every rank's (of this rank's alone
/// on one). Chunk i's factor is (chunk terms / rank terms) · (rank terms · world_size / global terms), a 0-d double
/// on the device of `terms`, computed without a read-back; 0 for a chunk without terms (or a batch without any).
/// When the terms are proportional to the examples (no ignored target), each factor is bitwise the examples'
/// share (chunk examples / rank examples) · (rank examples · world_size / global examples).
std::vector<at::Tensor> loss_term_weights(const at::Tensor& terms, int64_t microbatch_size,
                                          const at::Tensor& global_terms, int64_t world_size);

/// Test hook (no GPU needed): the environment variable TESSERA_TEST_OOM_ABOVE=N, read once by each Trainer when
/// it is made (-1 when unset): inject_out_of_memory then throws c10::OutOfMemoryError when a microbatch of more
/// than N examples starts its forward.
int64_t injected_out_of_memory_limit();
void inject_out_of_memory(int64_t microbatch_examples, int64_t limit);

}  // namespace tessera
