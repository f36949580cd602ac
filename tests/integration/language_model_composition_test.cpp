// Algorithms on language models: every registered algorithm either trains a small GPT and a small BERT (each on bytes
// and on byte-level BPE tokens; the BERT also on WordPiece tokens; the GPT also shaped as GPT-2 and as Llama) and a small BERT text classifier on text or is
// refused before step 1 with its reason (the same for all six); sequence-length
// warmup composes with each algorithm that trains the GPT and the BERT; a BERT and a GPT on BPE tokens stopped and
// resumed end on the uninterrupted weights.
#include <gtest/gtest.h>

#include <filesystem>
#include <cmath>
#include <functional>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "integration/small_text.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

/// Recipe text for `model` ("gpt", "bert" on masked tokens, either with "_bpe": on the tokens of
/// testing::small_text_tokenizer(), each line a document ended by its <|endoftext|>; "bert_wordpiece": on the tokens
/// of testing::small_text_wordpiece(), each line [CLS] … [SEP]; "gpt_llama3" and "gpt_sentencepiece": on the tokens
/// of testing::small_text_llama3() and small_text_sentencepiece(), each line a document ("gpt_o200k": of
/// small_text_o200k(), GPT-4o's pattern after NFC; "gpt_unigram": of small_text_unigram(), T5's kind); or
/// "bert_classifier" on labelled texts; with dropout, for gyro dropout) trained 6 batches on
/// testing::small_text_file() (small_labelled_text_file()) with `algorithm` (a recipe entry).
std::string recipe(const std::string& model, const std::string& algorithm) {
  const bool classifier = model == "bert_classifier";
  const std::map<std::string, std::function<const std::string&()>> tokenizer_of = {
      {"gpt_bpe", testing::small_text_tokenizer},      {"bert_bpe", testing::small_text_tokenizer},
      {"bert_wordpiece", testing::small_text_wordpiece}, {"gpt_llama3", testing::small_text_llama3},
      {"gpt_sentencepiece", testing::small_text_sentencepiece}, {"gpt_o200k", testing::small_text_o200k},
      {"gpt_unigram", testing::small_text_unigram}};
  const auto tokenized = tokenizer_of.find(model);
  const bool on_tokens = tokenized != tokenizer_of.end();
  const std::string base = on_tokens ? model.substr(0, model.find('_')) : model;
  const std::string tokenizer = on_tokens ? tokenized->second() : "";
  // "gpt2": the gpt model as GPT-2 has it (tied embeddings, GELU's tanh approximation); "llama": as Llama has it
  // (RMSNorm, rotary positions, SwiGLU, no biases), with grouped-query attention (one key/value head for two).
  const bool gpt2 = model == "gpt2", llama = model == "llama";
  return fmt::format(R"(
max_duration: 6ba
seed: 1
threads: 1
run_dir: {}
model: {{{}: {{d_model: 16, n_layers: 2, n_heads: 2, dropout: 0.1, attention_dropout: 0.1{}}}}}
data:
  train:
    dataset: {{{}: {{path: {}, seq_length: 16{}}}}}
    loader: {{batch_size: 8}}
    transforms: [{}]
optimizer: {{adamw: {{lr: 0.01}}}}
algorithms: [{}]
callbacks: []
loggers: []
)",
                     (fs::temp_directory_path() / "tessera_lm_runs").string(), gpt2 || llama ? "gpt" : base,
                     gpt2    ? ", tie_embeddings: true, activation: gelu_tanh"
                     : llama ? ", norm: rms_norm, positions: rotary, gated: true, activation: silu, bias: false, "
                               "n_kv_heads: 1"
                             : "",
                     classifier ? "text_classification" : "text",
                     classifier ? testing::small_labelled_text_file() : testing::small_text_file(),
                     on_tokens ? ", document_separator: \"\\n\", tokenizer: " + tokenizer : "",
                     base != "bert" ? "" : "mask_tokens", algorithm);
}

/// A test's model and algorithm; named "gpt_alibi".
using ModelAndAlgorithm = std::tuple<std::string, std::string>;
std::string test_name(const ::testing::TestParamInfo<ModelAndAlgorithm>& info) {
  return std::get<0>(info.param) + "_" + std::get<1>(info.param);
}

/// Options that make each algorithm act within 6 batches of this model (d_model 16) where the defaults would not.
std::string entry(const std::string& name) {
  static const std::map<std::string, std::string> eager = [] {
    auto out = testing::short_run_entries();
    out["factorize"] = "{factorize: {min_features: 16, latent_features: 4}}";
    out["seq_length_warmup"] = "{seq_length_warmup: {min_seq_length: 4, step_size: 4, duration: 0.5}}";
    out["alibi"] = "{alibi: {train_sequence_length_scaling: 0.5}}";
    return out;
  }();
  return testing::entry_of(name, eager);
}

/// The algorithms that cannot work on a language model, and the start of the reason each gives.
const std::map<std::string, std::string>& refused_on_text() {
  static const std::map<std::string, std::string> refused{
      {"augmix", "augmix: augmix augments images and needs image inputs [C, H, W] per example; the training data has "
                 "inputs of shape [16] per example"},
      {"blurpool", "blurpool: the model has no layer to replace"},
      {"channels_last", "channels_last: the model has no 4-D parameter or buffer (no convolution)"},
      {"colout", "colout: colout drops rows and columns of images and needs image inputs [C, H, W] per example"},
      {"cutmix", "cutmix: cutmix mixes the inputs, which must be floating point; the training data's inputs are Long"},
      {"cutout", "cutout: cutout zeroes square holes of images and needs image inputs [C, H, W] per example"},
      {"ghost_batchnorm", "ghost_batchnorm: the model has no BatchNorm1d, BatchNorm2d or BatchNorm3d in a slot"},
      {"low_precision_groupnorm", "without mixed precision it changes nothing"},
      {"low_precision_layernorm", "without mixed precision it changes nothing"},
      {"mixup", "mixup: mixup mixes the inputs, which must be floating point; the training data's inputs are Long"},
      {"progressive_resizing", "progressive_resizing: progressive_resizing resizes images and needs image inputs"},
      {"randaugment", "randaugment: randaugment augments images and needs image inputs"},
      {"squeeze_excite", "squeeze_excite: the model has no Conv2d in a slot"},
      {"weight_standardization", "weight_standardization: the model has no Conv1d, Conv2d or Conv3d in a slot"},
  };
  return refused;
}

class OnText : public ::testing::TestWithParam<ModelAndAlgorithm> {};

TEST_P(OnText, TrainsOrIsRefusedBeforeStepOne) {
  const auto& [model, name] = GetParam();
  // ALiBi's shorter training sequences and the warmup's re-chunking re-cut each batch's tokens into more examples: a
  // classifier's labels cannot follow (refused: OnLabelledText.ReCuttingSequencesIsRefusedBeforeStepOne); with whole or truncated sequences they train.
  std::string algorithm = entry(name);
  if (model == "bert_classifier" && name == "alibi") algorithm = "{alibi: {train_sequence_length_scaling: 1}}";
  if (model == "bert_classifier" && name == "seq_length_warmup") {
    algorithm = "{seq_length_warmup: {min_seq_length: 4, step_size: 4, duration: 0.5, truncate: true}}";
  }
  // A Llama-shaped model has rotary positions, which ALiBi would count twice, and gated feed-forward networks.
  std::map<std::string, std::string> refused = refused_on_text();
  if (model == "llama") {
    refused["alibi"] = "alibi: the model encodes positions by rotary embeddings (the gpt model's positions: rotary)";
    refused["gated_linear_units"] = "gated_linear_units: the model's feed-forward networks are gated linear units "
                                    "already (the gpt model's gated: true), so it would have no effect; remove it";
  }
  auto trainer = testing::trainer_unless_refused(
      name, [&] { return make_trainer(Recipe::parse(recipe(model, algorithm), "<string>")); }, refused);
  if (!trainer) return;  // refused, with the expected reason
  trainer->fit();
  EXPECT_EQ(trainer->state().timestamp.batch, 6);
  EXPECT_EQ(trainer->state().timestamp.token, 6 * 8 * 16);
  EXPECT_TRUE(std::isfinite(trainer->state().loss.item<double>()));
  EXPECT_GT(testing::times_acted(*trainer, name), 0) << name << " never acted";
}

/// The sequence length of every microbatch trained.
class Lengths : public Callback {
 public:
  std::string name() const override { return "lengths"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::BeforeForward) lengths.push_back(s.batch.input().size(1));
  }
  std::vector<int64_t> lengths;
};

std::vector<std::string> trains_on_text() {
  std::vector<std::string> out;
  for (const auto& name : registered_names("algorithms")) {
    if (refused_on_text().count(name) == 0 && name != "seq_length_warmup") out.push_back(name);
  }
  return out;
}

class WithSeqLengthWarmup : public ::testing::TestWithParam<ModelAndAlgorithm> {};

TEST_P(WithSeqLengthWarmup, BothActAndTheLengthsFollowTheSchedule) {
  const auto& [model, name] = GetParam();
  tessera::Run run =
      build_run(Recipe::parse(recipe(model, entry("seq_length_warmup") + ", " + entry(name)), "<string>"));
  auto lengths = std::make_shared<Lengths>();
  run.components.callbacks.push_back(lengths);
  Trainer trainer(run.trainer, std::move(run.components), run.checkpoint);
  trainer.fit();
  for (const std::string& algorithm : {std::string("seq_length_warmup"), name}) {
    int64_t acted = 0;
    for (const auto& [key, record] : trainer.trace()) acted += key.rfind(algorithm + "/", 0) == 0 ? record.count : 0;
    EXPECT_GT(acted, 0) << algorithm << " never acted";
  }
  // 6 batches, duration 0.5: 3 warmup batches, (16 - 4) / 4 = 3 steps of 4 tokens, one per batch. SAM trains each
  // batch twice; ALiBi (after the warmup) halves each length.
  std::vector<int64_t> expected;
  for (int64_t len : {4, 8, 12, 16, 16, 16}) {
    for (int pass = 0; pass < (name == "sam" ? 2 : 1); ++pass) expected.push_back(name == "alibi" ? len / 2 : len);
  }
  EXPECT_EQ(lengths->lengths, expected);
  EXPECT_TRUE(std::isfinite(trainer.state().loss.item<double>()));
}

INSTANTIATE_TEST_SUITE_P(LanguageModel, WithSeqLengthWarmup,
                         ::testing::Combine(::testing::Values("gpt", "bert"), ::testing::ValuesIn(trains_on_text())),
                         test_name);

TEST(OnLabelledText, ReCuttingSequencesIsRefusedBeforeStepOne) {
  const std::string message = testing::input_error_of(
      [] { make_trainer(Recipe::parse(recipe("bert_classifier", entry("alibi")), "<string>")); });
  EXPECT_NE(message.find("alibi: train_sequence_length_scaling 0.5 re-cuts each batch's sequences into shorter ones, "
                         "which needs every batch part to be a sequence"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("set train_sequence_length_scaling: 1"), std::string::npos) << message;
  const std::string warmup = testing::input_error_of(
      [] { make_trainer(Recipe::parse(recipe("bert_classifier", entry("seq_length_warmup")), "<string>")); });
  EXPECT_NE(warmup.find("seq_length_warmup: set_seq_length: batch part \"target\" of shape [1] is not a sequence"),
            std::string::npos)
      << warmup;
  EXPECT_NE(warmup.find("use truncate: true"), std::string::npos) << warmup;
}

TEST(OnBpeText, MaskTokensWithoutAVocabSizeTakesTheTokenizersVocabularyAsTheModelDoes) {
  const auto run = build_run(Recipe::parse(recipe("bert_bpe", ""), "<string>"));
  const auto* bert = dynamic_cast<const BERT*>(run.components.model.get());
  ASSERT_NE(bert, nullptr);
  const int64_t vocab = bert->options().vocab_size();
  EXPECT_GT(vocab, 256) << "the tokenizer's vocabulary: 256 bytes and its merges";
  auto loader = std::dynamic_pointer_cast<data::DataLoader>(run.components.train_dataloader);
  ASSERT_NE(loader, nullptr);
  EXPECT_EQ(loader->num_classes(), vocab);
  loader->start_epoch(1, 0);
  const at::Tensor input = loader->next()->input();
  EXPECT_EQ(input.max().item<int64_t>(), vocab) << "the mask token is the id vocab_size, the model's extra row";
  EXPECT_GT(input.eq(vocab).sum().item<int64_t>(), 0);
  // An explicit vocab_size is taken as written (and refused when it is not the model's).
  const std::string bytes = testing::input_error_of([] {
    std::string text = recipe("bert_bpe", "");
    const std::string implied = "transforms: [mask_tokens]";
    text.replace(text.find(implied), implied.size(), "transforms: [{mask_tokens: {vocab_size: 256}}]");
    build_run(Recipe::parse(text, "<string>"));
  });
  EXPECT_NE(bytes.find("mask_tokens.vocab_size is 256 but the bert model's vocabulary has " + std::to_string(vocab)),
            std::string::npos)
      << bytes;
}

TEST(OnWordPieceText, ABertTakesTheTokenizersVocabularyAndEachLineIsClsToSep) {
  const auto run = build_run(Recipe::parse(recipe("bert_wordpiece", ""), "<string>"));
  const auto* bert = dynamic_cast<const BERT*>(run.components.model.get());
  ASSERT_NE(bert, nullptr);
  EXPECT_EQ(bert->options().vocab_size(), 64);
  auto loader = std::dynamic_pointer_cast<data::DataLoader>(run.components.train_dataloader);
  ASSERT_NE(loader, nullptr);
  loader->start_epoch(1, 0);
  const Batch batch = *loader->next();
  // The targets are the tokens the mask hid: every word of the text is in the vocabulary (no [UNK], id 1), and the
  // documents' [CLS] (2) and [SEP] (3) are among the tokens.
  const at::Tensor input = batch.input(), target = batch.target();
  const at::Tensor tokens = at::where(target.ne(-100), target, input);
  EXPECT_EQ(tokens.eq(1).sum().item<int64_t>(), 0);
  EXPECT_GT(tokens.eq(2).sum().item<int64_t>(), 0);
  EXPECT_GT(tokens.eq(3).sum().item<int64_t>(), 0);
  EXPECT_EQ(input.max().item<int64_t>(), 64) << "the mask token is the id vocab_size, the model's extra row";
  auto trainer = make_trainer(Recipe::parse(recipe("bert_wordpiece", entry("gyro_dropout")), "<string>"));
  trainer->fit();
  EXPECT_EQ(trainer->state().timestamp.batch, 6);
  EXPECT_TRUE(std::isfinite(trainer->state().loss.item<double>()));
}

TEST(OnBpeText, StoppedAndResumedRunsEndOnTheUninterruptedWeights) {
  // A BERT (masked tokens, dropout) and a GPT, on BPE tokens (the GPT's also with Llama 3's pattern, GPT-4o's after
  // NFC and SentencePiece-style, and on Unigram tokens) and, for the BERT, on WordPiece tokens and on bytes: 3
  // batches, a checkpoint, then autoresume to 6 end bitwise where 6 batches in one go end; the masking, the dropout
  // and the loader's order continue where they stopped.
  for (const std::string model :
       {"bert_bpe", "bert_wordpiece", "bert", "gpt_bpe", "gpt_llama3", "gpt_sentencepiece", "gpt_o200k",
        "gpt_unigram", "llama"}) {
    SCOPED_TRACE(model);
    const fs::path folder = fs::temp_directory_path() / "tessera_lm_resume" / model;
    fs::remove_all(folder);
    const auto fit = [&](const std::string& duration) {
      std::string text = recipe(model, "");
      text.replace(text.find("max_duration: 6ba"), 17, "max_duration: " + duration);
      text += fmt::format("checkpoint: {{folder: {}, interval: 3ba, autoresume: true}}\n", folder.string());
      auto trainer = make_trainer(Recipe::parse(text, "<string>"));
      trainer->fit();
      return std::make_tuple(trainer->loaded_checkpoint(), trainer->state().timestamp.batch,
                             weights_fingerprint(*trainer->state().model));
    };
    const auto [none, three, part] = fit("3ba");
    EXPECT_EQ(none, "");
    EXPECT_EQ(three, 3);
    const auto [checkpoint, six, resumed] = fit("6ba");
    EXPECT_EQ(checkpoint, (folder / "ep0-ba3.ckpt").string());
    EXPECT_EQ(six, 6);
    fs::remove_all(folder);
    const auto [fresh, also_six, whole] = fit("6ba");
    EXPECT_EQ(fresh, "");
    EXPECT_EQ(also_six, 6);
    EXPECT_NE(part, whole);
    EXPECT_EQ(resumed, whole);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryAlgorithm, OnText,
                         ::testing::Combine(::testing::Values("gpt", "gpt2", "llama", "gpt_bpe", "gpt_unigram", "bert",
                                                              "bert_bpe", "bert_wordpiece", "bert_classifier"),
                                            ::testing::ValuesIn(registered_names("algorithms"))),
                         test_name);

}  // namespace
}  // namespace tessera
