// Weight standardization: the standardized weight by hand and its per-channel mean 0 / variance 1, the module against
// a manual convolution with standardized weights (1-, 2- and 3-d, groups, stride, a reflect padding), the same tensors
// and keys, surgery counts with n_last_layers_ignore, the order after blurpool and squeeze-excite, and refusals.
#include <gtest/gtest.h>

#include <torch/nn/functional/padding.h>

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/squeeze_excite.h>
#include <tessera/algorithms/weight_standardization.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

TEST(WeightStandardization, StandardizedWeightByHandAndPerChannelStatistics) {
  // One output channel with values 1..4: mean 2.5, population variance 1.25.
  const at::Tensor w = at::tensor({1.f, 2.f, 3.f, 4.f}).view({1, 1, 2, 2});
  const at::Tensor expected = (w - 2.5f) / std::sqrt(1.25f + 1e-5f);
  EXPECT_TRUE(at::allclose(standardize_weight(w, 1e-5), expected, 1e-6, 1e-7));
  at::manual_seed(0);
  const at::Tensor v = at::randn({8, 3, 3, 3}) * 5 + 2;
  const at::Tensor s = standardize_weight(v, 1e-5);
  ASSERT_EQ(s.sizes(), v.sizes());
  const at::Tensor flat = s.view({8, -1});
  EXPECT_LT(flat.mean(1).abs().max().item<double>(), 1e-5) << "mean 0 per output channel";
  EXPECT_LT((flat.var(1, /*unbiased=*/false) - 1).abs().max().item<double>(), 1e-4) << "variance 1 per output channel";
  EXPECT_THROW(standardize_weight(at::ones({4}), 1e-5), c10::Error);
  EXPECT_THROW(standardize_weight(v, 0.0), c10::Error);
}

TEST(WeightStandardization, ModuleIsTheConvWithStandardizedWeights) {
  at::manual_seed(1);
  namespace F = torch::nn::functional;
  {
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(4, 6, 3).stride(2).padding(1).groups(2));
    WeightStandardizedConv ws(conv->options, conv->weight, conv->bias, weight_standardization_padding(*conv), 1e-5);
    EXPECT_TRUE(ws->weight.is_same(conv->weight)) << "the same tensor";
    EXPECT_TRUE(ws->bias.is_same(conv->bias));
    EXPECT_EQ(ws->named_parameters().keys(), conv->named_parameters().keys());
    const at::Tensor x = at::randn({2, 4, 7, 7});
    const at::Tensor y = ws->forward(x);
    EXPECT_TRUE(at::equal(y, at::conv2d(x, standardize_weight(conv->weight, 1e-5), conv->bias, 2, 1, 1, 2)));
    y.sum().backward();
    EXPECT_TRUE(conv->weight.grad().defined()) << "the gradient reaches the raw weight";
    // Through the standardization: the gradient is orthogonal to a constant shift of each output channel.
    EXPECT_LT(conv->weight.grad().view({6, -1}).sum(1).abs().max().item<double>(), 1e-4);
  }
  {
    torch::nn::Conv1d conv(torch::nn::Conv1dOptions(3, 5, 3).bias(false));
    WeightStandardizedConv ws(conv->options, conv->weight, conv->bias, weight_standardization_padding(*conv), 1e-3);
    const at::Tensor x = at::randn({2, 3, 9});
    EXPECT_TRUE(at::equal(ws->forward(x), at::conv1d(x, standardize_weight(conv->weight, 1e-3))));
  }
  {
    torch::nn::Conv3d conv(torch::nn::Conv3dOptions(2, 3, 2).padding(1));
    WeightStandardizedConv ws(conv->options, conv->weight, conv->bias, weight_standardization_padding(*conv), 1e-5);
    const at::Tensor x = at::randn({1, 2, 4, 4, 4});
    EXPECT_TRUE(at::equal(ws->forward(x), at::conv3d(x, standardize_weight(conv->weight, 1e-5), conv->bias, 1, 1)));
  }
  {
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(2, 3, 3).padding(1).padding_mode(torch::kReflect));
    WeightStandardizedConv ws(conv->options, conv->weight, conv->bias, weight_standardization_padding(*conv), 1e-5);
    const at::Tensor x = at::randn({1, 2, 5, 5});
    const at::Tensor padded = F::pad(x, F::PadFuncOptions({1, 1, 1, 1}).mode(torch::kReflect));
    EXPECT_TRUE(at::equal(ws->forward(x), at::conv2d(padded, standardize_weight(conv->weight, 1e-5), conv->bias)));
  }
}

TEST(WeightStandardization, SurgeryOnResNetIgnoresTheLastConvs) {
  // ResNet-20: the stem, 18 block convs and 2 projections = 21 convs in slots.
  ResNet resnet(ResNetOptions().depth(20).width(4).in_channels(3).num_classes(10));
  optim::SGD sgd(resnet.parameters(), optim::SGDOptions().lr(0.1));
  const auto keys = resnet.named_parameters().keys();
  const std::string before = weights_fingerprint(resnet);
  EXPECT_EQ(count_weight_standardization(resnet, WeightStandardizationOptions()), 21);
  EXPECT_EQ(count_weight_standardization(resnet, WeightStandardizationOptions().n_last_layers_ignore(2)), 19);
  EXPECT_EQ(count_weight_standardization(resnet, WeightStandardizationOptions().n_last_layers_ignore(30)), 0);
  EXPECT_EQ(apply_weight_standardization(resnet, WeightStandardizationOptions().n_last_layers_ignore(2), &sgd), 19);
  EXPECT_EQ(resnet.named_parameters().keys(), keys) << "state-dict keys unchanged";
  EXPECT_EQ(weights_fingerprint(resnet), before);
  EXPECT_EQ(sgd.param_groups().front().params.size(), keys.size()) << "the optimizer holds the same tensors";
  auto last = resnet.blocks().back();
  EXPECT_NE(last->slot("conv1").ptr()->as<torch::nn::Conv2dImpl>(), nullptr) << "ignored (second to last conv)";
  EXPECT_NE(last->slot("conv2").ptr()->as<torch::nn::Conv2dImpl>(), nullptr) << "ignored (last conv)";
  EXPECT_NE(resnet.blocks()[7]->slot("conv2").ptr()->as<WeightStandardizedConvImpl>(), nullptr);
  EXPECT_NE(resnet.slot("conv1").ptr()->as<WeightStandardizedConvImpl>(), nullptr) << "the stem";
  const at::Tensor out = resnet.forward(Batch(at::randn({2, 3, 8, 8}), at::zeros({2}, at::kLong)));
  EXPECT_EQ(out.sizes(), (at::IntArrayRef{2, 10}));
  EXPECT_EQ(count_weight_standardization(resnet, WeightStandardizationOptions()), 2) << "only plain convs count";
}

Components cnn_components(std::vector<std::shared_ptr<Algorithm>> algorithms) {
  Components c = testing::tiny_components();
  at::manual_seed(0);
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(3).num_classes(4).width(16));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(16).input_shape({3, 8, 8}).num_classes(4).seed(3)), 8);
  c.evaluators.clear();
  c.algorithms = std::move(algorithms);
  return c;
}

TEST(WeightStandardization, RunsAfterBlurPoolAndSqueezeExciteAndStandardizesTheConvsTheyWrap) {
  auto ws = std::make_shared<WeightStandardization>();
  auto blur = std::make_shared<BlurPool>();
  auto se = std::make_shared<SqueezeExcite>(SqueezeExciteOptions().min_channels(16));
  Components c = cnn_components({ws, blur, se});  // listed first, ordered last
  auto model = std::dynamic_pointer_cast<CNN>(c.model);
  Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));
  EXPECT_EQ(blur->counts().convs, 1);
  EXPECT_EQ(se->replaced(), 2);
  EXPECT_EQ(ws->replaced(), 3) << "conv1, and the convs inside SE(blur(conv2)) and SE(conv3)";
  auto conv2 = model->slot("conv2").ptr()->as<SqueezeExciteConv2dImpl>();
  ASSERT_NE(conv2, nullptr);
  auto* blurred = conv2->slot("conv").ptr()->as<BlurConv2dImpl>();
  ASSERT_NE(blurred, nullptr);
  auto* standardized = blurred->slot("conv").ptr()->as<WeightStandardizedConvImpl>();
  ASSERT_NE(standardized, nullptr);
  EXPECT_TRUE(standardized->weight.is_same(blurred->conv->weight)) << "the blurred conv's own weight";
  t.fit();
  EXPECT_TRUE(standardized->weight.isfinite().all().item<bool>());
  EXPECT_NE(standardized->weight.grad().abs().sum().item<double>(), 0.0) << "it trains";
}

TEST(WeightStandardization, AlgorithmSpecValidationAndRefusals) {
  EXPECT_THROW(WeightStandardization(WeightStandardizationOptions().n_last_layers_ignore(-1)), InputError);
  EXPECT_THROW(WeightStandardization(WeightStandardizationOptions().eps(0)), InputError);
  WeightStandardization algo;
  EXPECT_EQ(algo.options().n_last_layers_ignore(), 0);
  EXPECT_DOUBLE_EQ(algo.options().eps(), 1e-5);
  EXPECT_TRUE(algo.spec().required_on_load);
  EXPECT_FALSE(algo.spec().writes(Resource::OptimizerGroups)) << "the same parameter tensors";
  ASSERT_EQ(algo.spec().order.size(), 1u);
  EXPECT_EQ(algo.spec().order[0].relation, OrderRule::Relation::After);
  EXPECT_EQ(algo.spec().order[0].other.writes, Resource::ModelStructure) << "after blurpool and squeeze-excite";
  {
    Components c = testing::tiny_components();  // an MLP: no convolution
    c.algorithms = {std::make_shared<WeightStandardization>()};
    const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
    EXPECT_NE(msg.find("weight_standardization: the model has no Conv1d, Conv2d or Conv3d in a slot to standardize, "
                       "so it would have no effect"),
              std::string::npos)
        << msg;
  }
  Components c = cnn_components({std::make_shared<WeightStandardization>(
      WeightStandardizationOptions().n_last_layers_ignore(3))});
  const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_NE(msg.find("to standardize once the last 3 are ignored (n_last_layers_ignore), so it would have no effect; "
                     "remove it from the algorithms or lower n_last_layers_ignore"),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace tessera::algorithms
