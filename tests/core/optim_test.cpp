#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <tessera/error.h>
#include <tessera/optim/optimizer.h>

#include "support.h"

using tessera::optim::Adagrad;
using tessera::optim::AdagradOptions;
using tessera::optim::Adam;
using tessera::optim::AdamOptions;
using tessera::optim::AdamW;
using tessera::optim::AdamWOptions;
using tessera::optim::Lamb;
using tessera::optim::LambOptions;
using tessera::optim::Lars;
using tessera::optim::LarsOptions;
using tessera::optim::Lion;
using tessera::optim::LionOptions;
using tessera::optim::NamedParameters;
using tessera::optim::ParamGroupOptions;
using tessera::optim::RMSprop;
using tessera::optim::RMSpropOptions;
using tessera::optim::SGD;
using tessera::optim::SGDOptions;
using tessera::testing::input_error_of;

namespace {

at::Tensor param(std::vector<float> v) { return at::tensor(v, at::kFloat).requires_grad_(true); }
void set_grad(at::Tensor& p, std::vector<float> g) { p.mutable_grad() = at::tensor(g, at::kFloat); }

void expect_values(const at::Tensor& t, std::vector<double> expected, double tol = 1e-6) {
  ASSERT_EQ(t.numel(), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(t[static_cast<int64_t>(i)].item<double>(), expected[i], tol) << "element " << i;
  }
}

/// Scalar SGD in double, the formulas of the header, for one parameter with a fixed gradient.
std::vector<double> reference_sgd(std::vector<double> p, const std::vector<double>& g, const SGDOptions& o,
                                  const std::vector<double>& lrs) {
  std::vector<double> buf(p.size(), 0.0);
  for (size_t s = 0; s < lrs.size(); ++s) {
    const double lr = lrs[s];
    for (size_t i = 0; i < p.size(); ++i) {
      double d = g[i];
      if (!o.decoupled_weight_decay()) d += o.weight_decay() * p[i];
      if (o.momentum() != 0) {
        buf[i] = s == 0 ? d : o.momentum() * buf[i] + (1 - o.dampening()) * d;
        d = o.nesterov() ? d + o.momentum() * buf[i] : buf[i];
      }
      if (o.decoupled_weight_decay()) p[i] *= 1 - (lr / o.lr()) * o.weight_decay();
      p[i] -= lr * d;
    }
  }
  return p;
}

/// Runs `ours` and torch's `reference` side by side for `steps` steps with the same random gradients and asserts the
/// parameters stay bitwise equal.
/// `before_step` (if given) runs before each step, with its index.
void expect_bitwise_equal_runs(tessera::optim::Optimizer& ours_opt, std::vector<at::Tensor>& ours,
                               torch::optim::Optimizer& reference, std::vector<at::Tensor>& theirs, int steps,
                               const std::string& what, const std::function<void(int)>& before_step = {}) {
  for (int step = 0; step < steps; ++step) {
    if (before_step) before_step(step);
    for (size_t i = 0; i < ours.size(); ++i) {
      at::Tensor g = at::randn(ours[i].sizes());
      ours[i].mutable_grad() = g.clone();
      theirs[i].mutable_grad() = g.clone();
    }
    ours_opt.step();
    reference.step();
    for (size_t i = 0; i < ours.size(); ++i) {
      ASSERT_TRUE(at::equal(ours[i], theirs[i])) << what << ": step " << step << " tensor " << i;
    }
  }
}

/// Two random parameters and their copies for a reference optimizer.
std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> twin_parameters() {
  at::manual_seed(12);
  std::vector<at::Tensor> ours = {at::randn({6, 4}).requires_grad_(true), at::randn({5}).requires_grad_(true)};
  std::vector<at::Tensor> theirs;
  for (const auto& p : ours) theirs.push_back(p.detach().clone().requires_grad_(true));
  return {ours, theirs};
}

}  // namespace

// ------------------------------------------------------------------------------------------------ SGD

TEST(SGD, PlainStepMatchesHandComputedValues) {
  at::Tensor p = param({1, 2});
  SGD opt({p}, SGDOptions().lr(0.1).momentum(0));
  set_grad(p, {0.5f, -1.0f});
  opt.step();
  expect_values(p, {0.95, 2.1});
  EXPECT_EQ(opt.step_count(), 1);
  EXPECT_EQ(opt.state_of(p), nullptr);  // no momentum, no state
}

TEST(SGD, L2WeightDecayAddsToTheGradient) {
  at::Tensor p = param({1, 2});
  SGD opt({p}, SGDOptions().lr(0.1).momentum(0).weight_decay(0.1));
  set_grad(p, {0.5f, -1.0f});
  opt.step();  // d = g + 0.1 p = (0.6, -0.8)
  expect_values(p, {0.94, 2.08});
  // The gradient itself is left alone.
  expect_values(p.grad(), {0.5, -1.0});
}

TEST(SGD, MomentumTwoSteps) {
  at::Tensor p = param({1, 2});
  SGD opt({p}, SGDOptions().lr(0.1).momentum(0.9));
  set_grad(p, {0.5f, -1.0f});
  opt.step();  // buf = g
  expect_values(p, {0.95, 2.1});
  opt.step();  // buf = 0.9 g + g = 1.9 g
  expect_values(p, {0.855, 2.29});
  ASSERT_NE(opt.state_of(p), nullptr);
  expect_values(opt.state_of(p)->at(0), {0.95, -1.9});
}

TEST(SGD, DampeningAppliesFromTheSecondStep) {
  at::Tensor p = param({1, 2});
  SGD opt({p}, SGDOptions().lr(0.1).momentum(0.9).dampening(0.5));
  set_grad(p, {0.5f, -1.0f});
  opt.step();  // buf = g (no dampening on the first step, as in PyTorch)
  expect_values(p, {0.95, 2.1});
  opt.step();  // buf = 0.9 g + 0.5 g = 1.4 g
  expect_values(p, {0.88, 2.24});
}

TEST(SGD, NesterovTwoSteps) {
  at::Tensor p = param({1, 2});
  SGD opt({p}, SGDOptions().lr(0.1).momentum(0.9).nesterov(true));
  set_grad(p, {0.5f, -1.0f});
  opt.step();  // buf = g; d = g + 0.9 g = 1.9 g
  expect_values(p, {0.905, 2.19});
  opt.step();  // buf = 1.9 g; d = g + 0.9 * 1.9 g = 2.71 g
  expect_values(p, {0.7695, 2.461});
}

TEST(SGD, DecoupledWeightDecayFollowsTheSchedule) {
  at::Tensor p = param({1, 2});
  SGD opt({p}, SGDOptions().lr(0.1).momentum(0).weight_decay(0.1).decoupled_weight_decay(true));
  set_grad(p, {0.5f, -1.0f});
  opt.step();  // p = 0.9 p - 0.1 g
  expect_values(p, {0.85, 1.9});
  opt.set_lr_factor(0.5);  // lr 0.05: p = (1 - 0.5 * 0.1) p - 0.05 g
  EXPECT_DOUBLE_EQ(opt.param_groups()[0].lr, 0.05);
  opt.step();
  expect_values(p, {0.8075 - 0.025, 1.805 + 0.05});
}

TEST(SGD, EveryOptionCombinationMatchesTheFormulasOverSeveralSteps) {
  const std::vector<double> p0 = {1.0, -2.0, 0.25}, g = {0.5, -1.0, 2.0};
  const std::vector<double> lrs = {0.1, 0.1, 0.05, 0.02};
  for (double momentum : {0.0, 0.9}) {
    for (double dampening : {0.0, 0.3}) {
      for (bool nesterov : {false, true}) {
        for (double wd : {0.0, 0.05}) {
          for (bool decoupled : {false, true}) {
            if (nesterov && (momentum == 0 || dampening != 0)) continue;
            SGDOptions o = SGDOptions()
                               .lr(0.1)
                               .momentum(momentum)
                               .dampening(dampening)
                               .nesterov(nesterov)
                               .weight_decay(wd)
                               .decoupled_weight_decay(decoupled);
            at::Tensor p = param({1.0f, -2.0f, 0.25f});
            SGD opt({p}, o);
            for (double lr : lrs) {
              opt.set_lr_factor(lr / 0.1);
              set_grad(p, {0.5f, -1.0f, 2.0f});
              opt.step();
            }
            SCOPED_TRACE(::testing::Message()
                         << "momentum " << momentum << " dampening " << dampening << " nesterov " << nesterov
                         << " wd " << wd << " decoupled " << decoupled);
            expect_values(p, reference_sgd(p0, g, o, lrs), 1e-5);
          }
        }
      }
    }
  }
}

TEST(SGD, BitwiseEqualToTorchSGD) {
  struct Config {
    double momentum, weight_decay;
    bool nesterov;
  };
  for (const Config& c : {Config{0.9, 5e-4, true}, Config{0.9, 5e-4, false}, Config{0.9, 0.0, true},
                          Config{0.9, 0.0, false}, Config{0.0, 1e-2, false}}) {
    auto [ours, theirs] = twin_parameters();
    SGD opt(ours,
            SGDOptions().lr(0.1).momentum(c.momentum).nesterov(c.nesterov).weight_decay(c.weight_decay));
    torch::optim::SGD reference(
        theirs,
        torch::optim::SGDOptions(0.1).momentum(c.momentum).nesterov(c.nesterov).weight_decay(c.weight_decay));
    expect_bitwise_equal_runs(opt, ours, reference, theirs, 5,
                              "sgd momentum " + std::to_string(c.momentum) + " nesterov " + std::to_string(c.nesterov));
  }
}

TEST(Optimizer, AMomentumScheduleChangesTheMomentumOfTheNextStepsAsTorchsOwnOptionDoes) {
  // The momentum a schedule sets each step (onecycle's cycle_momentum) against torch::optim with its group's option
  // changed before each step: bitwise equal, including SGD with no momentum configured (the buffer starts then).
  const std::vector<double> momenta = {0.95, 0.9, 0.85, 0.88, 0.93, 0.95};
  auto momentum_at = [&](int step) { return momenta[static_cast<size_t>(step)]; };
  for (const bool nesterov : {false, true}) {
    for (const double configured : {0.0, 0.9}) {
      if (nesterov && configured == 0) continue;
      auto [ours, theirs] = twin_parameters();
      SGD opt(ours, SGDOptions().lr(0.1).momentum(configured).nesterov(nesterov).weight_decay(1e-3));
      torch::optim::SGD reference(
          theirs, torch::optim::SGDOptions(0.1).momentum(configured).nesterov(nesterov).weight_decay(1e-3));
      EXPECT_EQ(opt.momentum_option(), "momentum");
      expect_bitwise_equal_runs(opt, ours, reference, theirs, 6,
                                fmt::format("sgd nesterov {} momentum {}", nesterov, configured), [&](int step) {
                                  opt.set_momentum(momentum_at(step));
                                  static_cast<torch::optim::SGDOptions&>(reference.param_groups()[0].options())
                                      .momentum(momentum_at(step));
                                });
    }
  }
  {
    auto [ours, theirs] = twin_parameters();
    Adam opt(ours, AdamOptions().lr(0.01).beta2(0.95));
    torch::optim::Adam reference(theirs, torch::optim::AdamOptions(0.01).betas({0.9, 0.95}));
    EXPECT_EQ(opt.momentum_option(), "beta1");
    expect_bitwise_equal_runs(opt, ours, reference, theirs, 6, "adam", [&](int step) {
      opt.set_momentum(momentum_at(step));  // beta1, in the bias correction too
      static_cast<torch::optim::AdamOptions&>(reference.param_groups()[0].options()).betas({momentum_at(step), 0.95});
    });
  }
  {
    auto [ours, theirs] = twin_parameters();
    AdamW opt(ours, AdamWOptions().lr(0.01).weight_decay(0.1));
    torch::optim::AdamW reference(theirs, torch::optim::AdamWOptions(0.01).weight_decay(0.1));
    expect_bitwise_equal_runs(opt, ours, reference, theirs, 6, "adamw", [&](int step) {
      opt.set_momentum(momentum_at(step));
      static_cast<torch::optim::AdamWOptions&>(reference.param_groups()[0].options()).betas({momentum_at(step), 0.999});
    });
  }
  {
    auto [ours, theirs] = twin_parameters();
    RMSprop opt(ours, RMSpropOptions().lr(0.01).momentum(0.5));
    torch::optim::RMSprop reference(theirs, torch::optim::RMSpropOptions(0.01).momentum(0.5));
    expect_bitwise_equal_runs(opt, ours, reference, theirs, 6, "rmsprop", [&](int step) {
      opt.set_momentum(momentum_at(step));
      static_cast<torch::optim::RMSpropOptions&>(reference.param_groups()[0].options()).momentum(momentum_at(step));
    });
    // Unset, the options' momentum is back.
    opt.set_momentum(std::nullopt);
    static_cast<torch::optim::RMSpropOptions&>(reference.param_groups()[0].options()).momentum(0.5);
    expect_bitwise_equal_runs(opt, ours, reference, theirs, 2, "rmsprop, unset");
  }
}

TEST(Optimizer, AMomentumIsSetOnlyWhereThereIsOneAndInItsRange) {
  EXPECT_EQ(Lion(std::vector<at::Tensor>{param({1})}, LionOptions()).momentum_option(), "beta1");
  EXPECT_EQ(Lamb(std::vector<at::Tensor>{param({1})}, LambOptions()).momentum_option(), "beta1");
  EXPECT_EQ(Lars(std::vector<at::Tensor>{param({1})}, LarsOptions()).momentum_option(), "momentum");
  Adagrad adagrad(std::vector<at::Tensor>{param({1})}, AdagradOptions());
  EXPECT_EQ(adagrad.momentum_option(), "");
  EXPECT_THAT(input_error_of([&] { adagrad.set_momentum(0.9); }),
              ::testing::HasSubstr("optimizer: adagrad has no momentum for a schedule to set"));
  adagrad.set_momentum(std::nullopt);  // unsetting what is not set is fine
  SGD sgd(std::vector<at::Tensor>{param({1})}, SGDOptions());
  EXPECT_THAT(input_error_of([&] { sgd.set_momentum(1.0); }),
              ::testing::HasSubstr("optimizer.momentum: a schedule set it to 1; expected a value in [0, 1)"));
  EXPECT_EQ(sgd.momentum(), std::nullopt);  // a refused value is not kept
  sgd.set_momentum(0.8);
  EXPECT_EQ(sgd.momentum(), 0.8);
}

TEST(SGD, SkipsParametersWithoutGradients) {
  at::Tensor a = param({1}), b = param({2});
  SGD opt({a, b}, SGDOptions().lr(0.1).momentum(0.9));
  set_grad(a, {1.0f});
  opt.step();
  expect_values(a, {0.9});
  expect_values(b, {2.0});
  EXPECT_NE(opt.state_of(a), nullptr);
  EXPECT_EQ(opt.state_of(b), nullptr);
}

TEST(SGD, RejectsInvalidOptions) {
  at::Tensor p = param({1});
  EXPECT_THROW(SGD({p}, SGDOptions().lr(0)), tessera::InputError);
  EXPECT_THROW(SGD({p}, SGDOptions().momentum(1.0)), tessera::InputError);
  EXPECT_THROW(SGD({p}, SGDOptions().weight_decay(-1)), tessera::InputError);
  EXPECT_THROW(SGD({p}, SGDOptions().momentum(0).nesterov(true)), tessera::InputError);
  EXPECT_THROW(SGD({p}, SGDOptions().dampening(0.1).nesterov(true)), tessera::InputError);
}

// ------------------------------------------------------------------------------------------------ AdamW

namespace {
/// Scalar AdamW in double (PyTorch semantics) for one element with a fixed gradient.
double reference_adamw(double p, double g, const AdamWOptions& o, int steps) {
  double m = 0, v = 0;
  for (int t = 1; t <= steps; ++t) {
    p *= 1 - o.lr() * o.weight_decay();
    m = o.beta1() * m + (1 - o.beta1()) * g;
    v = o.beta2() * v + (1 - o.beta2()) * g * g;
    const double mhat = m / (1 - std::pow(o.beta1(), t));
    const double denom = std::sqrt(v) / std::sqrt(1 - std::pow(o.beta2(), t)) + o.eps();
    p -= o.lr() * mhat / denom;
  }
  return p;
}
}  // namespace

TEST(AdamW, FirstStepMatchesHandComputedValue) {
  at::Tensor p = param({1.0f, -1.0f});
  AdamW opt({p}, AdamWOptions().lr(0.1).weight_decay(0.01));
  set_grad(p, {0.5f, 2.0f});
  opt.step();
  // p * (1 - 0.001), then minus lr * sign(g) (m_hat / sqrt(v_hat) = g / |g| on the first step).
  expect_values(p, {0.999 - 0.1, -0.999 - 0.1}, 1e-6);
  const auto* st = opt.state_of(p);
  ASSERT_NE(st, nullptr);
  ASSERT_EQ(st->size(), 3u);
  expect_values(st->at(0), {0.05, 0.2});
  expect_values(st->at(1), {0.00025, 0.004});
  EXPECT_EQ(st->at(2).item<int64_t>(), 1);
}

TEST(AdamW, SeveralStepsMatchTheFormulas) {
  for (double wd : {0.0, 0.05}) {
    AdamWOptions o = AdamWOptions().lr(0.01).beta1(0.8).beta2(0.99).eps(1e-6).weight_decay(wd);
    at::Tensor p = param({1.0f, -0.5f});
    AdamW opt({p}, o);
    for (int s = 0; s < 4; ++s) {
      set_grad(p, {0.3f, -2.0f});
      opt.step();
    }
    expect_values(p, {reference_adamw(1.0, 0.3, o, 4), reference_adamw(-0.5, -2.0, o, 4)}, 1e-6);
    EXPECT_EQ(opt.state_of(p)->at(2).item<int64_t>(), 4);
  }
}

TEST(AdamW, StepCountIsPerParameter) {
  at::Tensor a = param({1.0f});
  AdamW opt({a}, AdamWOptions().lr(0.1).weight_decay(0));
  set_grad(a, {1.0f});
  opt.step();
  opt.step();
  at::Tensor b = param({1.0f});
  opt.add_parameter("b", b);  // added by surgery: its bias correction starts afresh
  set_grad(b, {3.0f});
  opt.step();
  EXPECT_EQ(opt.state_of(a)->at(2).item<int64_t>(), 3);
  EXPECT_EQ(opt.state_of(b)->at(2).item<int64_t>(), 1);
  expect_values(b, {0.9}, 1e-6);  // a first Adam step moves by lr
  EXPECT_EQ(opt.step_count(), 3);
}


TEST(Adam, BitwiseEqualToTorchAdam) {
  for (double wd : {0.0, 0.05}) {
    for (bool amsgrad : {false, true}) {
      auto [ours, theirs] = twin_parameters();
      Adam opt(ours, AdamOptions().lr(0.01).beta1(0.8).beta2(0.95).eps(1e-6).weight_decay(wd).amsgrad(amsgrad));
      torch::optim::Adam reference(theirs, torch::optim::AdamOptions(0.01)
                                               .betas({0.8, 0.95})
                                               .eps(1e-6)
                                               .weight_decay(wd)
                                               .amsgrad(amsgrad));
      expect_bitwise_equal_runs(opt, ours, reference, theirs, 6,
                                "adam wd " + std::to_string(wd) + " amsgrad " + std::to_string(amsgrad));
      EXPECT_EQ(opt.state_of(ours[0])->size(), amsgrad ? 4u : 3u);
    }
  }
}

TEST(AdamW, BitwiseEqualToTorchAdamW) {
  for (double wd : {0.0, 0.1}) {
    for (bool amsgrad : {false, true}) {
      auto [ours, theirs] = twin_parameters();
      AdamW opt(ours, AdamWOptions().lr(0.02).weight_decay(wd).amsgrad(amsgrad));
      torch::optim::AdamW reference(theirs, torch::optim::AdamWOptions(0.02).weight_decay(wd).amsgrad(amsgrad));
      expect_bitwise_equal_runs(opt, ours, reference, theirs, 6,
                                "adamw wd " + std::to_string(wd) + " amsgrad " + std::to_string(amsgrad));
    }
  }
}

TEST(Adam, AmsgradDividesByTheLargestSecondMomentSeen) {
  // A large gradient then small ones: AMSGrad keeps the large second moment, so its later steps are smaller.
  at::Tensor plain = param({0.0f}), ams = param({0.0f});
  Adam a({plain}, AdamOptions().lr(0.1).beta2(0.5));
  Adam b({ams}, AdamOptions().lr(0.1).beta2(0.5).amsgrad(true));
  for (float g : {10.0f, 0.1f, 0.1f, 0.1f}) {
    set_grad(plain, {g});
    set_grad(ams, {g});
    a.step();
    b.step();
  }
  EXPECT_GT(b.state_of(ams)->at(3).item<double>(), b.state_of(ams)->at(1).item<double>());
  EXPECT_GT(ams.item<double>(), plain.item<double>());  // both move down; AMSGrad less
}

TEST(AdamW, DecoupledWeightDecayFollowsTheScheduleNotTheLr) {
  // Composer's DecoupledAdamW: p *= 1 - (lr / initial_lr) wd. With a zero gradient the Adam update is 0, so only
  // the decay moves the parameter.
  at::Tensor p = param({2.0f}), q = param({2.0f});
  AdamW composer({p}, AdamWOptions().lr(0.5).weight_decay(0.1).decoupled_weight_decay(true));
  AdamW torch_like({q}, AdamWOptions().lr(0.5).weight_decay(0.1));
  composer.set_lr_factor(0.5);
  torch_like.set_lr_factor(0.5);
  set_grad(p, {0.0f});
  set_grad(q, {0.0f});
  composer.step();
  torch_like.step();
  expect_values(p, {2.0 * (1 - 0.5 * 0.1)});
  expect_values(q, {2.0 * (1 - 0.25 * 0.1)});
}

TEST(Lion, StepsMatchTheFormulas) {
  for (bool decoupled : {false, true}) {
    const LionOptions o = LionOptions().lr(0.01).beta1(0.8).beta2(0.95).weight_decay(0.3).decoupled_weight_decay(decoupled);
    at::Tensor p = param({1.0f, -0.5f, 0.25f});
    Lion opt({p}, o);
    opt.set_lr_factor(0.5);
    const std::vector<std::vector<double>> grads = {{0.3, -2.0, 0.0}, {-0.1, 1.0, 0.0}, {-0.5, 0.5, 0.2}};
    std::vector<double> ref = {1.0, -0.5, 0.25}, m(3, 0.0);
    for (const auto& g : grads) {
      set_grad(p, {static_cast<float>(g[0]), static_cast<float>(g[1]), static_cast<float>(g[2])});
      opt.step();
      const double lr = 0.005;
      for (size_t i = 0; i < 3; ++i) {
        ref[i] *= 1 - (decoupled ? 0.5 : lr) * 0.3;
        const double c = 0.8 * m[i] + 0.2 * g[i];
        ref[i] -= lr * (c > 0 ? 1.0 : c < 0 ? -1.0 : 0.0);
        m[i] = 0.95 * m[i] + 0.05 * g[i];
      }
    }
    expect_values(p, ref, 1e-6);
    expect_values(opt.state_of(p)->at(0), m, 1e-6);
  }
  EXPECT_EQ(Lion(std::vector<at::Tensor>{param({1})}, LionOptions()).name(), "lion");
}

TEST(Lion, EveryCoordinateMovesByTheLrOrNotAtAll) {
  at::manual_seed(3);
  at::Tensor p = at::randn({50}).requires_grad_(true);
  Lion opt({p}, LionOptions().lr(0.01));
  const at::Tensor before = p.detach().clone();
  p.mutable_grad() = at::randn({50});
  p.mutable_grad()[7] = 0;
  opt.step();
  const at::Tensor moved = (p.detach() - before).abs();
  EXPECT_NEAR(moved[7].item<double>(), 0.0, 0.0);
  moved[7] = 0.01;
  EXPECT_TRUE(at::allclose(moved, at::full({50}, 0.01), 0, 1e-6));
}

TEST(RMSprop, BitwiseEqualToTorchRMSprop) {
  for (bool centered : {false, true}) {
    for (double momentum : {0.0, 0.7}) {
      for (double wd : {0.0, 0.02}) {
        auto [ours, theirs] = twin_parameters();
        RMSprop opt(ours, RMSpropOptions().lr(0.01).alpha(0.9).eps(1e-6).weight_decay(wd).momentum(momentum)
                              .centered(centered));
        torch::optim::RMSprop reference(theirs, torch::optim::RMSpropOptions(0.01)
                                                    .alpha(0.9)
                                                    .eps(1e-6)
                                                    .weight_decay(wd)
                                                    .momentum(momentum)
                                                    .centered(centered));
        expect_bitwise_equal_runs(opt, ours, reference, theirs, 6,
                                  fmt::format("rmsprop centered {} momentum {} wd {}", centered, momentum, wd));
        const auto& st = *opt.state_of(ours[0]);
        EXPECT_EQ(st[1].defined(), momentum > 0);
        EXPECT_EQ(st[2].defined(), centered);
      }
    }
  }
  EXPECT_EQ(RMSprop(std::vector<at::Tensor>{param({1})}, RMSpropOptions()).name(), "rmsprop");
}

TEST(Adagrad, BitwiseEqualToTorchAdagrad) {
  for (double lr_decay : {0.0, 0.1}) {
    for (double wd : {0.0, 0.05}) {
      for (double initial : {0.0, 0.5}) {
        auto [ours, theirs] = twin_parameters();
        Adagrad opt(ours, AdagradOptions().lr(0.05).lr_decay(lr_decay).weight_decay(wd).initial_accumulator_value(
                              initial));
        torch::optim::Adagrad reference(theirs, torch::optim::AdagradOptions(0.05)
                                                    .lr_decay(lr_decay)
                                                    .weight_decay(wd)
                                                    .initial_accumulator_value(initial));
        expect_bitwise_equal_runs(opt, ours, reference, theirs, 6,
                                  fmt::format("adagrad lr_decay {} wd {} initial {}", lr_decay, wd, initial));
        EXPECT_EQ(opt.state_of(ours[1])->at(1).item<int64_t>(), 6);
      }
    }
  }
  EXPECT_EQ(Adagrad(std::vector<at::Tensor>{param({1})}, AdagradOptions()).name(), "adagrad");
}

namespace {

double norm_of(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x * x;
  return std::sqrt(sum);
}

/// The trust ratio's guard: `ratio` when both norms are positive, else 1.
double guarded(double ratio, double weight_norm, double other_norm) {
  return weight_norm > 0 && other_norm > 0 ? ratio : 1.0;
}

/// LAMB in double for one parameter tensor, the formulas of the header, over the given gradients.
std::vector<double> reference_lamb(std::vector<double> p, const std::vector<std::vector<double>>& grads,
                                   const LambOptions& o, double lr, double wd) {
  std::vector<double> m(p.size(), 0.0), v(p.size(), 0.0), u(p.size());
  for (size_t k = 1; k <= grads.size(); ++k) {
    const auto& g = grads[k - 1];
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = o.beta1() * m[i] + (1 - o.beta1()) * g[i];
      v[i] = o.beta2() * v[i] + (1 - o.beta2()) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(o.beta1(), k)), vhat = v[i] / (1 - std::pow(o.beta2(), k));
      u[i] = mhat / (std::sqrt(vhat) + o.eps()) + wd * p[i];
    }
    double r = 1.0;
    if (wd != 0 || o.always_adapt()) {
      r = guarded(norm_of(p) / norm_of(u), norm_of(p), norm_of(u));
      if (o.trust_clip()) r = std::min(r, 1.0);
    }
    for (size_t i = 0; i < p.size(); ++i) p[i] -= lr * r * u[i];
  }
  return p;
}

/// LARS in double for one parameter tensor, the formulas of the header, over the given gradients.
std::vector<double> reference_lars(std::vector<double> p, const std::vector<std::vector<double>>& grads,
                                   const LarsOptions& o, double lr, double wd) {
  std::vector<double> buf(p.size(), 0.0), d(p.size());
  for (size_t k = 0; k < grads.size(); ++k) {
    const auto& g = grads[k];
    double r = 1.0;
    const bool adapt = wd != 0 || o.always_adapt();
    if (adapt) {
      r = guarded(o.trust_coefficient() * norm_of(p) / (norm_of(g) + wd * norm_of(p) + o.eps()), norm_of(p),
                  norm_of(g));
      if (o.trust_clip()) r = std::min(r / lr, 1.0);
    }
    for (size_t i = 0; i < p.size(); ++i) {
      d[i] = adapt ? r * (g[i] + wd * p[i]) : g[i];
      if (o.momentum() != 0) {
        buf[i] = k == 0 ? d[i] : o.momentum() * buf[i] + (1 - o.dampening()) * d[i];
        d[i] = o.nesterov() ? d[i] + o.momentum() * buf[i] : buf[i];
      }
      p[i] -= lr * d[i];
    }
  }
  return p;
}

std::vector<float> floats(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

/// Two parameters, "w" (a matrix, in the optimizer's group 0) and "b" (a vector, in a group without weight decay
/// that takes `group_lr`), stepped by `opt` with the three gradients of each; returns them.
template <class Opt, class Options>
std::pair<at::Tensor, at::Tensor> run_two_groups(const Options& options, const std::vector<std::vector<double>>& gw,
                                                 const std::vector<std::vector<double>>& gb, double lr_factor) {
  NamedParameters named;
  named.insert("w", at::tensor(std::vector<float>{0.5f, -1.0f, 2.0f, 0.25f}, at::kFloat).view({2, 2}).requires_grad_(true));
  named.insert("b", param({0.1f, -0.3f}));
  Opt opt(named, options);
  opt.set_lr_factor(lr_factor);
  at::Tensor w = named["w"], b = named["b"];
  for (size_t k = 0; k < gw.size(); ++k) {
    w.mutable_grad() = at::tensor(floats(gw[k]), at::kFloat).view({2, 2});
    b.mutable_grad() = at::tensor(floats(gb[k]), at::kFloat);
    opt.step();
  }
  return {w.detach().flatten(), b.detach()};
}

const std::vector<std::vector<double>> kGradsW = {{0.3, -2.0, 0.0, 1.0}, {-0.1, 1.0, 0.5, 0.2}, {-0.5, 0.5, 0.2, -0.7}};
const std::vector<std::vector<double>> kGradsB = {{1.0, -0.5}, {0.2, 0.4}, {-0.3, 0.1}};

}  // namespace

TEST(Lamb, StepsMatchTheFormulasWithAndWithoutTheTrustRatio) {
  // w (wd 0.1) takes LAMB's layer-wise step; b, in a group without weight decay and a lr of its own, takes Adam's
  // unless always_adapt. The lr factor 0.5 stands for a schedule.
  for (bool always_adapt : {false, true}) {
    for (bool trust_clip : {false, true}) {
      const LambOptions o = LambOptions().lr(0.01).beta1(0.8).beta2(0.9).eps(1e-6).weight_decay(0.1)
                                .always_adapt(always_adapt).trust_clip(trust_clip)
                                .groups({ParamGroupOptions().max_dims(1).weight_decay(0).lr(0.04)});
      auto [w, b] = run_two_groups<Lamb>(o, kGradsW, kGradsB, 0.5);
      const std::string what = fmt::format("always_adapt {} trust_clip {}", always_adapt, trust_clip);
      SCOPED_TRACE(what);
      expect_values(w, reference_lamb({0.5, -1.0, 2.0, 0.25}, kGradsW, o, 0.005, 0.1), 1e-6);
      expect_values(b, reference_lamb({0.1, -0.3}, kGradsB, o, 0.02, 0.0), 1e-6);
    }
  }
}

TEST(Lamb, WithoutDecayOrAdaptationItIsAdam) {
  auto [ours, theirs] = twin_parameters();
  Lamb lamb(ours, LambOptions().lr(0.01).weight_decay(0).eps(1e-6));
  Adam adam(theirs, AdamOptions().lr(0.01).eps(1e-6));
  for (int step = 0; step < 4; ++step) {
    for (size_t i = 0; i < ours.size(); ++i) {
      at::Tensor g = at::randn(ours[i].sizes());
      ours[i].mutable_grad() = g.clone();
      theirs[i].mutable_grad() = g.clone();
    }
    lamb.step();
    adam.step();
  }
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_TRUE(at::allclose(ours[i], theirs[i], 1e-5, 1e-7)) << i;
}

TEST(Lamb, ALayerOfZerosMovesAsTheLrSays) {
  // ||p|| = 0: the ratio is 1, not 0 (which would leave the layer at zero for ever).
  at::Tensor p = param({0.0f, 0.0f});
  Lamb opt({p}, LambOptions().lr(0.1).always_adapt(true).weight_decay(0));
  set_grad(p, {1.0f, -1.0f});
  opt.step();
  expect_values(p, {-0.1, 0.1}, 1e-5);  // a first Adam step moves by lr
  EXPECT_EQ(Lamb(std::vector<at::Tensor>{param({1})}, LambOptions()).name(), "lamb");
}

TEST(Lars, StepsMatchTheFormulasWithAndWithoutTheTrustRatio) {
  for (bool always_adapt : {false, true}) {
    for (bool trust_clip : {false, true}) {
      for (bool nesterov : {false, true}) {
        const LarsOptions o = LarsOptions().lr(0.02).momentum(0.9).nesterov(nesterov).weight_decay(0.01)
                                  .trust_coefficient(0.02).always_adapt(always_adapt).trust_clip(trust_clip)
                                  .groups({ParamGroupOptions().max_dims(1).weight_decay(0).lr(0.1)});
        auto [w, b] = run_two_groups<Lars>(o, kGradsW, kGradsB, 0.5);
        SCOPED_TRACE(fmt::format("always_adapt {} trust_clip {} nesterov {}", always_adapt, trust_clip, nesterov));
        // r is about eta = 0.02 and the lr 0.01: trust_clip's min(r / lr, 1) clips it.
        expect_values(w, reference_lars({0.5, -1.0, 2.0, 0.25}, kGradsW, o, 0.01, 0.01), 1e-6);
        expect_values(b, reference_lars({0.1, -0.3}, kGradsB, o, 0.05, 0.0), 1e-6);
      }
    }
  }
}

TEST(Lars, ALayersStepIsProportionalToItsWeightsNotToItsGradient) {
  // Without momentum and decay, ||step|| = lr eta ||p|| ||g|| / (||g|| + eps): the gradient's scale cancels out,
  // which is what lets LARS take one lr for layers whose gradients differ by orders of magnitude.
  for (float scale : {1e-3f, 1.0f, 1e3f}) {
    at::manual_seed(5);
    at::Tensor p = at::randn({10, 10}).requires_grad_(true);
    const at::Tensor before = p.detach().clone();
    Lars opt({p}, LarsOptions().lr(0.5).momentum(0).trust_coefficient(0.01).always_adapt(true));
    p.mutable_grad() = at::randn({10, 10}) * scale;
    opt.step();
    EXPECT_NEAR((p.detach() - before).norm().item<double>(), 0.5 * 0.01 * before.norm().item<double>(), 1e-5)
        << "gradient scale " << scale;
  }
  EXPECT_EQ(Lars(std::vector<at::Tensor>{param({1})}, LarsOptions()).name(), "lars");
}

TEST(Adam, RejectsInvalidOptions) {
  at::Tensor p = param({1});
  EXPECT_THROW(Adam({p}, AdamOptions().beta1(1.0)), tessera::InputError);
  EXPECT_THROW(AdamW({p}, AdamWOptions().eps(0)), tessera::InputError);
  EXPECT_THROW(Lion({p}, LionOptions().beta2(-0.1)), tessera::InputError);
  EXPECT_THROW(RMSprop({p}, RMSpropOptions().alpha(1.0)), tessera::InputError);
  EXPECT_THROW(Adagrad({p}, AdagradOptions().lr_decay(-1)), tessera::InputError);
  EXPECT_THROW(Lamb({p}, LambOptions().eps(0)), tessera::InputError);
  EXPECT_THROW(Lars({p}, LarsOptions().trust_coefficient(0)), tessera::InputError);
  EXPECT_THAT(input_error_of([&] { Lars({p}, LarsOptions().momentum(0).nesterov(true)); }),
              ::testing::HasSubstr("Nesterov momentum needs momentum > 0"));
}

// ------------------------------------------------------------------------------------------------ parameter groups

namespace {

NamedParameters named(const std::vector<std::pair<std::string, at::Tensor>>& items) {
  NamedParameters out;
  for (const auto& [name, p] : items) out.insert(name, p);
  return out;
}

std::vector<std::string> group_names(const tessera::optim::Optimizer& opt, const NamedParameters& params, size_t g) {
  std::vector<std::string> out;
  for (const auto& p : opt.param_groups().at(g).params) {
    for (const auto& item : params) {
      if (item.value().unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) out.push_back(item.key());
    }
  }
  return out;
}


}  // namespace

TEST(GlobMatch, WildcardsMatchWholeNames) {
  using tessera::optim::glob_match;
  EXPECT_TRUE(glob_match("*.bias", "layer1.0.conv.bias"));
  EXPECT_FALSE(glob_match("*.bias", "layer1.0.conv.bias_extra"));
  EXPECT_TRUE(glob_match("fc.*", "fc.weight"));
  EXPECT_FALSE(glob_match("fc.*", "x.fc.weight"));
  EXPECT_TRUE(glob_match("*norm*", "blocks.3.norm1.weight"));
  EXPECT_TRUE(glob_match("layer?.*", "layer4.1.bn2.weight"));
  EXPECT_FALSE(glob_match("layer?.*", "layer12.weight"));
  EXPECT_TRUE(glob_match("fc.weight", "fc.weight"));
  EXPECT_FALSE(glob_match("fc.weight", "fc.weigh"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("**a*b*", "xxaxxbxx"));
  EXPECT_FALSE(glob_match("*a*b", "xxbxxa"));
  EXPECT_TRUE(glob_match("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaab"));
  EXPECT_FALSE(glob_match("a*a*a*a*b", std::string(40, 'a')));
}

TEST(ParamGroups, EachParameterJoinsTheFirstEntryThatSelectsIt) {
  const NamedParameters params = named({{"conv.weight", at::randn({4, 3, 3, 3})},
                                        {"conv.bias", at::randn({4})},
                                        {"bn.weight", at::randn({4})},
                                        {"fc.weight", at::randn({10, 4})},
                                        {"fc.bias", at::randn({10})}});
  AdamW opt(params, AdamWOptions().lr(1e-3).weight_decay(0.1).groups(
                        {ParamGroupOptions().names({"fc.*"}).lr(1e-2), ParamGroupOptions().max_dims(1).weight_decay(0)}));
  ASSERT_EQ(opt.param_groups().size(), 3u);
  EXPECT_EQ(group_names(opt, params, 0), std::vector<std::string>({"conv.weight"}));
  EXPECT_EQ(group_names(opt, params, 1), std::vector<std::string>({"fc.weight", "fc.bias"}));
  EXPECT_EQ(group_names(opt, params, 2), std::vector<std::string>({"conv.bias", "bn.weight"}));
  const auto& g = opt.param_groups();
  EXPECT_DOUBLE_EQ(g[0].initial_lr, 1e-3);
  EXPECT_DOUBLE_EQ(g[0].weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(g[1].initial_lr, 1e-2);   // its own lr
  EXPECT_DOUBLE_EQ(g[1].weight_decay, 0.1);  // the optimizer's decay
  EXPECT_DOUBLE_EQ(g[2].initial_lr, 1e-3);
  EXPECT_DOUBLE_EQ(g[2].weight_decay, 0.0);
  opt.set_lr_factor(0.5);  // schedulers scale every group's own lr
  EXPECT_DOUBLE_EQ(opt.param_groups()[1].lr, 5e-3);
  EXPECT_DOUBLE_EQ(opt.param_groups()[0].lr, 5e-4);
}

TEST(ParamGroups, AGroupTrainsWithItsOwnSettings) {
  // SGD with L2 decay: a parameter in a group without decay moves exactly as under an optimizer without decay,
  // and one in a group with its own lr as under an optimizer with that lr.
  at::Tensor a = param({1.0f, 2.0f}), b = param({3.0f}), c = param({-1.0f, 1.0f});
  SGD opt(named({{"w", a}, {"b", b}, {"head.w", c}}),
          SGDOptions().lr(0.1).momentum(0.5).weight_decay(0.2).groups(
              {ParamGroupOptions().names({"b"}).weight_decay(0), ParamGroupOptions().names({"head.*"}).lr(0.3)}));
  at::Tensor a2 = param({1.0f, 2.0f}), b2 = param({3.0f}), c2 = param({-1.0f, 1.0f});
  SGD base({a2}, SGDOptions().lr(0.1).momentum(0.5).weight_decay(0.2));
  SGD no_decay({b2}, SGDOptions().lr(0.1).momentum(0.5).weight_decay(0));
  SGD fast({c2}, SGDOptions().lr(0.3).momentum(0.5).weight_decay(0.2));
  for (int s = 0; s < 3; ++s) {
    for (auto* t : {&a, &a2, &c, &c2}) set_grad(*t, {0.5f, -0.25f});
    set_grad(b, {1.0f});
    set_grad(b2, {1.0f});
    opt.step();
    base.step();
    no_decay.step();
    fast.step();
  }
  EXPECT_TRUE(at::equal(a, a2));
  EXPECT_TRUE(at::equal(b, b2));
  EXPECT_TRUE(at::equal(c, c2));
}

TEST(ParamGroups, SurgeryAddsParametersToTheGroupThatSelectsThem) {
  // An entry may select only parameters that surgery adds later (squeeze_excite's gates): empty until then.
  NamedParameters params = named({{"conv.weight", param({1, 2})}, {"fc.weight", param({3})}});
  SGD opt(params, SGDOptions().groups({ParamGroupOptions().names({"*se.*"}).lr(1.0)}));
  EXPECT_TRUE(opt.param_groups()[1].params.empty());
  EXPECT_THROW(opt.check_groups(params), tessera::InputError);
  at::Tensor gate = param({5}), other = param({6});
  opt.add_parameter("block.se.fc1.weight", gate);
  opt.add_parameter("block.extra", other);
  params.insert("block.se.fc1.weight", gate);
  params.insert("block.extra", other);
  ASSERT_EQ(opt.param_groups()[1].params.size(), 1u);
  EXPECT_TRUE(opt.param_groups()[1].params[0].is_same(gate));
  EXPECT_TRUE(opt.param_groups()[0].params.back().is_same(other));
  EXPECT_NO_THROW(opt.check_groups(params));
}

TEST(ParamGroups, RefusesGroupsThatCannotMeanWhatTheySay) {
  const NamedParameters params = named({{"conv.weight", at::ones({2, 2})}, {"fc.bias", param({3})}});
  auto make = [&](std::vector<ParamGroupOptions> groups) {
    return [&params, groups] { SGD(params, SGDOptions().groups(groups)).check_groups(params); };
  };
  EXPECT_THAT(input_error_of(make({ParamGroupOptions().names({"*.bais"}).weight_decay(0)})),
              ::testing::HasSubstr("optimizer.sgd.groups[0]: names [*.bais] selects none of the model's 2 parameters; "
                                   "the parameters are named like conv.weight, fc.bias"));
  EXPECT_THAT(input_error_of(make({ParamGroupOptions().names({"fc.*"}).lr(1), ParamGroupOptions().max_dims(1).lr(2)})),
              ::testing::HasSubstr("optimizer.sgd.groups[1]: max_dims 1 selects none of the model's 2 parameters "
                                   "(every one it matches is taken by an earlier entry"));
  EXPECT_THAT(input_error_of(make({ParamGroupOptions().lr(1)})),
              ::testing::HasSubstr("optimizer.groups[0]: selects every parameter (neither names nor max_dims given)"));
  EXPECT_THAT(input_error_of(make({ParamGroupOptions().names({"fc.*"})})),
              ::testing::HasSubstr("optimizer.groups[0]: sets neither lr nor weight_decay, so the parameters it selects "
                                   "(names [fc.*]) would train exactly as the others"));
  EXPECT_THAT(input_error_of(make({ParamGroupOptions().names({"fc.*"}).weight_decay(-0.5)})),
              ::testing::HasSubstr("optimizer.groups[0].weight_decay: -0.5 is neither -1 (the optimizer's) nor >= 0"));
  EXPECT_THAT(input_error_of(make({ParamGroupOptions().names({"fc.*"}).lr(-1)})),
              ::testing::HasSubstr("optimizer.groups[0].lr"));
  EXPECT_THAT(input_error_of([] {
                SGD(std::vector<at::Tensor>{param({1})}, SGDOptions().groups({ParamGroupOptions().names({"x"}).lr(1)}));
              }),
              ::testing::HasSubstr("build the optimizer from model->named_parameters()"));
  // Without names, groups by shape work.
  at::Tensor w = at::randn({2, 2}).requires_grad_(true), b = param({1});
  SGD by_shape({w, b}, SGDOptions().groups({ParamGroupOptions().max_dims(1).weight_decay(0)}));
  EXPECT_TRUE(by_shape.param_groups()[1].params.at(0).is_same(b));
}

// ------------------------------------------------------------------------------------------------ groups

TEST(OptimizerGroups, ZeroGradAndLrFactor) {
  at::Tensor p = param({1, 2});
  SGD opt({p}, SGDOptions().lr(0.2));
  set_grad(p, {1, 1});
  opt.zero_grad(false);
  ASSERT_TRUE(p.grad().defined());
  expect_values(p.grad(), {0, 0});
  opt.zero_grad();
  EXPECT_FALSE(p.grad().defined());
  opt.set_lr_factor(0.25);
  EXPECT_DOUBLE_EQ(opt.param_groups()[0].lr, 0.05);
  EXPECT_DOUBLE_EQ(opt.param_groups()[0].initial_lr, 0.2);
  EXPECT_EQ(opt.name(), "sgd");
  EXPECT_EQ(AdamW({p}, AdamWOptions()).name(), "adamw");
}

TEST(OptimizerGroups, RemoveParametersDropsThemAndTheirState) {
  at::Tensor a = param({1}), b = param({2}), c = param({3});
  SGD opt({a, b, c}, SGDOptions().lr(0.1).momentum(0.9));
  for (auto* p : {&a, &b, &c}) set_grad(*p, {1});
  opt.step();
  ASSERT_EQ(opt.state().size(), 3u);
  opt.remove_parameters({a, c});
  ASSERT_EQ(opt.param_groups()[0].params.size(), 1u);
  EXPECT_EQ(opt.param_groups()[0].params[0].unsafeGetTensorImpl(), b.unsafeGetTensorImpl());
  EXPECT_FALSE(opt.contains(a));
  EXPECT_TRUE(opt.contains(b));
  EXPECT_FALSE(opt.contains(c));
  EXPECT_EQ(opt.state().size(), 1u);
  EXPECT_EQ(opt.state_of(a), nullptr);
  EXPECT_NE(opt.state_of(b), nullptr);
  // Removed parameters are no longer updated.
  opt.step();
  expect_values(a, {0.9});
  expect_values(b, {2 - 0.1 - 0.19});
}

TEST(OptimizerGroups, ReplaceParameterKeepsThePositionAndDropsState) {
  at::Tensor a = param({1}), b = param({2});
  SGD opt({a, b}, SGDOptions().lr(0.1).momentum(0.9));
  set_grad(a, {1});
  set_grad(b, {1});
  opt.step();
  at::Tensor a2 = param({5});
  opt.replace_parameter(a, a2);
  EXPECT_FALSE(opt.contains(a));
  EXPECT_TRUE(opt.contains(a2));
  EXPECT_EQ(opt.param_groups()[0].params[0].unsafeGetTensorImpl(), a2.unsafeGetTensorImpl());
  EXPECT_EQ(opt.state_of(a), nullptr);
  // The new parameter starts without momentum.
  set_grad(a2, {1});
  opt.step();
  expect_values(a2, {4.9});
  at::Tensor d = param({0});
  opt.add_parameter("d", d);
  EXPECT_EQ(opt.param_groups()[0].params.size(), 3u);
  EXPECT_TRUE(opt.contains(d));
  EXPECT_THROW(opt.replace_parameter(param({7}), param({8})), tessera::Error);
}

// ------------------------------------------------------------------------------------------------ Muon

namespace {

using tessera::optim::Muon;
using tessera::optim::MuonOptions;
using tessera::optim::newton_schulz;

const std::array<double, 3> kNsCoefficients{3.4445, -4.7750, 2.0315};

/// Copies of `params` (fresh leaves with the same values), named alike.
NamedParameters twins(const NamedParameters& params) {
  NamedParameters out;
  for (const auto& item : params) out.insert(item.key(), item.value().detach().clone().requires_grad_(true));
  return out;
}

/// Gives every parameter of both sets the same random gradient.
void same_random_grads(NamedParameters& a, NamedParameters& b) {
  for (const auto& item : a) {
    const at::Tensor g = at::randn(item.value().sizes());
    a[item.key()].mutable_grad() = g.clone();
    b[item.key()].mutable_grad() = g.clone();
  }
}

}  // namespace

TEST(Muon, NewtonSchulzOrthogonalisesAMatrixInBfloat16) {
  at::manual_seed(3);
  const at::Tensor g = at::randn({48, 20});
  const at::Tensor o = newton_schulz(g, 5, kNsCoefficients, 1e-7);
  ASSERT_EQ(o.sizes(), g.sizes());
  EXPECT_EQ(o.scalar_type(), at::kBFloat16);
  // Its singular values are near 1 (the quintic overshoots: roughly 0.7 to 1.2), g's spread over a factor
  // of 3.5.
  const at::Tensor s = at::linalg_svdvals(o.to(at::kFloat));
  EXPECT_GT(s.min().item<double>(), 0.6);
  EXPECT_LT(s.max().item<double>(), 1.3);
  const at::Tensor sg = at::linalg_svdvals(g);
  EXPECT_GT((sg.max() / sg.min()).item<double>(), 3.0);
  // It points where U V^T does (g = U S V^T): the polar factor, which equalises the singular values.
  const auto [u, unused, vh] = at::linalg_svd(g, /*full_matrices=*/false);
  const at::Tensor polar = at::matmul(u, vh);
  const double cosine = (o.to(at::kFloat) * polar).sum().item<double>() /
                        (o.to(at::kFloat).norm() * polar.norm()).item<double>();
  EXPECT_GT(cosine, 0.98);
  // A wide matrix is handled as the transpose of the tall one (the Gram matrix is the smaller one), bitwise.
  EXPECT_TRUE(at::equal(newton_schulz(g.t().contiguous(), 5, kNsCoefficients, 1e-7), o.t()));
  // More iterations bring the singular values no further from 1 than fewer.
  const at::Tensor s1 = at::linalg_svdvals(newton_schulz(g, 1, kNsCoefficients, 1e-7).to(at::kFloat));
  EXPECT_GT((s1 - 1).abs().max().item<double>(), (s - 1).abs().max().item<double>());
  // A zero matrix stays zero (the norm is clamped at eps), and a vector is refused.
  EXPECT_TRUE(at::equal(newton_schulz(at::zeros({4, 3}), 5, kNsCoefficients, 1e-7),
                        at::zeros({4, 3}, at::kBFloat16)));
  EXPECT_THROW(newton_schulz(at::ones({4}), 5, kNsCoefficients, 1e-7), tessera::InputError);
}

TEST(Muon, AMatrixMovesAlongItsOrthogonalisedMomentumAtTheAdjustedLr) {
  // momentum 0.5, no Nesterov: m1 = 0.5 g1, m2 = 0.5 m1 + 0.5 g2; each step p = p (1 - lr wd) - lr' NS(m).
  at::manual_seed(5);
  for (const std::string rule : {"original", "match_rms_adamw", "spectral_unclamped", "none"}) {
    NamedParameters params = named({{"w", at::randn({12, 6}).requires_grad_(true)}});
    at::Tensor expected = params["w"].detach().clone();
    const double lr = 0.02, wd = 0.1;
    Muon opt(params, MuonOptions().lr(lr).weight_decay(wd).momentum(0.5).nesterov(false).adjust_lr(rule));
    const double factor = rule == "original"             ? std::sqrt(12.0 / 6.0)
                          : rule == "match_rms_adamw"    ? 0.2 * std::sqrt(12.0)
                          : rule == "spectral_unclamped" ? std::sqrt(12.0 / 6.0)
                                                         : 1.0;
    at::Tensor m = at::zeros({12, 6});
    for (int step = 0; step < 2; ++step) {
      const at::Tensor g = at::randn({12, 6});
      params["w"].mutable_grad() = g.clone();
      opt.step();
      m = m.lerp(g, 0.5);
      expected.mul_(1 - lr * wd).add_(newton_schulz(m, 5, kNsCoefficients, 1e-7), -lr * factor);
      ASSERT_TRUE(at::equal(params["w"], expected)) << rule << " step " << step;
    }
    EXPECT_FALSE(opt.uses_adamw(params["w"]));
  }
}

TEST(Muon, NesterovOrthogonalisesTheGradientPulledTowardsTheMomentum) {
  at::manual_seed(6);
  NamedParameters params = named({{"w", at::randn({5, 8}).requires_grad_(true)}});
  at::Tensor expected = params["w"].detach().clone();
  Muon opt(params, MuonOptions().lr(0.01).weight_decay(0));  // momentum 0.95, Nesterov: the defaults
  at::Tensor m = at::zeros({5, 8});
  for (int step = 0; step < 3; ++step) {
    const at::Tensor g = at::randn({5, 8});
    params["w"].mutable_grad() = g.clone();
    opt.step();
    m.lerp_(g, 1 - 0.95);
    expected.add_(newton_schulz(g.lerp(m, 0.95), 5, kNsCoefficients, 1e-7),
                  -0.01);  // wide: sqrt(max(1, 5/8)) = 1
    ASSERT_TRUE(at::equal(params["w"], expected)) << "step " << step;
  }
}

TEST(Muon, AConvolutionKernelIsOrthogonalisedAsItsOutputChannelsRows) {
  at::manual_seed(7);
  NamedParameters params = named({{"conv.weight", at::randn({8, 3, 3, 3}).requires_grad_(true)}});
  const at::Tensor before = params["conv.weight"].detach().clone();
  Muon opt(params, MuonOptions().lr(0.05).weight_decay(0).momentum(0).nesterov(false));
  const at::Tensor g = at::randn({8, 3, 3, 3});
  params["conv.weight"].mutable_grad() = g.clone();
  opt.step();
  // [8, 27]: wide, so the lr is not scaled
  const at::Tensor o = newton_schulz(g.reshape({8, 27}), 5, kNsCoefficients, 1e-7).reshape({8, 3, 3, 3});
  EXPECT_TRUE(at::equal(params["conv.weight"], before.add(o, -0.05)));
}

TEST(Muon, VectorsAndTheNamedMatricesTakeAdamWsUpdateBitwise) {
  at::manual_seed(8);
  NamedParameters params = named({{"embed.weight", at::randn({10, 4}).requires_grad_(true)},
                                  {"layer.weight", at::randn({6, 4}).requires_grad_(true)},
                                  {"layer.bias", at::randn({6}).requires_grad_(true)},
                                  {"norm.weight", at::randn({6}).requires_grad_(true)}});
  NamedParameters reference = twins(params);
  Muon muon(params, MuonOptions()
                        .lr(0.02)
                        .adamw_names({"embed.*"})
                        .adamw_lr(3e-3)
                        .adamw_beta1(0.8)
                        .adamw_beta2(0.95)
                        .adamw_eps(1e-10)
                        .adamw_weight_decay(0.05));
  AdamW adamw(reference, AdamWOptions().lr(3e-3).beta1(0.8).beta2(0.95).eps(1e-10).weight_decay(0.05));
  EXPECT_TRUE(muon.uses_adamw(params["embed.weight"]));
  EXPECT_FALSE(muon.uses_adamw(params["layer.weight"]));
  EXPECT_TRUE(muon.uses_adamw(params["layer.bias"]));
  for (int step = 0; step < 3; ++step) {
    same_random_grads(params, reference);
    // A schedule scales AdamW's lr as it scales Muon's.
    muon.set_lr_factor(1.0 - 0.25 * step);
    adamw.set_lr_factor(1.0 - 0.25 * step);
    muon.step();
    adamw.step();
    for (const char* name : {"embed.weight", "layer.bias", "norm.weight"}) {
      ASSERT_TRUE(at::equal(params[name], reference[name])) << name << " step " << step;
    }
    EXPECT_FALSE(at::equal(params["layer.weight"], reference["layer.weight"]));
  }
  EXPECT_EQ(muon.state_of(params["layer.weight"])->size(), 1u);  // momentum_buffer
  EXPECT_EQ(muon.state_of(params["layer.bias"])->size(), 3u);    // exp_avg, exp_avg_sq, step
}

TEST(Muon, AGroupEntrysLrAndWeightDecayHoldForBothKindsOfParameter) {
  at::manual_seed(9);
  NamedParameters params = named({{"a.weight", at::randn({6, 4}).requires_grad_(true)},
                                  {"a.bias", at::randn({6}).requires_grad_(true)},
                                  {"b.weight", at::randn({6, 4}).requires_grad_(true)},
                                  {"b.bias", at::randn({6}).requires_grad_(true)}});
  // b.*: lr 0.001 and no decay for both its matrix (Muon) and its bias (AdamW); a.*: the defaults of each
  // kind.
  const auto groups =
      std::vector<ParamGroupOptions>{ParamGroupOptions().names({"b.*"}).lr(1e-3).weight_decay(0)};
  NamedParameters ours = twins(params);
  Muon muon(ours,
            MuonOptions().lr(0.02).weight_decay(0.1).adamw_lr(3e-3).adamw_weight_decay(0.05).groups(groups));
  NamedParameters same_lr = twins(params);  // the b.* entry's settings as the optimizer's own
  Muon plain(same_lr, MuonOptions().lr(1e-3).weight_decay(0).adamw_lr(1e-3).adamw_weight_decay(0));
  NamedParameters defaults = twins(params);  // no entry: a.* as above
  Muon none(defaults, MuonOptions().lr(0.02).weight_decay(0.1).adamw_lr(3e-3).adamw_weight_decay(0.05));
  for (int step = 0; step < 2; ++step) {
    same_random_grads(ours, same_lr);
    for (const auto& item : ours) defaults[item.key()].mutable_grad() = item.value().grad().clone();
    muon.step();
    plain.step();
    none.step();
  }
  EXPECT_TRUE(at::equal(ours["b.weight"], same_lr["b.weight"]));
  EXPECT_TRUE(at::equal(ours["b.bias"], same_lr["b.bias"]));
  EXPECT_TRUE(at::equal(ours["a.weight"], defaults["a.weight"]));
  EXPECT_TRUE(at::equal(ours["a.bias"], defaults["a.bias"]));
}

TEST(Muon, ParametersAddedByNameOrReplacedKeepTheirKind) {
  NamedParameters params = named({{"w", at::randn({4, 4}).requires_grad_(true)}});
  Muon opt(params, MuonOptions().adamw_names({"head.*"}));
  const at::Tensor head = at::randn({3, 4}).requires_grad_(true),
                   gate = at::randn({4, 2}).requires_grad_(true), bias = at::randn({4}).requires_grad_(true);
  opt.add_parameter("head.weight", head);
  opt.add_parameter("se.gate", gate);
  opt.add_parameter("se.bias", bias);
  EXPECT_TRUE(opt.uses_adamw(head));
  EXPECT_FALSE(opt.uses_adamw(gate));
  EXPECT_TRUE(opt.uses_adamw(bias));
  const at::Tensor head2 = at::randn({3, 4}).requires_grad_(true);
  opt.replace_parameter(head, head2);
  EXPECT_TRUE(opt.uses_adamw(head2));
  // A parameter that left is forgotten (an address may be reused): a matrix it does not know is Muon's by its shape.
  EXPECT_FALSE(opt.uses_adamw(head));
  opt.remove_parameters({gate, head2});
  EXPECT_FALSE(opt.contains(gate));
  EXPECT_FALSE(opt.uses_adamw(head2));
}

TEST(Muon, RefusesOptionsThatCannotWork) {
  NamedParameters params = named({{"w", at::randn({4, 4}).requires_grad_(true)}});
  EXPECT_THAT(input_error_of([&] {
                Muon(params, MuonOptions().ns_coefficients({3.4, -4.7}));
              }),
              ::testing::HasSubstr("expected the 3 coefficients"));
  EXPECT_THAT(input_error_of([&] { Muon(params, MuonOptions().adjust_lr("sqrt")); }),
              ::testing::HasSubstr("adjust_lr"));
  EXPECT_THAT(input_error_of([&] { Muon(params, MuonOptions().ns_steps(0)); }),
              ::testing::HasSubstr("ns_steps"));
  // Two momenta (its own, its AdamW's beta1): a momentum schedule has none it could set.
  Muon muon(params, MuonOptions());
  EXPECT_EQ(muon.momentum_option(), "");
  EXPECT_THAT(input_error_of([&] { muon.set_momentum(0.9); }), ::testing::HasSubstr("muon has no momentum"));
  EXPECT_THAT(input_error_of([&] {
                Muon(std::vector<at::Tensor>{at::randn({4, 4})}, MuonOptions().adamw_names({"embed.*"}));
              }),
              ::testing::HasSubstr("needs their names"));
  EXPECT_THAT(input_error_of([&] { Muon(params, MuonOptions().adamw_names({""})); }),
              ::testing::HasSubstr("adamw_names"));
}

// ------------------------------------------------------------------------------------------------ NAdam,
// RAdam (bitwise against torch.optim's in optim_interop_test.cpp; here the formulas, without the peers' venv)

TEST(NAdam, StepsMatchTheFormulas) {
  using tessera::optim::NAdam;
  using tessera::optim::NAdamOptions;
  at::Tensor p = param({1.0, -2.0});
  NAdam opt({p}, NAdamOptions().lr(0.01).weight_decay(0.1).momentum_decay(0.05));
  std::vector<double> w = {1.0, -2.0}, m = {0, 0}, v = {0, 0};
  const std::vector<std::vector<float>> grads = {{0.5, -1.0}, {0.2, 0.3}, {-0.4, 0.1}};
  double mu_product = 1.0;
  for (size_t k = 1; k <= grads.size(); ++k) {
    set_grad(p, grads[k - 1]);
    opt.step();
    const double mu = 0.9 * (1 - 0.5 * std::pow(0.96, k * 0.05));
    const double mu_next = 0.9 * (1 - 0.5 * std::pow(0.96, (k + 1) * 0.05));
    mu_product *= mu;
    for (size_t i = 0; i < 2; ++i) {
      const double g = grads[k - 1][i] + 0.1 * w[i];
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.999 * v[i] + 0.001 * g * g;
      const double d = std::sqrt(v[i] / (1 - std::pow(0.999, k))) + 1e-8;
      w[i] -=
          0.01 * (1 - mu) / (1 - mu_product) * g / d + 0.01 * mu_next / (1 - mu_product * mu_next) * m[i] / d;
    }
    expect_values(p, w, 1e-5);
  }
  const auto* st = opt.state_of(p);
  ASSERT_EQ(st->size(), 4u);
  EXPECT_EQ((*st)[3].scalar_type(), at::kFloat);  // mu_product, a float32 scalar as torch keeps it
  EXPECT_NEAR((*st)[3].item<double>(), mu_product, 1e-6);
}

TEST(RAdam, ItStepsWithMomentumUntilTheSecondMomentCanBeTrustedThenRectifiesAdam) {
  using tessera::optim::RAdam;
  using tessera::optim::RAdamOptions;
  at::Tensor p = param({1.0});
  RAdam opt({p}, RAdamOptions().lr(0.1).beta2(0.9));  // rho_inf = 19: rho_k > 5 from step 6 on
  double w = 1.0, m = 0, v = 0;
  const double rho_inf = 2 / (1 - 0.9) - 1;
  for (int k = 1; k <= 8; ++k) {
    const double g = 0.3 * k - 1.0;
    set_grad(p, {static_cast<float>(g)});
    opt.step();
    m = 0.9 * m + 0.1 * g;
    v = 0.9 * v + 0.1 * g * g;
    const double m_hat = m / (1 - std::pow(0.9, k));
    const double rho = rho_inf - 2 * k * std::pow(0.9, k) / (1 - std::pow(0.9, k));
    EXPECT_EQ(rho > 5, k >= 6) << k;
    if (rho > 5) {
      const double r = std::sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho));
      w -= 0.1 * m_hat * std::sqrt(1 - std::pow(0.9, k)) / (std::sqrt(v) + 1e-8) * r;
    } else {
      w -= 0.1 * m_hat;
    }
    expect_values(p, {w}, 1e-5);
  }
}

// ------------------------------------------------------------------------------------------------ Adamax,
// Adadelta, Adafactor (bitwise against torch.optim's in optim_interop_test.cpp; here the formulas)

TEST(Adamax, StepsMatchTheFormulas) {
  using tessera::optim::Adamax;
  using tessera::optim::AdamaxOptions;
  at::Tensor p = param({1.0, -2.0});
  Adamax opt({p}, AdamaxOptions().lr(0.01).beta1(0.8).beta2(0.9).eps(1e-3).weight_decay(0.1));
  std::vector<double> w = {1.0, -2.0}, m = {0, 0}, u = {0, 0};
  const std::vector<std::vector<float>> grads = {{0.5, -1.0}, {0.2, 0.3}, {-0.4, 0.1}, {0.0, 0.05}};
  for (size_t k = 1; k <= grads.size(); ++k) {
    set_grad(p, grads[k - 1]);
    opt.step();
    for (size_t i = 0; i < 2; ++i) {
      const double g = grads[k - 1][i] + 0.1 * w[i];
      m[i] = 0.8 * m[i] + 0.2 * g;
      u[i] = std::max(0.9 * u[i], std::abs(g) + 1e-3);  // the infinity norm: a running maximum
      w[i] -= 0.01 / (1 - std::pow(0.8, k)) * m[i] / u[i];
    }
    expect_values(p, w, 1e-6);
  }
  ASSERT_EQ(opt.state_of(p)->size(), 3u);
  EXPECT_EQ((*opt.state_of(p))[2].item<int64_t>(), 4);
}

TEST(Adadelta, StepsMatchTheFormulas) {
  using tessera::optim::Adadelta;
  using tessera::optim::AdadeltaOptions;
  at::Tensor p = param({1.0, -2.0});
  Adadelta opt({p}, AdadeltaOptions().lr(0.5).rho(0.7).eps(1e-4).weight_decay(0.1));
  std::vector<double> w = {1.0, -2.0}, v = {0, 0}, acc = {0, 0};
  const std::vector<std::vector<float>> grads = {{0.5, -1.0}, {0.2, 0.3}, {-0.4, 0.1}};
  for (size_t k = 1; k <= grads.size(); ++k) {
    set_grad(p, grads[k - 1]);
    opt.step();
    for (size_t i = 0; i < 2; ++i) {
      const double g = grads[k - 1][i] + 0.1 * w[i];
      v[i] = 0.7 * v[i] + 0.3 * g * g;
      const double d = std::sqrt(acc[i] + 1e-4) / std::sqrt(v[i] + 1e-4) * g;
      acc[i] = 0.7 * acc[i] + 0.3 * d * d;
      w[i] -= 0.5 * d;
    }
    expect_values(p, w, 1e-6);
  }
}

TEST(Adafactor, AMatrixKeepsRowAndColumnMeansAndStepsAsTheFormulasSay) {
  using tessera::optim::Adafactor;
  using tessera::optim::AdafactorOptions;
  // A 2x3 matrix and a vector of 2, lr 0.5 (1/sqrt(k) takes over at k = 5), d 1.2 clips the first update.
  at::Tensor m = at::tensor({1.0f, -2.0f, 0.5f, 3.0f, 0.25f, -1.0f}).view({2, 3}).requires_grad_();
  at::Tensor b = param({0.5, -0.5});
  const double lr = 0.5, wd = 0.1, decay = -0.8, eps1 = 1e-3, eps2 = 1e-3, d = 1.2;
  Adafactor opt(std::vector<at::Tensor>{m, b},
                AdafactorOptions().lr(lr).weight_decay(wd).beta2_decay(decay).eps1(eps1).eps2(eps2).d(d));
  std::vector<double> W = {1.0, -2.0, 0.5, 3.0, 0.25, -1.0}, B = {0.5, -0.5};
  std::vector<double> R = {0, 0}, C = {0, 0, 0}, V = {0, 0};
  const auto rms = [](const std::vector<double>& x) {
    double sum = 0;
    for (double e : x) sum += e * e;
    return std::sqrt(sum / static_cast<double>(x.size()));
  };
  for (int k = 1; k <= 6; ++k) {
    std::vector<double> G(6), g(2);
    for (int i = 0; i < 6; ++i) G[i] = std::sin(1.0 + k * 0.7 + i);
    for (int i = 0; i < 2; ++i) g[i] = std::cos(k + 2.0 * i);
    m.mutable_grad() = at::tensor(std::vector<float>(G.begin(), G.end())).view({2, 3});
    set_grad(b, {static_cast<float>(g[0]), static_cast<float>(g[1])});
    for (auto& x : G) x = static_cast<float>(x);
    for (auto& x : g) x = static_cast<float>(x);
    opt.step();
    const double beta = std::pow(k, decay), step = std::min(lr, 1 / std::sqrt(k));
    // The matrix: row means over its columns, column means over its rows.
    const double alpha_m = std::max(eps2, rms(W)) * step;
    for (auto& x : W) x *= 1 - lr * wd;
    for (int r = 0; r < 2; ++r) {
      const double mean = (G[3 * r] * G[3 * r] + G[3 * r + 1] * G[3 * r + 1] + G[3 * r + 2] * G[3 * r + 2]) / 3;
      R[r] += beta * (mean - R[r]);
    }
    for (int c = 0; c < 3; ++c) C[c] += beta * ((G[c] * G[c] + G[3 + c] * G[3 + c]) / 2 - C[c]);
    const double row_mean = std::max((R[0] + R[1]) / 2, eps1);
    std::vector<double> U(6);
    for (int r = 0; r < 2; ++r) {
      for (int c = 0; c < 3; ++c) {
        U[3 * r + c] = G[3 * r + c] / std::sqrt(std::max(R[r] * C[c] / row_mean, eps1 * eps1));
      }
    }
    const double clip_m = std::max(1.0, rms(U) / d);
    for (int i = 0; i < 6; ++i) W[i] -= alpha_m / clip_m * U[i];
    // The vector: its own second moment.
    const double alpha_b = std::max(eps2, rms(B)) * step;
    for (auto& x : B) x *= 1 - lr * wd;
    std::vector<double> u(2);
    for (int i = 0; i < 2; ++i) {
      V[i] += beta * (g[i] * g[i] - V[i]);
      u[i] = g[i] / std::sqrt(std::max(V[i], eps1 * eps1));
    }
    const double clip_b = std::max(1.0, rms(u) / d);
    for (int i = 0; i < 2; ++i) B[i] -= alpha_b / clip_b * u[i];
    expect_values(m.detach().reshape({-1}), W, 2e-5);
    expect_values(b, B, 2e-5);
  }
  // The state: a 2x1 and a 1x3 factor for the matrix (not 2x3), a full vector for the vector.
  const auto& sm = *opt.state_of(m);
  EXPECT_EQ(sm[0].sizes(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(sm[1].sizes(), (std::vector<int64_t>{1, 3}));
  EXPECT_FALSE(sm[2].defined());
  EXPECT_EQ(sm[3].item<int64_t>(), 6);
  const auto& sb = *opt.state_of(b);
  EXPECT_FALSE(sb[0].defined());
  EXPECT_EQ(sb[2].sizes(), (std::vector<int64_t>{2}));
}

TEST(Adafactor, ADefaultEps1IsTheParametersMachineEpsilon) {
  using tessera::optim::Adafactor;
  using tessera::optim::AdafactorOptions;
  // A gradient of 1e-9 in one place, 0 elsewhere: the second moment's estimate there (about 2e-30) is floored at
  // eps1^2, so the update there is 1e-9 / eps1, with eps1 float's machine epsilon (2^-23); 0 elsewhere.
  at::Tensor p = at::ones({2, 2}).requires_grad_();
  Adafactor opt(std::vector<at::Tensor>{p}, AdafactorOptions().lr(0.01));
  p.mutable_grad() = at::zeros({2, 2});
  p.mutable_grad()[0][0] = 1e-9f;
  opt.step();
  const double eps = std::numeric_limits<float>::epsilon();
  const double u00 = 1e-9 / eps;  // then RMS(U) = u00 / 2 < 1: no clipping
  EXPECT_LT(u00 / 2, 1.0);
  EXPECT_NEAR(p[0][0].item<double>(), 1.0 - 0.01 * u00, 1e-6);  // alpha = max(1e-3, RMS(p) = 1) * min(0.01, 1)
  EXPECT_EQ(p[1][1].item<float>(), 1.0f);
}

TEST(Optimizers, SparseGradientsAreRefusedBeforeAnyChangeExceptBySGD) {
  // As torch: an nn.Embedding(sparse=True)'s gradient is SGD's to take; the others refuse it at the step,
  // before the weight decay, the step counts or the moments change.
  const auto sparse_grad = [](at::Tensor& p) {
    const at::Tensor rows = at::tensor({1, 3}, at::kLong).view({1, 2});
    p.mutable_grad() = at::sparse_coo_tensor(rows, at::ones({2, 3}), {4, 3});
  };
  const auto expect_refused = [&](tessera::optim::Optimizer& opt, at::Tensor& p, const std::string& name) {
    EXPECT_THAT(
        input_error_of([&] { opt.step(); }),
        ::testing::HasSubstr("optimizer " + name + ": a parameter of shape 4x3 has a sparse gradient"));
    EXPECT_TRUE(at::equal(p, at::ones({4, 3})));
    EXPECT_TRUE(opt.state().empty());
    EXPECT_EQ(opt.step_count(), 0);
  };
  at::Tensor a = at::ones({4, 3}).requires_grad_();
  sparse_grad(a);
  Adagrad adagrad({a}, AdagradOptions().lr(0.1));
  expect_refused(adagrad, a, "adagrad");
  AdamW adamw({a}, AdamWOptions().lr(0.1).weight_decay(0.1));
  expect_refused(adamw, a, "adamw");
  at::Tensor s = at::ones({4, 3}).requires_grad_();
  sparse_grad(s);
  SGD sgd({s}, SGDOptions().lr(0.5).momentum(0));
  sgd.step();
  EXPECT_TRUE(at::equal(s.select(0, 1), at::full({3}, 0.5)));
  EXPECT_TRUE(at::equal(s.select(0, 0), at::ones({3})));
}
