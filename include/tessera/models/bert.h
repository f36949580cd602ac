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
///
/// BERTClassifier (recipe name "bert_classifier") is the same encoder fine-tuned for text classification: it loads
/// a masked-language-model run's weights and puts a classifier on the mean of its token outputs.
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

/// Options of `BERTClassifier` (recipe name "bert_classifier"): the bert model's (GPTOptions; vocab_size 256, the
/// bytes, unless set), the number of classes and the padding token. The GPTOptions setters return GPTOptions&, so
/// set those fields in a statement of their own (as in the example below).
struct BERTClassifierOptions : GPTOptions {
  BERTClassifierOptions() { vocab_size(256); }
  /// Classes (0 = filled in from the data's number of classes by the registry).
  TESSERA_OPTION(int64_t, num_classes) = 0;
  /// The token id that pads a text to the batch's length (text_classification data pads with byte 0): no query
  /// attends to it and the pooled mean leaves it out.
  TESSERA_OPTION(int64_t, pad_id) = 0;
  template <class V>
  void visit(V& v) {
    GPTOptions::visit(v);
    v("num_classes", num_classes_, "number of classes (0 = from the data)", Range::at_least(0));
    v("pad_id", pad_id_, "the token id that pads texts (not attended to, not pooled)", Range::at_least(0));
  }
};

/// A text classifier on the bert model's encoder (Devlin et al. 2019, fine-tuning for sequence classification):
/// the same embeddings, blocks and final LayerNorm as BERT, with the same parameter names, so that the weights of a
/// masked-language-model run load into it (checkpoint `load_path` with `weights_only: true, strict: false`: all but
/// the language head, which it does not have); then the mean of the final LayerNorm's output over the text's tokens
/// (positions whose id is not pad_id) and slot "classifier" (Linear D -> num_classes, normal(0, 0.02), bias 0).
/// Padding is left out of attention too (SelfAttention::set_key_padding), so a text's logits do not depend on how
/// much padding follows it (up to rounding). Inputs are token ids [N, S] (a row of padding alone attends to and
/// pools all its positions); outputs are logits [N, num_classes]; loss, accuracy and the other classification
/// metrics take targets [N] (class ids).
///
///     tessera::BERTClassifierOptions options;
///     options.num_classes(5);
///     options.max_seq_length(32).d_model(64).n_layers(2).n_heads(2);
///     auto model = std::make_shared<tessera::BERTClassifier>(options);
class BERTClassifier : public GPT {
 public:
  /// Throws InputError on invalid options (as GPT; num_classes 0, pad_id outside the vocabulary).
  explicit BERTClassifier(BERTClassifierOptions options);
  /// Logits [N, num_classes]. InputError for ids outside the vocabulary (as the bert model), and when a block's
  /// attention was replaced by a module that cannot leave padding out.
  at::Tensor forward(const Batch& batch) override;
  /// Cross-entropy against class ids [N] (or dense targets [N, C]).
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction = Reduction::Mean) override;
  int64_t num_classes() const override { return classifier_options_.num_classes(); }
  const BERTClassifierOptions& classifier_options() const noexcept { return classifier_options_; }

 protected:
  const char* model_name() const noexcept override { return "bert_classifier"; }

 private:
  BERTClassifierOptions classifier_options_;
};

}  // namespace tessera
