// The registry's language model: a small GPT (include/tessera/models/gpt.h).
#include <tessera/models/gpt.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/version.h>

#include <tessera/error.h>
#include <tessera/models/branch_gate.h>
#include <tessera/models/huggingface.h>
#include <tessera/ops/dropout.h>

#include "option_checks.h"

namespace tessera {
namespace {

namespace nn = torch::nn;

/// The norm `options` ask for, over width d_model.
nn::AnyModule make_norm(const GPTOptions& options) {
  const int64_t d = options.d_model();
  if (options.norm() == "rms_norm") return nn::AnyModule(RMSNorm(d, options.layer_norm_eps()));
  return nn::AnyModule(nn::LayerNorm(nn::LayerNormOptions({d}).eps(options.layer_norm_eps())));
}

nn::Linear linear(int64_t in, int64_t out, bool bias) { return nn::Linear(nn::LinearOptions(in, out).bias(bias)); }

/// Keys or values [N, KV, S, E] repeated for the H query heads that share them: [N, H, S, E], head h from h / (H/KV).
at::Tensor for_query_heads(const at::Tensor& x, int64_t h) {
  const int64_t n = x.size(0), kv = x.size(1), s = x.size(2), e = x.size(3);
  if (kv == h) return x;
  return x.unsqueeze(2).expand({n, kv, h / kv, s, e}).reshape({n, h, s, e});
}

/// The name of the model a GPT constructor builds, for messages (model_name() is not virtual there yet).
const char* model_name_of(bool causal, bool language_head) {
  return causal ? "gpt" : language_head ? "bert" : "bert_classifier";
}

/// GPT-2's initialisation: every Linear and Embedding weight normal(0, 0.02), biases 0; the projections that
/// write into the residual stream normal(0, 0.02/sqrt(2·n_layers)).
void init_gpt(nn::Module& model, int64_t n_layers) {
  at::NoGradGuard no_grad;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const std::string& name = item.key();
    if (auto* linear = item.value()->as<nn::LinearImpl>()) {
      const bool residual = name.size() >= 5 && name.compare(name.size() - 5, 5, ".proj") == 0;
      linear->weight.normal_(0.0, residual ? 0.02 / std::sqrt(2.0 * static_cast<double>(n_layers)) : 0.02);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* embedding = item.value()->as<nn::EmbeddingImpl>()) {
      embedding->weight.normal_(0.0, 0.02);
    }
  }
}

/// softmax(q·kᵀ/√(D/H) + mask)·v for queries q [N, H, T, D/H] at positions past .. past + T − 1 and keys and values
/// k, v [N, KV, past + T, D/H] (KV dividing H: query head i sees key/value head i / (H/KV)), the mask holding the
/// causal mask when `causal` and ALiBi's biases when `alibi`, the probabilities dropped with probability `dropout`
/// (> 0 in training only): PyTorch's fused attention with LibTorch 2.x (but on CUDA in deterministic mode), the
/// explicit product and softmax otherwise. past > 0 (cached keys: generation) takes the explicit form.
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal, bool alibi,
                  double dropout, int64_t past = 0, const at::Tensor& keep = at::Tensor()) {
  const int64_t n = q.size(0), h = q.size(1), t = q.size(2), dh = q.size(3), s = past + t;
  const bool padded = keep.defined();
  // The additive mask, [T, S] or with ALiBi's biases (their rows past .. past + T − 1) [H, T, S]: causal, 0 where
  // query i (position past + i) may see key j <= past + i and −inf above; with padding (keep [N, S] false) −inf at
  // its keys, [N, 1 or H, T or 1, S]; undefined for bidirectional attention without ALiBi or padding.
  const auto mask = [&] {
    const double minus_infinity = -std::numeric_limits<double>::infinity();
    at::Tensor m = alibi ? alibi_bias(h, s, q.options()).narrow(1, past, t) : at::Tensor();
    if (causal) {
      at::Tensor future = at::full({t, s}, minus_infinity, q.options()).triu_(past + 1);
      m = alibi ? m.add_(future) : future;
    }
    if (!padded) return m;
    const at::Tensor pads =
        at::zeros({n, 1, 1, s}, q.options()).masked_fill_(keep.logical_not().view({n, 1, 1, s}), minus_infinity);
    return m.defined() ? pads + m : pads;
  };
#if TORCH_VERSION_MAJOR >= 2
  // PyTorch's fused attention (flash attention on the CPU and CUDA), but for CUDA in deterministic mode, where its
  // backward kernels may accumulate atomically. Grouped key/value heads go in as they are where it takes them
  // (torch >= 2.5, causal without a mask: no copy per query group); otherwise they are repeated first.
  if (past == 0 && !(q.is_cuda() && at::globalContext().deterministicAlgorithms())) {
    if (causal && !alibi && !padded) {
#if TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 5
      return at::scaled_dot_product_attention(q, k, v, c10::nullopt, dropout, /*is_causal=*/true, c10::nullopt,
                                              /*enable_gqa=*/k.size(1) != h);
#else
      return at::scaled_dot_product_attention(q, for_query_heads(k, h), for_query_heads(v, h), c10::nullopt, dropout,
                                              /*is_causal=*/true);
#endif
    }
    const at::Tensor m = mask();
    return at::scaled_dot_product_attention(q, for_query_heads(k, h), for_query_heads(v, h),
                                            m.defined() ? c10::optional<at::Tensor>(m) : c10::nullopt, dropout,
                                            /*is_causal=*/false);
  }
#endif
  // softmax(q·kᵀ/√(D/H) + mask)·v with one matrix product and one softmax over the [N, H, T, S] scores: the scale
  // and a [T, S] mask go into the product (baddbmm); ALiBi's per-head biases and padding take one pass more.
  const at::Tensor keys = for_query_heads(k, h), values = for_query_heads(v, h);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  at::Tensor scores;
  if (causal && !alibi && !padded) {
    scores = at::baddbmm(mask(), q.reshape({n * h, t, dh}), keys.reshape({n * h, s, dh}).transpose(1, 2), 1.0, scale)
                 .view({n, h, t, s});
  } else {
    scores = at::matmul(q, keys.transpose(-2, -1)).mul_(scale);
    const at::Tensor m = mask();
    if (m.defined()) scores.add_(m);
  }
  const at::Tensor probabilities = at::softmax(scores, -1);
  return at::matmul(dropout > 0 ? at::dropout(probabilities, dropout, /*train=*/true) : probabilities, values);
}

/// The dropout of slot `name` applied to x [N, S, D] as rows [N·S, D] (a token per row): what a feature-wise
/// dropout such as gyro_dropout needs (the same mask as on [N, S, D] for an elementwise dropout).
at::Tensor dropout_rows(SlottedModule& owner, const std::string& name, const at::Tensor& x) {
  return owner.call(name, x.reshape({x.size(0) * x.size(1), x.size(2)})).view(x.sizes());
}

}  // namespace

SelfAttention::SelfAttention(int64_t d_model, int64_t n_heads, double dropout, bool causal, int64_t n_kv_heads,
                             double rope_theta, bool bias)
    : n_heads_(n_heads),
      n_kv_heads_(n_kv_heads > 0 ? n_kv_heads : n_heads),
      dropout_(dropout),
      causal_(causal),
      rope_theta_(rope_theta) {
  if (n_heads < 1 || d_model % n_heads != 0 || n_heads % n_kv_heads_ != 0 ||
      (rope_theta > 0 && (d_model / n_heads) % 2 != 0)) {
    throw InputError(fmt::format("SelfAttention: {} heads of width d_model / n_heads = {} / {} with {} key/value "
                                 "heads{}; expected n_heads dividing d_model and n_kv_heads dividing n_heads{}",
                                 n_heads, d_model, n_heads, n_kv_heads_, rope_theta > 0 ? " and rotary positions" : "",
                                 rope_theta > 0 ? ", and an even head width (rotary embeddings rotate pairs)" : ""));
  }
  const int64_t head_width = d_model / n_heads;
  register_slot("qkv", nn::AnyModule(linear(d_model, (n_heads + 2 * n_kv_heads_) * head_width, bias)));
  register_slot("proj", nn::AnyModule(linear(d_model, d_model, bias)));
}

std::array<at::Tensor, 3> SelfAttention::heads(const at::Tensor& x, int64_t past) {
  const int64_t n = x.size(0), t = x.size(1), e = x.size(2) / n_heads_;
  const at::Tensor qkv = call("qkv", x);
  const auto part = [&](int64_t first_head, int64_t heads) {  // [N, heads, T, E]
    return qkv.narrow(2, first_head * e, heads * e).view({n, t, heads, e}).transpose(1, 2);
  };
  at::Tensor q = part(0, n_heads_), k = part(n_heads_, n_kv_heads_), v = part(n_heads_ + n_kv_heads_, n_kv_heads_);
  if (rope_theta_ > 0) {
    q = rotary_embedding(q, past, rope_theta_);
    k = rotary_embedding(k, past, rope_theta_);
  }
  return {q, k, v};
}

at::Tensor SelfAttention::forward(const at::Tensor& x) {
  if (keep_.defined() && (keep_.dim() != 2 || keep_.size(0) != x.size(0) || keep_.size(1) != x.size(1))) {
    throw InputError(fmt::format("SelfAttention: the keys to keep have shape {}; expected [N, S] = [{}, {}] of the "
                                 "input {}",
                                 c10::str(keep_.sizes()), x.size(0), x.size(1), c10::str(x.sizes())));
  }
  const auto [q, k, v] = heads(x, 0);
  const at::Tensor y = attend(q, k, v, causal_, alibi_, is_training() ? dropout_ : 0.0, /*past=*/0, keep_);
  return call("proj", y.transpose(1, 2).reshape(x.sizes()));
}

at::Tensor SelfAttention::forward_cached(const at::Tensor& x, at::Tensor& keys, at::Tensor& values) {
  if (!causal_) {
    throw InputError("SelfAttention: bidirectional attention has no key/value cache (a position sees the positions "
                     "after it, which generation has not written yet)");
  }
  const int64_t past = keys.defined() ? keys.size(2) : 0;
  const auto [q, k, v] = heads(x, past);
  keys = past > 0 ? at::cat({keys, k}, 2) : k.contiguous();
  values = past > 0 ? at::cat({values, v}, 2) : v.contiguous();
  // The first positions as forward computes them; later ones against the cached keys and values.
  const at::Tensor y =
      past == 0 ? attend(q, k, v, true, alibi_, 0.0) : attend(q, keys, values, true, alibi_, 0.0, past);
  return call("proj", y.transpose(1, 2).reshape(x.sizes()));
}

at::Tensor rotary_embedding(const at::Tensor& x, int64_t past, double theta) {
  const int64_t t = x.size(-2), e = x.size(-1);
  if (e % 2 != 0 || theta <= 0) {
    throw InputError(
        fmt::format("rotary_embedding: width {} and base {}; expected an even width and a base > 0", e, theta));
  }
  const auto f = x.options().dtype(at::kFloat);
  // transformers' inverse frequencies θ^(−2i/E), computed as 1 / θ^(2i/E) in float32.
  const at::Tensor inverse_frequencies =
      at::pow(theta, at::arange(0, e, 2, f).div_(static_cast<double>(e))).reciprocal_();
  const at::Tensor angles = at::outer(at::arange(past, past + t, f), inverse_frequencies);  // [T, E/2]
  const at::Tensor both = at::cat({angles, angles}, -1);
  const at::Tensor cos = both.cos().to(x.scalar_type()), sin = both.sin().to(x.scalar_type());
  const at::Tensor rotated_half = at::cat({x.narrow(-1, e / 2, e / 2).neg(), x.narrow(-1, 0, e / 2)}, -1);
  return x * cos + rotated_half * sin;
}

at::Tensor alibi_slopes(int64_t n_heads, const at::TensorOptions& options) {
  if (n_heads < 1) throw InputError(fmt::format("alibi_slopes: n_heads is {}; expected >= 1", n_heads));
  int64_t n = 1;
  while (2 * n <= n_heads) n *= 2;
  const auto opts = options.dtype(at::kFloat);
  // Exponents e (slope 2^-e): 8(h+1)/n for the n heads of the power of two, then 4(2k+1)/n for the rest.
  at::Tensor exponents = at::arange(1, n + 1, opts).mul_(8.0 / static_cast<double>(n));
  if (n_heads > n) {
    exponents = at::cat({exponents, at::arange(0, n_heads - n, opts).mul_(2).add_(1).mul_(4.0 / static_cast<double>(n))});
  }
  return at::exp2(exponents.neg_());
}

at::Tensor alibi_bias(int64_t n_heads, int64_t seq_length, const at::TensorOptions& options) {
  const at::Tensor pos = at::arange(seq_length, options.dtype(at::kFloat));
  const at::Tensor distance = (pos.unsqueeze(0) - pos.unsqueeze(1)).abs_().neg_();  // (i, j) -> −|i − j|
  return (alibi_slopes(n_heads, options).view({n_heads, 1, 1}) * distance.unsqueeze(0)).to(options.dtype());
}

at::Tensor activate(const at::Tensor& x, const std::string& activation) {
  if (activation == "gelu") return at::gelu(x);
  if (activation == "gelu_tanh") return at::gelu(x, "tanh");
  if (activation == "silu") return at::silu(x);
  throw InputError(fmt::format("activate: activation '{}'; expected gelu, gelu_tanh or silu", activation));
}

namespace {

void check_activation(const char* where, const std::string& activation) {
  if (activation != "gelu" && activation != "gelu_tanh" && activation != "silu") {
    throw InputError(fmt::format("{}: activation '{}'; expected gelu, gelu_tanh or silu", where, activation));
  }
}

}  // namespace

FeedForward::FeedForward(int64_t d_model, int64_t d_ff, std::string activation, bool bias)
    : activation_(std::move(activation)) {
  check_activation("FeedForward", activation_);
  register_slot("fc", nn::AnyModule(linear(d_model, d_ff, bias)));
  register_slot("proj", nn::AnyModule(linear(d_ff, d_model, bias)));
}

at::Tensor FeedForward::forward(const at::Tensor& x) { return call("proj", activate(call("fc", x), activation_)); }

GatedFeedForward::GatedFeedForward(int64_t d_model, int64_t d_ff, std::string activation, bool gated_bias,
                                   bool linear_bias, nn::AnyModule proj)
    : activation_(std::move(activation)) {
  check_activation("GatedFeedForward", activation_);
  const auto gpt_linear = [](int64_t in, int64_t out, bool bias) {
    nn::Linear layer = linear(in, out, bias);
    at::NoGradGuard no_grad;
    layer->weight.normal_(0.0, 0.02);
    if (bias) layer->bias.zero_();
    return layer;
  };
  register_slot("fc_gated", nn::AnyModule(gpt_linear(d_model, d_ff, gated_bias)));
  register_slot("fc_linear", nn::AnyModule(gpt_linear(d_model, d_ff, linear_bias)));
  register_slot("proj", std::move(proj));
}

at::Tensor GatedFeedForward::forward(const at::Tensor& x) {
  return call("proj", activate(call("fc_gated", x), activation_) * call("fc_linear", x));
}

RMSNormImpl::RMSNormImpl(int64_t d_, double eps_) : d(d_), eps(eps_) { reset(); }

void RMSNormImpl::reset() { weight = register_parameter("weight", at::ones({d})); }

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normalized = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
  return weight * normalized.to(x.scalar_type());
}

GPTBlock::GPTBlock(const GPTOptions& options, bool causal) {
  const int64_t d = options.d_model(), d_ff = options.d_ff() > 0 ? options.d_ff() : 4 * d;
  const bool bias = options.bias();
  const double rope_theta = options.positions() == "rotary" ? options.rope_theta() : 0.0;
  register_slot("ln1", make_norm(options));
  register_slot("attn", nn::AnyModule(std::make_shared<SelfAttention>(d, options.n_heads(), options.attention_dropout(),
                                                                      causal, options.n_kv_heads(), rope_theta, bias)));
  register_slot("ln2", make_norm(options));
  if (options.gated()) {
    register_slot("mlp", nn::AnyModule(std::make_shared<GatedFeedForward>(d, d_ff, options.activation(), bias, bias,
                                                                          nn::AnyModule(linear(d_ff, d, bias)))));
  } else {
    register_slot("mlp", nn::AnyModule(std::make_shared<FeedForward>(d, d_ff, options.activation(), bias)));
  }
  // Modules in slots (not functional calls), so that surgery can replace them (gyro_dropout, stochastic_depth).
  if (options.dropout() > 0) {
    register_slot("attn_dropout", nn::AnyModule(CounterDropout(options.dropout())));
    register_slot("mlp_dropout", nn::AnyModule(CounterDropout(options.dropout())));
  }
  register_slot("residual_gate", nn::AnyModule(nn::Identity()));
}

at::Tensor GPTBlock::forward(const at::Tensor& x) {
  return forward_with(x, [this](const at::Tensor& h) { return call("attn", h); });
}

at::Tensor GPTBlock::forward_cached(const at::Tensor& x, at::Tensor& keys, at::Tensor& values) {
  auto* attention = slot("attn").ptr()->as<SelfAttention>();
  if (attention == nullptr) {
    throw InputError("gpt: this block's attention is not a tessera::SelfAttention (replaced by surgery), so it "
                     "has no key/value cache");
  }
  return forward_with(x, [&](const at::Tensor& h) { return attention->forward_cached(h, keys, values); });
}

at::Tensor GPTBlock::forward_with(const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& attention) {
  auto* gate = dynamic_cast<BranchGate*>(slot("residual_gate").ptr().get());
  if (gate != nullptr && gate->skip_branch()) return x;  // the block is dropped whole: it adds exactly nothing
  const bool dropout = slots().count("attn_dropout") > 0;
  at::Tensor branch = attention(call("ln1", x));
  at::Tensor out = x + (dropout ? dropout_rows(*this, "attn_dropout", branch) : branch);
  branch = call("mlp", call("ln2", out));
  out = out + (dropout ? dropout_rows(*this, "mlp_dropout", branch) : branch);
  if (slot("residual_gate").ptr()->as<nn::IdentityImpl>() != nullptr) return out;  // exactly z
  return x + call("residual_gate", out - x);
}

GPT::GPT(GPTOptions options) : GPT(std::move(options), /*causal=*/true) {}

GPT::GPT(GPTOptions options, bool causal, bool language_head) : options_(std::move(options)), causal_(causal) {
  validate_options(options_, "model");
  if (!causal || !language_head) {
    for (const auto& [option, given] : {std::pair<const char*, bool>{"tie_embeddings", options_.tie_embeddings()},
                                        {"pretrained", !options_.pretrained().empty()}}) {
      if (given) {
        throw InputError(fmt::format("model.{}: given to the {} model; it is the gpt model's (a GPT-2 language "
                                     "model); leave it out",
                                     option, model_name_of(causal, language_head)));
      }
    }
  }
  if (!options_.pretrained().empty()) options_ = pretrained_options(options_);
  require_positive(options_.vocab_size(), "vocab_size");
  require_positive(options_.max_seq_length(), "max_seq_length");
  const int64_t d = options_.d_model();
  if (d % options_.n_heads() != 0) {
    throw InputError(fmt::format("model.n_heads: {} does not divide d_model = {}; expected a divisor of d_model",
                                 options_.n_heads(), d));
  }
  if (options_.n_kv_heads() > 0 && options_.n_heads() % options_.n_kv_heads() != 0) {
    throw InputError(fmt::format("model.n_kv_heads: {} does not divide n_heads = {}; expected a divisor of n_heads "
                                 "(each key/value head serves the same number of query heads), or 0 for n_heads",
                                 options_.n_kv_heads(), options_.n_heads()));
  }
  if (options_.positions() == "rotary" && (d / options_.n_heads()) % 2 != 0) {
    throw InputError(fmt::format("model.positions: rotary, but the head width d_model / n_heads = {} / {} = {} is "
                                 "odd; expected an even head width (rotary embeddings rotate pairs of features)",
                                 d, options_.n_heads(), d / options_.n_heads()));
  }
  // The bert model's mask token is the id after the vocabulary.
  register_slot("embed", nn::AnyModule(nn::Embedding(options_.vocab_size() + (causal ? 0 : 1), d)));
  if (options_.positions() == "learned") {
    register_slot("pos_embed", nn::AnyModule(nn::Embedding(options_.max_seq_length(), d)));
  }
  if (options_.dropout() > 0) register_slot("embed_dropout", nn::AnyModule(CounterDropout(options_.dropout())));
  nn::ModuleList blocks;
  for (int64_t i = 0; i < options_.n_layers(); ++i) {
    auto block = std::make_shared<GPTBlock>(options_, causal);
    blocks->push_back(block);
    blocks_.push_back(std::move(block));
  }
  register_module("blocks", blocks);
  register_slot("ln_f", make_norm(options_));
  if (language_head && !options_.tie_embeddings()) {
    register_slot("head", nn::AnyModule(nn::Linear(nn::LinearOptions(d, options_.vocab_size()).bias(false))));
  }
  init_gpt(*this, options_.n_layers());
  if (!options_.pretrained().empty()) load_pretrained_weights(*this, options_.pretrained());
}

at::Tensor GPT::embed(const at::Tensor& input, int64_t offset) {
  if (input.dim() != 2 || at::isFloatingType(input.scalar_type()) || input.scalar_type() == at::kBool ||
      offset + input.size(1) > options_.max_seq_length() || input.size(1) == 0) {
    throw InputError(fmt::format("{}: input of shape {} and type {}{}; expected integer token ids [N, S] with "
                                 "1 <= S <= {} = {}",
                                 model_name(), c10::str(input.sizes()), c10::toString(input.scalar_type()),
                                 offset > 0 ? fmt::format(" after {} cached tokens", offset) : "",
                                 offset > 0 ? "max_seq_length - cached tokens" : "max_seq_length",
                                 options_.max_seq_length() - offset));
  }
  const at::Tensor ids = input.scalar_type() == at::kLong ? input : input.to(at::kLong);
  // An id outside the embedding is torch's index error (a device-side assertion on a GPU): on the CPU, where it
  // costs no read-back, it is an InputError that names it.
  const int64_t rows = options_.vocab_size() + (causal_ ? 0 : 1);
  if (ids.device().is_cpu() && ids.numel() > 0) {
    const at::Tensor outside = ids.lt(0).logical_or_(ids.ge(rows));
    if (outside.any().item<bool>()) {
      const int64_t at_flat = outside.reshape({-1}).to(at::kByte).argmax().item<int64_t>();
      const int64_t row = at_flat / ids.size(1), position = at_flat % ids.size(1);
      throw InputError(fmt::format("{}: token id {} (row {}, position {}) is outside the vocabulary: expected ids in "
                                   "[0, {}){}",
                                   model_name(), ids[row][position].item<int64_t>(), row, position, rows,
                                   causal_ ? " (vocab_size)" : " (vocab_size, and vocab_size itself: the mask token)"));
    }
  }
  at::Tensor x = call("embed", ids);
  if (options_.positions() == "learned") {
    x = x + call("pos_embed", at::arange(offset, offset + input.size(1), ids.options()));
  }
  if (slots().count("embed_dropout") > 0) x = dropout_rows(*this, "embed_dropout", x);
  return x;
}

at::Tensor GPT::head(const at::Tensor& x) {
  if (!options_.tie_embeddings()) return call("head", x).transpose(1, 2);
  auto* embedding = slot("embed").ptr()->as<nn::EmbeddingImpl>();
  if (embedding == nullptr) {
    throw InputError("gpt: tie_embeddings, but the embed slot holds no torch::nn::Embedding (replaced by surgery), "
                     "so the head has no weight to share");
  }
  return at::linear(x, embedding->weight).transpose(1, 2);
}

at::Tensor GPT::encode(const at::Tensor& ids) {
  at::Tensor x = embed(ids, 0);
  for (const auto& block : blocks_) x = block->forward(x);
  return call("ln_f", x);
}

at::Tensor GPT::forward(const Batch& batch) { return head(encode(batch.input())); }

bool GPT::supports_kv_cache() {
  return causal_ && std::all_of(blocks_.begin(), blocks_.end(), [](const std::shared_ptr<GPTBlock>& block) {
    return block->slot("attn").ptr()->as<SelfAttention>() != nullptr;
  });
}

at::Tensor GPT::forward_cached(const at::Tensor& ids, KVCache& cache) {
  if (!causal_) {
    throw InputError("bert: a bidirectional model has no key/value cache: it fills in masked tokens, it does not "
                     "continue text");
  }
  if (is_training()) {
    throw InputError("gpt: forward_cached runs in evaluation mode (model.eval()): in training, dropout and stochastic "
                     "depth would make the cached keys and values differ from a forward's");
  }
  if (!supports_kv_cache()) {
    throw InputError("gpt: a block's attention is not a tessera::SelfAttention (replaced by surgery), so it has "
                     "no key/value cache; generate without one (kv_cache: false)");
  }
  at::Tensor x = embed(ids, cache.length);  // checks the ids
  const auto blocks = static_cast<size_t>(blocks_.size());
  if (cache.length > 0 && (cache.keys.size() != blocks || cache.keys[0].size(0) != ids.size(0))) {
    throw InputError(fmt::format("gpt: the key/value cache holds {} blocks of {} rows; expected {} blocks of the {} "
                                 "rows of the new tokens",
                                 cache.keys.size(), cache.keys.empty() ? 0 : cache.keys[0].size(0), blocks,
                                 ids.size(0)));
  }
  cache.keys.resize(blocks);
  cache.values.resize(blocks);
  for (size_t i = 0; i < blocks; ++i) x = blocks_[i]->forward_cached(x, cache.keys[i], cache.values[i]);
  cache.length += ids.size(1);
  return head(call("ln_f", x));
}

at::Tensor GPT::loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction) {
  return cross_entropy(outputs, batch.target(), reduction);
}

}  // namespace tessera
