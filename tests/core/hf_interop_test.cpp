// The gpt model against Hugging Face transformers' GPT2LMHeadModel and LlamaForCausalLM, both ways: a checkpoint
// transformers wrote (save_pretrained) gives transformers' logits and greedy generations in Tessera, and one Tessera
// wrote (save_huggingface), after training with each algorithm that leaves a model the format can hold, gives
// Tessera's in transformers. tests/core/hf_interop.py runs transformers in the streaming peers' venv (PyPI's torch
// 2.x).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <tessera/data/tokenizer.h>
#include <tessera/models/generate.h>
#include <tessera/models/hf_gpt2.h>
#include <tessera/models/huggingface.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
#include <tessera/safetensors.h>
#include <tessera/trainer.h>

#include "mds_support.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

/// Skips unless the streaming peers' venv has transformers.
#define REQUIRE_TRANSFORMERS(python)                                                                           \
  REQUIRE_STREAMING_VENV(python);                                                                              \
  if (std::system((python + " -c 'import transformers, safetensors' > /dev/null 2>&1").c_str()) != 0) {       \
    GTEST_SKIP() << "the streaming peers' venv has no transformers: recreate it with scripts/install-peers.sh " \
                    "streaming";                                                                                \
  }

constexpr int64_t kNewTokens = 8;

/// What a model is asked, in a folder: ids [3, S] and a prompt [1, 4], written for the helper.
struct Inputs {
  at::Tensor ids, prompt;
};

Inputs write_inputs(const std::string& path, int64_t vocab, int64_t seq_length, const std::string& text = "") {
  at::manual_seed(17);
  Inputs in{at::randint(vocab, {3, seq_length}, at::kLong), at::randint(vocab, {1, 4}, at::kLong)};
  Safetensors file;
  file.tensors = {{"ids", in.ids}, {"prompt", in.prompt}};
  file.metadata["new_tokens"] = std::to_string(kNewTokens);
  file.metadata["text"] = text;
  save_safetensors(path, file);
  return in;
}

/// Tessera's logits [N, S, vocab] and greedy continuation of `model` on `in`.
std::pair<at::Tensor, at::Tensor> ours(Model& model, const Inputs& in) {
  model.eval();
  at::Tensor logits;
  {
    at::NoGradGuard no_grad;
    logits = model.forward(Batch(in.ids, in.ids)).transpose(1, 2).contiguous();
  }
  const at::Tensor generated =
      generate(model, in.prompt, GenerateOptions().max_new_tokens(kNewTokens).temperature(0));
  return {logits, generated};
}

/// transformers' outputs (the helper's file) against ours: logits within 1e-4 of each other (float32 through two
/// torch versions' kernels; the logits are of order 1), the same greedy tokens.
void expect_same(const std::string& label, const std::string& outputs, const std::pair<at::Tensor, at::Tensor>& mine) {
  const Safetensors file = load_safetensors(outputs);
  const std::map<std::string, at::Tensor> theirs(file.tensors.begin(), file.tensors.end());
  const at::Tensor& logits = theirs.at("logits");
  ASSERT_EQ(logits.sizes(), mine.first.sizes()) << label;
  const double difference = (logits - mine.first).abs().max().item<double>();
  EXPECT_LE(difference, 1e-4) << label << " (transformers " << file.metadata.at("transformers") << ")";
  EXPECT_GT(logits.abs().max().item<double>(), 0.5) << label << ": logits too small to tell weights apart";
  EXPECT_TRUE(at::equal(theirs.at("generated"), mine.second))
      << label << ": transformers " << theirs.at("generated") << "\nTessera " << mine.second;
}

TEST(HuggingFaceGpt2Interop, TransformersCheckpointsGiveTransformersLogitsAndGenerationsInTessera) {
  REQUIRE_TRANSFORMERS(python);
  const test::TempDir dir("hf_gpt2_interop");
  // GPT-2's own shape (tied, gelu_new, n_inner null), and an untied one with exact GELU and a width of its own.
  const std::vector<std::pair<std::string, nlohmann::json>> configs = {
      {"tied_gelu_new", {{"vocab_size", 50}, {"n_positions", 24}, {"n_embd", 32}, {"n_layer", 3}, {"n_head", 4},
                         {"bos_token_id", nullptr}, {"eos_token_id", nullptr}}},
      {"untied_gelu", {{"vocab_size", 37}, {"n_positions", 16}, {"n_embd", 24}, {"n_layer", 2}, {"n_head", 3},
                       {"n_inner", 40}, {"activation_function", "gelu"}, {"layer_norm_epsilon", 1e-6},
                       {"tie_word_embeddings", false}, {"bos_token_id", nullptr}, {"eos_token_id", nullptr}}}};
  std::string args;
  std::vector<Inputs> inputs;
  for (size_t i = 0; i < configs.size(); ++i) {
    const auto& [label, config] = configs[i];
    const std::string folder = dir.path() + "/" + label;
    test::run_python_helper(python, "hf_interop.py",
                            fmt::format("make {} '{}' {}", folder, config.dump(), 40 + i), dir.path() + "/make.log");
    inputs.push_back(write_inputs(folder + "/in.safetensors", config.at("vocab_size"), config.at("n_positions")));
    args += fmt::format(" {0} {0}/in.safetensors {0}/out.safetensors", folder);
  }
  test::run_python_helper(python, "hf_interop.py", "run" + args, dir.path() + "/run.log");
  for (size_t i = 0; i < configs.size(); ++i) {
    const std::string folder = dir.path() + "/" + configs[i].first;
    GPT model(GPTOptions().pretrained(folder));
    EXPECT_EQ(model.options().tie_embeddings(), i == 0);
    EXPECT_EQ(model.options().activation(), i == 0 ? "gelu_tanh" : "gelu");
    expect_same(configs[i].first, folder + "/out.safetensors", ours(model, inputs[i]));
  }
}

TEST(HuggingFaceGpt2Interop, AFolderWithTheTokenizerGivesAutoTokenizerTheSameIds) {
  REQUIRE_TRANSFORMERS(python);
  const test::TempDir dir("hf_gpt2_interop");
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back(fmt::format("the fox {} jumps over {} dogs<|endoftext|>", i, i % 9));
  const data::Tokenizer tokenizer = data::Tokenizer::train(
      texts, data::TokenizerTrainOptions().vocab_size(320).special_tokens({"<|endoftext|>"}));
  at::manual_seed(4);
  GPT model(GPTOptions().vocab_size(tokenizer.vocab_size()).max_seq_length(16).d_model(16).n_layers(2).n_heads(2)
                .tie_embeddings(true).activation("gelu_tanh"));
  {
    at::NoGradGuard no_grad;  // weights of logits large enough to tell a misplaced weight
    for (auto& p : model.parameters()) p.add_(at::randn_like(p), 0.1);
  }
  const std::string folder = dir.path() + "/gpt2";
  save_gpt2(model, folder, &tokenizer);
  const std::string text = "the fox 12 jumps over 3 dogs<|endoftext|>the fox";
  const Inputs in = write_inputs(folder + "/in.safetensors", tokenizer.vocab_size(), 16, text);
  test::run_python_helper(python, "hf_interop.py", fmt::format("run {0} {0}/in.safetensors {0}/out.safetensors",
                                                                    folder),
                          dir.path() + "/run.log");
  expect_same("with its tokenizer", folder + "/out.safetensors", ours(model, in));
  const Safetensors out = load_safetensors(folder + "/out.safetensors");
  const std::map<std::string, at::Tensor> theirs(out.tensors.begin(), out.tensors.end());
  const std::vector<int64_t> ids = tokenizer.encode(text);
  EXPECT_TRUE(at::equal(theirs.at("encoded"), at::tensor(ids, at::kLong))) << theirs.at("encoded");
}

TEST(HuggingFaceLlamaInterop, TransformersCheckpointsGiveTransformersLogitsAndGenerationsInTessera) {
  REQUIRE_TRANSFORMERS(python);
  const test::TempDir dir("hf_llama_interop");
  // Grouped-query attention, SiLU, no biases, untied (Llama 2/3's shape), and multi-head attention with biases, the
  // tanh GELU and tied embeddings.
  const std::vector<std::pair<std::string, nlohmann::json>> configs = {
      {"grouped_silu", {{"model_type", "llama"}, {"vocab_size", 50}, {"max_position_embeddings", 24},
                        {"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 3},
                        {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"rope_theta", 500.0},
                        {"rms_norm_eps", 1e-6}, {"bos_token_id", nullptr}, {"eos_token_id", nullptr}}},
      {"biased_tied_gelu", {{"model_type", "llama"}, {"vocab_size", 37}, {"max_position_embeddings", 16},
                            {"hidden_size", 24}, {"intermediate_size", 40}, {"num_hidden_layers", 2},
                            {"num_attention_heads", 3}, {"attention_bias", true}, {"mlp_bias", true},
                            {"hidden_act", "gelu_pytorch_tanh"}, {"tie_word_embeddings", true},
                            {"bos_token_id", nullptr}, {"eos_token_id", nullptr}}}};
  std::string args;
  std::vector<Inputs> inputs;
  for (size_t i = 0; i < configs.size(); ++i) {
    const auto& [label, config] = configs[i];
    const std::string folder = dir.path() + "/" + label;
    test::run_python_helper(python, "hf_interop.py", fmt::format("make {} '{}' {}", folder, config.dump(), 50 + i),
                            dir.path() + "/make.log");
    inputs.push_back(
        write_inputs(folder + "/in.safetensors", config.at("vocab_size"), config.at("max_position_embeddings")));
    args += fmt::format(" {0} {0}/in.safetensors {0}/out.safetensors", folder);
  }
  test::run_python_helper(python, "hf_interop.py", "run" + args, dir.path() + "/run.log");
  for (size_t i = 0; i < configs.size(); ++i) {
    const std::string folder = dir.path() + "/" + configs[i].first;
    GPT model(GPTOptions().pretrained(folder));
    EXPECT_EQ(model.options().n_kv_heads(), i == 0 ? 2 : 3);
    EXPECT_EQ(model.options().bias(), i == 1);
    expect_same(configs[i].first, folder + "/out.safetensors", ours(model, inputs[i]));
  }
}

/// A small text of words, for the runs below.
std::string write_text(const std::string& dir) {
  const std::string path = dir + "/text.txt";
  std::ofstream out(path);
  const char* words[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"};
  for (int i = 0; i < 400; ++i) out << words[(i * 5 + i / 7) % 8] << (i % 11 == 10 ? ".\n" : " ");
  return path;
}

TEST(HuggingFaceInterop, ModelsTrainedWithEachAlgorithmLoadInTransformersOrAreRefused) {
  REQUIRE_TRANSFORMERS(python);
  const test::TempDir dir("hf_interop");
  const std::string text = write_text(dir.path());
  // The algorithms that train a gpt model (EveryAlgorithm/OnText), each for 6 batches from GPT-2's shape and from
  // Llama's; those whose model the format cannot hold are refused by save_huggingface with the reason (on Llama's
  // shape, alibi and gated_linear_units before step 1).
  const std::map<std::string, std::string> algorithms = {
      {"none", ""},
      {"ema", "{ema: {half_life: 2ba}}"},
      {"gradient_clipping", "{gradient_clipping: {clipping_type: norm, clipping_threshold: 0.5}}"},
      {"gyro_dropout", "{gyro_dropout: {p: 0.1, sigma: 8, tau: 2}}"},
      {"label_smoothing", "label_smoothing"},
      {"layer_freezing", "{layer_freezing: {freeze_start: 0.3, freeze_level: 0.5}}"},
      {"sam", "{sam: {rho: 0.05}}"},
      {"selective_backprop", "{selective_backprop: {start: 0, end: 1, keep: 0.5, interrupt: 2}}"},
      {"seq_length_warmup", "{seq_length_warmup: {min_seq_length: 4, step_size: 4, duration: 0.5}}"},
      {"swa", "{swa: {swa_start: 2ba, swa_end: 5ba, update_interval: 1ba}}"},
      {"alibi", "{alibi: {train_sequence_length_scaling: 0.5}}"},
      {"factorize", "{factorize: {min_features: 16, latent_features: 4}}"},
      {"gated_linear_units", "gated_linear_units"},
      {"stochastic_depth", "{stochastic_depth: {drop_rate: 0.2}}"},
  };
  struct Shape {
    std::string name, options;
    std::map<std::string, std::string> refused, refused_before_training;
  };
  const std::vector<Shape> shapes = {
      {"gpt2",
       "tie_embeddings: true, activation: gelu_tanh",
       {{"alibi", "ALiBi's biases"},
        {"factorize", "has no place in a GPT-2 checkpoint"},
        {"gated_linear_units", "'blocks.0.mlp.fc_gated.weight' has no place in a GPT-2 checkpoint"},
        {"stochastic_depth", "has a residual gate (stochastic_depth)"}},
       {}},
      {"llama",
       "norm: rms_norm, positions: rotary, gated: true, activation: silu, bias: false, n_kv_heads: 1",
       {{"factorize", "has no place in a Llama checkpoint"},
        {"stochastic_depth", "has a residual gate (stochastic_depth)"}},
       {{"alibi", "the model encodes positions by rotary embeddings"},
        {"gated_linear_units", "gated linear units already"}}}};
  std::string args;
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> mine;
  for (const Shape& shape : shapes) {
    for (const auto& [name, entry] : algorithms) {
      const std::string label = shape.name + "_" + name;
      const std::string recipe = fmt::format(R"(max_duration: 6ba
seed: 3
threads: 1
model: {{gpt: {{vocab_size: 256, max_seq_length: 16, d_model: 32, n_layers: 2, n_heads: 2, dropout: 0.1, {}}}}}
data:
  train:
    dataset: {{text: {{path: {}, seq_length: 16}}}}
    loader: {{batch_size: 8}}
optimizer: {{adamw: {{lr: 0.003}}}}
algorithms: [{}]
callbacks: []
loggers: []
)",
                                             shape.options, text, entry);
      if (shape.refused_before_training.count(name) != 0) {
        const std::string message =
            testing::input_error_of([&] { make_trainer(Recipe::parse(recipe, label + ".yaml")); });
        EXPECT_NE(message.find(shape.refused_before_training.at(name)), std::string::npos) << label << ": " << message;
        continue;
      }
      tessera::Run run = build_run(Recipe::parse(recipe, label + ".yaml"));
      Trainer trainer(run.trainer, std::move(run.components), run.checkpoint);
      trainer.fit();
      const auto& model = dynamic_cast<const GPT&>(*trainer.state().model);
      const std::string folder = dir.path() + "/" + label;
      if (shape.refused.count(name) != 0) {
        const std::string message = testing::input_error_of([&] { save_huggingface(model, folder); });
        EXPECT_NE(message.find(shape.refused.at(name)), std::string::npos) << label << ": " << message;
        EXPECT_FALSE(fs::exists(folder)) << label;
        continue;
      }
      save_huggingface(model, folder);
      const Inputs in = write_inputs(folder + "/in.safetensors", 256, 16);
      mine[label] = ours(*trainer.state().model, in);
      args += fmt::format(" {0} {0}/in.safetensors {0}/out.safetensors", folder);
    }
  }
  test::run_python_helper(python, "hf_interop.py", "run" + args, dir.path() + "/run.log");
  EXPECT_EQ(mine.size(), 2 * algorithms.size() - 8);
  for (const auto& [label, outputs] : mine) expect_same(label, dir.path() + "/" + label + "/out.safetensors", outputs);
}

}  // namespace
}  // namespace tessera
