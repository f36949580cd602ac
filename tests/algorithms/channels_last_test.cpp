// Channels-last: the conversion (in place, the same tensors, idempotent, values and fingerprint unchanged), the
// gradients and optimizer state that follow it, the plan (after surgery, refused without a 4-D tensor), the
// blur-pool kernels on NHWC tensors against NCHW bit for bit, and a run of every shipped algorithm with and
// without it: the same training up to the rounding of the convolution kernels.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/channels_last.h>
#include <tessera/algorithms/ema.h>
#include <tessera/algorithms/gradient_clipping.h>
#include <tessera/algorithms/label_smoothing.h>
#include <tessera/algorithms/layer_freezing.h>
#include <tessera/algorithms/progressive_resizing.h>
#include <tessera/algorithms/selective_backprop.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

constexpr auto kCL = at::MemoryFormat::ChannelsLast;

std::shared_ptr<CNN> cnn(uint64_t seed = 0) {
  at::manual_seed(seed);
  return std::make_shared<CNN>(CNNOptions().in_channels(3).num_classes(4).width(8));
}

/// Stored NHWC and not also NCHW (every 4-D weight of the CNN has more than one channel and a 3x3 window).
bool strictly_channels_last(const at::Tensor& t) { return t.is_contiguous(kCL) && !t.is_contiguous(); }

TEST(ChannelsLast, ConvertsEvery4dTensorInPlaceKeepingValuesIdentityAndFingerprint) {
  auto model = cnn();
  std::vector<at::Tensor> before;
  for (const auto& p : model->parameters()) before.push_back(p.detach().clone());
  std::vector<const void*> impls;
  for (const auto& p : model->parameters()) impls.push_back(p.unsafeGetTensorImpl());
  const std::string fingerprint = weights_fingerprint(*model);

  EXPECT_EQ(apply_channels_last(*model), 3);  // conv1..conv3 weights; biases, batch-norm and fc are not 4-D
  const auto params = model->parameters();
  int64_t four_d = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].unsafeGetTensorImpl(), impls[i]);  // the same tensors: the optimizer still holds them
    EXPECT_TRUE(at::equal(params[i], before[i]));           // logically unchanged
    EXPECT_TRUE(params[i].requires_grad());
    if (params[i].dim() == 4) {
      ++four_d;
      EXPECT_TRUE(strictly_channels_last(params[i]));
      EXPECT_TRUE(is_channels_last(params[i]));
    }
  }
  EXPECT_EQ(four_d, 3);
  EXPECT_EQ(weights_fingerprint(*model), fingerprint);  // the fingerprint reads logical order

  // Idempotent: a second application moves no storage.
  std::vector<const void*> storage;
  for (const auto& p : params) storage.push_back(p.data_ptr());
  EXPECT_EQ(apply_channels_last(*model), 3);
  for (size_t i = 0; i < params.size(); ++i) EXPECT_EQ(params[i].data_ptr(), storage[i]);
}

TEST(ChannelsLast, SingleChannelWeightsGetTheStridesThatMakeConvolutionsRunNhwc) {
  // [8, 1, 3, 3] is NHWC-contiguous already with NCHW strides; converted, it suggests channels-last, so the
  // convolution of a plain [N, 1, H, W] input (also both layouts at once) runs, and answers, channels-last.
  at::Tensor w = at::randn({8, 1, 3, 3});
  const at::Tensor x = at::randn({2, 1, 10, 10});
  const at::Tensor expected = at::conv2d(x, w);
  EXPECT_FALSE(is_channels_last(w));
  EXPECT_EQ(to_channels_last({w}), 1);
  EXPECT_TRUE(is_channels_last(w));
  const at::Tensor y = at::conv2d(x, w);
  EXPECT_TRUE(strictly_channels_last(y));
  EXPECT_TRUE(at::allclose(y, expected, 1e-5, 1e-6));
  at::Tensor bias = at::randn({8});
  EXPECT_EQ(to_channels_last({bias}), 0);  // other ranks are left alone
}

/// One forward and backward of `model` on a fixed batch of [8, 3, 12, 12] images.
void forward_backward(Model& model) {
  at::manual_seed(5);
  const Batch batch(at::randn({8, 3, 12, 12}), at::randint(0, 4, {8}));
  model.loss(model.forward(batch), batch).backward();
}

TEST(ChannelsLast, GradientsAreChannelsLastAndMatchTheContiguousModel) {
  auto plain = cnn(), converted = cnn();
  apply_channels_last(*converted);
  forward_backward(*plain);
  forward_backward(*converted);
  const auto a = plain->named_parameters(), b = converted->named_parameters();
  for (const auto& item : a) {
    const at::Tensor& g = b[item.key()].grad();
    ASSERT_TRUE(g.defined()) << item.key();
    if (g.dim() == 4) EXPECT_TRUE(strictly_channels_last(g)) << item.key();
    // The convolution and batch-norm kernels of the two layouts sum in different orders: close, not bitwise.
    EXPECT_TRUE(at::allclose(g, item.value().grad(), 1e-4, 1e-6)) << item.key();
  }
}

TEST(ChannelsLast, ExistingGradientsAndOptimizerStateFollow) {
  auto model = cnn();
  optim::SGD opt(model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  forward_backward(*model);
  opt.step();  // momentum buffers exist, NCHW
  forward_backward(*model);
  apply_channels_last(*model, &opt);
  for (const auto& p : model->parameters()) {
    if (p.dim() != 4) continue;
    EXPECT_TRUE(strictly_channels_last(p.grad()));
    const auto* slots = opt.state_of(p);
    ASSERT_NE(slots, nullptr);
    EXPECT_TRUE(strictly_channels_last(slots->at(0)));
  }
}

/// Two copies of the same parameter with the same gradient, one NCHW and one NHWC.
std::pair<at::Tensor, at::Tensor> twin_parameters(uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor a = at::randn({6, 4, 3, 3}).set_requires_grad(true);
  a.mutable_grad() = at::randn({6, 4, 3, 3}) * 10;
  at::Tensor b = a.detach().clone().set_requires_grad(true);
  b.mutable_grad() = a.grad().clone();
  to_channels_last({b});
  return {a, b};
}

TEST(ChannelsLast, OptimizersAndClippingGiveTheContiguousValues) {
  // The optimizers' updates are elementwise: bitwise the same values in either layout.
  auto make = [](const std::string& kind, const at::Tensor& p) -> std::unique_ptr<optim::Optimizer> {
    const std::vector<at::Tensor> params{p};
    if (kind == "sgd") return std::make_unique<optim::SGD>(params, optim::SGDOptions().lr(0.1).momentum(0.9).nesterov(true).weight_decay(1e-3));
    if (kind == "adam") return std::make_unique<optim::Adam>(params, optim::AdamOptions().lr(0.01).weight_decay(1e-3).amsgrad(true));
    if (kind == "adamw") return std::make_unique<optim::AdamW>(params, optim::AdamWOptions().lr(0.01));
    return std::make_unique<optim::Lion>(params, optim::LionOptions().lr(0.01).weight_decay(0.1));
  };
  for (const std::string kind : {"sgd", "adam", "adamw", "lion"}) {
    auto [a, b] = twin_parameters(1);
    std::unique_ptr<optim::Optimizer> oa = make(kind, a), ob = make(kind, b);
    for (int step = 0; step < 3; ++step) {
      oa->step();
      ob->step();
    }
    EXPECT_TRUE(strictly_channels_last(b)) << kind;
    EXPECT_TRUE(at::equal(a, b)) << kind;
    for (const auto& s : *ob->state_of(b)) {
      if (s.dim() == 4) EXPECT_TRUE(strictly_channels_last(s)) << kind;  // built like the parameter
    }
  }
  // Clipping: by value it is elementwise, so bitwise equal; the global norm and the per-unit (adaptive) norms are
  // reductions that run in memory order, so they are close (a few ulp), not bitwise.
  for (const std::string type : {"value", "adaptive", "norm"}) {
    auto [a, b] = twin_parameters(2);
    clip_gradients({a}, type, 0.5);
    clip_gradients({b}, type, 0.5);
    EXPECT_TRUE(strictly_channels_last(b.grad())) << type;
    EXPECT_FALSE(at::equal(a.grad(), twin_parameters(2).first.grad())) << type << " clipped nothing";
    if (type == "value") {
      EXPECT_TRUE(at::equal(a.grad(), b.grad())) << type;
    } else {
      EXPECT_TRUE(at::allclose(a.grad(), b.grad(), 1e-6, 0)) << type;
    }
  }
}

TEST(ChannelsLast, BlurPoolKernelsKeepChannelsLastAndGiveTheNchwBits) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({2, 6, 11, 10});
  for (bool maxpool : {false, true}) {
    at::Tensor a = x.clone().requires_grad_(true);
    at::Tensor b = x.contiguous(kCL).requires_grad_(true);
    auto op = [&](const at::Tensor& t) {
      return maxpool ? blur_maxpool2d(t, torch::nn::MaxPool2dOptions(2), {2, 2}) : blur2d(t, {2, 2});
    };
    const at::Tensor ya = op(a), yb = op(b);
    EXPECT_TRUE(strictly_channels_last(yb)) << maxpool;  // computed NHWC, no copy to NCHW and back
    EXPECT_TRUE(at::equal(ya, yb)) << maxpool;
    const at::Tensor r = at::randn(ya.sizes());
    (ya * r).sum().backward();
    (yb * r.contiguous(kCL)).sum().backward();
    EXPECT_TRUE(strictly_channels_last(b.grad())) << maxpool;
    EXPECT_TRUE(at::equal(a.grad(), b.grad())) << maxpool;
  }
}

TEST(ChannelsLast, RunsAfterSurgeryAndIsRefusedWithoutConvolutions) {
  Components c = testing::tiny_components();
  c.model = cnn();
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(32).input_shape({3, 12, 12}).num_classes(4)), 8);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.evaluators.clear();
  auto channels_last = std::make_shared<ChannelsLast>();
  c.algorithms = {channels_last, std::make_shared<BlurPool>(BlurPoolOptions().min_channels(4))};  // recipe order
  auto model = c.model;
  Trainer t(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), std::move(c));
  const auto& init = t.plan().at(Event::Init);
  ASSERT_EQ(init.size(), 2u);
  EXPECT_EQ(init[0].algorithm->name(), "blurpool");
  EXPECT_EQ(init[1].algorithm->name(), "channels_last");
  EXPECT_EQ(channels_last->converted(), 3);
  for (const auto& p : model->parameters()) {
    if (p.dim() == 4) EXPECT_TRUE(strictly_channels_last(p));
  }
  t.fit();
  for (const auto& p : model->parameters()) {
    if (p.dim() == 4) EXPECT_TRUE(strictly_channels_last(p)) << "after a step";
  }

  Components mlp = testing::tiny_components();
  mlp.algorithms = {std::make_shared<ChannelsLast>()};
  const std::string error = testing::input_error_of(
      [&] { Trainer(TrainerOptions().max_duration(Time::parse("1ba")), std::move(mlp)); });
  EXPECT_NE(error.find("no 4-D parameter or buffer"), std::string::npos) << error;
}

/// The algorithm under test, with options that make it act within a few batches.
std::shared_ptr<Algorithm> acting_early(const std::string& name) {
  if (name == "blurpool") return std::make_shared<BlurPool>(BlurPoolOptions().min_channels(4));
  if (name == "gradient_clipping") {
    return std::make_shared<GradientClipping>(GradientClippingOptions().clipping_type("adaptive").clipping_threshold(0.05));
  }
  if (name == "ema") return std::make_shared<EMA>(EMAOptions().half_life(Time::parse("2ba")));
  if (name == "label_smoothing") return std::make_shared<LabelSmoothing>();
  if (name == "layer_freezing") return std::make_shared<LayerFreezing>(LayerFreezingOptions().freeze_start(0.3));
  if (name == "progressive_resizing") {
    return std::make_shared<ProgressiveResizing>(ProgressiveResizingOptions().initial_scale(0.5).finetune_fraction(0.3));
  }
  return std::make_shared<SelectiveBackprop>(SelectiveBackpropOptions().start(0).end(1).interrupt(0).keep(0.5));
}

/// The final parameters of three epochs on 12x12 RGB images with `name`, with or without channels_last.
std::vector<at::Tensor> train(const std::string& name, bool channels_last) {
  Components c;
  c.model = cnn();
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(48).input_shape({3, 12, 12}).num_classes(4)), 8);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.05).momentum(0.9));
  c.algorithms = {acting_early(name)};
  if (channels_last) c.algorithms.push_back(std::make_shared<ChannelsLast>());
  auto model = c.model;
  Trainer t(TrainerOptions().max_duration(Time::parse("3ep")).threads(1).seed(3), std::move(c));
  t.fit();
  std::vector<at::Tensor> out;
  for (const auto& p : model->parameters()) {
    if (channels_last && p.dim() == 4) EXPECT_TRUE(strictly_channels_last(p)) << name;
    out.push_back(p.detach().contiguous());
  }
  return out;
}

class WithEachAlgorithm : public ::testing::TestWithParam<std::string> {};

TEST_P(WithEachAlgorithm, TrainsAsTheContiguousModelUpToKernelRounding) {
  const auto plain = train(GetParam(), false);
  const auto converted = train(GetParam(), true);
  ASSERT_EQ(plain.size(), converted.size());
  double worst = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    worst = std::max(worst, (plain[i] - converted[i]).abs().max().item<double>());
    EXPECT_TRUE(at::allclose(plain[i], converted[i], 1e-3, 1e-4)) << GetParam() << " parameter " << i;
  }
  RecordProperty("max_abs_difference", c10::str(worst));
}

INSTANTIATE_TEST_SUITE_P(ShippedAlgorithms, WithEachAlgorithm,
                         ::testing::Values("blurpool", "ema", "gradient_clipping", "label_smoothing", "layer_freezing",
                                           "progressive_resizing", "selective_backprop"));

}  // namespace
}  // namespace tessera::algorithms
