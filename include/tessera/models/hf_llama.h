#pragma once
/// Hugging Face Llama checkpoints (transformers' LlamaForCausalLM, `save_pretrained`'s folder: config.json
/// and model.safetensors) into and out of the gpt model (models/gpt.h) built with Llama's architecture:
/// fine-tune a published Llama-family model (TinyLlama, SmolLM, Llama 2, Llama 3 without rope scaling, ...)
/// with Tessera's algorithms, and hand one trained here to transformers (docs/language-models.md, "Hugging
/// Face checkpoints").
///
///     // the recipe's  model: {gpt: {pretrained: checkpoints/tinyllama}}  is this (models/huggingface.h):
///     auto model =
///     std::make_shared<tessera::GPT>(tessera::GPTOptions().pretrained("checkpoints/tinyllama"));
///     ... train ...
///     tessera::save_llama(*model, "exported/tinyllama-finetuned");   // transformers reads it
///
/// The two models compute the same function: Llama's decoder layers are the gpt model's pre-norm blocks with
/// RMSNorm (`norm: rms_norm`), rotary position embeddings in the half-split layout (`positions: rotary`,
/// `rope_theta`), SwiGLU feed-forward networks (`gated`, `activation: silu`: gate_proj, up_proj and down_proj
/// are fc_gated, fc_linear and proj), no biases (`bias: false`, or attention_bias and mlp_bias both true) and
/// grouped-query attention (`n_kv_heads`); q_proj, k_proj and v_proj are the qkv slot's rows in that order.
/// Tested against transformers on the same weights (logits, greedy generations), both ways
/// (tests/core/hf_interop_test.cpp).
#include <functional>
#include <string>

#include <tessera/models/gpt.h>

namespace tessera {
namespace data {
class Tokenizer;
}

/// `given` with the architecture of the Llama checkpoint in the folder given.pretrained() (its config.json):
/// vocab_size, max_seq_length (max_position_embeddings), d_model (hidden_size), n_layers (num_hidden_layers),
/// n_heads (num_attention_heads), n_kv_heads (num_key_value_heads), d_ff (intermediate_size), activation
/// (hidden_act), layer_norm_eps (rms_norm_eps), rope_theta, bias (attention_bias), tie_embeddings
/// (tie_word_embeddings, false unless said), and norm rms_norm, positions rotary, gated true. The dropouts
/// are given's. An option that `is_given` says was set (by default: one that differs from GPTOptions()'s
/// default) must equal the checkpoint's. InputError naming the file and the key for a missing or unreadable
/// config.json, a model_type other than llama, or what the gpt model does not compute: rope_scaling
/// (long-context scaling of the rotary frequencies), a head_dim other than hidden_size / num_attention_heads,
/// attention_bias differing from mlp_bias, an activation other than silu, gelu, gelu_new or
/// gelu_pytorch_tanh.
GPTOptions llama_options(const GPTOptions& given,
                         const std::function<bool(const std::string& option)>& is_given = nullptr);

/// Copies the weights of the Llama checkpoint in `folder` (model.safetensors) into `model`, whose options are
/// the checkpoint's (llama_options): q_proj, k_proj and v_proj concatenated into the qkv slot, floating-point
/// weights converted to the model's dtype, names with or without "model.", the rotary inverse frequencies of
/// older files skipped, lm_head.weight into the head (with tie_embeddings it must equal embed_tokens.weight).
/// Errors as load_gpt2_weights'.
void load_llama_weights(GPT& model, const std::string& folder);

/// Writes `model` to `folder` (created if missing) as a Hugging Face Llama checkpoint: config.json
/// (LlamaForCausalLM) and model.safetensors (float32 weights, transformers' names), each file written
/// atomically; with `tokenizer` also its tokenizer.json, and its <s> and </s> (or <|begin_of_text|> and
/// <|end_of_text|>, or <|endoftext|>) as the config's bos_token_id and eos_token_id. Only a model Llama can
/// hold: InputError, before writing anything, for learned positions, LayerNorms, ungated feed-forward
/// networks, attention or feed-forward layers with biases unless both, a bert model, ALiBi, stochastic depth,
/// weights surgery added (factorize), a tokenizer of another vocabulary size, or a model that is not the gpt
/// model. The residual dropout (`dropout`, which Llama has not) is a training setting, not part of the
/// function: not written.
void save_llama(const Model& model, const std::string& folder, const data::Tokenizer* tokenizer = nullptr);

}  // namespace tessera
