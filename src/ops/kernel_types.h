#pragma once
// Plain C++ types shared by the CUDA launchers (*.cuh, compiled by nvcc without ATen) and the C++ side that
// registers the ops (*.cpp). Private to the library; no CUDA and no torch here.
#include <cstdint>

namespace tessera::ops {

/// Element type of a kernel's floating-point tensors. Accumulation is float for the 16-bit types and float32,
/// double for float64.
enum class KernelDType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

}  // namespace tessera::ops
