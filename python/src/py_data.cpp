// The user's Python data as a tessera::data::BatchSource: batches cross as the same tensors (no copies); where
// an epoch starts, how a loader is positioned on resume and what it may skip are decided in tessera/_adapters.py.
#include <optional>

#include <torch/csrc/autograd/python_variable.h>

#include <tessera/error.h>

#include "user_parts.h"

namespace tessera::python {

bool is_tensor(py::handle h) { return THPVariable_Check(h.ptr()); }

bool is_mapping(py::handle h) {
  if (PyDict_Check(h.ptr())) return true;
  if (PyTuple_Check(h.ptr()) || PyList_Check(h.ptr()) || is_tensor(h)) return false;
  return py::isinstance(h, py::module_::import("collections.abc").attr("Mapping"));
}

std::string type_name(py::handle h) { return py::str(py::type::handle_of(h).attr("__name__")).cast<std::string>(); }

namespace {

at::Tensor part_from_python(py::handle value, const std::string& where) {
  if (!is_tensor(value)) {
    throw InputError(where + " is a " + type_name(value) +
                     "; expected a tensor (batches are tensors, tuples/lists of tensors or dicts of tensors)");
  }
  return value.cast<at::Tensor>();
}

py::module_ adapters() { return py::module_::import("tessera._adapters"); }

}  // namespace

Batch batch_from_python(py::handle batch, BatchLayout& layout, const std::string& where) {
  Batch out;
  if (is_tensor(batch)) {
    layout.kind = BatchLayout::Kind::Tensor;
    out.set(Batch::kInput, batch.cast<at::Tensor>());
  } else if (py::isinstance<py::tuple>(batch) || py::isinstance<py::list>(batch)) {
    const py::sequence items = py::reinterpret_borrow<py::sequence>(batch);
    if (items.size() == 0) throw InputError(where + " is an empty " + type_name(batch) + "; expected (input, target, ...)");
    layout.kind = BatchLayout::Kind::Sequence;
    layout.sequence_type.reset();
    if (!PyTuple_CheckExact(batch.ptr())) {
      layout.sequence_type =
          std::make_shared<GilObject>(py::reinterpret_borrow<py::object>(py::type::handle_of(batch)));
    }
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string key = i == 0 ? Batch::kInput : i == 1 ? Batch::kTarget : "item" + std::to_string(i);
      out.set(key, part_from_python(items[i], where + "[" + std::to_string(i) + "]"));
    }
  } else if (is_mapping(batch)) {
    layout.kind = BatchLayout::Kind::Mapping;
    const py::dict items(py::reinterpret_borrow<py::object>(batch));
    for (const auto& item : items) {
      if (!py::isinstance<py::str>(item.first)) {
        throw InputError(where + ": key " + describe_value(item.first) + " is not a string; expected string keys");
      }
      const std::string name = item.first.cast<std::string>();
      std::string key = name;
      if (name == layout.input_key) key = Batch::kInput;
      else if (name == layout.target_key) key = Batch::kTarget;
      else if (name == Batch::kInput || name == Batch::kTarget) {
        throw InputError(where + ": the key \"" + name + "\" is also the name given to \"" +
                         (name == Batch::kInput ? layout.input_key : layout.target_key) +
                         "\" (input_key/target_key); rename one of them");
      }
      out.set(key, part_from_python(item.second, where + "[\"" + name + "\"]"));
    }
    if (out.empty()) throw InputError(where + " is an empty dict; expected a dict of tensors");
  } else {
    throw InputError(where + " is a " + type_name(batch) +
                     "; expected a tensor, a tuple/list of tensors (input, target, ...) or a dict of tensors");
  }
  try {
    out.validate();
  } catch (const Error& e) {
    throw InputError(where + ": " + e.what());
  }
  return out;
}

py::object batch_to_python(const Batch& batch, const BatchLayout& layout) {
  switch (layout.kind) {
    case BatchLayout::Kind::Tensor: return py::cast(batch.input());
    case BatchLayout::Kind::Sequence: {
      py::list parts;
      for (const auto& [key, t] : batch.parts()) parts.append(py::cast(t));
      if (!layout.sequence_type) return py::tuple(parts);
      // In its own form: a list, or a namedtuple (its _make) with the same fields when no part was added.
      const py::object& type = layout.sequence_type->get();
      if (py::hasattr(type, "_make") && py::len(py::getattr(type, "_fields")) == py::len(parts)) {
        return type.attr("_make")(parts);
      }
      return PyObject_IsSubclass(type.ptr(), reinterpret_cast<PyObject*>(&PyList_Type)) == 1
                 ? py::object(parts)
                 : py::tuple(parts);
    }
    case BatchLayout::Kind::Mapping: {
      py::dict parts;
      for (const auto& [key, t] : batch.parts()) {
        const std::string& name = key == Batch::kInput ? layout.input_key : key == Batch::kTarget ? layout.target_key : key;
        parts[py::str(name)] = py::cast(t);
      }
      return std::move(parts);
    }
  }
  return py::none();
}

namespace {

class PyBatchSource : public data::BatchSource {
 public:
  PyBatchSource(py::object iterable, std::string what, std::string input_key, std::string target_key,
                std::string resume, std::shared_ptr<BatchContext> context)
      : iterable_(std::move(iterable)), what_(std::move(what)), resume_(std::move(resume)), context_(std::move(context)) {
    layout_.input_key = std::move(input_key);
    layout_.target_key = std::move(target_key);
    const py::dict info = adapters().attr("loader_info")(iterable_.get(), what_);
    num_batches_ = info["num_batches"].cast<int64_t>();
    num_samples_ = info["num_samples"].cast<int64_t>();
    batch_size_ = info["batch_size"].cast<int64_t>();
    description_ = info["description"].cast<std::string>();
  }

  int64_t num_batches() const override { return num_batches_; }
  int64_t num_samples() const override { return num_samples_; }
  int64_t batch_size() const override { return batch_size_; }
  std::string describe() const override { return description_; }

  void start_epoch(uint64_t seed, int64_t epoch, int64_t first_batch) override {
    if (first_batch < 0 || first_batch > num_batches_) {
      throw InputError(what_ + ": cannot start at batch " + std::to_string(first_batch) + "; it has " +
                       std::to_string(num_batches_) + " batches per epoch");
    }
    py::gil_scoped_acquire gil;
    iterator_.reset();  // a DataLoader's previous iterator shuts its workers down first
    iterator_.reset(adapters().attr("start_epoch")(iterable_.get(), what_, seed, epoch, first_batch, resume_));
    index_ = first_batch;
  }

  std::optional<Batch> next() override {
    if (!iterator_) throw Error(what_ + ": next() before start_epoch()");
    py::gil_scoped_acquire gil;
    PyObject* item = PyIter_Next(iterator_.get().ptr());
    if (item == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      iterator_.reset();
      return std::nullopt;
    }
    const py::object batch = py::reinterpret_steal<py::object>(item);
    Batch out = batch_from_python(batch, layout_, what_ + ": batch " + std::to_string(index_++));
    context_->current = layout_;
    return out;
  }

  Batch example_batch() override {
    if (!example_) {
      py::gil_scoped_acquire gil;
      const py::object batch = adapters().attr("example_batch")(iterable_.get(), what_);
      example_ = batch_from_python(batch, layout_, what_ + ": batch 0");
    }
    context_->current = layout_;
    return *example_;
  }

 private:
  GilObject iterable_;
  GilObject iterator_;
  std::string what_;
  std::string resume_;
  std::shared_ptr<BatchContext> context_;
  BatchLayout layout_;
  int64_t num_batches_ = 0;
  int64_t num_samples_ = 0;
  int64_t batch_size_ = 0;
  int64_t index_ = 0;
  std::string description_;
  std::optional<Batch> example_;
};

}  // namespace

std::shared_ptr<data::BatchSource> make_user_source(py::object iterable, const std::string& what,
                                                    const std::string& input_key, const std::string& target_key,
                                                    const std::string& resume, std::shared_ptr<BatchContext> context) {
  if (resume != "refuse" && resume != "skip") {
    throw InputError("dataloader_resume: \"" + resume + "\" is not allowed; expected \"refuse\" or \"skip\"");
  }
  return std::make_shared<PyBatchSource>(std::move(iterable), what, input_key, target_key, resume, std::move(context));
}

}  // namespace tessera::python
