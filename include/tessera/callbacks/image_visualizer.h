#pragma once
/// Shows what the model is fed ("image_visualizer" in recipes; Composer's ImageVisualizer, input mode):
///
///     callbacks: [{image_visualizer: {interval: 100, num_images: 8}}]
///     loggers: [{tensorboard: {}}]
///
/// Every `interval` training batches (from the first), the first `num_images` images of the batch as the model
/// receives it (after every algorithm that changes the batch: cutout's holes, mixup's and cutmix's blends, colout's
/// dropped rows, progressive resizing's size; the first microbatch when a batch is split) go to the loggers as one
/// grid, tagged "images/train", at the batch's step; with `eval`, also the first batch of every evaluation, tagged
/// "images/<evaluator label>". Each image is scaled to [0, 255] by its own minimum and maximum (the inputs are
/// normalized), so what is shown is the contrast the model sees, not the original colours.
///
/// It only reads: training is bitwise the same with or without it. A recipe with it but no logger that keeps images
/// (the TensorBoard writer; jsonl and csv hold numbers and text) is refused at Init, before step 1; inputs that are
/// not images ([N, C, H, W] with 1 or 3 channels: token sequences, say) are refused at the first batch's forward,
/// before any step. With several ranks, rank 0's share is shown.
#include <tessera/callback.h>
#include <tessera/options.h>

#include <cstdint>
#include <string>

namespace tessera::callbacks {

struct ImageVisualizerOptions {
  /// Training batches between two grids (the first batch's is logged).
  TESSERA_OPTION(int64_t, interval) = 100;
  /// Images per grid (at most the batch's).
  TESSERA_OPTION(int64_t, num_images) = 8;
  /// Also the first batch of every evaluation.
  TESSERA_OPTION(bool, eval) = true;
  template <class V>
  void visit(V& v) {
    v("interval", interval_, "training batches between two logged grids (the first batch's is logged)",
      Range::at_least(1));
    v("num_images", num_images_, "images per grid (at most the batch's)", Range::at_least(1));
    v("eval", eval_, "also log the first batch of every evaluation", Any{});
  }
};

class ImageVisualizer : public Callback {
 public:
  explicit ImageVisualizer(ImageVisualizerOptions options = {});
  std::string name() const override { return "image_visualizer"; }
  void run_event(Event event, State& state, Logger& logger) override;
  const ImageVisualizerOptions& options() const noexcept { return options_; }

 private:
  ImageVisualizerOptions options_;
  bool logging_ = false;       ///< a logger destination keeps pictures (decided at Init)
  int64_t logged_batch_ = -1;  ///< the training batch whose grid was logged (once per batch: microbatches, SAM)
  bool eval_logged_ = false;   ///< the running evaluation's first batch was logged
};

/// The grid ImageVisualizer logs: the first `count` images of `images` ([N, C, H, W] with C 1 or 3, real, any
/// device), each scaled to [0, 255] by its own minimum and maximum (a constant image is black), in rows of
/// ceil(sqrt(count)) images, 2 black pixels between and around them; uint8 [height, width, C] on the CPU,
/// contiguous. InputError naming `where` for any other shape or type.
at::Tensor image_grid(const at::Tensor& images, int64_t count, const std::string& where);

}  // namespace tessera::callbacks
