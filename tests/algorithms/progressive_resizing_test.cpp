// Progressive resizing: the scale curve at chosen times, pinning, both modes, targets untouched unless asked.
#include <gtest/gtest.h>

#include <tessera/algorithms/progressive_resizing.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

TEST(ProgressiveResizing, ScaleCurve) {
  // s0 = 0.5, delay 0.5, finetune 0.2: flat until 0.5, linear to 1 at 0.8, then 1.
  EXPECT_DOUBLE_EQ(progressive_scale(0.0, 0.5, 0.5, 0.2), 0.5);
  EXPECT_DOUBLE_EQ(progressive_scale(0.49, 0.5, 0.5, 0.2), 0.5);
  EXPECT_DOUBLE_EQ(progressive_scale(0.65, 0.5, 0.5, 0.2), 0.75);
  EXPECT_DOUBLE_EQ(progressive_scale(0.8, 0.5, 0.5, 0.2), 1.0);
  EXPECT_DOUBLE_EQ(progressive_scale(0.95, 0.5, 0.5, 0.2), 1.0);
  EXPECT_DOUBLE_EQ(progressive_scale(0.25, 0.0, 0.0, 0.5), 0.5);
  // delay + finetune = 1: jumps straight to full size after the delay
  EXPECT_DOUBLE_EQ(progressive_scale(0.5, 0.5, 0.5, 0.5), 1.0);
}

TEST(ProgressiveResizing, PinningToTheIncrementOnTheWidth) {
  // 28·0.5/4 = 3.5 -> round half to even -> 4 -> 16/28
  EXPECT_DOUBLE_EQ(pinned_scale(0.5, 28, 4), 16.0 / 28.0);
  // 28·0.6/4 = 4.2 -> 4 -> 16/28
  EXPECT_DOUBLE_EQ(pinned_scale(0.6, 28, 4), 16.0 / 28.0);
  // 28·0.65/4 = 4.55 -> 5 -> 20/28
  EXPECT_DOUBLE_EQ(pinned_scale(0.65, 28, 4), 20.0 / 28.0);
  EXPECT_DOUBLE_EQ(pinned_scale(0.05, 28, 4), 4.0 / 28.0);  // never below one increment
  EXPECT_DOUBLE_EQ(pinned_scale(1.0, 28, 4), 1.0);
  EXPECT_DOUBLE_EQ(pinned_scale(0.99, 28, 4), 1.0);  // 6.93 -> 7 -> 28
}

TEST(ProgressiveResizing, ResizeAndCropModes) {
  at::Tensor x = at::arange(2 * 1 * 8 * 8, at::kFloat).view({2, 1, 8, 8});
  Rng rng(1);
  at::Tensor r = resize_batch_input(x, 0.5, "resize", "bilinear", rng);
  EXPECT_EQ(r.sizes(), (at::IntArrayRef{2, 1, 4, 4}));
  // bilinear, half size, align_corners false: each output is the mean of a 2x2 block
  EXPECT_FLOAT_EQ(r[0][0][0][0].item<float>(), (0 + 1 + 8 + 9) / 4.0f);
  at::Tensor n = resize_batch_input(x, 0.5, "resize", "nearest", rng);
  EXPECT_FLOAT_EQ(n[0][0][1][1].item<float>(), x[0][0][2][2].item<float>());
  Rng c1(5);
  at::Tensor c = resize_batch_input(x, 0.5, "crop", "bilinear", c1);
  ASSERT_EQ(c.sizes(), (at::IntArrayRef{2, 1, 4, 4}));
  // one window for the whole batch: example 1 is example 0 shifted by 64
  EXPECT_TRUE(at::equal(c[1], c[0] + 64));
  // the crop is a contiguous window of the original
  const float corner = c[0][0][0][0].item<float>();
  const int64_t top = static_cast<int64_t>(corner) / 8, left = static_cast<int64_t>(corner) % 8;
  EXPECT_TRUE(at::equal(c[0][0], x[0][0].narrow(0, top, 4).narrow(1, left, 4)));
  EXPECT_TRUE(at::equal(resize_batch_input(x, 1.0, "resize", "bilinear", rng), x));
}

/// Records the input shape and the targets seen by the model.
class ShapeProbe : public Algorithm {
 public:
  ShapeProbe() { spec_ = testing::spec_on("shape_probe", {Event::BeforeForward}); }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& s, Logger&) override {
    widths.push_back(s.batch.input().size(3));
    targets_int = targets_int && s.batch.target().scalar_type() == at::kLong && s.batch.target().dim() == 1;
  }
  std::vector<int64_t> widths;
  bool targets_int = true;
  AlgorithmSpec spec_;
};

/// A model that pools any input size to a fixed-size classifier.
struct PoolNetImpl : torch::nn::Module {
  PoolNetImpl() : fc(register_module("fc", torch::nn::Linear(1, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return fc->forward(x.mean({1, 2, 3}).unsqueeze(1)); }
  torch::nn::Linear fc;
};

TEST(ProgressiveResizing, InTrainingTheWidthFollowsTheScheduleAndTargetsStay) {
  auto ds = data::make_synthetic(data::SyntheticOptions().size(16).input_shape({1, 16, 16}).num_classes(3));
  Components c;
  c.model = std::make_shared<Classifier<PoolNetImpl>>(std::make_shared<PoolNetImpl>(), 3);
  c.train_dataloader = testing::loader(ds, 4);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions());
  auto probe = std::make_shared<ShapeProbe>();
  c.algorithms = {std::make_shared<ProgressiveResizing>(
                      ProgressiveResizingOptions().initial_scale(0.5).delay_fraction(0.25).finetune_fraction(0.25)),
                  probe};
  Trainer t(TrainerOptions().max_duration(Time::parse("8ba")).threads(1), std::move(c));
  t.fit();
  // e = b/8: 0, .125, .25 -> 0.5 (width 8); .375 -> 0.625 -> 10/4=2.5 -> 2 -> 8; .5 -> .75 -> 12;
  // .625 -> .875 -> 14/4 = 3.5 -> 4 -> 16 (full); .75, .875 -> 16
  EXPECT_EQ(probe->widths, (std::vector<int64_t>{8, 8, 8, 8, 12, 16, 16, 16}));
  EXPECT_TRUE(probe->targets_int);
}

TEST(ProgressiveResizing, ValidationAndPlanChecks) {
  EXPECT_THROW(ProgressiveResizing(ProgressiveResizingOptions().delay_fraction(0.7).finetune_fraction(0.4)), InputError);
  EXPECT_THROW(ProgressiveResizing(ProgressiveResizingOptions().initial_scale(1.5)), InputError);
  EXPECT_THROW(ProgressiveResizing(ProgressiveResizingOptions().mode("zoom")), InputError);
  // class-id targets cannot be resized
  Components c = testing::tiny_components();
  c.algorithms = {std::make_shared<ProgressiveResizing>(ProgressiveResizingOptions().resize_targets(true))};
  EXPECT_THROW(Trainer(TrainerOptions(), std::move(c)), InputError);
  ProgressiveResizing pr;
  EXPECT_TRUE(pr.spec().writes(Resource::Resolution, Event::AfterDataloader));
  EXPECT_FALSE(pr.spec().writes(Resource::Targets));
}

/// A network whose Linear after the flatten fixes the input size: 3x8x8 images only.
struct FlattenNetImpl : torch::nn::Module {
  FlattenNetImpl() : fc(register_module("fc", torch::nn::Linear(3 * 8 * 8, 4))) {}
  at::Tensor forward(const at::Tensor& x) { return fc->forward(x.flatten(1)); }
  torch::nn::Linear fc;
};

/// The same with adaptive pooling to 8x8 first: any input size works.
struct AdaptiveNetImpl : torch::nn::Module {
  AdaptiveNetImpl() : fc(register_module("fc", torch::nn::Linear(3 * 8 * 8, 4))) {}
  at::Tensor forward(const at::Tensor& x) { return fc->forward(at::adaptive_avg_pool2d(x, {8, 8}).flatten(1)); }
  torch::nn::Linear fc;
};

template <class Net>
Components rgb_run(ProgressiveResizingOptions options) {
  Components c = testing::tiny_components();
  c.model = std::make_shared<Classifier<Net>>(std::make_shared<Net>(), 4);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions());
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(16).input_shape({3, 8, 8}).num_classes(4).seed(3)), 8);
  c.evaluators.clear();
  c.algorithms = {std::make_shared<ProgressiveResizing>(options)};
  return c;
}

TEST(ProgressiveResizing, ANetworkThatCannotTakeTheSmallestInputsIsRefusedAtPlanTime) {
  const std::string msg = testing::input_error_of(
      [] { Trainer t(TrainerOptions(), rgb_run<FlattenNetImpl>(ProgressiveResizingOptions().initial_scale(0.5))); });
  for (const char* part : {"progressive_resizing: the model cannot take inputs of 4x4 (initial_scale 0.5 of the data's "
                           "8x8, the smallest size the schedule uses)",
                           "mat1 and mat2", "a Linear after a flatten expects a fixed size", "adaptive pooling",
                           "larger initial_scale"}) {
    EXPECT_NE(msg.find(part), std::string::npos) << part << " missing from: " << msg;
  }
  EXPECT_EQ(msg.find("Exception raised from"), std::string::npos) << "torch's backtrace leaked: " << msg;
  // initial_scale 1: nothing is resized, nothing to refuse.
  Trainer full(TrainerOptions(), rgb_run<FlattenNetImpl>(ProgressiveResizingOptions().initial_scale(1.0)));
}

TEST(ProgressiveResizing, PlanTimeForwardLeavesTheModelAsItWas) {
  Components c = rgb_run<AdaptiveNetImpl>(ProgressiveResizingOptions().initial_scale(0.5));
  c.model->train();
  const std::string before = weights_fingerprint(*c.model);
  State state;
  state.model = c.model;
  state.train_dataloader = c.train_dataloader;
  c.algorithms[0]->check(state);  // passes: adaptive pooling takes 4x4
  EXPECT_TRUE(state.model->is_training());
  state.model->eval();
  c.algorithms[0]->check(state);
  EXPECT_FALSE(state.model->is_training());
  EXPECT_EQ(weights_fingerprint(*state.model), before);
}

/// The message of the InputError `f` throws ("" when it throws none).
template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(ProgressiveResizing, FunctionalFormValidatesLikeTheOptions) {
  const at::Tensor x = at::rand({2, 1, 8, 8});
  Rng rng(0);
  EXPECT_EQ(input_error([&] { resize_batch_input(x, 0.5, "zoom", "bilinear", rng); }),
            "resize_batch.mode: \"zoom\" is not allowed; expected one of: resize, crop");
  EXPECT_EQ(input_error([&] { resize_batch_input(x, 0.5, "CROP", "bilinear", rng); }),
            "resize_batch.mode: \"CROP\" is not allowed; expected one of: resize, crop");
  const std::string cubic = input_error([&] { resize_batch_input(x, 0.5, "resize", "bicubic", rng); });
  EXPECT_EQ(cubic.rfind("resize_batch.interpolation: \"bicubic\" is not allowed; expected one of: bilinear, nearest", 0),
            0u)
      << cubic;
  EXPECT_NE(input_error([&] { resize_batch_input(x, 0.5, "resize", "cubicc", rng); }).find("\"cubicc\" is not allowed"),
            std::string::npos);
  // the same choices as the algorithm's options, even where the scale makes the call a no-op
  EXPECT_NE(input_error([&] { resize_batch_input(x, 1.0, "zoom", "bilinear", rng); }), "");
  EXPECT_EQ(input_error([&] { resize_batch_input(x, 0.0, "resize", "bilinear", rng); }),
            "resize_batch.scale: 0 is out of range; expected a number > 0");
  EXPECT_NE(input_error([&] { resize_batch_input(x, -0.5, "resize", "bilinear", rng); }), "");
  EXPECT_EQ(resize_batch_input(x, 0.5, "crop", "nearest", rng).sizes(), at::IntArrayRef({2, 1, 4, 4}));
}

}  // namespace
}  // namespace tessera::algorithms
