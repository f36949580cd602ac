// Hugging Face Llama checkpoints into and out of the gpt model (include/tessera/models/hf_llama.h).
#include <tessera/models/hf_llama.h>

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

const hf::Format& llama_format() {
  static const hf::Format format{"Llama", "LlamaForCausalLM", "model.", "embed_tokens.weight",
                                 [](const std::string& key) {
                                   // The rotary frequencies older transformers saved as buffers: not weights.
                                   return hf::ends_with(key, ".rotary_emb.inv_freq");
                                 }};
  return format;
}

/// Every weight of a Llama-shaped gpt model, in transformers' order; biases with `bias`, the head's when not
/// tied.
std::vector<WeightName> weight_names(const GPTOptions& options) {
  std::vector<WeightName> names = {{"embed.weight", {"embed_tokens.weight"}}};
  const std::vector<std::string> kinds =
      options.bias() ? std::vector<std::string>{"weight", "bias"} : std::vector<std::string>{"weight"};
  for (int64_t i = 0; i < options.n_layers(); ++i) {
    const std::string ours = fmt::format("blocks.{}.", i), theirs = fmt::format("layers.{}.", i);
    names.push_back({ours + "ln1.weight", {theirs + "input_layernorm.weight"}});
    for (const std::string& kind : kinds) {
      names.push_back({ours + "attn.qkv." + kind,
                       {theirs + "self_attn.q_proj." + kind, theirs + "self_attn.k_proj." + kind,
                        theirs + "self_attn.v_proj." + kind}});
      names.push_back({ours + "attn.proj." + kind, {theirs + "self_attn.o_proj." + kind}});
    }
    names.push_back({ours + "ln2.weight", {theirs + "post_attention_layernorm.weight"}});
    for (const std::string& kind : kinds) {
      names.push_back({ours + "mlp.fc_gated." + kind, {theirs + "mlp.gate_proj." + kind}});
      names.push_back({ours + "mlp.fc_linear." + kind, {theirs + "mlp.up_proj." + kind}});
      names.push_back({ours + "mlp.proj." + kind, {theirs + "mlp.down_proj." + kind}});
    }
  }
  names.push_back({"ln_f.weight", {"norm.weight"}});
  if (!options.tie_embeddings()) names.push_back({"head.weight", {"lm_head.weight"}});
  return names;
}

/// transformers' activation names and the gpt model's.
const std::vector<std::pair<std::string, std::string>>& activations() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"silu", "silu"}, {"gelu", "gelu"}, {"gelu_pytorch_tanh", "gelu_tanh"}, {"gelu_new", "gelu_tanh"}};
  return names;
}

}  // namespace

GPTOptions llama_options(const GPTOptions& given, const std::function<bool(const std::string&)>& is_given) {
  const hf::Config config = hf::read_config(given.pretrained(), "Llama");
  const std::string& path = config.path;
  const std::string model_type = config.value<std::string>("model_type", std::string());
  if (model_type != "llama") {
    throw InputError(
        fmt::format("{}: model_type is '{}'; llama_options reads Llama checkpoints (model_type llama)", path,
                    model_type));
  }
  if (config.values.contains("rope_scaling") && !config.values["rope_scaling"].is_null()) {
    throw InputError(
        fmt::format("{}: \"rope_scaling\" is {}; the gpt model computes plain rotary embeddings "
                    "(rope_scaling null): long-context scaling of their frequencies is not computed",
                    path, config.values["rope_scaling"].dump()));
  }
  const auto hidden = config.value<int64_t>("hidden_size");
  const auto heads = config.value<int64_t>("num_attention_heads");
  if (heads > 0 && hidden % heads == 0) {
    const auto head_dim = config.value<int64_t>("head_dim", hidden / heads);
    if (head_dim != hidden / heads) {
      throw InputError(
          fmt::format("{}: \"head_dim\" is {}; the gpt model's heads are hidden_size / "
                      "num_attention_heads = {} wide",
                      path, head_dim, hidden / heads));
    }
  }
  const bool attention_bias = config.value<bool>("attention_bias", false);
  if (config.value<bool>("mlp_bias", false) != attention_bias) {
    throw InputError(
        fmt::format("{}: \"attention_bias\" is {} but \"mlp_bias\" is {}; the gpt model's bias option "
                    "puts biases in both or in neither",
                    path, attention_bias, !attention_bias));
  }
  const std::string hf_activation = config.value<std::string>("hidden_act", "silu");
  std::string activation;
  for (const auto& [theirs, ours] : activations()) {
    if (theirs == hf_activation) activation = ours;
  }
  if (activation.empty()) {
    throw InputError(
        fmt::format("{}: hidden_act is '{}'; the gpt model computes silu, gelu (exact), gelu_new and "
                    "gelu_pytorch_tanh (the tanh approximation)",
                    path, hf_activation));
  }

  const GPTOptions defaults;
  const auto set = [&](const char* option, auto& field, const auto& default_value, const auto& value,
                       const char* key) {
    hf::set_option(is_given, config, option, field, default_value, value, key);
  };
  GPTOptions options = given;
  set("vocab_size", options.vocab_size(), defaults.vocab_size(), config.value<int64_t>("vocab_size"),
      "vocab_size");
  set("max_seq_length", options.max_seq_length(), defaults.max_seq_length(),
      config.value<int64_t>("max_position_embeddings"), "max_position_embeddings");
  set("d_model", options.d_model(), defaults.d_model(), hidden, "hidden_size");
  set("n_layers", options.n_layers(), defaults.n_layers(), config.value<int64_t>("num_hidden_layers"),
      "num_hidden_layers");
  set("n_heads", options.n_heads(), defaults.n_heads(), heads, "num_attention_heads");
  // n_kv_heads 0 is n_heads: compared as the head counts they give, given when not 0 (or when is_given says so).
  int64_t kv = options.n_kv_heads() == 0 ? heads : options.n_kv_heads();
  const bool kv_given = is_given ? is_given("n_kv_heads") : options.n_kv_heads() != 0;
  hf::set_option([&](const std::string&) { return kv_given; }, config, "n_kv_heads", kv, kv,
                 config.value<int64_t>("num_key_value_heads", heads), "num_key_value_heads");
  options.n_kv_heads(kv);
  int64_t d_ff = options.d_ff() == 0 ? 4 * options.d_model() : options.d_ff();
  set("d_ff", d_ff, 4 * options.d_model(), config.value<int64_t>("intermediate_size"), "intermediate_size");
  options.d_ff(d_ff);
  set("activation", options.activation(), defaults.activation(), activation, "hidden_act");
  set("layer_norm_eps", options.layer_norm_eps(), defaults.layer_norm_eps(),
      config.value<double>("rms_norm_eps", 1e-6), "rms_norm_eps");
  set("rope_theta", options.rope_theta(), defaults.rope_theta(), config.value<double>("rope_theta", 10000.0),
      "rope_theta");
  set("bias", options.bias(), defaults.bias(), attention_bias, "attention_bias");
  set("tie_embeddings", options.tie_embeddings(), defaults.tie_embeddings(),
      config.value<bool>("tie_word_embeddings", false), "tie_word_embeddings");
  const std::string rms_norm = "rms_norm", rotary = "rotary";
  set("norm", options.norm(), defaults.norm(), rms_norm, "model_type (Llama's norm is RMSNorm)");
  set("positions", options.positions(), defaults.positions(), rotary,
      "model_type (Llama's positions are rotary)");
  set("gated", options.gated(), defaults.gated(), true,
      "model_type (Llama's feed-forward networks are gated)");
  return options;
}

void load_llama_weights(GPT& model, const std::string& folder) {
  hf::load_weights(model, folder, llama_format(), weight_names(model.options()));
}

void save_llama(const Model& model, const std::string& folder, const data::Tokenizer* tokenizer) {
  const auto refusal = [](const GPTOptions& options) -> std::string {
    if (options.positions() != "rotary") return "the model learns position embeddings (positions: learned)";
    if (options.norm() != "rms_norm") return "the model's norms are LayerNorms (norm: layer_norm)";
    if (!options.gated()) return "the model's feed-forward networks are not gated (gated: false)";
    return "";
  };
  const auto config = [](const GPTOptions& options, const data::Tokenizer* tokenizer) {
    std::string hidden_act;
    for (const auto& [theirs, ours] : activations()) {
      if (ours == options.activation() && hidden_act.empty()) hidden_act = theirs;
    }
    json config = {
        {"architectures", {"LlamaForCausalLM"}},
        {"model_type", "llama"},
        {"vocab_size", options.vocab_size()},
        {"max_position_embeddings", options.max_seq_length()},
        {"hidden_size", options.d_model()},
        {"intermediate_size", options.d_ff() == 0 ? 4 * options.d_model() : options.d_ff()},
        {"num_hidden_layers", options.n_layers()},
        {"num_attention_heads", options.n_heads()},
        {"num_key_value_heads", options.n_kv_heads() > 0 ? options.n_kv_heads() : options.n_heads()},
        {"head_dim", options.d_model() / options.n_heads()},
        {"hidden_act", hidden_act},
        {"rms_norm_eps", options.layer_norm_eps()},
        {"rope_theta", options.rope_theta()},
        {"rope_scaling", nullptr},
        {"attention_bias", options.bias()},
        {"mlp_bias", options.bias()},
        {"attention_dropout", options.attention_dropout()},
        {"tie_word_embeddings", options.tie_embeddings()},
        {"pretraining_tp", 1},
        {"initializer_range", 0.02},
        {"torch_dtype", "float32"}};
    // The tokenizer's text delimiters: Llama 2's, Llama 3's or GPT-2's.
    config["bos_token_id"] = config["eos_token_id"] = nullptr;
    if (tokenizer != nullptr) {
      for (const auto& [bos, eos] :
           std::vector<std::pair<std::string, std::string>>{{"<s>", "</s>"},
                                                            {"<|begin_of_text|>", "<|end_of_text|>"},
                                                            {"<|endoftext|>", "<|endoftext|>"}}) {
        const int64_t begin = tokenizer->string_to_token(bos), end = tokenizer->string_to_token(eos);
        if (begin >= 0 && end >= 0) {
          config["bos_token_id"] = begin;
          config["eos_token_id"] = end;
          break;
        }
      }
    }
    return config;
  };
  hf::write_folder(model, folder, "save_llama", llama_format(), weight_names, refusal, config, tokenizer);
}

}  // namespace tessera
