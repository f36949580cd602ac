// The registry's masked language model (include/tessera/models/bert.h).
#include <tessera/models/bert.h>

#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/linear.h>

#include <tessera/error.h>

namespace tessera {

namespace nn = torch::nn;

BERT::BERT(GPTOptions options) : GPT(std::move(options), /*causal=*/false) {}

at::Tensor BERT::loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction) {
  const at::Tensor& targets = batch.target();
  // The first training batch (not the trainer's trial of the loss on an example before step 1, in evaluation mode,
  // which the loader's transforms have not seen).
  if (!checked_targets_ && is_training() && targets.defined() && !at::isFloatingType(targets.scalar_type())) {
    if (!targets.eq(kIgnoreTarget).any().item<bool>()) {
      throw InputError("bert: every target position is a token to predict, so the inputs were not masked and the "
                       "model would learn to copy them; mask the training data (the mask_tokens transform, "
                       "data/transforms.h: targets -100 where nothing is hidden)");
    }
    checked_targets_ = true;
  }
  return cross_entropy(outputs, targets, reduction);
}

// ------------------------------------------------------------------------------------------------ BERTClassifier

BERTClassifier::BERTClassifier(BERTClassifierOptions options)
    : GPT(options, /*causal=*/false, /*language_head=*/false), classifier_options_(std::move(options)) {
  validate_options(classifier_options_, "model");
  if (classifier_options_.num_classes() < 1) {
    throw InputError("model.num_classes: 0; expected the number of classes (at least 1), or data that gives it");
  }
  if (classifier_options_.pad_id() >= classifier_options_.vocab_size()) {
    throw InputError(fmt::format("model.pad_id: {} is outside the vocabulary; expected an id in [0, {})",
                                 classifier_options_.pad_id(), classifier_options_.vocab_size()));
  }
  nn::Linear classifier(classifier_options_.d_model(), classifier_options_.num_classes());
  {
    at::NoGradGuard no_grad;
    classifier->weight.normal_(0.0, 0.02);
    classifier->bias.zero_();
  }
  register_slot("classifier", nn::AnyModule(classifier));
}

at::Tensor BERTClassifier::forward(const Batch& batch) {
  const at::Tensor& ids = batch.input();
  if (!ids.defined() || ids.dim() != 2) return encode(ids);  // encode's message names what was expected
  // The text's tokens; a row of padding alone keeps all its positions (attention needs one key per query).
  at::Tensor keep = ids.ne(classifier_options_.pad_id());
  keep = keep.logical_or(keep.any(1, /*keepdim=*/true).logical_not());
  std::vector<SelfAttention*> attention;
  for (size_t i = 0; i < blocks().size(); ++i) {
    auto* a = blocks()[i]->slot("attn").ptr()->as<SelfAttention>();
    if (a == nullptr) {
      throw InputError(fmt::format("bert_classifier: block {}'s attention is not a tessera::SelfAttention (replaced "
                                   "by surgery), so it cannot leave the padding out",
                                   i));
    }
    attention.push_back(a);
  }
  struct Padding {  // set for this forward only, also when it throws
    std::vector<SelfAttention*>& attention;
    Padding(std::vector<SelfAttention*>& a, const at::Tensor& keep) : attention(a) {
      for (auto* x : attention) x->set_key_padding(keep);
    }
    ~Padding() {
      for (auto* x : attention) x->set_key_padding(at::Tensor());
    }
  } padding(attention, keep);
  const at::Tensor hidden = encode(ids);  // [N, S, D]
  const at::Tensor weights = keep.to(hidden.scalar_type()).unsqueeze(2);
  const at::Tensor pooled = hidden.mul(weights).sum(1).div(weights.sum(1));
  return call("classifier", pooled);
}

at::Tensor BERTClassifier::loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction) {
  return cross_entropy(outputs, batch.target(), reduction);
}

}  // namespace tessera
