#pragma once
/// Multi-tensor weight averaging: avg ← s·avg + (1 − s)·w over every parameter and buffer in few passes.
///
/// The op behind EMA/SWA-style averaging (torch.ops.tessera.ema_update_ from Python). On the CPU it runs one
/// at::parallel_for over a flattened list of chunks of all tensors; on CUDA it updates up to 48 tensors per
/// launch (see docs/kernels.md). Floating tensors are averaged with accumulation in float (double for
/// float64); integer and bool tensors (e.g. batch-norm's num_batches_tracked) are copied from the source.
///
///     tessera::ops::ema_update_(ema_model, model, /*smoothing=*/0.999);
///     tessera::ops::ema_update_(averages, sources, 0.999);   // lists of tensors
#include <ATen/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <torch/nn/module.h>

namespace tessera::ops {

/// averages[i] ← smoothing·averages[i] + (1 − smoothing)·sources[i], in place, for every i, without autograd.
/// The lists have the same length; each pair has the same shape, dtype and device; smoothing is in [0, 1].
/// Tensors may live on several devices (one launch group per device). Throws tessera::InputError otherwise.
void ema_update_(at::TensorList averages, at::TensorList sources, double smoothing);

/// The same over the parameters and then the buffers of two modules with the same structure (matched by
/// name; an InputError names the first difference).
void ema_update_(torch::nn::Module& average, const torch::nn::Module& source, double smoothing);

}  // namespace tessera::ops
