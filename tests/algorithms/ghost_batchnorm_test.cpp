// Ghost BatchNorm: the layer against torch's BatchNorm applied per chunk (outputs, gradients, running statistics,
// bitwise), evaluation equal to BatchNorm, surgery counts on the project's models with the same tensors and keys,
// the algorithm's spec and plan-time refusal, and a short run.
#include <gtest/gtest.h>

#include <tessera/algorithms/ghost_batchnorm.h>
#include <tessera/surgery.h>

#include "support.h"

namespace tessera::algorithms {
namespace {

/// A BatchNorm2d with non-trivial affine parameters and running statistics.
torch::nn::BatchNorm2d make_bn(int64_t channels, std::optional<double> momentum = 0.1) {
  at::manual_seed(3);
  torch::nn::BatchNorm2dOptions options(channels);
  options.momentum() = momentum ? c10::optional<double>(*momentum) : c10::nullopt;
  torch::nn::BatchNorm2d bn(options);
  at::NoGradGuard no_grad;
  bn->weight.uniform_(0.5, 1.5);
  bn->bias.uniform_(-0.5, 0.5);
  bn->running_mean.uniform_(-1, 1);
  bn->running_var.uniform_(0.5, 2);
  return bn;
}

/// A GhostBatchNormLayer made by surgery from a copy of `bn` (its own tensors, equal values).
GhostBatchNormLayer ghost_of(const torch::nn::BatchNorm2d& bn, int64_t ghost_batch_size) {
  auto copy = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(bn->clone());
  auto parent = std::make_shared<SlottedModule>();
  parent->register_slot("bn", torch::nn::AnyModule(torch::nn::BatchNorm2d(copy)));
  EXPECT_EQ(apply_ghost_batchnorm(*parent, GhostBatchNormOptions().ghost_batch_size(ghost_batch_size)), 1);
  auto layer = std::dynamic_pointer_cast<GhostBatchNormLayerImpl>(parent->slot("bn").ptr());
  EXPECT_NE(layer, nullptr);
  EXPECT_TRUE(layer->weight.is_same(copy->weight)) << "the same tensors as the batch norm it replaced";
  EXPECT_TRUE(layer->running_var.is_same(copy->running_var));
  return GhostBatchNormLayer(layer);
}

void expect_same_statistics(const torch::nn::BatchNorm2d& bn, const GhostBatchNormLayer& ghost) {
  EXPECT_TRUE(at::equal(bn->running_mean, ghost->running_mean));
  EXPECT_TRUE(at::equal(bn->running_var, ghost->running_var));
  EXPECT_TRUE(at::equal(bn->num_batches_tracked, ghost->num_batches_tracked));
}

TEST(GhostBatchNorm, ChunkCountIsTheCeiling) {
  EXPECT_EQ(ghost_batch_count(10, 4), 3);
  EXPECT_EQ(ghost_batch_count(8, 4), 2);
  EXPECT_EQ(ghost_batch_count(3, 4), 1);
  EXPECT_EQ(ghost_batch_count(0, 4), 1);
  EXPECT_EQ(ghost_batch_count(128, 32), 4);
}

TEST(GhostBatchNorm, TrainingEqualsBatchNormPerChunkWithMomentumOverChunks) {
  // 10 examples in ghost batches of 4: chunks of 4, 4 and 2 (torch's chunk into 3), momentum 0.1 / 3 each.
  torch::nn::BatchNorm2d bn = make_bn(5);
  GhostBatchNormLayer ghost = ghost_of(bn, 4);
  at::manual_seed(5);
  const at::Tensor x = at::randn({10, 5, 3, 3});
  bn->options.momentum(0.1 / 3);
  std::vector<at::Tensor> parts;
  for (const at::Tensor& chunk : x.chunk(3, 0)) parts.push_back(bn->forward(chunk));
  const at::Tensor expected = at::cat(parts, 0);
  const at::Tensor y = ghost->forward(x);
  ASSERT_EQ(y.sizes(), x.sizes());
  EXPECT_TRUE(at::equal(y, expected));
  expect_same_statistics(bn, ghost);
  EXPECT_EQ(ghost->num_batches_tracked.item<int64_t>(), 3) << "one update per chunk";
  // Gradients of the affine parameters and of the input, bitwise.
  const at::Tensor w = at::randn({10, 5, 3, 3});
  at::Tensor xr = x.clone().requires_grad_(true), xg = x.clone().requires_grad_(true);
  std::vector<at::Tensor> again;
  for (const at::Tensor& chunk : xr.chunk(3, 0)) again.push_back(bn->forward(chunk));
  (at::cat(again, 0) * w).sum().backward();
  (ghost->forward(xg) * w).sum().backward();
  EXPECT_TRUE(at::equal(xr.grad(), xg.grad()));
  EXPECT_TRUE(at::equal(bn->weight.grad(), ghost->weight.grad()));
  EXPECT_TRUE(at::equal(bn->bias.grad(), ghost->bias.grad()));
  // Each chunk is normalised by its own statistics: the output differs from batch norm over the whole batch.
  torch::nn::BatchNorm2d whole = make_bn(5);
  EXPECT_FALSE(at::allclose(whole->forward(x), y));
}

TEST(GhostBatchNorm, CumulativeAverageCountsChunks) {
  // momentum nullopt: torch's cumulative average, 1 / num_batches_tracked at each chunk.
  torch::nn::BatchNorm2d bn = make_bn(3, std::nullopt);
  GhostBatchNormLayer ghost = ghost_of(bn, 2);
  const at::Tensor x = at::randn({6, 3, 2, 2});
  std::vector<at::Tensor> parts;
  for (const at::Tensor& chunk : x.chunk(3, 0)) parts.push_back(bn->forward(chunk));
  EXPECT_TRUE(at::equal(ghost->forward(x), at::cat(parts, 0)));
  expect_same_statistics(bn, ghost);
}

TEST(GhostBatchNorm, SmallBatchIsOneChunkAndEvaluationIsBatchNorm) {
  torch::nn::BatchNorm2d bn = make_bn(4);
  GhostBatchNormLayer ghost = ghost_of(bn, 32);
  const at::Tensor x = at::randn({8, 4, 3, 3});
  EXPECT_TRUE(at::equal(ghost->forward(x), bn->forward(x))) << "8 < 32: one chunk, momentum unchanged";
  expect_same_statistics(bn, ghost);
  bn->eval();
  ghost->eval();
  const at::Tensor z = at::randn({70, 4, 3, 3});
  EXPECT_TRUE(at::equal(ghost->forward(z), bn->forward(z)));
  expect_same_statistics(bn, ghost);
}

TEST(GhostBatchNorm, ReplacesBatchNorm1dAnd3dAndChecksTheInputDimensions) {
  auto net = std::make_shared<SlottedModule>();
  net->register_slot("a", torch::nn::AnyModule(torch::nn::BatchNorm1d(3)));
  net->register_slot("b", torch::nn::AnyModule(torch::nn::BatchNorm3d(3)));
  net->register_slot("c", torch::nn::AnyModule(torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(3).affine(false))));
  net->register_slot("fc", torch::nn::AnyModule(torch::nn::Linear(3, 3)));
  const auto keys_before = net->named_parameters().keys();
  const auto buffers_before = net->named_buffers().keys();
  EXPECT_EQ(count_ghost_batchnorm(*net), 3);
  EXPECT_EQ(apply_ghost_batchnorm(*net, GhostBatchNormOptions().ghost_batch_size(2)), 3);
  EXPECT_EQ(count_ghost_batchnorm(*net), 0) << "a ghost batch norm is not replaced again";
  EXPECT_EQ(net->named_parameters().keys(), keys_before);
  EXPECT_EQ(net->named_buffers().keys(), buffers_before);
  const at::Tensor x2 = at::randn({6, 3}), x3 = at::randn({6, 3, 5}), x5 = at::randn({4, 3, 2, 2, 2});
  EXPECT_EQ(net->slot("a").forward(x2).sizes(), x2.sizes());
  EXPECT_EQ(net->slot("a").forward(x3).sizes(), x3.sizes());
  EXPECT_EQ(net->slot("b").forward(x5).sizes(), x5.sizes());
  EXPECT_EQ(net->slot("c").forward(x2).sizes(), x2.sizes());
  const std::string msg = testing::input_error_of([&] { net->slot("b").forward(x2); });
  EXPECT_NE(msg.find("GhostBatchNormLayer: expected a 5-D input (as the batch norm it replaced), got [6, 3]"),
            std::string::npos)
      << msg;
}

TEST(GhostBatchNorm, SurgeryCountsOnResNetAndCnnKeepTensorsAndOptimizer) {
  ResNet resnet20(ResNetOptions().depth(20).width(16).in_channels(3).num_classes(10));
  const auto params_before = resnet20.named_parameters();
  optim::SGD sgd(resnet20.parameters(), optim::SGDOptions().lr(0.1));
  const int64_t in_optimizer = static_cast<int64_t>(sgd.param_groups().front().params.size());
  // stem + 2 per block (9 blocks) + the projections of stages 2 and 3
  EXPECT_EQ(apply_ghost_batchnorm(resnet20, GhostBatchNormOptions(), &sgd), 21);
  const auto params_after = resnet20.named_parameters();
  ASSERT_EQ(params_after.size(), params_before.size());
  for (const auto& item : params_before) EXPECT_TRUE(params_after[item.key()].is_same(item.value())) << item.key();
  EXPECT_EQ(static_cast<int64_t>(sgd.param_groups().front().params.size()), in_optimizer);
  CNN cnn(CNNOptions().in_channels(1).num_classes(10).width(16));
  EXPECT_EQ(apply_ghost_batchnorm(cnn, GhostBatchNormOptions()), 3);
  EXPECT_NE(cnn.slot("bn2").ptr()->as<GhostBatchNormLayerImpl>(), nullptr);
  MLP mlp(MLPOptions().in_features(4).num_classes(2));
  EXPECT_EQ(count_ghost_batchnorm(mlp), 0);
}

TEST(GhostBatchNorm, AlgorithmSpecValidationAndRefusalWithoutBatchNorm) {
  EXPECT_THROW(GhostBatchNorm(GhostBatchNormOptions().ghost_batch_size(0)), InputError);
  GhostBatchNorm algo;
  EXPECT_EQ(algo.options().ghost_batch_size(), 32);
  EXPECT_TRUE(algo.spec().required_on_load);
  EXPECT_EQ(algo.spec().events(), std::vector<Event>{Event::Init});
  EXPECT_TRUE(algo.spec().writes(Resource::ModelStructure, Event::Init));
  Components c = testing::tiny_components();  // an MLP without batch norm
  c.algorithms = {std::make_shared<GhostBatchNorm>()};
  const std::string msg = testing::input_error_of([&] { Trainer t(TrainerOptions(), std::move(c)); });
  EXPECT_NE(msg.find("ghost_batchnorm: the model has no BatchNorm1d, BatchNorm2d or BatchNorm3d in a slot to "
                     "replace, so it would have no effect"),
            std::string::npos)
      << msg;
}

TEST(GhostBatchNorm, TrainsACnnInGhostBatches) {
  Components c = testing::tiny_components();
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(3).num_classes(4).width(4));
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  c.train_dataloader = testing::loader(
      data::make_synthetic(data::SyntheticOptions().size(32).input_shape({3, 8, 8}).num_classes(4).seed(3)), 8);
  c.evaluators.clear();
  auto algo = std::make_shared<GhostBatchNorm>(GhostBatchNormOptions().ghost_batch_size(4));
  c.algorithms = {algo};
  auto model = std::dynamic_pointer_cast<CNN>(c.model);
  Trainer t(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));
  EXPECT_EQ(algo->replaced(), 3);
  t.fit();
  auto bn1 = std::dynamic_pointer_cast<GhostBatchNormLayerImpl>(model->slot("bn1").ptr());
  ASSERT_NE(bn1, nullptr);
  EXPECT_EQ(bn1->num_batches_tracked.item<int64_t>(), 4 * 2) << "4 batches of 8, two ghost batches each";
  EXPECT_TRUE(at::isfinite(bn1->running_var).all().item<bool>());
}

}  // namespace
}  // namespace tessera::algorithms
