#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <torch/optim/sgd.h>

#include <tessera/error.h>
#include <tessera/optim/optimizer.h>

using tessera::optim::AdamW;
using tessera::optim::AdamWOptions;
using tessera::optim::SGD;
using tessera::optim::SGDOptions;

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
    at::manual_seed(11);
    std::vector<at::Tensor> ours = {at::randn({7, 5}).requires_grad_(true),
                                    at::randn({3}).requires_grad_(true)};
    std::vector<at::Tensor> theirs;
    for (const auto& p : ours) theirs.push_back(p.detach().clone().requires_grad_(true));
    SGD opt(ours,
            SGDOptions().lr(0.1).momentum(c.momentum).nesterov(c.nesterov).weight_decay(c.weight_decay));
    torch::optim::SGD reference(
        theirs,
        torch::optim::SGDOptions(0.1).momentum(c.momentum).nesterov(c.nesterov).weight_decay(c.weight_decay));
    for (int step = 0; step < 5; ++step) {
      for (size_t i = 0; i < ours.size(); ++i) {
        at::Tensor g = at::randn(ours[i].sizes());
        ours[i].mutable_grad() = g.clone();
        theirs[i].mutable_grad() = g.clone();
      }
      opt.step();
      reference.step();
      for (size_t i = 0; i < ours.size(); ++i) {
        ASSERT_TRUE(at::equal(ours[i], theirs[i]))
            << "step " << step << " tensor " << i << " momentum " << c.momentum << " nesterov " << c.nesterov;
      }
    }
  }
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
  opt.replace_parameter(at::Tensor(), b);  // added by surgery: its bias correction starts afresh
  set_grad(b, {3.0f});
  opt.step();
  EXPECT_EQ(opt.state_of(a)->at(2).item<int64_t>(), 3);
  EXPECT_EQ(opt.state_of(b)->at(2).item<int64_t>(), 1);
  expect_values(b, {0.9}, 1e-6);  // a first Adam step moves by lr
  EXPECT_EQ(opt.step_count(), 3);
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
  opt.replace_parameter(at::Tensor(), d);
  EXPECT_EQ(opt.param_groups()[0].params.size(), 3u);
  EXPECT_TRUE(opt.contains(d));
  EXPECT_THROW(opt.replace_parameter(param({7}), param({8})), tessera::Error);
}
