// Language models: byte-level text data, the GPT model, metrics per token, and time counted in tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <tessera/models/branch_gate.h>

#include "../../src/amp_compat.h"

#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

std::string text_of(const at::Tensor& row) {
  std::string s;
  for (int64_t i = 0; i < row.numel(); ++i) s += static_cast<char>(row[i].item<int64_t>());
  return s;
}

/// A folder with a.txt (20 bytes), b.txt (10 bytes), a fortune index a.dat and a link to b.txt (both skipped).
fs::path text_folder() {
  const fs::path dir = fs::temp_directory_path() / ("tessera_text_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "b.txt") << "0123456789";
  std::ofstream(dir / "a.txt") << "abcdefghijklmnopqrst";
  std::ofstream(dir / "a.dat") << "index";
  fs::create_symlink(dir / "b.txt", dir / "c");
  return dir;
}

TEST(TextData, ReadsFilesInNameOrderHoldsOutTheEndOfEachAndShiftsTargets) {
  const fs::path dir = text_folder();
  const auto opts = data::TextOptions().path(dir.string()).seq_length(4).test_fraction(0.2);
  // train: "abcdefghijklmnop" + "01234567" (24 bytes) -> (24 - 1) / 4 = 5 examples
  const auto train = data::load_text(opts);
  ASSERT_EQ(train->size(), 5);
  EXPECT_EQ(train->num_classes(), 256);
  EXPECT_EQ(train->tokens_per_example(), 4);
  EXPECT_EQ(train->input_shape(), std::vector<int64_t>{4});
  const Batch all = train->get_batch({0, 1, 4});
  EXPECT_EQ(all.input().scalar_type(), at::kLong);
  EXPECT_EQ(text_of(all.input()[0]), "abcd");
  EXPECT_EQ(text_of(all.target()[0]), "bcde");
  EXPECT_EQ(text_of(all.input()[1]), "efgh");
  EXPECT_EQ(text_of(all.input()[2]), "0123");
  EXPECT_EQ(text_of(all.target()[2]), "1234");
  // test: "qrst" + "89" (6 bytes) -> 1 example
  auto test_opts = opts;
  const auto test = data::load_text(test_opts.split("test"));
  ASSERT_EQ(test->size(), 1);
  EXPECT_EQ(text_of(test->get_batch({0}).input()[0]), "qrst");
  EXPECT_EQ(text_of(test->get_batch({0}).target()[0]), "rst8");
  EXPECT_EQ(data::read_text_split(test_opts.split("test")).size(), 6u);
  auto limited = opts;
  EXPECT_EQ(data::load_text(limited.limit(2))->size(), 2);
  // A single file is read whole.
  auto one = opts;
  EXPECT_EQ(data::read_text_split(one.path((dir / "b.txt").string())).size(), 8u);
  fs::remove_all(dir);
}

TEST(TextData, ErrorsNameThePathAndWhatToDo) {
  const std::string missing = testing::input_error_of([] { data::load_text(data::TextOptions().path("/no/such/text")); });
  EXPECT_NE(missing.find("/no/such/text does not exist"), std::string::npos) << missing;
  EXPECT_NE(missing.find("apt-get install fortunes"), std::string::npos) << missing;
  const fs::path dir = text_folder();
  const std::string short_split = testing::input_error_of(
      [&] { data::load_text(data::TextOptions().path(dir.string()).split("test").seq_length(6).test_fraction(0.2)); });
  EXPECT_NE(short_split.find("the test split of " + dir.string() + " has 6 bytes, too few for one example of "
                             "seq_length + 1 = 7 tokens"),
            std::string::npos)
      << short_split;
  const std::string bad_option = testing::input_error_of(
      [&] { data::load_text(data::TextOptions().path(dir.string()).seq_length(1)); });
  EXPECT_NE(bad_option.find("seq_length"), std::string::npos) << bad_option;
  const fs::path empty = dir / "empty";
  fs::create_directories(empty);
  const std::string no_files = testing::input_error_of([&] { data::load_text(data::TextOptions().path(empty.string())); });
  EXPECT_NE(no_files.find("holds no text files"), std::string::npos) << no_files;
  fs::remove_all(dir);
}

TEST(GPT, GivesLogitsOverTheVocabularyAtEveryPosition) {
  auto model = testing::tiny_gpt();
  const auto data = testing::tiny_text(4);
  const Batch b = data->get_batch({0, 1, 2});
  const at::Tensor out = model->forward(b);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 16, 8}));
  // Shorter sequences (sequence-length warmup) and other integer types.
  Batch shorter(b.input().narrow(1, 0, 5).to(at::kInt), b.target().narrow(1, 0, 5));
  const at::Tensor short_out = model->forward(shorter);
  EXPECT_EQ(short_out.sizes(), (std::vector<int64_t>{3, 16, 5}));
  // Causality: the first 5 positions of the full sequence give exactly those logits.
  EXPECT_TRUE(at::allclose(short_out, out.narrow(2, 0, 5), 1e-5, 1e-6));
  EXPECT_EQ(model->num_classes(), 16);
  EXPECT_TRUE(model->loss_is_cross_entropy());
}

TEST(GPT, APositionSeesOnlyItsPast) {
  auto model = testing::tiny_gpt();
  model->eval();
  const Batch b = testing::tiny_text(2)->get_batch({0, 1});
  Batch changed = b;
  changed.set(Batch::kInput, b.input().clone());
  changed.input()[0][5] = (changed.input()[0][5].item<int64_t>() + 1) % 16;
  const at::Tensor before = model->forward(b), after = model->forward(changed);
  EXPECT_TRUE(at::equal(before.narrow(2, 0, 5), after.narrow(2, 0, 5)));  // bitwise: positions 0..4 of example 0
  EXPECT_FALSE(at::allclose(before[0].narrow(1, 5, 3), after[0].narrow(1, 5, 3)));
  EXPECT_TRUE(at::equal(before[1], after[1]));  // the other example is untouched
}

TEST(GPT, AttentionIsTheSoftmaxOfScaledProductsInValuesAndGradients) {
  // Whichever way it is computed (LibTorch 2.x: PyTorch's fused attention; 1.13: one product with the mask), causal
  // (the gpt model's) and bidirectional (the bert model's), with and without ALiBi's biases, in fp32 and under bf16
  // autocast.
  for (const auto& [causal, alibi] :
       std::vector<std::pair<bool, bool>>{{true, false}, {true, true}, {false, false}, {false, true}}) {
    SCOPED_TRACE(fmt::format("causal {}, alibi {}", causal, alibi));
    at::manual_seed(2);
    SelfAttention attention(16, 4, /*dropout=*/0.0, causal);
    attention.set_alibi(alibi);
    const at::Tensor x = at::randn({3, 7, 16}).requires_grad_(true);
    const at::Tensor got = attention.forward(x);
    const at::Tensor dx = torch::autograd::grad({got.square().sum()}, {x})[0];
    const at::Tensor expected = testing::attention_by_hand(attention, x);
    const at::Tensor expected_dx = torch::autograd::grad({expected.square().sum()}, {x})[0];
    EXPECT_TRUE(at::allclose(got, expected, 1e-5, 1e-6));
    EXPECT_TRUE(at::allclose(dx, expected_dx, 1e-4, 1e-5));
    // The outputs differ from position to position (the comparison above is not vacuous).
    EXPECT_GT((got - expected.detach().roll(1, 1)).abs().max().item<double>(), 1e-3);
    compat::set_autocast_enabled(c10::DeviceType::CPU, true);
    compat::set_autocast_dtype(c10::DeviceType::CPU, at::kBFloat16);
    const at::Tensor low = attention.forward(x.detach());
    compat::set_autocast_enabled(c10::DeviceType::CPU, false);
    at::autocast::clear_cache();
    EXPECT_EQ(low.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::allclose(low.to(at::kFloat), expected, 0.05, 0.02));
  }
}

TEST(GPT, LossIsNextTokenCrossEntropyPerExampleMeanOverPositions) {
  auto model = testing::tiny_gpt();
  const Batch b = testing::tiny_text(3)->get_batch({0, 1, 2});
  const at::Tensor out = model->forward(b);
  const at::Tensor flat = at::cross_entropy_loss(out.transpose(1, 2).reshape({-1, 16}), b.target().reshape({-1}));
  EXPECT_NEAR(model->loss(out, b).item<double>(), flat.item<double>(), 1e-6);
  const at::Tensor per = model->loss(out, b, Reduction::None);
  ASSERT_EQ(per.sizes(), (std::vector<int64_t>{3}));
  const at::Tensor first = at::cross_entropy_loss(out[0].transpose(0, 1), b.target()[0]);
  EXPECT_NEAR(per[0].item<double>(), first.item<double>(), 1e-6);
  // Untrained: close to the uniform guess ln(16).
  EXPECT_NEAR(flat.item<double>(), std::log(16.0), 0.1);
}

TEST(GPT, RefusesWhatItCannotTake) {
  auto model = testing::tiny_gpt();
  const std::string floats = testing::input_error_of([&] { model->forward(Batch(at::zeros({2, 4}), at::zeros({2, 4}))); });
  EXPECT_NE(floats.find("expected integer token ids [N, S] with 1 <= S <= max_seq_length = 8"), std::string::npos)
      << floats;
  const std::string too_long = testing::input_error_of(
      [&] { model->forward(Batch(at::zeros({2, 9}, at::kLong), at::zeros({2, 9}, at::kLong))); });
  EXPECT_NE(too_long.find("input of shape [2, 9]"), std::string::npos) << too_long;
  const std::string heads = testing::input_error_of(
      [] { GPT(GPTOptions().vocab_size(16).max_seq_length(8).d_model(16).n_heads(3)); });
  EXPECT_NE(heads.find("model.n_heads: 3 does not divide d_model = 16"), std::string::npos) << heads;
  const std::string vocab = testing::input_error_of([] { GPT(GPTOptions().max_seq_length(8)); });
  EXPECT_NE(vocab.find("model.vocab_size: 0 must be > 0"), std::string::npos) << vocab;
  // Ids outside the vocabulary of 16, named with their place; the bert model's mask token (16) is its own.
  at::Tensor ids = at::zeros({2, 4}, at::kLong);
  ids[1][2] = 16;
  const std::string outside = testing::input_error_of([&] { model->forward(Batch(ids, ids)); });
  EXPECT_NE(outside.find("gpt: token id 16 (row 1, position 2) is outside the vocabulary: expected ids in [0, 16)"),
            std::string::npos)
      << outside;
  EXPECT_EQ(testing::tiny_bert()->forward(Batch(ids, ids)).sizes(), (std::vector<int64_t>{2, 16, 4}));
  ids[0][3] = -1;
  const std::string negative = testing::input_error_of([&] { testing::tiny_bert()->forward(Batch(ids, ids)); });
  EXPECT_NE(negative.find("bert: token id -1 (row 0, position 3) is outside the vocabulary: expected ids in [0, 17) "
                          "(vocab_size, and vocab_size itself: the mask token)"),
            std::string::npos)
      << negative;
}

TEST(GPT, StartsFromGpt2sInitialisation) {
  auto model = testing::tiny_gpt(16, 8);
  const auto params = model->named_parameters();
  // 2 blocks: residual projections get 0.02 / sqrt(4) = 0.01.
  EXPECT_NEAR(params["blocks.0.attn.qkv.weight"].std().item<double>(), 0.02, 0.004);
  EXPECT_NEAR(params["blocks.1.mlp.proj.weight"].std().item<double>(), 0.01, 0.002);
  EXPECT_EQ(params["blocks.0.mlp.fc.bias"].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(params["blocks.0.ln1.weight"].min().item<double>(), 1.0);
  EXPECT_FALSE(params.contains("head.bias"));
}

/// A module that records the shapes it sees and passes its input on (in a dropout slot).
struct ShapeRecorderImpl : torch::nn::Module {
  at::Tensor forward(const at::Tensor& x) {
    shapes.push_back(x.sizes().vec());
    return x;
  }
  std::vector<std::vector<int64_t>> shapes;
};
TORCH_MODULE(ShapeRecorder);

std::shared_ptr<GPT> gpt_with_dropout(double dropout, double attention_dropout) {
  at::manual_seed(3);  // the seed of testing::tiny_gpt(): the same weights
  return std::make_shared<GPT>(GPTOptions().vocab_size(16).max_seq_length(8).d_model(16).n_layers(2).n_heads(2)
                                   .dropout(dropout).attention_dropout(attention_dropout));
}

TEST(GPT, DropoutSitsInSlotsActsOnlyInTrainingAndChangesNoWeightOrKey) {
  auto plain = testing::tiny_gpt();
  auto model = gpt_with_dropout(0.2, 0.1);
  const auto expected = plain->named_parameters(), got = model->named_parameters();
  ASSERT_EQ(got.keys(), expected.keys()) << "dropout adds no parameter";
  for (const auto& item : expected) EXPECT_TRUE(at::equal(got[item.key()], item.value())) << item.key();
  EXPECT_EQ(model->slots().count("embed_dropout"), 1u);
  EXPECT_EQ(plain->slots().count("embed_dropout"), 0u) << "dropout 0: no module at all";
  for (const auto& block : model->blocks()) {
    EXPECT_EQ(block->slots().count("attn_dropout") + block->slots().count("mlp_dropout"), 2u);
  }
  const Batch b = testing::tiny_text(4)->get_batch({0, 1, 2, 3});
  model->eval();
  plain->eval();
  EXPECT_TRUE(at::equal(model->forward(b), plain->forward(b))) << "evaluation: no dropout";
  model->train();
  plain->train();
  at::manual_seed(5);
  const at::Tensor first = model->forward(b);
  at::manual_seed(5);
  EXPECT_TRUE(at::equal(model->forward(b), first)) << "the draws come from torch's generator";
  EXPECT_FALSE(at::allclose(first, plain->forward(b), 1e-3, 1e-3)) << "training drops";
  // The dropout slots see one row per token, [N·S, D].
  ShapeRecorder recorder;
  model->replace_slot("embed_dropout", torch::nn::AnyModule(recorder));
  model->blocks()[1]->replace_slot("mlp_dropout", torch::nn::AnyModule(recorder));
  (void)model->forward(Batch(b.input().narrow(1, 0, 5), b.target().narrow(1, 0, 5)));
  EXPECT_EQ(recorder->shapes, (std::vector<std::vector<int64_t>>{{20, 16}, {20, 16}}));
  const std::string bad = testing::input_error_of(
      [] { GPT(GPTOptions().vocab_size(16).max_seq_length(8).d_model(16).n_heads(2).dropout(1.0)); });
  EXPECT_NE(bad.find("dropout"), std::string::npos) << bad;
}

TEST(GPT, AttentionDropoutKeepsTheExpectedValueAndActsOnlyInTraining) {
  at::manual_seed(2);
  SelfAttention attention(16, 4, /*dropout=*/0.3);
  // 4000 copies of one sequence: each draws its own masks; their mean estimates the expectation, which inverted
  // dropout keeps equal to the attention without dropout.
  const at::Tensor x = at::randn({1, 5, 16});
  const at::Tensor expected = testing::attention_by_hand(attention, x);
  const at::Tensor dropped = attention.forward(x.expand({4000, 5, 16}).contiguous());
  const double scale = expected.abs().max().item<double>();
  EXPECT_GT((dropped[0] - expected[0]).abs().max().item<double>(), 0.05 * scale) << "a single draw differs";
  EXPECT_LT((dropped.mean(0) - expected[0]).abs().max().item<double>(), 0.03 * scale) << "the mean does not";
  attention.eval();
  EXPECT_TRUE(at::allclose(attention.forward(x), expected, 1e-5, 1e-6)) << "evaluation: no dropout";
}

/// A gate for a block's residual update: drops the block when `skip`, else scales the update by `factor`.
struct ScaleGateImpl : torch::nn::Module, BranchGate {
  bool skip_branch() override { return skip; }
  at::Tensor forward(const at::Tensor& update) { return update * factor; }
  bool skip = false;
  double factor = 0.5;
};
TORCH_MODULE(ScaleGate);

TEST(GPT, TheResidualGateGatesTheWholeBlock) {
  auto model = testing::tiny_gpt();
  GPTBlock& block = *model->blocks()[0];
  // The gate slot holds no tensor: no state-dict key names it.
  for (const auto& key : model->named_parameters().keys()) EXPECT_EQ(key.find("residual_gate"), std::string::npos);
  for (const auto& key : model->named_buffers().keys()) EXPECT_EQ(key.find("residual_gate"), std::string::npos);
  EXPECT_EQ(block.slots().count("residual_gate"), 1u);
  const at::Tensor x = at::randn({2, 8, 16});
  // The Identity gate: exactly the pre-norm block.
  const at::Tensor y = x + block.slot("attn").forward(block.slot("ln1").forward(x));
  const at::Tensor z = y + block.slot("mlp").forward(block.slot("ln2").forward(y));
  EXPECT_TRUE(at::equal(block.forward(x), z));
  ScaleGate gate;
  block.replace_slot("residual_gate", torch::nn::AnyModule(gate));
  EXPECT_TRUE(at::allclose(block.forward(x), x + (z - x) * 0.5, 1e-6, 1e-6)) << "x + g(z - x)";
  gate->skip = true;
  EXPECT_TRUE(at::equal(block.forward(x), x)) << "a dropped block adds nothing";
}

TEST(SequenceMetrics, CountEveryPositionAsOnePrediction) {
  // 2 examples x 2 positions over 3 classes; argmax per position: [[0, 2], [1, 1]].
  at::Tensor logits = at::zeros({2, 3, 2});
  logits[0][0][0] = 2;
  logits[0][2][1] = 2;
  logits[1][1][0] = 2;
  logits[1][1][1] = 2;
  const Batch b(at::zeros({2, 2}, at::kLong), at::tensor({0, 1, 1, 0}, at::kLong).view({2, 2}));
  Accuracy acc;
  acc.update(logits, b);
  EXPECT_DOUBLE_EQ(acc.compute(), 2.0 / 4.0);  // positions (0,0) and (1,0)
  EXPECT_EQ(acc.counts(), (std::vector<double>{2, 4}));
  CrossEntropyMetric ce;
  Perplexity ppl;
  ce.update(logits, b);
  ppl.update(logits, b);
  const double expected = at::cross_entropy_loss(logits, b.target()).item<double>();
  EXPECT_NEAR(ce.compute(), expected, 1e-6);
  EXPECT_NEAR(ppl.compute(), std::exp(expected), 1e-5);
  EXPECT_EQ(make_metric("perplexity")->name(), "perplexity");
  // Dense targets of the logits' shape are read by their argmax.
  Accuracy dense;
  dense.update(logits, Batch(b.input(), at::one_hot(b.target(), 3).permute({0, 2, 1}).to(at::kFloat)));
  EXPECT_DOUBLE_EQ(dense.compute(), 0.5);
  const std::string mismatch = testing::input_error_of([&] { acc.update(logits, Batch(b.input(), at::zeros({2, 3}, at::kLong))); });
  EXPECT_NE(mismatch.find("expected class indices of the outputs' shape without dimension 1"), std::string::npos)
      << mismatch;
}

TEST(TokenTime, TokensConvertThroughTokensPerSample) {
  TimeContext time;
  time.max_duration = Time::parse("1000tok");
  time.batches_per_epoch = 10;
  time.samples_per_epoch = 80;
  const std::string unknown = [&] {
    try {
      time.to_batches(Time::parse("640tok"));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  }();
  EXPECT_NE(unknown.find("the training data is not token sequences"), std::string::npos) << unknown;
  time.tokens_per_sample = 8;
  EXPECT_DOUBLE_EQ(time.to_batches(Time::parse("640tok")), 10.0);
  EXPECT_DOUBLE_EQ(time.to_batches(Time::parse("4tok")), 0.0625);
  EXPECT_DOUBLE_EQ(time.total_batches(), 15.625);
}

TEST(TokenTime, TheTrainerCountsTokensAndStopsAtATokenDuration) {
  Components c = testing::gpt_components(32);  // 4 batches of 64 tokens
  Trainer trainer(TrainerOptions().max_duration(Time::parse("640tok")).threads(1), std::move(c));
  trainer.fit();
  EXPECT_EQ(trainer.state().timestamp.token, 640);
  EXPECT_EQ(trainer.state().timestamp.batch, 10);
  EXPECT_EQ(trainer.state().timestamp.token_in_epoch, 128);  // 2 batches into the third epoch
  EXPECT_EQ(trainer.state().time.tokens_per_sample, 8);
}

TEST(TokenTime, ASmallGptLearnsThePattern) {
  Components c = testing::gpt_components(64);
  Evaluator ev;
  ev.label = "eval";
  ev.dataloader = testing::loader(testing::tiny_text(16), 16, false);  // the first 16 training sequences
  ev.metrics = {std::make_shared<CrossEntropyMetric>(), std::make_shared<Accuracy>(1)};
  c.evaluators.push_back(ev);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("8ep")).threads(1), std::move(c));
  const double before = trainer.evaluate().at("metrics/eval/cross_entropy");
  trainer.fit();
  const auto after = trainer.evaluate();
  EXPECT_NEAR(before, std::log(16.0), 0.1);
  EXPECT_LT(after.at("metrics/eval/cross_entropy"), 0.5 * before);
  EXPECT_GT(after.at("metrics/eval/accuracy"), 0.5);
}

TEST(TokenTime, ARecipeFillsTheModelFromTheText) {
  const fs::path dir = text_folder();
  const std::string recipe = fmt::format(R"(
max_duration: 2ba
model: {{gpt: {{d_model: 8, n_layers: 1, n_heads: 2}}}}
data:
  train:
    dataset: {{text: {{path: {}, seq_length: 4, test_fraction: 0.2}}}}
    loader: {{batch_size: 2}}
optimizer: {{adamw: {{lr: 0.01}}}}
)",
                                         dir.string());
  tessera::Run run = build_run(Recipe::parse(recipe, "<string>"));
  const auto* gpt = dynamic_cast<const GPT*>(run.components.model.get());
  ASSERT_NE(gpt, nullptr);
  EXPECT_EQ(gpt->options().vocab_size(), 256);
  EXPECT_EQ(gpt->options().max_seq_length(), 4);
  EXPECT_EQ(run.components.train_dataloader->tokens_per_example(), 4);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
