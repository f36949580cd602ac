#pragma once
// C++-side helpers for the files that register the fused ops with the dispatcher (private to the library).
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "kernel_types.h"

#ifdef TESSERA_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace tessera::ops {

/// The typed handle of a registered op ("tessera::blur2d"), looked up once per call site.
template <class Sig>
c10::TypedOperatorHandle<Sig> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Sig>();
}

/// The backend dispatch key of a tensor's data (CPU, CUDA, Meta, SparseCPU, …): its key set without the autograd,
/// ADInplaceOrView, autocast and Python keys.
inline c10::DispatchKey backend_key(const at::Tensor& t) { return c10::legacyExtractDispatchKey(t.key_set()); }

/// Whether the op has a kernel that runs on t's backend: one registered for that key, or a composite kernel that
/// serves every backend (torch 2.x registers `_foreach_*` on CPU that way). The fused paths call an op only then and
/// take the stock formula otherwise (a CUDA tensor in a library built without TESSERA_CUDA, Meta, XLA, sparse, …).
/// Ask about the op that holds the per-device kernels ("tessera::_blur2d"), not its CompositeImplicitAutograd front
/// ("tessera::blur2d"), which serves every backend by calling the device op. (Not the computed dispatch table: in
/// torch 2.x it holds a fallback for Meta that makes every op look runnable there.) Lookups in the op's kernel
/// table: no lock, no copy.
inline bool has_kernel(const c10::OperatorHandle& op, const at::Tensor& t) {
  return t.defined() && (op.hasKernelForDispatchKey(backend_key(t)) ||
                         op.hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd) ||
                         op.hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd));
}
/// The same by name ("tessera::_blur2d", or an overload: has_kernel("aten::_foreach_mul_", t, "Scalar")).
inline bool has_kernel(const char* name, const at::Tensor& t, const char* overload = "") {
  return has_kernel(c10::Dispatcher::singleton().findSchemaOrThrow(name, overload), t);
}

/// The kernels' element type for a torch dtype; `what` names the op in the error.
inline KernelDType kernel_dtype(at::ScalarType t, const char* what) {
  switch (t) {
    case at::kFloat: return KernelDType::Float32;
    case at::kDouble: return KernelDType::Float64;
    case at::kHalf: return KernelDType::Float16;
    case at::kBFloat16: return KernelDType::BFloat16;
    default: TORCH_CHECK(false, what, ": expected a float32, float64, float16 or bfloat16 tensor, got ", t);
  }
  return KernelDType::Float32;
}

/// Fails unless t is a floating 4-D tensor [N, C, H, W].
inline void check_image(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.dim() == 4, what, ": expected an input [N, C, H, W], got ", t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), what, ": expected a floating-point input, got ", t.scalar_type());
}

/// Whether a 4-D tensor should be processed channels-last (NHWC in memory) rather than NCHW.
inline bool prefers_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}
inline at::MemoryFormat format_of(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

/// Two values from an int[2] argument, each >= `min`.
inline std::array<int64_t, 2> pair_arg(at::IntArrayRef v, const char* what, const char* name, int64_t min) {
  TORCH_CHECK(v.size() == 2, what, ": ", name, " must have 2 values (rows, columns), got ", v);
  TORCH_CHECK(v[0] >= min && v[1] >= min, what, ": ", name, " must be >= ", min, ", got ", v);
  return {v[0], v[1]};
}

#ifdef TESSERA_CUDA
/// The current torch stream of the current device (set a CUDAGuard for the tensor's device first).
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
#endif

}  // namespace tessera::ops
