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

/// Normalisation with statistics taken over every rank: y = (x - mean) * invstd * weight + bias, where mean and
/// invstd (float [C], computed by the caller from the ranks' sums) depend on every rank's input. Backward is
/// analytic, as PyTorch's SyncBatchNorm: with dy summed over the global batch (one all-reduce of [sum dy,
/// sum dy (x - mean)]), dx = weight invstd (dy - mean(dy) - (x - mean) invstd^2 mean(dy (x - mean))); the weight's and
/// bias's gradients are this rank's sums (the ranks' parameter gradients are averaged afterwards as usual). The global
/// count `total` (double [1]) stays on the input's device: no value is read back to the host. The Comm travels as an
/// address in the context (an IValue holds no pointer); the run's DataParallel keeps it alive through the training
/// step whose backward uses it.
struct SyncBatchNormFunction : torch::autograd::Function<SyncBatchNormFunction> {
  static std::vector<int64_t> reduced_dims(const at::Tensor& x) {
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
    return dims;
  }
  static std::vector<int64_t> channel_shape(const at::Tensor& x) {
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[1] = x.size(1);
    return shape;
  }
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& invstd,
                            int64_t comm_address, const at::Tensor& total) {
    const auto shape = channel_shape(x);
    const at::Tensor scale = weight.defined() ? invstd * weight.to(invstd.scalar_type()) : invstd;
    at::Tensor y = (x - mean.view(shape)) * scale.view(shape);
    if (bias.defined()) y = y + bias.to(y.scalar_type()).view(shape);
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["comm"] = comm_address;
    ctx->saved_data["total"] = total;
    ctx->saved_data["bias"] = bias.defined();
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3];
    const at::Tensor dy = grads[0].to(x.scalar_type());
    const auto dims = reduced_dims(x);
    const auto shape = channel_shape(x);
    const int64_t channels = x.size(1);
    const at::Tensor centred = x - mean.view(shape);
    const at::Tensor sum_dy = dy.sum(dims);
    const at::Tensor sum_dy_xmu = (dy * centred).sum(dims);
    at::Tensor dx, dweight, dbias;
    if (ctx->needs_input_grad(0)) {  // the same on every rank: all join the all-reduce or none
      at::Tensor global = at::cat({sum_dy, sum_dy_xmu}).to(at::kDouble);
      reinterpret_cast<Comm*>(ctx->saved_data["comm"].toInt())->all_reduce_sum(global, "sync_batch_norm (gradients)");
      global = (global / ctx->saved_data["total"].toTensor()).to(x.scalar_type());
      const at::Tensor mean_dy = global.narrow(0, 0, channels), mean_dy_xmu = global.narrow(0, channels, channels);
      const at::Tensor k = weight.defined() ? invstd * weight.to(invstd.scalar_type()) : invstd;
      dx = (dy - mean_dy.view(shape) - centred * (invstd * invstd * mean_dy_xmu).view(shape)) * k.view(shape);
    }
    if (weight.defined() && ctx->needs_input_grad(1)) dweight = (sum_dy_xmu * invstd).to(weight.scalar_type());
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) dbias = sum_dy;
    return {dx, dweight, dbias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

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
  // A training step with running statistics counts one more batch; the weight of this batch's statistics is the
  // momentum, or 1/count for a cumulative average (momentum None), as in torch::nn::BatchNorm.
  auto count_batch = [&] {
    at::Tensor counter = num_batches_tracked;  // a handle on the buffer: += updates it in place
    counter += 1;
    return options.momentum() ? *options.momentum() : 1.0 / counter.item<double>();
  };
  const std::shared_ptr<Comm> comm = is_training() ? comm_.lock() : nullptr;
  if (!comm) {
    // torch::nn::BatchNorm's forward (evaluation, or the run's process group is gone).
    const double factor = is_training() && tracks ? count_batch() : options.momentum().value_or(0.0);
    return torch::nn::functional::detail::batch_norm(x, running_mean, running_var, weight, bias,
                                                     is_training() || !tracks, factor, options.eps());
  }

  // Per channel: this share's sum s1 and its sum of squares around c = s1 / n, s2 = sum (x - c)^2 + c (2 s1 - n c),
  // in double: the global variance S2 / N - (S1 / N)^2 then keeps its digits however far x is from zero (the
  // rounding of s1 enters S2 and S1 alike and cancels). One all-reduce of [S1, S2, N]; the gradient through these
  // statistics is SyncBatchNormFunction's.
  const int64_t channels = x.size(1);
  const bool reduced = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  const at::Tensor xf = reduced ? x.to(at::kFloat) : x;
  const int64_t n = channels > 0 ? x.numel() / channels : 0;
  const double nd = static_cast<double>(n);
  at::Tensor global;
  {
    at::NoGradGuard no_grad;
    const auto dims = SyncBatchNormFunction::reduced_dims(xf);
    const at::Tensor s1f = xf.sum(dims);
    const at::Tensor centre = n > 0 ? s1f / nd : at::zeros_like(s1f);
    const at::Tensor centred = xf - centre.view(SyncBatchNormFunction::channel_shape(xf));
    const at::Tensor s1 = s1f.to(at::kDouble), centre_d = centre.to(at::kDouble);
    const at::Tensor s2 = (centred * centred).sum(dims).to(at::kDouble) + centre_d * (2.0 * s1 - nd * centre_d);
    global = at::cat({s1, s2, at::full({1}, nd, s1.options())});
    comm->all_reduce_sum(global, "sync_batch_norm (statistics)");
  }
  // The count over all ranks stays on the device: reading it back would wait for the forward queued before this
  // layer, on every layer and step. Only a rank with at most 1 value per channel of its own can be in a global batch
  // of at most 1 (every rank's count is at least its own), so only such a rank reads the total, to refuse it.
  const at::Tensor total = global.narrow(0, 2 * channels, 1);
  if (n <= 1) {
    const double all = total.item<double>();
    if (all <= 1) {
      throw InputError(fmt::format("SyncBatchNorm: expected more than 1 value per channel over all ranks when "
                                   "training, got input size {} on this rank ({} in all)",
                                   c10::str(x.sizes()), static_cast<int64_t>(all)));
    }
  }
  const at::Tensor mean = global.narrow(0, 0, channels) / total;
  const at::Tensor var = (global.narrow(0, channels, channels) / total - mean * mean).clamp_min(0.0);
  const at::Tensor invstd = (var + options.eps()).rsqrt();
  const at::Tensor y = SyncBatchNormFunction::apply(
      xf, weight, bias, mean.to(xf.scalar_type()), invstd.to(xf.scalar_type()),
      static_cast<int64_t>(reinterpret_cast<intptr_t>(comm.get())), total);

  if (tracks) {
    at::NoGradGuard no_grad;
    const double factor = count_batch();
    const at::Tensor unbiased = var * (total / (total - 1));
    running_mean.mul_(1.0 - factor).add_(mean.to(running_mean.scalar_type()), factor);
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
