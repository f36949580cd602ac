#pragma once
/// Optimizers: SGD (momentum, Nesterov, L2 or decoupled weight decay) and AdamW.
///
/// Tessera has its own small optimizer classes rather than torch::optim's so that parameter groups can be
/// edited by algorithms (surgery replaces parameters, layer freezing removes them together with their
/// state), their state serialises exactly, and the code is the same on LibTorch 1.13 and 2.x.
/// The learning rate of a group is `initial_lr * alpha`, alpha coming from the schedulers.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/options.h>

namespace tessera::optim {

/// A set of parameters sharing a learning rate.
struct ParamGroup {
  std::vector<at::Tensor> params;
  double initial_lr = 0.0;  ///< the lr given by the options; schedulers scale it
  double lr = 0.0;          ///< the lr used by the next step
};

/// Base of the optimizers: parameter groups, per-parameter state, and the edits algorithms make to them.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One update from the current gradients (parameters without a gradient are skipped).
  virtual void step() = 0;
  /// Name in recipes: "sgd", "adamw".
  virtual std::string name() const = 0;

  /// Clears gradients (to undefined tensors when `set_to_none`).
  void zero_grad(bool set_to_none = true);
  std::vector<ParamGroup>& param_groups() noexcept { return groups_; }
  const std::vector<ParamGroup>& param_groups() const noexcept { return groups_; }
  /// Sets every group's lr to initial_lr * alpha.
  void set_lr_factor(double alpha);

  /// Removes parameters from every group and drops their state (layer freezing).
  void remove_parameters(const std::vector<at::Tensor>& params);
  /// Replaces `old_param` by `new_param` in its group (its state is dropped), or appends `new_param` to
  /// the first group when `old_param` is undefined (model surgery).
  void replace_parameter(const at::Tensor& old_param, const at::Tensor& new_param);
  /// True when `param` is in some group.
  bool contains(const at::Tensor& param) const;

  /// Per-parameter state tensors (momentum buffer, Adam moments...), keyed by parameter identity.
  std::vector<at::Tensor>* state_of(const at::Tensor& param);
  const std::unordered_map<const void*, std::vector<at::Tensor>>& state() const noexcept { return state_; }
  std::unordered_map<const void*, std::vector<at::Tensor>>& state() noexcept { return state_; }
  /// Number of optimizer steps taken.
  int64_t step_count() const noexcept { return steps_; }
  void set_step_count(int64_t steps) noexcept { steps_ = steps; }

 protected:
  explicit Optimizer(std::vector<at::Tensor> params, double lr);
  std::vector<at::Tensor>& state_for(const at::Tensor& param, size_t slots);

  std::vector<ParamGroup> groups_;
  std::unordered_map<const void*, std::vector<at::Tensor>> state_;
  int64_t steps_ = 0;
};

struct SGDOptions {
  TESSERA_OPTION(double, lr) = 0.1;
  TESSERA_OPTION(double, momentum) = 0.9;
  TESSERA_OPTION(double, dampening) = 0.0;
  TESSERA_OPTION(bool, nesterov) = false;
  TESSERA_OPTION(double, weight_decay) = 0.0;
  /// Decoupled (SGDW): p <- p * (1 - (lr/initial_lr) * weight_decay) before the update, instead of adding
  /// weight_decay * p to the gradient.
  TESSERA_OPTION(bool, decoupled_weight_decay) = false;
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("momentum", momentum_, "momentum factor", Range::closed_open(0, 1));
    v("dampening", dampening_, "dampening of the momentum", Range::closed(0, 1));
    v("nesterov", nesterov_, "Nesterov momentum", Any{});
    v("weight_decay", weight_decay_, "weight decay", Range::at_least(0));
    v("decoupled_weight_decay", decoupled_weight_decay_, "decoupled weight decay (SGDW)", Any{});
  }
};

/// SGD with PyTorch's semantics (bitwise equal to torch::optim::SGD for L2 decay): d = g + wd p;
/// buf = d on the first step, else momentum buf + (1 - dampening) d; d = d + momentum buf (Nesterov) or buf;
/// p -= lr d. With decoupled_weight_decay, d = g and p *= 1 - (lr / initial_lr) wd before the update.
/// State of a parameter (with momentum): {momentum_buffer}. Nesterov needs momentum > 0 and dampening 0.
class SGD : public Optimizer {
 public:
  SGD(std::vector<at::Tensor> params, SGDOptions options);
  void step() override;
  std::string name() const override { return "sgd"; }
  const SGDOptions& options() const noexcept { return options_; }

 private:
  SGDOptions options_;
};

struct AdamWOptions {
  TESSERA_OPTION(double, lr) = 1e-3;
  TESSERA_OPTION(double, beta1) = 0.9;
  TESSERA_OPTION(double, beta2) = 0.999;
  TESSERA_OPTION(double, eps) = 1e-8;
  TESSERA_OPTION(double, weight_decay) = 1e-2;
  template <class V>
  void visit(V& v) {
    v("lr", lr_, "learning rate", Range::positive());
    v("beta1", beta1_, "first-moment decay", Range::closed_open(0, 1));
    v("beta2", beta2_, "second-moment decay", Range::closed_open(0, 1));
    v("eps", eps_, "denominator epsilon", Range::positive());
    v("weight_decay", weight_decay_, "decoupled weight decay", Range::at_least(0));
  }
};

/// AdamW with PyTorch's semantics: p *= 1 - lr * weight_decay; m = b1 m + (1-b1) g;
/// v = b2 v + (1-b2) g^2; p -= lr / (1 - b1^k) * m / (sqrt(v) / sqrt(1 - b2^k) + eps).
/// The step count k is per parameter (a parameter added by surgery starts at k = 1). State of a parameter:
/// {exp_avg, exp_avg_sq, step (an int64 scalar on the CPU)}.
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<at::Tensor> params, AdamWOptions options);
  void step() override;
  std::string name() const override { return "adamw"; }
  const AdamWOptions& options() const noexcept { return options_; }

 private:
  AdamWOptions options_;
};

}  // namespace tessera::optim
