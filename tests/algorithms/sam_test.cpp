// SAM: the functional form against a hand computation (move, exact restore, no move on a non-finite norm), and in a
// run: the step equals the hand-computed SAM update (with and without microbatches), the interval, the plan's order
// against gradient clipping (the step's gradients clipped), loss scaling (exact with a power-of-two scale; an
// overflow in either pass skips the step), the batch-norm statistics of the first forward kept, and bad options.
#include <gtest/gtest.h>

#include <cmath>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <tessera/algorithms/gradient_clipping.h>
#include <tessera/algorithms/sam.h>
#include <tessera/models/cnn.h>

#include "gradient_support.h"
#include "support.h"

namespace tessera::algorithms {
namespace {

using testing::param_with_grad;

TEST(SAM, FunctionalFormMovesAlongTheNormalisedGradientThenRestoresExactly) {
  // ‖(3, 4)‖ = 5 across two parameters; rho 0.5: e = 0.5·(3, 4)/5 = (0.3, 0.4).
  auto a = param_with_grad(at::full({1}, 1.0), at::full({1}, 3.0));
  auto b = param_with_grad(at::full({1}, -2.0), at::full({1}, 4.0));
  auto frozen = at::full({1}, 7.0).set_requires_grad(true);  // no gradient: not moved
  std::vector<float> seen;
  const at::Tensor norm = sam_gradients(
      {a, b, frozen},
      [&] {
        seen = {a.item<float>(), b.item<float>(), frozen.item<float>()};
        a.mutable_grad().fill_(10.0);  // the gradients at the moved point replace the first ones
        b.mutable_grad().fill_(20.0);
      },
      0.5, 0.0);
  EXPECT_FLOAT_EQ(norm.item<float>(), 5.0f);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_FLOAT_EQ(seen[0], 1.3f);
  EXPECT_FLOAT_EQ(seen[1], -1.6f);
  EXPECT_FLOAT_EQ(seen[2], 7.0f);
  EXPECT_EQ(a.item<float>(), 1.0f);  // the exact bits, not 1 + 0.3 - 0.3
  EXPECT_EQ(b.item<float>(), -2.0f);
  EXPECT_EQ(a.grad().item<float>(), 10.0f);
  EXPECT_EQ(b.grad().item<float>(), 20.0f);

  // epsilon joins the norm: e = rho·g/(‖g‖ + epsilon).
  auto c = param_with_grad(at::zeros({1}), at::full({1}, 2.0));
  float moved = 0;
  sam_gradients({c}, [&] { moved = c.item<float>(); }, 1.0, 2.0);
  EXPECT_FLOAT_EQ(moved, 2.0f / 4.0f);
  EXPECT_EQ(c.item<float>(), 0.0f);
}

TEST(SAM, FunctionalFormDoesNotMoveOnANonFiniteNormAndRestoresOnAnError) {
  auto a = param_with_grad(at::full({2}, 1.0), at::tensor({1.0f, std::nanf("")}));
  auto b = param_with_grad(at::full({1}, 2.0), at::full({1}, INFINITY));
  at::Tensor a_seen, b_seen;
  const at::Tensor norm = sam_gradients({a, b}, [&] { a_seen = a.detach().clone(); b_seen = b.detach().clone(); });
  EXPECT_FALSE(std::isfinite(norm.item<float>()));
  EXPECT_TRUE(at::equal(a_seen, at::full({2}, 1.0)));
  EXPECT_TRUE(at::equal(b_seen, at::full({1}, 2.0)));

  auto c = param_with_grad(at::full({1}, 3.0), at::full({1}, 1.0));
  EXPECT_THROW(sam_gradients({c}, [] { throw std::runtime_error("out of memory"); }), std::runtime_error);
  EXPECT_EQ(c.item<float>(), 3.0f) << "put back although the second pass failed";

  // Nothing has a gradient: nothing to do, and the second pass is not run.
  auto none = at::zeros({1}).set_requires_grad(true);
  bool called = false;
  EXPECT_FALSE(sam_gradients({none}, [&] { called = true; }).defined());
  EXPECT_FALSE(called);
}

TEST(SAM, BadOptionsAreRefusedNamingTheOption) {
  for (const auto& [options, name] : {std::pair{SAMOptions().rho(0), "rho"}, std::pair{SAMOptions().epsilon(-1), "epsilon"},
                                      std::pair{SAMOptions().interval(0), "interval"}}) {
    const std::string message = testing::input_error_of([o = options] { SAM sam(o); });
    EXPECT_NE(message.find(name), std::string::npos) << message;
  }
  const std::string functional = testing::input_error_of([] { sam_gradients({}, [] {}, -0.1); });
  EXPECT_NE(functional.find("rho"), std::string::npos) << functional;
}

/// The full batch at batch_start (no algorithm changes it), and how many forwards ran.
class Recorder : public Callback {
 public:
  std::string name() const override { return "recorder"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event == Event::BatchStart) batches.push_back(state.batch);
    if (event == Event::BeforeForward) ++forwards;
    if (event == Event::BatchEnd) {
      std::vector<at::Tensor> now;
      for (const auto& p : state.model->parameters()) now.push_back(p.detach().clone());
      weights.push_back(now);
    }
  }
  std::vector<Batch> batches;
  std::vector<std::vector<at::Tensor>> weights;  ///< after each batch's step
  int64_t forwards = 0;
};

/// One step of plain SGD (lr, no momentum) from the tiny model's initial weights on `batch`, with the gradient at
/// w + rho·g/‖g‖ computed here with autograd.
std::vector<at::Tensor> hand_computed_sam_step(const Batch& batch, double lr, double rho) {
  auto model = testing::tiny_model(0);
  const auto params = model->parameters();
  auto gradients = [&] {
    const at::Tensor loss = model->loss(model->forward(batch), batch);
    return torch::autograd::grad({loss}, params);
  };
  std::vector<at::Tensor> w0;
  for (const auto& p : params) w0.push_back(p.detach().clone());
  const auto g = gradients();
  double sum = 0;
  for (const auto& t : g) sum += t.pow(2).sum().item<double>();
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) params[i].add_(g[i] * (rho / (std::sqrt(sum) + 1e-12)));
  }
  const auto g2 = gradients();
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < params.size(); ++i) out.push_back(w0[i] - lr * g2[i]);
  return out;
}

Components sgd_components() {
  Components c = testing::tiny_components();
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.5));
  return c;
}

TEST(SAM, TheStepEqualsTheHandComputedSamUpdateWithAndWithoutMicrobatches) {
  for (int64_t microbatch : {0, 3}) {  // 8 = 3 + 3 + 2: the whole batch's gradient, in both passes
    SCOPED_TRACE("microbatch_size " + std::to_string(microbatch));
    Components c = sgd_components();
    auto model = c.model;
    auto recorder = std::make_shared<Recorder>();
    c.callbacks = {recorder};
    c.algorithms = {std::make_shared<SAM>(SAMOptions().rho(0.2))};
    Trainer t(TrainerOptions().max_duration(Time::parse("1ba")).threads(1).microbatch_size(microbatch), std::move(c));
    t.fit();
    ASSERT_EQ(recorder->batches.size(), 1u);
    const auto expected = hand_computed_sam_step(recorder->batches[0], 0.5, 0.2);
    const auto params = model->parameters();
    ASSERT_EQ(params.size(), expected.size());
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_TRUE(at::allclose(params[i], expected[i], 1e-5, 1e-6))
          << "parameter " << i << " differs by " << (params[i] - expected[i]).abs().max().item<double>();
    }
    EXPECT_EQ(recorder->forwards, microbatch == 0 ? 2 : 6);
    EXPECT_EQ(t.trace().at("sam/after_train_batch").count, 1);
    // The logged loss is the first pass's (at the weights themselves).
    auto reference = testing::tiny_model(0);
    const Batch& batch = recorder->batches[0];
    EXPECT_NEAR(t.state().metrics.at("loss/train/total"), reference->loss(reference->forward(batch), batch).item<double>(),
                1e-5);
    // And it is not the plain step (the test could fail).
    Components plain = sgd_components();
    auto plain_model = plain.model;
    Trainer p(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), std::move(plain));
    p.fit();
    EXPECT_GT((plain_model->parameters()[0] - params[0]).abs().max().item<double>(), 1e-4);
  }
}

TEST(SAM, OnlyEveryIntervalthBatchTakesTheDoublePass) {
  Components c = sgd_components();
  auto recorder = std::make_shared<Recorder>();
  c.callbacks = {recorder};
  c.algorithms = {std::make_shared<SAM>(SAMOptions().interval(3))};
  Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));  // 6 batches
  t.fit();
  const TraceRecord& record = t.trace().at("sam/after_train_batch");
  EXPECT_EQ(record.count, 2);
  EXPECT_EQ(record.first_batch, 2);  // (batch + 1) % 3 == 0: batches 2 and 5, as Composer's (step + 1) % interval
  EXPECT_EQ(record.last_batch, 5);
  EXPECT_EQ(recorder->forwards, 6 + 2);
}

TEST(SAM, RunsBeforeGradientClippingWhichClipsTheGradientsTheStepUses) {
  Components c = sgd_components();
  auto probe = std::make_shared<testing::GradNormAtStep>();
  c.callbacks = {probe};
  // Clipping first in the recipe: the plan's rule puts SAM first at after_train_batch all the same.
  c.algorithms = {std::make_shared<GradientClipping>(GradientClippingOptions().clipping_threshold(0.05)),
                  std::make_shared<SAM>()};
  Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1).microbatch_size(3), std::move(c));
  const auto& entries = t.plan().at(Event::AfterTrainBatch);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].algorithm->name(), "sam");
  EXPECT_EQ(entries[1].algorithm->name(), "gradient_clipping");
  t.fit();
  ASSERT_EQ(probe->norms.size(), 6u);
  for (double n : probe->norms) EXPECT_LE(n, 0.05 + 1e-6);
  EXPECT_GT(*std::max_element(probe->norms.begin(), probe->norms.end()), 0.05 - 1e-4);  // it did clip
}

TEST(SAM, APowerOfTwoLossScaleOverBothPassesChangesNoBit) {
  std::vector<at::Tensor> results[2];
  for (int scaled = 0; scaled < 2; ++scaled) {
    Components c = sgd_components();
    auto model = c.model;
    c.algorithms = {std::make_shared<SAM>()};
    Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1).microbatch_size(3).loss_scaling(
                  scaled ? "dynamic" : "none"),
              std::move(c));
    t.fit();
    EXPECT_EQ(t.grad_scaler() != nullptr, scaled == 1);
    for (const auto& p : model->parameters()) results[scaled].push_back(p.detach().clone());
  }
  for (size_t i = 0; i < results[0].size(); ++i) EXPECT_TRUE(at::equal(results[0][i], results[1][i])) << i;
}

TEST(SAM, AnOverflowInEitherPassSkipsTheStep) {
  for (int pass : {0, 1}) {
    SCOPED_TRACE("overflow in pass " + std::to_string(pass + 1));
    Components c = sgd_components();
    auto recorder = std::make_shared<Recorder>();
    c.callbacks = {recorder};
    c.algorithms = {std::make_shared<SAM>(), std::make_shared<testing::OverflowAt>(1, pass)};
    Trainer t(TrainerOptions().max_duration(Time::parse("3ba")).threads(1).loss_scaling("dynamic"), std::move(c));
    t.fit();
    EXPECT_EQ(t.skipped_steps(), 1);
    EXPECT_EQ(t.grad_scaler()->scale_value(), 65536.0 / 2);
    ASSERT_EQ(recorder->weights.size(), 3u);
    for (size_t i = 0; i < recorder->weights[0].size(); ++i) {
      EXPECT_TRUE(at::equal(recorder->weights[1][i], recorder->weights[0][i])) << "the step of batch 1 was skipped";
      EXPECT_FALSE(at::equal(recorder->weights[2][i], recorder->weights[1][i])) << "batch 2 stepped";
      EXPECT_TRUE(recorder->weights[2][i].isfinite().all().item<bool>());
    }
  }
}

/// Makes the loss NaN in SAM's second pass (the second after_loss call) of one batch.
class NanInSecondPass : public Algorithm {
 public:
  explicit NanInSecondPass(int64_t batch) : batch_(batch) {
    spec_.name = "nan_in_second_pass";
    spec_.accesses.push_back({Event::AfterLoss, {Resource::Loss}, {Resource::Loss}});
  }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& state, Logger&) override {
    if (state.timestamp.batch == batch_ && calls_++ == 1) state.loss = state.loss * std::nan("");
  }

 private:
  int64_t batch_;
  int64_t calls_ = 0;
  AlgorithmSpec spec_;
};

TEST(SAM, ANonFiniteLossInTheSecondPassIsHandledAsNonfiniteLossSays) {
  {  // skip: the batch's update is dropped, the run goes on
    Components c = sgd_components();
    auto recorder = std::make_shared<Recorder>();
    c.callbacks = {recorder};
    c.algorithms = {std::make_shared<SAM>(), std::make_shared<NanInSecondPass>(1)};
    Trainer t(TrainerOptions().max_duration(Time::parse("3ba")).threads(1).nonfinite_loss("skip"), std::move(c));
    t.fit();
    EXPECT_EQ(t.skipped_batches(), 1);
    ASSERT_EQ(recorder->weights.size(), 3u);
    for (size_t i = 0; i < recorder->weights[0].size(); ++i) {
      EXPECT_TRUE(at::equal(recorder->weights[1][i], recorder->weights[0][i])) << "batch 1 was skipped";
      EXPECT_TRUE(recorder->weights[2][i].isfinite().all().item<bool>());
    }
  }
  Components c = sgd_components();
  c.algorithms = {std::make_shared<SAM>(), std::make_shared<NanInSecondPass>(1)};
  Trainer t(TrainerOptions().max_duration(Time::parse("3ba")).threads(1), std::move(c));
  try {
    t.fit();
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("at batch 1"), std::string::npos) << e.what();
  }
}

TEST(SAM, BatchNormStatisticsAreThoseOfTheFirstForward) {
  // The first forward is at the same weights on the same batch with or without SAM: the statistics after the step
  // are the same bits (the second forward's, at the perturbed weights, are dropped); the weights are not.
  std::vector<at::Tensor> buffers[2], params[2];
  for (int with_sam = 0; with_sam < 2; ++with_sam) {
    Components c;
    at::manual_seed(0);
    c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(4).width(4));
    c.train_dataloader = testing::loader(
        data::make_synthetic(data::SyntheticOptions().size(16).input_shape({1, 8, 8}).num_classes(4)), 8);
    c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
    if (with_sam) c.algorithms = {std::make_shared<SAM>(SAMOptions().rho(0.5))};
    auto model = c.model;
    Trainer t(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), std::move(c));
    t.fit();
    for (const auto& b : model->buffers()) buffers[with_sam].push_back(b.clone());
    for (const auto& p : model->parameters()) params[with_sam].push_back(p.detach().clone());
  }
  ASSERT_FALSE(buffers[0].empty());
  for (size_t i = 0; i < buffers[0].size(); ++i) EXPECT_TRUE(at::equal(buffers[0][i], buffers[1][i])) << "buffer " << i;
  EXPECT_FALSE(at::equal(params[0][0], params[1][0]));
}

TEST(SAM, OutsideAfterTrainBatchThereIsNoSecondPass) {
  // recompute_gradients exists only while after_train_batch runs; SAM applied elsewhere says so.
  Components c = sgd_components();
  Trainer t(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), std::move(c));
  EXPECT_FALSE(static_cast<bool>(t.state().recompute_gradients));
  SAM sam;
  try {
    sam.apply(Event::AfterTrainBatch, t.state(), t.engine().logger());
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("recompute_gradients"), std::string::npos) << e.what();
  }
  t.fit();
  EXPECT_FALSE(static_cast<bool>(t.state().recompute_gradients)) << "cleared after the event";
}

}  // namespace
}  // namespace tessera::algorithms
