#pragma once
/// Where a Trainer draws batches from: Tessera's own DataLoader, or an adapter around data the user already
/// has (a Python torch.utils.data.DataLoader, any iterable of batches; see python/src/py_data.cpp).
///
/// The Trainer asks for epoch `e` from batch `b` on (`start_epoch`), then pulls batches with `next` until the
/// epoch ends. A source that can start an epoch at any batch directly resumes a checkpoint in O(1); one that
/// cannot says so in `start_epoch` (it skips, with a message, or refuses with an InputError) and never hands
/// out other batches than an uninterrupted run would have seen without saying so.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <tessera/batch.h>

namespace tessera::data {

class BatchTransform;

class BatchSource {
 public:
  virtual ~BatchSource() = default;

  /// Batches per epoch (> 0 for training data).
  virtual int64_t num_batches() const = 0;
  /// Examples per epoch (the `sp` time unit and `dur` conversions count them).
  virtual int64_t num_samples() const = 0;
  /// Starts (or restarts) epoch `epoch` at batch `first_batch` (0..num_batches()); the batches from there on
  /// are exactly those of a full pass over the epoch from its start.
  virtual void start_epoch(uint64_t seed, int64_t epoch, int64_t first_batch = 0) = 0;
  /// The next batch of the current epoch, std::nullopt at its end.
  virtual std::optional<Batch> next() = 0;
  /// Short description for logs and messages: "fashion_mnist(train, 60000) in batches of 128".
  virtual std::string describe() const = 0;
  /// A batch of the kind this source yields (its parts, their shapes per example and dtypes), for checks
  /// before step 1 (e.g. progressive resizing needs image inputs). It may be small; it does not disturb the
  /// iteration (a source that must read data for it caches what it read).
  virtual Batch example_batch() = 0;
  /// Examples in every batch but possibly the last, when that is fixed (a loader's batch size), else 0. A
  /// checkpoint keeps it: two batch sizes can give the same batches and examples per epoch, but not the same
  /// batches.
  virtual int64_t batch_size() const { return 0; }
  /// Number of classes when known (classification data), else 0.
  virtual int64_t num_classes() const { return 0; }
  /// Tokens per example of sequence data (Dataset::tokens_per_example); 0 when the data is not token sequences.
  virtual int64_t tokens_per_example() const { return 0; }
  /// The transforms that algorithms run in the data pipeline (RandAugment, AugMix): the Trainer sets them before
  /// Init, in plan order (an empty list clears them). A source that runs them applies them to every batch it
  /// produces, before its own transforms, each with its own generator keyed by (seed, epoch, batch), so a batch
  /// stays a pure function of its position; setting them cancels an epoch in flight. Returns false when the
  /// source cannot run transforms (the default, e.g. a Python DataLoader): the Trainer then refuses those
  /// algorithms before step 1.
  virtual bool set_algorithm_transforms(std::vector<std::shared_ptr<const BatchTransform>> transforms) {
    return transforms.empty();
  }
  /// Data-parallel rank `rank` of `world_size` keeps only rows [n*rank/w, n*(rank+1)/w) of each batch of n
  /// (dist::ShardedSource says so when it wraps this source). A source that can may then read and decode only
  /// those rows and leave the others zero, provided the batches' kept rows stay bitwise what they would be;
  /// it returns whether it will. The default reads whole batches.
  virtual bool share_rows(int /*rank*/, int /*world_size*/) { return false; }
};

}  // namespace tessera::data
