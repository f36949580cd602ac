#include "cutout.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>

#include "../../src/algorithm_checks.h"

namespace tessera::algorithms {
namespace {
constexpr uint64_t kCutOutStream = 0xc0700bULL;

void check_images(const char* where, const at::Tensor& input) {
  if (!input.defined() || input.dim() < 2) {
    throw InputError(std::string(where) + ".input: expected images [..., H, W], got " +
                     (input.defined() ? c10::str(input.sizes()) : std::string("an undefined tensor")));
  }
}
}  // namespace

int64_t cutout_length(int64_t height, int64_t width, double length) {
  check_option_as<CutOutOptions>("cutout_length", "length", length);
  if (height < 1 || width < 1) {
    throw InputError(fmt::format("cutout_length: the image is {}x{}; expected at least 1x1", height, width));
  }
  if (length < 1.0) return static_cast<int64_t>(length * static_cast<double>(std::min(height, width)));
  return static_cast<int64_t>(std::floor(length));
}

std::vector<CutOutHole> cutout_holes(int64_t height, int64_t width, int64_t num_holes, int64_t length_pixels, Rng& rng,
                                     bool uniform_sampling) {
  check_option_as<CutOutOptions>("cutout_holes", "num_holes", num_holes);
  if (length_pixels < 0) {
    throw InputError(fmt::format("cutout_holes.length_pixels: {}; expected a side >= 0", length_pixels));
  }
  std::vector<CutOutHole> holes;
  holes.reserve(static_cast<size_t>(num_holes));
  for (int64_t i = 0; i < num_holes; ++i) {
    holes.push_back(random_box(height, width, length_pixels, length_pixels, rng, uniform_sampling));
  }
  return holes;
}

at::Tensor cutout_batch(const at::Tensor& input, const std::vector<CutOutHole>& holes) {
  check_images("cutout_batch", input);
  const int64_t hd = input.dim() - 2, wd = input.dim() - 1;
  const int64_t height = input.size(hd), width = input.size(wd);
  at::Tensor out = input.clone();
  for (const CutOutHole& h : holes) {
    if (h.top < 0 || h.left < 0 || h.height < 0 || h.width < 0 || h.top + h.height > height ||
        h.left + h.width > width) {
      throw InputError(fmt::format("cutout_batch.holes: rows [{}, {}) x columns [{}, {}) is not inside the {}x{} images",
                                   h.top, h.top + h.height, h.left, h.left + h.width, height, width));
    }
    if (h.height > 0 && h.width > 0) out.narrow(hd, h.top, h.height).narrow(wd, h.left, h.width).zero_();
  }
  return out;
}

at::Tensor cutout_batch(const at::Tensor& input, int64_t num_holes, double length, Rng& rng, bool uniform_sampling) {
  check_images("cutout_batch", input);
  const int64_t height = input.size(-2), width = input.size(-1);
  const int64_t side = cutout_length(height, width, length);
  return cutout_batch(input, cutout_holes(height, width, num_holes, side, rng, uniform_sampling));
}

CutOut::CutOut(CutOutOptions options) : options_(std::move(options)) {
  validate_options(options_, "cutout");
  spec_.name = "cutout";
  spec_.accesses = {{Event::AfterDataloader, {Resource::Inputs}, {Resource::Inputs}}};
  spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::Resolution), Event::AfterDataloader,
                         "its holes are drawn in pixels of the final input size (length as a fraction of its side)"});
  spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::BatchRows), Event::AfterDataloader,
                         "it cuts the examples that train, after rows are dropped"});
}

void CutOut::check(const State& state) const { example_image_batch(state, "cutout zeroes square holes of"); }

void CutOut::apply(Event, State& state, Logger&) {
  Rng rng(state.seed, {kAlgorithmStream, kCutOutStream, static_cast<uint64_t>(state.timestamp.batch)});
  const at::Tensor& x = state.batch.input();
  const int64_t height = x.size(-2), width = x.size(-1);
  last_holes_ = cutout_holes(height, width, options_.num_holes(), cutout_length(height, width, options_.length()), rng,
                             options_.uniform_sampling());
  state.batch.set(Batch::kInput, cutout_batch(x, last_holes_));
}

}  // namespace tessera::algorithms
