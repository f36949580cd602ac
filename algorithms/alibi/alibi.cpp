#include "alibi.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/embedding.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/optim/optimizer.h>

namespace tessera::algorithms {

AlibiCounts apply_alibi(torch::nn::Module& model, optim::Optimizer* optimizer) {
  AlibiCounts counts;
  std::vector<at::Tensor> frozen;
  at::NoGradGuard no_grad;
  for (const auto& module : model.modules(/*include_self=*/true)) {
    if (auto* attention = dynamic_cast<SelfAttention*>(module.get())) {
      attention->set_alibi(true);
      ++counts.attentions;
    }
    auto* slotted = dynamic_cast<SlottedModule*>(module.get());
    if (slotted == nullptr || slotted->slots().count("pos_embed") == 0) continue;
    auto* embedding = slotted->slot("pos_embed").ptr()->as<torch::nn::EmbeddingImpl>();
    if (embedding == nullptr) continue;
    embedding->weight.zero_();
    if (embedding->weight.requires_grad()) {
      embedding->weight.set_requires_grad(false);
      frozen.push_back(embedding->weight);
    }
    ++counts.position_embeddings;
  }
  if (optimizer != nullptr && !frozen.empty()) optimizer->remove_parameters(frozen);
  return counts;
}

Alibi::Alibi(AlibiOptions options) : options_(std::move(options)) {
  validate_options(options_, "alibi");
  spec_.name = "alibi";
  spec_.accesses = {{Event::Init, {Resource::ModelStructure},
                     {Resource::ModelStructure, Resource::Parameters, Resource::OptimizerGroups}}};
  if (options_.train_sequence_length_scaling() < 1.0) {
    spec_.accesses.push_back({Event::AfterDataloader, {Resource::Inputs, Resource::Targets},
                              {Resource::Inputs, Resource::Targets, Resource::SequenceLength, Resource::BatchRows}});
    spec_.order.push_back({OrderRule::Relation::After, Selector::named("seq_length_warmup"), Event::AfterDataloader,
                           "alibi shortens the sequences sequence-length warmup leaves, by its fixed factor"});
  }
  spec_.required_on_load = true;
}

void Alibi::check(const State& state) const {
  int64_t attentions = 0;
  for (const auto& module : state.model->modules(/*include_self=*/true)) {
    const auto* attention = dynamic_cast<SelfAttention*>(module.get());
    if (attention != nullptr && attention->rope_theta() > 0) {
      throw InputError("alibi: the model encodes positions by rotary embeddings (the gpt model's positions: rotary); "
                       "ALiBi replaces learned position embeddings, and both together would count each distance "
                       "twice; use positions: learned or remove alibi");
    }
    attentions += attention != nullptr;
  }
  if (attentions == 0) {
    throw InputError(
        "alibi: the model has no tessera::SelfAttention (the attention of the gpt model, models/gpt.h), so it "
        "would have no effect; use the gpt model or remove it");
  }
  if (options_.train_sequence_length_scaling() >= 1.0) return;
  const Batch example = state.train_dataloader->example_batch();
  if (!example.has(Batch::kInput) || example.input().dim() != 2) {
    throw InputError(fmt::format(
        "alibi: train_sequence_length_scaling {:g} shortens token sequences and needs inputs [S] per example; the "
        "training data has {} (or set train_sequence_length_scaling: 1)",
        options_.train_sequence_length_scaling(),
        example.has(Batch::kInput) ? "inputs of shape " + c10::str(example.input().sizes().slice(1)) + " per example"
                                   : std::string("no batch part \"input\"")));
  }
  // Re-cutting needs every part to be a sequence (a classifier's targets [N] are not): refused here, not at batch 0.
  const int64_t s = example.input().size(1);
  try {
    (void)set_seq_length(example, scaled_length(s), /*truncate=*/false);
  } catch (const InputError& e) {
    throw InputError(fmt::format("alibi: train_sequence_length_scaling {:g} re-cuts each batch's sequences into "
                                 "shorter ones, which needs every batch part to be a sequence ({}); set "
                                 "train_sequence_length_scaling: 1 to train on whole sequences",
                                 options_.train_sequence_length_scaling(), e.what()));
  }
}

int64_t Alibi::scaled_length(int64_t s) const {
  return std::max<int64_t>(
      1, static_cast<int64_t>(std::floor(static_cast<double>(s) * options_.train_sequence_length_scaling())));
}

void Alibi::apply(Event event, State& state, Logger& logger) {
  if (event == Event::Init) {
    counts_ = apply_alibi(*state.model, state.optimizer.get());
    logger.info(fmt::format("alibi: linear attention biases in {} attention modules, {} position embeddings zeroed "
                            "and frozen",
                            counts_.attentions, counts_.position_embeddings));
    return;
  }
  state.batch = set_seq_length(state.batch, scaled_length(state.batch.input().size(1)), /*truncate=*/false);
}

}  // namespace tessera::algorithms
