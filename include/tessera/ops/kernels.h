#pragma once
/// Whether the fused CUDA kernels are present in this build and usable on this machine.
///
/// The fused ops (blur-pool, label-smoothing cross-entropy, selective-backprop selection and gather, the
/// multi-tensor EMA update) are registered with the torch dispatcher under the `tessera` namespace for the
/// CPU always and for CUDA when the library was built with TESSERA_CUDA (docs/kernels.md).
///
///     if (tessera::ops::cuda_kernels_available()) { /* tensors on CUDA take the fused kernels */ }

namespace tessera::ops {

/// True when the library was compiled with the CUDA kernels (CMake option TESSERA_CUDA).
bool built_with_cuda_kernels() noexcept;

/// True when the library has the CUDA kernels and torch sees at least one CUDA device.
bool cuda_kernels_available();

}  // namespace tessera::ops
