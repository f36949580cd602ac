#include <tessera/state.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>

namespace tessera {

at::Tensor BatchPlace::parts_of_rows(int64_t units, int64_t parts, const at::TensorOptions& options) const {
  const at::TensorOptions longs = options.dtype(at::kLong);
  if (units < 0 || parts < 1) {
    throw InputError(fmt::format("batch place: cannot share {} rows into {} parts", units, parts));
  }
  if (!is_set()) return at::arange(units, longs).mul_(parts).div_(std::max<int64_t>(units, 1), "floor");
  if (units % rows != 0) {
    throw InputError(fmt::format("{} rows for a batch of {} examples; expected the same number of rows for every "
                                 "example, the examples first ([N, ...] or [N·S, ...])",
                                 units, rows));
  }
  const int64_t per = units / rows;
  // Row u's place in the global batch: (share_begin + (share_end - share_begin) · (first · per + u) / (rank_rows ·
  // per)) / global_rows, in integers over one denominator.
  const int64_t share = share_end - share_begin, denominator = global_rows * rank_rows * per;
  return at::arange(units, longs)
      .add_(first * per)
      .mul_(share)
      .add_(share_begin * rank_rows * per)
      .mul_(parts)
      .div_(denominator, "floor")
      .clamp_max_(parts - 1);
}

}  // namespace tessera
