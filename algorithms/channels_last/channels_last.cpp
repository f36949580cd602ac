#include "channels_last.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/models/model.h>
#include <tessera/optim/optimizer.h>
#include <tessera/state.h>

namespace tessera::algorithms {
namespace {

/// A channels-last copy of `t` with the canonical NHWC strides, as Tensor.to(memory_format=torch.channels_last)
/// makes it. (contiguous(ChannelsLast) would keep a [O, 1, kH, kW] weight's NCHW strides, which are also valid
/// NHWC strides but make the tensor suggest NCHW, so the convolution would not pick its channels-last kernel.)
at::Tensor channels_last_copy(const at::Tensor& t) {
  return at::empty_like(t, at::MemoryFormat::ChannelsLast).copy_(t);
}

/// The module's parameters and buffers, recursively.
std::vector<at::Tensor> parameters_and_buffers(const torch::nn::Module& model) {
  std::vector<at::Tensor> out = model.parameters(/*recurse=*/true);
  for (const auto& b : model.buffers(/*recurse=*/true)) out.push_back(b);
  return out;
}

int64_t count_4d(const std::vector<at::Tensor>& tensors) {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.defined() && t.dim() == 4;
  return n;
}

}  // namespace

bool is_channels_last(const at::Tensor& t) {
  return t.defined() && t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) &&
         t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

int64_t to_channels_last(const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  int64_t n = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || t.dim() != 4) continue;
    ++n;
    // set_data keeps the tensor (its identity, autograd metadata, and the Python object that may wrap it) and
    // swaps its storage, as PyTorch's Module.to(memory_format=...) does.
    if (!is_channels_last(t)) t.set_data(channels_last_copy(t.detach()));
    if (t.grad().defined() && !is_channels_last(t.grad())) t.mutable_grad() = channels_last_copy(t.grad());
  }
  return n;
}

int64_t apply_channels_last(torch::nn::Module& model, optim::Optimizer* optimizer) {
  const int64_t n = to_channels_last(parameters_and_buffers(model));
  if (optimizer != nullptr) {
    // Moment buffers of a parameter have its shape; the elementwise updates are layout-independent, but keeping
    // the buffer in the parameter's layout keeps them on the fast (dense, same strides) path.
    for (const auto& p : model.parameters(true)) {
      if (p.dim() != 4) continue;
      std::vector<at::Tensor>* slots = optimizer->state_of(p);
      if (slots == nullptr) continue;
      for (auto& s : *slots) {
        if (s.defined() && s.sizes() == p.sizes() && !is_channels_last(s)) s = channels_last_copy(s);
      }
    }
  }
  return n;
}

ChannelsLast::ChannelsLast(ChannelsLastOptions options) : options_(std::move(options)) {
  validate_options(options_, "channels_last");
  spec_.name = "channels_last";
  spec_.accesses = {{Event::Init, {Resource::Parameters}, {Resource::Parameters}}};
  spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::ModelStructure), Event::Init,
                         "it converts the layers that surgery makes too"});
}

void ChannelsLast::check(const State& state) const {
  if (count_4d(parameters_and_buffers(*state.model)) > 0) return;
  throw InputError("the model has no 4-D parameter or buffer (no convolution), so storing it channels-last would "
                   "have no effect; remove channels_last from the algorithms");
}

void ChannelsLast::apply(Event, State& state, Logger& logger) {
  converted_ = apply_channels_last(*state.model, state.optimizer.get());
  logger.info(fmt::format("channels_last: {} 4-D parameters and buffers stored channels-last (NHWC)", converted_));
}

}  // namespace tessera::algorithms
