#pragma once
/// Batch transforms applied by the DataLoader (in its prefetch threads) before a batch reaches the trainer.
/// Randomness comes from the Rng the loader passes, derived from (seed, epoch, batch index), so a batch
/// is the same whether it is produced first or after a resume.
#include <memory>
#include <string>
#include <vector>

#include <tessera/batch.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::data {

class BatchTransform {
 public:
  virtual ~BatchTransform() = default;
  /// Transforms a batch in place: replaces its parts, or overwrites their memory when the batch is the
  /// only owner of it (as for the loader's freshly gathered batches); a tensor the caller still holds is
  /// never modified.
  virtual void apply(Batch& batch, Rng& rng) const = 0;
  virtual std::string name() const = 0;
  /// True when each example's output depends only on that example and on draws from `rng` that do not depend
  /// on the batch's contents (its size aside): then a loader may decode only some rows of a batch, leave the
  /// others zero, and the rows it decoded come out exactly as in the full batch (DataLoader::share_rows).
  virtual bool per_example() const { return false; }
};

/// input <- (input - mean[c]) / std[c] per channel (one value broadcast to all channels when one is given).
struct NormalizeOptions {
  TESSERA_OPTION(std::vector<double>, mean) = std::vector<double>{0.0};
  TESSERA_OPTION(std::vector<double>, std) = std::vector<double>{1.0};
  template <class V>
  void visit(V& v) {
    v("mean", mean_, "per-channel mean", Range::any());
    v("std", std_, "per-channel standard deviation", Range::positive());
  }
};
class Normalize : public BatchTransform {
 public:
  explicit Normalize(NormalizeOptions options);
  void apply(Batch& batch, Rng& rng) const override;
  std::string name() const override { return "normalize"; }
  bool per_example() const override { return true; }

 private:
  NormalizeOptions options_;
};

/// Zero-pads each image by `padding` and crops a random window of the original size (per example).
struct RandomCropOptions {
  TESSERA_OPTION(int64_t, padding) = 4;
  template <class V>
  void visit(V& v) { v("padding", padding_, "pixels of zero padding on each side", Range::at_least(0)); }
};
class RandomCrop : public BatchTransform {
 public:
  explicit RandomCrop(RandomCropOptions options);
  void apply(Batch& batch, Rng& rng) const override;
  std::string name() const override { return "random_crop"; }
  bool per_example() const override { return true; }

 private:
  RandomCropOptions options_;
};

/// Flips each image left-right with probability `p` (per example).
struct HorizontalFlipOptions {
  TESSERA_OPTION(double, p) = 0.5;
  template <class V>
  void visit(V& v) { v("p", p_, "probability of flipping an example", Range::closed(0, 1)); }
};
class HorizontalFlip : public BatchTransform {
 public:
  explicit HorizontalFlip(HorizontalFlipOptions options);
  void apply(Batch& batch, Rng& rng) const override;
  std::string name() const override { return "horizontal_flip"; }
  bool per_example() const override { return true; }

 private:
  HorizontalFlipOptions options_;
};

/// Options of `MaskTokens` (recipe name "mask_tokens"): BERT's masking (Devlin et al. 2019).
struct MaskTokensOptions {
  /// Share of the tokens hidden (each token independently).
  TESSERA_OPTION(double, probability) = 0.15;
  /// Token ids are in [0, vocab_size); the mask token is vocab_size (the bert model's extra embedding row). A
  /// recipe that leaves it out gets its data section's vocabulary (256 for bytes, a tokenizer's size).
  TESSERA_OPTION(int64_t, vocab_size) = 256;
  /// Of the hidden tokens: the share replaced by the mask token, and the share replaced by a uniformly random
  /// token; the rest (1 − both) keep their own id.
  TESSERA_OPTION(double, replace_with_mask) = 0.8;
  TESSERA_OPTION(double, replace_with_random) = 0.1;
  template <class V>
  void visit(V& v) {
    v("probability", probability_, "share of the tokens hidden", Range::open_closed(0, 1));
    v("vocab_size", vocab_size_, "token ids are below it; the mask token is vocab_size", Range::at_least(1));
    v("replace_with_mask", replace_with_mask_, "share of hidden tokens replaced by the mask token", Range::closed(0, 1));
    v("replace_with_random", replace_with_random_, "share of hidden tokens replaced by a random token",
      Range::closed(0, 1));
  }
};
/// Masked language modelling's batches from token batches (input integer ids [N, S], any target): each token is
/// hidden with probability `probability`; the target becomes int64 [N, S] holding the hidden tokens' ids and
/// kIgnoreTarget (−100, models/model.h) elsewhere; a hidden token's input becomes the mask token (vocab_size), a
/// random token, or stays, in the shares of the options (BERT's 80/10/10). Draws are per example (example i from
/// the loader's generator derived with i), so a batch is the same after a resume. InputError for inputs that are
/// not integer [N, S] ids in [0, vocab_size), and for replace shares adding up to more than 1.
class MaskTokens : public BatchTransform {
 public:
  explicit MaskTokens(MaskTokensOptions options);
  void apply(Batch& batch, Rng& rng) const override;
  std::string name() const override { return "mask_tokens"; }
  bool per_example() const override { return true; }

 private:
  MaskTokensOptions options_;
};

}  // namespace tessera::data
