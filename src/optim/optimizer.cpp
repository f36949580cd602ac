// Optimizer bookkeeping, SGD and AdamW. Updates run in place under NoGradGuard with the same ATen ops as
// torch::optim (SGD is bitwise equal to torch::optim::SGD).
#include <tessera/optim/optimizer.h>

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include <tessera/error.h>

namespace tessera::optim {
namespace {

const void* key_of(const at::Tensor& t) { return t.unsafeGetTensorImpl(); }

bool same(const at::Tensor& a, const at::Tensor& b) {
  return a.unsafeGetTensorImpl() == b.unsafeGetTensorImpl();
}

}  // namespace

// ------------------------------------------------------------------------------------------------ Optimizer

Optimizer::Optimizer(std::vector<at::Tensor> params, double lr) {
  for (const auto& p : params) {
    if (!p.defined()) throw InputError("optimizer: a parameter is an undefined tensor");
  }
  ParamGroup group;
  group.params = std::move(params);
  group.initial_lr = lr;
  group.lr = lr;
  groups_.push_back(std::move(group));
}

void Optimizer::zero_grad(bool set_to_none) {
  for (auto& group : groups_) {
    for (auto& p : group.params) {
      at::Tensor& grad = p.mutable_grad();
      if (!grad.defined()) continue;
      if (set_to_none) {
        grad.reset();
      } else {
        if (grad.grad_fn()) {
          grad.detach_();
        } else {
          grad.requires_grad_(false);
        }
        grad.zero_();
      }
    }
  }
}

void Optimizer::set_lr_factor(double alpha) {
  for (auto& group : groups_) group.lr = group.initial_lr * alpha;
}

void Optimizer::remove_parameters(const std::vector<at::Tensor>& params) {
  if (params.empty()) return;
  std::unordered_map<const void*, bool> drop;
  for (const auto& p : params) {
    if (p.defined()) drop.emplace(key_of(p), true);
  }
  for (auto& group : groups_) {
    auto& ps = group.params;
    ps.erase(
        std::remove_if(ps.begin(), ps.end(), [&](const at::Tensor& p) { return drop.count(key_of(p)) != 0; }),
        ps.end());
  }
  for (const auto& [key, unused] : drop) state_.erase(key);
}

void Optimizer::replace_parameter(const at::Tensor& old_param, const at::Tensor& new_param) {
  if (!new_param.defined()) throw Error("optimizer: replace_parameter got an undefined new parameter");
  if (!old_param.defined()) {
    if (groups_.empty()) groups_.emplace_back();
    groups_.front().params.push_back(new_param);
    return;
  }
  for (auto& group : groups_) {
    for (auto& p : group.params) {
      if (same(p, old_param)) {
        state_.erase(key_of(old_param));
        p = new_param;
        return;
      }
    }
  }
  std::string sizes;
  for (auto s : old_param.sizes()) sizes += (sizes.empty() ? "" : ", ") + std::to_string(s);
  throw Error("optimizer: replace_parameter: the parameter to replace (shape [" + sizes +
              "]) is in no parameter group");
}

bool Optimizer::contains(const at::Tensor& param) const {
  if (!param.defined()) return false;
  for (const auto& group : groups_) {
    for (const auto& p : group.params) {
      if (same(p, param)) return true;
    }
  }
  return false;
}

std::vector<at::Tensor>* Optimizer::state_of(const at::Tensor& param) {
  auto it = state_.find(key_of(param));
  return it == state_.end() ? nullptr : &it->second;
}

std::vector<at::Tensor>& Optimizer::state_for(const at::Tensor& param, size_t slots) {
  auto& st = state_[key_of(param)];
  if (st.size() < slots) st.resize(slots);
  return st;
}

// ------------------------------------------------------------------------------------------------ SGD

SGD::SGD(std::vector<at::Tensor> params, SGDOptions options)
    : Optimizer(std::move(params), options.lr()), options_(std::move(options)) {
  validate_options(options_, "optimizer");
  if (options_.nesterov() && (options_.momentum() <= 0 || options_.dampening() != 0)) {
    throw InputError(
        "optimizer.nesterov: Nesterov momentum needs momentum > 0 and dampening = 0 (got momentum " +
        fmt::format("{:g}, dampening {:g})", options_.momentum(), options_.dampening()));
  }
}

void SGD::step() {
  at::NoGradGuard no_grad;
  const double momentum = options_.momentum();
  const double dampening = options_.dampening();
  const double weight_decay = options_.weight_decay();
  const bool nesterov = options_.nesterov();
  const bool decoupled = options_.decoupled_weight_decay();
  for (auto& group : groups_) {
    const double lr = group.lr;
    // SGDW (Composer's DecoupledSGDW): the decay follows the schedule, not the raw lr.
    const double decay = decoupled && weight_decay != 0
                             ? 1.0 - (group.initial_lr != 0 ? lr / group.initial_lr : 1.0) * weight_decay
                             : 1.0;
    for (auto& p : group.params) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      at::Tensor d = grad;
      bool owned = false;  // whether `d` is a temporary of this step (safe to update in place)
      if (weight_decay != 0 && !decoupled) {
        d = grad.add(p, weight_decay);
        owned = true;
      }
      if (momentum != 0) {
        at::Tensor& buf = state_for(p, 1)[0];
        bool aliased = false;
        if (!buf.defined()) {
          // First step: buf = d (torch clones; a temporary can be adopted as is).
          buf = owned ? d : d.clone();
          aliased = owned;
        } else {
          buf.mul_(momentum).add_(d, 1 - dampening);
        }
        if (nesterov) {
          if (owned && !aliased) {
            d.add_(buf, momentum);
          } else {
            d = d.add(buf, momentum);
          }
        } else {
          d = buf;
        }
      }
      if (decay != 1.0) p.mul_(decay);
      p.add_(d, -lr);
    }
  }
  ++steps_;
}

// ------------------------------------------------------------------------------------------------ AdamW

AdamW::AdamW(std::vector<at::Tensor> params, AdamWOptions options)
    : Optimizer(std::move(params), options.lr()), options_(std::move(options)) {
  validate_options(options_, "optimizer");
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  const double beta1 = options_.beta1();
  const double beta2 = options_.beta2();
  const double eps = options_.eps();
  const double weight_decay = options_.weight_decay();
  for (auto& group : groups_) {
    const double lr = group.lr;
    for (auto& p : group.params) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      // State: exp_avg, exp_avg_sq, step (an int64 CPU scalar: each parameter counts its own steps, so a
      // parameter added by surgery starts its bias correction afresh).
      auto& st = state_for(p, 3);
      if (!st[0].defined()) {
        st[0] = at::zeros_like(p, at::MemoryFormat::Preserve);
        st[1] = at::zeros_like(p, at::MemoryFormat::Preserve);
        st[2] = at::zeros({}, at::TensorOptions().dtype(at::kLong));
      }
      if (!st[2].device().is_cpu()) st[2] = st[2].cpu();
      const int64_t step = ++*st[2].data_ptr<int64_t>();

      if (weight_decay != 0) p.mul_(1 - lr * weight_decay);
      at::Tensor& exp_avg = st[0];
      at::Tensor& exp_avg_sq = st[1];
      exp_avg.mul_(beta1).add_(grad, 1 - beta1);
      exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);

      const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(step));
      const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(step));
      const double step_size = lr / bias_correction1;
      at::Tensor denom = exp_avg_sq.sqrt();
      denom.div_(std::sqrt(bias_correction2)).add_(eps);
      p.addcdiv_(exp_avg, denom, -step_size);
    }
  }
  ++steps_;
}

}  // namespace tessera::optim
