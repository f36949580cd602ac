#pragma once
/// Metrics accumulated over batches: top-k accuracy and cross-entropy.
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/Tensor.h>

#include <tessera/batch.h>

namespace tessera {

class Metric {
 public:
  virtual ~Metric() = default;
  /// Clears the accumulated values.
  virtual void reset() = 0;
  /// Adds one batch: outputs (logits [N, C]) against the batch's integer targets.
  virtual void update(const at::Tensor& outputs, const Batch& batch) = 0;
  /// The value over everything since reset (0 before any update).
  virtual double compute() const = 0;
  /// "accuracy", "top5_accuracy", "cross_entropy".
  virtual std::string name() const = 0;
};

/// Fraction of examples whose target is among the k largest outputs.
class Accuracy : public Metric {
 public:
  explicit Accuracy(int64_t top_k = 1);
  void reset() override;
  void update(const at::Tensor& outputs, const Batch& batch) override;
  double compute() const override;
  std::string name() const override;

 private:
  int64_t top_k_;
  int64_t correct_ = 0;
  int64_t total_ = 0;
};

/// Mean cross-entropy per example.
class CrossEntropyMetric : public Metric {
 public:
  void reset() override;
  void update(const at::Tensor& outputs, const Batch& batch) override;
  double compute() const override;
  std::string name() const override { return "cross_entropy"; }

 private:
  double sum_ = 0.0;
  int64_t total_ = 0;
};

/// Builds a metric from its recipe name ("accuracy", "top5_accuracy", "cross_entropy"); InputError otherwise.
std::unique_ptr<Metric> make_metric(const std::string& name);

}  // namespace tessera
