#include <tessera/amp.h>

#include <tessera/error.h>

#include "amp_compat.h"

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

std::string precision_problem(Precision p, const c10::Device& device) {
  if (p == Precision::AmpFp16 && !device.is_cuda()) {
    return "amp_fp16 cannot run on " + device.str() +
           ": autocast on the CPU runs bfloat16 only (LibTorch 1.13 refuses float16 there, and CPUs have no fast "
           "float16 matrix products). Use precision amp_bf16 on the CPU, or train on CUDA (device: cuda) for "
           "amp_fp16";
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
