// Multi-tensor EMA/SWA update: the CPU implementation (one parallel_for over chunks of every tensor), the
// CUDA registration (src/ops/multi_tensor_kernels.cu) and the C++ entry points.
#include <tessera/ops/multi_tensor.h>

#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <tessera/error.h>

#include "ops/cpu_simd.h"
#include "ops/op_utils.h"

#ifdef TESSERA_CUDA
#include "ops/multi_tensor_kernels.cuh"
#endif

namespace tessera::ops {
namespace {

constexpr int64_t kCpuChunk = int64_t{1} << 15;  // elements per work item: 128 KiB of float32

template <class T, class A>
TESSERA_CPU_CLONES void ema_span(T* a, const T* w, int64_t n, A s, A t) {
  for (int64_t i = 0; i < n; ++i) a[i] = static_cast<T>(s * static_cast<A>(a[i]) + t * static_cast<A>(w[i]));
}

/// Checks the two lists and returns, per pair, whether it can be updated as flat memory.
void check_lists(at::TensorList averages, at::TensorList sources, double smoothing, const char* what) {
  TORCH_CHECK(smoothing >= 0.0 && smoothing <= 1.0, what, ": smoothing must be in [0, 1], got ", smoothing);
  TORCH_CHECK(averages.size() == sources.size(), what, ": ", averages.size(), " averages but ", sources.size(),
              " sources");
  for (size_t i = 0; i < averages.size(); ++i) {
    const at::Tensor& a = averages[i];
    const at::Tensor& w = sources[i];
    TORCH_CHECK(a.sizes() == w.sizes(), what, ": tensor ", i, " has shape ", a.sizes(), " but its source ", w.sizes());
    TORCH_CHECK(a.scalar_type() == w.scalar_type(), what, ": tensor ", i, " is ", a.scalar_type(), " but its source ",
                w.scalar_type());
    TORCH_CHECK(a.device() == w.device(), what, ": tensor ", i, " is on ", a.device(), " but its source on ",
                w.device());
  }
}

/// Whether a pair can be treated as one flat array (dense, no overlap, the same strides).
bool flat_pair(const at::Tensor& a, const at::Tensor& w) {
  return a.is_non_overlapping_and_dense() && a.strides() == w.strides();
}

/// The stock formula, for tensors that are not flat pairs.
void ema_fallback(const at::Tensor& a, const at::Tensor& w, double s) { a.mul_(s).add_(w, 1.0 - s); }

void ema_update_cpu(at::TensorList averages, at::TensorList sources, double smoothing) {
  check_lists(averages, sources, smoothing, "tessera::ema_update_");
  struct Work {
    void* a;
    const void* w;
    int64_t n;
    at::ScalarType type;
  };
  std::vector<Work> work;
  for (size_t i = 0; i < averages.size(); ++i) {
    const at::Tensor& a = averages[i];
    const at::Tensor& w = sources[i];
    TORCH_CHECK(a.device().is_cpu(), "tessera::ema_update_ (CPU): tensor ", i, " is on ", a.device());
    if (!at::isFloatingType(a.scalar_type())) {
      a.copy_(w);
      continue;
    }
    if (a.numel() == 0) continue;
    const at::ScalarType type = a.scalar_type();
    const bool supported = type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16;
    if (!supported || !flat_pair(a, w)) {
      ema_fallback(a, w, smoothing);
      continue;
    }
    const int64_t n = a.numel();
    const int64_t bytes = static_cast<int64_t>(a.element_size());
    for (int64_t begin = 0; begin < n; begin += kCpuChunk) {
      work.push_back({static_cast<char*>(a.data_ptr()) + begin * bytes,
                      static_cast<const char*>(w.data_ptr()) + begin * bytes, std::min(kCpuChunk, n - begin), type});
    }
  }
  const float sf = static_cast<float>(smoothing), tf = static_cast<float>(1.0 - smoothing);
  at::parallel_for(0, static_cast<int64_t>(work.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Work& k = work[i];
      switch (k.type) {
        case at::kFloat: ema_span(static_cast<float*>(k.a), static_cast<const float*>(k.w), k.n, sf, tf); break;
        case at::kDouble:
          ema_span(static_cast<double*>(k.a), static_cast<const double*>(k.w), k.n, smoothing, 1.0 - smoothing);
          break;
        case at::kHalf:
          ema_span(static_cast<c10::Half*>(k.a), static_cast<const c10::Half*>(k.w), k.n, sf, tf);
          break;
        case at::kBFloat16:
          ema_span(static_cast<c10::BFloat16*>(k.a), static_cast<const c10::BFloat16*>(k.w), k.n, sf, tf);
          break;
        default: break;
      }
    }
  });
}

#ifdef TESSERA_CUDA
void ema_update_cuda(at::TensorList averages, at::TensorList sources, double smoothing) {
  check_lists(averages, sources, smoothing, "tessera::ema_update_");
  if (averages.empty()) return;
  const c10::Device device = averages[0].device();
  c10::cuda::CUDAGuard guard(device);
  std::map<at::ScalarType, std::vector<cuda::EmaSegment>> groups;
  for (size_t i = 0; i < averages.size(); ++i) {
    const at::Tensor& a = averages[i];
    const at::Tensor& w = sources[i];
    TORCH_CHECK(a.device() == device, "tessera::ema_update_ (CUDA): tensor ", i, " is on ", a.device(),
                ", the others on ", device, "; call it once per device");
    if (!at::isFloatingType(a.scalar_type())) {
      a.copy_(w);
      continue;
    }
    const at::ScalarType type = a.scalar_type();
    const bool supported = type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16;
    if (!supported || !flat_pair(a, w)) {
      ema_fallback(a, w, smoothing);
      continue;
    }
    if (a.numel() > 0) groups[type].push_back({a.data_ptr(), w.data_ptr(), a.numel()});
  }
  for (const auto& [type, segments] : groups) {
    C10_CUDA_CHECK(cuda::launch_ema_update(segments.data(), static_cast<int64_t>(segments.size()),
                                           kernel_dtype(type, "tessera::ema_update_"), smoothing, current_stream()));
  }
}
#endif

/// The stock formula for one device's tensors where the op has no kernel there (a CUDA tensor in a library built
/// without TESSERA_CUDA, Meta, …): _foreach_mul_ + _foreach_add_ where torch has them for that device, else
/// mul_ + add_ per tensor; integer tensors are copied, as by the op.
void ema_stock(const std::vector<at::Tensor>& averages, const std::vector<at::Tensor>& sources, double smoothing) {
  std::vector<at::Tensor> a, w;
  for (size_t i = 0; i < averages.size(); ++i) {
    if (at::isFloatingType(averages[i].scalar_type())) {
      a.push_back(averages[i]);
      w.push_back(sources[i]);
    } else {
      averages[i].copy_(sources[i]);
    }
  }
  if (a.empty()) return;
  static const auto mul = c10::Dispatcher::singleton().findSchemaOrThrow("aten::_foreach_mul_", "Scalar");
  static const auto add = c10::Dispatcher::singleton().findSchemaOrThrow("aten::_foreach_add_", "List");
  if (has_kernel(mul, a[0]) && has_kernel(add, a[0])) {
    at::_foreach_mul_(a, smoothing);
    at::_foreach_add_(a, w, 1.0 - smoothing);
    return;
  }
  for (size_t i = 0; i < a.size(); ++i) ema_fallback(a[i], w[i], smoothing);
}

/// Autograd level: the update is never recorded (the averages are not part of any graph).
void ema_update_autograd(at::TensorList averages, at::TensorList sources, double smoothing) {
  at::AutoDispatchBelowADInplaceOrView below;
  at::NoGradGuard no_grad;
  typed_op<void(at::TensorList, at::TensorList, double)>("tessera::ema_update_").call(averages, sources, smoothing);
}

}  // namespace

void ema_update_(at::TensorList averages, at::TensorList sources, double smoothing) {
  if (!(smoothing >= 0.0 && smoothing <= 1.0)) {
    throw InputError("ema_update_: smoothing must be in [0, 1], got " + std::to_string(smoothing));
  }
  if (averages.size() != sources.size()) {
    throw InputError("ema_update_: " + std::to_string(averages.size()) + " averages but " +
                     std::to_string(sources.size()) + " sources; expected lists of the same length");
  }
  // One call of the op per device (the dispatcher picks the kernel from the tensors' device).
  std::map<std::string, std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>>> by_device;
  for (size_t i = 0; i < averages.size(); ++i) {
    const at::Tensor& a = averages[i];
    const at::Tensor& w = sources[i];
    if (a.sizes() != w.sizes() || a.scalar_type() != w.scalar_type() || a.device() != w.device()) {
      throw InputError("ema_update_: tensor " + std::to_string(i) + " is " + c10::str(a.sizes(), " ", a.scalar_type(),
                       " on ", a.device()) + " but its source is " + c10::str(w.sizes(), " ", w.scalar_type(), " on ",
                       w.device()) + "; expected the same shape, dtype and device");
    }
    auto& group = by_device[a.device().str()];
    group.first.push_back(a);
    group.second.push_back(w);
  }
  static const auto op = typed_op<void(at::TensorList, at::TensorList, double)>("tessera::ema_update_");
  at::NoGradGuard no_grad;
  for (const auto& [device, lists] : by_device) {
    if (has_kernel(op, lists.first[0])) {
      op.call(lists.first, lists.second, smoothing);
    } else {
      ema_stock(lists.first, lists.second, smoothing);
    }
  }
}

void ema_update_(torch::nn::Module& average, const torch::nn::Module& source, double smoothing) {
  std::vector<at::Tensor> a, w;
  auto collect = [&](const torch::OrderedDict<std::string, at::Tensor>& mine,
                     const torch::OrderedDict<std::string, at::Tensor>& theirs, const char* kind) {
    if (mine.size() != theirs.size()) {
      throw InputError(std::string("ema_update_: the average has ") + std::to_string(mine.size()) + " " + kind +
                       " but the source " + std::to_string(theirs.size()) + "; expected modules of the same structure");
    }
    for (size_t i = 0; i < mine.size(); ++i) {
      if (mine[i].key() != theirs[i].key()) {
        throw InputError(std::string("ema_update_: ") + kind + " " + std::to_string(i) + " is '" + mine[i].key() +
                         "' in the average but '" + theirs[i].key() + "' in the source");
      }
      a.push_back(mine[i].value());
      w.push_back(theirs[i].value());
    }
  };
  collect(average.named_parameters(), source.named_parameters(), "parameters");
  collect(average.named_buffers(), source.named_buffers(), "buffers");
  ema_update_(a, w, smoothing);
}

}  // namespace tessera::ops

TORCH_LIBRARY_FRAGMENT(tessera, m) {
  m.def("ema_update_(Tensor(a!)[] averages, Tensor[] sources, float smoothing) -> ()");
}
TORCH_LIBRARY_IMPL(tessera, CPU, m) { m.impl("ema_update_", &tessera::ops::ema_update_cpu); }
TORCH_LIBRARY_IMPL(tessera, Autograd, m) { m.impl("ema_update_", &tessera::ops::ema_update_autograd); }
#ifdef TESSERA_CUDA
TORCH_LIBRARY_IMPL(tessera, CUDA, m) { m.impl("ema_update_", &tessera::ops::ema_update_cuda); }
#endif
