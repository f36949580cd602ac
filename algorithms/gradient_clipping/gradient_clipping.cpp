#include "gradient_clipping.h"

#include <ATen/ATen.h>

#include <tessera/error.h>
#include <tessera/models/model.h>
#include <tessera/state.h>

namespace tessera::algorithms {
namespace {

/// The L2 norm of each unit of `t`: rows of dimension 0 (kept as [rows, 1, ...] to broadcast), or the whole
/// tensor when it has at most one dimension.
at::Tensor unitwise_norm(const at::Tensor& t) {
  if (t.dim() <= 1) return t.norm();
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < t.dim(); ++d) dims.push_back(d);
  return t.norm(2, dims, /*keepdim=*/true);
}

}  // namespace

at::Tensor global_norm(const std::vector<at::Tensor>& grads) {
  std::vector<at::Tensor> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) norms.push_back(g.norm().to(at::kFloat));
  return at::stack(norms).norm();
}

at::Tensor clip_gradients(const std::vector<at::Tensor>& parameters, const std::string& clipping_type,
                          double clipping_threshold) {
  GradientClippingOptions options;
  options.clipping_type(clipping_type).clipping_threshold(clipping_threshold);
  validate_options(options, "clip_gradients");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  std::vector<at::Tensor> params;
  for (const auto& p : parameters) {
    if (!p.grad().defined()) continue;
    grads.push_back(p.grad());
    params.push_back(p);
  }
  if (grads.empty()) return {};
  if (clipping_type == "value") {
    for (auto& g : grads) g.clamp_(-clipping_threshold, clipping_threshold);
    return {};
  }
  if (clipping_type == "adaptive") {
    for (size_t i = 0; i < grads.size(); ++i) {
      const at::Tensor limit = unitwise_norm(params[i].detach()) * clipping_threshold;
      const at::Tensor coefficient = (limit / unitwise_norm(grads[i]).clamp_min(1e-6)).nan_to_num(1.0).clamp_max(1.0);
      grads[i].mul_(coefficient);
    }
    return {};
  }
  const at::Tensor total = global_norm(grads);
  // Multiplying by a coefficient clamped to 1 (no host read-back) leaves gradients below the bound unchanged.
  const at::Tensor coefficient = (clipping_threshold / (total + 1e-6)).clamp_max(1.0);
  for (auto& g : grads) g.mul_(coefficient.to(g.scalar_type()));
  return total;
}

GradientClipping::GradientClipping(GradientClippingOptions options) : options_(std::move(options)) {
  validate_options(options_, "gradient_clipping");
  spec_.name = "gradient_clipping";
  std::vector<Resource> reads = {Resource::Gradients};
  if (options_.clipping_type() == "adaptive") reads.push_back(Resource::Parameters);
  spec_.accesses = {{Event::AfterTrainBatch, reads, {Resource::Gradients}}};
}

void GradientClipping::apply(Event, State& state, Logger&) {
  clip_gradients(state.model->parameters(), options_.clipping_type(), options_.clipping_threshold());
}

}  // namespace tessera::algorithms
