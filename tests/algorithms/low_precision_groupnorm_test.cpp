// Low-precision GroupNorm: the surgery keeps the very tensors, changes nothing outside autocast, computes in the
// autocast dtype inside it, and is refused without mixed precision or GroupNorms; the resnet model's GroupNorms.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <tessera/algorithms/low_precision_groupnorm.h>
#include <tessera/models/resnet.h>

#include "../../src/amp_compat.h"
#include "low_precision_support.h"

namespace tessera {
namespace {

using algorithms::LowPrecisionGroupNorm;

std::shared_ptr<ResNet> group_norm_resnet() {
  at::manual_seed(5);
  return std::make_shared<ResNet>(
      ResNetOptions().depth(8).width(4).in_channels(1).num_classes(3).norm("group").groups(2));
}

/// Autocast on the CPU in bf16 for a scope (off again on exit, exceptions included).
class CpuAutocast {
 public:
  CpuAutocast() {
    compat::set_autocast_dtype(c10::DeviceType::CPU, at::kBFloat16);
    compat::set_autocast_enabled(c10::DeviceType::CPU, true);
  }
  ~CpuAutocast() {
    compat::set_autocast_enabled(c10::DeviceType::CPU, false);
    at::autocast::clear_cache();
  }
};

TEST(LowPrecisionGroupNorm, SurgeryKeepsTheTensorsAndTheOutputsInFp32) {
  auto model = group_norm_resnet();
  const Batch b = testing::tiny_data(4)->get_batch({0, 1, 2, 3});
  // The stem's, two in each of 3 blocks, and the projections of stages 2 and 3.
  testing::expect_surgery_keeps_the_tensors_and_the_outputs(
      *model, b, [](Model& m) { return algorithms::apply_low_precision_groupnorm(m); }, 9);
}

TEST(LowPrecisionGroupNorm, UnderAutocastComputesInTheAutocastDtype) {
  const at::Tensor x = at::randn({4, 6, 3, 3}), w = at::randn({6}).requires_grad_(), bias = at::randn({6});
  at::Tensor y;
  {
    const CpuAutocast autocast;
    y = algorithms::low_precision_group_norm(x, 3, w, bias, 1e-5);
    EXPECT_TRUE(compat::autocast_enabled(c10::DeviceType::CPU));  // restored after the call
  }
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const at::Tensor expected = at::group_norm(x.to(at::kBFloat16), 3, w.to(at::kBFloat16), bias.to(at::kBFloat16), 1e-5);
  EXPECT_TRUE(at::equal(y, expected));
  y.sum().backward();
  EXPECT_EQ(w.grad().scalar_type(), at::kFloat);  // the fp32 weight gets its gradient
  // Outside autocast: torch's group_norm exactly.
  EXPECT_TRUE(
      at::equal(algorithms::low_precision_group_norm(x, 3, w, bias, 1e-5), at::group_norm(x, 3, w, bias, 1e-5)));
}

TEST(LowPrecisionGroupNorm, TheResNetsGroupNormsComputeInFp32UnderAutocastAndInBf16AfterTheSurgery) {
  auto model = group_norm_resnet();
  const at::Tensor x = testing::tiny_data(4)->get_batch({0, 1, 2, 3}).input();
  BasicBlock& block = *model->blocks().front();  // conv-GN-ReLU-conv-GN + the input
  const at::Tensor fp32 = block.forward(x.expand({4, 4, 4, 4}).contiguous());
  at::Tensor autocast_output, low_precision_output;
  {
    const CpuAutocast autocast;
    // The convolutions run in bf16; a GroupNorm takes their output up to its weights' fp32 (on LibTorch 1.13 the CPU
    // group_norm refuses a bf16 input with fp32 weights), so the block's sum is fp32.
    autocast_output = block.forward(x.expand({4, 4, 4, 4}).contiguous());
    EXPECT_EQ(algorithms::apply_low_precision_groupnorm(*model), 9);
    low_precision_output = block.forward(x.expand({4, 4, 4, 4}).contiguous());
  }
  EXPECT_EQ(autocast_output.scalar_type(), at::kFloat);
  EXPECT_EQ(low_precision_output.scalar_type(), at::kBFloat16);  // bf16 GroupNorms, bf16 sums
  // Both near the fp32 block (bf16 convolutions: a few parts in a hundred).
  EXPECT_TRUE(at::allclose(autocast_output, fp32, 0.05, 0.05));
  EXPECT_TRUE(at::allclose(low_precision_output.to(at::kFloat), fp32, 0.05, 0.05));
  EXPECT_FALSE(at::equal(low_precision_output.to(at::kFloat), autocast_output));
}

Components resnet_with_low_precision_groupnorm() {
  Components c = testing::tiny_components();
  c.model = group_norm_resnet();
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  c.algorithms.push_back(std::make_shared<LowPrecisionGroupNorm>());
  return c;
}

TEST(LowPrecisionGroupNorm, TrainsUnderAmpAndIsRefusedWithoutIt) {
  testing::expect_trains_under_amp_only(
      resnet_with_low_precision_groupnorm, [] { return std::make_shared<LowPrecisionGroupNorm>(); },
      "low_precision_groupnorm: the model has no torch::nn::GroupNorm in a slot");
}

}  // namespace
}  // namespace tessera
