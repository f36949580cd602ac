// ALiBi: the head slopes and the bias, the attention it computes, the surgery (position embedding zeroed, frozen and
// out of the optimizer), training on re-chunked shorter sequences, its order after sequence-length warmup, refusals.
#include <gtest/gtest.h>

#include <cmath>

#include <ATen/ATen.h>

#include <tessera/algorithms/alibi.h>
#include <tessera/algorithms/seq_length_warmup.h>

#include "support.h"

namespace tessera {
namespace {

using algorithms::Alibi;
using algorithms::AlibiOptions;

std::vector<double> values(const at::Tensor& t) {
  std::vector<double> out;
  for (int64_t i = 0; i < t.numel(); ++i) out.push_back(t[i].item<double>());
  return out;
}

TEST(Alibi, SlopesAndBiasFollowThePaper) {
  EXPECT_EQ(values(alibi_slopes(4, at::TensorOptions())),
            (std::vector<double>{std::pow(2, -2), std::pow(2, -4), std::pow(2, -6), std::pow(2, -8)}));
  const std::vector<double> eight = values(alibi_slopes(8, at::TensorOptions()));
  EXPECT_EQ(eight.front(), 0.5);
  EXPECT_EQ(eight.back(), std::pow(2, -8));
  // 6 heads: the slopes of 4 heads, then every other slope of 8 heads (2^-1, 2^-3).
  EXPECT_EQ(values(alibi_slopes(6, at::TensorOptions())),
            (std::vector<double>{std::pow(2, -2), std::pow(2, -4), std::pow(2, -6), std::pow(2, -8), std::pow(2, -1),
                                 std::pow(2, -3)}));
  // 2 heads: slopes 2^-4, 2^-8; entry (h, i, j) = -m_h |i - j|, symmetric (bidirectional attention reads it all).
  const at::Tensor bias = alibi_bias(2, 3, at::TensorOptions());
  ASSERT_EQ(bias.sizes(), (std::vector<int64_t>{2, 3, 3}));
  EXPECT_EQ(bias[0][2][0].item<double>(), -2 * std::pow(2, -4));
  EXPECT_EQ(bias[1][2][1].item<double>(), -std::pow(2, -8));
  EXPECT_EQ(bias[0][1][1].item<double>(), 0.0);
  EXPECT_TRUE(at::equal(bias, bias.transpose(1, 2)));
}

TEST(Alibi, AttentionAddsTheBiasBeforeTheCausalSoftmax) {
  at::manual_seed(1);
  SelfAttention attention(8, 2);
  attention.set_alibi(true);
  const at::Tensor x = at::randn({3, 5, 8});
  const at::Tensor expected = testing::attention_by_hand(attention, x);
  EXPECT_TRUE(at::allclose(attention.forward(x), expected, 1e-5, 1e-6));
  attention.set_alibi(false);
  EXPECT_FALSE(at::allclose(attention.forward(x), expected, 1e-3, 1e-3));
}

TEST(Alibi, SurgeryZeroesAndFreezesThePositionEmbeddingAndTurnsEveryAttentionOn) {
  auto model = testing::tiny_gpt();
  auto opt = std::make_shared<optim::AdamW>(model->parameters(), optim::AdamWOptions());
  const at::Tensor position = model->named_parameters()["pos_embed.weight"];
  const auto counts = algorithms::apply_alibi(*model, opt.get());
  EXPECT_EQ(counts.attentions, 2);
  EXPECT_EQ(counts.position_embeddings, 1);
  EXPECT_EQ(position.abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(position.requires_grad());
  EXPECT_FALSE(opt->contains(position));
  for (const auto& block : model->blocks()) {
    EXPECT_TRUE(block->slot("attn").ptr()->as<SelfAttention>() != nullptr);
    EXPECT_TRUE(dynamic_cast<SelfAttention*>(block->slot("attn").ptr().get())->alibi());
  }
  // The state-dict keys stay; a second application changes nothing.
  EXPECT_TRUE(model->named_parameters().contains("pos_embed.weight"));
  const auto again = algorithms::apply_alibi(*model, opt.get());
  EXPECT_EQ(again.attentions, 2);
  EXPECT_EQ(opt->param_groups().front().params.size(), model->parameters().size() - 1);
}

/// The shape of every microbatch trained, and of every evaluation batch.
class Shapes : public Callback {
 public:
  std::string name() const override { return "shapes"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::BeforeForward) train.push_back(c10::str(s.batch.input().sizes()));
    if (event == Event::EvalBeforeForward) eval.push_back(c10::str(s.batch.input().sizes()));
  }
  std::vector<std::string> train, eval;
};

TEST(Alibi, TrainsOnShorterSequencesAndEvaluatesAtFullLength) {
  Components c = testing::gpt_components(16);
  Evaluator ev;
  ev.label = "eval";
  ev.dataloader = testing::loader(testing::tiny_text(8), 8, false);
  ev.metrics = {std::make_shared<Accuracy>(1)};
  c.evaluators.push_back(ev);
  c.algorithms.push_back(std::make_shared<Alibi>(AlibiOptions().train_sequence_length_scaling(0.25)));
  auto shapes = std::make_shared<Shapes>();
  c.callbacks.push_back(shapes);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));
  trainer.fit();
  EXPECT_EQ(shapes->train, (std::vector<std::string>{"[32, 2]", "[32, 2]"}));  // 64 tokens in rows of 8 * 0.25
  EXPECT_EQ(shapes->eval, std::vector<std::string>{"[8, 8]"});
  EXPECT_EQ(trainer.state().timestamp.token, 128);  // counted as the data gave them
}

TEST(Alibi, RunsAfterSequenceLengthWarmupWhateverTheRecipeOrder) {
  Components c = testing::gpt_components(16);
  c.algorithms = {std::make_shared<Alibi>(AlibiOptions().train_sequence_length_scaling(0.5)),
                  std::make_shared<algorithms::SeqLengthWarmup>(
                      algorithms::SeqLengthWarmupOptions().min_seq_length(4).step_size(4).duration(0.5).truncate(true))};
  auto shapes = std::make_shared<Shapes>();
  c.callbacks.push_back(shapes);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  trainer.fit();
  // Warmup: 4, 4, 8, 8 of 8 tokens (one step of 4 after 2 batches); then ALiBi halves them (first, the rows would
  // all be 4 long).
  EXPECT_EQ(shapes->train, (std::vector<std::string>{"[16, 2]", "[16, 2]", "[16, 4]", "[16, 4]"}));
}

TEST(Alibi, RefusesAModelWithoutItsAttention) {
  const std::string error = testing::input_error_of([] {
    Components c = testing::tiny_components();
    c.algorithms.push_back(std::make_shared<Alibi>());
    Trainer trainer(TrainerOptions().threads(1), std::move(c));
  });
  EXPECT_NE(error.find("alibi: the model has no tessera::SelfAttention (the attention of the gpt model"),
            std::string::npos)
      << error;
  EXPECT_TRUE(Alibi().spec().required_on_load);
  EXPECT_FALSE(Alibi(AlibiOptions().train_sequence_length_scaling(1)).spec().acts_on(Event::AfterDataloader));
}

}  // namespace
}  // namespace tessera
