#pragma once
/// A batch of examples: named tensor parts sharing their first dimension (the sample dimension).
///
/// Batches are not assumed to be (input, target) pairs: `input` and `target` are the conventional keys,
/// and any number of extra named parts (masks, weights, ids...) travel with them through splitting,
/// selection and transforms.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

namespace tessera {

/// An integer target that marks a position with nothing to predict (PyTorch's ignore_index): the masked language
/// model's targets hold it wherever no token was hidden (data/transforms.h: mask_tokens). cross_entropy
/// (models/model.h), the metrics (metrics.h) and label smoothing leave such positions out.
inline constexpr int64_t kIgnoreTarget = -100;

class Batch {
 public:
  static constexpr const char* kInput = "input";
  static constexpr const char* kTarget = "target";

  Batch() = default;
  /// A batch with the two conventional parts.
  Batch(at::Tensor input, at::Tensor target);

  /// The part named `key`; an Error naming the available keys when absent.
  const at::Tensor& get(const std::string& key) const;
  at::Tensor& get(const std::string& key);
  /// Adds or replaces a part (its first dimension must equal the others', checked by `validate`).
  void set(const std::string& key, at::Tensor value);
  bool has(const std::string& key) const;
  /// Removes a part if present.
  void erase(const std::string& key);

  const at::Tensor& input() const { return get(kInput); }
  at::Tensor& input() { return get(kInput); }
  const at::Tensor& target() const { return get(kTarget); }
  at::Tensor& target() { return get(kTarget); }

  /// The parts in insertion order.
  const std::vector<std::pair<std::string, at::Tensor>>& parts() const noexcept { return parts_; }
  std::vector<std::pair<std::string, at::Tensor>>& parts() noexcept { return parts_; }
  bool empty() const noexcept { return parts_.empty(); }

  /// Number of samples: the first dimension of the parts (0 for an empty batch).
  int64_t size() const;
  /// Throws an Error when the parts disagree on their first dimension.
  void validate() const;

  /// Splits along the sample dimension into chunks of at most `microbatch_size` (the last may be smaller).
  /// `microbatch_size <= 0` or >= size() gives one chunk. The chunks are views, not copies.
  std::vector<Batch> split(int64_t microbatch_size) const;
  /// The rows `index` (an int64 tensor) of every part.
  Batch select(const at::Tensor& index) const;
  /// Every part moved to `device`.
  Batch to(c10::Device device, bool non_blocking = false) const;

 private:
  std::vector<std::pair<std::string, at::Tensor>> parts_;
};

/// The batch with its token sequences of length `length` (sequence-length warmup, ALiBi): every part whose dimension 1
/// equals the input's sequence length S is cut to its first `length` positions (`truncate`), or re-chunked into
/// [⌊N·S/length⌋, length, ...] (the remainder dropped), so that targets stay aligned with inputs; other parts are left
/// alone with `truncate` and are an InputError without it (they cannot follow the tokens into new examples).
/// `length` >= S returns the batch unchanged. An input that is not [N, S, ...] is an InputError.
Batch set_seq_length(const Batch& batch, int64_t length, bool truncate);

}  // namespace tessera
