// The user's own evaluation metrics inside the C++ evaluation loop: any Python object with update(outputs,
// target), compute() and reset() (a torchmetrics Metric, or a class of one's own; tessera/_metrics.py checks
// and names them), taking the GIL for its own calls only.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "user_parts.h"

#include <tessera/error.h>
#include <tessera/metrics.h>

namespace tessera::python {
namespace {

class UserMetric : public Metric {
 public:
  /// Resets the metric: it starts empty, and counts() can be asked before the first evaluation.
  UserMetric(std::string name, py::object metric) : name_(std::move(name)), metric_(std::move(metric)) { reset(); }

  void reset() override { call("reset"); }
  void update(const at::Tensor& outputs, const Batch& batch) override {
    if (!batch.has(Batch::kTarget)) {
      throw InputError("metric \"" + name_ + "\" needs the batch's target, and this batch has none");
    }
    call("update", outputs, batch.target());
  }
  double compute() const override {
    py::gil_scoped_acquire gil;
    py::object value = call("compute");
    try {
      return py::module_::import("builtins").attr("float")(value).cast<double>();
    } catch (py::error_already_set&) {
      throw InputError("metric \"" + name_ + "\"'s compute() returned " + describe_value(value) +
                       "; expected a number (a float, or a tensor of one element)");
    }
  }
  std::string name() const override { return name_; }
  std::vector<double> counts() const override {
    py::gil_scoped_acquire gil;
    if (!py::hasattr(metric_.get(), "counts")) return {};
    return call("counts").cast<std::vector<double>>();
  }
  void set_counts(const std::vector<double>& counts) override { call("set_counts", counts); }

 private:
  /// Calls the metric's method; a Python exception keeps its type and message and gets a note naming the metric.
  template <class... Args>
  py::object call(const char* method, Args&&... args) const {
    py::gil_scoped_acquire gil;
    try {
      return metric_.get().attr(method)(std::forward<Args>(args)...);
    } catch (py::error_already_set& e) {
      add_note(e, "in metric \"" + name_ + "\", " + method + "()");
      throw;
    }
  }

  std::string name_;
  GilObject metric_;
};

}  // namespace

std::shared_ptr<Metric> make_user_metric(std::string name, py::object metric) {
  return std::make_shared<UserMetric>(std::move(name), std::move(metric));
}

}  // namespace tessera::python
