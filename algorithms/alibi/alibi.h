#pragma once
/// ALiBi, attention with linear biases (Press et al. 2022, "Train Short, Test Long"; Composer's Alibi): no position
/// embedding; each attention head h instead adds −m_h·|i − j| to the score of key j for query i, so a model trained
/// on short sequences evaluates on longer ones (causal attention sees j <= i only; bidirectional attention, the bert
/// model's, both sides, as in Composer's BERT surgery).
///
/// Surgery at Init on every tessera::SelfAttention (the gpt and bert models' attention, models/gpt.h): ALiBi on
/// (the slopes follow from the head count: no new parameter or buffer). Every position embedding of the model (an
/// Embedding in a slot named "pos_embed") is zeroed and frozen: it leaves the optimizer with its state, as in
/// Composer, so the state-dict keys stay. At AfterDataloader every training batch of sequences [N, S] is re-chunked
/// into [⌊N·S/L⌋, L] with L = max(1, ⌊S·train_sequence_length_scaling⌋) (Composer's reshape to [N/r, S·r]; the
/// remainder dropped): the same tokens in shorter sequences. Evaluation sees the full length.
///
///     tessera::algorithms::apply_alibi(*model, optimizer.get());   // the surgery alone
#include <cstdint>

#include <tessera/algorithm.h>
#include <tessera/models/gpt.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct AlibiOptions {
  /// Training sequences are this fraction of the data's length (1 = unchanged).
  TESSERA_OPTION(double, train_sequence_length_scaling) = 0.25;
  template <class V>
  void visit(V& v) {
    v("train_sequence_length_scaling", train_sequence_length_scaling_,
      "training sequences are this fraction of the data's (1 = unchanged)", Range::open_closed(0, 1));
  }
};

/// What the surgery changed.
struct AlibiCounts {
  int64_t attentions = 0;           ///< attention modules with ALiBi on
  int64_t position_embeddings = 0;  ///< position embeddings zeroed and frozen
};

/// The surgery: ALiBi on in every SelfAttention of `model`, every "pos_embed" Embedding zeroed, frozen and
/// (with `optimizer`) removed from it. Idempotent.
AlibiCounts apply_alibi(torch::nn::Module& model, optim::Optimizer* optimizer = nullptr);

/// The algorithm (recipe name "alibi").
class Alibi : public Algorithm {
 public:
  explicit Alibi(AlibiOptions options = AlibiOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// A model with at least one SelfAttention (found with the surgery's own walk), and with a scaling below 1,
  /// token sequences [N, S] as training inputs.
  void check(const State& state) const override;
  const AlibiOptions& options() const noexcept { return options_; }
  const AlibiCounts& counts() const noexcept { return counts_; }

 private:
  AlibiOptions options_;
  AlgorithmSpec spec_;
  /// The training sequence length for sequences of s tokens: floor(s · train_sequence_length_scaling), at least 1.
  int64_t scaled_length(int64_t s) const;

  AlibiCounts counts_;
};

}  // namespace tessera::algorithms
