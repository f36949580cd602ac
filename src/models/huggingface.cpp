// Hugging Face checkpoints of either architecture (include/tessera/models/huggingface.h).
#include <tessera/models/huggingface.h>

#include <fmt/format.h>

#include <tessera/error.h>
#include <tessera/models/hf_gpt2.h>
#include <tessera/models/hf_llama.h>

#include "hf_folder.h"

namespace tessera {
namespace {

/// The folder's model_type (InputError as read_config's for a folder without a readable config.json).
std::string model_type(const std::string& folder) {
  const hf::Config config = hf::read_config(folder, "Hugging Face");
  const std::string type = config.value<std::string>("model_type", std::string());
  if (type != "gpt2" && type != "llama") {
    throw InputError(
        fmt::format("{}: model_type is '{}'; the gpt model reads GPT-2 (model_type gpt2) and Llama "
                    "(model_type llama) checkpoints",
                    config.path, type));
  }
  return type;
}

}  // namespace

GPTOptions pretrained_options(const GPTOptions& given,
                              const std::function<bool(const std::string&)>& is_given) {
  return model_type(given.pretrained()) == "llama" ? llama_options(given, is_given)
                                                   : gpt2_options(given, is_given);
}

void load_pretrained_weights(GPT& model, const std::string& folder) {
  if (model_type(folder) == "llama") {
    load_llama_weights(model, folder);
  } else {
    load_gpt2_weights(model, folder);
  }
}

void save_huggingface(const Model& model, const std::string& folder, const data::Tokenizer* tokenizer) {
  const auto* gpt = dynamic_cast<const GPT*>(&model);
  if (gpt == nullptr) {
    throw InputError(
        "save_huggingface: the model is not the gpt model; a Hugging Face GPT-2 or Llama checkpoint "
        "holds one (for another model's weights: export_weights, a safetensors file under its own names)");
  }
  const GPTOptions& options = gpt->options();
  if (options.positions() == "rotary" || options.norm() == "rms_norm" || options.gated()) {
    save_llama(model, folder, tokenizer);
  } else {
    save_gpt2(model, folder, tokenizer);
  }
}

}  // namespace tessera
