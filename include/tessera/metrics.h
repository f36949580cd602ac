#pragma once
/// Metrics accumulated over batches: top-k accuracy, cross-entropy and perplexity (precision, recall and F1, macro or
/// weighted averages: class_metrics.h).
///
/// Outputs are logits [N, C] (one prediction per example) or [N, C, d...] (one per position, e.g. next-token
/// logits [N, vocab, S] of a language model): every position is then counted as one prediction, so accuracy is
/// token accuracy and cross-entropy is per token. A position whose integer target is kIgnoreTarget (models/model.h;
/// the masked language model's unmasked tokens) is not a prediction: it counts nowhere.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/batch.h>

namespace tessera {

class Metric {
 public:
  virtual ~Metric() = default;
  /// Clears the accumulated values.
  virtual void reset() = 0;
  /// Adds one batch: outputs (logits [N, C] or [N, C, d...]) against the batch's targets (class ids [N] or
  /// [N, d...], or dense targets of the outputs' shape, read by their argmax).
  virtual void update(const at::Tensor& outputs, const Batch& batch) = 0;
  /// The value over everything since reset (0 before any update).
  virtual double compute() const = 0;
  /// What the metric reports, computed together: {"": compute()} (the default). A metric with a breakdown adds its
  /// parts, each logged as "<name>/<part>" (precision, recall and F1 with per_class: "recall/class_3"); a Python
  /// metric whose compute() returns several values (a tensor of one per class, a dict) has parts only.
  virtual std::map<std::string, double> compute_values() const { return {{"", compute()}}; }
  /// "accuracy", "top5_accuracy", "cross_entropy", "perplexity".
  virtual std::string name() const = 0;

  /// The accumulated sums behind compute() (e.g. hits and examples), which data-parallel training adds up
  /// over the ranks so that the value is exact over all their examples (a sum of counts, not a mean of means).
  /// Empty: the metric cannot be reduced (the Trainer refuses it when training on more than one rank).
  virtual std::vector<double> counts() const { return {}; }
  /// Replaces the accumulated sums with `counts` (as returned by counts(), summed over ranks).
  virtual void set_counts(const std::vector<double>& counts) {}
  /// While counts() is empty: what would let the metric be added up over the ranks, for the Trainer's refusal
  /// ("give its class count, ..."); empty (the default) when nothing would but implementing counts().
  virtual std::string how_to_count() const { return {}; }

  /// Deferred read-back (the trainer sets it on CUDA): update() keeps its sums as tensors on the outputs'
  /// device and compute() reads them back once, so that no batch waits for the device. Off (the default, and
  /// on the CPU), sums are read back at every update, which is cheaper there. Both give the same values.
  void set_deferred(bool deferred) noexcept { deferred_ = deferred; }
  bool deferred() const noexcept { return deferred_; }

 protected:
  bool deferred_ = false;
};

/// Fraction of predictions (examples, or positions) whose target is among the k largest outputs.
class Accuracy : public Metric {
 public:
  explicit Accuracy(int64_t top_k = 1);
  void reset() override;
  void update(const at::Tensor& outputs, const Batch& batch) override;
  double compute() const override;
  std::string name() const override;
  std::vector<double> counts() const override;
  void set_counts(const std::vector<double>& counts) override;

 private:
  int64_t top_k_;
  int64_t correct_ = 0;
  int64_t total_ = 0;
  at::Tensor correct_on_device_;  ///< deferred hits (int64 scalar), added to correct_ by compute()
  at::Tensor total_on_device_;    ///< deferred predictions (int64 scalar), added to total_ by compute()
};

/// Mean cross-entropy per prediction (example, or position), in nats.
class CrossEntropyMetric : public Metric {
 public:
  void reset() override;
  void update(const at::Tensor& outputs, const Batch& batch) override;
  double compute() const override;
  std::string name() const override { return "cross_entropy"; }
  std::vector<double> counts() const override;
  void set_counts(const std::vector<double>& counts) override;

 private:
  double sum_ = 0.0;
  int64_t total_ = 0;
  at::Tensor sum_on_device_;    ///< deferred sum (float64 scalar), added to sum_ by compute()
  at::Tensor total_on_device_;  ///< deferred predictions (int64 scalar), added to total_ by compute()
};

/// exp(mean cross-entropy per prediction): a language model's perplexity per token (the vocabulary size for
/// uniform guesses, 1 for certainty). Reduced over ranks exactly as cross-entropy is (its sums).
class Perplexity : public CrossEntropyMetric {
 public:
  double compute() const override;
  std::string name() const override { return "perplexity"; }
};

/// Builds a metric from its recipe name ("accuracy", "top5_accuracy", "cross_entropy", "perplexity", and the macro
/// averages "precision", "recall", "f1" and the weighted "weighted_precision", "weighted_recall", "weighted_f1" of
/// class_metrics.h); InputError otherwise.
std::unique_ptr<Metric> make_metric(const std::string& name);

/// Adds what `metric` reports (compute_values()) to `out`: its value under `key` ("metrics/eval/recall"), each
/// part under "<key>/<part>" ("metrics/eval/recall/class_3").
void add_metric_values(const Metric& metric, const std::string& key, std::map<std::string, double>& out);

}  // namespace tessera
