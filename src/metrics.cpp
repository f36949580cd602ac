// Accuracy, cross-entropy and the per-class (macro-averaged) metrics.
#include <tessera/class_metrics.h>
#include <tessera/metrics.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <tessera/error.h>
#include <tessera/models/model.h>

namespace tessera {
namespace {

std::string shape(const at::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }

/// Predictions as rows: logits [N, C] as they are, or [N, C, d...] as [N·d..., C] (one row per position); and the
/// batch's targets as class indices of those rows (integer targets [N] or [N, d...] as they are, dense targets of
/// the outputs' shape by their argmax over C).
std::pair<at::Tensor, at::Tensor> prediction_rows(const at::Tensor& outputs, const Batch& batch, const char* metric) {
  if (!outputs.defined() || outputs.dim() < 2) {
    throw InputError(fmt::format("{} metric: outputs must be logits [N, C] or [N, C, d...], got {}", metric,
                                 outputs.defined() ? shape(outputs) : std::string("an undefined tensor")));
  }
  const at::Tensor& target = batch.target();
  at::Tensor index;
  if (at::isFloatingType(target.scalar_type())) {
    if (target.sizes() != outputs.sizes()) {
      throw InputError(fmt::format("{} metric: dense targets of shape {} do not match outputs of shape {}",
                                   metric, shape(target), shape(outputs)));
    }
    index = target.argmax(1);
  } else {
    bool ok = target.dim() == outputs.dim() - 1 && target.size(0) == outputs.size(0);
    for (int64_t d = 2; ok && d < outputs.dim(); ++d) ok = target.size(d - 1) == outputs.size(d);
    if (!ok) {
      throw InputError(fmt::format("{} metric: targets of shape {} do not match outputs of shape {}; expected class "
                                   "indices of the outputs' shape without dimension 1",
                                   metric, shape(target), shape(outputs)));
    }
    index = target;
  }
  // Logits from a forward under autocast (bfloat16, float16) are compared and summed in float32.
  const at::Tensor logits = outputs.scalar_type() == at::kBFloat16 || outputs.scalar_type() == at::kHalf
                                ? outputs.to(at::kFloat)
                                : outputs;
  if (logits.dim() == 2) return {logits, index};
  return {logits.movedim(1, -1).reshape({-1, logits.size(1)}), index.reshape({-1})};
}

/// Adds the number of rows of `index` with a target (not kIgnoreTarget) to `total`, or with `deferred` to the
/// device tensor `on_device`, so that no batch waits for the device.
void count_targeted(const at::Tensor& index, bool deferred, int64_t& total, at::Tensor& on_device) {
  const at::Tensor targeted = index.ne(kIgnoreTarget).sum();
  if (deferred) {
    on_device = on_device.defined() ? on_device + targeted : targeted;
  } else {
    total += targeted.item<int64_t>();
  }
}

/// `total` plus what `on_device` has deferred.
int64_t with_deferred(int64_t total, const at::Tensor& on_device) {
  return total + (on_device.defined() ? on_device.item<int64_t>() : 0);
}

}  // namespace

// ------------------------------------------------------------------------------------------------ Accuracy

Accuracy::Accuracy(int64_t top_k) : top_k_(top_k) {
  if (top_k < 1) throw InputError(fmt::format("accuracy metric: top_k is {}; expected >= 1", top_k));
}

void Accuracy::reset() {
  correct_ = 0;
  total_ = 0;
  correct_on_device_ = at::Tensor();
  total_on_device_ = at::Tensor();
}

void Accuracy::update(const at::Tensor& outputs, const Batch& batch) {
  at::NoGradGuard no_grad;
  const auto [rows, target] = prediction_rows(outputs, batch, "accuracy");
  if (top_k_ > rows.size(1)) {
    throw InputError(fmt::format("{} metric: top_k = {} is larger than the number of classes ({})", name(),
                                 top_k_, rows.size(1)));
  }
  const at::Tensor index = target.to(rows.device(), at::kLong);
  at::Tensor hits;  // a row whose target is kIgnoreTarget never hits
  if (top_k_ == 1) {
    hits = rows.argmax(1).eq(index).sum();
  } else {
    hits = std::get<1>(rows.topk(top_k_, 1)).eq(index.unsqueeze(1)).sum();
  }
  if (deferred_) {
    correct_on_device_ = correct_on_device_.defined() ? correct_on_device_ + hits : hits;
  } else {
    correct_ += hits.item<int64_t>();
  }
  count_targeted(index, deferred_, total_, total_on_device_);
}

double Accuracy::compute() const {
  const int64_t correct = with_deferred(correct_, correct_on_device_), total = with_deferred(total_, total_on_device_);
  return total == 0 ? 0.0 : static_cast<double>(correct) / static_cast<double>(total);
}

std::string Accuracy::name() const {
  return top_k_ == 1 ? "accuracy" : fmt::format("top{}_accuracy", top_k_);
}

// ------------------------------------------------------------------------------------------------
// CrossEntropy

void CrossEntropyMetric::reset() {
  sum_ = 0.0;
  total_ = 0;
  sum_on_device_ = at::Tensor();
  total_on_device_ = at::Tensor();
}

void CrossEntropyMetric::update(const at::Tensor& outputs, const Batch& batch) {
  at::NoGradGuard no_grad;
  const auto [rows, target] = prediction_rows(outputs, batch, name().c_str());
  const at::Tensor sum = cross_entropy(rows, target.to(rows.device(), at::kLong), Reduction::Sum);
  if (deferred_) {
    // Widened to float64 before adding, exactly as the host path adds item<double>() values.
    const at::Tensor wide = sum.to(at::kDouble);
    sum_on_device_ = sum_on_device_.defined() ? sum_on_device_ + wide : wide;
  } else {
    sum_ += sum.item<double>();
  }
  count_targeted(target, deferred_, total_, total_on_device_);
}

std::vector<double> Accuracy::counts() const {
  return {static_cast<double>(with_deferred(correct_, correct_on_device_)),
          static_cast<double>(with_deferred(total_, total_on_device_))};
}

void Accuracy::set_counts(const std::vector<double>& counts) {
  if (counts.size() != 2) throw Error("Accuracy::set_counts: expected 2 counts (hits, examples)");
  correct_on_device_ = at::Tensor();
  total_on_device_ = at::Tensor();
  correct_ = static_cast<int64_t>(counts[0]);
  total_ = static_cast<int64_t>(counts[1]);
}

std::vector<double> CrossEntropyMetric::counts() const {
  const double sum = sum_ + (sum_on_device_.defined() ? sum_on_device_.item<double>() : 0.0);
  return {sum, static_cast<double>(with_deferred(total_, total_on_device_))};
}

void CrossEntropyMetric::set_counts(const std::vector<double>& counts) {
  if (counts.size() != 2) throw Error("CrossEntropyMetric::set_counts: expected 2 counts (sum, examples)");
  sum_on_device_ = at::Tensor();
  total_on_device_ = at::Tensor();
  sum_ = counts[0];
  total_ = static_cast<int64_t>(counts[1]);
}

double CrossEntropyMetric::compute() const {
  const double sum = sum_ + (sum_on_device_.defined() ? sum_on_device_.item<double>() : 0.0);
  const int64_t total = with_deferred(total_, total_on_device_);
  return total == 0 ? 0.0 : sum / static_cast<double>(total);
}

double Perplexity::compute() const { return std::exp(CrossEntropyMetric::compute()); }

// ------------------------------------------------------------------------------------------------ ClassAveraged

ClassAveraged::ClassAveraged(Score score, int64_t num_classes, Average average, bool per_class)
    : score_(score), average_(average), per_class_(per_class), num_classes_(num_classes), stated_classes_(num_classes) {
  if (num_classes < 0) {
    throw InputError(fmt::format("{} metric: num_classes is {}; expected >= 0", name(), num_classes));
  }
}

namespace {
/// Each score and average's recipe name: name() and make_class_averaged read this one table.
struct ClassScoreName {
  ClassAveraged::Score score;
  ClassAveraged::Average average;
  const char* name;
};
constexpr ClassScoreName kClassScores[] = {
    {ClassAveraged::Score::Precision, ClassAveraged::Average::Macro, "precision"},
    {ClassAveraged::Score::Recall, ClassAveraged::Average::Macro, "recall"},
    {ClassAveraged::Score::F1, ClassAveraged::Average::Macro, "f1"},
    {ClassAveraged::Score::Precision, ClassAveraged::Average::Weighted, "weighted_precision"},
    {ClassAveraged::Score::Recall, ClassAveraged::Average::Weighted, "weighted_recall"},
    {ClassAveraged::Score::F1, ClassAveraged::Average::Weighted, "weighted_f1"}};
}  // namespace

std::string ClassAveraged::name() const {
  for (const auto& entry : kClassScores) {
    if (entry.score == score_ && entry.average == average_) return entry.name;
  }
  return "f1";  // (every Score and Average is in the table)
}

void ClassAveraged::reset() {
  num_classes_ = stated_classes_;
  counts_ = at::Tensor();
  invalid_ = at::Tensor();
}

namespace {
std::string targets_outside(const std::string& metric, int64_t count, int64_t classes) {
  return fmt::format("{} metric: {} target(s) outside the outputs' {} classes [0, {}); expected class indices, or {} "
                     "for a position with nothing to predict",
                     metric, count, classes, classes, kIgnoreTarget);
}
}  // namespace

void ClassAveraged::update(const at::Tensor& outputs, const Batch& batch) {
  at::NoGradGuard no_grad;
  const std::string metric = name();
  const auto [rows, target] = prediction_rows(outputs, batch, metric.c_str());
  const int64_t classes = rows.size(1);
  if (num_classes_ > 0 && classes != num_classes_) {
    throw InputError(fmt::format("{} metric: the outputs have {} classes, {} before{}", metric, classes,
                                 num_classes_, stated_classes_ > 0 ? " (its num_classes)" : " (its earlier outputs)"));
  }
  num_classes_ = classes;
  const at::Tensor index = target.to(rows.device(), at::kLong);
  const at::Tensor targeted = index.ne(kIgnoreTarget);
  const at::Tensor in_range = index.ge(0).logical_and(index.lt(classes));
  const at::Tensor outside = targeted.logical_and(in_range.logical_not()).sum();
  const at::Tensor keep = targeted.logical_and(in_range);
  const at::Tensor t = index.masked_select(keep), p = rows.argmax(1).masked_select(keep);
  const at::Tensor tp = at::bincount(t.masked_select(p.eq(t)), {}, classes);
  const at::Tensor these = at::stack({tp, at::bincount(p, {}, classes) - tp, at::bincount(t, {}, classes) - tp});
  if (deferred_) {
    counts_ = counts_.defined() ? counts_ + these : these;
    invalid_ = invalid_.defined() ? invalid_ + outside : outside;
    return;
  }
  const int64_t bad = outside.item<int64_t>();
  if (bad > 0) throw InputError(targets_outside(metric, bad, classes));
  const at::Tensor host = these.cpu();
  counts_ = counts_.defined() ? counts_ + host : host;
}

at::Tensor ClassAveraged::read_counts() const {
  if (!counts_.defined()) return at::zeros({3, num_classes_}, at::kLong);
  return counts_.cpu();
}

double ClassAveraged::compute() const {
  if (invalid_.defined()) {
    const int64_t bad = invalid_.item<int64_t>();
    if (bad > 0) throw InputError(targets_outside(name(), bad, num_classes_));
  }
  if (num_classes_ == 0) return 0.0;
  const at::Tensor c = read_counts();
  const auto a = c.accessor<int64_t, 2>();
  double sum = 0.0, weights = 0.0;
  for (int64_t k = 0; k < c.size(1); ++k) {
    const auto tp = static_cast<double>(a[0][k]), fp = static_cast<double>(a[1][k]),
               fn = static_cast<double>(a[2][k]);
    // Macro: every class that occurs (neither predicted nor a target: not averaged); weighted: by its targets.
    const double weight = average_ == Average::Weighted ? tp + fn : (tp + fp + fn > 0 ? 1.0 : 0.0);
    if (weight == 0) continue;
    weights += weight;
    sum += weight * score_of(tp, fp, fn);
  }
  return weights == 0 ? 0.0 : sum / weights;
}

double ClassAveraged::score_of(double tp, double fp, double fn) const {
  const double numerator = score_ == Score::F1 ? 2 * tp : tp;
  const double denominator = score_ == Score::Precision ? tp + fp
                             : score_ == Score::Recall  ? tp + fn
                                                        : 2 * tp + fp + fn;
  return denominator > 0 ? numerator / denominator : 0.0;
}

std::map<std::string, double> ClassAveraged::compute_values() const {
  std::map<std::string, double> out{{"", compute()}};
  if (!per_class_ || num_classes_ == 0) return out;
  const at::Tensor c = read_counts();
  const auto a = c.accessor<int64_t, 2>();
  for (int64_t k = 0; k < c.size(1); ++k) {
    out["class_" + std::to_string(k)] =
        score_of(static_cast<double>(a[0][k]), static_cast<double>(a[1][k]), static_cast<double>(a[2][k]));
  }
  return out;
}

std::vector<double> ClassAveraged::counts() const {
  if (num_classes_ == 0) return {};
  const at::Tensor c = read_counts().to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

void ClassAveraged::set_counts(const std::vector<double>& counts) {
  const auto n = static_cast<int64_t>(counts.size());
  if (n == 0 || n % 3 != 0 || (num_classes_ > 0 && n != 3 * num_classes_)) {
    throw Error(fmt::format("ClassAveraged::set_counts: expected 3 x {} counts (tp, fp, fn of each class), got {}",
                            num_classes_, n));
  }
  num_classes_ = n / 3;
  std::vector<int64_t> whole(counts.size());
  std::transform(counts.begin(), counts.end(), whole.begin(), [](double c) { return std::llround(c); });
  counts_ = at::tensor(whole, at::kLong).reshape({3, num_classes_});
}

std::string ClassAveraged::how_to_count() const {
  if (stated_classes_ > 0) return {};
  return fmt::format("give its class count, {{{0}: {{num_classes: 10}}}} (from Python {{\"{0}\": {{\"num_classes\": "
                     "10}}}}), so that every rank counts every class",
                     name());
}

std::unique_ptr<Metric> make_class_averaged(const std::string& name, const ClassAveragedOptions& options) {
  for (const auto& entry : kClassScores) {
    if (name == entry.name) {
      return std::make_unique<ClassAveraged>(entry.score, options.num_classes(), entry.average, options.per_class());
    }
  }
  return nullptr;
}

// ------------------------------------------------------------------------------------------------ factory

std::unique_ptr<Metric> make_metric(const std::string& name) {
  if (name == "accuracy") return std::make_unique<Accuracy>(1);
  if (name == "cross_entropy") return std::make_unique<CrossEntropyMetric>();
  if (name == "perplexity") return std::make_unique<Perplexity>();
  if (auto macro = make_class_averaged(name)) return macro;
  // "top<K>_accuracy"
  const std::string prefix = "top", suffix = "_accuracy";
  if (name.size() > prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
    const bool numeric = digits.size() <= 9 && std::all_of(digits.begin(), digits.end(), [](unsigned char c) {
                           return std::isdigit(c) != 0;
                         });
    if (numeric && std::stol(digits) >= 1) return std::make_unique<Accuracy>(std::stol(digits));
  }
  throw InputError(fmt::format(
      "unknown metric \"{}\"; expected one of: accuracy, top5_accuracy (any topK_accuracy with K >= 1), "
      "cross_entropy, perplexity, precision, recall, f1, weighted_precision, weighted_recall, weighted_f1",
      name));
}

void add_metric_values(const Metric& metric, const std::string& key, std::map<std::string, double>& out) {
  for (const auto& [part, value] : metric.compute_values()) out[part.empty() ? key : key + "/" + part] = value;
}

}  // namespace tessera
