// Autoregressive text generation (include/tessera/models/generate.h).
#include <tessera/models/generate.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <tessera/data/tokenizer.h>
#include <tessera/error.h>
#include <tessera/models/gpt.h>
#include <tessera/models/model.h>
#include <tessera/rng.h>

namespace tessera {
namespace {

constexpr int64_t kByteVocabulary = 256;

/// Puts the model in eval mode and restores its mode, also on an exception.
struct EvalMode {
  Model& model;
  bool was_training;
  explicit EvalMode(Model& m) : model(m), was_training(m.is_training()) { model.eval(); }
  ~EvalMode() { model.train(was_training); }
};

/// The next token of one row from its last-position logits (float64 on the host): the most likely token at
/// temperature 0, else a draw from the filtered softmax.
int64_t pick(const double* logits, int64_t vocab, const GenerateOptions& o, Rng& rng) {
  if (o.temperature() == 0) return std::max_element(logits, logits + vocab) - logits;
  // Token ids by decreasing logit; ties by id, so the order never depends on the sort.
  std::vector<int64_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  int64_t kept = o.top_k() > 0 ? std::min(o.top_k(), vocab) : vocab;
  const double top = logits[order[0]];
  std::vector<double> p(static_cast<size_t>(kept));
  double total = 0;
  for (int64_t i = 0; i < kept; ++i) total += p[i] = std::exp((logits[order[i]] - top) / o.temperature());
  if (o.top_p() < 1) {
    double mass = 0;
    int64_t nucleus = 0;
    while (nucleus < kept && mass < o.top_p() * total) mass += p[nucleus++];
    kept = std::max<int64_t>(1, nucleus);
    total = std::accumulate(p.begin(), p.begin() + kept, 0.0);
  }
  const double u = rng.uniform() * total;
  double cumulative = 0;
  for (int64_t i = 0; i < kept; ++i) {
    cumulative += p[i];
    if (u < cumulative) return order[i];
  }
  return order[kept - 1];  // u within rounding of the total
}

void check_prompt(const at::Tensor& prompt, int64_t vocab) {
  if (!prompt.defined() || prompt.dim() != 2 || at::isFloatingType(prompt.scalar_type()) ||
      prompt.scalar_type() == at::kBool || at::isComplexType(prompt.scalar_type()) || prompt.numel() == 0) {
    throw InputError(fmt::format("generate: prompt of shape {} and type {}; expected integer token ids [N, P] with "
                                 "N >= 1 and P >= 1",
                                 prompt.defined() ? c10::str(prompt.sizes()) : "(undefined)",
                                 prompt.defined() ? c10::toString(prompt.scalar_type()) : "none"));
  }
  if (vocab <= 0) return;
  const int64_t lo = prompt.min().item<int64_t>(), hi = prompt.max().item<int64_t>();
  if (lo < 0 || hi >= vocab) {
    throw InputError(fmt::format("generate: the prompt holds token {}; expected ids in [0, {}) (the model's "
                                 "vocabulary)",
                                 lo < 0 ? lo : hi, vocab));
  }
}

}  // namespace

at::Tensor generate(Model& model, const at::Tensor& prompt, const GenerateOptions& options) {
  GenerateOptions o = options;
  validate_options(o, "generate");
  if (!o.eos_text().empty()) {
    throw InputError(fmt::format("generate.eos_text: {:?} is text, and generate works on token ids without knowing "
                                 "their tokenizer; turn it into eos_token with resolve_eos_text(options, tokenizer) "
                                 "first (the generate callback, tessera-run --generate and Python's generate with "
                                 "tokenizer= do), or give eos_token",
                                 o.eos_text()));
  }
  const int64_t vocab = model.num_classes();
  check_prompt(prompt, vocab);
  if (o.eos_token() >= 0 && vocab > 0 && o.eos_token() >= vocab) {
    throw InputError(fmt::format("generate.eos_token: {} is outside the model's vocabulary [0, {})", o.eos_token(),
                                 vocab));
  }
  auto* gpt = dynamic_cast<GPT*>(&model);
  if (gpt != nullptr && !gpt->causal()) {
    throw InputError("generate: the bert model is bidirectional: it fills in masked tokens from both sides and does "
                     "not continue text; generate with the gpt model");
  }
  int64_t context = o.max_context();
  if (context == 0 && gpt != nullptr) context = gpt->options().max_seq_length();
  // The key/value cache serves while the whole sequence fits in the context (and in the position embedding); past
  // that, every step runs the window again (its positions shift).
  const int64_t cache_limit =
      gpt != nullptr && o.kv_cache() && gpt->supports_kv_cache() ? std::min(context, gpt->options().max_seq_length()) : 0;
  KVCache cache;
  const auto params = model.parameters();
  const at::Device device = params.empty() ? prompt.device() : params.front().device();

  EvalMode eval(model);
  torch::NoGradGuard no_grad;
  at::Tensor tokens = prompt.to(device, at::kLong);
  const int64_t rows = tokens.size(0);
  std::vector<bool> done(static_cast<size_t>(rows), false);
  for (int64_t step = 0; step < o.max_new_tokens(); ++step) {
    const int64_t length = tokens.size(1);
    const bool cached = length <= cache_limit;
    // What the model runs on: the tokens the cache has not seen, or the last `context` tokens.
    const at::Tensor input = cached                                ? tokens.narrow(1, cache.length, length - cache.length)
                             : context > 0 && length > context ? tokens.narrow(1, length - context, context)
                                                               : tokens;
    at::Tensor logits;
    if (cached) {
      logits = gpt->forward_cached(input, cache);
    } else {
      cache = KVCache();  // past the context: not used again
      Batch batch;
      batch.set(Batch::kInput, input);
      logits = model.forward(batch);
    }
    if (logits.dim() != 3 || logits.size(0) != rows || logits.size(2) != input.size(1) ||
        (vocab > 0 && logits.size(1) != vocab)) {
      throw InputError(fmt::format("generate: the model gave outputs of shape {} for token ids of shape {}; expected "
                                   "next-token logits [N, vocab, S] = [{}, {}, {}]",
                                   c10::str(logits.sizes()), c10::str(input.sizes()), rows,
                                   vocab > 0 ? std::to_string(vocab) : "vocab", input.size(1)));
    }
    const at::Tensor last = logits.select(2, -1).to(at::kCPU, at::kDouble).contiguous();
    const int64_t width = last.size(1);
    const double* data = last.data_ptr<double>();
    at::Tensor next = at::empty({rows, 1}, at::kLong);
    auto* out = next.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      if (done[r]) {
        out[r] = o.eos_token();
        continue;
      }
      Rng rng(static_cast<uint64_t>(o.seed()),
              {static_cast<uint64_t>(kGenerateStream), static_cast<uint64_t>(r), static_cast<uint64_t>(step)});
      out[r] = pick(data + r * width, width, o, rng);
      done[r] = o.eos_token() >= 0 && out[r] == o.eos_token();
    }
    tokens = at::cat({tokens, next.to(device)}, 1);
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
  }
  return tokens.to(prompt.device());
}

at::Tensor text_to_bytes(const std::string& text) {
  at::Tensor out = at::empty({static_cast<int64_t>(text.size())}, at::kLong);
  auto* p = out.data_ptr<int64_t>();
  for (size_t i = 0; i < text.size(); ++i) p[i] = static_cast<unsigned char>(text[i]);
  return out;
}

std::string bytes_to_text(const at::Tensor& tokens) {
  const at::Tensor ids = tokens.reshape({-1}).to(at::kCPU, at::kLong).contiguous();
  const auto* p = ids.data_ptr<int64_t>();
  std::string text(static_cast<size_t>(ids.numel()), '\0');
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (p[i] < 0 || p[i] >= kByteVocabulary) {
      throw InputError(fmt::format("bytes_to_text: token {} at position {} is not a byte (expected ids in [0, 256))",
                                   p[i], i));
    }
    text[static_cast<size_t>(i)] = static_cast<char>(p[i]);
  }
  return text;
}

at::Tensor text_to_tokens(const std::string& text, const data::Tokenizer* tokenizer) {
  return tokenizer != nullptr ? at::tensor(tokenizer->encode(text), at::kLong) : text_to_bytes(text);
}

GenerateOptions resolve_eos_text(GenerateOptions options, const data::Tokenizer* tokenizer) {
  const std::string text = options.eos_text();
  if (text.empty()) return options;
  if (options.eos_token() >= 0) {
    throw InputError(fmt::format("generate: eos_token {} and eos_text {:?} are both given; give one of them",
                                 options.eos_token(), text));
  }
  const at::Tensor ids = text_to_tokens(text, tokenizer);
  if (ids.numel() != 1) {
    std::vector<std::string> pieces;
    for (int64_t i = 0; i < ids.numel(); ++i) {
      const at::Tensor id = ids.slice(0, i, i + 1);
      pieces.push_back(fmt::format("{} {:?}", id.item<int64_t>(), tokens_to_text(id, tokenizer)));
    }
    throw InputError(fmt::format(
        "generate.eos_text: {:?} is {} tokens in {} ({}); expected the text of one token, such as a tokenizer's "
        "added token (<|endoftext|> of a template: tessera-tokenizer inspect lists them) or one byte",
        text, ids.numel(), tokenizer != nullptr ? "the tokenizer's vocabulary" : "bytes", fmt::join(pieces, ", ")));
  }
  return options.eos_token(ids.item<int64_t>()).eos_text("");
}

std::string tokens_to_text(const at::Tensor& tokens, const data::Tokenizer* tokenizer) {
  if (tokenizer == nullptr) return bytes_to_text(tokens);
  const at::Tensor ids = tokens.reshape({-1}).to(at::kCPU, at::kLong).contiguous();
  return tokenizer->decode(std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()));
}

}  // namespace tessera
