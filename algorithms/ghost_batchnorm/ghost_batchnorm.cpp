#include "ghost_batchnorm.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/functional/batchnorm.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

namespace tessera::algorithms {
namespace {

int64_t ghost_slots(torch::nn::Module& model, const GhostBatchNormOptions* options, optim::Optimizer* optimizer) {
  int64_t n = 0;
  replace_slots(model, optimizer, [&](const std::string&, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
    auto found = find_batch_norm(*current.ptr());
    if (!found) return std::nullopt;
    ++n;
    if (options == nullptr) return std::nullopt;  // counting only
    return torch::nn::AnyModule(GhostBatchNormLayer(*found->options, found->input_dims, found->weight, found->bias,
                                                    found->running_mean, found->running_var,
                                                    found->num_batches_tracked, options->ghost_batch_size()));
  });
  return n;
}

}  // namespace

int64_t ghost_batch_count(int64_t batch_size, int64_t ghost_batch_size) {
  TORCH_CHECK(ghost_batch_size >= 1, "ghost_batch_count: ghost_batch_size must be at least 1, got ", ghost_batch_size);
  return std::max<int64_t>(1, (batch_size + ghost_batch_size - 1) / ghost_batch_size);
}

at::Tensor ghost_batch_norm(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& running_mean, const at::Tensor& running_var,
                            const at::Tensor& num_batches_tracked, bool training, std::optional<double> momentum,
                            double eps, int64_t ghost_batch_size) {
  TORCH_CHECK(input.dim() >= 2, "ghost_batch_norm: expected an input [N, C, ...], got ", input.sizes());
  const bool tracks = running_mean.defined();
  if (!training) {
    // Exactly torch::nn::BatchNorm's evaluation (batch statistics when it keeps no running ones).
    return torch::nn::functional::detail::batch_norm(input, running_mean, running_var, weight, bias, !tracks,
                                                     momentum.value_or(0.0), eps);
  }
  const int64_t k = ghost_batch_count(input.size(0), ghost_batch_size);
  std::vector<at::Tensor> chunks = input.chunk(k, 0);
  std::vector<at::Tensor> out;
  out.reserve(chunks.size());
  for (const at::Tensor& chunk : chunks) {
    // torch::nn::BatchNorm's training step on the chunk, with the momentum divided by the number of chunks.
    double factor = momentum ? *momentum / static_cast<double>(k) : 0.0;
    if (tracks && num_batches_tracked.defined()) {
      at::Tensor counter = num_batches_tracked;  // a handle on the buffer: += updates it in place
      counter += 1;
      if (!momentum) factor = 1.0 / counter.item<double>();
    }
    out.push_back(torch::nn::functional::detail::batch_norm(chunk, running_mean, running_var, weight, bias,
                                                            /*training=*/true, factor, eps));
  }
  return out.size() == 1 ? out.front() : at::cat(out, 0);
}

GhostBatchNormLayerImpl::GhostBatchNormLayerImpl(const torch::nn::BatchNormOptions& options_, std::vector<int64_t> dims_,
                                                 at::Tensor weight_, at::Tensor bias_, at::Tensor running_mean_,
                                                 at::Tensor running_var_, at::Tensor num_batches_tracked_,
                                                 int64_t ghost_batch_size_)
    : options(options_), dims(std::move(dims_)), ghost_batch_size(ghost_batch_size_) {
  if (ghost_batch_size < 1) {
    throw InputError(fmt::format("GhostBatchNormLayer: ghost_batch_size must be at least 1, got {}", ghost_batch_size));
  }
  // The same tensors under the same names as in the batch norm: state-dict keys and the optimizer do not change.
  // Undefined ones too (not affine, no running statistics), as torch::nn::BatchNorm registers them.
  weight = register_parameter("weight", weight_, weight_.defined() && weight_.requires_grad());
  bias = register_parameter("bias", bias_, bias_.defined() && bias_.requires_grad());
  running_mean = register_buffer("running_mean", running_mean_);
  running_var = register_buffer("running_var", running_var_);
  num_batches_tracked = register_buffer("num_batches_tracked", num_batches_tracked_);
}

at::Tensor GhostBatchNormLayerImpl::forward(const at::Tensor& x) {
  if (std::find(dims.begin(), dims.end(), x.dim()) == dims.end()) {
    throw InputError(fmt::format("GhostBatchNormLayer: expected a {}-D input (as the batch norm it replaced), got {}",
                                 fmt::join(dims, "- or "), c10::str(x.sizes())));
  }
  return ghost_batch_norm(x, weight, bias, running_mean, running_var, num_batches_tracked, is_training(),
                          options.momentum() ? std::optional<double>(*options.momentum()) : std::nullopt,
                          options.eps(), ghost_batch_size);
}

void GhostBatchNormLayerImpl::pretty_print(std::ostream& stream) const {
  stream << "tessera::GhostBatchNormLayer(" << options.num_features() << ", ghost_batch_size=" << ghost_batch_size
         << ")";
}

int64_t apply_ghost_batchnorm(torch::nn::Module& model, const GhostBatchNormOptions& options,
                              optim::Optimizer* optimizer) {
  GhostBatchNormOptions checked = options;
  validate_options(checked, "ghost_batchnorm");
  return ghost_slots(model, &options, optimizer);
}

int64_t count_ghost_batchnorm(torch::nn::Module& model) { return ghost_slots(model, nullptr, nullptr); }

GhostBatchNorm::GhostBatchNorm(GhostBatchNormOptions options) : options_(std::move(options)) {
  validate_options(options_, "ghost_batchnorm");
  spec_.name = "ghost_batchnorm";
  // The parameters stay the same tensors: no optimizer change.
  spec_.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure}}};
  spec_.required_on_load = true;
}

void GhostBatchNorm::check(const State& state) const {
  const SurgeryCount planned = surgery(*state.model, *this, nullptr, /*dry_run=*/true, "batchnorms",
                                       [&] { return count_ghost_batchnorm(*state.model); });
  if (planned.layers > 0) return;
  throw InputError(fmt::format(
      "the model has no BatchNorm1d, BatchNorm2d or BatchNorm3d{} to replace, so it would have no effect; remove it "
      "from the algorithms{}",
      planned.external ? "" : " in a slot",
      planned.external ? "" : " (or register the model's batch norms as slots: docs/cpp-own-model.md)"));
}

void GhostBatchNorm::apply(Event, State& state, Logger& logger) {
  replaced_ = surgery(*state.model, *this, state.optimizer.get(), /*dry_run=*/false, "batchnorms", [&] {
                return apply_ghost_batchnorm(*state.model, options_, state.optimizer.get());
              }).layers;
  logger.info(fmt::format("ghost_batchnorm: replaced {} batch norms (ghost batches of {})", replaced_,
                          options_.ghost_batch_size()));
}

}  // namespace tessera::algorithms
