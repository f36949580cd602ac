#pragma once
// Shared helpers for the tests: small models, a synthetic run, and a configurable algorithm.
#include <cmath>
#include <functional>
#include <map>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <tessera/tessera.h>

namespace tessera::testing {

/// A two-layer perceptron without batch statistics (so microbatching does not change the maths).
struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl(int64_t in, int64_t hidden, int64_t out)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2->forward(at::relu(fc1->forward(x.flatten(1)))); }
  torch::nn::Linear fc1, fc2;
};

/// A classifier on [1, 4, 4] inputs with 3 classes, initialised from torch's seeded generator.
inline std::shared_ptr<Model> tiny_model(uint64_t seed = 0) {
  at::manual_seed(seed);
  return std::make_shared<Classifier<TinyNetImpl>>(std::make_shared<TinyNetImpl>(16, 8, 3), 3);
}

inline std::shared_ptr<data::TensorDataset> tiny_data(int64_t size, uint64_t seed = 7) {
  return data::make_synthetic(data::SyntheticOptions().size(size).input_shape({1, 4, 4}).num_classes(3).seed(seed));
}

/// Token sequences [size, seq_length] over a vocabulary of `vocab` (a data::TextDataset, targets the inputs shifted
/// by one): a stream with a repeating pattern (token i is (7·i + 3·⌊i/5⌋ + offset) mod vocab), so that a small
/// language model learns it.
inline std::shared_ptr<data::TextDataset> tiny_text(int64_t size, int64_t seq_length = 8, int64_t vocab = 16,
                                                    int64_t offset = 0) {
  const at::Tensor i = at::arange(size * seq_length + 1, at::kLong);
  const at::Tensor stream = (i * 7 + i.div(5, "floor") * 3 + offset).remainder(vocab);
  return std::make_shared<data::TextDataset>(stream.narrow(0, 0, size * seq_length).view({size, seq_length}).clone(),
                                             stream.narrow(0, 1, size * seq_length).view({size, seq_length}).clone(),
                                             vocab, "tiny_text");
}

/// A small GPT for tiny_text: 2 blocks of width 16, 2 heads.
inline std::shared_ptr<GPT> tiny_gpt(int64_t vocab = 16, int64_t max_seq_length = 8, uint64_t seed = 3) {
  at::manual_seed(seed);
  return std::make_shared<GPT>(
      GPTOptions().vocab_size(vocab).max_seq_length(max_seq_length).d_model(16).n_layers(2).n_heads(2));
}

/// A small BERT for tiny_text: the tiny GPT's shape, bidirectional, with the mask token vocab.
inline std::shared_ptr<BERT> tiny_bert(int64_t vocab = 16, int64_t max_seq_length = 8, uint64_t seed = 3) {
  at::manual_seed(seed);
  return std::make_shared<BERT>(
      GPTOptions().vocab_size(vocab).max_seq_length(max_seq_length).d_model(16).n_layers(2).n_heads(2));
}

/// What `attention` computes for x [N, S, D], by hand: q, k, v from "qkv", softmax(q·kᵀ/√(D/H) + ALiBi's biases when
/// the module has them, −inf above the diagonal when it is causal)·v, through "proj".
inline at::Tensor attention_by_hand(SelfAttention& attention, const at::Tensor& x) {
  const int64_t n = x.size(0), s = x.size(1), d = x.size(2), h = attention.n_heads();
  const auto params = attention.named_parameters();
  const at::Tensor qkv = at::linear(x, params["qkv.weight"], params["qkv.bias"]).view({n, s, 3, h, d / h});
  const at::Tensor q = qkv.select(2, 0).transpose(1, 2), k = qkv.select(2, 1).transpose(1, 2),
                   v = qkv.select(2, 2).transpose(1, 2);
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(d / h));
  if (attention.alibi()) scores = scores + alibi_bias(h, s, scores.options());
  if (attention.causal()) {
    scores = scores.masked_fill(at::ones({s, s}, at::kBool).triu(1), -std::numeric_limits<double>::infinity());
  }
  const at::Tensor y = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({n, s, d});
  return at::linear(y, params["proj.weight"], params["proj.bias"]);
}

/// The same examples with their inputs squashed into (0, 1) by a sigmoid: images with intensities in [0, 1], as
/// RandAugment and AugMix need.
inline std::shared_ptr<data::TensorDataset> unit_interval(const data::TensorDataset& ds) {
  std::vector<int64_t> all(static_cast<size_t>(ds.size()));
  for (int64_t i = 0; i < ds.size(); ++i) all[static_cast<size_t>(i)] = i;
  const Batch b = ds.get_batch(all);
  return std::make_shared<data::TensorDataset>(b.input().sigmoid(), b.target(), ds.num_classes(),
                                               ds.describe() + " in (0, 1)");
}

inline std::shared_ptr<data::DataLoader> loader(std::shared_ptr<data::TensorDataset> ds, int64_t batch_size,
                                                bool shuffle = true, int64_t workers = 0) {
  return std::make_shared<data::DataLoader>(
      ds, data::DataLoaderOptions().batch_size(batch_size).shuffle(shuffle).workers(workers));
}

/// The Tessera DataLoader behind a batch source (an assertion failure, as an exception, if it is another kind).
inline const data::DataLoader& as_loader(const std::shared_ptr<data::BatchSource>& source) {
  const auto* loader = dynamic_cast<const data::DataLoader*>(source.get());
  if (loader == nullptr) throw std::logic_error("the batch source is not a tessera::data::DataLoader");
  return *loader;
}

/// Components for a small language-model run: tiny_gpt() trained with AdamW (lr 0.01) on tiny_text(train_size) in
/// batches of 8 sequences of 8 tokens.
inline Components gpt_components(int64_t train_size = 16) {
  Components c;
  c.model = tiny_gpt();
  c.train_dataloader = loader(tiny_text(train_size), 8);
  c.optimizer = std::make_shared<optim::AdamW>(c.model->parameters(), optim::AdamWOptions().lr(0.01));
  return c;
}

/// Components for a small synthetic run: a tiny model, SGD, shuffled data, an accuracy evaluator.
inline Components tiny_components(int64_t train_size = 48, int64_t batch_size = 8, uint64_t seed = 0) {
  Components c;
  c.model = tiny_model(seed);
  c.train_dataloader = loader(tiny_data(train_size), batch_size);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1).momentum(0.9));
  Evaluator ev;
  ev.label = "eval";
  ev.dataloader = loader(tiny_data(16, 99), 16, false);
  ev.metrics = {std::make_shared<Accuracy>(1)};
  c.evaluators.push_back(ev);
  return c;
}

/// An algorithm whose spec is given by the test; it records every (event, batch) it was applied at into a
/// shared log, tagged with its name.
class FakeAlgorithm : public Algorithm {
 public:
  FakeAlgorithm(AlgorithmSpec spec, std::shared_ptr<std::vector<std::string>> log = nullptr)
      : spec_(std::move(spec)), log_(std::move(log)) {}
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger&) override {
    if (log_) log_->push_back(spec_.name + "@" + event_name(event));
  }

 private:
  AlgorithmSpec spec_;
  std::shared_ptr<std::vector<std::string>> log_;
};

/// A spec acting on the given events with no reads or writes.
inline AlgorithmSpec spec_on(std::string name, std::vector<Event> events) {
  AlgorithmSpec s;
  s.name = std::move(name);
  for (Event e : events) s.accesses.push_back({e, {}, {}});
  return s;
}

/// Copies every parameter's gradient at AfterTrainBatch (the full batch's accumulated gradient).
class GradCapture : public Algorithm {
 public:
  GradCapture() { spec_ = spec_on("grad_capture", {Event::AfterTrainBatch}); }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& state, Logger&) override {
    grads.clear();
    for (const auto& p : state.model->parameters()) grads.push_back(p.grad().clone());
  }
  std::vector<at::Tensor> grads;

 private:
  AlgorithmSpec spec_;
};

/// The message of the InputError that `f` throws (a test failure, as an exception, when it throws none).
inline std::string input_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  throw std::logic_error("expected an InputError, got none");
}

/// Recipe entries that make the scheduled algorithms act within a run of about 6 batches (the "every algorithm" tests
/// add their own).
inline std::map<std::string, std::string> short_run_entries() {
  return {
      {"ema", "{ema: {half_life: 2ba}}"},
      {"layer_freezing", "{layer_freezing: {freeze_start: 0, freeze_level: 1}}"},
      {"selective_backprop", "{selective_backprop: {start: 0, end: 1, interrupt: 0}}"},
      {"swa", "{swa: {swa_start: 2ba, swa_end: 5ba, update_interval: 1ba}}"},
      {"gradient_clipping", "{gradient_clipping: {clipping_type: norm, clipping_threshold: 0.5}}"},
  };
}

/// The recipe entry of algorithm `name` in the "every algorithm" tests: its entry in `eager` (options that make it act
/// within a short run), else its bare name.
inline std::string entry_of(const std::string& name, const std::map<std::string, std::string>& eager) {
  const auto it = eager.find(name);
  return it == eager.end() ? name : it->second;
}

/// For the "every algorithm" tests: builds the trainer of algorithm `name` with `make`. Returns it, or null when it was
/// refused (an InputError) as `refused` expects: with a message containing refused[name]. Throws std::logic_error
/// (a test failure) on a refusal `refused` does not expect, a different message, or no refusal where it expects one.
inline std::unique_ptr<Trainer> trainer_unless_refused(const std::string& name,
                                                       const std::function<std::unique_ptr<Trainer>()>& make,
                                                       const std::map<std::string, std::string>& refused) {
  std::unique_ptr<Trainer> trainer;
  std::string refusal;
  try {
    trainer = make();
  } catch (const InputError& e) {
    refusal = e.what();
  }
  const auto expected = refused.find(name);
  if (expected == refused.end() && !refusal.empty()) throw std::logic_error(name + " refused with: " + refusal);
  if (expected != refused.end() && refusal.find(expected->second) == std::string::npos) {
    throw std::logic_error(name + ": expected a refusal with \"" + expected->second + "\", got: " +
                           (refusal.empty() ? std::string("none") : refusal));
  }
  return trainer;
}

/// How many times algorithm `name` acted in a trainer's trace (every event).
inline int64_t times_acted(const Trainer& trainer, const std::string& name) {
  int64_t acted = 0;
  for (const auto& [key, record] : trainer.trace()) acted += key.rfind(name + "/", 0) == 0 ? record.count : 0;
  return acted;
}

/// Fills the inputs of one batch with NaN (so its loss is NaN).
class NanInputs : public Algorithm {
 public:
  explicit NanInputs(int64_t batch) : batch_(batch) {
    spec_.name = "nan_inputs";
    spec_.accesses.push_back({Event::AfterDataloader, {Resource::Inputs}, {Resource::Inputs}});
  }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& state, Logger&) override {
    if (state.timestamp.batch == batch_) {
      state.batch.input() = at::full_like(state.batch.input(), std::numeric_limits<float>::quiet_NaN());
    }
  }

 private:
  int64_t batch_;
  AlgorithmSpec spec_;
};

/// Multiplies the loss at one batch by 1e36: finite, but its gradient times the loss scale overflows float32, so
/// a loss scaler skips that step. With `only_call` >= 0, only at that call of the batch's after_loss (counted from
/// 0 over its microbatches and passes: SAM's second pass comes after the first's).
class OverflowAt : public Algorithm {
 public:
  explicit OverflowAt(int64_t batch, int64_t only_call = -1) : batch_(batch), only_call_(only_call) {
    spec_.name = "overflow_at";
    spec_.accesses.push_back({Event::AfterLoss, {Resource::Loss}, {Resource::Loss}});
  }
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event, State& state, Logger&) override {
    if (state.timestamp.batch != batch_) return;
    if (only_call_ >= 0 && calls_++ != only_call_) return;
    state.loss = state.loss * 1e36;
  }

 private:
  int64_t batch_;
  int64_t only_call_;
  int64_t calls_ = 0;
  AlgorithmSpec spec_;
};

/// Records everything it receives.
class RecordingDestination : public LoggerDestination {
 public:
  std::string name() const override { return "recording"; }
  void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) override {
    metrics.push_back(values);
    batches.push_back(ts.batch);
  }
  void log_hyperparameters(const std::map<std::string, std::string>& values) override { hparams = values; }
  void log_text(const std::string& level, const std::string& text) override {
    texts.push_back(level + ":" + text);
  }

  std::vector<std::map<std::string, double>> metrics;
  std::vector<int64_t> batches;
  std::map<std::string, std::string> hparams;
  std::vector<std::string> texts;
};

/// Records the global L2 norm of the gradients the optimizer step sees (a callback at after_train_batch runs after
/// the algorithms there).
class GradNormAtStep : public Callback {
 public:
  std::string name() const override { return "grad_norm_at_step"; }
  void run_event(Event event, State& state, Logger&) override {
    if (event != Event::AfterTrainBatch) return;
    double sum = 0;
    for (const auto& p : state.model->parameters()) {
      if (p.grad().defined()) sum += p.grad().pow(2).sum().item<double>();
    }
    norms.push_back(std::sqrt(sum));
  }
  std::vector<double> norms;
};

}  // namespace tessera::testing
