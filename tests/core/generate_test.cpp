// Text generation: greedy and sampled next tokens, the context window, the gpt model's key/value cache (against the
// whole forward, with the surgeries inside its blocks), stopping at an end token, and the generate callback in a
// training run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include <ATen/ATen.h>

#include <tessera/algorithms/alibi.h>
#include <tessera/algorithms/factorize.h>
#include <tessera/algorithms/gated_linear_units.h>
#include <tessera/algorithms/low_precision_layernorm.h>
#include <tessera/algorithms/stochastic_depth.h>
#include <tessera/callbacks/generate.h>
#include <tessera/data/tokenizer.h>
#include <tessera/models/generate.h>

#include "support.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

/// A language model with fixed next-token logits: after token t it gives `scores` shifted to start at t + 1
/// (so greedy decoding counts up), at every position. Records the length of each input it was given.
class ShiftModel : public Model {
 public:
  ShiftModel(int64_t vocab, std::vector<double> scores) : vocab_(vocab), scores_(std::move(scores)) {
    register_parameter("unused", at::zeros({1}));
  }
  at::Tensor forward(const Batch& batch) override {
    const at::Tensor ids = batch.input();
    widths.push_back(ids.size(1));
    at::Tensor out = at::full({ids.size(0), vocab_, ids.size(1)}, -1e9, at::kDouble);
    for (int64_t n = 0; n < ids.size(0); ++n) {
      for (int64_t s = 0; s < ids.size(1); ++s) {
        const int64_t t = ids[n][s].item<int64_t>();
        for (size_t k = 0; k < scores_.size(); ++k) out[n][(t + 1 + static_cast<int64_t>(k)) % vocab_][s] = scores_[k];
      }
    }
    return out.to(at::kFloat);
  }
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch, Reduction r) override {
    return cross_entropy(outputs, batch.target(), r);
  }
  int64_t num_classes() const override { return vocab_; }
  std::vector<int64_t> widths;

 private:
  int64_t vocab_;
  std::vector<double> scores_;
};

/// An attention of one's own: the identity (for a GPT block's "attn" slot).
struct IdentityAttentionImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) { return x; }
};
TORCH_MODULE(IdentityAttention);

at::Tensor ids(std::vector<std::vector<int64_t>> rows) {
  at::Tensor out = at::empty({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())}, at::kLong);
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t c = 0; c < rows[r].size(); ++c) out[r][c] = rows[r][c];
  return out;
}

/// How often each token follows `prompt` over `rows` rows, one token each.
std::vector<double> frequencies(Model& model, int64_t vocab, int64_t rows, const GenerateOptions& o) {
  const at::Tensor out = generate(model, at::zeros({rows, 1}, at::kLong), GenerateOptions(o).max_new_tokens(1));
  std::vector<double> f(static_cast<size_t>(vocab), 0);
  for (int64_t r = 0; r < rows; ++r) f[out[r][1].item<int64_t>()] += 1.0 / static_cast<double>(rows);
  return f;
}

TEST(Generate, GreedyTakesTheMostLikelyTokenEachStep) {
  ShiftModel model(10, {5, 1});
  model.train();
  const at::Tensor out = generate(model, ids({{3, 4}, {8, 9}}), GenerateOptions().max_new_tokens(4).temperature(0));
  EXPECT_TRUE(at::equal(out, ids({{3, 4, 5, 6, 7, 8}, {8, 9, 0, 1, 2, 3}})));
  EXPECT_TRUE(model.is_training());  // the mode is restored
  EXPECT_EQ(model.widths, (std::vector<int64_t>{2, 3, 4, 5}));  // the whole context each step
  EXPECT_FALSE(out.requires_grad());
}

TEST(Generate, TheModelSeesTheLastMaxContextTokens) {
  ShiftModel model(10, {5});
  const at::Tensor out =
      generate(model, ids({{1, 2, 3, 4, 5}}), GenerateOptions().max_new_tokens(3).temperature(0).max_context(3));
  EXPECT_TRUE(at::equal(out, ids({{1, 2, 3, 4, 5, 6, 7, 8}})));
  EXPECT_EQ(model.widths, (std::vector<int64_t>{3, 3, 3}));
  // The gpt model's context is its max_seq_length: a prompt longer than that still generates.
  auto gpt = testing::tiny_gpt(16, 4);
  const at::Tensor long_prompt = at::arange(7, at::kLong).unsqueeze(0);
  const at::Tensor g = generate(*gpt, long_prompt, GenerateOptions().max_new_tokens(5));
  EXPECT_EQ(g.sizes(), (std::vector<int64_t>{1, 12}));
  EXPECT_TRUE(at::equal(g.narrow(1, 0, 7), long_prompt));
  EXPECT_GE(g.min().item<int64_t>(), 0);
  EXPECT_LT(g.max().item<int64_t>(), 16);
}

TEST(Generate, TheSameSeedGivesTheSameTokens) {
  auto gpt = testing::tiny_gpt(16, 8);
  const at::Tensor prompt = ids({{1, 2}, {3, 4}});
  const auto o = GenerateOptions().max_new_tokens(20).seed(7);
  const at::Tensor a = generate(*gpt, prompt, o);
  EXPECT_TRUE(at::equal(a, generate(*gpt, prompt, o)));
  EXPECT_FALSE(at::equal(a, generate(*gpt, prompt, GenerateOptions(o).seed(8))));
  // Generation draws from its own generator: torch's global one is untouched.
  at::manual_seed(5);
  const at::Tensor expected = at::rand({3});
  at::manual_seed(5);
  generate(*gpt, prompt, o);
  EXPECT_TRUE(at::equal(at::rand({3}), expected));
}

TEST(Generate, TheKeyValueCacheGivesTheLastPositionsOfTheWholeForward) {
  // Plain, with ALiBi, with gated linear units and factorized layers (surgery inside the blocks), with low-precision
  // LayerNorms (fp32 here: the replaced layers), and with stochastic depth's gates (evaluation scales each update).
  for (const std::string variant : {"plain", "alibi", "glu+factorize", "low_precision_layernorm", "stochastic_depth"}) {
    SCOPED_TRACE(variant);
    auto gpt = testing::tiny_gpt(16, 8);
    if (variant == "alibi") algorithms::apply_alibi(*gpt);
    if (variant == "glu+factorize") {
      algorithms::apply_gated_linear_units(*gpt, algorithms::GatedLinearUnitsOptions());
      algorithms::apply_factorize(*gpt, algorithms::FactorizeOptions().min_features(8).latent_features(4));
    }
    if (variant == "low_precision_layernorm") {
      ASSERT_EQ(algorithms::apply_low_precision_layernorm(*gpt), 5);  // two per block and the final one
    }
    if (variant == "stochastic_depth") algorithms::apply_stochastic_depth(*gpt, algorithms::StochasticDepthOptions().drop_rate(0.5));
    gpt->eval();
    at::manual_seed(1);
    const at::Tensor tokens = at::randint(16, {3, 8}, at::kLong);
    Batch whole;
    whole.set(Batch::kInput, tokens);
    const at::Tensor expected = gpt->forward(whole);
    ASSERT_TRUE(gpt->supports_kv_cache());
    KVCache cache;
    std::vector<at::Tensor> parts;
    for (const auto& [from, count] : std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {3, 1}, {4, 1}, {5, 3}}) {
      parts.push_back(gpt->forward_cached(tokens.narrow(1, from, count), cache));
      EXPECT_EQ(cache.length, from + count);
    }
    const at::Tensor got = at::cat(parts, 2);
    ASSERT_EQ(got.sizes(), expected.sizes());
    Batch prompt;
    prompt.set(Batch::kInput, tokens.narrow(1, 0, 3));
    EXPECT_TRUE(at::equal(parts[0], gpt->forward(prompt))) << "the prompt: forward's own computation";
    EXPECT_TRUE(at::allclose(got, expected, 1e-5, 1e-5)) << (got - expected).abs().max().item<double>();
    ASSERT_EQ(cache.keys.size(), 2u);
    EXPECT_EQ(cache.keys[1].sizes(), (std::vector<int64_t>{3, 2, 8, 8}));  // [N, H, length, D/H]
  }
}

TEST(Generate, TheKeyValueCacheGivesTheTokensOfTheWholeWindowAndIsRefusedWhereItCannotServe) {
  auto gpt = testing::tiny_gpt(16, 8);
  const at::Tensor prompt = ids({{1, 2, 3}, {4, 5, 6}});
  // 12 new tokens: the cache serves up to 8, the window takes over past the context.
  for (const auto& o : {GenerateOptions().max_new_tokens(12).temperature(0), GenerateOptions().max_new_tokens(12).seed(3),
                        GenerateOptions().max_new_tokens(4).max_context(5).seed(4)}) {
    EXPECT_TRUE(at::equal(generate(*gpt, prompt, o), generate(*gpt, prompt, GenerateOptions(o).kv_cache(false))));
  }
  gpt->train();
  KVCache cache;
  EXPECT_THAT(testing::input_error_of([&] { gpt->forward_cached(prompt, cache); }),
              HasSubstr("forward_cached runs in evaluation mode"));
  gpt->eval();
  gpt->forward_cached(at::zeros({2, 6}, at::kLong), cache);
  EXPECT_THAT(testing::input_error_of([&] { gpt->forward_cached(prompt, cache); }),
              HasSubstr("input of shape [2, 3] and type Long after 6 cached tokens; expected integer token ids [N, S] "
                        "with 1 <= S <= max_seq_length - cached tokens = 2"));
  EXPECT_THAT(testing::input_error_of([&] { gpt->forward_cached(at::zeros({3, 1}, at::kLong), cache); }),
              HasSubstr("the key/value cache holds 2 blocks of 2 rows; expected 2 blocks of the 3 rows"));
  // An attention replaced by another module has no cache: generate runs the window, forward_cached refuses.
  gpt->blocks()[1]->replace_slot("attn", torch::nn::AnyModule(IdentityAttention()));
  EXPECT_FALSE(gpt->supports_kv_cache());
  EXPECT_EQ(generate(*gpt, prompt, GenerateOptions().max_new_tokens(2)).size(1), 5);
  KVCache fresh;
  EXPECT_THAT(testing::input_error_of([&] { gpt->forward_cached(prompt, fresh); }),
              HasSubstr("a block's attention is not a tessera::SelfAttention"));
}

TEST(Generate, SamplesFromTheTemperedFilteredSoftmax) {
  // After token 0: p(1) = 1/2, p(2) = p(3) = 1/4, the rest 0.
  const double l = std::log(0.25);
  ShiftModel model(8, {std::log(0.5), l, l});
  const int64_t rows = 4000;
  const double tol = 0.03;  // > 4 standard deviations of a frequency of 4000 draws
  auto f = frequencies(model, 8, rows, GenerateOptions());
  EXPECT_NEAR(f[1], 0.5, tol);
  EXPECT_NEAR(f[2], 0.25, tol);
  EXPECT_NEAR(f[3], 0.25, tol);
  // Temperature 0.5 squares the probabilities: 4/6, 1/6, 1/6.
  f = frequencies(model, 8, rows, GenerateOptions().temperature(0.5));
  EXPECT_NEAR(f[1], 4.0 / 6, tol);
  EXPECT_NEAR(f[2], 1.0 / 6, tol);
  // top_k 2 keeps tokens 1 and 2 (a tie with 3 goes to the lower id): 2/3, 1/3.
  f = frequencies(model, 8, rows, GenerateOptions().top_k(2));
  EXPECT_NEAR(f[1], 2.0 / 3, tol);
  EXPECT_NEAR(f[2], 1.0 / 3, tol);
  EXPECT_EQ(f[3], 0);
  // top_p 0.6: 1/2 is not enough, 1/2 + 1/4 is: the same two tokens.
  f = frequencies(model, 8, rows, GenerateOptions().top_p(0.6));
  EXPECT_NEAR(f[1], 2.0 / 3, tol);
  EXPECT_EQ(f[3], 0);
  // top_p 0.5 and top_k 1 keep only the most likely token.
  EXPECT_NEAR(frequencies(model, 8, 200, GenerateOptions().top_p(0.5))[1], 1.0, 1e-9);
  EXPECT_NEAR(frequencies(model, 8, 200, GenerateOptions().top_k(1))[1], 1.0, 1e-9);
  EXPECT_EQ(f[0] + f[4] + f[5] + f[6] + f[7], 0);
}

TEST(Generate, ARowStopsAtTheEndTokenAndTheRunWhenAllHave) {
  ShiftModel model(10, {5});
  const at::Tensor out =
      generate(model, ids({{0}, {1}}), GenerateOptions().max_new_tokens(8).temperature(0).eos_token(3));
  EXPECT_TRUE(at::equal(out, ids({{0, 1, 2, 3}, {1, 2, 3, 3}})));
}

TEST(Generate, EosTextIsTheIdOfItsOneTokenInTheTokenizerOrInBytes) {
  // Bytes: one byte is one token.
  EXPECT_EQ(resolve_eos_text(GenerateOptions().eos_text("\n"), nullptr).eos_token(), 10);
  EXPECT_EQ(resolve_eos_text(GenerateOptions().eos_text("\n"), nullptr).eos_text(), "");
  EXPECT_EQ(resolve_eos_text(GenerateOptions().eos_token(7), nullptr).eos_token(), 7) << "nothing to resolve";
  // A tokenizer: its added token, and a word its merges make one token.
  const auto tokenizer = data::Tokenizer::train(
      {"the cat the cat the cat"},
      data::TokenizerTrainOptions().vocab_size(262).special_tokens({"<|endoftext|>"}).single_template("$A <|endoftext|>"));
  const int64_t eot = tokenizer.encode("<|endoftext|>").at(0);
  EXPECT_EQ(resolve_eos_text(GenerateOptions().eos_text("<|endoftext|>"), &tokenizer).eos_token(), eot);
  EXPECT_EQ(tokenizer.suffix_ids(), std::vector<int64_t>{eot}) << "the template's document end";
  const int64_t merged = tokenizer.vocab_size() - 1;  // the last merge's token
  const std::string merged_text = tokenizer.decode({merged});
  ASSERT_EQ(tokenizer.encode(merged_text), std::vector<int64_t>{merged}) << merged_text;
  EXPECT_EQ(resolve_eos_text(GenerateOptions().eos_text(merged_text), &tokenizer).eos_token(), merged);
  // Refused: more than one token (named), both ways of giving it, and generate given the text itself.
  EXPECT_THAT(testing::input_error_of([] { resolve_eos_text(GenerateOptions().eos_text("ab"), nullptr); }),
              HasSubstr("generate.eos_text: \"ab\" is 2 tokens in bytes (97 \"a\", 98 \"b\"); expected the text of "
                        "one token"));
  EXPECT_THAT(testing::input_error_of(
                  [&] { resolve_eos_text(GenerateOptions().eos_text("<|endoftext|>"), nullptr); }),
              HasSubstr("is 13 tokens in bytes"));
  EXPECT_THAT(testing::input_error_of([] { resolve_eos_text(GenerateOptions().eos_text("x").eos_token(3), nullptr); }),
              HasSubstr("eos_token 3 and eos_text \"x\" are both given"));
  ShiftModel model(300, {5});
  EXPECT_THAT(testing::input_error_of([&] { generate(model, ids({{1}}), GenerateOptions().eos_text("\n")); }),
              HasSubstr("resolve_eos_text(options, tokenizer)"));
  // The generate callback resolves it when it is made (before step 1).
  callbacks::GenerateCallbackOptions two_bytes;
  two_bytes.prompts({"a"}).eos_text("ab");
  EXPECT_THAT(testing::input_error_of([&] { callbacks::Generate{two_bytes}; }), HasSubstr("\"ab\" is 2 tokens"));
}

TEST(Generate, BadPromptsOptionsAndModelsAreRefused) {
  ShiftModel model(10, {5});
  auto message = [&](const at::Tensor& prompt, const GenerateOptions& o) {
    try {
      generate(model, prompt, o);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  EXPECT_THAT(message(at::zeros({1, 3}), {}), HasSubstr("expected integer token ids [N, P]"));
  EXPECT_THAT(message(at::zeros({3}, at::kLong), {}), HasSubstr("expected integer token ids [N, P]"));
  EXPECT_THAT(message(at::zeros({1, 0}, at::kLong), {}), HasSubstr("expected integer token ids [N, P]"));
  EXPECT_THAT(message(ids({{2, 10}}), {}), HasSubstr("the prompt holds token 10; expected ids in [0, 10)"));
  EXPECT_THAT(message(ids({{2}}), GenerateOptions().eos_token(10)), HasSubstr("generate.eos_token: 10"));
  EXPECT_THAT(message(ids({{2}}), GenerateOptions().top_p(0)), HasSubstr("top_p"));
  EXPECT_THAT(message(ids({{2}}), GenerateOptions().max_new_tokens(0)), HasSubstr("max_new_tokens"));
  // A classifier's outputs [N, C] are not next-token logits.
  struct Classifier : ShiftModel {
    Classifier() : ShiftModel(10, {5}) {}
    at::Tensor forward(const Batch& b) override { return ShiftModel::forward(b).select(2, -1); }
  } classifier;
  try {
    generate(classifier, ids({{1, 2}}), {});
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("the model gave outputs of shape [1, 10] for token ids of shape [1, 2]; expected "
                                    "next-token logits [N, vocab, S] = [1, 10, 2]"));
  }
}

TEST(Generate, BytesAndTextRoundTrip) {
  const std::string text("a\0\xff\n", 4);
  const at::Tensor b = text_to_bytes(text);
  EXPECT_TRUE(at::equal(b, ids({{97, 0, 255, 10}})[0]));
  EXPECT_EQ(bytes_to_text(b), text);
  EXPECT_THROW(bytes_to_text(ids({{256}})), InputError);
}

// ------------------------------------------------------------------------------------------------ the callback

Components byte_gpt_components() {
  Components c;
  c.model = testing::tiny_gpt(256, 8);
  c.train_dataloader = testing::loader(testing::tiny_text(48, 8, 256), 8);  // 6 batches an epoch
  c.optimizer = std::make_shared<optim::AdamW>(c.model->parameters(), optim::AdamWOptions().lr(0.01));
  return c;
}

callbacks::GenerateCallbackOptions two_prompts() {
  callbacks::GenerateCallbackOptions o;
  o.prompts({"ab", "\"q\"\n"}).interval(Time::parse("4ba"));
  o.max_new_tokens(6);
  return o;
}

TEST(GenerateCallback, GeneratesEveryIntervalAndAtTheEndWithoutChangingTraining) {
  Components plain = byte_gpt_components();
  Trainer reference(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(plain));
  reference.fit();

  Components c = byte_gpt_components();
  auto generate_cb = std::make_shared<callbacks::Generate>(two_prompts());
  auto recording = std::make_shared<testing::RecordingDestination>();
  c.callbacks = {generate_cb, recording};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("2ep")).threads(1), std::move(c));
  trainer.fit();
  EXPECT_EQ(weights_fingerprint(*trainer.state().model), weights_fingerprint(*reference.state().model));

  std::vector<std::string> lines;
  for (const auto& t : recording->texts)
    if (t.find("generate @") != std::string::npos) lines.push_back(t);
  // Batches 4, 8 and 12 (the last: FitEnd does not repeat it), two prompts each.
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_THAT(lines[0], HasSubstr("info:generate @ 0ep 4ba: \"ab\" -> \""));
  EXPECT_THAT(lines[1], HasSubstr("generate @ 0ep 4ba: \"\\\"q\\\"\\n\" -> \""));
  EXPECT_THAT(lines[4], HasSubstr("generate @ 1ep 12ba: \"ab\""));  // the epoch ends after its last batch
  ASSERT_EQ(generate_cb->last().size(), 2u);
  EXPECT_EQ(generate_cb->last()[0].substr(0, 2), "ab");
  EXPECT_EQ(generate_cb->last()[0].size(), 8u);
  // The last generation is the trained model's, with the callback's seed.
  const at::Tensor again = generate(*trainer.state().model, text_to_bytes("ab").unsqueeze(0), two_prompts());
  EXPECT_EQ(bytes_to_text(again[0]), generate_cb->last()[0]);
}

TEST(GenerateCallback, AnEpochIntervalGeneratesAtEpochEnds) {
  Components c = byte_gpt_components();
  auto o = two_prompts();
  o.interval(Time::parse("1ep")).prompts({"x"});
  auto recording = std::make_shared<testing::RecordingDestination>();
  c.callbacks = {std::make_shared<callbacks::Generate>(o), recording};
  Trainer trainer(TrainerOptions().max_duration(Time::parse("15ba")).threads(1), std::move(c));
  trainer.fit();
  std::vector<std::string> at;
  for (const auto& t : recording->texts)
    if (t.find("generate @") != std::string::npos) at.push_back(t.substr(0, t.find(':', 6)));
  // Epoch ends at batches 6 and 12, then the end of training at 15.
  EXPECT_EQ(at, (std::vector<std::string>{"info:generate @ 1ep 6ba", "info:generate @ 2ep 12ba",
                                          "info:generate @ 2ep 15ba"}));
}

TEST(GenerateCallback, WhatCannotGenerateIsRefusedBeforeStepOne) {
  auto refusal = [](Components c, const callbacks::GenerateCallbackOptions& o) {
    c.callbacks = {std::make_shared<callbacks::Generate>(o)};
    Trainer trainer(TrainerOptions().max_duration(Time::parse("1ep")).threads(1), std::move(c));
    try {
      trainer.fit();
    } catch (const InputError& e) {
      EXPECT_EQ(trainer.state().timestamp.batch, 0);
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  // A classifier over 3 classes.
  EXPECT_THAT(refusal(testing::tiny_components(), two_prompts()),
              HasSubstr("the model's vocabulary has 3 tokens (Model::num_classes); expected the byte-level vocabulary"));
  // A language model over 16 tokens.
  EXPECT_THAT(refusal(testing::gpt_components(), two_prompts()), HasSubstr("vocabulary has 16 tokens"));
  auto empty = two_prompts();
  empty.prompts({});
  EXPECT_THROW(callbacks::Generate{empty}, InputError);
  empty.prompts({"a", ""});
  EXPECT_THROW(callbacks::Generate{empty}, InputError);
  auto tokens = two_prompts();
  tokens.interval(Time::parse("100tok"));
  EXPECT_THROW(callbacks::Generate{tokens}, InputError);
}

}  // namespace
}  // namespace tessera
