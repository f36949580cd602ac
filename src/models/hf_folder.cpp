// What the Hugging Face GPT-2 and Llama readers and writers share (hf_folder.h).
#include "hf_folder.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <tessera/data/tokenizer.h>
#include <tessera/safetensors.h>

#include "../checkpoint/checkpoint_file.h"

namespace tessera::hf {
namespace {

namespace fs = std::filesystem;

const char* const kFolder =
    "a Hugging Face GPT-2 or Llama folder (config.json and model.safetensors, as "
    "save_pretrained writes them)";

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "'" : " + '") + name + "'";
  return out;
}

}  // namespace

Config read_config(const std::string& folder, std::string family) {
  const std::string path = (fs::path(folder) / "config.json").string();
  if (!fs::is_directory(folder)) {
    throw InputError(fmt::format("model.pretrained: '{}' is not a folder; expected {}", folder, kFolder));
  }
  std::ifstream in(path);
  if (!in)
    throw InputError(fmt::format("model.pretrained: '{}' has no config.json; expected {}", folder, kFolder));
  json values;
  try {
    values = json::parse(in);
  } catch (const json::exception& e) {
    throw InputError(
        fmt::format("{}: not JSON ({}); expected a Hugging Face model configuration", path, e.what()));
  }
  if (!values.is_object()) {
    throw InputError(fmt::format("{}: not a JSON object; expected a Hugging Face model configuration", path));
  }
  return {std::move(values), path, std::move(family)};
}

void load_weights(GPT& model, const std::string& folder, const Format& format,
                  const std::vector<WeightName>& names) {
  const std::string path = (fs::path(folder) / "model.safetensors").string();
  if (!fs::exists(path)) {
    const bool sharded = fs::exists(fs::path(folder) / "model.safetensors.index.json");
    const bool pickle = fs::exists(fs::path(folder) / "pytorch_model.bin");
    throw InputError(fmt::format(
        "model.pretrained: '{}' has no model.safetensors{}; expected the weights in one safetensors file: "
        "save them "
        "with transformers' {}.from_pretrained(folder).save_pretrained(folder, safe_serialization=True, "
        "max_shard_size=\"100GB\")",
        folder,
        sharded  ? " (its weights are split into shards, which are not read)"
        : pickle ? " (only pytorch_model.bin, a Python pickle, which is not read)"
                 : "",
        format.model_class));
  }
  const Safetensors file = load_safetensors(path);
  std::map<std::string, at::Tensor> theirs;
  for (const auto& [name, tensor] : file.tensors) {
    const std::string prefix = format.prefix;
    std::string key = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
    if (format.not_a_weight && format.not_a_weight(key)) continue;
    theirs.emplace(std::move(key), tensor);
  }
  const auto params = model.named_parameters();
  at::NoGradGuard no_grad;
  for (const WeightName& w : names) {
    std::vector<at::Tensor> parts;
    for (const std::string& name : w.theirs) {
      const auto it = theirs.find(name);
      if (it == theirs.end()) {
        throw InputError(
            fmt::format("{}: no tensor '{}' (the gpt model's {}); expected every weight of a {} with "
                        "the config.json's {} layers",
                        path, name, w.ours, format.model_class, model.options().n_layers()));
      }
      parts.push_back(it->second);
    }
    at::Tensor target = params[w.ours];
    const bool floating = std::all_of(parts.begin(), parts.end(), [&](const at::Tensor& t) {
      return t.is_floating_point() && t.dim() == parts.front().dim();
    });
    at::Tensor source = floating ? (parts.size() == 1 ? parts[0] : at::cat(parts, 0)) : at::Tensor();
    if (source.defined() && w.transposed) source = source.t();
    if (!source.defined() || source.sizes() != target.sizes()) {
      const std::vector<int64_t> expected = w.transposed ? target.t().sizes().vec() : target.sizes().vec();
      std::string found;
      for (const at::Tensor& t : parts) {
        found += fmt::format("{}{} of shape {}", found.empty() ? "" : " and ", c10::toString(t.scalar_type()),
                             c10::str(t.sizes()));
      }
      const bool one = parts.size() == 1;
      throw InputError(fmt::format(
          "{}: tensor{} {} {} {}; expected {} of shape {} ({})", path, one ? "" : "s", joined(w.theirs),
          one ? "is" : "are", found, one ? "a floating-point tensor" : "floating-point tensors",
          c10::str(at::IntArrayRef(expected)),
          w.transposed ? fmt::format("{}'s Conv1D layout [in, out]: the transpose of the gpt model's {}, {}",
                                     format.family, w.ours, c10::str(target.sizes()))
          : parts.size() > 1
              ? fmt::format("concatenated along their first dimension: the gpt model's {}", w.ours)
              : fmt::format("the gpt model's {}", w.ours)));
    }
    target.copy_(source);
    for (const std::string& name : w.theirs) theirs.erase(name);
  }
  if (model.options().tie_embeddings()) {
    const auto head = theirs.find("lm_head.weight");
    if (head != theirs.end()) {
      if (!at::equal(head->second.to(params["embed.weight"].dtype()), params["embed.weight"])) {
        throw InputError(
            fmt::format("{}: lm_head.weight differs from {}, but config.json ties them "
                        "(tie_word_embeddings true); expected equal tensors, or tie_word_embeddings false",
                        path, format.embedding));
      }
      theirs.erase(head);
    }
  }
  if (!theirs.empty()) {
    std::vector<std::string> left;
    for (const auto& entry : theirs) left.push_back(entry.first);
    throw InputError(
        fmt::format("{}: {} tensor{} the gpt model has no place for ('{}'{}); expected the weights of "
                    "a {} alone",
                    path, left.size(), left.size() == 1 ? "" : "s", left.front(),
                    left.size() > 1 ? fmt::format(", '{}', ...", left[1]) : "", format.model_class));
  }
}

void write_folder(const Model& any_model, const std::string& folder, const char* function,
                  const Format& format,
                  const std::function<std::vector<WeightName>(const GPTOptions&)>& names_of,
                  const std::function<std::string(const GPTOptions&)>& refusal,
                  const std::function<json(const GPTOptions&, const data::Tokenizer*)>& config_of,
                  const data::Tokenizer* tokenizer) {
  const auto* gpt = dynamic_cast<const GPT*>(&any_model);
  if (gpt == nullptr) {
    throw InputError(
        fmt::format("{}: the model is not the gpt model; a Hugging Face {} checkpoint holds one (for "
                    "another model's weights: export_weights, a safetensors file under its own names)",
                    function, format.family));
  }
  const GPT& model = *gpt;
  if (!model.causal()) {
    throw InputError(
        fmt::format("{}: a bert model is bidirectional; a {} checkpoint holds a causal language model "
                    "(the gpt model)",
                    function, format.family));
  }
  const GPTOptions& options = model.options();
  const auto refuse = [&](const std::string& what) {
    throw InputError(fmt::format("{}: {}; {}'s format cannot hold it, so nothing was written to '{}'",
                                 function, what, format.family, folder));
  };
  if (const std::string reason = refusal(options); !reason.empty()) refuse(reason);
  for (size_t i = 0; i < model.blocks().size(); ++i) {
    const auto& slots = model.blocks()[i]->slots();
    const auto* attention = slots.at("attn").ptr()->as<SelfAttention>();
    if (attention == nullptr) refuse(fmt::format("block {}'s attention is not a tessera::SelfAttention", i));
    if (attention->alibi())
      refuse("the model attends with ALiBi's biases (alibi) instead of position embeddings");
    if (slots.at("residual_gate").ptr()->as<torch::nn::IdentityImpl>() == nullptr) {
      refuse(
          fmt::format("block {} has a residual gate (stochastic_depth), which scales the block's update in "
                      "evaluation",
                      i));
    }
  }
  if (tokenizer != nullptr && tokenizer->vocab_size() != options.vocab_size()) {
    refuse(
        fmt::format("the tokenizer has {} tokens, the model's vocabulary {} (it is not the tokenizer of the "
                    "model's text)",
                    tokenizer->vocab_size(), options.vocab_size()));
  }
  const std::vector<WeightName> names = names_of(options);
  const auto params = model.named_parameters();
  std::set<std::string> expected;
  for (const WeightName& w : names) expected.insert(w.ours);
  for (const auto& item : params) {
    if (expected.count(item.key()) == 0) {
      refuse(
          fmt::format("the model's weight '{}' has no place in a {} checkpoint (surgery such as "
                      "gated_linear_units or factorize changed the model)",
                      item.key(), format.family));
    }
  }
  Safetensors contents;
  for (const WeightName& w : names) {
    const at::Tensor* tensor = params.find(w.ours);
    if (tensor == nullptr) refuse(fmt::format("the model has no weight '{}' (replaced by surgery)", w.ours));
    at::Tensor t = tensor->detach().to(at::kCPU, at::kFloat);
    if (w.transposed) t = t.t();
    // Concatenated weights split back by the sizes of their parts: the rows of equal-width heads, in order.
    const std::vector<int64_t> rows = [&] {
      if (w.theirs.size() == 1) return std::vector<int64_t>{t.size(0)};
      const int64_t q = options.n_heads(), kv = options.n_kv_heads() > 0 ? options.n_kv_heads() : q;
      const int64_t e = t.size(0) / (q + 2 * kv);
      return std::vector<int64_t>{q * e, kv * e, kv * e};
    }();
    int64_t begin = 0;
    for (size_t i = 0; i < w.theirs.size(); ++i) {
      const std::string& name = w.theirs[i];
      contents.tensors.emplace_back(name == "lm_head.weight" ? name : format.prefix + name,
                                    t.narrow(0, begin, rows[i]).contiguous());
      begin += rows[i];
    }
  }
  contents.metadata = {{"format", "pt"}};
  const json config = config_of(options, tokenizer);
  std::error_code error;
  fs::create_directories(folder, error);
  if (error || !fs::is_directory(folder)) {
    throw InputError(fmt::format("{}: cannot create the folder '{}' ({}); expected a writable path", function,
                                 folder, error ? error.message() : "a file of that name exists"));
  }
  save_safetensors((fs::path(folder) / "model.safetensors").string(), contents);
  checkpoint::write_text_atomically((fs::path(folder) / "config.json").string(), config.dump(2) + "\n");
  if (tokenizer != nullptr) tokenizer->save((fs::path(folder) / "tokenizer.json").string());
}

}  // namespace tessera::hf
