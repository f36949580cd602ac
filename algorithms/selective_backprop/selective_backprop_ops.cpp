// Selective-backprop ops: the rank-weighted draw on the device and the gather of the kept rows of every batch
// part in one launch (kernels in selective_backprop_kernels.cu), registered with the torch dispatcher. The CPU
// implementations are the reference code (select_by_loss in selective_backprop.cpp, index_select).
#include "selective_backprop_ops.h"

#include <cmath>
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

std::vector<at::Tensor> gather_rows_cpu(at::TensorList tensors, const at::Tensor& index) {
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
  const at::Tensor order = flat.to(at::kDouble).argsort();  // ascending loss
  at::Tensor keys = at::empty({n}, flat.options().dtype(at::kDouble));
  C10_CUDA_CHECK(cuda::launch_selection_keys(order.data_ptr<int64_t>(), n, exponent, weight_sum,
                                             static_cast<uint64_t>(key), static_cast<uint64_t>(counter),
                                             keys.data_ptr<double>(), ops::current_stream()));
  const at::Tensor chosen = std::get<1>(keys.topk(k));
  return std::get<0>(chosen.sort());
}

std::vector<at::Tensor> gather_rows_cuda(at::TensorList tensors, const at::Tensor& index_in) {
  const char* what = "tessera::gather_rows";
  TORCH_CHECK(index_in.dim() == 1, what, ": expected a 1-D index, got ", index_in.sizes());
  // the tensors' device (the dispatcher picked CUDA because one of them, or the index, is there)
  const c10::Device device = tensors.empty() ? index_in.device() : tensors[0].device();
  TORCH_CHECK(device.is_cuda(), what, ": the tensors are on ", device, " but the index on ", index_in.device());
  c10::cuda::CUDAGuard guard(device);
  const at::Tensor index = index_in.to(device, at::kLong).contiguous();
  const int64_t kept = index.numel();
  std::vector<at::Tensor> out, sources;
  std::vector<cuda::RowGather> table;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.device() == device, what, ": tensor ", i, " is on ", t.device(), ", tensor 0 on ", device);
    TORCH_CHECK(t.dim() >= 1, what, ": tensor ", i, " has no row dimension");
    at::Tensor src = t.contiguous();
    std::vector<int64_t> sizes = src.sizes().vec();
    sizes[0] = kept;
    at::Tensor dst = at::empty(sizes, src.options());
    const int64_t row_bytes = src.size(0) == 0 ? 0 : src.numel() / src.size(0) * static_cast<int64_t>(src.element_size());
    if (row_bytes > 0) table.push_back({src.data_ptr(), dst.data_ptr(), src.size(0), row_bytes});
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
