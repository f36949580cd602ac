// Hugging Face GPT-2 checkpoints into and out of the gpt model (include/tessera/models/hf_gpt2.h).
#include <tessera/models/hf_gpt2.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <tessera/data/tokenizer.h>
#include <tessera/error.h>
#include <tessera/safetensors.h>

#include "../checkpoint/checkpoint_file.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

/// One weight: its name in the gpt model, its name in a Hugging Face GPT2LMHeadModel (without "transformer."
/// for the transformer's), and whether it is stored transposed there (GPT-2's Conv1D holds [in, out]).
struct WeightName {
  std::string ours, theirs;
  bool transposed = false;
};

/// Every weight of a gpt model of `n_layers` blocks, in Hugging Face's order; the head's only when not tied.
std::vector<WeightName> weight_names(int64_t n_layers, bool tied) {
  std::vector<WeightName> names = {{"embed.weight", "wte.weight"}, {"pos_embed.weight", "wpe.weight"}};
  const std::vector<std::pair<std::string, std::string>> layers = {
      {"ln1", "ln_1"}, {"attn.qkv", "attn.c_attn"}, {"attn.proj", "attn.c_proj"},
      {"ln2", "ln_2"}, {"mlp.fc", "mlp.c_fc"},      {"mlp.proj", "mlp.c_proj"}};
  for (int64_t i = 0; i < n_layers; ++i) {
    for (const auto& [ours, theirs] : layers) {
      const bool conv1d = theirs.rfind("ln_", 0) != 0;
      names.push_back({fmt::format("blocks.{}.{}.weight", i, ours), fmt::format("h.{}.{}.weight", i, theirs), conv1d});
      names.push_back({fmt::format("blocks.{}.{}.bias", i, ours), fmt::format("h.{}.{}.bias", i, theirs)});
    }
  }
  names.push_back({"ln_f.weight", "ln_f.weight"});
  names.push_back({"ln_f.bias", "ln_f.bias"});
  if (!tied) names.push_back({"head.weight", "lm_head.weight"});
  return names;
}

std::string config_path(const std::string& folder) { return (fs::path(folder) / "config.json").string(); }

json read_config(const std::string& folder) {
  const std::string path = config_path(folder);
  if (!fs::is_directory(folder)) {
    throw InputError(fmt::format("model.pretrained: '{}' is not a folder; expected a Hugging Face GPT-2 folder "
                                 "(config.json and model.safetensors, as save_pretrained writes them)",
                                 folder));
  }
  std::ifstream in(path);
  if (!in) {
    throw InputError(fmt::format("model.pretrained: '{}' has no config.json; expected a Hugging Face GPT-2 folder "
                                 "(config.json and model.safetensors, as save_pretrained writes them)",
                                 folder));
  }
  json config;
  try {
    config = json::parse(in);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: not JSON ({}); expected a Hugging Face model configuration", path, e.what()));
  }
  if (!config.is_object()) {
    throw InputError(fmt::format("{}: not a JSON object; expected a Hugging Face model configuration", path));
  }
  return config;
}

/// config[key] read as T, or `fallback` when absent (or null, with a fallback); InputError naming the file and
/// the key when it is missing without a fallback or of another type.
template <class T>
T config_value(const json& config, const std::string& path, const char* key, std::optional<T> fallback = {}) {
  const auto it = config.find(key);
  if (it == config.end() || (it->is_null() && fallback)) {
    if (fallback) return *fallback;
    throw InputError(fmt::format("{}: no \"{}\"; a GPT-2 configuration has it", path, key));
  }
  const bool fits = std::is_same_v<T, bool>          ? it->is_boolean()
                    : std::is_same_v<T, std::string> ? it->is_string()
                    : std::is_integral_v<T>          ? it->is_number_integer()
                                                     : it->is_number();
  if (!fits) {
    throw InputError(fmt::format("{}: \"{}\" is {}; expected {}", path, key, it->dump(),
                                 std::is_same_v<T, bool>          ? "true or false"
                                 : std::is_same_v<T, std::string> ? "a string"
                                 : std::is_integral_v<T>          ? "an integer"
                                                                  : "a number"));
  }
  return it->get<T>();
}

}  // namespace

GPTOptions gpt2_options(const GPTOptions& given, const std::function<bool(const std::string&)>& is_given) {
  const std::string folder = given.pretrained();
  const json config = read_config(folder);
  const std::string path = config_path(folder);
  const std::string model_type = config_value<std::string>(config, path, "model_type", std::string());
  if (model_type != "gpt2") {
    throw InputError(fmt::format("{}: model_type is '{}'; the gpt model reads GPT-2 checkpoints (model_type gpt2)",
                                 path, model_type));
  }
  const auto require = [&](const char* key, bool expected, const char* why) {
    if (config_value<bool>(config, path, key, expected) != expected) {  // absent: the default, as expected
      throw InputError(fmt::format("{}: \"{}\" is {}; the gpt model computes GPT-2 {}", path, key,
                                   expected ? "false" : "true", why));
    }
  };
  require("add_cross_attention", false, "without cross-attention (a decoder of its own, not an encoder's)");
  require("scale_attn_by_inverse_layer_idx", false, "with every layer's attention scaled by 1/sqrt(head width) alone");
  require("scale_attn_weights", true, "with attention scores scaled by 1/sqrt(head width)");
  const std::string hf_activation = config_value<std::string>(config, path, "activation_function", "gelu_new");
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
  const auto n_embd = config_value<int64_t>(config, path, "n_embd");

  const GPTOptions defaults;
  const auto set = [&](const char* option, auto& field, const auto& default_value, const auto& value,
                       const char* key) {
    const bool set_by_user = is_given ? is_given(option) : !(field == default_value);
    if (set_by_user && !(field == value)) {
      throw InputError(fmt::format("model.{}: {} given, but the pretrained checkpoint's config.json ({}) has {} = "
                                   "{}; leave {} out (the checkpoint sets it) or give {}",
                                   option, fmt::to_string(field), path, key, fmt::to_string(value), option,
                                   fmt::to_string(value)));
    }
    field = value;
  };
  GPTOptions options = given;
  set("vocab_size", options.vocab_size(), defaults.vocab_size(), config_value<int64_t>(config, path, "vocab_size"),
      "vocab_size");
  set("max_seq_length", options.max_seq_length(), defaults.max_seq_length(),
      config_value<int64_t>(config, path, "n_positions"), "n_positions");
  set("d_model", options.d_model(), defaults.d_model(), n_embd, "n_embd");
  set("n_layers", options.n_layers(), defaults.n_layers(), config_value<int64_t>(config, path, "n_layer"),
      "n_layer");
  set("n_heads", options.n_heads(), defaults.n_heads(), config_value<int64_t>(config, path, "n_head"), "n_head");
  // n_inner null is 4·n_embd, as d_ff 0 is 4·d_model: compared as the widths they give.
  const auto n_inner = config_value<int64_t>(config, path, "n_inner", int64_t{0});
  int64_t d_ff = options.d_ff() == 0 ? 4 * options.d_model() : options.d_ff();
  set("d_ff", d_ff, 4 * options.d_model(), n_inner == 0 ? 4 * n_embd : n_inner, "n_inner");
  options.d_ff(d_ff);
  set("activation", options.activation(), defaults.activation(), activation, "activation_function");
  set("layer_norm_eps", options.layer_norm_eps(), defaults.layer_norm_eps(),
      config_value<double>(config, path, "layer_norm_epsilon", 1e-5), "layer_norm_epsilon");
  set("tie_embeddings", options.tie_embeddings(), defaults.tie_embeddings(),
      config_value<bool>(config, path, "tie_word_embeddings", true), "tie_word_embeddings");
  return options;
}

void load_gpt2_weights(GPT& model, const std::string& folder) {
  const std::string path = (fs::path(folder) / "model.safetensors").string();
  if (!fs::exists(path)) {
    const bool sharded = fs::exists(fs::path(folder) / "model.safetensors.index.json");
    const bool pickle = fs::exists(fs::path(folder) / "pytorch_model.bin");
    throw InputError(fmt::format(
        "model.pretrained: '{}' has no model.safetensors{}; expected the weights in one safetensors file: {}", folder,
        sharded ? " (its weights are split into shards, which are not read)"
        : pickle ? " (only pytorch_model.bin, a Python pickle, which is not read)"
                 : "",
        "save them with transformers' GPT2LMHeadModel.from_pretrained(folder).save_pretrained(folder, "
        "safe_serialization=True, max_shard_size=\"100GB\")"));
  }
  const Safetensors file = load_safetensors(path);
  std::map<std::string, at::Tensor> theirs;
  for (const auto& [name, tensor] : file.tensors) {
    const std::string prefix = "transformer.";
    std::string key = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
    // The causal masks older transformers saved as buffers: not weights.
    const auto ends_with = [&](const std::string& suffix) {
      return key.size() >= suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with(".attn.bias") || ends_with(".attn.masked_bias")) continue;
    theirs.emplace(std::move(key), tensor);
  }
  const GPTOptions& options = model.options();
  const auto params = model.named_parameters();
  at::NoGradGuard no_grad;
  for (const WeightName& w : weight_names(options.n_layers(), options.tie_embeddings())) {
    const auto it = theirs.find(w.theirs);
    if (it == theirs.end()) {
      throw InputError(fmt::format("{}: no tensor '{}' (the gpt model's {}); expected every weight of a "
                                   "GPT2LMHeadModel with the config.json's {} layers",
                                   path, w.theirs, w.ours, options.n_layers()));
    }
    const at::Tensor source = w.transposed ? it->second.t() : it->second;
    at::Tensor target = params[w.ours];
    if (!source.is_floating_point() || source.sizes() != target.sizes()) {
      const std::vector<int64_t> expected = w.transposed ? target.t().sizes().vec() : target.sizes().vec();
      throw InputError(fmt::format(
          "{}: tensor '{}' is {} of shape {}; expected a floating-point tensor of shape {} ({})", path, w.theirs,
          c10::toString(it->second.scalar_type()), c10::str(it->second.sizes()), c10::str(at::IntArrayRef(expected)),
          w.transposed ? fmt::format("GPT-2's Conv1D layout [in, out]: the transpose of the gpt model's {}, {}", w.ours,
                                     c10::str(target.sizes()))
                       : fmt::format("the gpt model's {}", w.ours)));
    }
    target.copy_(source);
    theirs.erase(it);
  }
  if (options.tie_embeddings()) {
    const auto head = theirs.find("lm_head.weight");
    if (head != theirs.end()) {
      if (!at::equal(head->second.to(params["embed.weight"].dtype()), params["embed.weight"])) {
        throw InputError(fmt::format("{}: lm_head.weight differs from wte.weight, but config.json ties them "
                                     "(tie_word_embeddings true); expected equal tensors, or tie_word_embeddings false",
                                     path));
      }
      theirs.erase(head);
    }
  }
  if (!theirs.empty()) {
    std::vector<std::string> left;
    for (const auto& entry : theirs) left.push_back(entry.first);
    throw InputError(fmt::format("{}: {} tensor{} the gpt model has no place for ('{}'{}); expected the weights of "
                                 "a GPT2LMHeadModel alone",
                                 path, left.size(), left.size() == 1 ? "" : "s", left.front(),
                                 left.size() > 1 ? fmt::format(", '{}', ...", left[1]) : ""));
  }
}

void save_gpt2(const Model& any_model, const std::string& folder, const data::Tokenizer* tokenizer) {
  const auto* gpt = dynamic_cast<const GPT*>(&any_model);
  if (gpt == nullptr) {
    throw InputError("save_gpt2: the model is not the gpt model; a Hugging Face GPT-2 checkpoint holds one (for "
                     "another model's weights: export_weights, a safetensors file under its own names)");
  }
  const GPT& model = *gpt;
  if (!model.causal()) {
    throw InputError("save_gpt2: a bert model is bidirectional; a GPT-2 checkpoint holds a causal language model "
                     "(the gpt model)");
  }
  const GPTOptions& options = model.options();
  const auto refuse = [&](const std::string& what) {
    throw InputError(fmt::format("save_gpt2: {}; GPT-2's format cannot hold it, so nothing was written to '{}'",
                                 what, folder));
  };
  for (size_t i = 0; i < model.blocks().size(); ++i) {
    const auto& slots = model.blocks()[i]->slots();
    const auto* attention = slots.at("attn").ptr()->as<SelfAttention>();
    if (attention == nullptr) refuse(fmt::format("block {}'s attention is not a tessera::SelfAttention", i));
    if (attention->alibi()) refuse("the model attends with ALiBi's biases (alibi) instead of position embeddings");
    if (slots.at("residual_gate").ptr()->as<torch::nn::IdentityImpl>() == nullptr) {
      refuse(fmt::format("block {} has a residual gate (stochastic_depth), which scales the block's update in "
                         "evaluation",
                         i));
    }
  }
  if (tokenizer != nullptr && tokenizer->vocab_size() != options.vocab_size()) {
    refuse(fmt::format("the tokenizer has {} tokens, the model's vocabulary {} (it is not the tokenizer of the "
                       "model's text)",
                       tokenizer->vocab_size(), options.vocab_size()));
  }
  const std::vector<WeightName> names = weight_names(options.n_layers(), options.tie_embeddings());
  const auto params = model.named_parameters();
  std::set<std::string> expected;
  for (const WeightName& w : names) expected.insert(w.ours);
  for (const auto& item : params) {
    if (expected.count(item.key()) == 0) {
      refuse(fmt::format("the model's weight '{}' has no place in a GPT-2 checkpoint (surgery such as "
                         "gated_linear_units or factorize changed the model)",
                         item.key()));
    }
  }
  Safetensors contents;
  for (const WeightName& w : names) {
    const at::Tensor* tensor = params.find(w.ours);
    if (tensor == nullptr) refuse(fmt::format("the model has no weight '{}' (replaced by surgery)", w.ours));
    const at::Tensor t = tensor->detach().to(at::kCPU, at::kFloat);
    const std::string name = w.theirs == "lm_head.weight" ? w.theirs : "transformer." + w.theirs;
    contents.tensors.emplace_back(name, (w.transposed ? t.t() : t).contiguous());
  }
  contents.metadata = {{"format", "pt"}};
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
  std::error_code error;
  fs::create_directories(folder, error);
  if (error || !fs::is_directory(folder)) {
    throw InputError(fmt::format("save_gpt2: cannot create the folder '{}' ({}); expected a writable path", folder,
                                 error ? error.message() : "a file of that name exists"));
  }
  save_safetensors((fs::path(folder) / "model.safetensors").string(), contents);
  checkpoint::write_text_atomically(config_path(folder), config.dump(2) + "\n");
  if (tokenizer != nullptr) tokenizer->save((fs::path(folder) / "tokenizer.json").string());
}

}  // namespace tessera
