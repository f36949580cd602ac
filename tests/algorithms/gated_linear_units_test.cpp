// Gated linear units: the surgery (new gated layers, proj kept with its optimizer state), the network it computes, the
// bias options, and refusals.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <tessera/algorithms/gated_linear_units.h>

#include "support.h"

namespace tessera {
namespace {

using algorithms::GatedFeedForward;
using algorithms::GatedLinearUnits;
using algorithms::GatedLinearUnitsOptions;

TEST(GatedLinearUnits, SurgeryReplacesEveryFeedForwardAndKeepsItsProjection) {
  auto model = testing::tiny_gpt();
  auto opt = std::make_shared<optim::AdamW>(model->parameters(), optim::AdamWOptions());
  const at::Tensor proj = model->named_parameters()["blocks.0.mlp.proj.weight"];
  const at::Tensor fc = model->named_parameters()["blocks.0.mlp.fc.weight"];
  EXPECT_EQ(algorithms::apply_gated_linear_units(*model, {}, opt.get()), 2);
  const auto params = model->named_parameters();
  EXPECT_FALSE(params.contains("blocks.0.mlp.fc.weight"));
  EXPECT_FALSE(params.contains("blocks.0.mlp.fc_gated.bias"));  // no biases by default
  EXPECT_EQ(params["blocks.1.mlp.fc_gated.weight"].sizes(), (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(params["blocks.1.mlp.fc_linear.weight"].sizes(), (std::vector<int64_t>{64, 16}));
  EXPECT_TRUE(params["blocks.0.mlp.proj.weight"].is_same(proj));  // the same tensor
  EXPECT_NEAR(params["blocks.0.mlp.fc_gated.weight"].std().item<double>(), 0.02, 0.004);
  EXPECT_TRUE(opt->contains(params["blocks.0.mlp.fc_gated.weight"]));
  EXPECT_TRUE(opt->contains(proj));
  EXPECT_FALSE(opt->contains(fc));
  // Nothing left to replace.
  EXPECT_EQ(algorithms::apply_gated_linear_units(*model, {}, opt.get()), 0);
  auto biased = testing::tiny_gpt();
  algorithms::apply_gated_linear_units(*biased, GatedLinearUnitsOptions().gated_layer_bias(true));
  EXPECT_TRUE(biased->named_parameters().contains("blocks.0.mlp.fc_gated.bias"));
  EXPECT_FALSE(biased->named_parameters().contains("blocks.0.mlp.fc_linear.bias"));
}

TEST(GatedLinearUnits, ComputesProjOfGeluGatedTimesLinear) {
  auto model = testing::tiny_gpt();
  algorithms::apply_gated_linear_units(*model, {});
  auto* glu = dynamic_cast<GatedFeedForward*>(model->blocks()[0]->slot("mlp").ptr().get());
  ASSERT_NE(glu, nullptr);
  const auto p = model->named_parameters();
  const at::Tensor x = at::randn({2, 3, 16});
  const at::Tensor hidden = algorithms::gated_linear_unit(x, p["blocks.0.mlp.fc_gated.weight"], {},
                                                          p["blocks.0.mlp.fc_linear.weight"], {});
  const at::Tensor expected = at::linear(hidden, p["blocks.0.mlp.proj.weight"], p["blocks.0.mlp.proj.bias"]);
  EXPECT_TRUE(at::allclose(glu->forward(x), expected, 1e-6, 1e-7));
  const at::Tensor by_hand = at::gelu(at::linear(x, p["blocks.0.mlp.fc_gated.weight"])) *
                             at::linear(x, p["blocks.0.mlp.fc_linear.weight"]);
  EXPECT_TRUE(at::equal(hidden, by_hand));
  // The model trains with them.
  const Batch b = testing::tiny_text(4)->get_batch({0, 1, 2, 3});
  model->loss(model->forward(b), b).backward();
  EXPECT_GT(p["blocks.0.mlp.fc_gated.weight"].grad().abs().sum().item<double>(), 0.0);
}

TEST(GatedLinearUnits, RefusesAModelWithoutFeedForwardNetworks) {
  const std::string error = testing::input_error_of([] {
    Components c = testing::tiny_components();
    c.algorithms.push_back(std::make_shared<GatedLinearUnits>());
    Trainer trainer(TrainerOptions().threads(1), std::move(c));
  });
  EXPECT_NE(error.find("gated_linear_units: the model has no tessera::FeedForward in a slot"), std::string::npos)
      << error;
  EXPECT_TRUE(GatedLinearUnits().spec().required_on_load);
}

}  // namespace
}  // namespace tessera
