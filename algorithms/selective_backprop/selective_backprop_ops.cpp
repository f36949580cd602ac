// Selective-backprop ops: the rank-weighted draw on the device and the gather of the kept rows of every batch
// part in one launch (kernels in selective_backprop_kernels.cu), registered with the torch dispatcher. The CPU
// implementations are the reference code (select_by_loss in selective_backprop.cpp, index_select).
#include "selective_backprop_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include <ATen/ATen.h>
#include <torch/library.h>

#include <tessera/ops/kernels.h>
#include <tessera/rng.h>

#include "selective_backprop.h"
#include "src/ops/op_utils.h"

#ifdef TESSERA_CUDA
#include "selective_backprop_kernels.cuh"
#endif

namespace tessera::algorithms {
namespace {

using ops::typed_op;

void check_selection(const at::Tensor& losses, double keep, const char* what) {
  TORCH_CHECK(keep > 0.0 && keep <= 1.0, what, ": keep must be in (0, 1], got ", keep);
  TORCH_CHECK(at::isFloatingType(losses.scalar_type()), what, ": expected floating-point losses, got ",
              losses.scalar_type());
}

at::Tensor select_by_loss_cpu(const at::Tensor& losses, double keep, int64_t key, int64_t counter) {
  check_selection(losses, keep, "tessera::select_by_loss");
  Rng rng;
  rng.set_state(static_cast<uint64_t>(key), static_cast<uint64_t>(counter));
  return select_by_loss(losses, keep, rng);
}

/// The checks both gather kernels make before touching memory: a 1-D integer index, tensors with a row dimension,
/// and no index into a tensor without rows (the CUDA kernel checks each index against the row count on the device).
void check_gather(at::TensorList tensors, const at::Tensor& index, const char* what) {
  TORCH_CHECK(index.dim() == 1, what, ": expected a 1-D index, got ", index.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong || index.scalar_type() == at::kInt, what,
              ": expected an int64 or int32 index, got ", index.scalar_type());
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].dim() >= 1, what, ": tensor ", i, " has no row dimension");
    TORCH_CHECK_INDEX(tensors[i].size(0) > 0 || index.numel() == 0, what, ": tensor ", i,
                      " has no rows, so none of the ", index.numel(), " indices is in range");
  }
}

std::vector<at::Tensor> gather_rows_cpu(at::TensorList tensors, const at::Tensor& index) {
  check_gather(tensors, index, "tessera::gather_rows");
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const at::Tensor& t : tensors) out.push_back(t.index_select(0, index.to(t.device())));
  return out;
}

#ifdef TESSERA_CUDA
at::Tensor select_by_loss_cuda(const at::Tensor& losses, double keep, int64_t key, int64_t counter) {
  const char* what = "tessera::select_by_loss";
  check_selection(losses, keep, what);
  c10::cuda::CUDAGuard guard(losses.device());
  const at::Tensor flat = losses.detach().flatten();
  const int64_t n = flat.numel();
  const int64_t k = static_cast<int64_t>(std::floor(keep * static_cast<double>(n)));
  const double exponent = 1.0 / keep - 1.0;
  double weight_sum = 0.0;  // Σ_r ((r + 0.5)/n)^exponent: a function of n and keep only, summed on the host
  for (int64_t r = 0; r < n; ++r) weight_sum += std::pow((static_cast<double>(r) + 0.5) / static_cast<double>(n), exponent);
  // ascending loss, tied losses in index order like the CPU path (selection_weights)
  const at::Tensor order = flat.to(at::kDouble).argsort(/*stable=*/true, 0, /*descending=*/false);
  at::Tensor keys = at::empty({n}, flat.options().dtype(at::kDouble));
  C10_CUDA_CHECK(cuda::launch_selection_keys(order.data_ptr<int64_t>(), n, exponent, weight_sum,
                                             static_cast<uint64_t>(key), static_cast<uint64_t>(counter),
                                             keys.data_ptr<double>(), ops::current_stream()));
  const at::Tensor chosen = std::get<1>(keys.topk(k));
  return std::get<0>(chosen.sort());
}

std::vector<at::Tensor> gather_rows_cuda(at::TensorList tensors, const at::Tensor& index_in) {
  const char* what = "tessera::gather_rows";
  check_gather(tensors, index_in, what);
  // the tensors' device (the dispatcher picked CUDA because one of them, or the index, is there)
  const c10::Device device = tensors.empty() ? index_in.device() : tensors[0].device();
  TORCH_CHECK(device.is_cuda(), what, ": the tensors are on ", device, " but the index on ", index_in.device());
  c10::cuda::CUDAGuard guard(device);
  const int64_t kept = index_in.numel();
  if (index_in.device().is_cpu() && kept > 0) {  // a host index is checked on the host, where it costs no sync
    const at::Tensor i = index_in.to(at::kLong);
    int64_t rows = std::numeric_limits<int64_t>::max();
    for (const at::Tensor& t : tensors) rows = std::min(rows, t.size(0));
    TORCH_CHECK_INDEX(i.min().item<int64_t>() >= 0 && i.max().item<int64_t>() < rows, what, ": an index is outside [0, ",
                      rows, ")");
  }
  // A device index is checked by the kernel (a device-side assertion, like index_select's): no sync here.
  const at::Tensor index = index_in.to(device, at::kLong).contiguous();
  std::vector<at::Tensor> out, sources;
  std::vector<cuda::RowGather> table;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.device() == device, what, ": tensor ", i, " is on ", t.device(), ", tensor 0 on ", device);
    at::Tensor src = t.contiguous();
    std::vector<int64_t> sizes = src.sizes().vec();
    sizes[0] = kept;
    at::Tensor dst = at::empty(sizes, src.options());
    const int64_t row_bytes = src.size(0) == 0 ? 0 : src.numel() / src.size(0) * static_cast<int64_t>(src.element_size());
    // every tensor with rows takes part, even with empty rows, so that the kernel checks the indices against it
    if (src.size(0) > 0) table.push_back({src.data_ptr(), dst.data_ptr(), src.size(0), row_bytes});
    sources.push_back(std::move(src));  // alive until the launch is queued
    out.push_back(std::move(dst));
  }
  C10_CUDA_CHECK(cuda::launch_gather_rows(table.data(), static_cast<int>(table.size()), index.data_ptr<int64_t>(),
                                          kept, ops::current_stream()));
  return out;
}
#endif

}  // namespace

at::Tensor fused_select_by_loss(const at::Tensor& losses, double keep, Rng& rng) {
  using Sig = at::Tensor(const at::Tensor&, double, int64_t, int64_t);
  static const auto op = typed_op<Sig>("tessera::select_by_loss");
  at::Tensor index = op.call(losses, keep, static_cast<int64_t>(rng.key()), static_cast<int64_t>(rng.counter()));
  rng.set_state(rng.key(), rng.counter() + static_cast<uint64_t>(losses.numel()));
  return index;
}

std::vector<at::Tensor> gather_rows(at::TensorList tensors, const at::Tensor& index) {
  using Sig = std::vector<at::Tensor>(at::TensorList, const at::Tensor&);
  static const auto op = typed_op<Sig>("tessera::gather_rows");
  return op.call(tensors, index);
}

Batch select_batch_rows(const Batch& batch, const at::Tensor& index) {
  bool one_cuda_device = ops::built_with_cuda_kernels() && index.is_cuda() && !batch.empty();
  for (const auto& part : batch.parts()) one_cuda_device = one_cuda_device && part.second.device() == index.device();
  if (!one_cuda_device) return batch.select(index);
  batch.validate();
  std::vector<at::Tensor> tensors;
  for (const auto& part : batch.parts()) tensors.push_back(part.second);
  std::vector<at::Tensor> rows = gather_rows(tensors, index);
  Batch out;
  for (size_t i = 0; i < rows.size(); ++i) out.set(batch.parts()[i].first, std::move(rows[i]));
  return out;
}

}  // namespace tessera::algorithms

TORCH_LIBRARY_FRAGMENT(tessera, m) {
  m.def("select_by_loss(Tensor losses, float keep, int rng_key, int rng_counter) -> Tensor");
  m.def("gather_rows(Tensor[] tensors, Tensor index) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(tessera, CPU, m) {
  m.impl("select_by_loss", &tessera::algorithms::select_by_loss_cpu);
  m.impl("gather_rows", &tessera::algorithms::gather_rows_cpu);
}

#ifdef TESSERA_CUDA
TORCH_LIBRARY_IMPL(tessera, CUDA, m) {
  m.impl("select_by_loss", &tessera::algorithms::select_by_loss_cuda);
  m.impl("gather_rows", &tessera::algorithms::gather_rows_cuda);
}
#endif
