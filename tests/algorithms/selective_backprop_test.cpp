// Selective backprop: schedule, selection probabilities (statistical), kept rows consistent across parts,
// timestamp counts the full batch, plan-time errors, and its place first at after_dataloader.
#include <gtest/gtest.h>

#include <cmath>

#include <tessera/algorithms/selective_backprop.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

TEST(SelectiveBackprop, WeightsFollowTheRankFormula) {
  at::Tensor losses = at::tensor({0.3, 0.1, 0.9, 0.5}, at::kDouble);
  const double keep = 0.5;  // exponent 1/keep - 1 = 1: weights linear in rank
  at::Tensor w = selection_weights(losses, keep);
  // ranks: 0.1 -> 0, 0.3 -> 1, 0.5 -> 2, 0.9 -> 3; percentiles (j + 0.5)/4
  const double total = (0.5 + 1.5 + 2.5 + 3.5) / 4;
  EXPECT_NEAR(w[1].item<double>(), 0.125 / total, 1e-12);
  EXPECT_NEAR(w[0].item<double>(), 0.375 / total, 1e-12);
  EXPECT_NEAR(w[3].item<double>(), 0.625 / total, 1e-12);
  EXPECT_NEAR(w[2].item<double>(), 0.875 / total, 1e-12);
  at::Tensor w3 = selection_weights(losses, 0.25);  // exponent 3
  EXPECT_NEAR((w3[2] / w3[1]).item<double>(), std::pow(7.0, 3.0), 1e-9);
}

TEST(SelectiveBackprop, FunctionalFormsValidateLikeTheOptions) {
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  };
  Rng rng(0);
  // [4, 2] losses are not one per example: refused, rather than flattened into 8 (index 5 for a batch of 4)
  EXPECT_EQ(message([&] { select_by_loss(at::rand({4, 2}), 0.5, rng); }),
            "select_by_loss.losses: expected one loss per example, shape [N], got shape [4, 2]");
  EXPECT_EQ(message([&] { select_by_loss(at::rand({4}), 1.5, rng); }),
            "select_by_loss.keep: 1.5 is out of range; expected a number (0, 1]");
  EXPECT_EQ(message([&] { select_by_loss(at::rand({4}), 0.0, rng); }),
            "select_by_loss.keep: 0 is out of range; expected a number (0, 1]");
  EXPECT_EQ(message([&] { selection_weights(at::rand({4}), -1.0); }),
            "selection_weights.keep: -1 is out of range; expected a number (0, 1]");
  EXPECT_EQ(select_by_loss(at::rand({4}), 1.0, rng).numel(), 4);
}

TEST(SelectiveBackprop, SelectionProbabilitiesMatchSequentialDrawsStatistically) {
  // N = 4, k = 2: the probability that example i is among the kept ones, for draws without replacement
  // with weights w, is sum over first picks. Compare 20000 seeded draws to the exact inclusion probabilities.
  at::Tensor losses = at::tensor({0.3, 0.1, 0.9, 0.5}, at::kDouble);
  at::Tensor w = selection_weights(losses, 0.5);
  std::vector<double> p(4);
  for (int i = 0; i < 4; ++i) p[i] = w[i].item<double>();
  std::vector<double> inclusion(4, 0.0);
  for (int a = 0; a < 4; ++a) {
    for (int b = 0; b < 4; ++b) {
      if (a == b) continue;
      const double pr = p[a] * p[b] / (1.0 - p[a]);
      inclusion[a] += pr;
      inclusion[b] += pr;
    }
  }
  const int draws = 20000;
  std::vector<int> count(4, 0);
  Rng rng(123, {9});
  for (int d = 0; d < draws; ++d) {
    at::Tensor idx = select_by_loss(losses, 0.5, rng);
    ASSERT_EQ(idx.numel(), 2);
    ASSERT_NE(idx[0].item<int64_t>(), idx[1].item<int64_t>());
    for (int j = 0; j < 2; ++j) ++count[idx[j].item<int64_t>()];
  }
  for (int i = 0; i < 4; ++i) {
    const double freq = static_cast<double>(count[i]) / draws;
    const double sd = std::sqrt(inclusion[i] * (1 - inclusion[i]) / draws);
    EXPECT_NEAR(freq, inclusion[i], 5 * sd) << "example " << i;  // 5 standard deviations
  }
  EXPECT_GT(count[2], count[1]);  // highest loss kept more often than lowest
}

TEST(SelectiveBackprop, ScheduleOnAndOffAtTheRightBatches) {
  SelectiveBackprop sb(SelectiveBackpropOptions().start(0.5).end(0.75).interrupt(2));
  State s;
  s.time.max_duration = Time::parse("8ba");
  s.time.batches_per_epoch = 4;
  std::vector<bool> on;
  for (int b = 0; b < 8; ++b) {
    s.timestamp.batch = b;
    s.timestamp.batch_in_epoch = b % 4;
    on.push_back(sb.match(Event::AfterDataloader, s));
  }
  // elapsed b/8 in [0.5, 0.75): batches 4, 5; interrupt 2 skips batch_in_epoch 1 (odd) -> only 4
  EXPECT_EQ(on, (std::vector<bool>{false, false, false, false, true, false, false, false}));
  SelectiveBackprop no_interrupt(SelectiveBackpropOptions().start(0.0).end(1.0).interrupt(0));
  s.timestamp.batch = 3;
  s.timestamp.batch_in_epoch = 3;
  EXPECT_TRUE(no_interrupt.match(Event::AfterDataloader, s));
  EXPECT_FALSE(no_interrupt.match(Event::BeforeForward, s));
  EXPECT_THROW(SelectiveBackprop(SelectiveBackpropOptions().start(0.6).end(0.5)), InputError);
  EXPECT_THROW(SelectiveBackprop(SelectiveBackpropOptions().keep(0.0)), InputError);
}

/// Checks at before_forward that every batch part kept the same rows.
class RowProbe : public Algorithm {
 public:
  RowProbe() { spec_ = testing::spec_on("row_probe", {Event::BeforeTrainBatch}); }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& s, Logger&) override {
    sizes.push_back(s.batch.size());
    // the extra part "id" holds each example's index; its row must still match the input row
    const at::Tensor ids = s.batch.get("id");
    const Batch expected = dataset->get_batch(std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()));
    consistent = consistent && at::equal(expected.input(), s.batch.input()) && at::equal(expected.target(), s.batch.target());
  }
  std::shared_ptr<data::TensorDataset> dataset;
  std::vector<int64_t> sizes;
  bool consistent = true;
  AlgorithmSpec spec_;
};

TEST(SelectiveBackprop, KeepsConsistentRowsAndCountsTheFullBatch) {
  auto ds = testing::tiny_data(32);
  ds->add_part("id", at::arange(32, at::kLong));
  Components c = testing::tiny_components(32, 8);
  c.train_dataloader = testing::loader(ds, 8);
  auto probe = std::make_shared<RowProbe>();
  probe->dataset = ds;
  c.algorithms = {std::make_shared<SelectiveBackprop>(SelectiveBackpropOptions().start(0).end(1).keep(0.5).interrupt(0)), probe};
  Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));
  t.fit();
  EXPECT_EQ(probe->sizes, (std::vector<int64_t>{4, 4, 4, 4}));
  EXPECT_TRUE(probe->consistent);
  EXPECT_EQ(t.state().timestamp.sample, 32);  // the full batches are counted
  EXPECT_EQ(t.trace().at("selective_backprop/after_dataloader").count, 4);
}

TEST(SelectiveBackprop, ScoringLeavesBatchNormStatisticsAlone) {
  auto model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(3).width(4));
  State s;
  s.model = model;
  s.time.max_duration = Time::parse("1ba");
  s.batch = Batch(at::randn({8, 1, 8, 8}), at::randint(0, 3, {8}, at::kLong));
  model->train();
  std::vector<at::Tensor> before;
  for (const auto& b : model->buffers()) before.push_back(b.clone());
  SelectiveBackprop sb(SelectiveBackpropOptions().start(0).end(1).interrupt(0));
  Logger logger;
  sb.apply(Event::AfterDataloader, s, logger);
  EXPECT_EQ(s.batch.size(), 4);
  const auto after = model->buffers();
  for (size_t i = 0; i < before.size(); ++i) {
    if (before[i].scalar_type() == at::kLong) continue;  // num_batches_tracked counts forwards
    EXPECT_TRUE(at::equal(before[i], after[i])) << "buffer " << i;
  }
}

class NoPerExampleLoss : public Classifier<testing::TinyNetImpl> {
 public:
  using Classifier::Classifier;
  bool supports_per_example_loss() const override { return false; }
};

TEST(SelectiveBackprop, ModelWithoutPerExampleLossIsRefusedAtPlanTime) {
  Components c = testing::tiny_components();
  c.model = std::make_shared<NoPerExampleLoss>(std::make_shared<testing::TinyNetImpl>(16, 8, 3), 3);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions());
  c.algorithms = {std::make_shared<SelectiveBackprop>()};
  try {
    Trainer t(TrainerOptions(), std::move(c));
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("selective_backprop: the model's loss gives no per-example values"), std::string::npos)
        << e.what();
  }
}

/// A custom loss that ignores the reduction it is asked for (always the mean).
class MeanOnlyLoss : public Classifier<testing::TinyNetImpl> {
 public:
  using Classifier::Classifier;
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch, Reduction) override {
    return cross_entropy(outputs, batch.target(), Reduction::Mean);
  }
};

TEST(SelectiveBackprop, ALossThatIgnoresReductionNoneIsRefusedAtPlanTimeWithTheFix) {
  Components c = testing::tiny_components();
  c.model = std::make_shared<MeanOnlyLoss>(std::make_shared<testing::TinyNetImpl>(16, 8, 3), 3);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions());
  c.algorithms = {std::make_shared<SelectiveBackprop>()};
  const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  for (const char* part : {"selective_backprop: the model's loss with Reduction::None has shape [] on a batch of 1 "
                           "example(s); expected [1]",
                           "implement Reduction::None in the model's loss", "supports_per_example_loss()"}) {
    EXPECT_NE(msg.find(part), std::string::npos) << part << " missing from: " << msg;
  }
}

}  // namespace
}  // namespace tessera::algorithms
