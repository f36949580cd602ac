// Low-precision LayerNorm: the surgery keeps the very tensors, changes nothing outside autocast, computes in the
// autocast dtype inside it, and is refused without mixed precision.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <tessera/algorithms/low_precision_layernorm.h>

#include "../../src/amp_compat.h"
#include "low_precision_support.h"

namespace tessera {
namespace {

using algorithms::LowPrecisionLayerNorm;

TEST(LowPrecisionLayerNorm, SurgeryKeepsTheTensorsAndTheOutputsInFp32) {
  auto model = testing::tiny_gpt();
  model->eval();
  const Batch b = testing::tiny_text(4)->get_batch({0, 1, 2, 3});
  // ln1, ln2 of 2 blocks, ln_f.
  testing::expect_surgery_keeps_the_tensors_and_the_outputs(
      *model, b, [](Model& m) { return algorithms::apply_low_precision_layernorm(m); }, 5);
}

TEST(LowPrecisionLayerNorm, UnderAutocastComputesInTheAutocastDtype) {
  const at::Tensor x = at::randn({4, 6}), w = at::randn({6}).requires_grad_(), bias = at::randn({6});
  using compat::set_autocast_enabled;
  set_autocast_enabled(c10::DeviceType::CPU, true);
  compat::set_autocast_dtype(c10::DeviceType::CPU, at::kBFloat16);
  at::Tensor y;
  try {
    y = algorithms::low_precision_layer_norm(x, {6}, w, bias, 1e-5);
  } catch (...) {
    set_autocast_enabled(c10::DeviceType::CPU, false);
    throw;
  }
  EXPECT_TRUE(compat::autocast_enabled(c10::DeviceType::CPU));  // restored after the call
  set_autocast_enabled(c10::DeviceType::CPU, false);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const at::Tensor expected = at::layer_norm(x.to(at::kBFloat16), {6}, w.to(at::kBFloat16), bias.to(at::kBFloat16), 1e-5);
  EXPECT_TRUE(at::equal(y, expected));
  y.sum().backward();
  EXPECT_EQ(w.grad().scalar_type(), at::kFloat);  // the fp32 weight gets its gradient
  // Outside autocast: torch's layer_norm exactly.
  EXPECT_TRUE(at::equal(algorithms::low_precision_layer_norm(x, {6}, w, bias, 1e-5), at::layer_norm(x, {6}, w, bias, 1e-5)));
}

Components gpt_with_low_precision_layernorm() {
  Components c = testing::gpt_components(16);
  c.algorithms.push_back(std::make_shared<LowPrecisionLayerNorm>());
  return c;
}

TEST(LowPrecisionLayerNorm, TrainsUnderAmpAndIsRefusedWithoutIt) {
  testing::expect_trains_under_amp_only(
      gpt_with_low_precision_layernorm, [] { return std::make_shared<LowPrecisionLayerNorm>(); },
      "low_precision_layernorm: the model has no torch::nn::LayerNorm in a slot");
}

}  // namespace
}  // namespace tessera
