#pragma once
// Shared by the tests of the algorithms that read and write gradients (gradient clipping, SAM).
#include <ATen/ATen.h>

namespace tessera::testing {

/// A leaf parameter holding `value` whose gradient is `grad` (both copied).
inline at::Tensor param_with_grad(const at::Tensor& value, const at::Tensor& grad) {
  at::Tensor p = value.clone().set_requires_grad(true);
  p.mutable_grad() = grad.clone();
  return p;
}

}  // namespace tessera::testing
