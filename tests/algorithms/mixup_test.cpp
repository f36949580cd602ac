// MixUp: the mix and the loss against hand computation, the Beta draws, determinism per seed, microbatches
// against the full batch, the composition with label smoothing, selective backprop and progressive resizing, the
// refusal of MixUp with CutMix, and the plan-time checks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tessera/algorithms/cutmix.h>
#include <tessera/algorithms/label_smoothing.h>
#include <tessera/algorithms/mixup.h>
#include <tessera/algorithms/progressive_resizing.h>
#include <tessera/algorithms/selective_backprop.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

using ::testing::HasSubstr;

TEST(MixUp, MixupBatchByHand) {
  const at::Tensor x = at::tensor({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, at::kFloat).view({3, 2});
  const at::Tensor y = at::tensor({0, 1, 2}, at::kLong);
  const at::Tensor perm = at::tensor({2, 0, 1}, at::kLong);
  const MixedBatch m = mixup_batch(x, y, 0.25, perm);
  // row i: 0.25·x[i] + 0.75·x[perm[i]]
  const at::Tensor expected = at::tensor({4.0, 5.0, 1.5, 2.5, 3.5, 4.5}, at::kFloat).view({3, 2});
  EXPECT_TRUE(at::equal(m.input, expected)) << m.input;
  EXPECT_TRUE(at::equal(m.target_perm, at::tensor({2, 0, 1}, at::kLong)));
  EXPECT_TRUE(at::equal(m.indices, perm));
  EXPECT_EQ(m.lambda, 0.25);
  // λ = 1 leaves the inputs alone; the drawing form uses the same formula with its draws.
  EXPECT_TRUE(at::equal(mixup_batch(x, y, 1.0, perm).input, x));
  Rng rng(5), copy(5);
  const MixedBatch drawn = mixup_batch(x, y, 0.4, rng);
  const double lambda = sample_mixing(0.4, copy);
  const at::Tensor p = mixing_permutation(3, copy);
  EXPECT_EQ(drawn.lambda, lambda);
  EXPECT_TRUE(at::equal(drawn.indices, p));
  EXPECT_TRUE(at::equal(drawn.input, x * lambda + x.index_select(0, p) * (1.0 - lambda)));
  EXPECT_EQ(rng, copy);
}

TEST(MixUp, MixedLossByHand) {
  const at::Tensor a = at::tensor(2.0, at::kDouble), b = at::tensor(6.0, at::kDouble);
  EXPECT_EQ(mixed_loss(a, b, 0.25).item<double>(), 0.25 * 2.0 + 0.75 * 6.0);
  EXPECT_THROW(mixed_loss(a, b, 1.5), InputError);
}

TEST(MixUp, MixingWeightsFollowBeta) {
  EXPECT_EQ([] { Rng r(1); return sample_mixing(0.0, r); }(), 1.0);  // α = 0: no mixing
  for (double alpha : {0.2, 1.0, 4.0}) {
    Rng rng(11);
    const int n = 20000;
    double sum = 0, sq = 0;
    for (int i = 0; i < n; ++i) {
      const double l = sample_mixing(alpha, rng);
      ASSERT_GE(l, 0.0);
      ASSERT_LE(l, 1.0);
      sum += l;
      sq += l * l;
    }
    const double mean = sum / n, var = sq / n - mean * mean;
    // Beta(α, α): mean 1/2, variance 1/(4(2α + 1)).
    EXPECT_NEAR(mean, 0.5, 0.01) << alpha;
    EXPECT_NEAR(var, 1.0 / (4.0 * (2.0 * alpha + 1.0)), 0.006) << alpha;
  }
  // A permutation of 0..n-1, a pure function of the generator's state.
  Rng r1(3), r2(3);
  const at::Tensor p = mixing_permutation(10, r1);
  EXPECT_TRUE(at::equal(std::get<0>(p.sort()), at::arange(10, at::kLong)));
  EXPECT_TRUE(at::equal(p, mixing_permutation(10, r2)));
}

TEST(MixUp, FunctionalErrorsNameTheArgument) {
  const at::Tensor x = at::zeros({3, 2}), y = at::zeros({3}, at::kLong);
  EXPECT_THAT(testing::input_error_of([&] { mixup_batch(x, y, 0.5, at::zeros({2}, at::kLong)); }),
              HasSubstr("mixup_batch.indices: expected integer indices of shape [3], got [2]"));
  EXPECT_THAT(testing::input_error_of([&] { mixup_batch(x, y, 0.5, at::tensor({0, 1, 3}, at::kLong)); }),
              HasSubstr("mixup_batch.indices: expected values in [0, 3), got [0, 3]"));
  EXPECT_THAT(testing::input_error_of([&] { mixup_batch(x.to(at::kLong), y, 0.5, at::arange(3, at::kLong)); }),
              HasSubstr("mixup_batch.input: expected floating-point inputs"));
  EXPECT_THAT(testing::input_error_of([&] { mixup_batch(x, at::zeros({2}), 0.5, at::arange(3, at::kLong)); }),
              HasSubstr("mixup_batch.target: expected targets with 3 examples"));
  EXPECT_THAT(testing::input_error_of([&] { mixup_batch(x, y, 1.5, at::arange(3, at::kLong)); }),
              HasSubstr("mixup_batch.lambda: 1.5 is out of range"));
  EXPECT_THAT(testing::input_error_of([&] { MixUp(MixUpOptions().alpha(-1)); }), HasSubstr("mixup.alpha"));
  Rng rng(1);
  EXPECT_THAT(testing::input_error_of([&] { sample_mixing(-0.5, rng); }), HasSubstr("sample_mixing.alpha"));
}

/// Records what the loss was computed from. First in the recipe, so that it runs after the algorithms at
/// after_dataloader (after_* events run in reverse recipe order).
class LossProbe : public Algorithm {
 public:
  explicit LossProbe(std::string key) : key_(std::move(key)) {
    spec_ = testing::spec_on("loss_probe",
                             {Event::AfterDataloader, Event::AfterForward, Event::AfterLoss, Event::BeforeBackward});
  }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event e, State& s, Logger&) override {
    if (e == Event::AfterDataloader) {
      inputs.push_back(s.batch.input().clone());
      permuted.push_back(s.batch.get(key_).clone());
    } else if (e == Event::AfterForward) {
      model_saw_part = model_saw_part || s.batch.has(key_);
    } else if (e == Event::AfterLoss) {
      outputs.push_back(s.outputs.detach().clone());
      losses.push_back(s.loss.detach().clone());
      targets.push_back(s.batch.target().clone());
    } else {
      override_after_loss = override_after_loss || static_cast<bool>(s.loss_override);
    }
  }
  std::vector<at::Tensor> inputs, outputs, losses, targets, permuted;
  bool override_after_loss = false, model_saw_part = false;

 private:
  std::string key_;
  AlgorithmSpec spec_;
};

/// The raw batches of a run (no algorithm), at after_dataloader.
std::vector<Batch> raw_batches(int64_t batches) {
  struct Recorder : Algorithm {
    Recorder() { spec_ = testing::spec_on("recorder", {Event::AfterDataloader}); }
    const AlgorithmSpec& spec() const override { return spec_; }
    void apply(Event, State& s, Logger&) override { seen.push_back(s.batch); }
    std::vector<Batch> seen;
    AlgorithmSpec spec_;
  };
  Components c = testing::tiny_components(32, 8);
  auto rec = std::make_shared<Recorder>();
  c.algorithms = {rec};
  Trainer t(TrainerOptions().max_duration(Time(batches, TimeUnit::Batch)).threads(1), std::move(c));
  t.fit();
  return rec->seen;
}

TEST(MixUp, InTheTrainerMixesAndInterpolatesTheCrossEntropyExactly) {
  const std::vector<Batch> raw = raw_batches(3);
  Components c = testing::tiny_components(32, 8);
  auto mixup = std::make_shared<MixUp>(MixUpOptions().alpha(1.0));
  auto probe = std::make_shared<LossProbe>("mixup_target");
  c.algorithms = {probe, mixup};
  Trainer t(TrainerOptions().max_duration(Time::parse("3ba")).threads(1), std::move(c));
  std::vector<double> lambdas;
  std::vector<at::Tensor> perms;
  // The λ and π of each batch, as the algorithm drew them from (seed, batch).
  for (int64_t b = 0; b < 3; ++b) {
    Rng rng(t.state().seed, {kAlgorithmStream, 0x313ed0ULL, static_cast<uint64_t>(b)});
    lambdas.push_back(sample_mixing(1.0, rng));
    perms.push_back(mixing_permutation(8, rng));
  }
  t.fit();
  ASSERT_EQ(probe->losses.size(), 3u);
  for (size_t b = 0; b < 3; ++b) {
    const at::Tensor& x = raw[b].input();
    EXPECT_TRUE(at::equal(probe->inputs[b], x * lambdas[b] + x.index_select(0, perms[b]) * (1.0 - lambdas[b]))) << b;
    EXPECT_TRUE(at::equal(probe->targets[b], raw[b].target())) << "the batch keeps its own targets";
    EXPECT_TRUE(at::equal(probe->permuted[b], raw[b].target().index_select(0, perms[b]))) << b;
    // loss = λ·CE(out, y) + (1 − λ)·CE(out, y[π]), bit for bit
    const at::Tensor& out = probe->outputs[b];
    const at::Tensor hand = cross_entropy(out, raw[b].target()) * lambdas[b] +
                            cross_entropy(out, raw[b].target().index_select(0, perms[b])) * (1.0 - lambdas[b]);
    EXPECT_TRUE(at::equal(probe->losses[b], hand)) << probe->losses[b] << " vs " << hand;
  }
  EXPECT_EQ(mixup->last_lambda(), lambdas[2]);
  EXPECT_TRUE(at::equal(mixup->last_indices(), perms[2]));
  EXPECT_FALSE(probe->override_after_loss) << "the trainer's loss is back after the loss";
  EXPECT_FALSE(probe->model_saw_part) << "the permuted targets leave the microbatch before the forward";
  EXPECT_FALSE(static_cast<bool>(t.state().loss_override));
}

std::vector<at::Tensor> train(uint64_t seed, int64_t microbatch, std::vector<std::shared_ptr<Algorithm>> algorithms,
                              std::vector<double>* lambdas = nullptr) {
  Components c = testing::tiny_components(32, 8);
  struct Lambdas : Algorithm {
    Lambdas() { spec_ = testing::spec_on("lambdas", {Event::BatchStart}); }
    const AlgorithmSpec& spec() const override { return spec_; }
    void apply(Event, State&, Logger&) override { seen.push_back(mixer->last_lambda()); }
    MixingAlgorithm* mixer = nullptr;
    std::vector<double> seen;
    AlgorithmSpec spec_;
  };
  auto record = std::make_shared<Lambdas>();
  for (const auto& a : algorithms) {
    if (auto* m = dynamic_cast<MixingAlgorithm*>(a.get())) record->mixer = m;
  }
  c.algorithms = std::move(algorithms);
  c.algorithms.push_back(record);
  Trainer t(TrainerOptions().max_duration(Time::parse("8ba")).seed(static_cast<int64_t>(seed)).threads(1)
                .microbatch_size(MicrobatchSize(microbatch)),
            std::move(c));
  t.fit();
  if (lambdas != nullptr) *lambdas = record->seen;
  std::vector<at::Tensor> out;
  for (const auto& p : t.state().model->parameters()) out.push_back(p.detach().clone());
  return out;
}

TEST(MixUp, DeterministicPerSeed) {
  std::vector<double> l1, l2, l3;
  const auto a = train(1, 0, {std::make_shared<MixUp>()}, &l1);
  const auto b = train(1, 0, {std::make_shared<MixUp>()}, &l2);
  const auto c = train(2, 0, {std::make_shared<MixUp>()}, &l3);
  ASSERT_EQ(l1.size(), 8u);
  EXPECT_EQ(l1, l2);
  EXPECT_NE(l1, l3);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << i;
  bool differ = false;
  for (size_t i = 0; i < a.size(); ++i) differ = differ || !at::equal(a[i], c[i]);
  EXPECT_TRUE(differ);
}

TEST(MixUp, MicrobatchesMatchTheFullBatch) {
  // The permutation is over the whole batch (at after_dataloader); each microbatch carries its rows' partners'
  // targets, and the share-weighted microbatch losses add up to the full batch's interpolated loss. The tiny model
  // has no batch statistics, so only the order of float sums differs.
  for (bool smoothing : {false, true}) {
    auto algs = [&] {
      std::vector<std::shared_ptr<Algorithm>> v{std::make_shared<MixUp>(MixUpOptions().alpha(1.0))};
      if (smoothing) v.push_back(std::make_shared<LabelSmoothing>());
      return v;
    };
    std::vector<double> full_l, micro_l;
    const auto full = train(3, 0, algs(), &full_l);
    const auto micro = train(3, 3, algs(), &micro_l);  // 8 = 3 + 3 + 2
    EXPECT_EQ(full_l, micro_l);
    for (size_t i = 0; i < full.size(); ++i) EXPECT_TRUE(at::allclose(full[i], micro[i], 1e-5, 1e-6)) << i;
  }
}

TEST(MixUp, LabelSmoothingSmoothsBothTargetSets) {
  for (bool fused : {true, false}) {
    Components c = testing::tiny_components(32, 8);
    auto mixup = std::make_shared<MixUp>(MixUpOptions().alpha(1.0));
    auto ls = std::make_shared<LabelSmoothing>(LabelSmoothingOptions().smoothing(0.2).fused(fused));
    auto probe = std::make_shared<LossProbe>("mixup_target");
    c.algorithms = {probe, mixup, ls};  // recipe order puts mixup first; the declared order puts it after smoothing
    Plan plan = compile_plan({mixup.get(), ls.get()});
    ASSERT_EQ(plan.at(Event::BeforeLoss).size(), 2u);
    EXPECT_EQ(plan.at(Event::BeforeLoss)[0].algorithm->name(), "label_smoothing");
    EXPECT_EQ(plan.at(Event::BeforeLoss)[1].algorithm->name(), "mixup");
    Trainer t(TrainerOptions().max_duration(Time::parse("2ba")).threads(1), std::move(c));
    t.fit();
    ASSERT_EQ(probe->losses.size(), 2u);
    const double lambda = mixup->last_lambda();
    const at::Tensor& out = probe->outputs[1];
    const at::Tensor& y = probe->targets[1];
    const at::Tensor& yp = probe->permuted[1];
    if (fused) {  // the fused smoothed cross-entropy on both target sets, bit for bit
      const at::Tensor hand = mixed_loss(smoothed_cross_entropy(out, y, 0.2), smoothed_cross_entropy(out, yp, 0.2), lambda);
      EXPECT_TRUE(at::equal(probe->losses[1], hand)) << probe->losses[1] << " vs " << hand;
    }
    // either path: the cross-entropy against λ·smooth(y) + (1 − λ)·smooth(y[π])
    const at::Tensor dense = smooth_labels(y, 3, 0.2) * lambda + smooth_labels(yp, 3, 0.2) * (1.0 - lambda);
    EXPECT_NEAR(probe->losses[1].item<double>(), cross_entropy(out, dense).item<double>(), 1e-6) << fused;
    EXPECT_EQ(probe->targets[1].scalar_type(), at::kLong) << "the batch's targets are left alone";
  }
}

TEST(MixUp, OrderAgainstSelectiveBackpropAndProgressiveResizing) {
  auto mixup = std::make_shared<MixUp>();
  auto sb = std::make_shared<SelectiveBackprop>();
  auto pr = std::make_shared<ProgressiveResizing>();
  for (const auto& list : std::vector<std::vector<Algorithm*>>{{mixup.get(), sb.get(), pr.get()},
                                                              {pr.get(), mixup.get(), sb.get()},
                                                              {sb.get(), pr.get(), mixup.get()}}) {
    Plan plan = compile_plan(list);
    const auto& order = plan.at(Event::AfterDataloader);
    ASSERT_EQ(order.size(), 3u);
    EXPECT_EQ(order[0].algorithm->name(), "selective_backprop");
    EXPECT_EQ(order[1].algorithm->name(), "progressive_resizing");
    EXPECT_EQ(order[2].algorithm->name(), "mixup");
  }
  EXPECT_THAT(compile_plan({mixup.get(), pr.get()}).table(),
              HasSubstr("mixup after writers of resolution: it mixes the inputs at the size the model sees"));
}

TEST(MixUp, RefusedWithCutMixBeforeStepOne) {
  auto mixup = std::make_shared<MixUp>();
  auto cutmix = std::make_shared<CutMix>();
  const std::string msg = testing::input_error_of([&] { compile_plan({cutmix.get(), mixup.get()}); });
  EXPECT_THAT(msg, HasSubstr("cutmix and mixup cannot be combined: both mix each example with a permuted partner"));
  Components c = testing::tiny_components(32, 8);
  c.algorithms = {mixup, cutmix};
  EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); t.fit(); }),
              HasSubstr("cannot be combined"));
}

/// A classifier that computes its loss from the labels inside forward.
class LossInForward : public Classifier<testing::TinyNetImpl> {
 public:
  LossInForward() : Classifier(std::make_shared<testing::TinyNetImpl>(16, 8, 3), 3) {}
  bool loss_reads_targets() const override { return false; }
};

TEST(MixUp, PlanTimeChecksNameTheProblem) {
  {  // integer inputs cannot be mixed
    Components c = testing::tiny_components(32, 8);
    auto ds = std::make_shared<data::TensorDataset>(at::zeros({16, 1, 4, 4}, at::kByte), at::zeros({16}, at::kLong), 3);
    c.train_dataloader = testing::loader(ds, 8);
    c.algorithms = {std::make_shared<MixUp>()};
    EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
                HasSubstr("mixup: mixup mixes the inputs, which must be floating point; the training data's inputs are Byte"));
  }
  {  // a model whose loss does not read the batch's targets
    Components c = testing::tiny_components(32, 8);
    c.model = std::make_shared<LossInForward>();
    c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
    c.algorithms = {std::make_shared<MixUp>()};
    EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
                HasSubstr("so mixup cannot compute it against the permuted targets"));
  }
}

}  // namespace
}  // namespace tessera::algorithms
