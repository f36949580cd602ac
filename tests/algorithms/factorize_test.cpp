// Factorize: the rank and cost rules, the truncated SVD against a hand computation and the Eckart–Young error, the
// factorized conv and linear against the original layer (exact at full rank), surgery counts on the project's models
// (new parameters in the optimizer, nothing factorized twice), the declared order with squeeze_excite and blurpool,
// and the plan-time refusals.
#include <gtest/gtest.h>

#include <cmath>

#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/factorize.h>
#include <tessera/algorithms/squeeze_excite.h>
#include <tessera/surgery.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

/// The root-sum-square of the singular values of `w` beyond the first `rank`.
double discarded(const at::Tensor& w, int64_t rank) {
  const at::Tensor s = at::linalg_svdvals(w.to(at::kDouble));
  return s.narrow(0, rank, s.size(0) - rank).pow(2).sum().sqrt().item<double>();
}

TEST(Factorize, LatentIsACountOrAFractionOfTheNarrowerSide) {
  EXPECT_EQ(factorize_latent(128, 784, 256), 128);
  EXPECT_EQ(factorize_latent(0.25, 64, 32), 8);    // 0.25 of min(64, 32)
  EXPECT_EQ(factorize_latent(0.25, 3, 16), 1);     // int(0.75) = 0, at least 1
  EXPECT_EQ(factorize_latent(0.3, 10, 100), 3);    // int(3.0000000000000004)
  EXPECT_EQ(factorize_latent(2.9, 10, 10), 2);     // a count is truncated
  EXPECT_THROW(factorize_latent(0, 10, 10), InputError);
  EXPECT_THROW(factorize_latent(0.5, 0, 10), InputError);
}

TEST(Factorize, CostRuleCountsMultiplyAddsPerOutputPosition) {
  // 3x3 conv 256 -> 256 at rank 64: 64 * (2304 + 256) = 163840 < 589824.
  EXPECT_TRUE(factorize_reduces_cost(256, 256, 9, 64));
  // Linear 256 -> 256: rank 128 costs 128 * 512 = 65536, the same as the layer: no saving; rank 127 saves.
  EXPECT_FALSE(factorize_reduces_cost(256, 256, 1, 128));
  EXPECT_TRUE(factorize_reduces_cost(256, 256, 1, 127));
  // Linear 784 -> 256 at rank 128: 133120 < 200704.
  EXPECT_TRUE(factorize_reduces_cost(784, 256, 1, 128));
  EXPECT_THROW(factorize_reduces_cost(4, 4, 0, 1), InputError);
}

TEST(Factorize, MatrixFactorsByHand) {
  // W = diag(4, 1): singular values 4 and 1. Rank 1 keeps 4: first = [2, 0], second = [2, 0]ᵀ (up to a common
  // sign), product diag(4, 0), error 1 (the discarded singular value).
  const at::Tensor w = at::tensor({4.0, 0.0, 0.0, 1.0}, at::kDouble).view({2, 2});
  const auto [first, second] = factorize_matrix(w, 1);
  ASSERT_EQ(first.sizes(), (at::IntArrayRef{1, 2}));
  ASSERT_EQ(second.sizes(), (at::IntArrayRef{2, 1}));
  EXPECT_DOUBLE_EQ(std::abs(first[0][0].item<double>()), 2.0);
  EXPECT_DOUBLE_EQ(first[0][1].item<double>(), 0.0);
  EXPECT_DOUBLE_EQ(std::abs(second[0][0].item<double>()), 2.0);
  EXPECT_DOUBLE_EQ(second[1][0].item<double>(), 0.0);
  EXPECT_TRUE(at::allclose(at::matmul(second, first), at::tensor({4.0, 0.0, 0.0, 0.0}, at::kDouble).view({2, 2})));
  EXPECT_DOUBLE_EQ((w - at::matmul(second, first)).norm().item<double>(), 1.0);
}

TEST(Factorize, MatrixIsExactAtFullRankAndOtherwiseMissesTheDiscardedSingularValues) {
  at::manual_seed(3);
  const at::Tensor w = at::randn({6, 4}, at::kDouble);
  const at::Tensor s = at::linalg_svdvals(w);
  for (int64_t rank = 1; rank <= 4; ++rank) {
    const auto [first, second] = factorize_matrix(w, rank);
    EXPECT_EQ(first.sizes(), (at::IntArrayRef{rank, 4}));
    EXPECT_EQ(second.sizes(), (at::IntArrayRef{6, rank}));
    const double error = (w - at::matmul(second, first)).norm().item<double>();
    EXPECT_NEAR(error, discarded(w, rank), 1e-12) << "rank " << rank;
    // The even split: first·firstᵀ = secondᵀ·second = diag(σ_1..σ_r).
    const at::Tensor diag = at::diag(s.narrow(0, 0, rank));
    EXPECT_TRUE(at::allclose(at::matmul(first, first.t()), diag, 1e-10, 1e-12)) << rank;
    EXPECT_TRUE(at::allclose(at::matmul(second.t(), second), diag, 1e-10, 1e-12)) << rank;
  }
  const auto [first, second] = factorize_matrix(w, 4);
  EXPECT_TRUE(at::allclose(at::matmul(second, first), w, 1e-12, 1e-12)) << "full rank: W itself";
  // float32 in, float32 out (computed in float64).
  const auto [f32, s32] = factorize_matrix(w.to(at::kFloat), 2);
  EXPECT_EQ(f32.scalar_type(), at::kFloat);
  EXPECT_EQ(s32.scalar_type(), at::kFloat);
  EXPECT_THROW(factorize_matrix(w, 0), InputError);
  EXPECT_THROW(factorize_matrix(w, 5), InputError);
  EXPECT_THROW(factorize_matrix(at::ones({4}), 1), InputError);
  EXPECT_THROW(factorize_matrix(at::ones({2, 2}, at::kLong), 1), InputError);
}

TEST(Factorize, ConvFactorsKeepTheGeometryAndEqualTheConvAtFullRank) {
  at::manual_seed(4);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 5, 3).stride(2).padding(1).dilation(1).bias(true));
  const at::Tensor x = at::randn({2, 3, 9, 9});
  const at::Tensor y = conv->forward(x);
  // fan-in 27, 5 outputs: rank 5 is full rank.
  FactorizedConv2d full(*conv, 5);
  auto* first = full->slot("module0").ptr()->as<torch::nn::Conv2dImpl>();
  auto* second = full->slot("module1").ptr()->as<torch::nn::Conv2dImpl>();
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(first->weight.sizes(), (at::IntArrayRef{5, 3, 3, 3}));
  EXPECT_EQ((*first->options.stride())[0], 2);
  EXPECT_FALSE(first->bias.defined());
  EXPECT_EQ(second->weight.sizes(), (at::IntArrayRef{5, 5, 1, 1}));
  EXPECT_TRUE(at::equal(second->bias, conv->bias)) << "the original bias on the second factor";
  const at::Tensor out = full->forward(x);
  ASSERT_EQ(out.sizes(), y.sizes());
  EXPECT_TRUE(at::allclose(out, y, 1e-4, 1e-5));
  EXPECT_EQ(full->named_parameters().keys(), (std::vector<std::string>{"module0.weight", "module1.weight", "module1.bias"}));
  // Rank 2: the conv with the rank-2 approximation of its weight, off by the discarded singular values.
  FactorizedConv2d low(*conv, 2);
  auto* f0 = low->slot("module0").ptr()->as<torch::nn::Conv2dImpl>();
  auto* f1 = low->slot("module1").ptr()->as<torch::nn::Conv2dImpl>();
  const at::Tensor product = at::matmul(f1->weight.view({5, 2}), f0->weight.view({2, 27}));
  const at::Tensor w = conv->weight.view({5, 27});
  EXPECT_NEAR((w - product).norm().item<double>(), discarded(w, 2), 1e-5);
  const at::Tensor approx = at::conv2d(x, product.view({5, 3, 3, 3}), conv->bias, {2, 2}, {1, 1});
  EXPECT_TRUE(at::allclose(low->forward(x), approx, 1e-4, 1e-5));
  EXPECT_THROW(FactorizedConv2d(*conv, 6), InputError);
  torch::nn::Conv2d grouped(torch::nn::Conv2dOptions(4, 4, 3).groups(2));
  EXPECT_THROW(FactorizedConv2d(*grouped, 2), InputError);
}

TEST(Factorize, LinearFactorsEqualTheLayerAtFullRank) {
  at::manual_seed(5);
  torch::nn::Linear linear(7, 4);
  const at::Tensor x = at::randn({3, 7});
  FactorizedLinear full(*linear, 4);
  EXPECT_TRUE(at::allclose(full->forward(x), linear->forward(x), 1e-4, 1e-5));
  FactorizedLinear low(*linear, 1);
  auto* f0 = low->slot("module0").ptr()->as<torch::nn::LinearImpl>();
  auto* f1 = low->slot("module1").ptr()->as<torch::nn::LinearImpl>();
  EXPECT_FALSE(f0->bias.defined());
  EXPECT_TRUE(at::equal(f1->bias, linear->bias));
  const at::Tensor product = at::matmul(f1->weight, f0->weight);
  EXPECT_NEAR((linear->weight - product).norm().item<double>(), discarded(linear->weight, 1), 1e-5);
  EXPECT_TRUE(at::allclose(low->forward(x), at::linear(x, product, linear->bias), 1e-4, 1e-5));
}

TEST(Factorize, SurgeryCountsOnTheProjectsModelsAndTheOptimizerFollows) {
  // ResNet-20, width 16: the stem (3->16), stage 1 (6 convs 16->16), stage 2 (16->32, projection 16->32, 5 convs
  // 32->32), stage 3 (32->64, projection 32->64, 5 convs 64->64), fc 64->10. At latent 0.25 every conv saves
  // multiply-adds; the width threshold decides.
  ResNet resnet20(ResNetOptions().depth(20).width(16).in_channels(3).num_classes(10));
  optim::SGD sgd(resnet20.parameters(), optim::SGDOptions().lr(0.1));
  const size_t before = sgd.param_groups().front().params.size();
  const auto none = count_factorize(resnet20, FactorizeOptions());
  EXPECT_EQ(none.convs + none.linears, 0) << "nothing has 256 channels or features";
  EXPECT_EQ(count_factorize(resnet20, FactorizeOptions().min_channels(64)).convs, 5);
  EXPECT_EQ(count_factorize(resnet20, FactorizeOptions().min_channels(32)).convs, 12);
  EXPECT_EQ(count_factorize(resnet20, FactorizeOptions().min_channels(16)).convs, 20);
  EXPECT_EQ(count_factorize(resnet20, FactorizeOptions().min_channels(3)).convs, 21);
  // A rank of 64 saves on no conv of this network; a rank of 40 only on the 3x3 convs to 64 channels (6).
  EXPECT_EQ(count_factorize(resnet20, FactorizeOptions().min_channels(16).latent_channels(64)).convs, 0);
  EXPECT_EQ(count_factorize(resnet20, FactorizeOptions().min_channels(16).latent_channels(40)).convs, 6);
  EXPECT_EQ(count_factorize(resnet20, FactorizeOptions().min_channels(3).min_features(10).latent_features(8)).linears, 1);
  const auto counts = apply_factorize(resnet20, FactorizeOptions().min_channels(32), &sgd);
  EXPECT_EQ(counts.convs, 12);
  EXPECT_EQ(counts.linears, 0);
  // Each conv (no bias) left one weight in the optimizer and brought two.
  EXPECT_EQ(sgd.param_groups().front().params.size(), before + 12);
  auto block = resnet20.blocks().back();
  auto factorized = std::dynamic_pointer_cast<FactorizedConv2dImpl>(block->slot("conv2").ptr());
  ASSERT_NE(factorized, nullptr);
  EXPECT_EQ(factorized->rank(), 16) << "0.25 of 64 channels";
  EXPECT_TRUE(sgd.contains(factorized->slot("module0").ptr()->as<torch::nn::Conv2dImpl>()->weight));
  const auto again = count_factorize(resnet20, FactorizeOptions().min_channels(3));
  EXPECT_EQ(again.convs, 21 - 12) << "factors are not factorized again";
  const at::Tensor out = resnet20.forward(Batch(at::randn({2, 3, 8, 8}), at::zeros({2}, at::kLong)));
  EXPECT_EQ(out.sizes(), (at::IntArrayRef{2, 10}));
  // The MLP with the defaults: fc1 (784 -> 256) at rank 128; fc2 (256 -> 256) would cost as much as it does; the
  // head has 10 outputs.
  MLP mlp(MLPOptions().in_features(784).num_classes(10));
  const auto linears = apply_factorize(mlp, FactorizeOptions());
  EXPECT_EQ(linears.linears, 1);
  EXPECT_EQ(linears.convs, 0);
  auto fc1 = std::dynamic_pointer_cast<FactorizedLinearImpl>(mlp.slot("fc1").ptr());
  ASSERT_NE(fc1, nullptr);
  EXPECT_EQ(fc1->rank(), 128);
  EXPECT_EQ(mlp.slot("fc2").ptr()->as<FactorizedLinearImpl>(), nullptr);
  // factorize_linears false: none.
  MLP mlp2(MLPOptions().in_features(784).num_classes(10));
  EXPECT_EQ(count_factorize(mlp2, FactorizeOptions().factorize_linears(false)).linears, 0);
}

TEST(Factorize, RunsAfterSqueezeExciteAndBeforeBlurPoolWhateverTheRecipeOrder) {
  Factorize algo(FactorizeOptions().min_channels(16));
  EXPECT_TRUE(algo.spec().required_on_load);
  EXPECT_TRUE(algo.spec().writes(Resource::ModelStructure, Event::Init));
  EXPECT_TRUE(algo.spec().writes(Resource::OptimizerGroups, Event::Init));
  ASSERT_EQ(algo.spec().order.size(), 2u);
  EXPECT_EQ(algo.spec().order[0].other.algorithm, "blurpool");
  EXPECT_EQ(algo.spec().order[1].other.algorithm, "weight_standardization");
  // CNN width 16 on 3 channels: conv1 3->16, conv2 16->32 (stride 2), conv3 32->64.
  Components c = testing::tiny_components();
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(3).num_classes(4).width(16));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(16).input_shape({3, 8, 8}).num_classes(4).seed(3)), 8);
  c.evaluators.clear();
  auto blur = std::make_shared<BlurPool>();
  auto factorize = std::make_shared<Factorize>(FactorizeOptions().min_channels(16));
  auto squeeze = std::make_shared<SqueezeExcite>(SqueezeExciteOptions().min_channels(16).latent_channels(4));
  c.algorithms = {blur, factorize, squeeze};  // the opposite of the declared order
  auto model = std::dynamic_pointer_cast<CNN>(c.model);
  Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));
  std::vector<std::string> init;
  for (const auto& entry : t.plan().at(Event::Init)) init.push_back(entry.algorithm->name());
  EXPECT_EQ(init, (std::vector<std::string>{"squeeze_excite", "factorize", "blurpool"}));
  EXPECT_EQ(factorize->counts().convs, 2);
  EXPECT_EQ(squeeze->replaced(), 2);
  EXPECT_EQ(blur->counts().convs, 1);
  // conv2 = SE(factorized(blur(k x k factor), 1x1 factor)).
  auto se = std::dynamic_pointer_cast<SqueezeExciteConv2dImpl>(model->slot("conv2").ptr());
  ASSERT_NE(se, nullptr);
  auto factors = std::dynamic_pointer_cast<FactorizedConv2dImpl>(se->slot("conv").ptr());
  ASSERT_NE(factors, nullptr);
  EXPECT_EQ(factors->rank(), 4);
  EXPECT_NE(factors->slot("module0").ptr()->as<BlurConv2dImpl>(), nullptr) << "the strided factor is blurred";
  EXPECT_NE(factors->slot("module1").ptr()->as<torch::nn::Conv2dImpl>(), nullptr);
  EXPECT_EQ(se->se->fc1->weight.size(1), 32) << "the gate on the conv's 32 output channels";
  t.fit();
  auto* second = factors->slot("module1").ptr()->as<torch::nn::Conv2dImpl>();
  EXPECT_TRUE(at::isfinite(second->weight).all().item<bool>());
  EXPECT_NE(second->weight.grad().abs().sum().item<double>(), 0.0) << "the factors train";
}

TEST(Factorize, ValidationAndRefusalWhenNothingQualifies) {
  EXPECT_THROW(Factorize(FactorizeOptions().latent_channels(0)), InputError);
  EXPECT_THROW(Factorize(FactorizeOptions().min_features(0)), InputError);
  EXPECT_NE(testing::input_error_of([] { Factorize(FactorizeOptions().factorize_convs(false).factorize_linears(false)); })
                .find("factorize_convs and factorize_linears are both false"),
            std::string::npos);
  Factorize algo;
  EXPECT_EQ(algo.options().min_channels(), 256);
  EXPECT_EQ(algo.options().latent_channels(), 0.25);
  EXPECT_EQ(algo.options().min_features(), 256);
  EXPECT_EQ(algo.options().latent_features(), 128);
  {
    Components c = testing::tiny_components();
    c.model = std::make_shared<CNN>(CNNOptions().in_channels(1).num_classes(3).width(4));
    c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
    c.algorithms = {std::make_shared<Factorize>()};
    const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
    EXPECT_NE(msg.find("factorize: the model has no Conv2d with at least 256 input and output channels (min_channels) "
                       "and no Linear with at least 256 input and output features (min_features) in a slot that "
                       "factorizing would make cheaper, so it would have no effect"),
              std::string::npos)
        << msg;
  }
  {
    // Wide enough but no saving: 256 -> 256 at rank 128 costs what the layer costs.
    Components c = testing::tiny_components();
    c.model = std::make_shared<MLP>(MLPOptions().in_features(16).hidden({256, 256}).num_classes(3));
    c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
    c.algorithms = {std::make_shared<Factorize>(FactorizeOptions().factorize_convs(false).min_features(200))};
    const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
    EXPECT_NE(msg.find("no Linear with at least 200 input and output features (min_features)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1 layer(s) are wide enough, but their rank"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace tessera::algorithms
