#include "sam.h"

#include <ATen/ATen.h>

#include <tessera/algorithms/gradient_clipping.h>
#include <tessera/error.h>
#include <tessera/models/model.h>
#include <tessera/state.h>

namespace tessera::algorithms {

at::Tensor sam_gradients(const std::vector<at::Tensor>& parameters, const std::function<void()>& recompute,
                         double rho, double epsilon) {
  SAMOptions options;
  options.rho(rho).epsilon(epsilon);
  validate_options(options, "sam_gradients");
  if (!recompute) throw InputError("sam_gradients: no recompute function given (it recomputes the gradients)");
  std::vector<at::Tensor> params;
  std::vector<at::Tensor> grads;
  for (const auto& p : parameters) {
    if (!p.grad().defined()) continue;
    params.push_back(p);
    grads.push_back(p.grad());
  }
  if (params.empty()) return {};
  std::vector<at::Tensor> saved;
  saved.reserve(params.size());
  at::Tensor norm;
  {
    at::NoGradGuard no_grad;
    norm = global_norm(grads);
    // Computed and applied on the device (no read-back): a norm that is inf/NaN (an overflow the loss scaler
    // skips the step for) gives a factor 0 and, through nan_to_num, no move at all.
    const at::Tensor factor = at::where(at::isfinite(norm), rho / (norm + epsilon), at::zeros_like(norm));
    for (size_t i = 0; i < params.size(); ++i) {
      saved.push_back(params[i].detach().clone());
      params[i].detach().add_((grads[i] * factor.to(grads[i].scalar_type())).nan_to_num_(0.0, 0.0, 0.0));
    }
  }
  auto restore = [&] {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) params[i].detach().copy_(saved[i]);
  };
  try {
    recompute();
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return norm;
}

SAM::SAM(SAMOptions options) : options_(std::move(options)) {
  validate_options(options_, "sam");
  spec_.name = "sam";
  // The second pass differentiates the loss as the algorithms at the microbatch events make it (label smoothing's,
  // MixUp's); the buffers are put back to the first forward's statistics.
  spec_.accesses = {{Event::AfterTrainBatch, {Resource::Gradients, Resource::Parameters, Resource::Loss},
                     {Resource::Gradients, Resource::Buffers}}};
  spec_.order.push_back({OrderRule::Relation::Before, Selector::writers_of(Resource::Gradients), Event::AfterTrainBatch,
                         "it perturbs along the whole batch's gradient as the backward left it and replaces the "
                         "gradients by those at the perturbed weights, which the step uses: others that change the "
                         "gradients (clipping) change those"});
  spec_.precision_note = "the perturbation is computed from the unscaled float32 gradients; an overflow in either "
                         "pass skips the step (loss scaling)";
}

bool SAM::match(Event event, const State& state) const {
  return event == Event::AfterTrainBatch && (state.timestamp.batch + 1) % options_.interval() == 0;
}

void SAM::apply(Event, State& state, Logger&) {
  if (!state.recompute_gradients) {
    throw Error("sam: the trainer offers no recompute_gradients at after_train_batch, so the second forward and "
                "backward cannot run");
  }
  // The second forward updates the batch-norm statistics at weights the model never takes: keep the first's.
  std::vector<at::Tensor> buffers = state.model->buffers(true);
  std::vector<at::Tensor> buffers_before;
  buffers_before.reserve(buffers.size());
  for (const auto& b : buffers) buffers_before.push_back(b.detach().clone());
  sam_gradients(state.model->parameters(true), [&] { state.recompute_gradients(); }, options_.rho(), options_.epsilon());
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(buffers_before[i]);
}

}  // namespace tessera::algorithms
