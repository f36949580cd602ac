// The `device` option and the device-side non-finite bookkeeping of the trainer's CUDA loop.
#include <tessera/device.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>

#include <tessera/error.h>
#include <tessera/recipe.h>  // suggest_name

namespace tessera {
namespace {

/// The index of "cuda:N" (N decimal digits, at most 4), or nullopt for any other text.
std::optional<int64_t> cuda_index(const std::string& spec) {
  const std::string prefix = "cuda:";
  if (spec.size() <= prefix.size() || spec.size() > prefix.size() + 4 || spec.compare(0, prefix.size(), prefix) != 0)
    return std::nullopt;
  const std::string digits = spec.substr(prefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c) != 0; }))
    return std::nullopt;
  return std::stoll(digits);
}

int64_t visible_cuda_devices() { return at::hasCUDA() ? static_cast<int64_t>(at::getNumGPUs()) : 0; }

}  // namespace

bool is_device_spec(const std::string& spec) {
  return spec == "cpu" || spec == "cuda" || spec == "auto" || cuda_index(spec).has_value();
}

std::string device_problem(const std::string& spec) {
  if (!is_device_spec(spec)) {
    std::string guess = suggest_name(spec, {"cuda", "cpu", "auto"});
    if (spec == "gpu" || spec.rfind("gpu:", 0) == 0) guess = "cuda";
    return fmt::format("\"{}\" is not a device{}; expected {}", spec,
                       guess.empty() ? "" : fmt::format(" (did you mean \"{}\"?)", guess), kDeviceForms);
  }
  if (spec == "cpu" || spec == "auto") return "";
  const int64_t n = visible_cuda_devices();
  if (n == 0) {
    return fmt::format("{} was requested but CUDA is not available here (no CUDA device is visible, or this "
                       "LibTorch was built without CUDA); use device: cpu or auto",
                       spec);
  }
  const int64_t index = cuda_index(spec).value_or(0);
  if (index >= n) {
    return fmt::format("{} was requested but {} CUDA device{} visible (cuda:0{}); use device: cuda:0, cpu or auto",
                       spec, n, n == 1 ? " is" : "s are", n == 1 ? "" : fmt::format(" to cuda:{}", n - 1));
  }
  return "";
}

c10::Device resolve_device(const std::string& spec, const std::string& where) {
  const std::string problem = device_problem(spec);
  if (!problem.empty()) throw InputError(where + ".device: " + problem);
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "auto") return visible_cuda_devices() > 0 ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(cuda_index(spec).value_or(0)));
}

at::Tensor to_device(const at::Tensor& t, c10::Device device) {
  if (!t.defined() || t.device() == device) return t;
  if (t.is_cpu() && device.is_cuda()) {
    // A blocking copy from pageable memory waits for everything queued on the GPU; from pinned memory the copy
    // is queued like a kernel (torch's pinned-memory allocator keeps the block until the copy is done).
    const at::Tensor pinned = t.is_pinned() ? t : t.pin_memory();
    return pinned.to(device, /*non_blocking=*/true);
  }
  return t.to(device);
}

// ------------------------------------------------------------------------------------------------
// NonfiniteTracker

void NonfiniteTracker::record(const at::Tensor& loss, int64_t batch) {
  at::NoGradGuard no_grad;
  const at::Tensor value = loss.detach().reshape({}).to(at::kDouble);
  if (!first_batch_.defined()) {
    first_batch_ = at::full({}, -1, value.options().dtype(at::kLong));
    first_loss_ = at::zeros({}, value.options());
  }
  // New only when nothing was found before: a later bad batch must not replace the first.
  const at::Tensor take = at::isfinite(value).logical_not().logical_and(first_batch_.lt(0));
  first_loss_ = at::where(take, value, first_loss_);
  first_batch_ = first_batch_.masked_fill(take, batch);
}

std::optional<NonfiniteTracker::Found> NonfiniteTracker::first() const {
  if (!first_batch_.defined()) return std::nullopt;
  const at::Tensor both = at::stack({first_batch_.to(at::kDouble), first_loss_}).cpu();  // one read-back
  const double batch = both[0].item<double>();
  if (batch < 0) return std::nullopt;
  return Found{static_cast<int64_t>(batch), both[1].item<double>()};
}

void NonfiniteTracker::reset() {
  first_batch_ = at::Tensor();
  first_loss_ = at::Tensor();
}

}  // namespace tessera
