#pragma once
/// Hugging Face checkpoints of either architecture the gpt model computes: GPT-2 (models/hf_gpt2.h) and Llama
/// (models/hf_llama.h), chosen by the folder's config.json (model_type) on reading and by the model's options
/// on writing. What the gpt model's `pretrained` option, tessera-run's --export-huggingface and the Python
/// Trainer.export_huggingface use.
#include <functional>
#include <string>

#include <tessera/models/gpt.h>

namespace tessera {
namespace data {
class Tokenizer;
}

/// `given` with the architecture of the checkpoint in given.pretrained(): gpt2_options for a config.json of
/// model_type gpt2, llama_options for llama. InputError naming the file for any other model_type (and the
/// errors of those two).
GPTOptions pretrained_options(const GPTOptions& given,
                              const std::function<bool(const std::string& option)>& is_given = nullptr);

/// load_gpt2_weights or load_llama_weights, by the folder's model_type.
void load_pretrained_weights(GPT& model, const std::string& folder);

/// save_llama for a gpt model of Llama's architecture (rotary positions, RMSNorm or gated feed-forward
/// networks), save_gpt2 otherwise; InputError for a model that is not the gpt model.
void save_huggingface(const Model& model, const std::string& folder,
                      const data::Tokenizer* tokenizer = nullptr);

}  // namespace tessera
