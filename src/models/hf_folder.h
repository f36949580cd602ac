#pragma once
// Hugging Face model folders (config.json and model.safetensors, as transformers' save_pretrained writes
// them): what the GPT-2 and Llama readers and writers (include/tessera/models/hf_gpt2.h, hf_llama.h) share.
// Private to the library.
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <tessera/error.h>
#include <tessera/models/gpt.h>

namespace tessera {
namespace data {
class Tokenizer;
}

namespace hf {

using json = nlohmann::json;

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// A checkpoint format: the family's name for messages ("GPT-2"), transformers' class ("GPT2LMHeadModel"),
/// the prefix of the transformer's weights ("transformer."; optional on reading), the token embedding's name
/// under it, and the tensors that are not weights (buffers older files saved).
struct Format {
  const char* family;
  const char* model_class;
  const char* prefix;
  const char* embedding;
  std::function<bool(const std::string& name)> not_a_weight;
};

/// One weight: its name in the gpt model, its name or names (concatenated along dimension 0) in the
/// checkpoint (without the prefix, but for "lm_head.weight"), and whether it is stored transposed there.
struct WeightName {
  std::string ours;
  std::vector<std::string> theirs;
  bool transposed = false;
};

/// A folder's config.json.
struct Config {
  json values;
  std::string path;
  std::string family;
  /// values[key] read as T, or `fallback` when absent (or null, with a fallback); InputError naming the file
  /// and the key when it is missing without a fallback or of another type.
  template <class T>
  T value(const char* key, std::optional<T> fallback = {}) const {
    const auto it = values.find(key);
    if (it == values.end() || (it->is_null() && fallback)) {
      if (fallback) return *fallback;
      throw InputError(fmt::format("{}: no \"{}\"; a {} configuration has it", path, key, family));
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
};

/// The config.json of `folder` (a `pretrained` option's value); InputError for a missing folder or file, or
/// one that is not a JSON object. `family` names the configuration in later messages.
Config read_config(const std::string& folder, std::string family);

/// Sets an option to the checkpoint's `value` (config key `key`): one the user gave (is_given says so;
/// without it, one that differs from its default) must equal it, InputError otherwise.
template <class T, class U>
void set_option(const std::function<bool(const std::string&)>& is_given, const Config& config,
                const char* option, T& field, const T& default_value, const U& value, const char* key) {
  const bool set_by_user = is_given ? is_given(option) : !(field == default_value);
  if (set_by_user && !(field == value)) {
    throw InputError(
        fmt::format("model.{}: {} given, but the pretrained checkpoint's config.json ({}) has {} = {}; "
                    "leave {} out (the checkpoint sets it) or give {}",
                    option, fmt::to_string(field), config.path, key, fmt::to_string(value), option,
                    fmt::to_string(value)));
  }
  field = value;
}

/// Copies the weights `names` of the checkpoint in `folder` (model.safetensors) into `model`; with tied
/// embeddings an lm_head.weight in the file must equal the embedding. CheckpointError for an invalid file;
/// InputError, naming the tensor, for one missing, of another shape, or without a place in the model.
void load_weights(GPT& model, const std::string& folder, const Format& format,
                  const std::vector<WeightName>& names);

/// Writes `model` (the gpt model: `function` names the caller in errors) to `folder` as `format`'s checkpoint
/// with `config`: model.safetensors (float32, the checkpoint's names), config.json, and the tokenizer's
/// tokenizer.json, each atomically. InputError, before anything is written, for a model that is not a causal
/// gpt model, one whose blocks surgery changed (ALiBi, residual gates, weights without a name in `names`), or
/// a tokenizer of another vocabulary size; `refusal` is checked first and refuses the model's options the
/// format cannot hold.
void write_folder(const Model& model, const std::string& folder, const char* function, const Format& format,
                  const std::function<std::vector<WeightName>(const GPTOptions&)>& names,
                  const std::function<std::string(const GPTOptions&)>& refusal,
                  const std::function<json(const GPTOptions&, const data::Tokenizer*)>& config,
                  const data::Tokenizer* tokenizer);

}  // namespace hf
}  // namespace tessera
