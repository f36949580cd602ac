#pragma once
// The fused blur-pool ops (private to the library, its tests and benchmarks; users call blur2d() and the
// BlurMaxPool2d module of blurpool.h, or torch.ops.tessera.* from Python).
//
// Registered with the torch dispatcher (blurpool_ops.cpp):
//   tessera::blur2d(Tensor x, int[2] stride) -> Tensor
//   tessera::blur2d_backward(Tensor grad_output, int[2] input_size, int[2] stride) -> Tensor
//   tessera::blur_maxpool2d(Tensor x, int[2] kernel_size, int[2] stride, int[2] padding=0, int[2] dilation=1)
//   plus the device kernels _blur2d, _blur2d_backward, _blur_maxpool2d, _blur_maxpool2d_backward (CPU, CUDA).
#include <array>
#include <cstdint>

#include <ATen/Tensor.h>
#include <torch/nn/options/pooling.h>

namespace tessera::algorithms {

/// The fused blur of x [N, C, H, W] (any H, W >= 1: no pass-through), differentiable twice.
at::Tensor fused_blur2d(const at::Tensor& x, std::array<int64_t, 2> stride);

/// The stock formulation: a depthwise conv2d with blur_filter, zero padding 1.
at::Tensor reference_blur2d(const at::Tensor& x, std::array<int64_t, 2> stride);

/// The fused max-pool (stride 1, the given kernel, padding, dilation) then blur with `stride`, differentiable
/// once. The kernel has at most 256 elements; padding <= kernel/2 (like torch's max_pool2d).
at::Tensor fused_blur_maxpool2d(const at::Tensor& x, std::array<int64_t, 2> kernel_size, std::array<int64_t, 2> stride,
                                std::array<int64_t, 2> padding, std::array<int64_t, 2> dilation);

/// The stock formulation: at::max_pool2d with stride 1, then reference_blur2d.
at::Tensor reference_blur_maxpool2d(const at::Tensor& x, std::array<int64_t, 2> kernel_size,
                                    std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
                                    std::array<int64_t, 2> dilation);

/// BlurMaxPool2d's forward: the fused op when it applies (4-D floating input, window <= 256 elements, padding <=
/// kernel/2, pooled map at least 3x3), else max_pool2d (stride 1, the pool's options) then blur2d.
at::Tensor blur_maxpool2d_forward(const at::Tensor& x, const torch::nn::MaxPool2dOptions& pool,
                                  std::array<int64_t, 2> stride);

}  // namespace tessera::algorithms
