// BlurPool: the filter, the op against hand-computed values, shapes, surgery counts, optimizer
// consistency, gradients, and the algorithm's warnings and validation.
#include <cmath>

#include <gtest/gtest.h>

#include <tessera/algorithms/blurpool.h>
#include <tessera/surgery.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

class TextCapture : public LoggerDestination {
 public:
  std::string name() const override { return "capture"; }
  void log_text(const std::string& level, const std::string& text) override { lines.push_back(level + ": " + text); }
  std::vector<std::string> lines;
};

TEST(BlurPool, FilterIsTheNormalisedBinomial) {
  at::Tensor k = blur_filter(2, at::TensorOptions().dtype(at::kFloat));
  ASSERT_EQ(k.sizes(), (at::IntArrayRef{2, 1, 3, 3}));
  at::Tensor expected = at::tensor({1., 2., 1., 2., 4., 2., 1., 2., 1.}, at::kFloat).view({3, 3}) / 16.0;
  EXPECT_TRUE(at::equal(k[0][0], expected));
  EXPECT_TRUE(at::equal(k[1][0], expected));
  EXPECT_FLOAT_EQ(k[0].sum().item<float>(), 1.0f);
}

TEST(BlurPool, Blur2dMatchesHandComputation) {
  at::Tensor x = at::arange(9, at::kFloat).view({1, 1, 3, 3});
  at::Tensor y = blur2d(x, 1);
  ASSERT_EQ(y.sizes(), x.sizes());
  // centre: (0·1 + 1·2 + 2·1 + 3·2 + 4·4 + 5·2 + 6·1 + 7·2 + 8·1)/16 = 64/16
  EXPECT_FLOAT_EQ(y[0][0][1][1].item<float>(), 4.0f);
  // corner (0,0) with zero padding: (0·4 + 1·2 + 3·2 + 4·1)/16 = 12/16
  EXPECT_FLOAT_EQ(y[0][0][0][0].item<float>(), 0.75f);
  // stride 2 keeps the (0,0) and (0,2), (2,0), (2,2) positions
  at::Tensor z = blur2d(x, 2);
  ASSERT_EQ(z.sizes(), (at::IntArrayRef{1, 1, 2, 2}));
  EXPECT_TRUE(at::allclose(z, y.index({at::indexing::Slice(), at::indexing::Slice(), at::indexing::Slice(0, 3, 2),
                                       at::indexing::Slice(0, 3, 2)})));
}

TEST(BlurPool, ChannelsAreBlurredIndependently) {
  at::Tensor x = at::zeros({1, 2, 5, 5});
  x[0][1][2][2] = 16.0;  // an impulse in channel 1 only
  at::Tensor y = blur2d(x, 1);
  EXPECT_EQ(y[0][0].abs().sum().item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(y[0][1][2][2].item<float>(), 4.0f);
  EXPECT_FLOAT_EQ(y[0][1][1][1].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(y[0][1].sum().item<float>(), 16.0f);
}

TEST(BlurPool, ShapesForOddSizesAndPassThrough) {
  at::Tensor x = at::randn({2, 3, 7, 9});
  EXPECT_EQ(blur2d(x, 2).sizes(), (at::IntArrayRef{2, 3, 4, 5}));
  EXPECT_EQ(blur2d(x, {1, 2}).sizes(), (at::IntArrayRef{2, 3, 7, 5}));
  EXPECT_EQ(blur2d(x, 1).sizes(), x.sizes());
  at::Tensor tiny = at::randn({1, 2, 2, 5});
  EXPECT_TRUE(at::equal(blur2d(tiny, 2), tiny));
}

TEST(BlurPool, SurgeryCountsOnResNetAndCnn) {
  ResNet resnet20(ResNetOptions().depth(20).width(16).in_channels(3).num_classes(10));
  BlurPoolCounts c = apply_blurpool(resnet20, BlurPoolOptions());
  EXPECT_EQ(c.convs, 4);  // first conv and projection of stages 2 and 3
  EXPECT_EQ(c.maxpools, 0);
  ResNet again(ResNetOptions().depth(20).width(16).in_channels(3).num_classes(10));
  EXPECT_EQ(apply_blurpool(again, BlurPoolOptions().min_channels(32)).convs, 2);  // stage 3 only
  CNN cnn(CNNOptions().in_channels(1).num_classes(10).width(16));
  BlurPoolCounts cc = apply_blurpool(cnn, BlurPoolOptions());
  EXPECT_EQ(cc.convs, 1);
  EXPECT_EQ(cc.maxpools, 1);
  CNN cnn2(CNNOptions().in_channels(1).num_classes(10).width(16));
  EXPECT_EQ(apply_blurpool(cnn2, BlurPoolOptions().replace_convs(false)).convs, 0);
}

TEST(BlurPool, ApplyingItTwiceChangesNothingTheSecondTime) {
  // blur_first keeps the conv strided inside BlurConv2d's slot "conv" (where weight standardization reaches it);
  // a second application must not wrap it again (it would blur twice).
  for (const bool blur_first : {true, false}) {
    SCOPED_TRACE(blur_first ? "blur_first" : "blur after");
    ResNet resnet(ResNetOptions().depth(20).width(16).in_channels(3).num_classes(10));
    optim::SGD opt(resnet.parameters(), optim::SGDOptions().lr(0.1));
    EXPECT_EQ(apply_blurpool(resnet, BlurPoolOptions().blur_first(blur_first), &opt).convs, 4);
    const auto names_before = resnet.named_parameters().keys();
    const BlurPoolCounts second = apply_blurpool(resnet, BlurPoolOptions().blur_first(blur_first), &opt);
    EXPECT_EQ(second.convs, 0);
    EXPECT_EQ(second.maxpools, 0);
    EXPECT_EQ(count_blurpool(resnet, BlurPoolOptions()).convs, 0);
    EXPECT_EQ(resnet.named_parameters().keys(), names_before);
    int64_t wrappers = 0;
    for (const auto& m : resnet.modules(/*include_self=*/false)) {
      if (const auto* bc = m->as<BlurConv2dImpl>()) {
        ++wrappers;
        EXPECT_NE(bc->slots().at("conv").ptr()->as<torch::nn::Conv2dImpl>(), nullptr) << "a BlurConv2d in a BlurConv2d";
      }
    }
    EXPECT_EQ(wrappers, 4);
  }
  CNN cnn(CNNOptions().in_channels(1).num_classes(10).width(16));
  apply_blurpool(cnn, BlurPoolOptions());
  const BlurPoolCounts again = apply_blurpool(cnn, BlurPoolOptions());
  EXPECT_EQ(again.convs + again.maxpools, 0);
}

TEST(BlurPool, ReplacedModelComputesBlurThenConv) {
  at::manual_seed(0);
  auto model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(10).width(16));
  at::Tensor x = at::randn({2, 1, 12, 12});
  apply_blurpool(*model, BlurPoolOptions());
  auto* bc = model->slot("conv2").ptr()->as<BlurConv2dImpl>();
  ASSERT_NE(bc, nullptr);
  at::Tensor h = at::randn({2, 16, 12, 12});
  at::Tensor expected = at::conv2d(blur2d(h, 1), bc->conv->weight, bc->conv->bias, 2, 1);
  EXPECT_TRUE(at::allclose(bc->forward(h), expected));
  auto* bp = model->slot("pool").ptr()->as<BlurMaxPool2dImpl>();
  ASSERT_NE(bp, nullptr);
  at::Tensor p = at::randn({2, 4, 8, 8});
  EXPECT_TRUE(at::allclose(bp->forward(p), blur2d(at::max_pool2d(p, {2, 2}, {1, 1}), 2)));
  EXPECT_EQ(bp->forward(p).sizes(), at::max_pool2d(p, {2, 2}).sizes());
  // blur_first = false: conv at stride 1, then blur with stride 2; same output shape as the original
  auto late = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(10).width(16));
  apply_blurpool(*late, BlurPoolOptions().blur_first(false));
  auto* lc = late->slot("conv2").ptr()->as<BlurConv2dImpl>();
  at::Tensor l_expected = blur2d(at::conv2d(h, lc->conv->weight, lc->conv->bias, 1, 1), 2);
  EXPECT_TRUE(at::allclose(lc->forward(h), l_expected));
  EXPECT_EQ(lc->forward(h).sizes(), (at::IntArrayRef{2, 32, 6, 6}));
  EXPECT_EQ(model->forward(Batch(x, at::zeros({2}, at::kLong))).sizes(), (at::IntArrayRef{2, 10}));
}

TEST(BlurPool, OptimizerStaysConsistentAndGradientsFlow) {
  auto model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(10).width(16));
  optim::SGD opt(model->parameters(), optim::SGDOptions().lr(0.1));
  apply_blurpool(*model, BlurPoolOptions(), &opt);
  const auto params = model->parameters();
  size_t in_opt = 0;
  for (const auto& g : opt.param_groups()) in_opt += g.params.size();
  EXPECT_EQ(in_opt, params.size());
  for (const auto& p : params) EXPECT_TRUE(opt.contains(p));
  at::Tensor x = at::randn({4, 1, 12, 12});
  at::Tensor loss = model->loss(model->forward(Batch(x, at::tensor({1, 2, 3, 4}, at::kLong))), Batch(x, at::tensor({1, 2, 3, 4}, at::kLong)));
  loss.backward();
  for (const auto& p : params) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
  }
}

TEST(Surgery, NewParametersJoinTheOptimizerAndReplacedOnesLeave) {
  // A model whose layer sits in a slot.
  struct Slotted : SlottedModule {
    Slotted() { register_slot("fc", torch::nn::AnyModule(torch::nn::Linear(4, 2))); }
  } net;
  optim::SGD opt(net.parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  const auto old_params = net.parameters();
  for (auto& p : old_params) {
    p.mutable_grad() = at::ones_like(p);
  }
  opt.step();  // creates momentum state for the old parameters
  int64_t n = replace_slots(net, &opt, [](const std::string& path, torch::nn::AnyModule&) {
    EXPECT_EQ(path, "fc");
    return std::optional<torch::nn::AnyModule>(torch::nn::AnyModule(torch::nn::Linear(4, 2)));
  });
  EXPECT_EQ(n, 1);
  for (const auto& p : old_params) {
    EXPECT_FALSE(opt.contains(p));
    EXPECT_EQ(opt.state_of(p), nullptr);
  }
  for (const auto& p : net.parameters()) EXPECT_TRUE(opt.contains(p));
}

TEST(BlurPool, AlgorithmAppliesAtInitAndWarnsWhenNothingChanges) {
  EXPECT_THROW(BlurPool(BlurPoolOptions().replace_convs(false).replace_maxpools(false)), InputError);
  EXPECT_THROW(BlurPool(BlurPoolOptions().min_channels(0)), InputError);
  BlurPool algo;
  EXPECT_TRUE(algo.spec().required_on_load);
  EXPECT_EQ(algo.spec().events(), std::vector<Event>{Event::Init});

  auto capture = std::make_shared<TextCapture>();
  Logger logger({capture.get()});
  State state;
  state.model = testing::tiny_model();  // an MLP: nothing to replace
  state.optimizer = std::make_shared<optim::SGD>(state.model->parameters(), optim::SGDOptions());
  algo.apply(Event::Init, state, logger);
  ASSERT_EQ(capture->lines.size(), 1u);
  EXPECT_NE(capture->lines[0].find("warning: blurpool: no layer was replaced"), std::string::npos);
}

/// A user's LibTorch network written the usual way: its layers are members, called through their holders.
struct PlainConvNetImpl : torch::nn::Module {
  PlainConvNetImpl()
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 16, 3).padding(1)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 16, 3).stride(2).padding(1)))),
        pool(register_module("pool", torch::nn::MaxPool2d(2))),
        fc(register_module("fc", torch::nn::Linear(16 * 2 * 2, 4))) {}
  at::Tensor forward(const at::Tensor& x) {
    return fc->forward(pool->forward(at::relu(conv2->forward(at::relu(conv1->forward(x))))).flatten(1));
  }
  torch::nn::Conv2d conv1, conv2;
  torch::nn::MaxPool2d pool;
  torch::nn::Linear fc;
};

/// The same network made surgery-ready: the layers live in slots and are called through them.
struct SlottedConvNetImpl : SlottedModule {
  SlottedConvNetImpl() {
    register_slot("conv1", torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 16, 3).padding(1))));
    register_slot("conv2", torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 16, 3).stride(2).padding(1))));
    register_slot("pool", torch::nn::AnyModule(torch::nn::MaxPool2d(2)));
    register_slot("fc", torch::nn::AnyModule(torch::nn::Linear(16 * 2 * 2, 4)));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = at::relu(slot("conv2").forward(at::relu(slot("conv1").forward(x))));
    return slot("fc").forward(slot("pool").forward(h).flatten(1));
  }
};

/// Components for 8x8 RGB images of 4 classes around `model`.
template <class Net>
Components image_run(BlurPoolOptions options = BlurPoolOptions()) {
  Components c = testing::tiny_components();
  c.model = std::make_shared<Classifier<Net>>(std::make_shared<Net>(), 4);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(16).input_shape({3, 8, 8}).num_classes(4).seed(3)), 8);
  c.evaluators.clear();
  c.algorithms = {std::make_shared<BlurPool>(options)};
  return c;
}

TEST(BlurPool, PlainLibTorchModuleIsRefusedSayingItsLayersAreNotInSlots) {
  const std::string msg = testing::input_error_of([] { Trainer t(TrainerOptions(), image_run<PlainConvNetImpl>()); });
  EXPECT_NE(msg.find("blurpool: the model's layers are not in slots, so surgery cannot replace them: 2 layer(s) it "
                     "would replace are ordinary module members (net.conv2 (Conv2d, 16 input channels, stride 2), "
                     "net.pool (MaxPool2d))"),
            std::string::npos)
      << msg;
  for (const char* part : {"tessera::SlottedModule", "register_slot(", "call(\"conv1\", x)",
                           "docs/cpp-own-model.md", "allow_no_change"}) {
    EXPECT_NE(msg.find(part), std::string::npos) << part << " missing from: " << msg;
  }
  // conv1 (stride 1) is not eligible and is not listed.
  EXPECT_EQ(msg.find("net.conv1"), std::string::npos) << msg;
}

TEST(BlurPool, NoEligibleLayerAtAllIsRefusedWithoutBlamingSlots) {
  Components c = testing::tiny_components();  // an MLP
  c.algorithms = {std::make_shared<BlurPool>()};
  const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_NE(msg.find("blurpool: the model has no layer to replace (no strided Conv2d with >= 16 input channels or "
                     "MaxPool2d, in a slot or elsewhere), so it would have no effect; remove it, lower min_channels, "
                     "or set allow_no_change"),
            std::string::npos)
      << msg;
  EXPECT_EQ(msg.find("not in slots"), std::string::npos) << msg;
}

TEST(BlurPool, AllowNoChangeRunsAndWarnsOnAPlainModule) {
  auto capture = std::make_shared<TextCapture>();
  Components c = image_run<PlainConvNetImpl>(BlurPoolOptions().allow_no_change(true));
  c.callbacks = {capture};
  Trainer t(TrainerOptions(), std::move(c));
  const auto& algo = dynamic_cast<const BlurPool&>(*t.engine().algorithms()[0]);
  EXPECT_EQ(algo.counts().convs + algo.counts().maxpools, 0);
  bool warned = false;
  for (const auto& line : capture->lines) warned = warned || line.find("warning: blurpool: no layer was replaced") == 0;
  EXPECT_TRUE(warned);
}

TEST(BlurPool, SlottedModuleLayersAreCountedThenReplaced) {
  auto net = std::make_shared<SlottedConvNetImpl>();
  const BlurPoolCounts dry = count_blurpool(*net, BlurPoolOptions());
  EXPECT_EQ(dry.convs, 1);
  EXPECT_EQ(dry.maxpools, 1);
  EXPECT_TRUE(net->slot("conv2").ptr()->as<torch::nn::Conv2dImpl>() != nullptr) << "a dry run changed the model";
  EXPECT_TRUE(unslotted_blurpool_layers(*net, BlurPoolOptions()).empty());

  Trainer t(TrainerOptions().max_duration(Time::parse("1ba")), image_run<SlottedConvNetImpl>());
  const auto& algo = dynamic_cast<const BlurPool&>(*t.engine().algorithms()[0]);
  EXPECT_EQ(algo.counts().convs, 1);
  EXPECT_EQ(algo.counts().maxpools, 1);
  auto& model = dynamic_cast<Classifier<SlottedConvNetImpl>&>(*t.state().model);
  EXPECT_TRUE(model.net().slot("conv2").ptr()->as<BlurConv2dImpl>() != nullptr);
  EXPECT_TRUE(model.net().slot("pool").ptr()->as<BlurMaxPool2dImpl>() != nullptr);
  t.fit();  // the replaced network trains (same output size)
  EXPECT_TRUE(std::isfinite(t.state().metrics.at("loss/train/total")));
}

}  // namespace
}  // namespace tessera::algorithms
