#pragma once
/// Text generation from a language model: autoregressive sampling of next tokens.
///
/// The model is any `Model` whose outputs are next-token logits [N, vocab, S] for token ids [N, S] (the `gpt`
/// model, or a user's own language model). Each step takes the logits of the last position of the last
/// `max_context` tokens of every row: for the gpt model, from a key/value cache (GPT::forward_cached: each step
/// computes the new token's keys and values only) while the sequence fits in the context; otherwise by running
/// the model on the whole window again. Then it picks the next token of each row: the most likely one (temperature 0), or a draw from
/// softmax(logits / temperature) restricted to the top_k most likely tokens and then to the smallest set whose
/// probability reaches top_p (nucleus sampling). The draws come from Tessera's counter-based generator
/// (rng.h) on stream (seed, row, step), in float64 on the host: the same seed gives the same text on every
/// device and LibTorch version, and generation does not touch the training generators.
///
///     auto tokens = tessera::generate(*model, prompt /* int64 [N, P] */,
///                                     tessera::GenerateOptions().max_new_tokens(100).temperature(0.8).top_k(40));
///     std::string text = tessera::bytes_to_text(tokens[0]);  // the byte-level vocabulary of data/text.h
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include <tessera/options.h>

namespace tessera {

class Model;
namespace data {
class Tokenizer;
}

/// Options of `generate`, and of the `generate` callback's sampling.
struct GenerateOptions {
  TESSERA_OPTION(int64_t, max_new_tokens) = 64;
  TESSERA_OPTION(double, temperature) = 1.0;
  TESSERA_OPTION(int64_t, top_k) = 0;
  TESSERA_OPTION(double, top_p) = 1.0;
  TESSERA_OPTION(int64_t, seed) = 0;
  TESSERA_OPTION(int64_t, eos_token) = -1;
  /// eos_token given as its text ("<|endoftext|>", a tokenizer's added token; "\n", one byte): resolved to its id
  /// by resolve_eos_text with the prompts' tokenizer, which the generate callback, tessera-run --generate and
  /// Python's generate do; generate() itself refuses it (it does not know the tokenizer).
  TESSERA_OPTION(std::string, eos_text) = "";
  TESSERA_OPTION(int64_t, max_context) = 0;
  TESSERA_OPTION(bool, kv_cache) = true;
  template <class V>
  void visit(V& v) {
    v("max_new_tokens", max_new_tokens_, "tokens to add to each prompt", Range::at_least(1));
    v("temperature", temperature_, "softmax temperature (0 = always the most likely token)", Range::at_least(0));
    v("top_k", top_k_, "sample among the k most likely tokens (0 = all)", Range::at_least(0));
    v("top_p", top_p_, "then among the fewest most likely tokens whose probability reaches top_p", Range::open_closed(0, 1));
    v("seed", seed_, "seed of the draws (the same seed gives the same text)", Range::at_least(0));
    v("eos_token", eos_token_, "a row stops after this token (-1 = none)", Range::at_least(-1));
    v("eos_text", eos_text_, "eos_token as the text of one token, such as \"<|endoftext|>\" (\"\" = none)", Any{});
    v("max_context", max_context_, "tokens the model sees (0 = the gpt model's max_seq_length, else all)",
      Range::at_least(0));
    v("kv_cache", kv_cache_, "reuse the gpt model's attention keys and values from step to step", Any{});
  }
};

/// The prompts [N, P] (integer token ids, P >= 1, on any device) followed by up to max_new_tokens generated tokens
/// each: int64 [N, P + T] on the prompts' device, T = max_new_tokens, or fewer when every row has produced
/// eos_token (a row that has stops there and is padded with eos_token). Runs the model in eval mode without
/// gradients and restores its mode. Throws InputError for bad options or prompts (not 2-D integer ids, empty, a
/// token outside the model's vocabulary when it declares one) and when the model's outputs are not logits
/// [N, vocab, S].
at::Tensor generate(Model& model, const at::Tensor& prompt, const GenerateOptions& options = {});

/// `options` with eos_text (if any) turned into eos_token: the id of the one token `tokenizer` encodes it to (an added
/// token's text, or a text its merges make one token), or of its one byte when `tokenizer` is null. InputError when
/// eos_text and eos_token are both given, or when the text is not exactly one token (the tokens it is are named).
GenerateOptions resolve_eos_text(GenerateOptions options, const data::Tokenizer* tokenizer);

/// Text as token ids of the byte-level vocabulary (data/text.h): int64 [bytes].
at::Tensor text_to_bytes(const std::string& text);
/// Token ids [S] of the byte-level vocabulary as text (InputError for an id outside [0, 256)). The bytes are
/// returned as they are: a model may produce byte sequences that are not valid UTF-8.
std::string bytes_to_text(const at::Tensor& tokens);

/// Text as token ids [tokens] of `tokenizer` (data/tokenizer.h), or of the byte-level vocabulary when it is null.
at::Tensor text_to_tokens(const std::string& text, const data::Tokenizer* tokenizer);
/// Token ids [S] as text: decoded by `tokenizer`, or bytes_to_text when it is null.
std::string tokens_to_text(const at::Tensor& tokens, const data::Tokenizer* tokenizer);

}  // namespace tessera
