// torch lr schedulers that no Tessera schedule equals (a LambdaLR of one's own, CyclicLR, a scheduler subclass, a
// SequentialLR of those), followed as torch steps them: tessera/_schedulers.py's TorchTable steps them over the
// run's steps once, before step 1, and the Trainer sets the factors it recorded. No Python runs while training.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "user_parts.h"

#include <tessera/error.h>
#include <tessera/optim/scheduler.h>

namespace tessera::python {
namespace {

class TorchTableSchedule : public optim::Scheduler {
 public:
  TorchTableSchedule(py::object table, std::string name, bool per_epoch)
      : table_(std::move(table)), name_(std::move(name)), per_epoch_(per_epoch) {}

  double alpha(const Timestamp& now, const TimeContext&) const override { return factors_[index(now)]; }

  /// Torch's schedulers moved the momentum (cycle_momentum): known once check() has run.
  bool sets_momentum() const override { return !momenta_.empty(); }
  std::optional<double> momentum(const Timestamp& now, const TimeContext&) const override {
    if (momenta_.empty()) return std::nullopt;
    return momenta_[index(now)];
  }

  /// Before step 1: torch's schedulers stepped over the run's steps (a Python exception keeps its type).
  void check(const TimeContext& ctx) const override {
    if (ctx.schedule_ratio != 1.0) {
      throw InputError(fmt::format(
          "scale_schedule_ratio: {} with {}, which has no Tessera equivalent and is followed as torch steps it; its "
          "steps cannot be scaled: give scale_schedule_ratio 1, or schedules that Tessera translates",
          ctx.schedule_ratio, name_));
    }
    const double batches = std::ceil(ctx.total_batches() - 1e-9);
    const double steps = per_epoch_ ? std::ceil(batches / static_cast<double>(ctx.batches_per_epoch)) : batches;
    py::gil_scoped_acquire gil;
    const auto [factors, momenta] =
        table_.get()(static_cast<int64_t>(steps)).cast<std::pair<std::vector<double>, py::object>>();
    factors_ = factors;
    momenta_ = momenta.is_none() ? std::vector<double>{} : momenta.cast<std::vector<double>>();
    for (size_t k = 0; k < factors_.size(); ++k) {
      if (!std::isfinite(factors_[k]) || factors_[k] < 0) {
        throw InputError(fmt::format("schedulers: {} sets the lr to {} times its initial lr at step {}; expected a "
                                     "finite factor >= 0",
                                     name_, factors_[k], k));
      }
    }
    for (size_t k = 0; k < momenta_.size(); ++k) {
      if (!(momenta_[k] >= 0 && momenta_[k] < 1)) {
        throw InputError(fmt::format("schedulers: {} sets the momentum to {} at step {}; expected a value in [0, 1)",
                                     name_, momenta_[k], k));
      }
    }
  }

  std::string name() const override { return name_; }

 private:
  /// The table's row at `now`: the scheduler's step count (batches done, or epochs done: the trainer evaluates every
  /// schedule at the epoch's first batch then), held at the last row.
  size_t index(const Timestamp& now) const {
    if (factors_.empty()) {
      throw Error(name_ + ": its rates were not computed; the Trainer computes them when it checks its schedules");
    }
    const int64_t step = per_epoch_ ? now.epoch : now.batch;
    return static_cast<size_t>(std::clamp<int64_t>(step, 0, static_cast<int64_t>(factors_.size()) - 1));
  }

  GilObject table_;
  std::string name_;
  bool per_epoch_;
  mutable std::vector<double> factors_;  ///< lr / initial lr of each step, from check()
  mutable std::vector<double> momenta_;  ///< the momentum of each step, from check(); empty where torch keeps it
};

}  // namespace

std::shared_ptr<optim::Scheduler> make_torch_table_schedule(py::object table, std::string name, bool per_epoch) {
  return std::make_shared<TorchTableSchedule>(std::move(table), std::move(name), per_epoch);
}

}  // namespace tessera::python
