#pragma once
// The user's own Python parts inside the C++ loop: a torch.nn.Module (or a TorchScript module) as a
// tessera::Model (py_model.cpp), and a torch.utils.data.DataLoader or any iterable of batches as a
// tessera::data::BatchSource (py_data.cpp). The policies that are easier to state in Python (where a DataLoader
// can be positioned, how surgery replaces submodules) live in tessera/_adapters.py and tessera/_surgery.py;
// these classes call them.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common.h"

#include <tessera/batch.h>
#include <tessera/data/batch_source.h>
#include <tessera/metrics.h>
#include <tessera/models/model.h>

namespace tessera::optim {
class Scheduler;
}  // namespace tessera::optim

namespace tessera::python {

/// How the user's batches look, so that a C++ Batch goes back to the same form for their model and loss:
/// a tensor (the part "input"), a tuple/list (parts "input", "target", "item2", ...) or a dict (the dict's
/// keys, `input_key`/`target_key` renamed to "input"/"target" so that algorithms find them).
class GilObject;

struct BatchLayout {
  enum class Kind { Tensor, Sequence, Mapping };
  Kind kind = Kind::Sequence;
  std::string input_key = Batch::kInput;
  std::string target_key = Batch::kTarget;
  /// A sequence's own type when it is not a plain tuple (a list, a namedtuple): the batch goes back to Python
  /// as one.
  std::shared_ptr<GilObject> sequence_type;
};

/// The layout of the batch the model sees next: set by every Python batch source when it hands out a batch
/// (training and evaluation data may differ); C++ data leaves the default (a sequence).
struct BatchContext {
  BatchLayout current;
};

/// Whether `h` is a torch.Tensor.
bool is_tensor(py::handle h);
/// Whether `h` is a mapping: a dict (no import on that common path) or another collections.abc.Mapping.
bool is_mapping(py::handle h);
/// The name of `h`'s type ("Tensor", "dict").
std::string type_name(py::handle h);

/// A user's batch (tensor, tuple/list, dict of tensors) as a C++ Batch; `layout` receives its form.
/// InputError naming `where` and what was expected for anything else.
Batch batch_from_python(py::handle batch, BatchLayout& layout, const std::string& where);
/// The C++ batch in the user's form (`layout`).
py::object batch_to_python(const Batch& batch, const BatchLayout& layout);

/// A py::object that may be destroyed without the GIL (it takes it): C++ objects holding Python objects die
/// wherever the trainer dies, also on a thread that released the GIL.
class GilObject {
 public:
  GilObject() = default;
  explicit GilObject(py::object o) : o_(std::move(o)) {}
  GilObject(const GilObject&) = delete;
  GilObject& operator=(const GilObject&) = delete;
  ~GilObject() {
    if (!o_) return;
    py::gil_scoped_acquire gil;
    o_ = py::object();
  }
  const py::object& get() const { return o_; }
  void reset(py::object o = py::object()) {
    py::gil_scoped_acquire gil;
    o_ = std::move(o);
  }
  explicit operator bool() const { return static_cast<bool>(o_); }

 private:
  py::object o_;
};

/// What the Python Trainer passes for the user's model: the module, its loss and how to call it.
struct UserModelOptions {
  py::object module;             ///< a torch.nn.Module or a torch.jit.ScriptModule
  py::object loss_fn;            ///< None, or a callable (outputs, batch[, reduction=]) -> loss
  py::object loss_terms;         ///< None, or a callable batch -> int tensor [N] (Model::loss_terms)
  std::string call = "auto";     ///< "auto", "input", "batch" or "kwargs": how the batch is passed
  std::string output_key = "logits";  ///< the outputs in a dict returned by the model
};

/// The user's module as a tessera::Model. `example` gives a training batch (for plan-time probes).
std::shared_ptr<Model> make_user_model(const UserModelOptions& options, std::shared_ptr<BatchContext> context,
                                       std::function<Batch()> example);

/// The user's data as a batch source. `resume` is "refuse" or "skip": what a mid-epoch resume does when the
/// loader cannot be positioned (docs/python.md).
std::shared_ptr<data::BatchSource> make_user_source(py::object iterable, const std::string& what,
                                                    const std::string& input_key, const std::string& target_key,
                                                    const std::string& resume, std::shared_ptr<BatchContext> context);

/// A Python evaluation metric (update(outputs, target), compute(), reset(); optional counts()/set_counts() for exact
/// values over several ranks) as a tessera::Metric named `name` (py_metric.cpp).
std::shared_ptr<Metric> make_user_metric(std::string name, py::object metric);

/// torch schedulers that no Tessera schedule equals, followed as torch steps them (tessera/_schedulers.py
/// TorchTable): `table(steps)` gives lr / initial lr at each of the run's scheduler steps (batches, or epochs when
/// `per_epoch`); the Trainer's check of its schedules, before step 1, asks for it (py_schedule.cpp).
std::shared_ptr<optim::Scheduler> make_torch_table_schedule(py::object table, std::string name, bool per_epoch);

/// Binds the helpers the Python side of the adapters uses (tessera._C._shuffled_order, _blur2d, ...).
void bind_user_parts(py::module_& m);

}  // namespace tessera::python
