#include <tessera/grad_scaler.h>

#include <cmath>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <tessera/error.h>

#include "amp_compat.h"
#include "grad_scaler_ops.h"

namespace tessera {
namespace detail {

void unscale_with_tensor_ops(const std::vector<at::Tensor>& grads, at::Tensor& found_inf, const at::Tensor& inv_scale) {
  const bool identity = inv_scale.item<float>() == 1.0f;
  for (const at::Tensor& g : grads) {
    found_inf.masked_fill_(at::logical_not(at::isfinite(g).all()), 1.0);
    if (!identity) g.mul_(inv_scale);
  }
}

void update_with_tensor_ops(at::Tensor& scale, at::Tensor& tracker, const at::Tensor& found_inf, double growth,
                            double backoff, int64_t interval) {
  const float current = scale.item<float>();
  if (found_inf.item<float>() > 0.0f) {
    scale.fill_(static_cast<float>(current * backoff));
    tracker.fill_(0);
    return;
  }
  const int64_t clean = tracker.item<int32_t>() + 1;
  if (clean == interval) {
    const float grown = static_cast<float>(current * growth);
    if (std::isfinite(grown)) scale.fill_(grown);
    tracker.fill_(0);
  } else {
    tracker.fill_(clean);
  }
}

}  // namespace detail

using detail::unscale_with_tensor_ops;
using detail::update_with_tensor_ops;

GradScaler::GradScaler(GradScalerOptions options, c10::Device device)
    : options_(std::move(options)), aten_ops_(compat::aten_scaler_ops_on(device.type())) {
  validate_options(options_, "grad_scaler");
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  scale_ = at::full({}, options_.init_scale(), f32);
  tracker_ = at::zeros({}, f32.dtype(at::kInt));
  found_inf_ = at::zeros({}, f32);
}

at::Tensor GradScaler::scale(const at::Tensor& loss) const { return loss * scale_.to(loss.device()); }

void GradScaler::backward(const at::Tensor& loss, const std::vector<at::Tensor>& params) {
  // Earlier microbatches' gradients are already unscaled: hold them aside so that this backward writes its
  // scaled contribution alone, unscale that, then add the two.
  std::vector<at::Tensor> held(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].grad().defined()) continue;
    held[i] = params[i].grad();
    params[i].mutable_grad() = at::Tensor();
  }
  scale(loss).backward();
  std::vector<at::Tensor> fresh;
  for (const auto& p : params) {
    if (p.grad().defined()) fresh.push_back(p.grad());
  }
  unscale(fresh);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!held[i].defined()) continue;
    if (params[i].grad().defined()) held[i].add_(params[i].grad());
    params[i].mutable_grad() = held[i];
  }
}

void GradScaler::unscale(const std::vector<at::Tensor>& grads) {
  if (grads.empty()) return;
  // The reciprocal in float64, then float32, as PyTorch computes it.
  const at::Tensor inv_scale = scale_.to(at::kDouble).reciprocal().to(at::kFloat);
  for (const auto& g : grads) {
    if (g.scalar_type() == at::kHalf) {
      throw InputError("grad_scaler: a gradient is float16; the parameters (and so their gradients) must stay "
                       "float32 under mixed precision (autocast lowers the computation, not the weights)");
    }
    if (g.device() != scale_.device()) {
      throw InputError("grad_scaler: a gradient is on " + g.device().str() + ", the scale on " +
                       scale_.device().str() + "; make the scaler on the parameters' device");
    }
  }
  at::NoGradGuard no_grad;
  if (aten_ops_) {
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf_, inv_scale);
  } else {
    unscale_with_tensor_ops(grads, found_inf_, inv_scale);
  }
}

bool GradScaler::found_inf() const { return found_inf_.item<float>() > 0.0f; }

void GradScaler::update() {
  if (aten_ops_) {
    at::_amp_update_scale_(scale_, tracker_, found_inf_, options_.growth_factor(), options_.backoff_factor(),
                           options_.growth_interval());
  } else {
    update_with_tensor_ops(scale_, tracker_, found_inf_, options_.growth_factor(), options_.backoff_factor(),
                           options_.growth_interval());
  }
  found_inf_.zero_();
}

void GradScaler::clear_found_inf() { found_inf_.zero_(); }

double GradScaler::scale_value() const { return scale_.item<double>(); }
int64_t GradScaler::growth_tracker() const { return tracker_.item<int64_t>(); }

StateDict GradScaler::state_dict() const {
  return {{"scale", scale_.to(at::kCPU).clone()}, {"growth_tracker", tracker_.to(at::kCPU).clone()}};
}

void GradScaler::load_state_dict(const StateDict& state) {
  auto entry = [&](const char* key, at::ScalarType dtype) {
    auto it = state.find(key);
    if (it == state.end()) {
      throw InputError(std::string("grad_scaler: the saved state has no \"") + key +
                       "\" (it was written without a scaler, or by another program)");
    }
    if (it->second.numel() != 1 || it->second.scalar_type() != dtype) {
      throw InputError(std::string("grad_scaler: the saved \"") + key + "\" should be one " +
                       c10::toString(dtype) + " value, got " + std::to_string(it->second.numel()) + " " +
                       c10::toString(it->second.scalar_type()) + " values");
    }
    return it->second.reshape({});
  };
  const at::Tensor scale = entry("scale", at::kFloat);
  const at::Tensor tracker = entry("growth_tracker", at::kInt);
  scale_.copy_(scale);
  tracker_.copy_(tracker);
  found_inf_.zero_();
}

}  // namespace tessera
