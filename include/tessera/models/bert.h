#pragma once
/// A small BERT-style encoder (Devlin et al. 2019) trained by masked language modelling: the transformer of the gpt
/// model (models/gpt.h: the same options, blocks, slots and initialisation) with bidirectional attention, so that
/// every position sees the whole sequence. Its token embedding has one row more than the vocabulary: id vocab_size
/// is the mask token. Outputs are logits [N, vocab, S] over the original tokens.
///
/// It learns from batches whose inputs have some tokens hidden and whose targets hold the hidden tokens' ids and
/// kIgnoreTarget (−100) everywhere else: what the `mask_tokens` transform (data/transforms.h) makes of any token
/// batch. The loss, accuracy, cross-entropy and perplexity count the masked positions only.
///
///     auto model = std::make_shared<tessera::BERT>(
///         tessera::GPTOptions().vocab_size(256).max_seq_length(128).d_model(128).n_layers(4).n_heads(4));
#include <tessera/models/gpt.h>

namespace tessera {

/// The masked language model (recipe name "bert"; options as GPTOptions). Composes with the algorithms that act on
/// the gpt model's modules (ALiBi with symmetric biases −m·|i − j|, gated linear units, low-precision LayerNorm,
/// stochastic depth, gyro dropout, ...); it has no key/value cache and does not generate text.
class BERT : public GPT {
 public:
  /// Throws InputError on invalid options, as GPT.
  explicit BERT(GPTOptions options);
  /// Cross-entropy over the masked positions (targets other than kIgnoreTarget); per example (Reduction::None),
  /// the mean over that example's masked positions (0 when it has none). The first training batch's targets (in
  /// training mode) must hold kIgnoreTarget entries: targets without any are refused (InputError) as unmasked data,
  /// which would teach the model to copy its input.
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction = Reduction::Mean) override;

 private:
  bool checked_targets_ = false;
};

}  // namespace tessera
