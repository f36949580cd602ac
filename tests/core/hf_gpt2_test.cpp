// Hugging Face GPT-2 checkpoints in and out of the gpt model (include/tessera/models/hf_gpt2.h), GPT-2's tied
// embeddings and tanh GELU; against transformers itself: hf_interop_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <tessera/algorithms/alibi.h>
#include <tessera/algorithms/gated_linear_units.h>
#include <tessera/algorithms/stochastic_depth.h>
#include <tessera/data/tokenizer.h>
#include <tessera/models/bert.h>
#include <tessera/models/hf_gpt2.h>
#include <tessera/models/mlp.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
#include <tessera/safetensors.h>
#include <tessera/trainer.h>

#include "core/hf_support.h"
#include "mds_support.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

GPTOptions small(bool tied, const std::string& activation, int64_t d_ff = 0) {
  return GPTOptions().vocab_size(40).max_seq_length(12).d_model(16).n_layers(2).n_heads(2).d_ff(d_ff).tie_embeddings(
      tied).activation(activation);
}

using testing::random_gpt;

at::Tensor ids(int64_t vocab = 40) {
  at::manual_seed(11);
  return at::randint(vocab, {3, 12}, at::kLong);
}

at::Tensor logits(GPT& model, const at::Tensor& input) {
  at::NoGradGuard no_grad;
  return model.forward(Batch(input, input));
}

json config_of(const std::string& folder) { return json::parse(std::ifstream(folder + "/config.json")); }

void write_config(const std::string& folder, const json& config) {
  std::ofstream(folder + "/config.json") << config.dump();
}

TEST(HuggingFaceGpt2, WrittenAndReadBackIsTheSameModelBitwise) {
  for (const GPTOptions& options : {small(true, "gelu_tanh"), small(false, "gelu", 24), small(true, "gelu", 20)}) {
    const test::TempDir dir("hf_gpt2");
    const auto model = random_gpt(options);
    save_gpt2(*model, dir.path());
    at::manual_seed(99);  // another initialisation: every weight must come from the file
    GPT loaded(GPTOptions().pretrained(dir.path()));
    loaded.eval();
    const GPTOptions& o = loaded.options();
    EXPECT_EQ(o.vocab_size(), 40);
    EXPECT_EQ(o.max_seq_length(), 12);
    EXPECT_EQ(o.d_model(), 16);
    EXPECT_EQ(o.n_layers(), 2);
    EXPECT_EQ(o.n_heads(), 2);
    EXPECT_EQ(o.d_ff(), options.d_ff() == 0 ? 64 : options.d_ff());
    EXPECT_EQ(o.activation(), options.activation());
    EXPECT_EQ(o.tie_embeddings(), options.tie_embeddings());
    const auto theirs = model->named_parameters();
    const auto ours = loaded.named_parameters();
    ASSERT_EQ(ours.size(), theirs.size());
    for (const auto& item : theirs) EXPECT_TRUE(at::equal(ours[item.key()], item.value())) << item.key();
    EXPECT_TRUE(at::equal(logits(loaded, ids()), logits(*model, ids())));
  }
}

TEST(HuggingFaceGpt2, WritesTransformersNamesLayoutAndConfiguration) {
  const test::TempDir dir("hf_gpt2");
  const auto model = random_gpt(small(true, "gelu_tanh"));
  save_gpt2(*model, dir.path());
  const Safetensors file = load_safetensors(dir.path() + "/model.safetensors");
  std::map<std::string, at::Tensor> tensors(file.tensors.begin(), file.tensors.end());
  EXPECT_EQ(tensors.size(), 2u + 2u * 12u + 2u);  // wte, wpe; 12 per block; ln_f; no lm_head (tied)
  EXPECT_EQ(tensors.count("lm_head.weight"), 0u);
  EXPECT_EQ(file.metadata.at("format"), "pt");
  const auto params = model->named_parameters();
  // Conv1D holds [in, out]: the transposes of the Linear weights.
  EXPECT_TRUE(at::equal(tensors.at("transformer.h.1.attn.c_attn.weight"), params["blocks.1.attn.qkv.weight"].t()));
  EXPECT_TRUE(at::equal(tensors.at("transformer.h.1.attn.c_attn.bias"), params["blocks.1.attn.qkv.bias"]));
  EXPECT_TRUE(at::equal(tensors.at("transformer.h.0.mlp.c_fc.weight"), params["blocks.0.mlp.fc.weight"].t()));
  EXPECT_EQ(tensors.at("transformer.h.0.mlp.c_proj.weight").sizes(), (std::vector<int64_t>{64, 16}));
  EXPECT_TRUE(at::equal(tensors.at("transformer.h.0.ln_2.bias"), params["blocks.0.ln2.bias"]));
  EXPECT_TRUE(at::equal(tensors.at("transformer.wte.weight"), params["embed.weight"]));
  EXPECT_TRUE(at::equal(tensors.at("transformer.wpe.weight"), params["pos_embed.weight"]));
  const json config = config_of(dir.path());
  EXPECT_EQ(config.at("model_type"), "gpt2");
  EXPECT_EQ(config.at("architectures"), json::array({"GPT2LMHeadModel"}));
  EXPECT_EQ(config.at("n_embd"), 16);
  EXPECT_EQ(config.at("n_inner"), 64);
  EXPECT_EQ(config.at("n_positions"), 12);
  EXPECT_EQ(config.at("activation_function"), "gelu_new");
  EXPECT_EQ(config.at("tie_word_embeddings"), true);
  EXPECT_TRUE(config.at("eos_token_id").is_null());  // 40 tokens: no <|endoftext|> at 50256

  const test::TempDir untied("hf_gpt2");
  const auto other = random_gpt(small(false, "gelu"));
  save_gpt2(*other, untied.path());
  const Safetensors file2 = load_safetensors(untied.path() + "/model.safetensors");
  const std::map<std::string, at::Tensor> tensors2(file2.tensors.begin(), file2.tensors.end());
  EXPECT_TRUE(at::equal(tensors2.at("lm_head.weight"), other->named_parameters()["head.weight"]));
  EXPECT_EQ(config_of(untied.path()).at("activation_function"), "gelu");
}

TEST(HuggingFaceGpt2, WritesTheTokenizerBesideAndItsEndOfTextAsTheConfigsEos) {
  std::vector<std::string> texts;
  for (int i = 0; i < 100; ++i) texts.push_back(fmt::format("a b {} c<|endoftext|>", i));
  const data::Tokenizer tokenizer =
      data::Tokenizer::train(texts, data::TokenizerTrainOptions().vocab_size(280).special_tokens({"<|endoftext|>"}));
  const test::TempDir dir("hf_gpt2");
  GPTOptions options = small(true, "gelu_tanh");
  options.vocab_size(tokenizer.vocab_size());
  save_gpt2(*random_gpt(options), dir.path(), &tokenizer);
  const json config = config_of(dir.path());
  EXPECT_EQ(config.at("eos_token_id"), tokenizer.string_to_token("<|endoftext|>"));
  EXPECT_EQ(config.at("bos_token_id"), config.at("eos_token_id"));
  EXPECT_EQ(json::parse(std::ifstream(dir.path() + "/tokenizer.json")), json::parse(tokenizer.to_json()));
  // A tokenizer of another vocabulary is not the model's: refused, nothing written.
  const test::TempDir other("hf_gpt2");
  const auto model = random_gpt(small(true, "gelu"));
  const std::string message =
      testing::input_error_of([&] { save_gpt2(*model, other.path() + "/out", &tokenizer); });
  EXPECT_NE(message.find(fmt::format("the tokenizer has {} tokens, the model's vocabulary 40", tokenizer.vocab_size())),
            std::string::npos)
      << message;
  EXPECT_FALSE(fs::exists(other.path() + "/out"));
}

TEST(HuggingFaceGpt2, TheTiedHeadIsTheTokenEmbedding) {
  const auto tied = random_gpt(small(true, "gelu_tanh"));
  auto untied = std::make_shared<GPT>(small(false, "gelu_tanh"));
  const auto tied_params = tied->named_parameters();
  auto untied_params = untied->named_parameters();
  EXPECT_EQ(tied_params.find("head.weight"), nullptr);
  EXPECT_EQ(untied_params.size(), tied_params.size() + 1);
  {
    at::NoGradGuard no_grad;
    for (const auto& item : tied_params) untied_params[item.key()].copy_(item.value());
    untied_params["head.weight"].copy_(tied_params["embed.weight"]);
  }
  untied->eval();
  const at::Tensor input = ids();
  EXPECT_TRUE(at::equal(logits(*tied, input), logits(*untied, input)));
  // One weight, two uses: its gradient is the sum of the embedding's and the head's.
  tied->forward(Batch(input, input)).pow(2).mean().backward();
  untied->forward(Batch(input, input)).pow(2).mean().backward();
  EXPECT_TRUE(at::allclose(tied_params["embed.weight"].grad(),
                           untied_params["embed.weight"].grad() + untied_params["head.weight"].grad(), 1e-5, 1e-7));
}

TEST(HuggingFaceGpt2, GeluTanhIsTheTanhApproximation) {
  const at::Tensor x = at::linspace(-6, 6, 241, at::kDouble);
  const at::Tensor expected = 0.5 * x * (1 + at::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x.pow(3))));
  EXPECT_TRUE(at::allclose(activate(x, "gelu_tanh"), expected, 1e-12, 1e-12));
  EXPECT_TRUE(at::equal(activate(x, "gelu"), at::gelu(x)));
  EXPECT_GT((activate(x, "gelu") - activate(x, "gelu_tanh")).abs().max().item<double>(), 1e-4);
  const std::string relu = testing::input_error_of([&] { activate(x, "relu"); });
  EXPECT_NE(relu.find("activation 'relu'; expected gelu, gelu_tanh or silu"), std::string::npos) << relu;
  const std::string message = testing::input_error_of([] { GPT model(small(false, "relu")); });
  EXPECT_NE(message.find("activation"), std::string::npos) << message;
  // gated_linear_units keeps the network's GELU.
  auto model = random_gpt(small(false, "gelu_tanh"));
  algorithms::apply_gated_linear_units(*model, algorithms::GatedLinearUnitsOptions());
  auto* glu = model->blocks()[0]->slot("mlp").ptr()->as<algorithms::GatedFeedForward>();
  ASSERT_NE(glu, nullptr);
  EXPECT_EQ(glu->activation(), "gelu_tanh");
}

/// A folder written from random_gpt(options), its config.json and model.safetensors then changed by `change`.
template <class Change>
std::string error_of_changed_checkpoint(const test::TempDir& dir, const GPTOptions& options, Change change,
                                        const GPTOptions& given = GPTOptions()) {
  save_gpt2(*random_gpt(options), dir.path());
  change(dir.path());
  GPTOptions o = given;
  o.pretrained(dir.path());
  return testing::input_error_of([&] { GPT model(o); });
}

void edit_config(const std::string& folder, const std::function<void(json&)>& edit) {
  json config = config_of(folder);
  edit(config);
  write_config(folder, config);
}

void edit_tensors(const std::string& folder, const std::function<void(Safetensors&)>& edit) {
  Safetensors file = load_safetensors(folder + "/model.safetensors");
  edit(file);
  save_safetensors(folder + "/model.safetensors", file);
}

TEST(HuggingFaceGpt2, ErrorsNameTheFileTheKeyAndWhatIsExpected) {
  const auto expect_error = [](const std::string& message, const std::string& part) {
    EXPECT_NE(message.find(part), std::string::npos) << "expected \"" << part << "\" in: " << message;
  };
  const GPTOptions tied = small(true, "gelu_tanh");
  const auto config_change = [&](const std::function<void(json&)>& edit, const GPTOptions& given = GPTOptions()) {
    const test::TempDir dir("hf_gpt2");
    return error_of_changed_checkpoint(dir, tied, [&](const std::string& f) { edit_config(f, edit); }, given);
  };
  const auto tensor_change = [&](const std::function<void(Safetensors&)>& edit, const GPTOptions& options) {
    const test::TempDir dir("hf_gpt2");
    return error_of_changed_checkpoint(dir, options, [&](const std::string& f) { edit_tensors(f, edit); });
  };
  expect_error(testing::input_error_of([] { GPT model(GPTOptions().pretrained("/nonexistent/gpt2")); }),
               "model.pretrained: '/nonexistent/gpt2' is not a folder; expected a Hugging Face GPT-2 or Llama folder");
  {
    const test::TempDir empty("hf_gpt2");
    expect_error(testing::input_error_of([&] { GPT model(GPTOptions().pretrained(empty.path())); }),
                 "has no config.json");
  }
  expect_error(config_change([](json& c) { c["model_type"] = "bert"; }),
               "model_type is 'bert'; the gpt model reads GPT-2 (model_type gpt2) and Llama (model_type llama) "
               "checkpoints");
  expect_error(testing::input_error_of([&] {
                 const test::TempDir dir("hf_gpt2");
                 save_gpt2(*random_gpt(tied), dir.path());
                 edit_config(dir.path(), [](json& c) { c["model_type"] = "llama"; });
                 gpt2_options(GPTOptions().pretrained(dir.path()));
               }),
               "model_type is 'llama'; gpt2_options reads GPT-2 checkpoints (model_type gpt2)");
  // What GPT-2 is by its model_type: an option that says otherwise is refused.
  expect_error(config_change([](json&) {}, GPTOptions().norm("rms_norm")),
               "model.norm: rms_norm given, but the pretrained checkpoint's config.json");
  expect_error(config_change([](json&) {}, GPTOptions().n_kv_heads(1)), "model.n_kv_heads: 1 given");
  expect_error(config_change([](json& c) { c["activation_function"] = "relu"; }),
               "activation_function is 'relu'; the gpt model computes gelu (exact), gelu_new");
  expect_error(config_change([](json& c) { c["add_cross_attention"] = true; }), "\"add_cross_attention\" is true");
  expect_error(config_change([](json& c) { c["n_embd"] = "16"; }), "\"n_embd\" is \"16\"; expected an integer");
  expect_error(config_change([](json& c) { c.erase("n_layer"); }), "no \"n_layer\"; a GPT-2 configuration has it");
  expect_error(config_change([](json&) {}, GPTOptions().d_model(32)),
               "model.d_model: 32 given, but the pretrained checkpoint's config.json");
  expect_error(config_change([](json&) {}, GPTOptions().d_model(32)), "has n_embd = 16; leave d_model out");
  expect_error(config_change([](json&) {}, GPTOptions().layer_norm_eps(1e-6)),
               "model.layer_norm_eps: 1e-06 given, but the pretrained checkpoint's config.json");
  expect_error(config_change([](json& c) { c["n_layer"] = 3; }),
               "no tensor 'h.2.ln_1.weight' (the gpt model's blocks.2.ln1.weight)");
  expect_error(tensor_change([](Safetensors& f) { f.tensors.emplace_back("score.weight", at::zeros({3, 16})); }, tied),
               "1 tensor the gpt model has no place for ('score.weight'); expected the weights of a GPT2LMHeadModel");
  expect_error(tensor_change(
                   [](Safetensors& f) {
                     for (auto& [name, t] : f.tensors) {
                       if (name == "transformer.h.0.mlp.c_fc.weight") t = t.t().contiguous();
                     }
                   },
                   tied),
               "tensor 'h.0.mlp.c_fc.weight' is Float of shape [64, 16]; expected a floating-point tensor of shape "
               "[16, 64] (GPT-2's Conv1D layout [in, out]: the transpose of the gpt model's blocks.0.mlp.fc.weight, "
               "[64, 16])");
  expect_error(tensor_change([](Safetensors& f) { f.tensors.emplace_back("lm_head.weight", at::zeros({40, 16})); },
                             tied),
               "lm_head.weight differs from wte.weight, but config.json ties them");
  {
    const test::TempDir dir("hf_gpt2");
    const std::string message = error_of_changed_checkpoint(dir, tied, [](const std::string& f) {
      fs::rename(f + "/model.safetensors", f + "/pytorch_model.bin");
    });
    expect_error(message, "has no model.safetensors (only pytorch_model.bin, a Python pickle, which is not read)");
    expect_error(message, "save_pretrained(folder, safe_serialization=True");
  }
  // Equal options given, and the tensors under GPT2Model's names (no "transformer."), with the causal masks older
  // transformers saved, load.
  const test::TempDir dir("hf_gpt2");
  save_gpt2(*random_gpt(tied), dir.path());
  edit_tensors(dir.path(), [](Safetensors& f) {
    for (auto& entry : f.tensors) entry.first = entry.first.substr(std::string("transformer.").size());
    f.tensors.emplace_back("h.0.attn.bias", at::ones({1, 1, 12, 12}));
  });
  GPT model(GPTOptions().pretrained(dir.path()).d_model(16).n_layers(2).activation("gelu_tanh"));
  EXPECT_TRUE(at::equal(logits(model, ids()), logits(*random_gpt(tied), ids())));
}

TEST(HuggingFaceGpt2, ModelsGpt2CannotHoldAreRefusedAndNothingIsWritten) {
  const auto refused = [](const GPT& model, const std::string& part) {
    const test::TempDir dir("hf_gpt2");
    const std::string folder = dir.path() + "/out";
    const std::string message = testing::input_error_of([&] { save_gpt2(model, folder); });
    EXPECT_NE(message.find(part), std::string::npos) << message;
    EXPECT_NE(message.find("GPT-2's format cannot hold it, so nothing was written"), std::string::npos) << message;
    EXPECT_FALSE(fs::exists(folder));
  };
  auto alibi = random_gpt(small(true, "gelu_tanh"));
  algorithms::apply_alibi(*alibi);
  refused(*alibi, "the model attends with ALiBi's biases (alibi) instead of position embeddings");
  auto glu = random_gpt(small(true, "gelu_tanh"));
  algorithms::apply_gated_linear_units(*glu, algorithms::GatedLinearUnitsOptions());
  refused(*glu, "the model's weight 'blocks.0.mlp.fc_gated.weight' has no place in a GPT-2 checkpoint");
  auto dropped = random_gpt(small(true, "gelu_tanh"));
  algorithms::apply_stochastic_depth(*dropped, algorithms::StochasticDepthOptions());
  refused(*dropped, "block 0 has a residual gate (stochastic_depth)");
  const BERT bert(GPTOptions().vocab_size(40).max_seq_length(12).d_model(16).n_layers(2).n_heads(2));
  EXPECT_NE(testing::input_error_of([&] { save_gpt2(bert, "/tmp/unused"); }).find("a bert model is bidirectional"),
            std::string::npos);
  const MLP mlp(MLPOptions().in_features(4).num_classes(3));
  EXPECT_NE(testing::input_error_of([&] { save_gpt2(mlp, "/tmp/unused"); }).find("the model is not the gpt model"),
            std::string::npos);
  EXPECT_FALSE(fs::exists("/tmp/unused"));
  // The bert models take neither option.
  for (const char* option : {"tie_embeddings", "pretrained"}) {
    GPTOptions o = GPTOptions().vocab_size(40).max_seq_length(12).d_model(16).n_layers(2).n_heads(2);
    if (std::string(option) == "tie_embeddings") o.tie_embeddings(true);
    else o.pretrained("/tmp");
    const std::string message = testing::input_error_of([&] { BERT model(o); });
    EXPECT_NE(message.find(fmt::format("model.{}: given to the bert model; it is the gpt model's", option)),
              std::string::npos)
        << message;
  }
}

TEST(HuggingFaceGpt2, ARecipeStartsFromTheCheckpointAndRefusesWhatDisagreesAtItsLine) {
  const test::TempDir dir("hf_gpt2");
  const std::string folder = dir.path() + "/gpt2";
  const auto saved = random_gpt(GPTOptions().vocab_size(256).max_seq_length(16).d_model(16).n_layers(2).n_heads(2)
                                    .tie_embeddings(true).activation("gelu_tanh"));
  save_gpt2(*saved, folder);
  const std::string text = dir.path() + "/text.txt";
  {
    std::ofstream out(text);
    for (int i = 0; i < 40; ++i) out << "The quick brown fox jumps over the lazy dog. ";
  }
  const auto recipe = [&](const std::string& model_options, int64_t seq_length) {
    return fmt::format(R"(max_duration: 2ba
model:
  gpt: {{pretrained: {}{}}}
data:
  train:
    dataset: {{text: {{path: {}, seq_length: {}}}}}
    loader: {{batch_size: 4}}
optimizer: {{adamw: {{lr: 0.001}}}}
)",
                       folder, model_options, text, seq_length);
  };
  tessera::Run run = build_run(Recipe::parse(recipe(", dropout: 0.1", 8), "recipe.yaml"));
  const auto* gpt = dynamic_cast<GPT*>(run.components.model.get());
  ASSERT_NE(gpt, nullptr);
  EXPECT_EQ(gpt->options().max_seq_length(), 16);  // the checkpoint's, not the data's 8
  EXPECT_EQ(gpt->options().dropout(), 0.1);
  EXPECT_TRUE(gpt->options().tie_embeddings());
  const auto params = gpt->named_parameters();
  for (const auto& item : saved->named_parameters()) EXPECT_TRUE(at::equal(params[item.key()], item.value()));

  const std::string disagrees = testing::input_error_of(
      [&] { build_run(Recipe::parse(recipe(", d_model: 16, n_heads: 4", 8), "recipe.yaml")); });
  EXPECT_NE(disagrees.find("recipe.yaml:3:77: "), std::string::npos) << disagrees;  // at n_heads
  EXPECT_NE(disagrees.find("model.gpt.n_heads: 4 given, but the pretrained checkpoint's config.json"),
            std::string::npos)
      << disagrees;
  const std::string longer = testing::input_error_of([&] { build_run(Recipe::parse(recipe("", 32), "recipe.yaml")); });
  EXPECT_NE(longer.find("recipe.yaml:3:"), std::string::npos) << longer;
  EXPECT_NE(longer.find("the checkpoint's positions end at 16 tokens, the training data's sequences have 32"),
            std::string::npos)
      << longer;
  // A run from the folder, with algorithms and dropout, stopped, saved and resumed in a new trainer (which reads the
  // folder again, then the checkpoint), ends on the uninterrupted run's weights.
  std::string trained = recipe(", dropout: 0.1", 8);
  trained.replace(0, std::string("max_duration: 2ba").size(), R"(max_duration: 6ba
seed: 5
algorithms: [label_smoothing, {selective_backprop: {start: 0, end: 1, keep: 0.5, interrupt: 2}},
             {seq_length_warmup: {min_seq_length: 4, step_size: 4, duration: 0.5}}])");
  const auto trainer_of = [&] {
    tessera::Run run = build_run(Recipe::parse(trained, "resume.yaml"));
    return std::make_unique<Trainer>(run.trainer, std::move(run.components), run.checkpoint);
  };
  auto whole = trainer_of();
  whole->fit();
  auto first = trainer_of();
  first->fit(Time::parse("3ba"));
  first->save_checkpoint(dir.path() + "/half.ckpt");
  auto second = trainer_of();
  second->load_checkpoint(dir.path() + "/half.ckpt");
  second->fit();
  const auto resumed = second->state().model->named_parameters();
  for (const auto& item : whole->state().model->named_parameters()) {
    EXPECT_TRUE(at::equal(resumed[item.key()], item.value())) << item.key();
  }
  EXPECT_EQ(second->state().timestamp.batch, 6);
  EXPECT_FALSE(at::equal(resumed["blocks.0.attn.qkv.weight"], saved->named_parameters()["blocks.0.attn.qkv.weight"]));

  const auto small_vocab = random_gpt(small(true, "gelu_tanh"));  // 40 tokens
  save_gpt2(*small_vocab, folder);
  const std::string vocab = testing::input_error_of([&] { build_run(Recipe::parse(recipe("", 8), "recipe.yaml")); });
  EXPECT_NE(vocab.find("the checkpoint's vocabulary has 40 tokens, the training data's 256"), std::string::npos)
      << vocab;
  EXPECT_NE(vocab.find("tokenizer"), std::string::npos) << vocab;
}

}  // namespace
}  // namespace tessera
