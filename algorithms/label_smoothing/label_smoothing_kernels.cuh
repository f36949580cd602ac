#pragma once
// Launchers of the fused label-smoothing cross-entropy (plain CUDA C++, no ATen; label_smoothing_kernels.cu).
//
// For logits x [N, C] (dense rows) and labels y [N] (int64), with α the smoothing:
//   loss_i = lse_i − (1 − α)·x[i, y_i] − α·mean_c x[i, c],   lse_i = log Σ_c exp x[i, c]
// which is the cross-entropy against (1 − α)·onehot(y_i) + α/C, and
//   ∂loss_i/∂x[i, c] = softmax(x_i)_c − α/C − (1 − α)·[c = y_i].
// Accumulation and the per-row outputs (loss, lse) are float (double for double logits).
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../../src/ops/kernel_types.h"

namespace tessera::algorithms::cuda {

/// per_example[i] = loss_i and lse[i] = lse_i (float, or double for Float64 logits). A label outside [0, C)
/// gives a NaN loss (checking it on the host would need a synchronisation).
cudaError_t launch_smoothed_ce_forward(const void* logits, const int64_t* labels, void* per_example, void* lse,
                                       int64_t N, int64_t C, double alpha, ops::KernelDType dtype,
                                       cudaStream_t stream);

/// grad_logits[i, c] = (softmax − α/C − (1 − α)·onehot)·grad[i], grad and lse as the forward's per-row type; rows
/// with an invalid label get a zero gradient.
cudaError_t launch_smoothed_ce_backward(const void* grad_per_example, const void* logits, const int64_t* labels,
                                        const void* lse, void* grad_logits, int64_t N, int64_t C, double alpha,
                                        ops::KernelDType dtype, cudaStream_t stream);

}  // namespace tessera::algorithms::cuda
