#include <tessera/amp.h>

#include <tessera/error.h>

#include <utility>

#include "amp_compat.h"

#if !TESSERA_TORCH_AT_LEAST(2, 0)
#include <ATen/ops/group_norm_ops.h>
#include <ATen/ops/layer_norm_ops.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <memory>
#endif

#ifdef TESSERA_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tessera {

Precision parse_precision(const std::string& name, const std::string& where) {
  if (name == "fp32") return Precision::Fp32;
  if (name == "amp_bf16") return Precision::AmpBf16;
  if (name == "amp_fp16") return Precision::AmpFp16;
  throw InputError(where + ": \"" + name + "\" is not a precision; expected one of: fp32, amp_bf16, amp_fp16");
}

c10::ScalarType autocast_dtype(Precision p) {
  switch (p) {
    case Precision::AmpBf16: return c10::ScalarType::BFloat16;
    case Precision::AmpFp16: return c10::ScalarType::Half;
    case Precision::Fp32: break;
  }
  return c10::ScalarType::Float;
}

std::string precision_problem_on_capability(Precision p, int major, int minor, const std::string& device_name) {
  if (p == Precision::AmpBf16 && major < 8) {
    return "amp_bf16 needs a GPU of compute capability 8.0 or newer (bfloat16 tensor cores, Ampere and later); " +
           device_name + " has " + std::to_string(major) + "." + std::to_string(minor) +
           ". Use precision amp_fp16 there (float16 autocast with a GradScaler), or fp32";
  }
  return "";
}

namespace {

/// The compute capability of a CUDA device as {major, minor}, or {-1, -1} when it cannot be asked (a library built
/// without its CUDA kernels, or a runtime error: then the device's own errors surface at its first use).
std::pair<int, int> cuda_capability([[maybe_unused]] const c10::Device& device) {
#ifdef TESSERA_CUDA
  int index = device.has_index() ? device.index() : 0;
  if (!device.has_index() && cudaGetDevice(&index) != cudaSuccess) index = 0;
  int major = -1, minor = -1;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index) == cudaSuccess &&
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index) == cudaSuccess) {
    return {major, minor};
  }
  (void)cudaGetLastError();  // clear the sticky error of a failed query
#endif
  return {-1, -1};
}

#if !TESSERA_TORCH_AT_LEAST(2, 0)
// LibTorch 1.13's CPU layer_norm and group_norm refuse an input of lower precision than their weights ("expected
// scalar type BFloat16 but found Float"), and that is what a Linear or a Conv2d under bfloat16 autocast hands a
// LayerNorm or GroupNorm with float32 weights: a user's model with Conv2d -> GroupNorm could not run amp_bf16 on the
// CPU at all. PyTorch 2.x's CPU kernels take the mix (they compute in float32 and return the input's dtype); these
// AutocastCPU kernels do the same on 1.13: the input cast up to the weights' dtype, the result cast back. Any other
// combination goes to torch's kernel unchanged.

/// The dtype to compute a normalisation of `input` in: its weight's (else bias's) when that is wider than a
/// bfloat16 or float16 input, otherwise the input's own.
c10::ScalarType norm_compute_dtype(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                                   const c10::optional<at::Tensor>& bias) {
  const c10::ScalarType in = input.scalar_type();
  if (in != at::kBFloat16 && in != at::kHalf) return in;
  for (const auto* affine : {&weight, &bias}) {
    if (affine->has_value() && (*affine)->defined()) {
      const c10::ScalarType dtype = (*affine)->scalar_type();
      return dtype == at::kFloat || dtype == at::kDouble ? dtype : in;
    }
  }
  return in;
}

/// `norm` (torch's layer_norm or group_norm, `shape` its normalized shape or group count) in the dtype
/// norm_compute_dtype picks, the result in the input's dtype; below autocast.
template <auto norm, class Shape>
at::Tensor norm_of_mixed_dtypes(const at::Tensor& input, Shape shape, const c10::optional<at::Tensor>& weight,
                                const c10::optional<at::Tensor>& bias, double eps, bool cudnn_enabled) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  const c10::ScalarType dtype = norm_compute_dtype(input, weight, bias);
  if (dtype == input.scalar_type()) return norm(input, shape, weight, bias, eps, cudnn_enabled);
  return norm(input.to(dtype), shape, weight, bias, eps, cudnn_enabled).to(input.scalar_type());
}

/// Registers the kernels (layer_norm, group_norm), once per process, the first time CPU autocast is opened by Tessera.
void take_mixed_dtype_norms_on_cpu() {
  static const auto library = [] {
    auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "aten", c10::DispatchKey::AutocastCPU,
                                                __FILE__, __LINE__);
    lib->impl("layer_norm", TORCH_FN((norm_of_mixed_dtypes<&at::_ops::layer_norm::call, at::IntArrayRef>)));
    lib->impl("group_norm", TORCH_FN((norm_of_mixed_dtypes<&at::_ops::group_norm::call, int64_t>)));
    return lib;
  }();
  (void)library;
}
#endif

}  // namespace

std::string precision_problem(Precision p, const c10::Device& device) {
  if (p == Precision::AmpFp16 && !device.is_cuda()) {
    return "amp_fp16 cannot run on " + device.str() +
           ": autocast on the CPU runs bfloat16 only (LibTorch 1.13 refuses float16 there, and CPUs have no fast "
           "float16 matrix products). Use precision amp_bf16 on the CPU, or train on CUDA (device: cuda) for "
           "amp_fp16";
  }
  if (p == Precision::AmpBf16 && device.is_cuda()) {
    const auto [major, minor] = cuda_capability(device);
    if (major >= 0) return precision_problem_on_capability(p, major, minor, device.str());
  }
  if (p != Precision::Fp32 && !device.is_cpu() && !device.is_cuda()) {
    return std::string(precision_name(p)) + " is supported on cpu and cuda, not on " + device.str() +
           "; use precision fp32 there";
  }
  return "";
}

void check_precision_supported(Precision p, const c10::Device& device) {
  const std::string problem = precision_problem(p, device);
  if (!problem.empty()) throw InputError("precision: " + problem);
}

AutocastScope::AutocastScope(Precision p, const c10::Device& device) {
  if (p == Precision::Fp32) return;
  active_ = true;
  device_type_ = device.type();
#if !TESSERA_TORCH_AT_LEAST(2, 0)
  if (device_type_ == c10::DeviceType::CPU) take_mixed_dtype_norms_on_cpu();
#endif
  was_enabled_ = compat::autocast_enabled(device_type_);
  previous_dtype_ = compat::autocast_dtype(device_type_);
  compat::set_autocast_dtype(device_type_, autocast_dtype(p));
  compat::set_autocast_enabled(device_type_, true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::set_autocast_enabled(device_type_, was_enabled_);
  compat::set_autocast_dtype(device_type_, previous_dtype_);
}

}  // namespace tessera
