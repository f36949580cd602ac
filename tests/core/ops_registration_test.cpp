// Every op of the `tessera` namespace is reachable on every device the library was built for: a device op (one
// with a CPU kernel) has a CUDA kernel exactly when the library was built with TESSERA_CUDA, and every other op is
// a composite (autograd wrapper) that dispatches to the device ops.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>

#include <tessera/ops/kernels.h>

namespace tessera::ops {
namespace {

std::vector<c10::OperatorHandle> tessera_ops() {
  std::vector<c10::OperatorHandle> out;
  for (const c10::OperatorName& name : c10::Dispatcher::singleton().getAllOpNames()) {
    if (name.name.rfind("tessera::", 0) != 0) continue;
    auto handle = c10::Dispatcher::singleton().findOp(name);
    if (handle) out.push_back(*handle);
  }
  return out;
}

TEST(OpsRegistration, EveryDeviceOpHasACudaKernelExactlyInACudaBuild) {
  const auto ops = tessera_ops();
  std::set<std::string> device_ops, composite_ops;
  for (const auto& op : ops) {
    const std::string name = op.schema().name();
    if (op.hasKernelForDispatchKey(c10::DispatchKey::CPU)) {
      device_ops.insert(name);
      EXPECT_EQ(op.hasKernelForDispatchKey(c10::DispatchKey::CUDA), built_with_cuda_kernels())
          << name << (built_with_cuda_kernels() ? " has no CUDA kernel in a TESSERA_CUDA build"
                                                : " has a CUDA kernel in a build without TESSERA_CUDA");
    } else {
      composite_ops.insert(name);
      EXPECT_TRUE(op.hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd))
          << name << " has neither a CPU kernel nor a composite one";
      EXPECT_FALSE(op.hasKernelForDispatchKey(c10::DispatchKey::CUDA)) << name;
    }
  }
  // The ops of docs/kernels.md; a new op joins the check by being registered.
  for (const char* name : {"tessera::_blur2d", "tessera::_blur2d_backward", "tessera::_blur_maxpool2d",
                           "tessera::_blur_maxpool2d_backward", "tessera::_smoothed_cross_entropy_forward",
                           "tessera::_smoothed_cross_entropy_backward", "tessera::select_by_loss",
                           "tessera::gather_rows", "tessera::ema_update_"}) {
    EXPECT_EQ(device_ops.count(name), 1u) << name << " is not registered as a device op";
  }
  for (const char* name : {"tessera::blur2d", "tessera::blur2d_backward", "tessera::blur_maxpool2d",
                           "tessera::smoothed_cross_entropy"}) {
    EXPECT_EQ(composite_ops.count(name), 1u) << name << " is not registered as a composite op";
  }
  if (!built_with_cuda_kernels()) EXPECT_FALSE(cuda_kernels_available());
}

}  // namespace
}  // namespace tessera::ops
