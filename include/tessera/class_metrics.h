#pragma once
/// Per-class classification metrics, averaged over the classes: macro precision, recall and F1 (recipe names
/// `precision`, `recall`, `f1`; make_metric builds them). The other metrics are in metrics.h.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/metrics.h>
#include <tessera/options.h>

namespace tessera {

/// The recipe options of `precision`, `recall` and `f1`.
struct MacroAveragedOptions {
  TESSERA_OPTION(int64_t, num_classes) = 0;
  template <class V>
  void visit(V& v) {
    v("num_classes", num_classes_,
      "the class count, checked at every update (0: the outputs' own); data-parallel training needs it",
      Range::at_least(0));
  }
};

/// Precision, recall or F1 of each class, averaged over the classes (the macro average, as torchmetrics'
/// MulticlassPrecision, MulticlassRecall and MulticlassF1Score with average="macro"). Since reset it counts, for each
/// class c, the true positives tp (predicted c, target c), false positives fp (predicted c, another target) and
/// false negatives fn (target c, another prediction), a prediction being the outputs' argmax over dimension 1 (every
/// position of [N, C, d...] outputs is one, as in Accuracy; a target kIgnoreTarget counts nowhere). Each class's
/// precision is tp / (tp + fp), recall tp / (tp + fn), F1 2tp / (2tp + fp + fn), 0 where the denominator is; the value
/// is their mean over the classes that occur (tp + fp + fn > 0), so that a class neither predicted nor a target
/// does not pull it down. The counts are exact integers, so data-parallel training adds them up over the ranks.
///
/// The class count is the outputs' dimension 1, learned at the first update; `num_classes` (> 0) states it in advance
/// (an update with another count is an InputError), which data-parallel training needs: counts() is empty until the
/// count is known.
class MacroAveraged : public Metric {
 public:
  enum class Score { Precision, Recall, F1 };
  explicit MacroAveraged(Score score, int64_t num_classes = 0);
  void reset() override;
  void update(const at::Tensor& outputs, const Batch& batch) override;
  double compute() const override;
  /// "precision", "recall", "f1".
  std::string name() const override;
  /// tp, fp and fn of each class (3 × the class count), or empty while the class count is unknown.
  std::vector<double> counts() const override;
  void set_counts(const std::vector<double>& counts) override;
  /// Without a stated class count: give num_classes.
  std::string how_to_count() const override;

 private:
  /// The counts as [3, C] int64 on the CPU (the deferred ones read back).
  at::Tensor read_counts() const;

  Score score_;
  int64_t num_classes_;     ///< stated (> 0) or learned; 0 until known
  int64_t stated_classes_;  ///< the constructor's num_classes (0: learned)
  at::Tensor counts_;       ///< [3, C] int64 rows tp, fp, fn (on the outputs' device while deferred)
  at::Tensor invalid_;      ///< deferred count of targets outside [0, C) (int64 scalar), reported by compute()
};

/// The macro average `name` names ("precision", "recall", "f1") with its class count (0: learned from the outputs),
/// or nullptr for another name.
std::unique_ptr<Metric> make_macro_averaged(const std::string& name, int64_t num_classes = 0);

}  // namespace tessera
