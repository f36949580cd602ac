// Optimizer bookkeeping (groups chosen by name or shape), SGD, Adam, AdamW, Lion, RMSprop, Adagrad, LAMB and LARS.
// Updates run in place under NoGradGuard with the same ATen ops as torch::optim (SGD, Adam, AdamW, RMSprop and Adagrad
// are bitwise equal to torch::optim's).
#include <tessera/optim/optimizer.h>

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/autograd.h>

#include <tessera/error.h>

namespace tessera::optim {
namespace {

const void* key_of(const at::Tensor& t) { return t.unsafeGetTensorImpl(); }

bool same(const at::Tensor& a, const at::Tensor& b) {
  return a.unsafeGetTensorImpl() == b.unsafeGetTensorImpl();
}

/// "names [*.bias, fc.*], max_dims 1": what a group entry selects, for messages.
std::string describe_selector(const ParamGroupOptions& o) {
  std::string out;
  if (!o.names().empty()) out = fmt::format("names [{}]", fmt::join(o.names(), ", "));
  if (o.max_dims() >= 0) out += fmt::format("{}max_dims {}", out.empty() ? "" : ", ", o.max_dims());
  return out;
}

/// The checks the options' ranges cannot express.
void check_group_options(const std::vector<ParamGroupOptions>& groups) {
  for (size_t i = 0; i < groups.size(); ++i) {
    const ParamGroupOptions& g = groups[i];
    const std::string where = fmt::format("optimizer.groups[{}]", i);
    ParamGroupOptions ranges = g;
    validate_options(ranges, where);
    if (g.weight_decay() < 0 && g.weight_decay() != -1) {
      throw InputError(fmt::format("{}.weight_decay: {:g} is neither -1 (the optimizer's) nor >= 0", where,
                                   g.weight_decay()));
    }
    if (g.names().empty() && g.max_dims() < 0) {
      throw InputError(where + ": selects every parameter (neither names nor max_dims given); give names "
                               "(\"*.bias\", \"head.*\") or max_dims (1: biases and norms), or set the optimizer's own "
                               "lr and weight_decay");
    }
    if (g.lr() == 0 && g.weight_decay() == -1) {
      throw InputError(where + ": sets neither lr nor weight_decay, so the parameters it selects (" +
                       describe_selector(g) + ") would train exactly as the others; give the entry an lr or a "
                                              "weight_decay");
    }
    for (const auto& name : g.names()) {
      if (name.empty()) throw InputError(where + ".names: an empty name selects nothing; give a name or a pattern");
    }
  }
}

}  // namespace

bool glob_match(const std::string& pattern, const std::string& name) {
  // Greedy match with backtracking to the last `*`: linear in practice, never exponential.
  size_t p = 0, n = 0, star = std::string::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool ParamGroupOptions::selects(const std::string& name, const at::Tensor& param) const {
  if (max_dims_ >= 0 && param.dim() > max_dims_) return false;
  if (names_.empty()) return true;
  return std::any_of(names_.begin(), names_.end(), [&](const std::string& pattern) { return glob_match(pattern, name); });
}

double decoupled_decay_factor(const ParamGroup& group, bool lr_ratio) {
  if (group.weight_decay == 0) return 1.0;
  const double scale = lr_ratio ? (group.initial_lr != 0 ? group.lr / group.initial_lr : 1.0) : group.lr;
  return 1.0 - scale * group.weight_decay;
}

// ------------------------------------------------------------------------------------------------ Optimizer

namespace {

/// Parameters without names, named by position (the optimizers' constructors from a plain list); refuses groups that
/// select by name.
NamedParameters by_position(const std::vector<at::Tensor>& params, const std::vector<ParamGroupOptions>& groups) {
  for (size_t i = 0; i < groups.size(); ++i) {
    if (!groups[i].names().empty()) {
      throw InputError(fmt::format("optimizer.groups[{}].names: selecting parameters by name needs their names; "
                                   "build the optimizer from model->named_parameters()",
                                   i));
    }
  }
  NamedParameters named;
  for (size_t i = 0; i < params.size(); ++i) named.insert(std::to_string(i), params[i]);
  return named;
}

/// Constraints between an optimizer's options, beyond each option's range: none by default; Nesterov momentum needs
/// momentum > 0 and no dampening (SGD's and LARS's options).
template <class Options>
void check_combination(const Options& /*options*/) {}

template <class Options>
void check_nesterov(const Options& o) {
  if (o.nesterov() && (o.momentum() <= 0 || o.dampening() != 0)) {
    throw InputError(fmt::format(
        "optimizer.nesterov: Nesterov momentum needs momentum > 0 and dampening = 0 (got momentum {:g}, dampening {:g})",
        o.momentum(), o.dampening()));
  }
}
void check_combination(const SGDOptions& options) { check_nesterov(options); }
void check_combination(const LarsOptions& options) { check_nesterov(options); }

}  // namespace

template <class Options>
OptimizerWith<Options>::OptimizerWith(std::vector<at::Tensor> params, Options options)
    : OptimizerWith(by_position(params, options.groups()), options) {}  // (a copy: the arguments' order is unspecified)

template <class Options>
OptimizerWith<Options>::OptimizerWith(const NamedParameters& params, Options options)
    : Optimizer(params, options.lr(), options.weight_decay(), options.groups()), options_(std::move(options)) {
  validate_options(options_, "optimizer");
  check_combination(options_);
}

template class OptimizerWith<SGDOptions>;
template class OptimizerWith<AdamOptions>;
template class OptimizerWith<AdamWOptions>;
template class OptimizerWith<LionOptions>;
template class OptimizerWith<RMSpropOptions>;
template class OptimizerWith<AdagradOptions>;
template class OptimizerWith<LambOptions>;
template class OptimizerWith<LarsOptions>;

Optimizer::Optimizer(const NamedParameters& params, double lr, double weight_decay,
                     const std::vector<ParamGroupOptions>& groups) {
  check_group_options(groups);
  ParamGroup rest;
  rest.initial_lr = rest.lr = lr;
  rest.weight_decay = weight_decay;
  groups_.push_back(std::move(rest));
  for (const auto& g : groups) {
    ParamGroup group;
    group.initial_lr = group.lr = g.lr() > 0 ? g.lr() : lr;
    group.weight_decay = g.weight_decay() >= 0 ? g.weight_decay() : weight_decay;
    group.selector = g;
    groups_.push_back(std::move(group));
  }
  for (const auto& item : params) {
    if (!item.value().defined()) throw InputError("optimizer: parameter " + item.key() + " is an undefined tensor");
    size_t home = 0;
    while (home < groups.size() && !groups[home].selects(item.key(), item.value())) ++home;
    groups_[home == groups.size() ? 0 : home + 1].params.push_back(item.value());
  }
}

void Optimizer::check_groups(const NamedParameters& params) const {
  for (size_t i = 1; i < groups_.size(); ++i) {
    if (!groups_[i].params.empty()) continue;
    const ParamGroupOptions& selector = groups_[i].selector;
    const bool matched = std::any_of(params.begin(), params.end(), [&](const auto& item) {
      return selector.selects(item.key(), item.value());
    });
    std::vector<std::string> examples;
    for (const auto& item : params) {
      if (examples.size() == 4) break;
      examples.push_back(item.key());
    }
    throw InputError(fmt::format(
        "optimizer.{}.groups[{}] ({}) selects none of the model's {} parameters{}; the parameters are named like {}",
        name(), i - 1, describe_selector(selector), params.size(),
        matched ? " (every one it matches is taken by an earlier entry, and a parameter joins the first entry "
                  "that selects it)"
                : "",
        examples.empty() ? std::string("(none)") : fmt::format("{}", fmt::join(examples, ", "))));
  }
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
  if (!old_param.defined() || !new_param.defined()) {
    throw Error("optimizer: replace_parameter got an undefined parameter (add_parameter adds one)");
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

void Optimizer::add_parameter(const std::string& name, const at::Tensor& param) {
  if (!param.defined()) throw Error("optimizer: add_parameter got an undefined parameter \"" + name + "\"");
  if (groups_.empty()) groups_.emplace_back();
  for (size_t i = 1; i < groups_.size(); ++i) {
    if (groups_[i].selector.selects(name, param)) {
      groups_[i].params.push_back(param);
      return;
    }
  }
  groups_.front().params.push_back(param);
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

namespace {

struct Momentum {
  double momentum, dampening;
  bool nesterov;
};

/// SGD's momentum on the step direction `d` (`owned`: a temporary of this step, safe to update in place), with the
/// parameter's buffer `buf` (undefined before its first step): buf = d on the first step, else momentum buf +
/// (1 - dampening) d; returns d + momentum buf (Nesterov) or buf. The same ops as torch::optim::SGD.
at::Tensor apply_momentum(at::Tensor d, bool owned, at::Tensor& buf, const Momentum& m) {
  bool aliased = false;
  if (!buf.defined()) {
    // First step: buf = d (torch clones; a temporary can be adopted as is).
    buf = owned ? d : d.clone();
    aliased = owned;
  } else {
    buf.mul_(m.momentum).add_(d, 1 - m.dampening);
  }
  if (!m.nesterov) return buf;
  if (owned && !aliased) return d.add_(buf, m.momentum);
  return d.add(buf, m.momentum);
}

}  // namespace

void SGD::step() {
  at::NoGradGuard no_grad;
  const Momentum m{options_.momentum(), options_.dampening(), options_.nesterov()};
  const bool decoupled = options_.decoupled_weight_decay();
  for (auto& group : groups_) {
    const double lr = group.lr;
    const double weight_decay = group.weight_decay;
    // SGDW (Composer's DecoupledSGDW): the decay follows the schedule, not the raw lr.
    const double decay = decoupled ? decoupled_decay_factor(group, /*lr_ratio=*/true) : 1.0;
    for (auto& p : group.params) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      at::Tensor d = grad;
      bool owned = false;  // whether `d` is a temporary of this step (safe to update in place)
      if (weight_decay != 0 && !decoupled) {
        d = grad.add(p, weight_decay);
        owned = true;
      }
      if (m.momentum != 0) d = apply_momentum(d, owned, state_for(p, 1)[0], m);
      if (decay != 1.0) p.mul_(decay);
      p.add_(d, -lr);
    }
  }
  ++steps_;
}

// ------------------------------------------------------------------------------------------------ Adam, AdamW

namespace {

struct AdamSettings {
  double beta1, beta2, eps;
  bool amsgrad;
  bool l2;        ///< weight decay added to the gradient (Adam), else decoupled (AdamW)
  bool lr_ratio;  ///< decoupled decay by (lr/initial_lr) wd (Composer's DecoupledAdamW), else lr wd
};

/// Makes a parameter's Adam state ready and advances its step count: exp_avg, exp_avg_sq, step (an int64 CPU scalar:
/// each parameter counts its own steps, so a parameter added by surgery starts its bias correction afresh), and
/// max_exp_avg_sq with amsgrad. Then m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2. Returns the step count k.
int64_t adam_moments(std::vector<at::Tensor>& st, const at::Tensor& p, const at::Tensor& grad, double beta1,
                     double beta2, bool amsgrad) {
  if (!st[0].defined()) {
    st[0] = at::zeros_like(p, at::MemoryFormat::Preserve);
    st[1] = at::zeros_like(p, at::MemoryFormat::Preserve);
    st[2] = at::zeros({}, at::TensorOptions().dtype(at::kLong));
  }
  if (amsgrad && !st[3].defined()) st[3] = at::zeros_like(p, at::MemoryFormat::Preserve);
  if (!st[2].device().is_cpu()) st[2] = st[2].cpu();
  const int64_t step = ++*st[2].data_ptr<int64_t>();
  st[0].mul_(beta1).add_(grad, 1 - beta1);
  st[1].mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  return step;
}

/// One Adam(W) update of every parameter with a gradient; `state_for(p, slots)` gives a parameter's state.
template <class StateFor>
void adam_steps(std::vector<ParamGroup>& groups, const AdamSettings& a, StateFor&& state_for) {
  for (auto& group : groups) {
    const double lr = group.lr;
    const double decay = a.l2 ? 1.0 : decoupled_decay_factor(group, a.lr_ratio);
    for (auto& p : group.params) {
      at::Tensor grad = p.grad();
      if (!grad.defined()) continue;
      std::vector<at::Tensor>& st = state_for(p, a.amsgrad ? 4 : 3);
      if (a.l2 && group.weight_decay != 0) grad = grad.add(p, group.weight_decay);
      if (decay != 1.0) p.mul_(decay);
      const int64_t step = adam_moments(st, p, grad, a.beta1, a.beta2, a.amsgrad);

      const double bias_correction1 = 1 - std::pow(a.beta1, static_cast<double>(step));
      const double bias_correction2 = 1 - std::pow(a.beta2, static_cast<double>(step));
      const double step_size = lr / bias_correction1;
      at::Tensor second = st[1];
      if (a.amsgrad) second = at::maximum_out(st[3], st[3], st[1]);
      at::Tensor denom = second.sqrt();
      denom.div_(std::sqrt(bias_correction2)).add_(a.eps);
      p.addcdiv_(st[0], denom, -step_size);
    }
  }
}

}  // namespace

void Adam::step() {
  at::NoGradGuard no_grad;
  const AdamSettings a{options_.beta1(), options_.beta2(), options_.eps(), options_.amsgrad(), true, false};
  adam_steps(groups_, a, [this](const at::Tensor& p, size_t slots) -> auto& { return state_for(p, slots); });
  ++steps_;
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  const AdamSettings a{options_.beta1(), options_.beta2(), options_.eps(), options_.amsgrad(), false,
                       options_.decoupled_weight_decay()};
  adam_steps(groups_, a, [this](const at::Tensor& p, size_t slots) -> auto& { return state_for(p, slots); });
  ++steps_;
}

// ------------------------------------------------------------------------------------------------ Lion

void Lion::step() {
  at::NoGradGuard no_grad;
  const double beta1 = options_.beta1();
  const double beta2 = options_.beta2();
  for (auto& group : groups_) {
    const double decay = decoupled_decay_factor(group, options_.decoupled_weight_decay());
    for (auto& p : group.params) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      at::Tensor& exp_avg = state_for(p, 1)[0];
      if (!exp_avg.defined()) exp_avg = at::zeros_like(p, at::MemoryFormat::Preserve);
      if (decay != 1.0) p.mul_(decay);
      p.add_(exp_avg.lerp(grad, 1 - beta1).sign_(), -group.lr);
      exp_avg.lerp_(grad, 1 - beta2);
    }
  }
  ++steps_;
}

// ------------------------------------------------------------------------------------------------ RMSprop, Adagrad

void RMSprop::step() {
  at::NoGradGuard no_grad;
  const double alpha = options_.alpha();
  const double momentum = options_.momentum();
  const bool centered = options_.centered();
  for (auto& group : groups_) {
    for (auto& p : group.params) {
      at::Tensor grad = p.grad();
      if (!grad.defined()) continue;
      // State: square_avg, momentum_buffer, grad_avg (the last two only when used), all starting at zero.
      std::vector<at::Tensor>& st = state_for(p, 3);
      for (int i = 0; i < 3; ++i) {
        const bool used = i == 0 || (i == 1 && momentum > 0) || (i == 2 && centered);
        if (used && !st[i].defined()) st[i] = at::zeros_like(p, at::MemoryFormat::Preserve);
      }
      if (group.weight_decay != 0) grad = grad.add(p, group.weight_decay);
      st[0].mul_(alpha).addcmul_(grad, grad, 1 - alpha);
      at::Tensor avg;
      if (centered) {
        st[2].mul_(alpha).add_(grad, 1 - alpha);
        avg = st[0].addcmul(st[2], st[2], -1).sqrt_().add_(options_.eps());
      } else {
        avg = st[0].sqrt().add_(options_.eps());
      }
      if (momentum > 0) {
        st[1].mul_(momentum).addcdiv_(grad, avg);
        p.add_(st[1], -group.lr);
      } else {
        p.addcdiv_(grad, avg, -group.lr);
      }
    }
  }
  ++steps_;
}

void Adagrad::step() {
  at::NoGradGuard no_grad;
  for (auto& group : groups_) {
    for (auto& p : group.params) {
      at::Tensor grad = p.grad();
      if (!grad.defined()) continue;
      // State: sum (from initial_accumulator_value), step (an int64 CPU scalar, per parameter).
      std::vector<at::Tensor>& st = state_for(p, 2);
      if (!st[0].defined()) {
        st[0] = at::full_like(p, options_.initial_accumulator_value(), at::MemoryFormat::Preserve);
        st[1] = at::zeros({}, at::TensorOptions().dtype(at::kLong));
      }
      if (!st[1].device().is_cpu()) st[1] = st[1].cpu();
      const int64_t step = ++*st[1].data_ptr<int64_t>();
      if (group.weight_decay != 0) grad = grad.add(p, group.weight_decay);
      const double clr = group.lr / (1 + static_cast<double>(step - 1) * options_.lr_decay());
      st[0].addcmul_(grad, grad, 1.0);
      const at::Tensor std = st[0].sqrt().add_(options_.eps());
      p.addcdiv_(grad, std, -clr);
    }
  }
  ++steps_;
}

// ------------------------------------------------------------------------------------------------ LAMB, LARS

namespace {

/// `ratio` where both norms are positive, else 1: a layer whose weights or update are all zero moves as the lr says.
/// Stays on the device (no read-back).
at::Tensor guarded_ratio(const at::Tensor& ratio, const at::Tensor& weight_norm, const at::Tensor& other_norm) {
  return ratio.masked_fill(weight_norm.gt(0).logical_and_(other_norm.gt(0)).logical_not_(), 1.0);
}

}  // namespace

void Lamb::step() {
  at::NoGradGuard no_grad;
  const double beta1 = options_.beta1();
  const double beta2 = options_.beta2();
  for (auto& group : groups_) {
    const double weight_decay = group.weight_decay;
    const bool adapt = weight_decay != 0 || options_.always_adapt();
    for (auto& p : group.params) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      std::vector<at::Tensor>& st = state_for(p, 3);
      const int64_t step = adam_moments(st, p, grad, beta1, beta2, /*amsgrad=*/false);
      const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(step));
      const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(step));
      const at::Tensor denom = st[1].sqrt().div_(std::sqrt(bias_correction2)).add_(options_.eps());
      at::Tensor update = st[0].div(bias_correction1).div_(denom);
      if (weight_decay != 0) update.add_(p, weight_decay);
      if (adapt) {
        const at::Tensor weight_norm = p.norm();
        const at::Tensor update_norm = update.norm();
        at::Tensor ratio = guarded_ratio(weight_norm / update_norm, weight_norm, update_norm);
        if (options_.trust_clip()) ratio = ratio.clamp_max(1.0);
        update.mul_(ratio);
      }
      p.add_(update, -group.lr);
    }
  }
  ++steps_;
}

void Lars::step() {
  at::NoGradGuard no_grad;
  const Momentum m{options_.momentum(), options_.dampening(), options_.nesterov()};
  for (auto& group : groups_) {
    const double weight_decay = group.weight_decay;
    const bool adapt = weight_decay != 0 || options_.always_adapt();
    for (auto& p : group.params) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      at::Tensor d = grad;
      bool owned = false;
      if (adapt) {
        const at::Tensor weight_norm = p.norm();
        const at::Tensor grad_norm = grad.norm();
        at::Tensor ratio = weight_norm * options_.trust_coefficient() /
                           (grad_norm + weight_norm * weight_decay + options_.eps());
        ratio = guarded_ratio(ratio, weight_norm, grad_norm);
        if (options_.trust_clip()) ratio = ratio.div(group.lr).clamp_max_(1.0);
        d = weight_decay != 0 ? grad.add(p, weight_decay).mul_(ratio) : grad.mul(ratio);
        owned = true;
      }
      if (m.momentum != 0) d = apply_momentum(d, owned, state_for(p, 1)[0], m);
      p.add_(d, -group.lr);
    }
  }
  ++steps_;
}

}  // namespace tessera::optim
