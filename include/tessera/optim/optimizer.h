#pragma once
/// Optimizers: SGD (momentum, Nesterov, L2 or decoupled weight decay), Adam, AdamW (both with AMSGrad), Lion,
/// RMSprop, Adagrad, NAdam, RAdam, Adamax, Adadelta, Adafactor (factored second moments), the layer-wise
/// large-batch ones LAMB and LARS, and Muon (orthogonalised momentum for the weight matrices, AdamW for the rest),
/// with parameter groups chosen by name or shape (no weight decay on biases and norms, a head with its own lr).
///
/// Tessera has its own small optimizer classes rather than torch::optim's so that parameter groups can be
/// edited by algorithms (surgery replaces parameters, layer freezing removes them together with their
/// state), their state serialises exactly, and the code is the same on LibTorch 1.13 and 2.x.
/// The learning rate of a group is `initial_lr * alpha`, alpha coming from the schedulers.
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/ordered_dict.h>

#include <tessera/options.h>

namespace tessera::optim {

/// The model's parameters by dotted name, as Model::named_parameters() gives them.
using NamedParameters = torch::OrderedDict<std::string, at::Tensor>;

/// One entry of an optimizer's `groups`: which parameters it takes and what it sets for them. A parameter joins
/// the first entry that selects it; the ones no entry selects stay in group 0, which has the optimizer's own lr
/// and weight decay. Entry i is group i + 1.
///
///     adamw: {lr: 1.0e-3, weight_decay: 0.1, groups: [{max_dims: 1, weight_decay: 0}]}   # no decay on biases, norms
///     sgd: {lr: 0.01, groups: [{names: ["fc.*"], lr: 0.1}]}                              # the head learns faster
///
/// Every optimizer is built from the model's named parameters (model->named_parameters()) or from a plain list of
/// tensors, whose groups can select by max_dims only.
struct ParamGroupOptions {
  /// Parameter names to select, as dotted paths ("layer1.0.conv1.weight"); `*` matches any run of characters,
  /// dots included, and `?` one character. Empty: any name.
  TESSERA_OPTION(std::vector<std::string>, names) = {};
  /// Select only parameters of at most this many dimensions (1: biases and normalisation weights); -1: any.
  TESSERA_OPTION(int64_t, max_dims) = -1;
  /// The group's learning rate (schedulers scale it as they scale the optimizer's); 0: the optimizer's.
  TESSERA_OPTION(double, lr) = 0.0;
  /// The group's weight decay (applied as the optimizer applies its own); -1: the optimizer's.
  TESSERA_OPTION(double, weight_decay) = -1.0;
  template <class V>
  void visit(V& v) {
    v("names", names_, "parameter names to select (* and ? wildcards); empty: any", Any{});
    v("max_dims", max_dims_, "select parameters of at most this many dimensions; -1: any", Range::at_least(-1));
    v("lr", lr_, "the group's learning rate; 0: the optimizer's", Range::at_least(0));
    v("weight_decay", weight_decay_, "the group's weight decay; -1: the optimizer's", Range::at_least(-1));
  }
  /// Whether the entry takes the parameter called `name`.
  bool selects(const std::string& name, const at::Tensor& param) const;
};

/// True when `name` matches the glob `pattern` as a whole (`*`: any run of characters, `?`: one character).
bool glob_match(const std::string& pattern, const std::string& name);

/// A set of parameters sharing a learning rate and a weight decay.
struct ParamGroup {
  std::vector<at::Tensor> params;
  double initial_lr = 0.0;    ///< the lr given by the options; schedulers scale it
  double lr = 0.0;            ///< the lr used by the next step
  double weight_decay = 0.0;  ///< the group's weight decay
  /// What put parameters in this group (group 0: nothing, it takes the rest); add_parameter reads it.
  ParamGroupOptions selector;
};

/// Base of the optimizers: parameter groups, per-parameter state, and the edits algorithms make to them.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One update from the current gradients (parameters without a gradient are skipped).
  virtual void step() = 0;
  /// Name in recipes: "sgd", "adam", "adamw", "lion", "rmsprop", "adagrad", "nadam", "radam", "lamb", "lars",
  /// "muon".
  virtual std::string name() const = 0;

  /// Clears gradients (to undefined tensors when `set_to_none`).
  void zero_grad(bool set_to_none = true);
  std::vector<ParamGroup>& param_groups() noexcept { return groups_; }
  const std::vector<ParamGroup>& param_groups() const noexcept { return groups_; }
  /// Sets every group's lr to initial_lr * alpha.
  void set_lr_factor(double alpha);
  /// The option a momentum schedule sets (onecycle's `cycle_momentum`, torch's cycled momentum): "momentum" (SGD,
  /// RMSprop, LARS) or "beta1" (Adam, AdamW, NAdam, RAdam, Adamax, Lion, LAMB); "" for an optimizer without one
  /// (Adagrad, Adadelta, Adafactor) or with two (Muon: its own and its AdamW's beta1).
  virtual std::string momentum_option() const { return {}; }
  /// Sets the momentum_option() of the steps that follow (every group's), in place of the options' value;
  /// std::nullopt goes back to the options' value. InputError for an optimizer without a momentum_option() or a
  /// value outside [0, 1).
  void set_momentum(std::optional<double> momentum);
  /// The momentum set by set_momentum (std::nullopt: the options' value is used).
  std::optional<double> momentum() const noexcept { return momentum_; }

  /// Removes parameters from every group and drops their state (layer freezing).
  void remove_parameters(const std::vector<at::Tensor>& params);
  /// Replaces `old_param` by `new_param` in its group, at its position (its state is dropped).
  void replace_parameter(const at::Tensor& old_param, const at::Tensor& new_param);
  /// Adds a parameter new to the model (model surgery) to the group whose selector takes `name` first, else
  /// to group 0, as if it had been there when the optimizer was built.
  void add_parameter(const std::string& name, const at::Tensor& param);
  /// True when `param` is in some group.
  bool contains(const at::Tensor& param) const;
  /// InputError for a group entry that holds no parameter: its names or max_dims select none of `params`, or only
  /// ones an earlier entry took. The Trainer checks after Init, so that an entry may select parameters the
  /// algorithms' surgery adds ("*.se.*": squeeze_excite's gates).
  void check_groups(const NamedParameters& params) const;

  /// Per-parameter state tensors (momentum buffer, Adam moments...), keyed by parameter identity.
  std::vector<at::Tensor>* state_of(const at::Tensor& param);
  const std::unordered_map<const void*, std::vector<at::Tensor>>& state() const noexcept { return state_; }
  std::unordered_map<const void*, std::vector<at::Tensor>>& state() noexcept { return state_; }
  /// Number of optimizer steps taken.
  int64_t step_count() const noexcept { return steps_; }
  void set_step_count(int64_t steps) noexcept { steps_ = steps; }

 protected:
  /// Group 0 with the optimizer's lr and weight decay, then one group per entry of `groups`; each parameter goes to
  /// the first entry that selects it, else to group 0. InputError for an entry that selects everything or sets
  /// nothing (an entry that selects no parameter yet is checked by check_groups).
  Optimizer(const NamedParameters& params, double lr, double weight_decay,
            const std::vector<ParamGroupOptions>& groups);
  std::vector<at::Tensor>& state_for(const at::Tensor& param, size_t slots);
  /// Told of every change to the parameters after construction (surgery, layer freezing), for an optimizer
  /// that keeps something per parameter besides its state (Muon: which update each one gets).
  virtual void on_added(const std::string& /*name*/, const at::Tensor& /*param*/) {}
  virtual void on_replaced(const at::Tensor& /*old_param*/, const at::Tensor& /*new_param*/) {}
  virtual void on_removed(const at::Tensor& /*param*/) {}
  /// The momentum (or beta1) of this step: the one set_momentum set, else the options' `configured` value.
  double momentum_or(double configured) const noexcept { return momentum_.value_or(configured); }

  std::vector<ParamGroup> groups_;
  std::unordered_map<const void*, std::vector<at::Tensor>> state_;
  int64_t steps_ = 0;
  std::optional<double> momentum_;  ///< set_momentum's value
};

/// The optimizers' constructors, from an options struct `Options` with lr, weight_decay and groups: group 0 with the
/// options' lr and weight decay, one group per entry of `groups`; the options validated against the ranges their
/// `visit` declares, and against each other where an optimizer needs it (Nesterov momentum needs momentum > 0 and no
/// dampening). From a plain list of tensors, groups can select by max_dims only (the parameters have no names).
/// The constructors are defined in optimizer.cpp for the eight optimizers' options.
template <class Options>
class OptimizerWith : public Optimizer {
 public:
  OptimizerWith(std::vector<at::Tensor> params, Options options);
  OptimizerWith(const NamedParameters& params, Options options);
  const Options& options() const noexcept { return options_; }
  std::string momentum_option() const override;

 protected:
  Options options_;
};

/// How much a decoupled weight decay keeps of a parameter this step: 1 - lr * wd (PyTorch's AdamW, the Lion paper),
/// or with `lr_ratio` 1 - (lr / initial_lr) * wd, the decay following the schedule but not the lr's size
/// (Composer's DecoupledSGDW and DecoupledAdamW).
double decoupled_decay_factor(const ParamGroup& group, bool lr_ratio);

struct SGDOptions {
  TESSERA_OPTION(double, lr) = 0.1;
  TESSERA_OPTION(double, momentum) = 0.9;
  TESSERA_OPTION(double, dampening) = 0.0;
  TESSERA_OPTION(bool, nesterov) = false;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  /// Decoupled (SGDW): p <- p * (1 - (lr/initial_lr) * weight_decay) before the update, instead of adding
  /// weight_decay * p to the gradient.
  TESSERA_OPTION(bool, decoupled_weight_decay) = false;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("momentum", momentum_, "momentum factor", Range::closed_open(0, 1));
    v("dampening", dampening_, "dampening of the momentum", Range::closed(0, 1));
    v("nesterov", nesterov_, "Nesterov momentum", Any{});
    v("weight_decay", weight_decay_, "weight decay", Range::at_least(0));
    v("decoupled_weight_decay", decoupled_weight_decay_, "decoupled weight decay (SGDW)", Any{});
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// SGD with PyTorch's semantics (bitwise equal to torch::optim::SGD for L2 decay): d = g + wd p;
/// buf = d on the first step, else momentum buf + (1 - dampening) d; d = d + momentum buf (Nesterov) or buf;
/// p -= lr d. With decoupled_weight_decay, d = g and p *= 1 - (lr / initial_lr) wd before the update
/// (Composer's DecoupledSGDW). State of a parameter (with momentum): {momentum_buffer}. Nesterov needs
/// momentum > 0 and dampening 0.
class SGD : public OptimizerWith<SGDOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "sgd"; }
};

struct AdamOptions {
  TESSERA_OPTION(double, lr) = 1e-3;
  TESSERA_OPTION(double, beta1) = 0.9;
  TESSERA_OPTION(double, beta2) = 0.999;
  TESSERA_OPTION(double, eps) = 1e-8;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  TESSERA_OPTION(bool, amsgrad) = false;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("beta1", beta1_, "first-moment decay", Range::closed_open(0, 1));
    v("beta2", beta2_, "second-moment decay", Range::closed_open(0, 1));
    v("eps", eps_, "denominator epsilon", Range::positive());
    v("weight_decay", weight_decay_, "L2 weight decay (added to the gradient)", Range::at_least(0));
    v("amsgrad", amsgrad_, "AMSGrad: divide by the largest second moment seen", Any{});
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// Adam with PyTorch's semantics (bitwise equal to torch::optim::Adam): g = g + wd p (L2); m = b1 m + (1-b1) g;
/// v = b2 v + (1-b2) g^2; with amsgrad vmax = max(vmax, v) takes v's place below;
/// p -= lr / (1 - b1^k) * m / (sqrt(v) / sqrt(1 - b2^k) + eps).
/// The step count k is per parameter (a parameter added by surgery starts at k = 1). State of a parameter:
/// {exp_avg, exp_avg_sq, step (an int64 scalar on the CPU)}, plus max_exp_avg_sq with amsgrad.
class Adam : public OptimizerWith<AdamOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "adam"; }
};

struct AdamWOptions {
  TESSERA_OPTION(double, lr) = 1e-3;
  TESSERA_OPTION(double, beta1) = 0.9;
  TESSERA_OPTION(double, beta2) = 0.999;
  TESSERA_OPTION(double, eps) = 1e-8;
  TESSERA_OPTION(double, weight_decay) = 1e-2;
  TESSERA_OPTION(bool, amsgrad) = false;
  /// p <- p * (1 - (lr/initial_lr) * weight_decay) instead of p * (1 - lr * weight_decay): Composer's DecoupledAdamW,
  /// whose weight decay is not multiplied by the lr (give it ~1000x smaller: Composer's default is 1e-5).
  TESSERA_OPTION(bool, decoupled_weight_decay) = false;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("beta1", beta1_, "first-moment decay", Range::closed_open(0, 1));
    v("beta2", beta2_, "second-moment decay", Range::closed_open(0, 1));
    v("eps", eps_, "denominator epsilon", Range::positive());
    v("weight_decay", weight_decay_, "decoupled weight decay", Range::at_least(0));
    v("amsgrad", amsgrad_, "AMSGrad: divide by the largest second moment seen", Any{});
    v("decoupled_weight_decay", decoupled_weight_decay_,
      "decay by (lr/initial_lr) * weight_decay, not lr * weight_decay (Composer's DecoupledAdamW)", Any{});
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// AdamW with PyTorch's semantics (bitwise equal to torch::optim::AdamW): p *= 1 - lr * weight_decay, then Adam's
/// update without L2 (above). With decoupled_weight_decay, p *= 1 - (lr / initial_lr) * weight_decay instead
/// (Composer's DecoupledAdamW). State as Adam's.
class AdamW : public OptimizerWith<AdamWOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "adamw"; }
};

struct LionOptions {
  TESSERA_OPTION(double, lr) = 1e-4;
  TESSERA_OPTION(double, beta1) = 0.9;
  TESSERA_OPTION(double, beta2) = 0.99;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  /// p <- p * (1 - (lr/initial_lr) * weight_decay) instead of p * (1 - lr * weight_decay) (as DecoupledAdamW).
  TESSERA_OPTION(bool, decoupled_weight_decay) = false;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate (3-10x smaller than AdamW's)", Range::positive());
    v("beta1", beta1_, "interpolation of momentum and gradient for the update's sign", Range::closed_open(0, 1));
    v("beta2", beta2_, "momentum decay", Range::closed_open(0, 1));
    v("weight_decay", weight_decay_, "decoupled weight decay (3-10x larger than AdamW's)", Range::at_least(0));
    v("decoupled_weight_decay", decoupled_weight_decay_,
      "decay by (lr/initial_lr) * weight_decay, not lr * weight_decay", Any{});
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): p *= 1 - lr * wd;
/// p -= lr * sign(b1 m + (1-b1) g); m = b2 m + (1-b2) g. Every coordinate moves by exactly lr (or 0), so its lr
/// is smaller than AdamW's and its weight decay larger. State of a parameter: {exp_avg}.
class Lion : public OptimizerWith<LionOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "lion"; }
};

struct RMSpropOptions {
  TESSERA_OPTION(double, lr) = 1e-2;
  TESSERA_OPTION(double, alpha) = 0.99;
  TESSERA_OPTION(double, eps) = 1e-8;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  TESSERA_OPTION(double, momentum) = 0.0;
  TESSERA_OPTION(bool, centered) = false;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("alpha", alpha_, "decay of the squared gradients' average", Range::closed_open(0, 1));
    v("eps", eps_, "denominator epsilon", Range::positive());
    v("weight_decay", weight_decay_, "L2 weight decay (added to the gradient)", Range::at_least(0));
    v("momentum", momentum_, "momentum factor (0: none)", Range::closed_open(0, 1));
    v("centered", centered_, "divide by the gradients' estimated standard deviation, not their root mean square", Any{});
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// RMSprop with PyTorch's semantics (bitwise equal to torch::optim::RMSprop): g = g + wd p (L2);
/// v = alpha v + (1-alpha) g^2; d = sqrt(v) + eps, or centered m = alpha m + (1-alpha) g, d = sqrt(v - m^2) + eps;
/// with momentum buf = momentum buf + g / d, p -= lr buf, else p -= lr g / d.
/// State of a parameter: {square_avg, momentum_buffer (with momentum), grad_avg (centered)}.
class RMSprop : public OptimizerWith<RMSpropOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "rmsprop"; }
};

struct AdagradOptions {
  TESSERA_OPTION(double, lr) = 1e-2;
  TESSERA_OPTION(double, lr_decay) = 0.0;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  TESSERA_OPTION(double, initial_accumulator_value) = 0.0;
  TESSERA_OPTION(double, eps) = 1e-10;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("lr_decay", lr_decay_, "the step k's lr is lr / (1 + (k - 1) lr_decay)", Range::at_least(0));
    v("weight_decay", weight_decay_, "L2 weight decay (added to the gradient)", Range::at_least(0));
    v("initial_accumulator_value", initial_accumulator_value_, "starting value of the squared gradients' sum",
      Range::at_least(0));
    v("eps", eps_, "denominator epsilon", Range::positive());
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// Adagrad with PyTorch's semantics (bitwise equal to torch::optim::Adagrad): g = g + wd p (L2); s = s + g^2 (s starts
/// at initial_accumulator_value); p -= lr / (1 + (k-1) lr_decay) * g / (sqrt(s) + eps), k counting the parameter's own
/// steps from 1. State of a parameter: {sum, step (an int64 scalar on the CPU)}.
class Adagrad : public OptimizerWith<AdagradOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "adagrad"; }
};

struct NAdamOptions {
  TESSERA_OPTION(double, lr) = 2e-3;
  TESSERA_OPTION(double, beta1) = 0.9;
  TESSERA_OPTION(double, beta2) = 0.999;
  TESSERA_OPTION(double, eps) = 1e-8;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  TESSERA_OPTION(double, momentum_decay) = 4e-3;
  /// p <- p * (1 - lr * weight_decay) (NAdamW) instead of weight_decay * p added to the gradient.
  TESSERA_OPTION(bool, decoupled_weight_decay) = false;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("beta1", beta1_, "first-moment decay", Range::closed_open(0, 1));
    v("beta2", beta2_, "second-moment decay", Range::closed_open(0, 1));
    v("eps", eps_, "denominator epsilon", Range::positive());
    v("weight_decay", weight_decay_, "weight decay (L2, or decoupled)", Range::at_least(0));
    v("momentum_decay", momentum_decay_, "psi of the momentum schedule mu_k = beta1 (1 - 0.96^(k psi) / 2)",
      Range::at_least(0));
    v("decoupled_weight_decay", decoupled_weight_decay_, "decoupled weight decay (NAdamW): p *= 1 - lr wd",
      Any{});
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// NAdam (Dozat 2016, "Incorporating Nesterov Momentum into Adam"), bitwise equal to torch.optim.NAdam of
/// torch 2.x when built against it: Adam whose step looks ahead along the momentum, the momentum warming up as
/// mu_k = b1 (1 - 0.96^(k psi) / 2). m = lerp(m, g, 1-b1); v = b2 v + (1-b2) g^2; d = sqrt(v / (1 - b2^k)) + eps;
/// p -= lr (1 - mu_k) / (1 - prod_{i<=k} mu_i) g / d + lr mu_{k+1} / (1 - prod_{i<=k+1} mu_i) m / d.
/// State of a parameter: {exp_avg, exp_avg_sq, step (an int64 CPU scalar), mu_product (a float32 CPU scalar, as
/// torch keeps it)}.
class NAdam : public OptimizerWith<NAdamOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "nadam"; }
};

struct RAdamOptions {
  TESSERA_OPTION(double, lr) = 1e-3;
  TESSERA_OPTION(double, beta1) = 0.9;
  TESSERA_OPTION(double, beta2) = 0.999;
  TESSERA_OPTION(double, eps) = 1e-8;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  /// p <- p * (1 - lr * weight_decay) (RAdamW) instead of weight_decay * p added to the gradient.
  TESSERA_OPTION(bool, decoupled_weight_decay) = false;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("beta1", beta1_, "first-moment decay", Range::closed_open(0, 1));
    v("beta2", beta2_, "second-moment decay", Range::closed_open(0, 1));
    v("eps", eps_, "denominator epsilon", Range::positive());
    v("weight_decay", weight_decay_, "weight decay (L2, or decoupled)", Range::at_least(0));
    v("decoupled_weight_decay", decoupled_weight_decay_, "decoupled weight decay (RAdamW): p *= 1 - lr wd",
      Any{});
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond"), bitwise equal to
/// torch.optim.RAdam of torch 2.x when built against it: Adam without warmup's guesswork. While the second moment's estimate is too
/// young to trust (rho_k <= 5, rho the length of its approximated simple moving average: the first 5 steps
/// with beta2 0.999) the step is SGD with momentum, p -= lr m / (1 - b1^k); afterwards Adam's step times the
/// rectification r_k = sqrt((rho_k - 4)(rho_k - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_k)). State of a
/// parameter: {exp_avg, exp_avg_sq, step (an int64 CPU scalar)}.
class RAdam : public OptimizerWith<RAdamOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "radam"; }
};

struct AdamaxOptions {
  TESSERA_OPTION(double, lr) = 2e-3;
  TESSERA_OPTION(double, beta1) = 0.9;
  TESSERA_OPTION(double, beta2) = 0.999;
  TESSERA_OPTION(double, eps) = 1e-8;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("beta1", beta1_, "first-moment decay", Range::closed_open(0, 1));
    v("beta2", beta2_, "decay of the infinity norm", Range::closed_open(0, 1));
    v("eps", eps_, "added to |g| before the maximum", Range::positive());
    v("weight_decay", weight_decay_, "L2 weight decay (added to the gradient)", Range::at_least(0));
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// Adamax (Kingma & Ba 2015, section 7.1: Adam with the infinity norm), bitwise equal to torch.optim.Adamax of
/// torch 2.x when built against it: g = g + wd p (L2); m = lerp(m, g, 1-b1); u = max(b2 u, |g| + eps);
/// p -= lr / (1 - b1^k) m / u. State of a parameter: {exp_avg, exp_inf, step (an int64 CPU scalar)}.
class Adamax : public OptimizerWith<AdamaxOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "adamax"; }
};

struct AdadeltaOptions {
  TESSERA_OPTION(double, lr) = 1.0;
  TESSERA_OPTION(double, rho) = 0.9;
  TESSERA_OPTION(double, eps) = 1e-6;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate (a factor on the step; 1 is Zeiler's method)", Range::positive());
    v("rho", rho_, "decay of the running averages", Range::closed(0, 1));
    v("eps", eps_, "added inside both square roots", Range::positive());
    v("weight_decay", weight_decay_, "L2 weight decay (added to the gradient)", Range::at_least(0));
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// Adadelta (Zeiler 2012), bitwise equal to torch.optim.Adadelta of torch 2.x when built against it:
/// g = g + wd p (L2); v = rho v + (1-rho) g^2; d = sqrt(u + eps) / sqrt(v + eps) g; u = rho u + (1-rho) d^2;
/// p -= lr d. State of a parameter: {square_avg, acc_delta, step (an int64 CPU scalar)}.
class Adadelta : public OptimizerWith<AdadeltaOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "adadelta"; }
};

struct AdafactorOptions {
  TESSERA_OPTION(double, lr) = 1e-2;
  TESSERA_OPTION(double, beta2_decay) = -0.8;
  /// 0: the machine epsilon of the parameter's dtype (torch's eps=(None, ...)).
  TESSERA_OPTION(double, eps1) = 0.0;
  TESSERA_OPTION(double, eps2) = 1e-3;
  TESSERA_OPTION(double, d) = 1.0;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate: the relative step is min(lr, 1/sqrt(k))", Range::positive());
    v("beta2_decay", beta2_decay_, "the second moment's step k weighs k^beta2_decay", Range::closed(-10, 0));
    v("eps1", eps1_, "floor of the second moment's estimate (0: the parameters' machine epsilon)",
      Range::at_least(0));
    v("eps2", eps2_, "floor of the parameter's RMS in the step size", Range::at_least(0));
    v("d", d_, "clipping threshold of the update's RMS", Range::at_least(1));
    v("weight_decay", weight_decay_, "decoupled weight decay: p *= 1 - lr wd", Range::at_least(0));
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// Adafactor (Shazeer & Stern 2018), bitwise equal to torch.optim.Adafactor of torch 2.5+ when built against it:
/// the second moment of a matrix (the last two dimensions of a tensor) kept as its row and column means only,
/// memory O(rows + columns), no first moment. At step k: b = k^beta2_decay; R = lerp(R, mean_cols(g^2), b),
/// C = lerp(C, mean_rows(g^2), b), V = R C / mean(R) (a vector: V = lerp(V, g^2, b)); U = g / sqrt(max(V, eps1^2));
/// p *= 1 - lr wd; p -= max(eps2, RMS(p)) min(lr, 1/sqrt(k)) / max(1, RMS(U) / d) U (RMS(p) before the decay).
/// State of a parameter: {row_var, col_var (matrices), variance (vectors and scalars), step (an int64 CPU
/// scalar)}.
class Adafactor : public OptimizerWith<AdafactorOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "adafactor"; }
};

struct LambOptions {
  TESSERA_OPTION(double, lr) = 1e-3;
  TESSERA_OPTION(double, beta1) = 0.9;
  TESSERA_OPTION(double, beta2) = 0.999;
  TESSERA_OPTION(double, eps) = 1e-6;
  TESSERA_OPTION(double, weight_decay) = 1e-2;
  /// Also scale the update of groups without weight decay by the trust ratio (otherwise they take Adam's step).
  TESSERA_OPTION(bool, always_adapt) = false;
  /// Clamp the trust ratio at 1: a layer never moves faster than the lr says.
  TESSERA_OPTION(bool, trust_clip) = false;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("beta1", beta1_, "first-moment decay", Range::closed_open(0, 1));
    v("beta2", beta2_, "second-moment decay", Range::closed_open(0, 1));
    v("eps", eps_, "denominator epsilon", Range::positive());
    v("weight_decay", weight_decay_, "decoupled weight decay, added to the update before the trust ratio",
      Range::at_least(0));
    v("always_adapt", always_adapt_, "also apply the trust ratio in groups without weight decay", Any{});
    v("trust_clip", trust_clip_, "clamp the trust ratio at 1", Any{});
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"), layer-wise
/// Adam, as timm's Lamb (without the gradient clipping timm's does inside the step: that is the gradient_clipping
/// algorithm's job): m, v as Adam's; u = (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps) + wd p;
/// r = ||p|| / ||u|| per parameter tensor (1 when either norm is 0; at most 1 with trust_clip); p -= lr r u.
/// In a group whose weight decay is 0 (biases and norms: `groups: [{max_dims: 1, weight_decay: 0}]`) r = 1 (Adam's
/// step) unless always_adapt. The ratio is computed on the device (no read-back). State: as Adam's.
class Lamb : public OptimizerWith<LambOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "lamb"; }
};

struct LarsOptions {
  TESSERA_OPTION(double, lr) = 1.0;
  TESSERA_OPTION(double, momentum) = 0.9;
  TESSERA_OPTION(double, dampening) = 0.0;
  TESSERA_OPTION(bool, nesterov) = false;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  /// eta: the layer's rate relative to its weights' norm over its gradient's.
  TESSERA_OPTION(double, trust_coefficient) = 1e-3;
  TESSERA_OPTION(double, eps) = 1e-8;
  /// Also apply the trust ratio in groups without weight decay (otherwise they take SGD's step).
  TESSERA_OPTION(bool, always_adapt) = false;
  /// LARC's clipping: a layer's rate is min(trust ratio, lr) instead of trust ratio * lr.
  TESSERA_OPTION(bool, trust_clip) = false;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate (the global rate the trust ratio scales)", Range::positive());
    v("momentum", momentum_, "momentum factor", Range::closed_open(0, 1));
    v("dampening", dampening_, "dampening of the momentum", Range::closed(0, 1));
    v("nesterov", nesterov_, "Nesterov momentum", Any{});
    v("weight_decay", weight_decay_, "L2 weight decay (added to the gradient before the trust ratio)",
      Range::at_least(0));
    v("trust_coefficient", trust_coefficient_, "eta of the trust ratio eta ||p|| / (||g|| + wd ||p|| + eps)",
      Range::positive());
    v("eps", eps_, "epsilon of the trust ratio's denominator", Range::at_least(0));
    v("always_adapt", always_adapt_, "also apply the trust ratio in groups without weight decay", Any{});
    v("trust_clip", trust_clip_, "LARC: a layer's rate is min(trust ratio, lr), not trust ratio * lr", Any{});
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// LARS (You et al. 2017, "Large Batch Training of Convolutional Networks"), layer-wise SGD, as timm's Lars: per
/// parameter tensor r = eta ||p|| / (||g|| + wd ||p|| + eps) (1 when either norm is 0), d = r (g + wd p), or with
/// trust_clip d = min(r / lr, 1) (g + wd p); then SGD's momentum on d (as SGD above) and p -= lr d. In a group whose
/// weight decay is 0 (biases and norms: `groups: [{max_dims: 1, weight_decay: 0}]`) d = g (SGD's step) unless
/// always_adapt. The ratio is computed on the device (no read-back). State: {momentum_buffer} (with momentum).
class Lars : public OptimizerWith<LarsOptions> {
 public:
  using OptimizerWith::OptimizerWith;
  void step() override;
  std::string name() const override { return "lars"; }
};

/// Muon's Newton-Schulz iteration (Keller Jordan's, as torch.optim.Muon computes it): the matrix `g` [A, B]
/// in bfloat16, divided by its Frobenius norm (at least eps), then `steps` times X <- a X + (b G + c G^2) X
/// with G = X X^T (on the transpose when A > B, so that G is the smaller Gram matrix). The result, in
/// bfloat16, has g's singular vectors and singular values near 1 (roughly 0.7 to 1.2 with the default
/// coefficients): an approximate orthogonalisation U V^T of g = U S V^T, in matrix products only.
at::Tensor newton_schulz(const at::Tensor& g, int64_t steps, const std::array<double, 3>& coefficients,
                         double eps);

struct MuonOptions {
  TESSERA_OPTION(double, lr) = 1e-3;
  TESSERA_OPTION(double, momentum) = 0.95;
  TESSERA_OPTION(bool, nesterov) = true;
  TESSERA_OPTION(double, weight_decay) = 0.1;
  TESSERA_OPTION(std::vector<double>, ns_coefficients) = {3.4445, -4.7750, 2.0315};
  TESSERA_OPTION(int64_t, ns_steps) = 5;
  TESSERA_OPTION(double, eps) = 1e-7;
  TESSERA_OPTION(std::string, adjust_lr) = "original";
  /// Matrices to train with AdamW instead (globs on dotted names): the embeddings and the output layer, whose
  /// rows are not a linear map's (Muon's authors train them with AdamW).
  TESSERA_OPTION(std::vector<std::string>, adamw_names) = {};
  TESSERA_OPTION(double, adamw_lr) = 1e-3;
  TESSERA_OPTION(double, adamw_beta1) = 0.9;
  TESSERA_OPTION(double, adamw_beta2) = 0.999;
  TESSERA_OPTION(double, adamw_eps) = 1e-8;
  TESSERA_OPTION(double, adamw_weight_decay) = 1e-2;
  TESSERA_OPTION(std::vector<ParamGroupOptions>, groups) = {};
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate of the matrices Muon trains", Range::positive());
    v("momentum", momentum_, "momentum factor", Range::closed_open(0, 1));
    v("nesterov", nesterov_, "Nesterov momentum: orthogonalise g + momentum (m - g), not m", Any{});
    v("weight_decay", weight_decay_, "decoupled weight decay of Muon's matrices (p *= 1 - lr wd)",
      Range::at_least(0));
    v("ns_coefficients", ns_coefficients_, "a, b, c of the Newton-Schulz iteration", Any{});
    v("ns_steps", ns_steps_, "Newton-Schulz iterations", Range::closed(1, 99));
    v("eps", eps_, "least Frobenius norm the update is divided by", Range::positive());
    v("adjust_lr", adjust_lr_,
      "the lr of an A x B matrix: original lr sqrt(max(1, A/B)); match_rms_adamw "
      "0.2 lr sqrt(max(A, B)); spectral_unclamped lr sqrt(A/B); none lr",
      Choices{{"original", "match_rms_adamw", "spectral_unclamped", "none"}});
    v("adamw_names", adamw_names_, "matrices trained with AdamW instead (globs: embeddings, output layer)",
      Any{});
    v("adamw_lr", adamw_lr_, "AdamW's learning rate (parameters of fewer than 2 dimensions, adamw_names)",
      Range::positive());
    v("adamw_beta1", adamw_beta1_, "AdamW's first-moment decay", Range::closed_open(0, 1));
    v("adamw_beta2", adamw_beta2_, "AdamW's second-moment decay", Range::closed_open(0, 1));
    v("adamw_eps", adamw_eps_, "AdamW's denominator epsilon", Range::positive());
    v("adamw_weight_decay", adamw_weight_decay_, "AdamW's decoupled weight decay", Range::at_least(0));
    v("groups", groups_, "parameter groups with their own lr or weight decay", Any{});
  }
};

/// Muon (Keller Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks";
/// torch.optim.Muon): each weight matrix moves along its orthogonalised momentum. m = momentum m + (1 -
/// momentum) g (a lerp); the direction is g + momentum (m - g) with nesterov, else m; O =
/// newton_schulz(direction); p *= 1 - lr wd; p -= lr' O, lr' = lr sqrt(max(1, A/B)) for an A x B matrix
/// (`adjust_lr`). Bitwise equal to torch.optim.Muon on matrices when built against the same torch 2.x (on
/// LibTorch 1.13 its bfloat16 products round differently). A parameter of more than 2 dimensions (a
/// convolution's [O, I, kh, kw]) is orthogonalised as the matrix [O, I kh kw], as Keller Jordan's
/// implementation does (torch's refuses it).
///
/// Parameters of fewer than 2 dimensions (biases, norms) and the matrices `adamw_names` selects take AdamW's
/// update instead (bitwise torch.optim.AdamW's) with the adamw_* settings, as Muon's authors train them.
/// Parameter groups apply to both kinds: an entry that sets lr or weight_decay sets it for every parameter it
/// selects; otherwise a Muon matrix has `lr` and `weight_decay`, an AdamW parameter `adamw_lr` and
/// `adamw_weight_decay`. Schedulers scale both lrs. State of a parameter: {momentum_buffer} (Muon), {exp_avg,
/// exp_avg_sq, step} (AdamW).
class Muon : public OptimizerWith<MuonOptions> {
 public:
  Muon(std::vector<at::Tensor> params, MuonOptions options);
  Muon(const NamedParameters& params, MuonOptions options);
  void step() override;
  std::string name() const override { return "muon"; }
  /// Whether `param` takes AdamW's update (else Muon's).
  bool uses_adamw(const at::Tensor& param) const;

 protected:
  void on_added(const std::string& name, const at::Tensor& param) override;
  void on_replaced(const at::Tensor& old_param, const at::Tensor& new_param) override;
  void on_removed(const at::Tensor& param) override;

 private:
  void classify(const std::string& name, const at::Tensor& param);
  std::unordered_map<const void*, bool> adamw_;  ///< by parameter identity: AdamW's update (true) or Muon's
};

}  // namespace tessera::optim
