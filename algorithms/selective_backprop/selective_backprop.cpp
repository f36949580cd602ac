#include "selective_backprop.h"

#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/batchnorm.h>

#include <tessera/distributed/sync_batch_norm.h>
#include <tessera/error.h>
#include <tessera/ops/kernels.h>

#include "selective_backprop_ops.h"

namespace tessera::algorithms {
namespace {

/// Freezes batch-norm running statistics (momentum 0) for the lifetime of the guard, so that scoring in
/// training mode uses batch statistics like a training forward but leaves the running estimates alone.
class FrozenBatchNormStats {
 public:
  explicit FrozenBatchNormStats(torch::nn::Module& model) {
    for (const auto& m : model.modules(/*include_self=*/true)) {
      if (auto* bn = m->as<torch::nn::BatchNorm1dImpl>()) remember(bn->options);
      if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) remember(bn->options);
      if (auto* bn = m->as<torch::nn::BatchNorm3dImpl>()) remember(bn->options);
      if (auto* bn = m->as<dist::SyncBatchNormImpl>()) remember(bn->options);
    }
  }
  ~FrozenBatchNormStats() {
    for (auto& [opts, momentum] : saved_) opts->momentum(momentum);
  }

 private:
  void remember(torch::nn::BatchNormOptions& opts) {
    saved_.emplace_back(&opts, opts.momentum());
    opts.momentum(0.0);
  }
  std::vector<std::pair<torch::nn::BatchNormOptions*, c10::optional<double>>> saved_;
};

}  // namespace

namespace {
/// The checks the functional forms share with the algorithm's options: keep in (0, 1], one loss per example.
void check_selection_inputs(const char* where, const at::Tensor& losses, double keep) {
  check_option_as<SelectiveBackpropOptions>(where, "keep", keep);
  if (losses.dim() != 1) {
    throw InputError(std::string(where) + ".losses: expected one loss per example, shape [N], got shape " +
                     c10::str(losses.sizes()));
  }
}
}  // namespace

at::Tensor selection_weights(const at::Tensor& losses, double keep) {
  check_selection_inputs("selection_weights", losses, keep);
  const int64_t n = losses.numel();
  // Ascending loss; a stable sort ranks tied losses in index order, the same on every device.
  const at::Tensor order = losses.flatten().to(at::kDouble).argsort(/*stable=*/true, 0, /*descending=*/false);
  const at::Tensor pct = (at::arange(n, at::kDouble) + 0.5) / static_cast<double>(n);
  const at::Tensor w_by_rank = pct.pow(1.0 / keep - 1.0);
  at::Tensor w = at::empty({n}, at::kDouble);
  w.index_put_({order}, w_by_rank);
  return w / w.sum();
}

at::Tensor select_by_loss(const at::Tensor& losses, double keep, Rng& rng) {
  check_selection_inputs("select_by_loss", losses, keep);
  if (losses.is_cuda() && ops::cuda_kernels_available()) return fused_select_by_loss(losses, keep, rng);
  const int64_t n = losses.numel();
  const int64_t k = static_cast<int64_t>(std::floor(keep * static_cast<double>(n)));
  const at::Tensor w = selection_weights(losses.detach().cpu(), keep);
  const double* wp = w.data_ptr<double>();
  // Efraimidis–Spirakis: keep the k largest log(u)/w.
  at::Tensor keys = at::empty({n}, at::kDouble);
  double* kp = keys.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    double u = rng.uniform();
    if (u <= 0.0) u = 1e-300;
    kp[i] = std::log(u) / wp[i];
  }
  at::Tensor chosen = std::get<1>(keys.topk(k));
  return std::get<0>(chosen.sort());
}

SelectiveBackprop::SelectiveBackprop(SelectiveBackpropOptions options) : options_(std::move(options)) {
  validate_options(options_, "selective_backprop");
  if (options_.end() <= options_.start()) {
    throw InputError(fmt::format("selective_backprop: end ({:g}) must be greater than start ({:g})", options_.end(),
                                 options_.start()));
  }
  spec_.name = "selective_backprop";
  spec_.accesses = {{Event::AfterDataloader, {Resource::Inputs, Resource::Targets, Resource::Parameters}, {Resource::BatchRows}}};
  const char* why = "its scores must see the clean, full-resolution batch";
  spec_.order.push_back({OrderRule::Relation::Before, Selector::writers_of(Resource::Inputs), Event::AfterDataloader, why});
  spec_.order.push_back({OrderRule::Relation::Before, Selector::writers_of(Resource::Targets), Event::AfterDataloader, why});
  spec_.order.push_back({OrderRule::Relation::Before, Selector::writers_of(Resource::Resolution), Event::AfterDataloader, why});
}

void SelectiveBackprop::check(const State& state) const {
  if (!state.model->supports_per_example_loss()) {
    throw InputError("the model's loss gives no per-example values (Reduction::None), which selective backprop needs "
                     "to rank examples");
  }
  // The model says it does: compute them on the example batch, so that a loss that ignores the reduction fails
  // here rather than at the first scheduled batch.
  Model& model = *state.model;
  const Batch example = state.train_dataloader->example_batch();
  at::Tensor losses;
  const std::string error = try_on_example(model, example, [&](const Batch& b) {
    losses = model.loss(model.forward(b), b, Reduction::None);
  });
  const std::string fix = "selective backprop ranks the examples of each batch by their loss, so "
                          "Model::loss(outputs, batch, Reduction::None) must return one loss per example, shape [N]; "
                          "implement Reduction::None in the model's loss (e.g. pass the reduction on to the loss "
                          "function), or override supports_per_example_loss() to return false so that the algorithm "
                          "is refused with this reason";
  if (!error.empty()) {
    throw InputError("the model's loss with Reduction::None fails on the training data's example batch (" + error +
                     "); " + fix);
  }
  const int64_t n = example.size();
  if (!losses.defined() || losses.dim() != 1 || losses.size(0) != n) {
    throw InputError("the model's loss with Reduction::None has shape " +
                     (losses.defined() ? c10::str(losses.sizes()) : std::string("(undefined)")) + " on a batch of " +
                     std::to_string(n) + " example(s); expected [" + std::to_string(n) + "]: " + fix);
  }
}

bool SelectiveBackprop::match(Event event, const State& state) const {
  if (event != Event::AfterDataloader || options_.keep() >= 1.0) return false;
  const double e = state.elapsed_fraction();
  if (e < options_.start() || e >= options_.end()) return false;
  const int64_t i = options_.interrupt();
  return i == 0 || (state.timestamp.batch_in_epoch + 1) % i != 0;
}

at::Tensor SelectiveBackprop::score(State& state) const {
  Batch scoring = state.batch;
  if (options_.scale_factor() < 1.0) {
    const at::Tensor& x = scoring.input();
    const double s = options_.scale_factor();
    at::Tensor small;
    if (x.dim() == 4) {
      small = at::upsample_bilinear2d(x, {static_cast<int64_t>(x.size(2) * s), static_cast<int64_t>(x.size(3) * s)}, false);
    } else if (x.dim() == 3) {
      small = at::upsample_linear1d(x, {static_cast<int64_t>(x.size(2) * s)}, false);
    } else {
      throw InputError("selective_backprop: scale_factor < 1 needs inputs [N, C, L] or [N, C, H, W], got " +
                       c10::str(x.sizes()));
    }
    scoring.set(Batch::kInput, small);
  }
  at::NoGradGuard no_grad;
  FrozenBatchNormStats frozen(*state.model);
  const at::Tensor outputs = state.model->forward(scoring);
  return state.model->loss(outputs, scoring, Reduction::None);
}

void SelectiveBackprop::apply(Event, State& state, Logger&) {
  const at::Tensor losses = score(state);
  const int64_t n = state.batch.size();
  if (losses.dim() != 1 || losses.size(0) != n) {
    throw InputError("selective_backprop: the model's per-example loss (Reduction::None) has shape " +
                     c10::str(losses.sizes()) + " at batch " + std::to_string(state.timestamp.batch) + "; expected [" +
                     std::to_string(n) + "]: Model::loss must return one loss per example with Reduction::None");
  }
  Rng rng(state.seed, {kAlgorithmStream, 0x5e1ec7ULL, static_cast<uint64_t>(state.timestamp.batch)});
  state.batch = select_batch_rows(state.batch, select_by_loss(losses, options_.keep(), rng));  // one launch on CUDA
}

}  // namespace tessera::algorithms
