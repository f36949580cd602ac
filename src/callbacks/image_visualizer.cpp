#include <ATen/ATen.h>
#include <fmt/format.h>
#include <tessera/callbacks/image_visualizer.h>
#include <tessera/error.h>

#include <cmath>

namespace tessera::callbacks {

at::Tensor image_grid(const at::Tensor& images, int64_t count, const std::string& where) {
  if (!images.defined() || images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3) ||
      images.size(0) < 1 || images.size(2) < 1 || images.size(3) < 1 || images.is_complex() ||
      images.scalar_type() == at::kBool) {
    const std::string what =
        images.defined() ? c10::str(images.sizes(), " ", c10::toString(images.scalar_type())) : "undefined";
    throw InputError(fmt::format("{}: the input is {}; expected images [N, C, H, W] with 1 or 3 channels", where, what));
  }
  const int64_t n = std::min(count, images.size(0)), c = images.size(1), h = images.size(2), w = images.size(3);
  const at::Tensor x = images.narrow(0, 0, n).detach().to(at::kCPU, at::kDouble).reshape({n, -1});
  const at::Tensor low = std::get<0>(x.min(1, true)), high = std::get<0>(x.max(1, true));
  const at::Tensor range = high - low;
  const at::Tensor scaled = at::where(range > 0, (x - low) / at::where(range > 0, range, at::ones_like(range)) * 255.0,
                                      at::zeros_like(x))
                                .round()
                                .clamp(0, 255)
                                .to(at::kByte)
                                .reshape({n, c, h, w});
  const auto cols = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int64_t rows = (n + cols - 1) / cols, pad = 2;
  at::Tensor grid = at::zeros({c, rows * (h + pad) + pad, cols * (w + pad) + pad}, at::kByte);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = pad + (i / cols) * (h + pad), x0 = pad + (i % cols) * (w + pad);
    grid.narrow(1, y, h).narrow(2, x0, w).copy_(scaled[i]);
  }
  return grid.permute({1, 2, 0}).contiguous();
}

ImageVisualizer::ImageVisualizer(ImageVisualizerOptions options) : options_(std::move(options)) {
  validate_options(options_, "image_visualizer");
}

void ImageVisualizer::run_event(Event event, State& state, Logger& logger) {
  if (event == Event::Init) {
    // Rank 0 holds the loggers; the other ranks have none and log nothing.
    logging_ = logger.takes_images();
    if (state.rank == 0 && !logging_) {
      throw InputError("image_visualizer: no logger keeps images; add {tensorboard: {}} to the loggers (the jsonl "
                       "and csv files hold numbers and text only)");
    }
    return;
  }
  if (!logging_) return;
  if (event == Event::BeforeForward) {
    const int64_t batch = state.timestamp.batch;
    if (batch == logged_batch_ || batch % options_.interval() != 0) return;
    logged_batch_ = batch;
    logger.log_image("images/train",
                     image_grid(state.batch.input(), options_.num_images(), "image_visualizer (training batch)"),
                     state.timestamp);
  } else if (event == Event::EvalStart) {
    eval_logged_ = false;
  } else if (event == Event::EvalBeforeForward && options_.eval() && !eval_logged_) {
    eval_logged_ = true;
    logger.log_image("images/" + state.eval_label,
                     image_grid(state.batch.input(), options_.num_images(),
                                "image_visualizer (evaluation \"" + state.eval_label + "\")"),
                     state.timestamp);
  }
}

}  // namespace tessera::callbacks
