// Masked language modelling: the mask_tokens transform, targets that mark positions to ignore (cross-entropy, the
// metrics, label smoothing), and the bidirectional bert model.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <tessera/algorithms/label_smoothing.h>

#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

/// Token ids [N, S] uniform in [0, vocab).
at::Tensor random_ids(int64_t n, int64_t s, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  return at::randint(vocab, {n, s}, at::kLong);
}

/// The batch of `ids` (targets: anything) after mask_tokens with `options`, drawing from Rng(seed).
Batch masked(const at::Tensor& ids, const data::MaskTokensOptions& options = {}, uint64_t seed = 5) {
  Batch b(ids, at::zeros_like(ids));
  Rng rng(seed);
  data::MaskTokens(options).apply(b, rng);
  return b;
}

double share(const at::Tensor& mask) { return mask.to(at::kDouble).mean().item<double>(); }

TEST(MaskTokens, HidesTheSharesOfTokensAsBertAndTargetsOnlyThem) {
  const at::Tensor ids = random_ids(64, 128, 256, 1);
  const at::Tensor before = ids.clone();
  const Batch b = masked(ids);
  EXPECT_TRUE(at::equal(ids, before)) << "a tensor the caller holds is never modified";
  ASSERT_EQ(b.input().sizes(), ids.sizes());
  ASSERT_EQ(b.target().scalar_type(), at::kLong);
  const at::Tensor hidden = b.target().ne(kIgnoreTarget);
  // 8192 tokens: the shares within about 4 standard deviations.
  EXPECT_NEAR(share(hidden), 0.15, 0.016);
  EXPECT_TRUE(at::equal(b.target().masked_select(hidden), ids.masked_select(hidden)));
  EXPECT_TRUE(at::equal(b.input().masked_select(hidden.logical_not()), ids.masked_select(hidden.logical_not())));
  const at::Tensor in = b.input().masked_select(hidden), was = ids.masked_select(hidden);
  EXPECT_NEAR(share(in.eq(256)), 0.8, 0.05);
  EXPECT_NEAR(share(in.eq(was)), 0.1 + 0.1 / 256, 0.04);
  const at::Tensor random = in.ne(256).logical_and(in.ne(was));
  EXPECT_NEAR(share(random), 0.1 - 0.1 / 256, 0.04);
  EXPECT_LT(in.masked_select(random).max().item<int64_t>(), 256);

  // The shares follow the options: all hidden tokens kept, or all random.
  const Batch kept = masked(ids, data::MaskTokensOptions().probability(0.5).replace_with_mask(0).replace_with_random(0));
  EXPECT_TRUE(at::equal(kept.input(), ids));
  EXPECT_NEAR(share(kept.target().ne(kIgnoreTarget)), 0.5, 0.03);
  const Batch all =
      masked(ids, data::MaskTokensOptions().probability(1.0).replace_with_mask(1.0).replace_with_random(0));
  EXPECT_TRUE(at::equal(all.target(), ids));
  EXPECT_TRUE(all.input().eq(256).all().item<bool>());
}

TEST(MaskTokens, DrawsPerExampleFromTheLoadersGenerator) {
  const at::Tensor ids = random_ids(4, 32, 256, 2);
  const Batch first = masked(ids), again = masked(ids), other = masked(ids, {}, 6);
  EXPECT_TRUE(at::equal(first.input(), again.input()));
  EXPECT_TRUE(at::equal(first.target(), again.target()));
  EXPECT_FALSE(at::equal(first.target(), other.target()));
  // Example 0 comes out the same whatever the other rows hold (per_example: a loader may decode only some rows).
  at::Tensor sparse = at::zeros_like(ids);
  sparse[0] = ids[0];
  const Batch partial = masked(sparse);
  EXPECT_TRUE(at::equal(partial.input()[0], first.input()[0]));
  EXPECT_TRUE(at::equal(partial.target()[0], first.target()[0]));
  EXPECT_TRUE(data::MaskTokens({}).per_example());
  // Examples do not share masks.
  EXPECT_FALSE(at::equal(first.target()[0].ne(kIgnoreTarget), first.target()[1].ne(kIgnoreTarget)));
  // Narrower integer ids are taken and come out as int64.
  const Batch narrow = masked(ids.to(at::kInt));
  EXPECT_TRUE(at::equal(narrow.input(), first.input()));
}

TEST(MaskTokens, RefusesWhatItCannotMask) {
  const std::string floats = testing::input_error_of([] { masked(at::zeros({2, 4})); });
  EXPECT_NE(floats.find("mask_tokens: input of shape [2, 4] and type Float; expected integer token ids [N, S]"),
            std::string::npos)
      << floats;
  const std::string range = testing::input_error_of([] { masked(at::full({2, 4}, 256, at::kLong)); });
  EXPECT_NE(range.find("the input holds token 256; expected ids in [0, 256) (vocab_size; the mask token is 256)"),
            std::string::npos)
      << range;
  const std::string shares = testing::input_error_of(
      [] { data::MaskTokens(data::MaskTokensOptions().replace_with_mask(0.95).replace_with_random(0.1)); });
  EXPECT_NE(shares.find("replace_with_mask (0.95) + replace_with_random (0.1) is more than 1"), std::string::npos)
      << shares;
  const std::string none = testing::input_error_of([] { data::MaskTokens(data::MaskTokensOptions().probability(0)); });
  EXPECT_NE(none.find("probability"), std::string::npos) << none;
}

/// Logits [2, 4, 3] and targets [2, 3] with ignored positions: example 0 has two targets, example 1 none.
std::pair<at::Tensor, at::Tensor> partly_ignored() {
  at::manual_seed(4);
  const at::Tensor logits = at::randn({2, 4, 3});
  const at::Tensor targets =
      at::tensor(std::vector<int64_t>{1, kIgnoreTarget, 3, kIgnoreTarget, kIgnoreTarget, kIgnoreTarget}).view({2, 3});
  return {logits, targets};
}

TEST(IgnoredTargets, CountNowhereInTheCrossEntropy) {
  const auto [logits, targets] = partly_ignored();
  const at::Tensor logp = at::log_softmax(logits, 1);
  const double nll0 = -logp[0][1][0].item<double>(), nll2 = -logp[0][3][2].item<double>();
  EXPECT_NEAR(cross_entropy(logits, targets).item<double>(), (nll0 + nll2) / 2, 1e-6);
  EXPECT_NEAR(cross_entropy(logits, targets, Reduction::Sum).item<double>(), nll0 + nll2, 1e-6);
  const at::Tensor per = cross_entropy(logits, targets, Reduction::None);
  ASSERT_EQ(per.sizes(), (std::vector<int64_t>{2}));
  EXPECT_NEAR(per[0].item<double>(), (nll0 + nll2) / 2, 1e-6);
  EXPECT_EQ(per[1].item<double>(), 0.0);  // no target: no loss
  // Without ignored positions, bitwise the plain mean over each example's positions.
  const at::Tensor full = at::tensor({1, 0, 3, 2, 2, 0}, at::kLong).view({2, 3});
  const at::Tensor plain = at::nll_loss_nd(logp, full, {}, at::Reduction::None).mean(1);
  EXPECT_TRUE(at::equal(cross_entropy(logits, full, Reduction::None), plain));
}

TEST(IgnoredTargets, AreNotPredictionsForTheMetrics) {
  const auto [logits, targets] = partly_ignored();
  const Batch b(at::zeros({2, 3}, at::kLong), targets);
  const at::Tensor hits = logits.argmax(1).eq(targets);
  for (const bool deferred : {false, true}) {
    Accuracy accuracy;
    CrossEntropyMetric ce;
    Perplexity perplexity;
    for (Metric* m : std::initializer_list<Metric*>{&accuracy, &ce, &perplexity}) {
      m->set_deferred(deferred);
      m->update(logits, b);
    }
    EXPECT_DOUBLE_EQ(accuracy.compute(), hits.sum().item<double>() / 2) << "deferred " << deferred;
    EXPECT_EQ(accuracy.counts()[1], 2.0);
    EXPECT_NEAR(ce.compute(), cross_entropy(logits, targets).item<double>(), 1e-6);
    EXPECT_EQ(ce.counts()[1], 2.0);
    EXPECT_NEAR(perplexity.compute(), std::exp(ce.compute()), 1e-9);
  }
}

TEST(IgnoredTargets, LabelSmoothingSmoothsOnlyTheTargetedPositions) {
  const auto [logits, targets] = partly_ignored();
  const double alpha = 0.1;
  const at::Tensor logp = at::log_softmax(logits, 1);
  const auto smoothed = [&](int64_t position, int64_t label) {
    return -(1 - alpha) * logp[0][label][position].item<double>() - alpha * logp[0].select(1, position).mean().item<double>();
  };
  const double expected = (smoothed(0, 1) + smoothed(2, 3)) / 2;
  EXPECT_NEAR(algorithms::smoothed_cross_entropy(logits, targets, alpha).item<double>(), expected, 1e-6);
  const at::Tensor per = algorithms::smoothed_cross_entropy(logits, targets, alpha, Reduction::None);
  EXPECT_NEAR(per[0].item<double>(), expected, 1e-6);
  EXPECT_EQ(per[1].item<double>(), 0.0);
  const std::string dense = testing::input_error_of([&] { algorithms::smooth_labels(targets, 4, alpha); });
  EXPECT_NE(dense.find("smooth_labels: the targets hold negative ids (kIgnoreTarget -100"), std::string::npos) << dense;
}

TEST(BERT, APositionSeesTheWholeSequence) {
  auto model = testing::tiny_bert();
  model->eval();
  EXPECT_FALSE(model->causal());
  EXPECT_EQ(model->named_parameters()["embed.weight"].size(0), 17);  // 16 tokens and the mask token
  EXPECT_EQ(model->num_classes(), 16);
  const Batch b = testing::tiny_text(2)->get_batch({0, 1});
  Batch changed = b;
  changed.set(Batch::kInput, b.input().clone());
  changed.input()[0][5] = 16;  // the mask token
  const at::Tensor before = model->forward(b), after = model->forward(changed);
  ASSERT_EQ(after.sizes(), (std::vector<int64_t>{2, 16, 8}));
  for (int64_t position = 0; position < 8; ++position) {
    EXPECT_FALSE(at::allclose(before[0].select(1, position), after[0].select(1, position))) << position;
  }
  EXPECT_TRUE(at::equal(before[1], after[1]));  // the other example is untouched
}

TEST(BERT, AttentionSeesBothSidesWhereTheCausalOneSeesThePast) {
  // Against the formula: GPT.AttentionIsTheSoftmaxOfScaledProductsInValuesAndGradients.
  for (const bool alibi : {false, true}) {
    at::manual_seed(2);
    SelfAttention bidirectional(16, 4, /*dropout=*/0.0, /*causal=*/false), causal(16, 4);
    {
      at::NoGradGuard no_grad;
      for (const auto& p : causal.named_parameters()) p.value().copy_(bidirectional.named_parameters()[p.key()]);
    }
    bidirectional.set_alibi(alibi);
    causal.set_alibi(alibi);
    const at::Tensor x = at::randn({3, 7, 16});
    const at::Tensor both = bidirectional.forward(x), past = causal.forward(x);
    // The last position sees every position either way; the others see more when bidirectional.
    EXPECT_TRUE(at::allclose(both.select(1, 6), past.select(1, 6), 1e-5, 1e-6)) << "alibi " << alibi;
    EXPECT_FALSE(at::allclose(both.narrow(1, 0, 6), past.narrow(1, 0, 6), 1e-3, 1e-3)) << "alibi " << alibi;
  }
}

TEST(BERT, RefusesUnmaskedTargetsTheKeyValueCacheAndGeneration) {
  auto model = testing::tiny_bert();
  const Batch plain = testing::tiny_text(2)->get_batch({0, 1});
  const std::string unmasked = testing::input_error_of([&] { model->loss(model->forward(plain), plain); });
  EXPECT_NE(unmasked.find("bert: every target position is a token to predict, so the inputs were not masked"),
            std::string::npos)
      << unmasked;
  model->eval();
  KVCache cache;
  const std::string cached = testing::input_error_of([&] { model->forward_cached(plain.input(), cache); });
  EXPECT_NE(cached.find("bert: a bidirectional model has no key/value cache"), std::string::npos) << cached;
  EXPECT_FALSE(model->supports_kv_cache());
  const std::string generated =
      testing::input_error_of([&] { generate(*model, plain.input(), GenerateOptions().max_new_tokens(2)); });
  EXPECT_NE(generated.find("generate: the bert model is bidirectional"), std::string::npos) << generated;
  const std::string wide = testing::input_error_of([] { BERT(GPTOptions().vocab_size(16).max_seq_length(8).n_heads(3)); });
  EXPECT_NE(wide.find("model.n_heads: 3 does not divide d_model = 128"), std::string::npos) << wide;
}

TEST(BERT, LearnsToFillInMaskedTokens) {
  const auto masking = std::make_shared<const data::MaskTokens>(data::MaskTokensOptions().vocab_size(16).probability(0.25));
  Components c;
  c.model = testing::tiny_bert();
  c.train_dataloader = std::make_shared<data::DataLoader>(testing::tiny_text(64), data::DataLoaderOptions().batch_size(8),
                                                          std::vector<std::shared_ptr<const data::BatchTransform>>{masking});
  c.optimizer = std::make_shared<optim::AdamW>(c.model->parameters(), optim::AdamWOptions().lr(0.01));
  Evaluator ev;
  ev.label = "eval";
  ev.dataloader = std::make_shared<data::DataLoader>(testing::tiny_text(16), data::DataLoaderOptions().batch_size(16).shuffle(false),
                                                     std::vector<std::shared_ptr<const data::BatchTransform>>{masking});
  ev.metrics = {std::make_shared<CrossEntropyMetric>(), std::make_shared<Accuracy>(1)};
  c.evaluators.push_back(ev);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("60ep")).threads(1), std::move(c));
  const double before = trainer.evaluate().at("metrics/eval/cross_entropy");
  trainer.fit();
  const auto after = trainer.evaluate();
  EXPECT_NEAR(before, std::log(16.0), 0.15);
  EXPECT_LT(after.at("metrics/eval/cross_entropy"), 0.25 * before);
  EXPECT_GT(after.at("metrics/eval/accuracy"), 0.8);  // 60 epochs: 0.95 on the 43 masked tokens
}

/// Recipe text for a bert model on a small text file, with `train_transforms` and `eval_transforms` (YAML lists).
std::string bert_recipe(const fs::path& text, const std::string& train_transforms, const std::string& eval_transforms) {
  return fmt::format(R"(max_duration: 2ba
model: {{bert: {{d_model: 8, n_layers: 1, n_heads: 2}}}}
data:
  train:
    dataset: {{text: {{path: {}, seq_length: 16}}}}
    loader: {{batch_size: 2}}
    transforms: {}
  eval:
    dataset: {{text: {{path: {}, split: test, seq_length: 16}}}}
    transforms: {}
    metrics: [accuracy, perplexity]
optimizer: {{adamw: {{lr: 0.01}}}}
callbacks: []
loggers: []
)",
                     text.string(), train_transforms, text.string(), eval_transforms);
}

TEST(BERT, ARecipeTrainsItOnMaskedTextAndRefusesUnmaskedData) {
  const fs::path text = fs::temp_directory_path() / fmt::format("tessera_bert_{}.txt", ::getpid());
  {
    std::ofstream out(text);
    for (int i = 0; i < 60; ++i) out << "the quick brown fox jumps over the lazy dog\n";
  }
  tessera::Run run = build_run(Recipe::parse(bert_recipe(text, "[mask_tokens]", "[mask_tokens]"), "<string>"));
  const auto* bert = dynamic_cast<const BERT*>(run.components.model.get());
  ASSERT_NE(bert, nullptr);
  EXPECT_EQ(bert->options().vocab_size(), 256);
  EXPECT_EQ(bert->options().max_seq_length(), 16);
  Trainer trainer(run.trainer, std::move(run.components));
  trainer.fit();
  EXPECT_EQ(trainer.state().timestamp.batch, 2);
  EXPECT_TRUE(std::isfinite(trainer.state().loss.item<double>()));
  const auto metrics = trainer.evaluate();
  EXPECT_GT(metrics.at("metrics/eval/perplexity"), 1.0);
  EXPECT_LT(metrics.at("metrics/eval/perplexity"), 300.0);

  const std::string train = testing::input_error_of(
      [&] { build_run(Recipe::parse(bert_recipe(text, "[]", "[mask_tokens]"), "<string>")); });
  EXPECT_NE(train.find("<string>:7:17: data.train.transforms: the bert model learns from masked tokens, and this data "
                       "has no mask_tokens transform"),
            std::string::npos)
      << train;
  const std::string eval = testing::input_error_of(
      [&] { build_run(Recipe::parse(bert_recipe(text, "[mask_tokens]", "[]"), "<string>")); });
  EXPECT_NE(eval.find("data.eval.transforms: the bert model learns from masked tokens"), std::string::npos) << eval;
  const std::string vocab = testing::input_error_of([&] {
    build_run(Recipe::parse(bert_recipe(text, "[{mask_tokens: {vocab_size: 128}}]", "[mask_tokens]"), "<string>"));
  });
  EXPECT_NE(vocab.find("mask_tokens.vocab_size is 128 but the bert model's vocabulary has 256 tokens"),
            std::string::npos)
      << vocab;
  fs::remove(text);
}

TEST(LossTerms, WeightsAreEachChunksShareOfTheGlobalBatchsTerms) {
  const auto values = [](const std::vector<at::Tensor>& weights) {
    std::vector<double> out;
    for (const auto& w : weights) out.push_back(w.item<double>());
    return out;
  };
  const at::Tensor terms = at::tensor({3, 1, 0, 4}, at::kLong);  // 8 terms
  EXPECT_EQ(values(loss_term_weights(terms, 0, terms.sum(), 1)), (std::vector<double>{1.0}));
  EXPECT_EQ(values(loss_term_weights(terms, 1, terms.sum(), 1)), (std::vector<double>{3.0 / 8, 1.0 / 8, 0.0, 4.0 / 8}));
  EXPECT_EQ(values(loss_term_weights(terms, 3, terms.sum(), 1)), (std::vector<double>{0.5, 0.5}));  // 3 + 1 + 0, 4
  // On 2 ranks whose global batch holds 24 terms: this rank's 8 weigh 8 · 2 / 24 of the mean over the ranks.
  const auto two = values(loss_term_weights(terms, 2, at::tensor(24, at::kLong), 2));
  ASSERT_EQ(two.size(), 2u);
  EXPECT_DOUBLE_EQ(two[0], 0.5 * 16.0 / 24.0);
  EXPECT_DOUBLE_EQ(two[1], 0.5 * 16.0 / 24.0);
  // Nothing to average over: weights 0, not 0/0.
  EXPECT_EQ(values(loss_term_weights(at::zeros({2}, at::kLong), 1, at::tensor(0, at::kLong), 1)),
            (std::vector<double>{0.0, 0.0}));
  EXPECT_THROW(loss_term_weights(at::ones({2}), 1, at::tensor(2.0), 1), Error);
  // Every example with the same number of terms (no ignored target): bitwise the examples' shares, as the trainer
  // weighed before it counted terms, on even and uneven shares of the global batch.
  for (int64_t n : {1, 5, 7, 12}) {
    for (int64_t chunk : {0, 1, 2, 3, 5}) {
      for (int64_t per : {1, 3, 64}) {
        for (int64_t world : {1, 2, 3}) {
          for (int64_t others : {int64_t{0}, int64_t{1}, n + 2}) {  // other ranks' examples beyond n · (world − 1)
            const int64_t global = n * world + (world > 1 ? others : 0);
            const at::Tensor terms = at::full({n}, per, at::kLong);
            const auto w = values(loss_term_weights(terms, chunk, at::tensor(global * per), world));
            const double across =
                global == n * world ? 1.0 : static_cast<double>(n) * world / static_cast<double>(global);
            const int64_t size = chunk <= 0 || chunk >= n ? n : chunk;
            ASSERT_EQ(static_cast<int64_t>(w.size()), (n + size - 1) / size);
            for (size_t i = 0; i < w.size(); ++i) {
              const int64_t rows = std::min(size, n - static_cast<int64_t>(i) * size);
              EXPECT_EQ(w[i], static_cast<double>(rows) / static_cast<double>(n) * across)
                  << "n " << n << " chunk " << chunk << " terms " << per << " world " << world << " global " << global;
            }
          }
        }
      }
    }
  }
}

/// One batch of 4 sequences of tiny_text whose targeted (masked) positions number 1, 7, 2 and 0.
std::shared_ptr<data::TextDataset> unevenly_masked() {
  const Batch all = testing::tiny_text(4)->get_batch({0, 1, 2, 3});
  at::Tensor targets = at::full_like(all.target(), kIgnoreTarget);
  const std::vector<std::vector<int64_t>> hidden = {{3}, {0, 1, 2, 3, 4, 5, 6}, {2, 7}, {}};
  for (size_t i = 0; i < hidden.size(); ++i) {
    for (int64_t j : hidden[i]) targets[static_cast<int64_t>(i)][j] = all.target()[static_cast<int64_t>(i)][j];
  }
  return std::make_shared<data::TextDataset>(all.input(), targets, 16, "unevenly masked");
}

/// The gradient of the first (and only) batch of unevenly_masked() on tiny_bert(), in microbatches of `size`.
std::vector<at::Tensor> bert_gradient(int64_t size) {
  Components c;
  c.model = testing::tiny_bert();
  c.train_dataloader = testing::loader(unevenly_masked(), 4, /*shuffle=*/false);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
  auto capture = std::make_shared<testing::GradCapture>();
  c.algorithms.push_back(capture);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("1ba")).microbatch_size(size).threads(1), std::move(c));
  trainer.fit();
  return capture->grads;
}

TEST(LossTerms, MicrobatchesOfABertBatchWeighByMaskedTokensAndOneWithoutAnyAddsNothing) {
  // The gradient of the mean over the batch's 10 masked tokens, by hand (on one thread, as the trainer's).
  at::set_num_threads(1);
  auto model = testing::tiny_bert();
  model->train();
  const Batch batch = unevenly_masked()->get_batch({0, 1, 2, 3});
  model->loss(model->forward(batch), batch).backward();
  const auto params = model->parameters();
  const auto whole = bert_gradient(0);
  ASSERT_EQ(whole.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(at::equal(whole[i], params[i].grad())) << "parameter " << i;
  // Microbatches of 1 (the last without a masked token: a mean over nothing, 0/0, that must add nothing), 2 and 3
  // (7 + 1 + ... tokens against 2): the same gradient up to the order of the sums.
  for (int64_t size : {1, 2, 3}) {
    const auto parts = bert_gradient(size);
    ASSERT_EQ(parts.size(), whole.size());
    for (size_t i = 0; i < whole.size(); ++i) {
      EXPECT_TRUE(at::allclose(parts[i], whole[i], /*rtol=*/1e-5, /*atol=*/1e-7))
          << "microbatches of " << size << ", parameter " << i << ": differs by "
          << (parts[i] - whole[i]).abs().max().item<double>();
    }
  }
  // Weighing each example's mean over its masked tokens by its share of the examples (a quarter each) gives
  // another gradient, far outside that tolerance: the agreement above is the terms' doing.
  model->zero_grad();
  for (int64_t i : {0, 1, 2}) {
    const Batch one = batch.select(at::tensor({i}, at::kLong));
    (model->loss(model->forward(one), one) * 0.25).backward();
  }
  double gap = 0.0, scale = 0.0;
  for (size_t i = 0; i < params.size(); ++i) {
    gap = std::max(gap, (params[i].grad() - whole[i]).abs().max().item<double>());
    scale = std::max(scale, whole[i].abs().max().item<double>());
  }
  EXPECT_GT(gap, 0.05 * scale) << "the examples' weighting is too close to the tokens' for this test to tell apart";
}

/// A BERT whose loss_terms breaks its contract: float counts.
class FloatTermsBert : public BERT {
 public:
  FloatTermsBert() : BERT(GPTOptions().vocab_size(16).max_seq_length(8).d_model(16).n_layers(2).n_heads(2)) {}
  at::Tensor loss_terms(const Batch& batch) const override { return at::ones({batch.size()}); }
};

TEST(LossTerms, AModelWhoseTermsBreakTheirContractIsRefusedBeforeStepOne) {
  const auto build = [](int64_t microbatch_size) {
    Components c;
    c.model = std::make_shared<FloatTermsBert>();
    c.train_dataloader = testing::loader(unevenly_masked(), 4, /*shuffle=*/false);
    c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
    return std::make_unique<Trainer>(
        TrainerOptions().max_duration(Time::parse("1ba")).microbatch_size(microbatch_size).threads(1), std::move(c));
  };
  // Batches in parts weigh by the terms: the Trainer asks for them of an example batch (one row) when it is built.
  const std::string error = testing::input_error_of([&] { build(2); });
  EXPECT_THAT(error, ::testing::HasSubstr("loss_terms returned Float of shape [1]; expected integer counts per "
                                          "example, shape [1]"));
  EXPECT_THAT(error, ::testing::HasSubstr("before step 1"));
  // A batch in one piece weighs 1 and never asks for them.
  const auto whole = build(0);
  whole->fit();
  EXPECT_EQ(whole->state().timestamp.batch, 1);
}

}  // namespace
}  // namespace tessera
