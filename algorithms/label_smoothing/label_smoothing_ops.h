#pragma once
// The fused label-smoothing cross-entropy op (private to the library, its tests and benchmarks; users call
// smoothed_cross_entropy() of label_smoothing.h, or torch.ops.tessera.smoothed_cross_entropy from Python).
//
// Registered with the torch dispatcher (label_smoothing_ops.cpp):
//   tessera::smoothed_cross_entropy(Tensor logits, Tensor labels, float alpha) -> (Tensor loss, Tensor per_example)
//   plus the device kernels _smoothed_cross_entropy_forward/_backward (CPU, CUDA).
#include <utility>

#include <ATen/Tensor.h>

namespace tessera::algorithms {

/// The fused op for logits [N, C] and integer labels [N]: (mean loss, per-example losses [N]), both in the logits'
/// dtype, differentiable once (the gradient of either output, or both, flows to the logits).
std::pair<at::Tensor, at::Tensor> fused_smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                               double alpha);

/// The stock formulation (log_softmax, gather, mean over classes), per example: [N] for logits [N, C], [N, ...]
/// for [N, C, ...].
at::Tensor reference_smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, double alpha);

}  // namespace tessera::algorithms
