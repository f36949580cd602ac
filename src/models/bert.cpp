// The registry's masked language model (include/tessera/models/bert.h).
#include <tessera/models/bert.h>

#include <ATen/ATen.h>

#include <tessera/error.h>

namespace tessera {

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

}  // namespace tessera
