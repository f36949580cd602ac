#include "colout.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>

#include "../../src/algorithm_checks.h"

namespace tessera::algorithms {
namespace {
constexpr uint64_t kColOutStream = 0xc0100fULL;

void check_images(const char* where, const at::Tensor& input, int64_t min_dim) {
  if (!input.defined() || input.dim() < min_dim) {
    throw InputError(fmt::format("{}.input: expected images [{}H, W], got {}", where, min_dim > 2 ? "N, ..., " : "..., ",
                                 input.defined() ? c10::str(input.sizes()) : std::string("an undefined tensor")));
  }
}

void check_kept(const char* where, const ColOutIndices& kept, int64_t height, int64_t width) {
  auto check = [&](const std::vector<int64_t>& idx, int64_t size, const char* what) {
    for (size_t i = 0; i < idx.size(); ++i) {
      if (idx[i] < 0 || idx[i] >= size || (i > 0 && idx[i] <= idx[i - 1])) {
        throw InputError(fmt::format("{}.kept: the {} must be ascending indices in [0, {}); got {} at position {}", where,
                                     what, size, idx[i], i));
      }
    }
    if (idx.empty()) throw InputError(fmt::format("{}.kept: no {} kept; expected at least one", where, what));
  };
  check(kept.rows, height, "rows");
  check(kept.cols, width, "columns");
}

at::Tensor index_tensor(const std::vector<int64_t>& idx, const at::Device& device) {
  return at::tensor(idx, at::kLong).to(device);
}

/// t [N, ..., H, W] -> [N, ..., kh, kw] where example n keeps rows[n] and cols[n] ([N, kh], [N, kw] int64).
at::Tensor gather_per_example(const at::Tensor& t, const at::Tensor& rows, const at::Tensor& cols) {
  const int64_t n = t.size(0), kh = rows.size(1), kw = cols.size(1);
  std::vector<int64_t> shape(static_cast<size_t>(t.dim()), 1);
  shape[0] = n;
  shape[shape.size() - 2] = kh;
  std::vector<int64_t> sizes = t.sizes().vec();
  sizes[sizes.size() - 2] = kh;
  const at::Tensor r = t.gather(t.dim() - 2, rows.view(shape).expand(sizes));
  shape[shape.size() - 2] = 1;
  shape.back() = kw;
  sizes.back() = kw;
  return r.gather(t.dim() - 1, cols.view(shape).expand(sizes));
}
}  // namespace

int64_t colout_kept(int64_t size, double p) {
  check_option_as<ColOutOptions>("colout_kept", "p_row", p);
  if (size < 1) throw InputError(fmt::format("colout_kept: the size is {}; expected at least 1", size));
  return std::max<int64_t>(1, static_cast<int64_t>((1.0 - p) * static_cast<double>(size)));
}

ColOutIndices colout_indices(int64_t height, int64_t width, double p_row, double p_col, Rng& rng) {
  check_option_as<ColOutOptions>("colout_indices", "p_row", p_row);
  check_option_as<ColOutOptions>("colout_indices", "p_col", p_col);
  if (height < 1 || width < 1) {
    throw InputError(fmt::format("colout_indices: the image is {}x{}; expected at least 1x1", height, width));
  }
  ColOutIndices out;
  auto draw = [&](int64_t size, double p) {
    std::vector<int64_t> perm = rng.permutation(size);
    perm.resize(static_cast<size_t>(colout_kept(size, p)));
    std::sort(perm.begin(), perm.end());
    return perm;
  };
  out.rows = draw(height, p_row);
  out.cols = draw(width, p_col);
  return out;
}

at::Tensor colout_batch(const at::Tensor& input, const ColOutIndices& kept) {
  check_images("colout_batch", input, 2);
  check_kept("colout_batch", kept, input.size(-2), input.size(-1));
  return input.index_select(input.dim() - 2, index_tensor(kept.rows, input.device()))
      .index_select(input.dim() - 1, index_tensor(kept.cols, input.device()));
}

at::Tensor colout_samples(const at::Tensor& input, const std::vector<ColOutIndices>& kept) {
  check_images("colout_samples", input, 3);
  const int64_t n = input.size(0);
  if (static_cast<int64_t>(kept.size()) != n) {
    throw InputError(fmt::format("colout_samples.kept: {} entries for a batch of {} examples; expected one per example",
                                 kept.size(), n));
  }
  std::vector<int64_t> rows, cols;
  for (size_t i = 0; i < kept.size(); ++i) {
    check_kept("colout_samples", kept[i], input.size(-2), input.size(-1));
    if (kept[i].rows.size() != kept[0].rows.size() || kept[i].cols.size() != kept[0].cols.size()) {
      throw InputError(fmt::format("colout_samples.kept: example {} keeps {}x{} pixels, example 0 {}x{}; expected the "
                                   "same counts for every example", i, kept[i].rows.size(), kept[i].cols.size(),
                                   kept[0].rows.size(), kept[0].cols.size()));
    }
    rows.insert(rows.end(), kept[i].rows.begin(), kept[i].rows.end());
    cols.insert(cols.end(), kept[i].cols.begin(), kept[i].cols.end());
  }
  if (n == 0) return input;
  const at::Tensor r = index_tensor(rows, input.device()).view({n, -1});
  const at::Tensor c = index_tensor(cols, input.device()).view({n, -1});
  return gather_per_example(input, r, c);
}

bool colout_resizes_target(const at::Tensor& input, const at::Tensor& target, const std::string& resize_target) {
  check_option_as<ColOutOptions>("colout", "resize_target", resize_target);
  if (resize_target == "false") return false;
  const bool same_size = input.defined() && target.defined() && input.dim() >= 3 && target.dim() >= 2 &&
                         target.size(0) == input.size(0) && target.size(-2) == input.size(-2) &&
                         target.size(-1) == input.size(-1);
  if (resize_target == "true" && !same_size) {
    throw InputError("colout.resize_target: true needs targets of the images' size [N, ..., H, W] (" +
                     (input.defined() ? c10::str(input.sizes()) : std::string("no input")) + "); the targets are " +
                     (target.defined() ? c10::str(target.sizes()) : std::string("undefined")));
  }
  return same_size;
}

ColOutBatch colout_batch(const at::Tensor& input, const at::Tensor& target, double p_row, double p_col, Rng& rng,
                         bool batch, const std::string& resize_target) {
  check_images("colout_batch", input, batch ? 2 : 3);
  const bool resize = colout_resizes_target(input, target, resize_target);
  const int64_t height = input.size(-2), width = input.size(-1);
  ColOutBatch out;
  out.target = target;
  if (batch) {
    out.kept.push_back(colout_indices(height, width, p_row, p_col, rng));
    out.input = colout_batch(input, out.kept[0]);
    if (resize) out.target = colout_batch(target, out.kept[0]);
  } else {
    for (int64_t i = 0; i < input.size(0); ++i) out.kept.push_back(colout_indices(height, width, p_row, p_col, rng));
    out.input = colout_samples(input, out.kept);
    if (resize) out.target = colout_samples(target, out.kept);
  }
  return out;
}

ColOutTransform::ColOutTransform(ColOutOptions options) : options_(std::move(options)) {
  validate_options(options_, "colout");
}

void ColOutTransform::apply(Batch& batch, Rng& rng) const {
  const at::Tensor target = batch.has(Batch::kTarget) ? batch.target() : at::Tensor();
  ColOutBatch out = colout_batch(batch.input(), target, options_.p_row(), options_.p_col(), rng, options_.batch(),
                                 options_.resize_target());
  batch.set(Batch::kInput, std::move(out.input));
  if (target.defined()) batch.set(Batch::kTarget, std::move(out.target));
}

ColOut::ColOut(ColOutOptions options) : options_(std::move(options)) {
  validate_options(options_, "colout");
  spec_.name = "colout";
  std::vector<Resource> writes{Resource::Inputs, Resource::Resolution};
  if (options_.resize_target() != "false") writes.push_back(Resource::Targets);
  spec_.accesses = {{Event::AfterDataloader, {Resource::Inputs, Resource::Targets}, writes}};
  spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::BatchRows), Event::AfterDataloader,
                         "it drops pixels of the examples that train (selective backprop scores them at the size the "
                         "data gives)"});
  spec_.order.push_back({OrderRule::Relation::Before, Selector::writers_of(Resource::Resolution), Event::AfterDataloader,
                         "it drops rows and columns of the image the data gives; progressive resizing then scales what "
                         "is left to its schedule, pinned to its size increment"});
}

void ColOut::check(const State& state) const {
  const Batch example = example_image_batch(state, "colout drops rows and columns of");
  const at::Tensor& x = example.input();
  if (options_.resize_target() == "true") {
    colout_resizes_target(x, example.has(Batch::kTarget) ? example.target() : at::Tensor(), "true");
  }
}

void ColOut::apply(Event, State& state, Logger&) {
  Rng rng(state.seed, {kAlgorithmStream, kColOutStream, static_cast<uint64_t>(state.timestamp.batch)});
  const at::Tensor target = state.batch.has(Batch::kTarget) ? state.batch.target() : at::Tensor();
  ColOutBatch out = colout_batch(state.batch.input(), target, options_.p_row(), options_.p_col(), rng,
                                 options_.batch(), options_.resize_target());
  state.batch.set(Batch::kInput, std::move(out.input));
  if (target.defined()) state.batch.set(Batch::kTarget, std::move(out.target));
  last_kept_ = std::move(out.kept);
}

}  // namespace tessera::algorithms
