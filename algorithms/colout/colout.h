#pragma once
/// ColOut (Composer's ColOut): drop a random fraction of the rows and columns of each image.
///
/// The image keeps ⌊(1 − p_row)·H⌋ of its rows and ⌊(1 − p_col)·W⌋ of its columns (at least one of each), drawn
/// uniformly without replacement and kept in their order: a smaller image that still shows the whole object, so
/// the step is cheaper (about (1 − p_row)(1 − p_col) of the pixels). Dense targets of the image's size
/// (segmentation masks) lose the same rows and columns with `resize_target` ("auto": when their last two
/// dimensions are the image's). Class targets are unchanged.
///
/// At AfterDataloader, on the full batch, from a generator keyed by (seed, batch): with `batch` (the default) the
/// same rows and columns for the whole batch; without, each example its own (in batch order). The resolution
/// changes, so the order against the other algorithms at that event is declared: after selective backprop (it
/// scores the examples at the size the data gives) and before the other writers of the resolution (progressive
/// resizing scales what ColOut leaves, pinned to its size increment); the algorithms that draw in pixels of the
/// final size (CutOut, CutMix) or mix it (MixUp) run after every writer of the resolution, so after ColOut.
///
///     tessera::Rng rng(seed);
///     auto kept = tessera::algorithms::colout_indices(h, w, 0.15, 0.15, rng);
///     at::Tensor small = tessera::algorithms::colout_batch(x, kept);
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/data/transforms.h>
#include <tessera/options.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

struct ColOutOptions {
  /// Fraction of the rows dropped.
  TESSERA_OPTION(double, p_row) = 0.15;
  /// Fraction of the columns dropped.
  TESSERA_OPTION(double, p_col) = 0.15;
  /// The same rows and columns for the whole batch (else each example its own).
  TESSERA_OPTION(bool, batch) = true;
  /// Drop the same rows and columns of dense targets: "auto" (when their last two dimensions are the input's),
  /// "true" (required) or "false".
  TESSERA_OPTION(std::string, resize_target) = "auto";
  template <class V>
  void visit(V& v) {
    v("p_row", p_row_, "fraction of the rows dropped", Range::closed_open(0, 1));
    v("p_col", p_col_, "fraction of the columns dropped", Range::closed_open(0, 1));
    v("batch", batch_, "the same rows and columns for the whole batch (else per example)", Any{});
    v("resize_target", resize_target_, "drop the same rows and columns of dense targets", Choices{{"auto", "true", "false"}});
  }
};

/// The rows and columns an image keeps (ascending).
struct ColOutIndices {
  std::vector<int64_t> rows, cols;
};

/// How many of `size` rows (or columns) are kept when a fraction `p` is dropped: max(1, ⌊(1 − p)·size⌋).
int64_t colout_kept(int64_t size, double p);

/// The kept rows of an image of height × width, then its kept columns: the first colout_kept(height, p_row) of
/// rng.permutation(height), sorted, then likewise for the columns.
ColOutIndices colout_indices(int64_t height, int64_t width, double p_row, double p_col, Rng& rng);

/// `input` [..., H, W] with only the kept rows and columns (the same for every image).
at::Tensor colout_batch(const at::Tensor& input, const ColOutIndices& kept);

/// `input` [N, ..., H, W] with example n keeping its own rows and columns kept[n] (all of the same counts).
at::Tensor colout_samples(const at::Tensor& input, const std::vector<ColOutIndices>& kept);

/// Whether `target` gets the input's rows and columns dropped too under `resize_target` ("auto": it has at
/// least 2 dimensions, the same first one as the input, and the input's last two). "true" with a target that
/// does not have the input's size is an InputError.
bool colout_resizes_target(const at::Tensor& input, const at::Tensor& target, const std::string& resize_target);

/// One batch through ColOut: the input and target as they leave it, with the indices drawn.
struct ColOutBatch {
  at::Tensor input, target;
  std::vector<ColOutIndices> kept;  ///< one entry with `batch`, else one per example
};

/// The drawing form: with `batch`, one colout_indices for the whole batch; else one per example, in order.
ColOutBatch colout_batch(const at::Tensor& input, const at::Tensor& target, double p_row, double p_col, Rng& rng,
                         bool batch = true, const std::string& resize_target = "auto");

/// ColOut as a transform of the data pipeline (in the DataLoader's threads, its Rng keyed by (seed, epoch,
/// batch)): for a DataLoader of your own, e.g. per-example ColOut (`batch` false) off the training thread.
class ColOutTransform : public data::BatchTransform {
 public:
  explicit ColOutTransform(ColOutOptions options = ColOutOptions());
  void apply(Batch& batch, Rng& rng) const override;
  std::string name() const override { return "colout"; }

 private:
  ColOutOptions options_;
};

/// The algorithm (recipe name "colout").
class ColOut : public Algorithm {
 public:
  explicit ColOut(ColOutOptions options = ColOutOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// Image inputs [C, H, W] per example; with resize_target "true", targets of the images' size.
  void check(const State& state) const override;
  const ColOutOptions& options() const noexcept { return options_; }
  /// The rows and columns kept in the last batch (one entry with `batch`, else one per example).
  const std::vector<ColOutIndices>& last_kept() const noexcept { return last_kept_; }

 private:
  ColOutOptions options_;
  AlgorithmSpec spec_;
  std::vector<ColOutIndices> last_kept_;
};

}  // namespace tessera::algorithms
