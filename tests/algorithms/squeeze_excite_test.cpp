// Squeeze-Excite: the block against a hand computation, the latent width rule, surgery counts on the project's
// models (the conv kept, new parameters in the optimizer), composition with blurpool by the declared order, the
// algorithm's spec and plan-time refusal, and a short run.
#include <gtest/gtest.h>

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/squeeze_excite.h>
#include <tessera/surgery.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

TEST(SqueezeExcite, LatentWidthIsACountOrAFraction) {
  EXPECT_EQ(squeeze_excite_latent(64, 256), 64);
  EXPECT_EQ(squeeze_excite_latent(1, 256), 1);
  EXPECT_EQ(squeeze_excite_latent(0.25, 256), 64);
  EXPECT_EQ(squeeze_excite_latent(0.25, 10), 2);   // int(2.5)
  EXPECT_EQ(squeeze_excite_latent(0.01, 10), 1);   // at least one channel
  EXPECT_THROW(squeeze_excite_latent(0, 10), InputError);
}

TEST(SqueezeExcite, BlockMatchesHandComputation) {
  // One example, 2 channels, 1 latent: channel means 2.5 and -1; hidden = relu(1*2.5 + 2*(-1)) = 0.5;
  // gates = sigmoid(2*0.5), sigmoid(-4*0.5) = sigmoid(1), sigmoid(-2).
  const at::Tensor x = at::tensor({1.f, 2.f, 3.f, 4.f, -1.f, -1.f, -1.f, -1.f}).view({1, 2, 2, 2});
  const at::Tensor w1 = at::tensor({1.f, 2.f}).view({1, 2});
  const at::Tensor w2 = at::tensor({2.f, -4.f}).view({2, 1});
  const at::Tensor y = squeeze_excite(x, w1, w2);
  ASSERT_EQ(y.sizes(), x.sizes());
  const float g0 = 1.f / (1.f + std::exp(-1.f)), g1 = 1.f / (1.f + std::exp(2.f));
  for (int i = 0; i < 4; ++i) {
    EXPECT_FLOAT_EQ(y[0][0].flatten()[i].item<float>(), (i + 1) * g0);
    EXPECT_FLOAT_EQ(y[0][1].flatten()[i].item<float>(), -g1);
  }
  // A negative hidden unit is cut by the ReLU: every gate is sigmoid(0) = 1/2.
  const at::Tensor z = squeeze_excite(x, at::tensor({-1.f, 0.f}).view({1, 2}), w2);
  EXPECT_TRUE(at::allclose(z, x * 0.5));
  EXPECT_THROW(squeeze_excite(x, at::ones({1, 3}), w2), c10::Error);
}

TEST(SqueezeExcite, ModuleIsConvThenBlock) {
  at::manual_seed(1);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(4, 6, 3).padding(1));
  SqueezeExciteConv2d wrapped(conv, 3);
  EXPECT_TRUE(wrapped->slot("conv").ptr().get() == conv.ptr().get()) << "the conv itself, in a slot";
  EXPECT_EQ(wrapped->se->fc1->weight.sizes(), (at::IntArrayRef{3, 6}));
  EXPECT_EQ(wrapped->se->fc2->weight.sizes(), (at::IntArrayRef{6, 3}));
  EXPECT_FALSE(wrapped->se->fc1->bias.defined());
  const at::Tensor x = at::randn({2, 4, 5, 5});
  const at::Tensor y = wrapped->forward(x);
  EXPECT_TRUE(at::equal(y, squeeze_excite(conv->forward(x), wrapped->se->fc1->weight, wrapped->se->fc2->weight)));
  const auto keys = wrapped->named_parameters().keys();
  EXPECT_EQ(keys, (std::vector<std::string>{"conv.weight", "conv.bias", "se.fc1.weight", "se.fc2.weight"}));
}

TEST(SqueezeExcite, SurgeryCountsOnResNetAndCnnAndTheOptimizerGetsTheNewParameters) {
  // ResNet-20, width 16: the stem (3->16), stage 1 (6 convs 16->16), stage 2 (16->32, projection 16->32, 5 convs
  // 32->32), stage 3 (32->64, projection 32->64, 5 convs 64->64); eligible when min(in, out) >= min_channels.
  ResNet resnet20(ResNetOptions().depth(20).width(16).in_channels(3).num_classes(10));
  optim::SGD sgd(resnet20.parameters(), optim::SGDOptions().lr(0.1));
  const size_t before = sgd.param_groups().front().params.size();
  EXPECT_EQ(count_squeeze_excite(resnet20, SqueezeExciteOptions()), 0) << "no conv has 128 channels";
  EXPECT_EQ(count_squeeze_excite(resnet20, SqueezeExciteOptions().min_channels(64)), 5);
  EXPECT_EQ(count_squeeze_excite(resnet20, SqueezeExciteOptions().min_channels(32)), 12);
  EXPECT_EQ(count_squeeze_excite(resnet20, SqueezeExciteOptions().min_channels(3)), 21);
  EXPECT_EQ(apply_squeeze_excite(resnet20, SqueezeExciteOptions().min_channels(32).latent_channels(0.25), &sgd), 12);
  EXPECT_EQ(sgd.param_groups().front().params.size(), before + 2 * 12) << "fc1 and fc2 of each block joined the optimizer";
  auto block = resnet20.blocks().back();
  auto se = std::dynamic_pointer_cast<SqueezeExciteConv2dImpl>(block->slot("conv2").ptr());
  ASSERT_NE(se, nullptr);
  EXPECT_EQ(se->se->fc1->weight.size(0), 16) << "0.25 of 64 channels";
  EXPECT_EQ(count_squeeze_excite(resnet20, SqueezeExciteOptions().min_channels(32)), 12)
      << "the convs are still in slots (inside the SE modules)";
  const at::Tensor out = resnet20.forward(Batch(at::randn({2, 3, 8, 8}), at::zeros({2}, at::kLong)));
  EXPECT_EQ(out.sizes(), (at::IntArrayRef{2, 10}));
  CNN cnn(CNNOptions().in_channels(1).num_classes(10).width(16));  // convs 1->16, 16->32, 32->64
  EXPECT_EQ(apply_squeeze_excite(cnn, SqueezeExciteOptions().min_channels(16)), 2);
  EXPECT_NE(cnn.slot("conv3").ptr()->as<SqueezeExciteConv2dImpl>(), nullptr);
  EXPECT_EQ(cnn.slot("conv1").ptr()->as<SqueezeExciteConv2dImpl>(), nullptr);
}

TEST(SqueezeExcite, RunsBeforeBlurPoolWhichThenBlursTheWrappedStridedConvs) {
  SqueezeExcite se(SqueezeExciteOptions().min_channels(16));
  EXPECT_TRUE(se.spec().required_on_load);
  EXPECT_TRUE(se.spec().writes(Resource::OptimizerGroups, Event::Init));
  ASSERT_EQ(se.spec().order.size(), 1u);
  EXPECT_EQ(se.spec().order[0].other.writes, Resource::ModelStructure);  // blurpool among them
  // blurpool listed first in the recipe: the declared order still puts squeeze_excite first.
  Components c = testing::tiny_components();
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(3).num_classes(4).width(16));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(16).input_shape({3, 8, 8}).num_classes(4).seed(3)), 8);
  c.evaluators.clear();
  auto blur = std::make_shared<BlurPool>();
  auto squeeze = std::make_shared<SqueezeExcite>(SqueezeExciteOptions().min_channels(16));
  c.algorithms = {blur, squeeze};
  auto model = std::dynamic_pointer_cast<CNN>(c.model);
  Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));
  EXPECT_EQ(squeeze->replaced(), 2);
  EXPECT_EQ(blur->counts().convs, 1);
  auto conv2 = std::dynamic_pointer_cast<SqueezeExciteConv2dImpl>(model->slot("conv2").ptr());
  ASSERT_NE(conv2, nullptr);
  EXPECT_NE(conv2->slot("conv").ptr()->as<BlurConv2dImpl>(), nullptr) << "SE(blur(conv)) for the strided conv";
  t.fit();
  EXPECT_TRUE(at::isfinite(conv2->se->fc1->weight).all().item<bool>());
  EXPECT_NE(conv2->se->fc1->weight.grad().abs().sum().item<double>(), 0.0) << "the SE block trains";
}

TEST(SqueezeExcite, AlgorithmValidationAndRefusalWithoutEligibleConv) {
  EXPECT_THROW(SqueezeExcite(SqueezeExciteOptions().latent_channels(0)), InputError);
  EXPECT_THROW(SqueezeExcite(SqueezeExciteOptions().min_channels(0)), InputError);
  SqueezeExcite algo;
  EXPECT_EQ(algo.options().latent_channels(), 64);
  EXPECT_EQ(algo.options().min_channels(), 128);
  Components c = testing::tiny_components();
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(3).width(4));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.algorithms = {std::make_shared<SqueezeExcite>()};
  const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_NE(msg.find("squeeze_excite: the model has no Conv2d in a slot with at least 128 input and output channels "
                     "(min_channels), so it would have no effect"),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace tessera::algorithms
