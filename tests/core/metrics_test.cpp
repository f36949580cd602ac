#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include <ATen/ATen.h>

#include <tessera/error.h>
#include <tessera/metrics.h>

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
