#pragma once
/// Per-class classification metrics, averaged over the classes: precision, recall and F1, macro averages (recipe names
/// `precision`, `recall`, `f1`) or weighted by each class's targets (`weighted_precision`, `weighted_recall`,
/// `weighted_f1`); make_metric builds them. The other metrics are in metrics.h.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/metrics.h>
#include <tessera/options.h>

namespace tessera {

/// The recipe options of `precision`, `recall`, `f1` and their weighted averages.
struct ClassAveragedOptions {
  TESSERA_OPTION(int64_t, num_classes) = 0;
  TESSERA_OPTION(bool, per_class) = false;
  template <class V>
  void visit(V& v) {
    v("num_classes", num_classes_,
      "the class count, checked at every update (0: the outputs' own); data-parallel training needs it",
      Range::at_least(0));
    v("per_class", per_class_, "also report each class's score, as <name>/class_<c> (class_0, class_1, ...)", Any{});
  }
};

/// Precision, recall or F1 of each class, averaged over the classes: the macro average, or the average weighted by
/// each class's targets (as torchmetrics' MulticlassPrecision, MulticlassRecall and MulticlassF1Score with
/// average="macro" or "weighted", scikit-learn's average="macro" or "weighted"). Since reset it counts, for each
/// class c, the true positives tp (predicted c, target c), false positives fp (predicted c, another target) and
/// false negatives fn (target c, another prediction), a prediction being the outputs' argmax over dimension 1 (every
/// position of [N, C, d...] outputs is one, as in Accuracy; a target kIgnoreTarget counts nowhere). Each class's
/// precision is tp / (tp + fp), recall tp / (tp + fn), F1 2tp / (2tp + fp + fn), 0 where the denominator is; the value
/// is their mean over the classes that occur (tp + fp + fn > 0), so that a class neither predicted nor a target
/// does not pull it down; weighted, each class counts as often as it is a target (tp + fn), so that a rare class
/// weighs little and one never a target nothing. The counts are exact integers, so data-parallel training adds them
/// up over the ranks.
///
/// The class count is the outputs' dimension 1, learned at the first update; `num_classes` (> 0) states it in advance
/// (an update with another count is an InputError), which data-parallel training needs: counts() is empty until the
/// count is known.
class ClassAveraged : public Metric {
 public:
  enum class Score { Precision, Recall, F1 };
  enum class Average { Macro, Weighted };
  /// `per_class`: compute_values() also has each class's score, under "class_<c>" (c from 0; every class of the
  /// count, those that did not occur at 0), as torchmetrics' average=None gives them.
  explicit ClassAveraged(Score score, int64_t num_classes = 0, Average average = Average::Macro,
                         bool per_class = false);
  void reset() override;
  void update(const at::Tensor& outputs, const Batch& batch) override;
  double compute() const override;
  std::map<std::string, double> compute_values() const override;
  /// "precision", "recall", "f1", "weighted_precision", "weighted_recall", "weighted_f1".
  std::string name() const override;
  /// tp, fp and fn of each class (3 × the class count), or empty while the class count is unknown.
  std::vector<double> counts() const override;
  void set_counts(const std::vector<double>& counts) override;
  /// Without a stated class count: give num_classes.
  std::string how_to_count() const override;

 private:
  /// The counts as [3, C] int64 on the CPU (the deferred ones read back).
  at::Tensor read_counts() const;
  /// One class's score from its counts (0 where the denominator is).
  double score_of(double tp, double fp, double fn) const;

  Score score_;
  Average average_;
  bool per_class_;
  int64_t num_classes_;     ///< stated (> 0) or learned; 0 until known
  int64_t stated_classes_;  ///< the constructor's num_classes (0: learned)
  at::Tensor counts_;       ///< [3, C] int64 rows tp, fp, fn (on the outputs' device while deferred)
  at::Tensor invalid_;      ///< deferred count of targets outside [0, C) (int64 scalar), reported by compute()
};

/// The average `name` names ("precision", "recall", "f1", "weighted_precision", "weighted_recall", "weighted_f1")
/// with its options (num_classes 0: learned from the outputs), or nullptr for another name.
std::unique_ptr<Metric> make_class_averaged(const std::string& name, const ClassAveragedOptions& options = {});

}  // namespace tessera
