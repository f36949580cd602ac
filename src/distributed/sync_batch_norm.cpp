#include <tessera/distributed/sync_batch_norm.h>

#include <algorithm>
#include <string>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/autograd.h>
#include <torch/nn/functional/batchnorm.h>

#include <tessera/error.h>
#include <tessera/surgery.h>

namespace tessera::dist {
namespace {

/// The all-reduce as an autograd function. The Comm travels as an address in the context (an IValue holds no
/// pointer); it outlives the backward pass, which runs inside the training step that called forward.
struct AllReduceSum : torch::autograd::Function<AllReduceSum> {
  static at::Tensor reduce(const at::Tensor& t, Comm& comm) {
    at::Tensor out = t.detach().clone();
    comm.all_reduce_sum(out, "sync_batch_norm (batch-norm statistics)");
    return out;
  }
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& t, int64_t comm_address) {
    ctx->saved_data["comm"] = comm_address;
    return reduce(t, *reinterpret_cast<Comm*>(comm_address));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* comm = reinterpret_cast<Comm*>(ctx->saved_data["comm"].toInt());
    return {reduce(grads[0], *comm), at::Tensor()};
  }
};

}  // namespace

at::Tensor all_reduce_sum_differentiable(const at::Tensor& t, Comm& comm) {
  return AllReduceSum::apply(t, static_cast<int64_t>(reinterpret_cast<intptr_t>(&comm)));
}

SyncBatchNormImpl::SyncBatchNormImpl(const torch::nn::BatchNormOptions& options_, std::vector<int64_t> input_dims_,
                                     at::Tensor weight_, at::Tensor bias_, at::Tensor running_mean_,
                                     at::Tensor running_var_, at::Tensor num_batches_tracked_, std::weak_ptr<Comm> comm)
    : options(options_), input_dims(std::move(input_dims_)), comm_(std::move(comm)) {
  weight = register_parameter("weight", weight_, weight_.defined() && weight_.requires_grad());
  bias = register_parameter("bias", bias_, bias_.defined() && bias_.requires_grad());
  running_mean = register_buffer("running_mean", running_mean_);
  running_var = register_buffer("running_var", running_var_);
  num_batches_tracked = register_buffer("num_batches_tracked", num_batches_tracked_);
}

at::Tensor SyncBatchNormImpl::forward(const at::Tensor& x) {
  if (std::find(input_dims.begin(), input_dims.end(), x.dim()) == input_dims.end()) {
    throw InputError(fmt::format("SyncBatchNorm: expected a {}-D input (as the batch norm it replaced), got {}",
                                 fmt::join(input_dims, "- or "), c10::str(x.sizes())));
  }
  const bool tracks = running_mean.defined();
  const std::shared_ptr<Comm> comm = is_training() ? comm_.lock() : nullptr;
  if (!comm) {
    // torch::nn::BatchNorm's forward (evaluation, or the run's process group is gone).
    double factor = options.momentum().value_or(0.0);
    if (is_training() && tracks) {
      at::Tensor counter = num_batches_tracked;  // a handle on the buffer: += updates it in place
      counter += 1;
      if (!options.momentum()) factor = 1.0 / counter.item<double>();
    }
    return torch::nn::functional::detail::batch_norm(x, running_mean, running_var, weight, bias,
                                                     is_training() || !tracks, factor, options.eps());
  }

  // Per channel: the local sum and the local sum of squares, in double, shifted by a constant near the local mean
  // (s2 = sum (x - m)^2 + m (2 s1 - n m) is exact for any constant m, and the shift keeps the squares small).
  const int64_t channels = x.size(1);
  std::vector<int64_t> dims{0};
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = channels;
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  const int64_t n = channels > 0 ? x.numel() / channels : 0;
  const at::Tensor s1 = x.sum(dims, /*keepdim=*/false, at::kDouble);
  const at::Tensor shift = (n > 0 ? s1.detach() / static_cast<double>(n) : at::zeros_like(s1)).to(x.scalar_type());
  const at::Tensor shift_d = shift.to(at::kDouble);
  const at::Tensor s2 = (x - shift.view(shape)).pow(2).sum(dims, /*keepdim=*/false, at::kDouble) +
                        shift_d * (2.0 * s1 - static_cast<double>(n) * shift_d);
  const at::Tensor count = at::full({1}, static_cast<double>(n), s1.options());
  const at::Tensor global = all_reduce_sum_differentiable(at::cat({s1, s2, count}), *comm);
  const double total = global[2 * channels].item<double>();
  if (total <= 1) {
    throw InputError(fmt::format("SyncBatchNorm: expected more than 1 value per channel over all ranks when "
                                 "training, got input size {} on this rank ({} in all)",
                                 c10::str(x.sizes()), static_cast<int64_t>(total)));
  }
  const at::Tensor mean = global.narrow(0, 0, channels) / total;
  const at::Tensor var = (global.narrow(0, channels, channels) / total - mean * mean).clamp_min(0.0);

  const bool reduced = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  const at::ScalarType compute = reduced ? at::kFloat : x.scalar_type();
  at::Tensor scale = (var + options.eps()).rsqrt();
  if (weight.defined()) scale = scale * weight.to(at::kDouble);
  at::Tensor y = (x.to(compute) - mean.to(compute).view(shape)) * scale.to(compute).view(shape);
  if (bias.defined()) y = y + bias.to(compute).view(shape);

  if (tracks) {
    at::NoGradGuard no_grad;
    at::Tensor counter = num_batches_tracked;
    counter += 1;
    const double factor = options.momentum() ? *options.momentum() : 1.0 / counter.item<double>();
    const at::Tensor unbiased = var.detach() * (total / (total - 1));
    running_mean.mul_(1.0 - factor).add_(mean.detach().to(running_mean.scalar_type()), factor);
    running_var.mul_(1.0 - factor).add_(unbiased.to(running_var.scalar_type()), factor);
  }
  return y.to(x.scalar_type());
}

void SyncBatchNormImpl::reset_running_stats() {
  if (!running_mean.defined()) return;
  at::NoGradGuard no_grad;
  running_mean.zero_();
  running_var.fill_(1);
  num_batches_tracked.zero_();
}

void SyncBatchNormImpl::pretty_print(std::ostream& stream) const {
  stream << "tessera::dist::SyncBatchNorm(" << options.num_features() << ", eps=" << options.eps() << ")";
}

int64_t convert_sync_batch_norm(torch::nn::Module& model, const std::shared_ptr<Comm>& comm) {
  const int64_t converted = replace_slots(
      model, nullptr, [&](const std::string&, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
        auto bn = find_batch_norm(*current.ptr());
        if (!bn) return std::nullopt;
        return torch::nn::AnyModule(SyncBatchNorm(*bn->options, bn->input_dims, bn->weight, bn->bias,
                                                  bn->running_mean, bn->running_var, bn->num_batches_tracked, comm));
      });
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    torch::nn::Module& m = *item.value();
    if (m.as<SyncBatchNormImpl>() != nullptr || !m.named_buffers(/*recurse=*/false).contains("running_mean")) continue;
    throw InputError(fmt::format(
        "distributed.sync_batch_norm: module '{}' ({}) keeps batch-norm running statistics but is not a torch "
        "BatchNorm1d/2d/3d in a slot of a Tessera model, so its statistics cannot be taken over the ranks: a Python "
        "or TorchScript model's layers are out of reach of Tessera's process group, and ghost_batchnorm normalises "
        "each ghost batch of a rank's share by design; set sync_batch_norm: false (or drop ghost_batchnorm)",
        item.key().empty() ? "<model>" : item.key(), m.name()));
  }
  return converted;
}

}  // namespace tessera::dist
