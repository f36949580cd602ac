// Optimizer bookkeeping (groups chosen by name or shape), SGD, Adam, AdamW, Lion, RMSprop, Adagrad, NAdam,
// RAdam, Adamax, Adadelta, Adafactor, LAMB, LARS and Muon. Updates run in place under NoGradGuard with the same ATen
// ops as torch::optim (SGD, Adam, AdamW, RMSprop and Adagrad are bitwise equal to torch::optim's) or torch.optim of
// torch 2.x (NAdam, RAdam, Adamax, Adadelta, Adafactor, Muon).
#include <tessera/optim/optimizer.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

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

/// As torch, before any state changes: only SGD takes sparse gradients (an nn.Embedding(sparse=True)'s).
void refuse_sparse_gradients(const std::vector<ParamGroup>& groups, const std::string& optimizer) {
  for (const auto& group : groups) {
    for (const auto& p : group.params) {
      if (p.grad().defined() && p.grad().is_sparse()) {
        throw InputError(
            fmt::format("optimizer {}: a parameter of shape {} has a sparse gradient (an "
                        "nn.Embedding(sparse=True) or EmbeddingBag), which {} does not take; make it "
                        "dense (sparse=False), or use sgd",
                        optimizer, fmt::join(p.sizes(), "x"), optimizer));
      }
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
void check_combination(const MuonOptions& options) {
  if (options.ns_coefficients().size() != 3) {
    throw InputError(
        fmt::format("optimizer.ns_coefficients: expected the 3 coefficients a, b, c of the Newton-Schulz "
                    "iteration (default [3.4445, -4.7750, 2.0315]), got {}",
                    options.ns_coefficients().size()));
  }
  for (const double c : options.ns_coefficients()) {
    if (!std::isfinite(c)) {
      throw InputError(
          fmt::format("optimizer.ns_coefficients: {} is not a finite number; expected the coefficients "
                      "a, b, c of the Newton-Schulz iteration (default [3.4445, -4.7750, 2.0315])",
                      c));
    }
  }
  for (const auto& name : options.adamw_names()) {
    if (name.empty())
      throw InputError("optimizer.adamw_names: an empty name selects nothing; give a name or a pattern");
  }
}

}  // namespace

/// Whether an optimizer's options have a beta1, or a momentum.
template <class O, class = void>
struct HasBeta1 : std::false_type {};
template <class O>
struct HasBeta1<O, std::void_t<decltype(std::declval<const O&>().beta1())>> : std::true_type {};
template <class O, class = void>
struct HasMomentum : std::false_type {};
template <class O>
struct HasMomentum<O, std::void_t<decltype(std::declval<const O&>().momentum())>> : std::true_type {};

template <class Options>
std::string OptimizerWith<Options>::momentum_option() const {
  if constexpr (std::is_same_v<Options, MuonOptions>) {
    return {};  // two momenta (its own, its AdamW's beta1): which one a schedule would set is not clear
  } else if constexpr (HasBeta1<Options>::value) {
    return "beta1";
  } else if constexpr (HasMomentum<Options>::value) {
    return "momentum";
  } else {
    return {};
  }
}

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
template class OptimizerWith<NAdamOptions>;
template class OptimizerWith<RAdamOptions>;
template class OptimizerWith<AdamaxOptions>;
template class OptimizerWith<AdadeltaOptions>;
template class OptimizerWith<AdafactorOptions>;
template class OptimizerWith<LambOptions>;
template class OptimizerWith<LarsOptions>;
template class OptimizerWith<MuonOptions>;

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
        "optimizer.{}.groups[{}]: {} selects none of the model's {} parameters{}; the parameters are named like {}",
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

void Optimizer::set_momentum(std::optional<double> momentum) {
  if (momentum) {
    const std::string option = momentum_option();
    if (option.empty()) {
      throw InputError(fmt::format("optimizer: {} has no momentum for a schedule to set; momentum schedules "
                                   "(onecycle's cycle_momentum) set sgd's, rmsprop's or lars's momentum, or the Adams', "
                                   "lion's or lamb's beta1",
                                   name()));
    }
    if (!(*momentum >= 0 && *momentum < 1)) {
      throw InputError(fmt::format("optimizer.{}: a schedule set it to {}; expected a value in [0, 1)", option,
                                   *momentum));
    }
  }
  momentum_ = momentum;
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
  for (const auto& p : params) {
    if (p.defined()) on_removed(p);
  }
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
        on_replaced(old_param, new_param);
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
  size_t home = 0;
  for (size_t i = 1; i < groups_.size() && home == 0; ++i) {
    if (groups_[i].selector.selects(name, param)) home = i;
  }
  groups_[home].params.push_back(param);
  on_added(name, param);
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
  const Momentum m{momentum_or(options_.momentum()), options_.dampening(), options_.nesterov()};
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

/// Makes the Adam family's state of a parameter ready and advances its step count: exp_avg, exp_avg_sq (zeros) and
/// step (an int64 CPU scalar: each parameter counts its own steps, so a parameter added by surgery starts its bias
/// correction afresh). Returns the step count k.
int64_t adam_state_step(std::vector<at::Tensor>& st, const at::Tensor& p) {
  if (!st[0].defined()) {
    st[0] = at::zeros_like(p, at::MemoryFormat::Preserve);
    st[1] = at::zeros_like(p, at::MemoryFormat::Preserve);
    st[2] = at::zeros({}, at::TensorOptions().dtype(at::kLong));
  }
  if (!st[2].device().is_cpu()) st[2] = st[2].cpu();
  return ++*st[2].data_ptr<int64_t>();
}

/// adam_state_step, and max_exp_avg_sq with amsgrad; then m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2 (torch::optim's
/// ops). Returns the step count k.
int64_t adam_moments(std::vector<at::Tensor>& st, const at::Tensor& p, const at::Tensor& grad, double beta1,
                     double beta2, bool amsgrad) {
  const int64_t step = adam_state_step(st, p);
  if (amsgrad && !st[3].defined()) st[3] = at::zeros_like(p, at::MemoryFormat::Preserve);
  st[0].mul_(beta1).add_(grad, 1 - beta1);
  st[1].mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  return step;
}

/// One Adam(W) update of the parameter `p` with the gradient `grad` and the state `st` (slots: 3, 4 with
/// amsgrad), at the learning rate `lr`; `decay` is the decoupled weight decay's factor (1: none), `l2` the
/// weight decay added to the gradient (0: none). The same ops as torch::optim::Adam(W).
void adam_update(at::Tensor& p, at::Tensor grad, std::vector<at::Tensor>& st, const AdamSettings& a,
                 double lr, double l2, double decay) {
  if (l2 != 0) grad = grad.add(p, l2);
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

/// One Adam(W) update of every parameter with a gradient; `state_for(p, slots)` gives a parameter's state.
template <class StateFor>
void adam_steps(std::vector<ParamGroup>& groups, const AdamSettings& a, StateFor&& state_for) {
  for (auto& group : groups) {
    const double decay = a.l2 ? 1.0 : decoupled_decay_factor(group, a.lr_ratio);
    const double l2 = a.l2 ? group.weight_decay : 0.0;
    for (auto& p : group.params) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      adam_update(p, grad, state_for(p, a.amsgrad ? 4 : 3), a, group.lr, l2, decay);
    }
  }
}

}  // namespace

void Adam::step() {
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const AdamSettings a{momentum_or(options_.beta1()), options_.beta2(), options_.eps(), options_.amsgrad(), true,
                       false};
  adam_steps(groups_, a, [this](const at::Tensor& p, size_t slots) -> auto& { return state_for(p, slots); });
  ++steps_;
}

void AdamW::step() {
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const AdamSettings a{momentum_or(options_.beta1()), options_.beta2(), options_.eps(), options_.amsgrad(), false,
                       options_.decoupled_weight_decay()};
  adam_steps(groups_, a, [this](const at::Tensor& p, size_t slots) -> auto& { return state_for(p, slots); });
  ++steps_;
}

// ------------------------------------------------------------------------------------------------ Lion

void Lion::step() {
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const double beta1 = momentum_or(options_.beta1());
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
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const double alpha = options_.alpha();
  const double momentum = momentum_or(options_.momentum());
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
  refuse_sparse_gradients(groups_, name());
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

// ------------------------------------------------------------------------------------------------ NAdam, RAdam

namespace {

/// adam_state_step; the step's weight decay applied (decoupled: p *= 1 - lr wd; else the returned gradient has
/// wd p added); then the moments as torch 2.x's torch.optim updates them: m = lerp(m, g, 1 - b1),
/// v = b2 v + (1 - b2) g^2. Returns the gradient used and the step count k.
std::pair<at::Tensor, int64_t> torch2_moments(std::vector<at::Tensor>& st, at::Tensor& p, at::Tensor grad,
                                              double beta1, double beta2, double lr, double weight_decay,
                                              bool decoupled) {
  const int64_t step = adam_state_step(st, p);
  if (weight_decay != 0) {
    if (decoupled) {
      p.mul_(1 - lr * weight_decay);
    } else {
      grad = grad.add(p, weight_decay);
    }
  }
  st[0].lerp_(grad, 1 - beta1);
  st[1].mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  return {grad, step};
}

}  // namespace

void NAdam::step() {
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const NAdamOptions& o = options_;
  const double beta1 = momentum_or(o.beta1());
  for (auto& group : groups_) {
    const double lr = group.lr;
    for (auto& p : group.params) {
      if (!p.grad().defined()) continue;
      std::vector<at::Tensor>& st = state_for(p, 4);
      const auto [grad, k] = torch2_moments(st, p, p.grad(), beta1, o.beta2(), lr, group.weight_decay,
                                            o.decoupled_weight_decay());
      // mu_product is a float32 scalar on the host, as torch keeps it (its rounding is part of the update).
      if (!st[3].defined()) st[3] = at::ones({}, at::TensorOptions().dtype(at::kFloat));
      if (!st[3].device().is_cpu()) st[3] = st[3].cpu();
      const double step = static_cast<double>(k);
      const double bias_correction2 = 1 - std::pow(o.beta2(), step);
      const double mu = beta1 * (1.0 - 0.5 * std::pow(0.96, step * o.momentum_decay()));
      const double mu_next = beta1 * (1.0 - 0.5 * std::pow(0.96, (step + 1) * o.momentum_decay()));
      st[3].mul_(mu);
      const double mu_product = st[3].item<double>();
      const double mu_product_next = mu_product * mu_next;
      at::Tensor denom = st[1].div(bias_correction2).sqrt();
      denom.add_(o.eps());
      p.addcdiv_(grad, denom, -lr * (1.0 - mu) / (1.0 - mu_product));
      p.addcdiv_(st[0], denom, (-lr * mu_next) / (1.0 - mu_product_next));
    }
  }
  ++steps_;
}

void RAdam::step() {
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const RAdamOptions& o = options_;
  const double beta1 = momentum_or(o.beta1());
  const double rho_inf = 2 / (1 - o.beta2()) - 1;
  for (auto& group : groups_) {
    const double lr = group.lr;
    for (auto& p : group.params) {
      if (!p.grad().defined()) continue;
      std::vector<at::Tensor>& st = state_for(p, 3);
      const int64_t k = torch2_moments(st, p, p.grad(), beta1, o.beta2(), lr, group.weight_decay,
                                       o.decoupled_weight_decay())
                            .second;
      const double step = static_cast<double>(k);
      const double bias_correction1 = 1 - std::pow(beta1, step);
      const double bias_correction2 = 1 - std::pow(o.beta2(), step);
      const at::Tensor bias_corrected_exp_avg = st[0] / bias_correction1;
      // The length of the approximated simple moving average of the second moment.
      const double rho_t = rho_inf - 2 * step * std::pow(o.beta2(), step) / bias_correction2;
      if (rho_t > 5.0) {
        const double rect =
            std::pow((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5);
        // (torch: bias_correction2 ** 0.5 / sqrt_v is sqrt_v.reciprocal() * bias_correction2 ** 0.5)
        const at::Tensor adaptive_lr =
            st[1].sqrt().add_(o.eps()).reciprocal() * std::pow(bias_correction2, 0.5);
        p.add_(bias_corrected_exp_avg * lr * adaptive_lr * rect, -1.0);
      } else {
        p.add_(bias_corrected_exp_avg * lr, -1.0);
      }
    }
  }
  ++steps_;
}

// ------------------------------------------------------------------------------------------------ Adamax, Adadelta

void Adamax::step() {
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const AdamaxOptions& o = options_;
  const double beta1 = momentum_or(o.beta1());
  for (auto& group : groups_) {
    for (auto& p : group.params) {
      if (!p.grad().defined()) continue;
      std::vector<at::Tensor>& st = state_for(p, 3);  // exp_avg, exp_inf, step
      const int64_t k = adam_state_step(st, p);
      at::Tensor grad = p.grad();
      if (group.weight_decay != 0) grad = grad.add(p, group.weight_decay);
      st[0].lerp_(grad, 1 - beta1);
      at::maximum_out(st[1], st[1].mul_(o.beta2()), grad.abs().add_(o.eps()));
      const double clr = group.lr / (1 - std::pow(beta1, static_cast<double>(k)));
      p.addcdiv_(st[0], st[1], -clr);
    }
  }
  ++steps_;
}

void Adadelta::step() {
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const AdadeltaOptions& o = options_;
  for (auto& group : groups_) {
    for (auto& p : group.params) {
      if (!p.grad().defined()) continue;
      std::vector<at::Tensor>& st = state_for(p, 3);  // square_avg, acc_delta, step
      adam_state_step(st, p);
      at::Tensor grad = p.grad();
      if (group.weight_decay != 0) grad = grad.add(p, group.weight_decay);
      st[0].mul_(o.rho()).addcmul_(grad, grad, 1 - o.rho());
      const at::Tensor rms_grad = st[0].add(o.eps()).sqrt_();
      at::Tensor delta = st[1].add(o.eps()).sqrt_();
      delta.div_(rms_grad).mul_(grad);
      st[1].mul_(o.rho()).addcmul_(delta, delta, 1 - o.rho());
      p.add_(delta, -group.lr);
    }
  }
  ++steps_;
}

// ------------------------------------------------------------------------------------------------ Adafactor

namespace {

/// torch.finfo(dtype).eps.
double machine_epsilon(at::ScalarType type) {
  switch (type) {
    case at::kDouble:
      return std::numeric_limits<double>::epsilon();
    case at::kHalf:
      return 0.0009765625;  // 2^-10
    case at::kBFloat16:
      return 0.0078125;  // 2^-7
    default:
      return std::numeric_limits<float>::epsilon();
  }
}

/// sqrt(numel): the divisor that turns an L2 norm into an RMS.
double sqrt_numel(const at::Tensor& t) { return std::pow(static_cast<double>(t.numel()), 0.5); }

}  // namespace

void Adafactor::step() {
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const AdafactorOptions& o = options_;
  for (auto& group : groups_) {
    const double lr = group.lr;
    for (auto& p : group.params) {
      if (!p.grad().defined()) continue;
      const at::Tensor& grad = p.grad();
      std::vector<at::Tensor>& st = state_for(p, 4);  // row_var, col_var (matrices); variance (others); step
      if (!st[3].defined()) {
        if (grad.dim() > 1) {
          std::vector<int64_t> rows = grad.sizes().vec(), cols = grad.sizes().vec();
          rows.back() = 1;
          cols[cols.size() - 2] = 1;
          st[0] = at::zeros(rows, grad.options());
          st[1] = at::zeros(cols, grad.options());
        } else {
          st[2] = at::zeros_like(grad, at::MemoryFormat::Preserve);
        }
        st[3] = at::zeros({}, at::TensorOptions().dtype(at::kLong));
      }
      if (!st[3].device().is_cpu()) st[3] = st[3].cpu();
      const double k = static_cast<double>(++*st[3].data_ptr<int64_t>());
      const double eps1 = o.eps1() > 0 ? o.eps1() : machine_epsilon(p.scalar_type());
      const double weight = std::pow(k, o.beta2_decay());  // 1 - beta2 at step k
      const double relative_step = std::min(lr, 1 / std::pow(k, 0.5));
      const double alpha =
          std::max(o.eps2(), at::linalg_vector_norm(p, 2).item<double>() / sqrt_numel(p)) * relative_step;
      if (group.weight_decay != 0) p.mul_(1 - lr * group.weight_decay);
      at::Tensor estimate;
      if (grad.dim() > 1) {
        // mean(g^2) along the last dimension, then along the one before (without g^2 itself).
        const at::Tensor row_mean =
            at::linalg_vector_norm(grad, 2, std::vector<int64_t>{-1}, true).square_().div_(grad.size(-1));
        st[0].lerp_(row_mean, weight);
        const at::Tensor col_mean =
            at::linalg_vector_norm(grad, 2, std::vector<int64_t>{-2}, true).square_().div_(grad.size(-2));
        st[1].lerp_(col_mean, weight);
        estimate = at::matmul(st[0], st[1]);
        estimate.div_(st[0].mean({-2}, true).clamp_(eps1, c10::nullopt));
      } else {
        st[2].lerp_(grad * grad, weight);
        estimate = st[2].clone();
      }
      at::Tensor update = estimate.clamp_(eps1 * eps1, c10::nullopt).rsqrt_();
      update.mul_(grad);
      const double update_norm = at::linalg_vector_norm(update, 2).item<double>();
      const double denom = std::max(1.0, update_norm / (sqrt_numel(update) * o.d()));  // RMS(U) / d, as torch rounds it
      p.add_(update, -alpha / denom);
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
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const double beta1 = momentum_or(options_.beta1());
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
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const Momentum m{momentum_or(options_.momentum()), options_.dampening(), options_.nesterov()};
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

// ------------------------------------------------------------------------------------------------ Muon

at::Tensor newton_schulz(const at::Tensor& g, int64_t steps, const std::array<double, 3>& coefficients,
                         double eps) {
  if (g.dim() != 2)
    throw InputError(fmt::format("newton_schulz: expected a matrix, got {} dimensions", g.dim()));
  const auto [a, b, c] = coefficients;
  const bool tall = g.size(0) > g.size(1);
  at::Tensor x = g.to(at::kBFloat16, /*non_blocking=*/false, /*copy=*/true);
  if (tall) x = x.t();
  x.div_(at::linalg_vector_norm(x, 2).clamp(eps));
  for (int64_t i = 0; i < steps; ++i) {
    const at::Tensor gram = at::matmul(x, x.t());
    const at::Tensor gram_update = at::addmm(gram, gram, gram, b, c);
    x = at::addmm(x, gram_update, x, a);
  }
  return tall ? x.t() : x;
}

namespace {

/// NamedParameters of a plain list ("0", "1", ...), refusing `adamw_names` (they need the parameters' names).
NamedParameters muon_by_position(const std::vector<at::Tensor>& params, const MuonOptions& options) {
  if (!options.adamw_names().empty()) {
    throw InputError(
        "optimizer.adamw_names: selecting matrices by name needs their names; build the optimizer from "
        "model->named_parameters()");
  }
  return by_position(params, options.groups());
}

/// The lr of an A x B matrix under Muon's `adjust_lr` rule.
double adjusted_lr(double lr, const std::string& rule, double rows, double cols) {
  if (rule == "original") return lr * std::sqrt(std::max(1.0, rows / cols));
  if (rule == "match_rms_adamw")
    return lr * (0.2 * std::sqrt(std::max(rows, cols)));  // torch's grouping, bitwise
  if (rule == "spectral_unclamped") return lr * std::sqrt(rows / cols);
  return lr;
}

}  // namespace

Muon::Muon(std::vector<at::Tensor> params, MuonOptions options)
    : Muon(muon_by_position(params, options), options) {}  // (a copy: the arguments' order is unspecified)

Muon::Muon(const NamedParameters& params, MuonOptions options) : OptimizerWith(params, std::move(options)) {
  for (const auto& item : params) classify(item.key(), item.value());
}

void Muon::classify(const std::string& name, const at::Tensor& param) {
  const auto& patterns = options_.adamw_names();
  adamw_[key_of(param)] =
      param.dim() < 2 || std::any_of(patterns.begin(), patterns.end(),
                                     [&](const std::string& p) { return glob_match(p, name); });
}

bool Muon::uses_adamw(const at::Tensor& param) const {
  auto it = adamw_.find(key_of(param));
  return it != adamw_.end() ? it->second : param.dim() < 2;
}

void Muon::on_added(const std::string& name, const at::Tensor& param) { classify(name, param); }

void Muon::on_replaced(const at::Tensor& old_param, const at::Tensor& new_param) {
  const bool adamw = uses_adamw(old_param);
  adamw_.erase(key_of(old_param));
  adamw_[key_of(new_param)] = adamw || new_param.dim() < 2;
}

void Muon::on_removed(const at::Tensor& param) { adamw_.erase(key_of(param)); }

void Muon::step() {
  refuse_sparse_gradients(groups_, name());
  at::NoGradGuard no_grad;
  const double momentum = options_.momentum();
  const std::vector<double>& c = options_.ns_coefficients();
  const std::array<double, 3> coefficients{c.at(0), c.at(1), c.at(2)};
  const AdamSettings adamw{
      options_.adamw_beta1(), options_.adamw_beta2(), options_.adamw_eps(), false, false, false};
  for (auto& group : groups_) {
    // An entry's own lr and weight decay hold for both kinds of parameter; otherwise AdamW's follow the
    // schedule as Muon's do.
    const double alpha = group.lr / group.initial_lr;
    const double adamw_lr = group.selector.lr() > 0 ? group.lr : options_.adamw_lr() * alpha;
    const double adamw_decay =
        group.selector.weight_decay() >= 0 ? group.weight_decay : options_.adamw_weight_decay();
    for (auto& p : group.params) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      if (uses_adamw(p)) {
        adam_update(p, grad, state_for(p, 3), adamw, adamw_lr, 0.0, 1.0 - adamw_lr * adamw_decay);
        continue;
      }
      at::Tensor& buf = state_for(p, 1)[0];
      if (!buf.defined()) buf = at::zeros_like(grad, at::MemoryFormat::Preserve);
      buf.lerp_(grad, 1 - momentum);
      const at::Tensor direction = options_.nesterov() ? grad.lerp(buf, momentum) : buf;
      const at::Tensor matrix = direction.dim() == 2 ? direction : direction.reshape({direction.size(0), -1});
      const at::Tensor update = newton_schulz(matrix, options_.ns_steps(), coefficients, options_.eps());
      const double lr = adjusted_lr(group.lr, options_.adjust_lr(), static_cast<double>(matrix.size(0)),
                                    static_cast<double>(matrix.size(1)));
      if (group.weight_decay != 0) p.mul_(1 - group.lr * group.weight_decay);
      p.add_(update.dim() == p.dim() ? update : update.reshape(p.sizes()), -lr);
    }
  }
  ++steps_;
}

}  // namespace tessera::optim
