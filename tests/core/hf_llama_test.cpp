// Llama's architecture in the gpt model (RMSNorm, rotary positions, SwiGLU, no biases, grouped-query attention;
// include/tessera/models/gpt.h) and Hugging Face Llama checkpoints in and out of it (models/hf_llama.h,
// models/huggingface.h); against transformers itself: hf_interop_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <tessera/algorithms/factorize.h>
#include <tessera/algorithms/gated_linear_units.h>
#include <tessera/algorithms/stochastic_depth.h>
#include <tessera/models/generate.h>
#include <tessera/models/hf_gpt2.h>
#include <tessera/models/hf_llama.h>
#include <tessera/models/huggingface.h>
#include <tessera/safetensors.h>

#include "core/hf_support.h"
#include "mds_support.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

/// A small Llama-shaped gpt model's options: 4 query heads sharing `kv` key/value heads.
GPTOptions llama(int64_t kv = 2, bool tied = false, bool bias = false) {
  return GPTOptions()
      .vocab_size(40)
      .max_seq_length(12)
      .d_model(16)
      .n_layers(2)
      .n_heads(4)
      .n_kv_heads(kv)
      .d_ff(24)
      .norm("rms_norm")
      .positions("rotary")
      .rope_theta(500.0)
      .gated(true)
      .activation("silu")
      .bias(bias)
      .tie_embeddings(tied)
      .layer_norm_eps(1e-6);
}

using testing::random_gpt;

at::Tensor ids() {
  at::manual_seed(11);
  return at::randint(40, {3, 12}, at::kLong);
}

at::Tensor logits(GPT& model, const at::Tensor& input) {
  at::NoGradGuard no_grad;
  return model.forward(Batch(input, input));
}

json config_of(const std::string& folder) { return json::parse(std::ifstream(folder + "/config.json")); }

TEST(LlamaArchitecture, TheOptionsBuildRmsNormsRotaryAttentionGroupedHeadsAndGatedNetworksWithoutBiases) {
  const auto model = random_gpt(llama());
  const auto params = model->named_parameters();
  EXPECT_FALSE(params.contains("pos_embed.weight")) << "rotary positions have no weights";
  EXPECT_EQ(model->slots().count("pos_embed"), 0u);
  EXPECT_EQ(params["blocks.0.attn.qkv.weight"].sizes(), at::IntArrayRef({(4 + 2 * 2) * 4, 16}))
      << "4 query heads and 2 key/value heads of width 4";
  EXPECT_FALSE(params.contains("blocks.0.attn.qkv.bias"));
  EXPECT_FALSE(params.contains("blocks.0.ln1.bias")) << "RMSNorm has a weight only";
  EXPECT_EQ(params["blocks.0.mlp.fc_gated.weight"].sizes(), at::IntArrayRef({24, 16}));
  EXPECT_EQ(params["blocks.0.mlp.fc_linear.weight"].sizes(), at::IntArrayRef({24, 16}));
  EXPECT_FALSE(params.contains("blocks.0.mlp.proj.bias"));
  EXPECT_NE(model->blocks()[0]->slot("ln1").ptr()->as<RMSNormImpl>(), nullptr);
  EXPECT_NE(model->blocks()[0]->slot("mlp").ptr()->as<GatedFeedForward>(), nullptr);
  const at::Tensor out = logits(*model, ids());
  EXPECT_EQ(out.sizes(), at::IntArrayRef({3, 40, 12}));
  EXPECT_TRUE(out.isfinite().all().item<bool>());

  const auto error = [](const GPTOptions& options) { return testing::input_error_of([&] { GPT model(options); }); };
  EXPECT_NE(error(llama(3)).find("model.n_kv_heads: 3 does not divide n_heads = 4"), std::string::npos);
  const std::string odd = error(llama().d_model(12).n_heads(4).n_kv_heads(0));
  EXPECT_NE(odd.find("model.positions: rotary, but the head width d_model / n_heads = 12 / 4 = 3 is odd"),
            std::string::npos)
      << odd;
}

TEST(LlamaArchitecture, RmsNormRotaryEmbeddingsAndSiluFollowTheirFormulas) {
  at::manual_seed(1);
  RMSNorm norm(8, 1e-6);
  {
    at::NoGradGuard no_grad;
    norm->weight.uniform_(0.5, 1.5);
  }
  const at::Tensor x = at::randn({3, 5, 8});
  const at::Tensor expected = norm->weight * x / (x.pow(2).mean(-1, true) + 1e-6).sqrt();
  EXPECT_TRUE(at::allclose(norm(x), expected, 1e-6, 1e-6));
  // In bfloat16 the normalisation is float32's, rounded once.
  const at::Tensor half = x.to(at::kBFloat16);
  const at::Tensor x32 = half.to(at::kFloat);
  const at::Tensor rounded = (x32 * at::rsqrt(x32.pow(2).mean(-1, true) + 1e-6)).to(at::kBFloat16);
  EXPECT_TRUE(at::equal(norm(half), norm->weight * rounded));

  // Each pair (x_i, x_{i+E/2}) at position p is rotated by p·θ^(−2i/E).
  const at::Tensor q = at::randn({2, 3, 5, 8}, at::kDouble);
  const int64_t past = 4;
  const at::Tensor rotated = rotary_embedding(q, past, 100.0);
  for (int64_t t = 0; t < 5; ++t) {
    for (int64_t i = 0; i < 4; ++i) {
      const double angle = static_cast<double>(past + t) * std::pow(100.0, -2.0 * i / 8.0);
      const at::Tensor a = q.select(2, t).select(-1, i), b = q.select(2, t).select(-1, i + 4);
      EXPECT_TRUE(at::allclose(rotated.select(2, t).select(-1, i), a * std::cos(angle) - b * std::sin(angle), 1e-5,
                               1e-5));
      EXPECT_TRUE(at::allclose(rotated.select(2, t).select(-1, i + 4), b * std::cos(angle) + a * std::sin(angle),
                               1e-5, 1e-5));
    }
  }
  // Rotations keep lengths, and a query-key product depends on the distance of their positions alone.
  EXPECT_TRUE(at::allclose(rotated.norm(2, -1), q.norm(2, -1), 1e-6, 1e-6));
  const at::Tensor k = at::randn({8}, at::kDouble), v = at::randn({8}, at::kDouble);
  const auto product = [&](int64_t i, int64_t j) {
    return (rotary_embedding(k.view({1, 8}), i, 100.0) * rotary_embedding(v.view({1, 8}), j, 100.0)).sum();
  };
  EXPECT_TRUE(at::allclose(product(2, 5), product(7, 10), 1e-5, 1e-5)) << "angles in float32";
  EXPECT_FALSE(at::allclose(product(2, 5), product(2, 6), 1e-3, 1e-3));
  EXPECT_NE(testing::input_error_of([&] { rotary_embedding(at::zeros({2, 3}), 0, 1e4); }).find("an even width"),
            std::string::npos);

  EXPECT_TRUE(at::allclose(activate(x, "silu"), x * at::sigmoid(x), 1e-6, 1e-6));
}

TEST(LlamaArchitecture, GroupedQueryAttentionIsMultiHeadAttentionWithEachKeyValueHeadRepeated) {
  // A model of 2 key/value heads for 4 query heads computes what a 4-head model computes whose keys and values of
  // heads 2g and 2g + 1 are those of group g.
  const auto grouped = random_gpt(llama(2));
  auto full = std::make_shared<GPT>(llama(0));
  full->eval();
  {
    at::NoGradGuard no_grad;
    const auto from = grouped->named_parameters();
    for (auto& item : full->named_parameters()) {
      if (item.key().find("attn.qkv.weight") == std::string::npos) {
        item.value().copy_(from[item.key()]);
        continue;
      }
      const at::Tensor w = from[item.key()];  // [(4 + 2 + 2)·4, 16]
      const auto heads = [&](int64_t first, int64_t n) { return w.narrow(0, first * 4, n * 4).view({n, 4, 16}); };
      const auto repeated = [](const at::Tensor& h) { return h.repeat_interleave(2, 0).reshape({-1, 16}); };
      item.value().copy_(at::cat({heads(0, 4).reshape({-1, 16}), repeated(heads(4, 2)), repeated(heads(6, 2))}, 0));
    }
  }
  EXPECT_TRUE(at::allclose(logits(*grouped, ids()), logits(*full, ids()), 1e-5, 1e-5));
}

TEST(LlamaArchitecture, CachedGenerationGivesTheLogitsOfTheWholeSequence) {
  for (int64_t kv : {1, 2, 4}) {
    SCOPED_TRACE(kv);
    const auto model = random_gpt(llama(kv));
    const at::Tensor input = ids();
    const at::Tensor whole = logits(*model, input);
    KVCache cache;
    at::NoGradGuard no_grad;
    const at::Tensor first = model->forward_cached(input.narrow(1, 0, 5), cache);
    EXPECT_EQ(cache.keys[0].sizes(), at::IntArrayRef({3, kv, 5, 4})) << "the cache holds the key/value heads";
    std::vector<at::Tensor> steps = {first};
    for (int64_t t = 5; t < 12; ++t) steps.push_back(model->forward_cached(input.narrow(1, t, 1), cache));
    EXPECT_TRUE(at::allclose(at::cat(steps, 2), whole, 1e-5, 1e-5));
  }
}

TEST(HuggingFaceLlama, WrittenAndReadBackIsTheSameModelBitwise) {
  for (const GPTOptions& options : {llama(2), llama(4, true), llama(1, false, true)}) {
    const test::TempDir dir("hf_llama");
    const auto model = random_gpt(options);
    save_huggingface(*model, dir.path());
    const json config = config_of(dir.path());
    EXPECT_EQ(config["model_type"], "llama");
    EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
    EXPECT_EQ(config["num_key_value_heads"], options.n_kv_heads());
    EXPECT_EQ(config["rope_theta"], 500.0);
    EXPECT_EQ(config["attention_bias"], options.bias());
    const Safetensors file = load_safetensors(dir.path() + "/model.safetensors");
    std::map<std::string, at::Tensor> tensors(file.tensors.begin(), file.tensors.end());
    EXPECT_EQ(tensors.count("model.layers.0.self_attn.q_proj.weight"), 1u);
    EXPECT_EQ(tensors.at("model.layers.0.self_attn.k_proj.weight").sizes(),
              at::IntArrayRef({options.n_kv_heads() * 4, 16}));
    EXPECT_EQ(tensors.count("lm_head.weight"), options.tie_embeddings() ? 0u : 1u);
    EXPECT_EQ(tensors.count("model.layers.1.mlp.down_proj.bias"), options.bias() ? 1u : 0u);
    at::manual_seed(99);  // another initialisation: every weight must come from the file
    GPT loaded(GPTOptions().pretrained(dir.path()));
    EXPECT_EQ(loaded.options().norm(), "rms_norm");
    EXPECT_EQ(loaded.options().n_kv_heads(), options.n_kv_heads());
    loaded.eval();
    const auto mine = model->named_parameters();
    for (const auto& item : loaded.named_parameters()) {
      EXPECT_TRUE(at::equal(item.value(), mine[item.key()])) << item.key();
    }
    EXPECT_TRUE(at::equal(logits(loaded, ids()), logits(*model, ids())));
  }
}

TEST(HuggingFaceLlama, ErrorsNameTheFileTheKeyAndWhatIsExpected) {
  const auto changed = [](const std::function<void(json&)>& edit, const GPTOptions& given = GPTOptions()) {
    const test::TempDir dir("hf_llama");
    save_llama(*random_gpt(llama()), dir.path());
    json config = config_of(dir.path());
    edit(config);
    std::ofstream(dir.path() + "/config.json") << config.dump();
    GPTOptions o = given;
    o.pretrained(dir.path());
    return testing::input_error_of([&] { GPT model(o); });
  };
  const auto expect_error = [](const std::string& message, const std::string& part) {
    EXPECT_NE(message.find(part), std::string::npos) << "expected \"" << part << "\" in: " << message;
  };
  expect_error(changed([](json& c) { c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}}; }),
               "\"rope_scaling\" is {\"factor\":8.0,\"rope_type\":\"llama3\"}; the gpt model computes plain rotary");
  expect_error(changed([](json& c) { c["head_dim"] = 8; }), "\"head_dim\" is 8; the gpt model's heads are "
                                                            "hidden_size / num_attention_heads = 4 wide");
  expect_error(changed([](json& c) { c["mlp_bias"] = true; }),
               "\"attention_bias\" is false but \"mlp_bias\" is true; the gpt model's bias option puts biases in "
               "both or in neither");
  expect_error(changed([](json& c) { c["hidden_act"] = "relu"; }), "hidden_act is 'relu'; the gpt model computes silu");
  expect_error(changed([](json& c) { c.erase("hidden_size"); }), "no \"hidden_size\"; a Llama configuration has it");
  expect_error(changed([](json&) {}, GPTOptions().n_kv_heads(4)),
               "model.n_kv_heads: 4 given, but the pretrained checkpoint's config.json");
  expect_error(changed([](json&) {}, GPTOptions().tie_embeddings(true)),
               "model.tie_embeddings: true given, but the pretrained checkpoint's config.json");
  expect_error(changed([](json& c) { c["num_hidden_layers"] = 3; }),
               "no tensor 'layers.2.input_layernorm.weight' (the gpt model's blocks.2.ln1.weight)");
  // Equal options given, and the tensors under LlamaModel's names (no "model."), with the rotary frequencies older
  // transformers saved, load.
  const test::TempDir dir("hf_llama");
  save_llama(*random_gpt(llama()), dir.path());
  Safetensors file = load_safetensors(dir.path() + "/model.safetensors");
  for (auto& entry : file.tensors) {
    if (entry.first.rfind("model.", 0) == 0) entry.first = entry.first.substr(6);
  }
  file.tensors.emplace_back("layers.0.self_attn.rotary_emb.inv_freq", at::ones({2}));
  save_safetensors(dir.path() + "/model.safetensors", file);
  GPT model(GPTOptions().pretrained(dir.path()).n_heads(4).n_kv_heads(2).gated(true));
  model.eval();
  EXPECT_TRUE(at::equal(logits(model, ids()), logits(*random_gpt(llama()), ids())));
  // A q_proj of another width: the concatenation's parts are named.
  Safetensors wrong = load_safetensors(dir.path() + "/model.safetensors");
  for (auto& entry : wrong.tensors) {
    if (entry.first == "layers.1.self_attn.k_proj.weight") entry.second = at::zeros({4, 16});
  }
  save_safetensors(dir.path() + "/model.safetensors", wrong);
  expect_error(testing::input_error_of([&] { GPT again(GPTOptions().pretrained(dir.path())); }),
               "tensors 'layers.1.self_attn.q_proj.weight' + 'layers.1.self_attn.k_proj.weight' + "
               "'layers.1.self_attn.v_proj.weight' are Float of shape [16, 16] and Float of shape [4, 16] and Float "
               "of shape [8, 16]; expected floating-point tensors of shape [32, 16] (concatenated along their first "
               "dimension: the gpt model's blocks.1.attn.qkv.weight)");
}

TEST(HuggingFaceLlama, ModelsEachFormatCannotHoldAreRefusedAndNothingIsWritten) {
  const auto refused = [](const std::function<void(const std::string&)>& save, const std::string& part) {
    const test::TempDir dir("hf_llama");
    const std::string folder = dir.path() + "/out";
    const std::string message = testing::input_error_of([&] { save(folder); });
    EXPECT_NE(message.find(part), std::string::npos) << message;
    EXPECT_NE(message.find("format cannot hold it, so nothing was written"), std::string::npos) << message;
    EXPECT_FALSE(fs::exists(folder));
  };
  const auto llama_model = random_gpt(llama());
  refused([&](const std::string& f) { save_gpt2(*llama_model, f); },
          "save_gpt2: the model has rotary positions (positions: rotary)");
  const auto gpt2_model = random_gpt(GPTOptions().vocab_size(40).max_seq_length(12).d_model(16).n_layers(2));
  refused([&](const std::string& f) { save_llama(*gpt2_model, f); },
          "save_llama: the model learns position embeddings (positions: learned)");
  refused([&](const std::string& f) { save_llama(*random_gpt(llama().norm("layer_norm")), f); },
          "the model's norms are LayerNorms (norm: layer_norm)");
  refused([&](const std::string& f) { save_llama(*random_gpt(llama().gated(false)), f); },
          "the model's feed-forward networks are not gated (gated: false)");
  auto factorized = random_gpt(llama());
  algorithms::apply_factorize(*factorized, algorithms::FactorizeOptions().min_features(16).latent_features(4));
  refused([&](const std::string& f) { save_huggingface(*factorized, f); }, "has no place in a Llama checkpoint");
  auto dropped = random_gpt(llama());
  algorithms::apply_stochastic_depth(*dropped, algorithms::StochasticDepthOptions());
  refused([&](const std::string& f) { save_huggingface(*dropped, f); }, "block 0 has a residual gate");
  // The GLU surgery on a GPT-2-shaped model with LayerNorms and learned positions fits neither format.
  auto glu = random_gpt(GPTOptions().vocab_size(40).max_seq_length(12).d_model(16).n_layers(2));
  algorithms::apply_gated_linear_units(*glu, algorithms::GatedLinearUnitsOptions());
  refused([&](const std::string& f) { save_huggingface(*glu, f); }, "'blocks.0.mlp.fc_gated.weight' has no place");
  // gated_linear_units on a model built gated is refused before step 1 (it would change nothing).
  State state;
  state.model = random_gpt(llama());
  const std::string message = testing::input_error_of([&] { algorithms::GatedLinearUnits().check(state); });
  EXPECT_NE(message.find("gated linear units already (the gpt model's gated: true)"), std::string::npos) << message;
}

}  // namespace
}  // namespace tessera
