// Python-facing names in the generated signatures: LibTorch 1.13's type caster calls tensors "at::Tensor" in
// pybind11's docstrings ("smooth_labels(targets: at::Tensor, ...)"), where Python users know torch.Tensor
// (torch 2.x's caster already says so). The docstrings are rewritten once, after every binding is made.
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>

#include "common.h"

namespace tessera::python {
namespace {

const std::pair<const char*, const char*> kRenames[] = {
    {"at::Tensor", "torch.Tensor"}, {"at::Device", "torch.device"}, {"at::IntArrayRef", "List[int]"}};

std::string renamed(std::string text) {
  for (const auto& [from, to] : kRenames) {
    for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + std::strlen(to))) {
      text.replace(pos, std::strlen(from), to);
    }
  }
  return text;
}

/// Rewrites the docstring of one built-in function. pybind11 allocates ml_doc with strdup and frees it with
/// free() when the function goes away, so the new text is allocated the same way.
void fix_function(PyObject* f) {
  if (f == nullptr || !PyCFunction_Check(f)) return;
  PyMethodDef* def = reinterpret_cast<PyCFunctionObject*>(f)->m_ml;
  if (def == nullptr || def->ml_doc == nullptr) return;
  const std::string text = renamed(def->ml_doc);
  if (text == def->ml_doc) return;
  char* copy = strdup(text.c_str());
  if (copy == nullptr) throw std::bad_alloc();
  std::free(const_cast<char*>(def->ml_doc));
  def->ml_doc = copy;
}

void fix_callable(py::handle h) {
  if (!h) return;
  if (PyInstanceMethod_Check(h.ptr())) {
    fix_function(PyInstanceMethod_GET_FUNCTION(h.ptr()));
  } else if (PyCFunction_Check(h.ptr())) {
    fix_function(h.ptr());
  } else if (py::isinstance(h, py::module_::import("builtins").attr("staticmethod"))) {
    fix_callable(h.attr("__func__"));
  } else if (py::isinstance(h, py::module_::import("builtins").attr("property"))) {
    fix_callable(h.attr("fget"));
    fix_callable(h.attr("fset"));
  }
}

void fix_scope(py::handle scope, std::set<PyObject*>& seen) {
  if (!seen.insert(scope.ptr()).second) return;
  const py::dict members(scope.attr("__dict__"));  // a class has a mappingproxy: copied into a dict
  for (auto item : members) {
    py::handle value = item.second;
    if (PyModule_Check(value.ptr())) {
      if (py::str(value.attr("__name__")).cast<std::string>().rfind("tessera._C", 0) == 0) fix_scope(value, seen);
    } else if (PyType_Check(value.ptr())) {
      const std::string module = py::str(py::getattr(value, "__module__", py::str(""))).cast<std::string>();
      if (module.rfind("tessera", 0) == 0) fix_scope(value, seen);
    } else {
      fix_callable(value);
    }
  }
}

}  // namespace

void use_python_type_names(py::module_& m) {
  std::set<PyObject*> seen;
  fix_scope(m, seen);
}

}  // namespace tessera::python
