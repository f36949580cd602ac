// The `tessera` op namespace of the torch dispatcher. The ops themselves are defined next to their
// algorithms (algorithms/<name>/<name>_ops.cpp) and in src/ops/multi_tensor.cpp, as library fragments.
#include <tessera/ops/kernels.h>

#include <ATen/Context.h>
#include <torch/library.h>

namespace tessera::ops {

bool built_with_cuda_kernels() noexcept {
#ifdef TESSERA_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_kernels_available() { return built_with_cuda_kernels() && at::hasCUDA(); }

}  // namespace tessera::ops

TORCH_LIBRARY(tessera, m) {
  // Every op is defined in a TORCH_LIBRARY_FRAGMENT beside its implementation; this block owns the namespace.
}
