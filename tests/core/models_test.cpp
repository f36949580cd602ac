#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include <ATen/ATen.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/pooling.h>

#include <tessera/error.h>
#include <tessera/models/cnn.h>
#include <tessera/models/mlp.h>
#include <tessera/models/model.h>
#include <tessera/models/resnet.h>

using tessera::Batch;
using tessera::Reduction;
using ::testing::HasSubstr;

namespace {

template <class E = tessera::Error>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

struct TwoSlots : tessera::SlottedModule {
  TwoSlots() {
    register_slot("fc", torch::nn::AnyModule(torch::nn::Linear(2, 3)));
    register_slot("pool", torch::nn::AnyModule(torch::nn::MaxPool1d(2)));
  }
};

at::Tensor floats(std::vector<float> v) { return at::tensor(v, at::kFloat); }

int64_t count_convs(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& child : m.modules(false)) n += child->as<torch::nn::Conv2dImpl>() != nullptr ? 1 : 0;
  return n;
}

}  // namespace

// ------------------------------------------------------------------------------------------------ slots

TEST(Slots, RegisterKeepsChildNamesAndCallsTheModule) {
  auto m = std::make_shared<TwoSlots>();
  EXPECT_EQ(m->slots().size(), 2u);
  auto params = m->named_parameters();
  EXPECT_TRUE(params.contains("fc.weight"));
  EXPECT_TRUE(params.contains("fc.bias"));
  auto children = m->named_children();
  ASSERT_TRUE(children.contains("pool"));
  EXPECT_NE(children["pool"]->as<torch::nn::MaxPool1dImpl>(), nullptr);
  // The slot calls the registered module itself (shared, not a copy).
  auto& linear = m->slot("fc").get<torch::nn::LinearImpl>();
  EXPECT_EQ(linear.weight.unsafeGetTensorImpl(), params["fc.weight"].unsafeGetTensorImpl());
  at::Tensor x = at::ones({4, 2});
  EXPECT_TRUE(at::equal(m->slot("fc").forward(x), linear.forward(x)));
}

TEST(Slots, ReplaceSwapsTheChildAndWhatForwardCalls) {
  auto m = std::make_shared<TwoSlots>();
  torch::nn::Linear replacement(2, 3);
  {
    at::NoGradGuard g;
    replacement->weight.zero_();
    replacement->bias.copy_(floats({1, 2, 3}));
  }
  m->replace_slot("fc", torch::nn::AnyModule(replacement));
  auto params = m->named_parameters();
  EXPECT_EQ(params["fc.bias"].unsafeGetTensorImpl(), replacement->bias.unsafeGetTensorImpl());
  at::Tensor out = m->slot("fc").forward(at::randn({2, 2}));
  EXPECT_TRUE(at::equal(out, floats({1, 2, 3}).expand({2, 3})));
  EXPECT_EQ(m->named_children()["fc"].get(), replacement.ptr().get());
  EXPECT_EQ(m->slots().size(), 2u);
}

TEST(Slots, UnknownOrDuplicateSlotIsAnErrorListingTheSlots) {
  auto m = std::make_shared<TwoSlots>();
  const std::string msg = message_of([&] { m->slot("conv"); });
  EXPECT_THAT(msg, HasSubstr("\"conv\""));
  EXPECT_THAT(msg, HasSubstr("fc, pool"));
  EXPECT_THAT(message_of([&] { m->replace_slot("conv", torch::nn::AnyModule(torch::nn::Linear(1, 1))); }),
              HasSubstr("fc, pool"));
  EXPECT_THROW(m->register_slot("fc", torch::nn::AnyModule(torch::nn::Linear(1, 1))), tessera::Error);
}

// ------------------------------------------------------------------------------------------------
// cross_entropy

TEST(CrossEntropy, IntegerTargetsMatchHandComputedValues) {
  // Row 0: logits (0, 0) -> -log(1/2). Row 1: logits (0, ln 3) with target 1 -> -log(3/4).
  at::Tensor logits = at::tensor({0.0f, 0.0f, 0.0f, std::log(3.0f)}).view({2, 2});
  at::Tensor targets = at::tensor(std::vector<int64_t>{0, 1});
  const double l0 = std::log(2.0), l1 = std::log(4.0 / 3.0);
  EXPECT_NEAR(tessera::cross_entropy(logits, targets).item<double>(), (l0 + l1) / 2, 1e-6);
  EXPECT_NEAR(tessera::cross_entropy(logits, targets, Reduction::Sum).item<double>(), l0 + l1, 1e-6);
  at::Tensor none = tessera::cross_entropy(logits, targets, Reduction::None);
  ASSERT_EQ(none.sizes(), at::IntArrayRef({2}));
  EXPECT_NEAR(none[0].item<double>(), l0, 1e-6);
  EXPECT_NEAR(none[1].item<double>(), l1, 1e-6);
  // int32 targets are accepted too.
  EXPECT_NEAR(tessera::cross_entropy(logits, targets.to(at::kInt)).item<double>(), (l0 + l1) / 2, 1e-6);
}

TEST(CrossEntropy, DenseTargetsAreSoftLabels) {
  at::Tensor logits = at::tensor({0.0f, 0.0f, 0.0f, std::log(3.0f)}).view({2, 2});
  // Row 0 one-hot on class 0; row 1 half and half: -(0.5 log 1/4 + 0.5 log 3/4).
  at::Tensor targets = at::tensor({1.0f, 0.0f, 0.5f, 0.5f}).view({2, 2});
  const double l0 = std::log(2.0), l1 = -(0.5 * std::log(0.25) + 0.5 * std::log(0.75));
  EXPECT_NEAR(tessera::cross_entropy(logits, targets).item<double>(), (l0 + l1) / 2, 1e-6);
  EXPECT_NEAR(tessera::cross_entropy(logits, targets, Reduction::Sum).item<double>(), l0 + l1, 1e-6);
  at::Tensor none = tessera::cross_entropy(logits, targets, Reduction::None);
  ASSERT_EQ(none.sizes(), at::IntArrayRef({2}));
  EXPECT_NEAR(none[1].item<double>(), l1, 1e-6);
  // One-hot dense targets equal integer targets.
  at::Tensor ints = at::tensor(std::vector<int64_t>{1, 0});
  at::Tensor onehot = at::tensor({0.0f, 1.0f, 1.0f, 0.0f}).view({2, 2});
  EXPECT_NEAR(tessera::cross_entropy(logits, onehot).item<double>(),
              tessera::cross_entropy(logits, ints).item<double>(), 1e-6);
}

TEST(CrossEntropy, SpatialOutputsAverageOverPositions) {
  // N = 1, C = 2, two positions: (0,0) target 0 -> log 2; (0, ln 3) target 1 -> log 4/3.
  at::Tensor logits = at::tensor({0.0f, 0.0f, 0.0f, std::log(3.0f)}).view({1, 2, 2});  // [N, C, L]
  at::Tensor targets = at::tensor(std::vector<int64_t>{0, 1}).view({1, 2});
  const double mean = (std::log(2.0) + std::log(4.0 / 3.0)) / 2;
  EXPECT_NEAR(tessera::cross_entropy(logits, targets).item<double>(), mean, 1e-6);
  at::Tensor none = tessera::cross_entropy(logits, targets, Reduction::None);
  ASSERT_EQ(none.sizes(), at::IntArrayRef({1}));
  EXPECT_NEAR(none[0].item<double>(), mean, 1e-6);
  at::Tensor dense = at::one_hot(targets, 2).permute({0, 2, 1}).to(at::kFloat);
  EXPECT_NEAR(tessera::cross_entropy(logits, dense).item<double>(), mean, 1e-6);
}

TEST(CrossEntropy, MismatchedShapesAreInputErrorsStatingBoth) {
  at::Tensor logits = at::zeros({4, 3});
  std::string msg =
      message_of<tessera::InputError>([&] { tessera::cross_entropy(logits, at::zeros({5}, at::kLong)); });
  EXPECT_THAT(msg, HasSubstr("[5]"));
  EXPECT_THAT(msg, HasSubstr("[4, 3]"));
  msg = message_of<tessera::InputError>([&] { tessera::cross_entropy(logits, at::zeros({4, 2})); });
  EXPECT_THAT(msg, HasSubstr("[4, 2]"));
  EXPECT_THAT(msg, HasSubstr("[4, 3]"));
  EXPECT_THROW(tessera::cross_entropy(at::zeros({4}), at::zeros({4}, at::kLong)), tessera::InputError);
}

// ------------------------------------------------------------------------------------------------ models

TEST(Models, MLPFlattensAndClassifies) {
  at::manual_seed(0);
  tessera::MLP mlp(tessera::MLPOptions().in_features(12).hidden({8, 6}).num_classes(5));
  EXPECT_EQ(mlp.num_classes(), 5);
  EXPECT_EQ(mlp.slots().size(), 3u);  // fc1, fc2, head
  auto params = mlp.named_parameters();
  EXPECT_EQ(params["fc1.weight"].sizes(), at::IntArrayRef({8, 12}));
  EXPECT_EQ(params["fc2.weight"].sizes(), at::IntArrayRef({6, 8}));
  EXPECT_EQ(params["head.weight"].sizes(), at::IntArrayRef({5, 6}));
  Batch batch(at::randn({4, 3, 2, 2}), at::tensor(std::vector<int64_t>{0, 1, 2, 3}));
  at::Tensor out = mlp.forward(batch);
  EXPECT_EQ(out.sizes(), at::IntArrayRef({4, 5}));
  EXPECT_TRUE(at::allclose(mlp.loss(out, batch), tessera::cross_entropy(out, batch.target())));
  EXPECT_EQ(mlp.loss(out, batch, Reduction::None).sizes(), at::IntArrayRef({4}));
  EXPECT_THROW(mlp.forward(Batch(at::randn({4, 10}), at::zeros({4}, at::kLong))), tessera::InputError);
}

TEST(Models, MLPDropoutOnlyInTraining) {
  at::manual_seed(0);
  tessera::MLP mlp(tessera::MLPOptions().in_features(6).hidden({64}).num_classes(3).dropout(0.5));
  Batch batch(at::randn({8, 6}), at::zeros({8}, at::kLong));
  mlp.eval();
  EXPECT_TRUE(at::equal(mlp.forward(batch), mlp.forward(batch)));
  mlp.train();
  EXPECT_FALSE(at::equal(mlp.forward(batch), mlp.forward(batch)));
}

TEST(Models, ConstructionRejectsMissingSizesAndBadOptions) {
  EXPECT_THAT(message_of<tessera::InputError>([] { tessera::MLP(tessera::MLPOptions().num_classes(3)); }),
              HasSubstr("in_features"));
  EXPECT_THAT(message_of<tessera::InputError>([] { tessera::CNN(tessera::CNNOptions().in_channels(1)); }),
              HasSubstr("num_classes"));
  EXPECT_THROW(tessera::CNN(tessera::CNNOptions().in_channels(1).num_classes(2).width(0)),
               tessera::InputError);
  EXPECT_THROW(tessera::MLP(tessera::MLPOptions().in_features(2).num_classes(2).dropout(1.0)),
               tessera::InputError);
  EXPECT_THROW(tessera::MLP(tessera::MLPOptions().in_features(2).num_classes(2).hidden({4, 0})),
               tessera::InputError);
  const std::string msg = message_of<tessera::InputError>(
      [] { tessera::ResNet(tessera::ResNetOptions().depth(21).in_channels(3).num_classes(10)); });
  EXPECT_THAT(msg, HasSubstr("6n+2"));
  EXPECT_THAT(msg, HasSubstr("21"));
  EXPECT_THROW(tessera::ResNet(tessera::ResNetOptions().depth(2).in_channels(3).num_classes(10)),
               tessera::InputError);
}

TEST(Models, CNNShapesSlotsAndInit) {
  at::manual_seed(0);
  tessera::CNN cnn(tessera::CNNOptions().in_channels(2).num_classes(7).width(32));
  for (const char* name : {"conv1", "bn1", "conv2", "bn2", "pool", "conv3", "bn3", "fc"}) {
    EXPECT_EQ(cnn.slots().count(name), 1u) << name;
  }
  EXPECT_NE(cnn.slot("pool").ptr()->as<torch::nn::MaxPool2dImpl>(), nullptr);
  EXPECT_EQ(cnn.slot("conv2").get<torch::nn::Conv2dImpl>().options.stride()->at(0), 2);
  Batch batch(at::randn({3, 2, 12, 12}), at::tensor(std::vector<int64_t>{0, 6, 3}));
  EXPECT_EQ(cnn.forward(batch).sizes(), at::IntArrayRef({3, 7}));
  EXPECT_THROW(cnn.forward(Batch(at::randn({3, 3, 12, 12}), batch.target())), tessera::InputError);
  // Kaiming normal, fan_out, ReLU: std = sqrt(2 / (out_channels * 3 * 3)).
  const at::Tensor w = cnn.named_parameters()["conv3.weight"];  // [128, 64, 3, 3]: 73728 samples
  const double expected = std::sqrt(2.0 / (128 * 9));
  EXPECT_NEAR(w.std().item<double>(), expected, 0.03 * expected);
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.03 * expected);
  EXPECT_TRUE(at::equal(cnn.named_parameters()["bn2.weight"], at::ones({64})));
  EXPECT_TRUE(at::equal(cnn.named_parameters()["bn2.bias"], at::zeros({64})));
}

TEST(Models, InitIsDeterministicGivenTheSeed) {
  at::manual_seed(3);
  tessera::ResNet a(tessera::ResNetOptions().depth(8).width(4).in_channels(3).num_classes(10));
  at::manual_seed(3);
  tessera::ResNet b(tessera::ResNetOptions().depth(8).width(4).in_channels(3).num_classes(10));
  auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) EXPECT_TRUE(at::equal(item.value(), pb[item.key()])) << item.key();
}

TEST(Models, ResNetStructureForwardAndBackward) {
  at::manual_seed(0);
  tessera::ResNet net(tessera::ResNetOptions().depth(20).width(4).in_channels(3).num_classes(10));
  ASSERT_EQ(net.blocks().size(), 9u);
  // 1 stem + 2 per block + 2 projections (first block of stages 2 and 3).
  EXPECT_EQ(count_convs(net), 1 + 18 + 2);
  int64_t projections = 0;
  for (const auto& b : net.blocks()) projections += b->has_projection() ? 1 : 0;
  EXPECT_EQ(projections, 2);
  auto params = net.named_parameters();
  EXPECT_EQ(params["conv1.weight"].sizes(), at::IntArrayRef({4, 3, 3, 3}));
  EXPECT_EQ(params["layer2.0.conv1.weight"].sizes(), at::IntArrayRef({8, 4, 3, 3}));
  EXPECT_EQ(params["layer3.0.shortcut_conv.weight"].sizes(), at::IntArrayRef({16, 8, 1, 1}));
  EXPECT_EQ(params["layer3.2.conv2.weight"].sizes(), at::IntArrayRef({16, 16, 3, 3}));
  EXPECT_EQ(params["fc.weight"].sizes(), at::IntArrayRef({10, 16}));
  EXPECT_EQ(net.blocks()[3]->slot("conv1").get<torch::nn::Conv2dImpl>().options.stride()->at(0), 2);
  EXPECT_EQ(net.num_classes(), 10);

  Batch batch(at::randn({2, 3, 8, 8}), at::tensor(std::vector<int64_t>{1, 9}));
  at::Tensor out = net.forward(batch);
  ASSERT_EQ(out.sizes(), at::IntArrayRef({2, 10}));
  net.loss(out, batch).backward();
  for (const auto& item : params) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_TRUE(at::isfinite(item.value().grad()).all().item<bool>()) << item.key();
  }
}

TEST(Models, ResNetWithGroupNormsNormalisesEachGroupOfEachExample) {
  at::manual_seed(0);
  tessera::ResNet net(
      tessera::ResNetOptions().depth(8).width(4).in_channels(3).num_classes(10).norm("group").groups(2));
  for (const auto& block : net.blocks()) {
    for (const char* name : {"bn1", "bn2"}) {
      const auto* gn = block->slot(name).ptr()->as<torch::nn::GroupNormImpl>();
      ASSERT_NE(gn, nullptr) << name;
      EXPECT_EQ(gn->options.num_groups(), 2);
    }
  }
  // GroupNorm's weight and bias under the BN slots' names, and no running statistics (no buffers at all).
  EXPECT_EQ(net.named_parameters()["layer3.0.shortcut_bn.weight"].sizes(), at::IntArrayRef({16}));
  EXPECT_TRUE(net.buffers().empty());
  // Per example: the output of one example does not depend on the others in the batch (BatchNorm's would).
  net.train();
  const at::Tensor x = at::randn({3, 3, 8, 8});
  const at::Tensor all = net.forward(Batch(x, at::zeros({3}, at::kLong)));
  const at::Tensor first = net.forward(Batch(x.slice(0, 0, 1), at::zeros({1}, at::kLong)));
  EXPECT_TRUE(at::allclose(all.slice(0, 0, 1), first, 1e-4, 1e-5));
  // The stem's GroupNorm: 2 groups of 2 channels, each of mean 0 and variance 1 per example.
  const at::Tensor stem = net.slot("bn1").forward(net.slot("conv1").forward(x)).reshape({3, 2, -1});
  EXPECT_TRUE(at::allclose(stem.mean({-1}), at::zeros({3, 2}), 0, 1e-5));
  EXPECT_TRUE(at::allclose((stem - stem.mean({-1}, /*keepdim=*/true)).pow(2).mean({-1}), at::ones({3, 2}), 0, 1e-3));
  const std::string bad = message_of<tessera::InputError>([] {
    tessera::ResNet(tessera::ResNetOptions().width(6).in_channels(3).num_classes(10).norm("group").groups(4));
  });
  EXPECT_THAT(bad, HasSubstr("model.groups: 4 does not divide the width 6"));
  EXPECT_THAT(message_of<tessera::InputError>([] {
                tessera::ResNet(tessera::ResNetOptions().in_channels(3).num_classes(10).norm("layer"));
              }),
              HasSubstr("one of: batch, group"));
}

TEST(Models, SurgeryOnABlockSlotChangesTheForward) {
  at::manual_seed(0);
  tessera::ResNet net(tessera::ResNetOptions().depth(8).width(4).in_channels(1).num_classes(3));
  net.eval();
  Batch batch(at::randn({2, 1, 8, 8}), at::tensor(std::vector<int64_t>{0, 2}));
  const at::Tensor before = net.forward(batch);
  // A zero conv1 in the last block leaves only the shortcut path there.
  auto& block = *net.blocks().back();
  torch::nn::Conv2d zero(torch::nn::Conv2dOptions(8, 16, 3).stride(2).padding(1).bias(false));
  {
    at::NoGradGuard g;
    zero->weight.zero_();
  }
  block.replace_slot("conv1", torch::nn::AnyModule(zero));
  EXPECT_EQ(net.named_parameters()["layer3.0.conv1.weight"].unsafeGetTensorImpl(),
            zero->weight.unsafeGetTensorImpl());
  EXPECT_FALSE(at::allclose(net.forward(batch), before));
}
