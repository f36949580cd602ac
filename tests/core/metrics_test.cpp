#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <string>

#include <ATen/ATen.h>

#include <tessera/class_metrics.h>
#include <tessera/error.h>
#include <tessera/metrics.h>

#include "support.h"

using tessera::Batch;
using ::testing::HasSubstr;

namespace {

// Four examples, three classes.
at::Tensor outputs() {
  return at::tensor({0.1f, 0.9f, 0.0f,    //
                     0.8f, 0.15f, 0.05f,  //
                     0.2f, 0.3f, 0.5f,    //
                     0.35f, 0.3f, 0.4f})
      .view({4, 3});
}
at::Tensor labels(std::vector<int64_t> v) { return at::tensor(v, at::kLong); }

}  // namespace

TEST(Metrics, AccuracyCountsTop1Hits) {
  tessera::Accuracy acc;
  EXPECT_EQ(acc.name(), "accuracy");
  EXPECT_DOUBLE_EQ(acc.compute(), 0.0);
  acc.update(outputs(), Batch(at::zeros({4, 1}), labels({1, 0, 1, 2})));  // hits: 0, 1, 3
  EXPECT_DOUBLE_EQ(acc.compute(), 0.75);
  acc.update(outputs(), Batch(at::zeros({4, 1}), labels({0, 0, 0, 0})));  // hit: 1
  EXPECT_DOUBLE_EQ(acc.compute(), 4.0 / 8);
  acc.reset();
  EXPECT_DOUBLE_EQ(acc.compute(), 0.0);
}

TEST(Metrics, TopKAccuracy) {
  tessera::Accuracy top2(2);
  EXPECT_EQ(top2.name(), "top2_accuracy");
  // Top-2 sets: {1, 0}, {0, 1}, {2, 1}, {2, 0}.
  top2.update(outputs(), Batch(at::zeros({4, 1}), labels({0, 1, 1, 0})));
  EXPECT_DOUBLE_EQ(top2.compute(), 1.0);
  top2.reset();
  top2.update(outputs(), Batch(at::zeros({4, 1}), labels({2, 1, 0, 1})));  // only row 1 hits
  EXPECT_DOUBLE_EQ(top2.compute(), 0.25);
  tessera::Accuracy top3(3);
  top3.update(outputs(), Batch(at::zeros({4, 1}), labels({2, 1, 0, 1})));
  EXPECT_DOUBLE_EQ(top3.compute(), 1.0);
  tessera::Accuracy top4(4);
  EXPECT_THAT(([&] {
                try {
                  top4.update(outputs(), Batch(at::zeros({4, 1}), labels({0, 0, 0, 0})));
                } catch (const tessera::InputError& e) {
                  return std::string(e.what());
                }
                return std::string("<no exception>");
              })(),
              HasSubstr("3"));
  EXPECT_THROW(tessera::Accuracy(0), tessera::InputError);
}

TEST(Metrics, DenseTargetsUseTheirArgmax) {
  tessera::Accuracy acc;
  at::Tensor soft =
      at::tensor({0.1f, 0.8f, 0.1f, 0.6f, 0.2f, 0.2f, 0.0f, 0.9f, 0.1f, 0.2f, 0.2f, 0.6f}).view({4, 3});
  acc.update(outputs(), Batch(at::zeros({4, 1}), soft));  // argmax targets 1, 0, 1, 2
  EXPECT_DOUBLE_EQ(acc.compute(), 0.75);
  EXPECT_THROW(acc.update(outputs(), Batch(at::zeros({4, 1}), at::zeros({4, 2}))), tessera::InputError);
  EXPECT_THROW(acc.update(outputs(), Batch(at::zeros({3, 1}), labels({0, 1, 2}))), tessera::InputError);
  EXPECT_THROW(acc.update(at::zeros({4}), Batch(at::zeros({4, 1}), labels({0, 1, 2, 0}))),
               tessera::InputError);
}

TEST(Metrics, CrossEntropyIsTheMeanPerExample) {
  tessera::CrossEntropyMetric ce;
  EXPECT_EQ(ce.name(), "cross_entropy");
  EXPECT_DOUBLE_EQ(ce.compute(), 0.0);
  at::Tensor logits = at::tensor({0.0f, 0.0f, 0.0f, std::log(3.0f)}).view({2, 2});
  ce.update(logits, Batch(at::zeros({2, 1}), labels({0, 1})));  // log 2, log 4/3
  EXPECT_NEAR(ce.compute(), (std::log(2.0) + std::log(4.0 / 3.0)) / 2, 1e-6);
  ce.update(logits.narrow(0, 1, 1), Batch(at::zeros({1, 1}), labels({0})));  // log 4
  EXPECT_NEAR(ce.compute(), (std::log(2.0) + std::log(4.0 / 3.0) + std::log(4.0)) / 3, 1e-6);
  ce.reset();
  EXPECT_DOUBLE_EQ(ce.compute(), 0.0);
}

TEST(Metrics, MakeMetricByName) {
  EXPECT_EQ(tessera::make_metric("accuracy")->name(), "accuracy");
  EXPECT_EQ(tessera::make_metric("top5_accuracy")->name(), "top5_accuracy");
  EXPECT_EQ(tessera::make_metric("top3_accuracy")->name(), "top3_accuracy");
  EXPECT_EQ(tessera::make_metric("cross_entropy")->name(), "cross_entropy");
  for (const char* name : {"precision", "recall", "f1", "weighted_precision", "weighted_recall", "weighted_f1"}) {
    EXPECT_EQ(tessera::make_metric(name)->name(), name);
    EXPECT_EQ(tessera::make_class_averaged(name, tessera::ClassAveragedOptions().num_classes(5))->counts().size(), 15u)
        << "5 classes stated";
  }
  EXPECT_EQ(tessera::make_class_averaged("accuracy"), nullptr);
  for (const char* bad : {"acc", "top0_accuracy", "topx_accuracy", "top_accuracy", ""}) {
    try {
      tessera::make_metric(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const tessera::InputError& e) {
      EXPECT_THAT(e.what(), HasSubstr("accuracy, top5_accuracy"));
      EXPECT_THAT(e.what(), HasSubstr("cross_entropy"));
    }
  }
}

// ------------------------------------------------------------------------------------------------ macro averages

namespace {

using tessera::ClassAveraged;
using tessera::testing::input_error_of;
using Score = ClassAveraged::Score;

/// Logits whose argmax is `predicted` (one row each), over `classes` classes.
at::Tensor predicting(const std::vector<int64_t>& predicted, int64_t classes) {
  return at::one_hot(labels(predicted), classes).to(at::kFloat);
}

}  // namespace

// The values torchmetrics 1.9.0 gives (MulticlassPrecision, MulticlassRecall, MulticlassF1Score with num_classes=4,
// average="macro") for predictions [0, 0, 1, 1, 2, 0] against targets [0, 1, 1, 1, 0, 0]: class 3 is neither
// predicted nor a target and is left out of the mean; class 2 is predicted once, never a target: 0 in each.
// Per class 0, 1, 2: precision 2/3, 1, 0; recall 2/3, 2/3, 0; F1 2/3, 4/5, 0.
TEST(Metrics, MacroPrecisionRecallAndF1AverageTheClassesThatOccur) {
  const at::Tensor logits = predicting({0, 0, 1, 1, 2, 0}, 4);
  const Batch batch(at::zeros({6, 1}), labels({0, 1, 1, 1, 0, 0}));
  for (const auto& [score, name, expected] : {std::tuple{Score::Precision, "precision", 5.0 / 9.0},
                                              std::tuple{Score::Recall, "recall", 4.0 / 9.0},
                                              std::tuple{Score::F1, "f1", 22.0 / 45.0}}) {
    SCOPED_TRACE(name);
    ClassAveraged m(score);
    EXPECT_EQ(m.name(), name);
    EXPECT_DOUBLE_EQ(m.compute(), 0.0);
    EXPECT_TRUE(m.counts().empty()) << "the class count is not known before the first update";
    m.update(logits, batch);
    EXPECT_NEAR(m.compute(), expected, 1e-15);
    // In two batches: the same counts, so the same value.
    ClassAveraged split(score);
    split.update(logits.narrow(0, 0, 4), Batch(at::zeros({4, 1}), labels({0, 1, 1, 1})));
    split.update(logits.narrow(0, 4, 2), Batch(at::zeros({2, 1}), labels({0, 0})));
    EXPECT_EQ(split.counts(), m.counts());
    EXPECT_DOUBLE_EQ(split.compute(), m.compute());
    m.reset();
    EXPECT_DOUBLE_EQ(m.compute(), 0.0);
    EXPECT_TRUE(m.counts().empty());
  }
  // tp, fp, fn of classes 0..3.
  ClassAveraged f1(Score::F1);
  f1.update(logits, batch);
  EXPECT_EQ(f1.counts(), (std::vector<double>{2, 2, 0, 0, /**/ 1, 0, 1, 0, /**/ 1, 1, 0, 0}));
}

// The same predictions weighted by each class's targets (torchmetrics' and scikit-learn's average="weighted"): classes
// 0 and 1 are 3 targets each, classes 2 and 3 none, so weigh nothing (class 2's wrong prediction still lowers class
// 0's recall). Precision (3 x 2/3 + 3 x 1) / 6, recall (3 x 2/3 + 3 x 2/3) / 6, F1 (3 x 2/3 + 3 x 4/5) / 6.
TEST(Metrics, WeightedPrecisionRecallAndF1WeighEachClassByItsTargets) {
  const at::Tensor logits = predicting({0, 0, 1, 1, 2, 0}, 4);
  const Batch batch(at::zeros({6, 1}), labels({0, 1, 1, 1, 0, 0}));
  for (const auto& [score, name, expected] : {std::tuple{Score::Precision, "weighted_precision", 5.0 / 6.0},
                                              std::tuple{Score::Recall, "weighted_recall", 2.0 / 3.0},
                                              std::tuple{Score::F1, "weighted_f1", 11.0 / 15.0}}) {
    SCOPED_TRACE(name);
    const std::unique_ptr<tessera::Metric> m = tessera::make_metric(name);
    EXPECT_EQ(m->name(), name);
    EXPECT_DOUBLE_EQ(m->compute(), 0.0);
    m->update(logits, batch);
    EXPECT_NEAR(m->compute(), expected, 1e-15);
    // The counts are the macro average's: data-parallel sums hold for both.
    ClassAveraged macro(score);
    macro.update(logits, batch);
    EXPECT_EQ(m->counts(), macro.counts());
    EXPECT_NE(m->compute(), macro.compute());
  }
  // Recall weighted by the targets is the accuracy (each target counts once).
  const std::unique_ptr<tessera::Metric> recall =
      tessera::make_class_averaged("weighted_recall", tessera::ClassAveragedOptions().num_classes(4));
  tessera::Accuracy accuracy;
  recall->update(logits, batch);
  accuracy.update(logits, batch);
  EXPECT_DOUBLE_EQ(recall->compute(), accuracy.compute());
  EXPECT_EQ(recall->counts().size(), 12u) << "4 classes stated";
  // No targets at all (every position ignored): 0, as torchmetrics.
  ClassAveraged none(Score::F1, 0, ClassAveraged::Average::Weighted);
  none.update(predicting({0}, 2), Batch(at::zeros({1, 1}), labels({tessera::kIgnoreTarget})));
  EXPECT_DOUBLE_EQ(none.compute(), 0.0);
}

// Each class's score beside the average (torchmetrics' average=None), from the same counts: precision of classes 0..3
// 3/4, 1/1, 0/1, 0 (never predicted); recall 3/3, 1/2, 0 (never a target), 0/1; logged as "<name>/class_<c>".
TEST(Metrics, PerClassScoresComeWithTheAverage) {
  const at::Tensor logits = predicting({0, 0, 1, 2, 0, 0}, 4);
  const Batch batch(at::zeros({6, 1}), labels({0, 0, 1, 1, 3, 0}));
  const auto options = tessera::ClassAveragedOptions().per_class(true);
  const std::unique_ptr<tessera::Metric> precision = tessera::make_class_averaged("precision", options);
  const std::unique_ptr<tessera::Metric> recall = tessera::make_class_averaged("weighted_recall", options);
  EXPECT_EQ(precision->compute_values(), (std::map<std::string, double>{{"", 0.0}})) << "no class known yet";
  precision->update(logits, batch);
  recall->update(logits, batch);
  EXPECT_EQ(precision->compute_values(),
            (std::map<std::string, double>{{"", precision->compute()}, {"class_0", 0.75}, {"class_1", 1.0},
                                           {"class_2", 0.0}, {"class_3", 0.0}}));
  EXPECT_EQ(recall->compute_values(),
            (std::map<std::string, double>{{"", recall->compute()}, {"class_0", 1.0}, {"class_1", 0.5},
                                           {"class_2", 0.0}, {"class_3", 0.0}}));
  std::map<std::string, double> logged{{"loss", 1.0}};
  tessera::add_metric_values(*precision, "metrics/eval/precision", logged);
  EXPECT_EQ(logged.size(), 6u);
  EXPECT_EQ(logged.at("metrics/eval/precision"), precision->compute());
  EXPECT_EQ(logged.at("metrics/eval/precision/class_1"), 1.0);
  // Without per_class: the average alone; with a stated class count, every class before the first update.
  EXPECT_EQ(tessera::make_metric("f1")->compute_values(), (std::map<std::string, double>{{"", 0.0}}));
  EXPECT_EQ(tessera::make_class_averaged("f1", tessera::ClassAveragedOptions().num_classes(2).per_class(true))
                ->compute_values(),
            (std::map<std::string, double>{{"", 0.0}, {"class_0", 0.0}, {"class_1", 0.0}}));
  tessera::Accuracy accuracy;
  EXPECT_EQ(accuracy.compute_values(), (std::map<std::string, double>{{"", 0.0}}));
}

TEST(Metrics, MacroAveragesCountEveryPositionButThoseWithNothingToPredict) {
  // [N=1, C=3, S=4] logits predicting 2, 0, 1, 1 at the four positions; the third has nothing to predict.
  const at::Tensor logits = predicting({2, 0, 1, 1}, 3).t().unsqueeze(0);
  ClassAveraged recall(Score::Recall);
  recall.update(logits, Batch(at::zeros({1, 4}), labels({2, 1, tessera::kIgnoreTarget, 1}).view({1, 4})));
  // Class 1: one of two positions found; class 2: its one; class 0: predicted only (fp), recall 0.
  EXPECT_EQ(recall.counts(), (std::vector<double>{0, 1, 1, /**/ 1, 0, 0, /**/ 0, 1, 0}));
  EXPECT_DOUBLE_EQ(recall.compute(), (0.0 + 0.5 + 1.0) / 3);
  // Dense targets: their argmax.
  ClassAveraged precision(Score::Precision);
  precision.update(predicting({0, 1}, 2), Batch(at::zeros({2, 1}), at::tensor({0.9f, 0.1f, 0.8f, 0.2f}).view({2, 2})));
  EXPECT_DOUBLE_EQ(precision.compute(), (1.0 + 0.0) / 2);  // class 0: its one prediction right; class 1: wrong
}

TEST(Metrics, MacroAveragesRefuseTargetsOutsideTheClassesAndAnotherClassCount) {
  ClassAveraged f1(Score::F1);
  EXPECT_THAT(input_error_of([&] { f1.update(predicting({0, 1}, 3), Batch(at::zeros({2, 1}), labels({0, 3}))); }),
              HasSubstr("f1 metric: 1 target(s) outside the outputs' 3 classes [0, 3)"));
  EXPECT_THAT(input_error_of([&] { f1.update(predicting({0, 1}, 3), Batch(at::zeros({2, 1}), labels({-2, 1}))); }),
              HasSubstr("outside the outputs' 3 classes"));
  // Deferred (on CUDA the sums stay on the device): found when the value is read.
  ClassAveraged deferred(Score::Precision);
  deferred.set_deferred(true);
  deferred.update(predicting({0, 1}, 3), Batch(at::zeros({2, 1}), labels({0, 7})));
  EXPECT_THAT(input_error_of([&] { deferred.compute(); }), HasSubstr("precision metric: 1 target(s) outside"));
  // A class count stated in advance, or learned from the first outputs, is kept until reset.
  ClassAveraged stated(Score::Recall, 4);
  EXPECT_EQ(stated.counts(), std::vector<double>(12, 0.0)) << "known in advance: counts for data-parallel sums";
  EXPECT_EQ(stated.how_to_count(), "");
  EXPECT_TRUE(ClassAveraged(Score::F1).counts().empty());  // not yet known: what data-parallel training says
  EXPECT_THAT(ClassAveraged(Score::F1).how_to_count(), HasSubstr("give its class count, {f1: {num_classes: 10}}"));
  EXPECT_EQ(tessera::Accuracy().how_to_count(), "");
  EXPECT_THAT(input_error_of([&] { stated.update(predicting({0}, 3), Batch(at::zeros({1, 1}), labels({0}))); }),
              HasSubstr("recall metric: the outputs have 3 classes, 4 before (its num_classes)"));
  ClassAveraged learned(Score::Recall);
  learned.update(predicting({0}, 3), Batch(at::zeros({1, 1}), labels({0})));
  EXPECT_THAT(input_error_of([&] { learned.update(predicting({0}, 2), Batch(at::zeros({1, 1}), labels({0}))); }),
              HasSubstr("the outputs have 2 classes, 3 before (its earlier outputs)"));
  learned.reset();
  learned.update(predicting({0}, 2), Batch(at::zeros({1, 1}), labels({0})));
  EXPECT_THROW(ClassAveraged(Score::F1, -1), tessera::InputError);
}

TEST(Metrics, MacroAveragesAddUpOverRanksAsOneRankWouldCount) {
  // Two ranks' counts summed (as data-parallel training sums them) give the value of all examples on one rank.
  const at::Tensor logits = predicting({0, 0, 1, 1, 2, 0}, 4);
  const at::Tensor target = labels({0, 1, 1, 1, 0, 0});
  ClassAveraged whole(Score::F1, 4), first(Score::F1, 4), second(Score::F1, 4);
  whole.update(logits, Batch(at::zeros({6, 1}), target));
  first.update(logits.narrow(0, 0, 3), Batch(at::zeros({3, 1}), target.narrow(0, 0, 3)));
  second.update(logits.narrow(0, 3, 3), Batch(at::zeros({3, 1}), target.narrow(0, 3, 3)));
  std::vector<double> summed = first.counts();
  for (size_t i = 0; i < summed.size(); ++i) summed[i] += second.counts()[i];
  first.set_counts(summed);
  EXPECT_EQ(first.counts(), whole.counts());
  EXPECT_DOUBLE_EQ(first.compute(), whole.compute());
  EXPECT_THROW(first.set_counts({1, 2}), tessera::Error);
}
