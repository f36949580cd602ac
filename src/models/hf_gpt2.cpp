// Hugging Face GPT-2 checkpoints into and out of the gpt model (include/tessera/models/hf_gpt2.h).
#include <tessera/models/hf_gpt2.h>

#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <tessera/data/tokenizer.h>
#include <tessera/error.h>

#include "hf_folder.h"

namespace tessera {
namespace {

using hf::json;
using hf::WeightName;

const hf::Format& gpt2_format() {
  static const hf::Format format{"GPT-2", "GPT2LMHeadModel", "transformer.", "wte.weight", [](const std::string& key) {
                                   // The causal masks older transformers saved as buffers: not weights.
                                   return hf::ends_with(key, ".attn.bias") || hf::ends_with(key, ".attn.masked_bias");
                                 }};
  return format;
}

/// Every weight of a gpt model of GPT-2's shape, in Hugging Face's order; the head's only when not tied.
std::vector<WeightName> weight_names(const GPTOptions& options) {
  std::vector<WeightName> names = {{"embed.weight", {"wte.weight"}}, {"pos_embed.weight", {"wpe.weight"}}};
  const std::vector<std::pair<std::string, std::string>> layers = {
      {"ln1", "ln_1"}, {"attn.qkv", "attn.c_attn"}, {"attn.proj", "attn.c_proj"},
      {"ln2", "ln_2"}, {"mlp.fc", "mlp.c_fc"},      {"mlp.proj", "mlp.c_proj"}};
  for (int64_t i = 0; i < options.n_layers(); ++i) {
    for (const auto& [ours, theirs] : layers) {
      const bool conv1d = theirs.rfind("ln_", 0) != 0;
      names.push_back(
          {fmt::format("blocks.{}.{}.weight", i, ours), {fmt::format("h.{}.{}.weight", i, theirs)}, conv1d});
      names.push_back({fmt::format("blocks.{}.{}.bias", i, ours), {fmt::format("h.{}.{}.bias", i, theirs)}});
    }
  }
  names.push_back({"ln_f.weight", {"ln_f.weight"}});
  names.push_back({"ln_f.bias", {"ln_f.bias"}});
  if (!options.tie_embeddings()) names.push_back({"head.weight", {"lm_head.weight"}});
  return names;
}

}  // namespace

GPTOptions gpt2_options(const GPTOptions& given, const std::function<bool(const std::string&)>& is_given) {
  const hf::Config config = hf::read_config(given.pretrained(), "GPT-2");
  const std::string& path = config.path;
  const std::string model_type = config.value<std::string>("model_type", std::string());
  if (model_type != "gpt2") {
    throw InputError(fmt::format("{}: model_type is '{}'; gpt2_options reads GPT-2 checkpoints (model_type gpt2)",
                                 path, model_type));
  }
  const auto require = [&](const char* key, bool expected, const char* why) {
    if (config.value<bool>(key, expected) != expected) {  // absent: the default, as expected
      throw InputError(fmt::format("{}: \"{}\" is {}; the gpt model computes GPT-2 {}", path, key,
                                   expected ? "false" : "true", why));
    }
  };
  require("add_cross_attention", false, "without cross-attention (a decoder of its own, not an encoder's)");
  require("scale_attn_by_inverse_layer_idx", false, "with every layer's attention scaled by 1/sqrt(head width) alone");
  require("scale_attn_weights", true, "with attention scores scaled by 1/sqrt(head width)");
  const std::string hf_activation = config.value<std::string>("activation_function", "gelu_new");
  std::string activation;
  if (hf_activation == "gelu") {
    activation = "gelu";
  } else if (hf_activation == "gelu_new" || hf_activation == "gelu_pytorch_tanh") {
    activation = "gelu_tanh";
  } else {
    throw InputError(fmt::format("{}: activation_function is '{}'; the gpt model computes gelu (exact), gelu_new "
                                 "and gelu_pytorch_tanh (the tanh approximation)",
                                 path, hf_activation));
  }
  const auto n_embd = config.value<int64_t>("n_embd");

  const GPTOptions defaults;
  const auto set = [&](const char* option, auto& field, const auto& default_value, const auto& value,
                       const char* key) { hf::set_option(is_given, config, option, field, default_value, value, key); };
  GPTOptions options = given;
  set("vocab_size", options.vocab_size(), defaults.vocab_size(), config.value<int64_t>("vocab_size"),
      "vocab_size");
  set("max_seq_length", options.max_seq_length(), defaults.max_seq_length(),
      config.value<int64_t>("n_positions"), "n_positions");
  set("d_model", options.d_model(), defaults.d_model(), n_embd, "n_embd");
  set("n_layers", options.n_layers(), defaults.n_layers(), config.value<int64_t>("n_layer"),
      "n_layer");
  set("n_heads", options.n_heads(), defaults.n_heads(), config.value<int64_t>("n_head"), "n_head");
  // n_inner null is 4·n_embd, as d_ff 0 is 4·d_model: compared as the widths they give.
  const auto n_inner = config.value<int64_t>("n_inner", int64_t{0});
  int64_t d_ff = options.d_ff() == 0 ? 4 * options.d_model() : options.d_ff();
  set("d_ff", d_ff, 4 * options.d_model(), n_inner == 0 ? 4 * n_embd : n_inner, "n_inner");
  options.d_ff(d_ff);
  set("activation", options.activation(), defaults.activation(), activation, "activation_function");
  set("layer_norm_eps", options.layer_norm_eps(), defaults.layer_norm_eps(),
      config.value<double>("layer_norm_epsilon", 1e-5), "layer_norm_epsilon");
  set("tie_embeddings", options.tie_embeddings(), defaults.tie_embeddings(),
      config.value<bool>("tie_word_embeddings", true), "tie_word_embeddings");
  // What GPT-2 is by its model_type: LayerNorms, learned positions, biased and ungated layers, multi-head attention.
  const std::string layer_norm = "layer_norm", learned = "learned";
  set("norm", options.norm(), defaults.norm(), layer_norm, "model_type (GPT-2's norm is LayerNorm)");
  set("positions", options.positions(), defaults.positions(), learned, "model_type (GPT-2's positions are learned)");
  set("gated", options.gated(), defaults.gated(), false, "model_type (GPT-2's feed-forward networks are not gated)");
  set("bias", options.bias(), defaults.bias(), true, "model_type (GPT-2's layers have biases)");
  int64_t kv = options.n_kv_heads() == 0 ? options.n_heads() : options.n_kv_heads();
  set("n_kv_heads", kv, options.n_heads(), options.n_heads(), "n_head (GPT-2's attention is not grouped)");
  options.n_kv_heads(0);
  return options;
}

void load_gpt2_weights(GPT& model, const std::string& folder) {
  hf::load_weights(model, folder, gpt2_format(), weight_names(model.options()));
}

void save_gpt2(const Model& model, const std::string& folder, const data::Tokenizer* tokenizer) {
  const auto refusal = [](const GPTOptions& options) -> std::string {
    if (options.positions() != "learned") return "the model has rotary positions (positions: rotary)";
    if (options.norm() != "layer_norm") return "the model's norms are RMSNorms (norm: rms_norm)";
    if (options.gated()) return "the model's feed-forward networks are gated (gated: true)";
    if (options.activation() == "silu") return "the model's activation is silu";
    if (!options.bias()) return "the model's Linear layers have no biases (bias: false)";
    if (options.n_kv_heads() > 0 && options.n_kv_heads() != options.n_heads()) {
      return "the model's attention is grouped (n_kv_heads < n_heads)";
    }
    return "";
  };
  const auto config = [](const GPTOptions& options, const data::Tokenizer* tokenizer) {
    json config = {{"architectures", {"GPT2LMHeadModel"}},
                   {"model_type", "gpt2"},
                   {"vocab_size", options.vocab_size()},
                   {"n_positions", options.max_seq_length()},
                   {"n_embd", options.d_model()},
                   {"n_layer", options.n_layers()},
                   {"n_head", options.n_heads()},
                   {"n_inner", options.d_ff() == 0 ? 4 * options.d_model() : options.d_ff()},
                   {"activation_function", options.activation() == "gelu_tanh" ? "gelu_new" : "gelu"},
                   {"layer_norm_epsilon", options.layer_norm_eps()},
                   {"tie_word_embeddings", options.tie_embeddings()},
                   {"resid_pdrop", options.dropout()},
                   {"embd_pdrop", options.dropout()},
                   {"attn_pdrop", options.attention_dropout()},
                   {"initializer_range", 0.02},
                   {"torch_dtype", "float32"}};
    // GPT-2's <|endoftext|> starts and ends its texts: the tokenizer's, or GPT-2's id 50256 (transformers' default)
    // when the vocabulary reaches it.
    const int64_t end_of_text = tokenizer != nullptr ? tokenizer->string_to_token("<|endoftext|>") : -1;
    if (end_of_text >= 0) {
      config["bos_token_id"] = config["eos_token_id"] = end_of_text;
    } else if (tokenizer != nullptr || options.vocab_size() <= 50256) {
      config["bos_token_id"] = config["eos_token_id"] = nullptr;
    }
    return config;
  };
  hf::write_folder(model, folder, "save_gpt2", gpt2_format(), weight_names, refusal, config, tokenizer);
}

}  // namespace tessera
