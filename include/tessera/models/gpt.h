#pragma once
/// A small GPT (Radford et al. 2019): a decoder-only transformer language model over token ids [N, S].
/// Token and learned position embeddings, `n_layers` pre-norm blocks (x + attn(ln1(x)), then x + mlp(ln2(x))),
/// a final LayerNorm and a linear head to the vocabulary. Outputs are logits [N, vocab, S] (classes in dimension
/// 1, as every Tessera loss and metric expects), trained with next-token cross-entropy.
///
/// Options turn the same model into Llama's architecture (Touvron et al. 2023): RMSNorm (`norm: rms_norm`), rotary
/// position embeddings (`positions: rotary`), gated SiLU feed-forward networks (`gated`, `activation: silu`),
/// no biases (`bias: false`) and grouped-query attention (`n_kv_heads`); models/hf_llama.h reads and writes
/// Hugging Face Llama checkpoints.
///
///     auto model = std::make_shared<tessera::GPT>(
///         tessera::GPTOptions().vocab_size(256).max_seq_length(128).d_model(128).n_layers(4).n_heads(4));
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <tessera/models/model.h>
#include <tessera/options.h>

namespace tessera {

/// Options of `GPT` (recipe name "gpt") and of `BERT` (recipe name "bert", models/bert.h).
struct GPTOptions {
  /// Vocabulary size (0 = filled in from the data's number of classes by the registry).
  TESSERA_OPTION(int64_t, vocab_size) = 0;
  /// Longest sequence the position embedding covers (0 = filled in from the data's sequence length).
  TESSERA_OPTION(int64_t, max_seq_length) = 0;
  /// Width of the residual stream.
  TESSERA_OPTION(int64_t, d_model) = 128;
  /// Number of transformer blocks.
  TESSERA_OPTION(int64_t, n_layers) = 4;
  /// Attention heads per block (must divide d_model).
  TESSERA_OPTION(int64_t, n_heads) = 4;
  /// Hidden width of each block's feed-forward network (0 = 4·d_model).
  TESSERA_OPTION(int64_t, d_ff) = 0;
  /// GPT-2's residual and embedding dropout (its resid_pdrop and embd_pdrop; 0 = none): a torch::nn::Dropout in
  /// slot "embed_dropout" of the model and in slots "attn_dropout" and "mlp_dropout" of every block, which
  /// gyro_dropout replaces.
  TESSERA_OPTION(double, dropout) = 0.0;
  /// GPT-2's attention dropout (attn_pdrop; 0 = none): dropout of the attention probabilities in training.
  TESSERA_OPTION(double, attention_dropout) = 0.0;
  /// The feed-forward networks' activation: "gelu" (exact, erf), "gelu_tanh" (the tanh approximation: GPT-2's
  /// "gelu_new") or "silu" (x·sigmoid(x): Llama's); gated_linear_units keeps it.
  TESSERA_OPTION(std::string, activation) = "gelu";
  /// The epsilon of every norm (GPT-2's layer_norm_epsilon, Llama's rms_norm_eps).
  TESSERA_OPTION(double, layer_norm_eps) = 1e-5;
  /// The blocks' and the final norm: "layer_norm" (GPT-2's) or "rms_norm" (RMSNorm, Zhang & Sennrich 2019: Llama's).
  TESSERA_OPTION(std::string, norm) = "layer_norm";
  /// How the model knows positions: "learned" (an embedding of each position added to the tokens', slot
  /// "pos_embed": GPT-2's) or "rotary" (queries and keys rotated by their position, RoPE, Su et al. 2021: Llama's;
  /// no weights, no "pos_embed" slot).
  TESSERA_OPTION(std::string, positions) = "learned";
  /// The base of the rotary embeddings' frequencies (Llama's rope_theta); positions: rotary only.
  TESSERA_OPTION(double, rope_theta) = 10000.0;
  /// Key and value heads of each block (grouped-query attention, Ainslie et al. 2023: query head h uses key/value
  /// head h / (n_heads / n_kv_heads)); must divide n_heads; 0 = n_heads (multi-head attention).
  TESSERA_OPTION(int64_t, n_kv_heads) = 0;
  /// Gated feed-forward networks from the start: proj(act(fc_gated(x)) ⊙ fc_linear(x)) (GatedFeedForward; with
  /// activation silu, Llama's SwiGLU).
  TESSERA_OPTION(bool, gated) = false;
  /// Biases in the Linear layers of the attention and the feed-forward networks (GPT-2's; Llama has none).
  TESSERA_OPTION(bool, bias) = true;
  /// The gpt model's head multiplies by the token embedding's weight (GPT-2's tied embeddings): no "head" slot and
  /// no weight of its own. Not for bert models.
  TESSERA_OPTION(bool, tie_embeddings) = false;
  /// A Hugging Face GPT-2 folder (config.json and model.safetensors, as `save_pretrained` writes them; "" = none):
  /// the gpt model takes its architecture from config.json and starts from its weights (models/hf_gpt2.h). The
  /// shape options above must then be left out or equal the checkpoint's. Not for bert models.
  TESSERA_OPTION(std::string, pretrained) = "";
  template <class V>
  void visit(V& v) {
    v("vocab_size", vocab_size_, "vocabulary size (0 = from the data)", Range::at_least(0));
    v("max_seq_length", max_seq_length_, "longest sequence (0 = from the data)", Range::at_least(0));
    v("d_model", d_model_, "width of the residual stream", Range::at_least(1));
    v("n_layers", n_layers_, "number of transformer blocks", Range::at_least(1));
    v("n_heads", n_heads_, "attention heads per block (must divide d_model)", Range::at_least(1));
    v("d_ff", d_ff_, "hidden width of the feed-forward networks (0 = 4 * d_model)", Range::at_least(0));
    v("dropout", dropout_, "dropout of the embeddings and of each residual branch (0 = none)", Range::closed_open(0, 1));
    v("attention_dropout", attention_dropout_, "dropout of the attention probabilities (0 = none)",
      Range::closed_open(0, 1));
    v("activation", activation_, "activation of the feed-forward networks", Choices{{"gelu", "gelu_tanh", "silu"}});
    v("layer_norm_eps", layer_norm_eps_, "epsilon of every norm", Range::positive());
    v("norm", norm_, "the norm of the blocks and of the output", Choices{{"layer_norm", "rms_norm"}});
    v("positions", positions_, "how positions are encoded", Choices{{"learned", "rotary"}});
    v("rope_theta", rope_theta_, "base of the rotary embeddings' frequencies", Range::positive());
    v("n_kv_heads", n_kv_heads_, "key/value heads per block (0 = n_heads; must divide n_heads)", Range::at_least(0));
    v("gated", gated_, "gated feed-forward networks (GLU; SwiGLU with activation silu)", Any{});
    v("bias", bias_, "biases in the attention's and feed-forward networks' Linear layers", Any{});
    v("tie_embeddings", tie_embeddings_, "the head multiplies by the token embedding's weight (gpt only)", Any{});
    v("pretrained", pretrained_, "a Hugging Face GPT-2 folder to start from (gpt only; \"\" = none)", Any{});
  }
};

/// Multi-head self-attention over x [N, S, D]: slots "qkv" (Linear D -> (H + 2·KV)·D/H: the queries of the H heads,
/// then the keys and the values of the KV = n_kv_heads key/value heads; KV = H, 3D wide, unless given) and "proj"
/// (Linear D -> D). Causal (the gpt model's): position i attends to positions j <= i; bidirectional (`causal`
/// false, the bert model's): to every position. Weights softmax(q·k / sqrt(D/H) + b), where b = 0, or with ALiBi on
/// (algorithms/alibi) b = −m_h·|i − j|, head h's slope m_h from `alibi_slopes`. Query head h uses key/value head
/// h / (H / KV) (grouped-query attention). With `rope_theta` > 0 queries and keys are rotated by their position
/// first (`rotary_embedding`). In training, `dropout` > 0 drops attention probabilities (scaling the kept ones by
/// 1/(1 − dropout)), drawing from torch's generator. `bias` false: the two Linear layers have no biases.
class SelfAttention : public SlottedModule {
 public:
  SelfAttention(int64_t d_model, int64_t n_heads, double dropout = 0.0, bool causal = true, int64_t n_kv_heads = 0,
                double rope_theta = 0.0, bool bias = true);
  at::Tensor forward(const at::Tensor& x);
  int64_t n_heads() const noexcept { return n_heads_; }
  /// Key/value heads (n_heads unless grouped).
  int64_t n_kv_heads() const noexcept { return n_kv_heads_; }
  double dropout() const noexcept { return dropout_; }
  bool causal() const noexcept { return causal_; }
  /// The rotary embeddings' base (0: no rotary embeddings).
  double rope_theta() const noexcept { return rope_theta_; }
  /// Incremental attention for generation (causal attention only; InputError otherwise): the attention of T new
  /// positions x [N, T, D], which follow the P positions whose keys and values `keys` and `values` hold
  /// ([N, KV, P, D/H], keys rotated; undefined when P = 0), over those and their own; appends their keys and
  /// values. What forward gives the last T positions of the whole sequence, up to rounding (without dropout: for
  /// evaluation).
  at::Tensor forward_cached(const at::Tensor& x, at::Tensor& keys, at::Tensor& values);
  /// Turns the linear attention biases of ALiBi on or off (no parameters or buffers: the slopes follow from n_heads).
  void set_alibi(bool on) noexcept { alibi_ = on; }
  bool alibi() const noexcept { return alibi_; }
  /// The keys every query may attend to in the next forwards, bool [N, S] (false: padding, which no query sees);
  /// undefined (the default): all. A model that pads its texts sets it around its forward (the bert_classifier
  /// model). Each row must keep at least one key; forward throws InputError when the shape is not x's [N, S].
  void set_key_padding(at::Tensor keep) { keep_ = std::move(keep); }

 private:
  /// Queries [N, H, T, D/H], keys and values [N, KV, T, D/H] of x [N, T, D] at positions past .. past + T − 1.
  std::array<at::Tensor, 3> heads(const at::Tensor& x, int64_t past);

  int64_t n_heads_;
  int64_t n_kv_heads_;
  double dropout_;
  bool causal_;
  double rope_theta_;
  bool alibi_ = false;
  at::Tensor keep_;
};

/// Rotary position embeddings (RoPE, Su et al. 2021, in the half-split layout of transformers' Llama): x [..., T, E]
/// of positions past .. past + T − 1 (E even) with each pair (x_i, x_{i+E/2}) rotated by the angle p·θ^(−2i/E) of
/// its position p; angles computed in float32, the result in x's type.
at::Tensor rotary_embedding(const at::Tensor& x, int64_t past, double theta);

/// ALiBi's head slopes (Press et al. 2022), float [n_heads] on `options`' device: for H a power of two,
/// m_h = 2^(−8(h+1)/H); otherwise the slopes of the largest power of two n < H, then every other slope of 2n's
/// (2^(−4(2k+1)/n), k = 0, 1, ...) up to H.
at::Tensor alibi_slopes(int64_t n_heads, const at::TensorOptions& options);
/// The attention bias of ALiBi over `seq_length` positions: [n_heads, S, S] with entry (h, i, j) = −m_h·|i − j|
/// (symmetric: bidirectional attention sees both halves, causal attention the lower one).
at::Tensor alibi_bias(int64_t n_heads, int64_t seq_length, const at::TensorOptions& options);

/// The feed-forward network of a block: slots "fc" (Linear D -> F), then the activation (GELU, exact for
/// `activation` "gelu", the tanh approximation for "gelu_tanh"; SiLU for "silu"), then "proj" (Linear F -> D).
class FeedForward : public SlottedModule {
 public:
  FeedForward(int64_t d_model, int64_t d_ff, std::string activation = "gelu", bool bias = true);
  at::Tensor forward(const at::Tensor& x);
  /// "gelu", "gelu_tanh" or "silu".
  const std::string& activation() const noexcept { return activation_; }

 private:
  std::string activation_;
};

/// A gated feed-forward network (a gated linear unit, Shazeer 2020): slots "fc_gated" and "fc_linear" (Linear
/// D -> F) and "proj" (F -> D); forward(x) = proj(act(fc_gated(x)) ⊙ fc_linear(x)). What the blocks of a model with
/// `gated` hold (with silu: Llama's SwiGLU), and what gated_linear_units (algorithms/) puts in place of a
/// FeedForward, keeping its proj.
class GatedFeedForward : public SlottedModule {
 public:
  /// New gated layers D -> F, with biases or not, weights normal(0, 0.02); `proj` the output projection.
  GatedFeedForward(int64_t d_model, int64_t d_ff, std::string activation, bool gated_bias, bool linear_bias,
                   torch::nn::AnyModule proj);
  at::Tensor forward(const at::Tensor& x);
  const std::string& activation() const noexcept { return activation_; }

 private:
  std::string activation_;
};

/// The activation of x by name: GELU, exact for "gelu", the tanh approximation for "gelu_tanh"; SiLU for "silu"
/// (anything else: InputError).
at::Tensor activate(const at::Tensor& x, const std::string& activation);

/// RMSNorm (Zhang & Sennrich 2019; Llama's norm) over the last dimension: weight ⊙ x / sqrt(mean(x²) + eps), the
/// normalisation computed in float32 and returned in x's type before the weight multiplies it, as transformers'
/// LlamaRMSNorm. Parameter "weight" [D], starting at 1.
class RMSNormImpl : public torch::nn::Cloneable<RMSNormImpl> {
 public:
  RMSNormImpl(int64_t d, double eps);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  int64_t d;
  double eps;
  at::Tensor weight;
};
TORCH_MODULE(RMSNorm);

/// A pre-norm transformer block: slots "ln1" (LayerNorm, or RMSNorm with `norm: rms_norm`), "attn" (SelfAttention,
/// causal or not), "ln2" (like ln1), "mlp" (FeedForward, or GatedFeedForward with `gated`); y = x + attn(ln1(x)),
/// then y + mlp(ln2(y)). With dropout > 0 the two branches pass through
/// the torch::nn::Dropout of slots "attn_dropout" and "mlp_dropout" before they are added, as rows [N·S, D] (one row
/// per token, so that a feature-wise dropout such as gyro_dropout sees the D features of each token).
///
/// The whole block is one residual branch for stochastic depth: slot "residual_gate" (an Identity, models/
/// branch_gate.h) gates the block's update z − x of its output z. A BranchGate that drops the block returns x
/// without computing it (LayerDrop, Fan et al. 2020); another gate g gives x + g(z − x); the Identity gives z.
class GPTBlock : public SlottedModule {
 public:
  /// The block of a model with `options` (checked by GPT's constructor).
  explicit GPTBlock(const GPTOptions& options, bool causal = true);
  at::Tensor forward(const at::Tensor& x);
  /// forward for T new positions x [N, T, D] after those whose attention keys and values are cached
  /// (SelfAttention::forward_cached; InputError when the "attn" slot holds another module).
  at::Tensor forward_cached(const at::Tensor& x, at::Tensor& keys, at::Tensor& values);

 private:
  /// The block around `attention` (the attention branch before its dropout).
  at::Tensor forward_with(const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& attention);
};

/// The attention keys and values of every block for the tokens a GPT has seen: what GPT::forward_cached extends.
struct KVCache {
  std::vector<at::Tensor> keys, values;  ///< per block, [N, KV, length, D/H] (keys rotated with rotary positions)
  int64_t length = 0;                     ///< tokens seen
};

/// The language model. Slots of the model: "embed" (Embedding vocab x D), "pos_embed" (Embedding max_seq_length x D;
/// none with rotary positions), "embed_dropout" (with dropout > 0: a torch::nn::Dropout of the embeddings' sum, as
/// rows [N·S, D]), "ln_f" (LayerNorm, or RMSNorm), "head" (Linear D -> vocab, no bias; none with tie_embeddings,
/// whose head is the embedding's weight); the blocks are the ModuleList "blocks", so parameter
/// names read "blocks.0.attn.qkv.weight". Weights start as GPT-2's: normal(0, 0.02), the residual projections
/// (attn.proj, mlp.proj) normal(0, 0.02/sqrt(2·n_layers)), biases 0, norms 1 and 0; with `pretrained`, as the
/// Hugging Face checkpoint's (models/huggingface.h).
class GPT : public Model {
 public:
  /// Throws InputError on invalid options (vocab_size or max_seq_length 0, n_heads not dividing d_model, n_kv_heads
  /// not dividing n_heads, an odd head width with rotary positions).
  explicit GPT(GPTOptions options);
  /// Logits [N, vocab, S] for token ids input [N, S] (any integer type, S <= max_seq_length).
  at::Tensor forward(const Batch& batch) override;
  /// Logits [N, vocab, T] of T new tokens ids [N, T] that follow the cache's tokens, extending the cache: for
  /// generation, in evaluation mode (one step costs the new tokens' work, not the whole sequence's). Up to rounding,
  /// the last T positions of forward on the whole sequence. InputError in training mode, when the cache's length
  /// plus T exceeds max_seq_length, or when a block's attention was replaced by another module.
  at::Tensor forward_cached(const at::Tensor& ids, KVCache& cache);
  /// Whether forward_cached can run: the model is causal and every block's "attn" slot holds a SelfAttention.
  bool supports_kv_cache();
  /// Next-token cross-entropy against targets [N, S] (integer ids, or dense [N, vocab, S]); per-example losses are
  /// the mean over the sequence.
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction = Reduction::Mean) override;
  int64_t num_classes() const override { return options_.vocab_size(); }
  bool loss_is_cross_entropy() const override { return true; }
  const GPTOptions& options() const noexcept { return options_; }
  /// The blocks in forward order.
  const std::vector<std::shared_ptr<GPTBlock>>& blocks() const noexcept { return blocks_; }
  /// True for the gpt model (each position sees its past); false for the bert model (models/bert.h).
  bool causal() const noexcept { return causal_; }

 protected:
  /// The transformer of a GPT, or with `causal` false a bidirectional one whose token embedding has one row more,
  /// id vocab_size: the mask token of the bert model; with `language_head` false, without the "head" slot (the
  /// bert_classifier model puts its own head on encode()). Errors name the model (model_name()).
  GPT(GPTOptions options, bool causal, bool language_head = true);
  /// The final LayerNorm's output [N, S, D] for token ids [N, S] (checked as forward checks them).
  at::Tensor encode(const at::Tensor& ids);
  /// "gpt", "bert" or "bert_classifier", for messages.
  virtual const char* model_name() const noexcept { return causal_ ? "gpt" : "bert"; }

 private:
  /// Checks token ids [N, S] of positions offset .. offset + S − 1 and gives their embeddings [N, S, D].
  at::Tensor embed(const at::Tensor& ids, int64_t offset);
  /// The logits [N, vocab, S] of the final LayerNorm's output [N, S, D].
  at::Tensor head(const at::Tensor& x);

  GPTOptions options_;
  bool causal_ = true;
  std::vector<std::shared_ptr<GPTBlock>> blocks_;
};

}  // namespace tessera
