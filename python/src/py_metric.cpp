// The user's own evaluation metrics inside the C++ evaluation loop: any Python object with update(outputs,
// target), compute() and reset() (a torchmetrics Metric, or a class of one's own; tessera/_metrics.py checks
// and names them), taking the GIL for its own calls only.
#include <map>
#include <memory>
#include <optional>
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
    const std::map<std::string, double> values = compute_values();
    const auto it = values.find("");
    if (it == values.end()) {
      throw InputError("metric \"" + name_ + "\"'s compute() returns several values (" + std::to_string(values.size()) +
                       "), and one is wanted here");
    }
    return it->second;
  }
  /// compute()'s number as {"": value}; a tensor of several values as one part per element, named by its indices
  /// joined by "_" ({"0": ..., "1": ...} for a 1-D tensor, {"0_0": ..., "0_1": ...} for a confusion matrix); a dict
  /// as its entries.
  std::map<std::string, double> compute_values() const override {
    py::gil_scoped_acquire gil;
    const py::object value = call("compute");
    const std::string expected =
        "; expected a number (a float, or a tensor of one element), a tensor of several (one value per class, or a "
        "confusion matrix) or a dict of numbers by name";
    std::map<std::string, double> out;
    if (is_mapping(value)) {
      for (const auto& item : py::dict(value)) {
        if (!py::isinstance<py::str>(item.first) || item.first.cast<std::string>().empty()) {
          throw InputError("metric \"" + name_ + "\"'s compute() returned a dict with the key " +
                           describe_value(item.first) + expected);
        }
        const std::optional<double> number = number_of(item.second);
        if (!number) {
          throw InputError("metric \"" + name_ + "\"'s compute() returned " + describe_value(item.second) +
                           " under \"" + item.first.cast<std::string>() + "\"" + expected);
        }
        out[item.first.cast<std::string>()] = *number;
      }
      if (out.empty()) throw InputError("metric \"" + name_ + "\"'s compute() returned an empty dict" + expected);
      return out;
    }
    if (is_tensor(value)) {
      const at::Tensor t = value.cast<at::Tensor>();
      if (t.numel() > 1 && !t.is_complex()) {
        const at::Tensor cpu = t.detach().to(at::kCPU, at::kDouble).contiguous();
        for (int64_t i = 0; i < cpu.numel(); ++i) {
          std::string key;  // the element's indices, last dimension fastest (row-major)
          for (int64_t d = cpu.dim() - 1, rest = i; d >= 0; rest /= cpu.size(d), --d) {
            key = std::to_string(rest % cpu.size(d)) + (key.empty() ? "" : "_" + key);
          }
          out[key] = cpu.data_ptr<double>()[i];
        }
        return out;
      }
    }
    const std::optional<double> number = number_of(value);
    if (!number) throw InputError("metric \"" + name_ + "\"'s compute() returned " + describe_value(value) + expected);
    return {{"", *number}};
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

  /// float(value): a number, or a tensor of one element; nullopt for anything else.
  static std::optional<double> number_of(const py::handle& value) {
    try {
      return py::module_::import("builtins").attr("float")(value).cast<double>();
    } catch (py::error_already_set&) {
      return std::nullopt;
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
