#pragma once
// The selective-backprop ops (private to the library, its tests and benchmarks; users call select_by_loss() of
// selective_backprop.h, or torch.ops.tessera.* from Python).
//
// Registered with the torch dispatcher (selective_backprop_ops.cpp):
//   tessera::select_by_loss(Tensor losses, float keep, int rng_key, int rng_counter) -> Tensor
//       CPU: the reference code of selective_backprop.cpp; CUDA: keys on the device, top-k, sort.
//   tessera::gather_rows(Tensor[] tensors, Tensor index) -> Tensor[]
//       CPU: index_select per tensor; CUDA: one launch for all tensors.
#include <vector>

#include <ATen/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <tessera/batch.h>
#include <tessera/rng.h>

namespace tessera::algorithms {

/// The op tessera::select_by_loss driven by `rng`, which is advanced by losses.numel() draws like the CPU path
/// of select_by_loss (on CUDA the same uniforms are drawn on the device).
at::Tensor fused_select_by_loss(const at::Tensor& losses, double keep, Rng& rng);

/// The rows `index` of every tensor (each [rows, ...]); on CUDA in one launch when all are on index's device.
std::vector<at::Tensor> gather_rows(at::TensorList tensors, const at::Tensor& index);

/// batch.select(index), with every part gathered by one gather_rows call when they are all on one CUDA device
/// and the library has the CUDA kernels.
Batch select_batch_rows(const Batch& batch, const at::Tensor& index);

}  // namespace tessera::algorithms
