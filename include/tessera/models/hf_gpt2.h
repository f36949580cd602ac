#pragma once
/// Hugging Face GPT-2 checkpoints (transformers' GPT2LMHeadModel, `save_pretrained`'s folder: config.json and
/// model.safetensors) into and out of the gpt model (models/gpt.h): fine-tune a published GPT-2 with Tessera's
/// algorithms, and hand a model trained here to transformers (`GPT2LMHeadModel.from_pretrained(folder)`) for
/// generation or serving (docs/language-models.md, "Hugging Face checkpoints"). models/huggingface.h picks GPT-2's
/// or Llama's format (models/hf_llama.h) by the folder or the model.
///
///     // the recipe's  model: {gpt: {pretrained: checkpoints/gpt2}}  is this:
///     auto model = std::make_shared<tessera::GPT>(tessera::GPTOptions().pretrained("checkpoints/gpt2"));
///     ... train ...
///     tessera::save_gpt2(*model, "exported/gpt2-finetuned");   // transformers reads it
///
/// The two models compute the same function: GPT-2's blocks are the gpt model's pre-norm blocks, its Conv1D
/// weights ([in, out]) the transposes of the Linear ones, its c_attn's output the query, key and value of every head
/// in the order of the qkv slot's, its "gelu_new" the tanh approximation (`activation: gelu_tanh`), its tied head the
/// token embedding (`tie_embeddings`). Tested against transformers on the same weights (logits to 1e-5, greedy
/// generations token for token), both ways (tests/core/hf_interop_test.cpp).
#include <functional>
#include <string>

#include <tessera/models/gpt.h>

namespace tessera {
namespace data {
class Tokenizer;
}

/// `given` with the architecture of the checkpoint in the folder given.pretrained() (its config.json):
/// vocab_size, max_seq_length (n_positions), d_model (n_embd), n_layers, n_heads, d_ff (n_inner, or 4·n_embd),
/// activation, layer_norm_eps and tie_embeddings (tie_word_embeddings, true unless said). The dropouts are
/// given's (GPT-2's config holds 0.1 for each; give `dropout: 0.1, attention_dropout: 0.1` for the same
/// fine-tuning), so are the other options. A shape option that `is_given` says was set (by default: one that
/// differs from GPTOptions()'s default) must equal the checkpoint's. InputError naming the file and the key for a
/// missing or unreadable config.json, a model_type other than gpt2, a GPT-2 variant the gpt model does not compute
/// (cross-attention, attention scaled by layer, an activation other than gelu, gelu_new or gelu_pytorch_tanh), or
/// an option that disagrees.
GPTOptions gpt2_options(const GPTOptions& given,
                        const std::function<bool(const std::string& option)>& is_given = nullptr);

/// Copies the weights of the checkpoint in `folder` (model.safetensors) into `model`, whose options are the
/// checkpoint's (gpt2_options): Conv1D weights transposed, floating-point weights converted to the model's dtype,
/// names with or without "transformer.", the causal-mask buffers of older files skipped, lm_head.weight (untied
/// checkpoints; with tie_embeddings it must equal wte.weight) into the head. CheckpointError for a missing or
/// invalid file; InputError, naming the tensor, for a weight the model needs that the file lacks, one of another
/// shape, or one the model has no place for (another architecture's).
void load_gpt2_weights(GPT& model, const std::string& folder);

/// Writes `model` to `folder` (created if missing) as a Hugging Face GPT-2 checkpoint: config.json
/// (GPT2LMHeadModel, the architecture and the dropouts) and model.safetensors (float32 weights, Hugging Face's
/// names, Conv1D layout), each file written atomically; with `tokenizer` (the one the model's text was encoded
/// with, of the model's vocabulary size) also its tokenizer.json, which transformers' AutoTokenizer reads from the
/// folder, and its <|endoftext|>, if it has one, as the config's bos_token_id and eos_token_id (otherwise null for
/// a vocabulary without GPT-2's 50256). Only a model GPT-2 can hold: InputError, before writing anything, for
/// Llama's options (rotary positions, RMSNorm, gated networks, silu, no biases, grouped attention: save_llama), a bert
/// model, ALiBi, a block that surgery changed into something GPT-2 has not (gated linear units, factorized layers:
/// named by the weight that has no place), stochastic depth (its evaluation scales each block's update), or a
/// tokenizer of another vocabulary size, and for a model that is not the gpt model at all. Weights as they are now
/// (after a run with ema or swa, the averages).
void save_gpt2(const Model& model, const std::string& folder, const data::Tokenizer* tokenizer = nullptr);

}  // namespace tessera
