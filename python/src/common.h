#pragma once
// Shared by the binding translation units: pybind11 with torch's tensor type caster (tensors cross as the
// same TensorImpl, never copied), and the generic Options <-> keyword-arguments binder driven by each
// Options struct's `visit` (the one list of option names, types, defaults, help and ranges).
#include <torch/csrc/utils/pybind.h>

#include <pybind11/functional.h>
#include <pybind11/operators.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <torch/nn/module.h>

#include <tessera/algorithm.h>
#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/event.h>
#include <tessera/models/model.h>
#include <tessera/options.h>
#include <tessera/recipe.h>
#include <tessera/time.h>

namespace py = pybind11;

namespace tessera::python {

/// Binds errors, events, time, plugins (Algorithm, Callback and their specs), recipes and the trainer, and
/// creates the module: bindings.cpp.
/// Binds Selector, Access, OrderRule, Conflict, AlgorithmSpec and the Algorithm, Callback and
/// LoggerDestination bases that Python subclasses: plugins.cpp.
void bind_plugins(py::module_& m);
/// Reads a Python plugin's spec, name and event methods once, while the GIL is held (no-op for C++ plugins).
void resolve_plugin(const std::shared_ptr<Algorithm>& a);
void resolve_plugin(const std::shared_ptr<Callback>& c);
/// Before step 1: a Python plugin's state_dict() must be storable in a checkpoint (InputError naming the
/// plugin, the key path and the type), rather than failing at the first checkpoint after hours of training.
void check_plugin_state(const std::shared_ptr<Algorithm>& a);
void check_plugin_state(const std::shared_ptr<Callback>& c);
/// An Event from an Event or its snake_case name (InputError with a did-you-mean otherwise): bindings.cpp.
Event to_event(py::handle h);
/// Resources from a list of Resources or their names: bindings.cpp.
std::vector<Resource> to_resources(py::handle h);

/// The State and Logger a Python plugin is handed. While a Python trainer runs (its construction, fit, evaluate,
/// predict, checkpoint calls, close), an OwnerScope on the thread names what owns its native trainer; each view
/// then holds that, so a plugin that keeps `state`, `state.batch` or `logger` past the call (self.state = state)
/// reads live memory even after the trainer is deleted (the native trainer is freed with the last view). Outside a
/// scope (a C++ Trainer's plugins), a plain reference. view_of is called with the GIL held: plugins.cpp.
class OwnerScope {
 public:
  explicit OwnerScope(std::shared_ptr<void> owner);
  ~OwnerScope();
  OwnerScope(const OwnerScope&) = delete;
  OwnerScope& operator=(const OwnerScope&) = delete;

 private:
  std::shared_ptr<void> previous_;
};
py::object view_of(const State& state);
py::object view_of(Logger& logger);

/// Binds Batch, Model, Optimizer, DataLoader, Logger and State (held by shared_ptr, for view_of): components.cpp.
void bind_state(py::module_& m);
/// Binds tessera.algorithms, tessera.functional and tessera.data: components.cpp.
void bind_algorithms(py::module_& algorithms, py::module_& functional, py::module_& data);
/// tessera.data's MDS reader, writer, merge and streaming order (py_mds.cpp).
void bind_mds(py::module_& data);
void bind_tokenizer(py::module_& data);
/// The language-model algorithms (sequence-length warmup, ALiBi, gated linear units, low-precision LayerNorm) and
/// their functional forms: language_models.cpp.
void bind_language_model_algorithms(py::module_& algorithms, py::module_& functional);
/// Rewrites LibTorch 1.13's "at::Tensor" as "torch.Tensor" in the signatures of every docstring of the module
/// (call it last): signatures.cpp.
void use_python_type_names(py::module_& m);

/// "a, b, c".
/// Adds a note ("in algorithm \"x\" at after_loss") to a Python exception raised by the user's code called from C++
/// (PEP 678, shown under the traceback; Python 3.11 and later): its type and message stay the user's own.
inline void add_note(py::error_already_set& e, const std::string& note) {
  const py::object& value = e.value();
  if (value && py::hasattr(value, "add_note")) value.attr("add_note")(note);
}

inline std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

/// "mean" / "sum" / "none".
inline Reduction parse_reduction(const std::string& s) {
  if (s == "mean") return Reduction::Mean;
  if (s == "sum") return Reduction::Sum;
  if (s == "none") return Reduction::None;
  throw InputError("reduction: \"" + s + "\" is not allowed; expected one of: mean, sum, none");
}

/// Keeps a generated docstring alive for the life of the process (pybind11 stores `const char*`).
inline const char* keep_doc(std::string text) {
  static std::deque<std::string> docs;
  docs.push_back(std::move(text));
  return docs.back().c_str();
}

/// "'abc' (str)" for messages.
inline std::string describe_value(py::handle h) {
  return py::repr(h).cast<std::string>() + " (" + py::str(py::type::handle_of(h).attr("__name__")).cast<std::string>() +
         ")";
}

/// A file path from a str or an os.PathLike (os.fspath); InputError naming `where` otherwise.
inline std::string path_from_python(py::handle h, const char* where) {
  if (PyUnicode_Check(h.ptr())) return h.cast<std::string>();
  py::object fspath = py::module_::import("os").attr("fspath");
  try {
    py::object p = fspath(h);
    if (PyUnicode_Check(p.ptr())) return p.cast<std::string>();
  } catch (const py::error_already_set&) {
  }
  throw InputError(std::string(where) + ": expected a path (str or os.PathLike), got " + describe_value(h));
}

// ---------------------------------------------------------------------------------------------------------
// Python value -> option field. Type errors are InputErrors "<where>: expected ..., got ..."; ranges and
// choices are checked afterwards by validate_options, with the C++ message.

template <class T>
struct IsVec : std::false_type {};
template <class T, class A>
struct IsVec<std::vector<T, A>> : std::true_type {
  using element = T;
};

// Defined below; option_to_python uses it for nested options structs (TrainerOptions::profiler).
template <class Options>
py::dict options_to_dict(const Options& options);

template <class T>
T option_from_python(py::handle h, const std::string& where) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!PyBool_Check(h.ptr())) throw InputError(where + ": expected True or False, got " + describe_value(h));
    return h.cast<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (PyBool_Check(h.ptr())) throw InputError(where + ": expected a whole number, got " + describe_value(h));
    if (PyLong_Check(h.ptr())) return static_cast<T>(h.cast<int64_t>());
    if (PyFloat_Check(h.ptr())) {
      const double d = h.cast<double>();
      if (d == static_cast<double>(static_cast<int64_t>(d))) return static_cast<T>(d);
    }
    throw InputError(where + ": expected a whole number, got " + describe_value(h));
  } else if constexpr (std::is_floating_point_v<T>) {
    if (PyBool_Check(h.ptr()) || !(PyLong_Check(h.ptr()) || PyFloat_Check(h.ptr()))) {
      throw InputError(where + ": expected a number, got " + describe_value(h));
    }
    return static_cast<T>(h.cast<double>());
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!PyUnicode_Check(h.ptr())) throw InputError(where + ": expected a string, got " + describe_value(h));
    return h.cast<std::string>();
  } else if constexpr (std::is_same_v<T, Time>) {
    if (PyUnicode_Check(h.ptr())) {
      try {
        return Time::parse(h.cast<std::string>());
      } catch (const InputError& e) {
        throw InputError(where + ": " + e.what());
      }
    }
    if (py::isinstance<Time>(h)) return h.cast<Time>();
    throw InputError(where + ": expected a time such as \"10ep\", \"500ba\" or \"0.5dur\", got " + describe_value(h));
  } else if constexpr (std::is_same_v<T, MicrobatchSize>) {
    if (PyUnicode_Check(h.ptr())) return MicrobatchSize::parse(h.cast<std::string>(), where);
    if (PyLong_Check(h.ptr()) && !PyBool_Check(h.ptr())) return MicrobatchSize(h.cast<int64_t>());
    throw InputError(where + ": expected a whole number >= 0 (0 = the whole batch) or \"auto\", got " +
                     describe_value(h));
  } else if constexpr (IsVec<T>::value) {
    using E = typename IsVec<T>::element;
    if (PyUnicode_Check(h.ptr()) || !(PyList_Check(h.ptr()) || PyTuple_Check(h.ptr()))) {
      throw InputError(where + ": expected a list, got " + describe_value(h));
    }
    T out;
    size_t i = 0;
    for (py::handle e : py::reinterpret_borrow<py::sequence>(h)) {
      out.push_back(option_from_python<E>(e, where + "[" + std::to_string(i++) + "]"));
    }
    return out;
  } else {
    throw InputError(where + ": this option cannot be set from Python");
  }
}

template <class T>
py::object option_to_python(const T& value) {
  if constexpr (std::is_same_v<T, Time>) {
    return py::str(value.str());
  } else if constexpr (std::is_same_v<T, MicrobatchSize>) {
    if (value.is_auto()) return py::str("auto");
    return py::int_(value.examples());
  } else if constexpr (IsVec<T>::value) {
    py::list out;
    for (const auto& e : value) out.append(option_to_python(e));
    return std::move(out);
  } else if constexpr (std::is_same_v<T, ConfigNode>) {
    return py::none();
  } else if constexpr (tessera::detail::HasVisit<T>::value) {
    return options_to_dict(value);
  } else {
    return py::cast(value);
  }
}

template <class T>
std::string option_type_name() {
  if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_integral_v<T>) return "int";
  else if constexpr (std::is_floating_point_v<T>) return "float";
  else if constexpr (std::is_same_v<T, std::string>) return "str";
  else if constexpr (std::is_same_v<T, Time>) return "str | Time";
  else if constexpr (std::is_same_v<T, MicrobatchSize>) return "int | 'auto'";
  else if constexpr (IsVec<T>::value) return "list[" + option_type_name<typename IsVec<T>::element>() + "]";
  else if constexpr (tessera::detail::HasVisit<T>::value) return "dict";
  else return "object";
}

inline std::string constraint_text(const Range& r) {
  const std::string text = r.describe();
  return text == "any number" ? "" : "range " + text;
}
inline std::string constraint_text(const Choices& c) { return c.describe(); }
inline std::string constraint_text(const Any&) { return ""; }

struct KwargsReader {
  const py::dict& kwargs;
  const std::string& where;
  std::vector<std::string> known;
  template <class T, class C>
  void operator()(const char* name, T& field, const char*, const C&) {
    known.emplace_back(name);
    if (kwargs.contains(name)) field = option_from_python<T>(kwargs[name], where + "." + name);
  }
};

struct DictWriter {
  py::dict out;
  template <class T, class C>
  void operator()(const char* name, T& field, const char*, const C&) {
    out[name] = option_to_python(field);
  }
};

struct DocWriter {
  std::string text;
  template <class T, class C>
  void operator()(const char* name, T& field, const char* help, const C& constraint) {
    std::string line = std::string("    ") + name + " (" + option_type_name<T>() + ", default " +
                       py::repr(option_to_python(field)).template cast<std::string>() + "): " + help;
    const std::string allowed = constraint_text(constraint);
    if (!allowed.empty()) line += "; " + allowed;
    text += line + "\n";
  }
};

/// Options from keyword arguments: unknown names are rejected with a did-you-mean, values are converted by
/// type, then every field is validated against its declared Range/Choices. `where` names the component.
template <class Options>
Options options_from_kwargs(const py::dict& kwargs, const std::string& where, Options options = Options()) {
  KwargsReader reader{kwargs, where, {}};
  options.visit(reader);
  for (auto item : kwargs) {
    const std::string key = py::str(item.first).cast<std::string>();
    if (std::find(reader.known.begin(), reader.known.end(), key) != reader.known.end()) continue;
    std::string msg = where + ": unknown option \"" + key + "\"";
    const std::string guess = suggest_name(key, reader.known);
    if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
    throw InputError(msg + " (known options: " + (reader.known.empty() ? "none" : join(reader.known)) + ")");
  }
  validate_options(options, where);
  return options;
}

/// The fields of an Options struct as a dict (times as strings).
template <class Options>
py::dict options_to_dict(const Options& options) {
  DictWriter w;
  const_cast<Options&>(options).visit(w);
  return w.out;
}

/// "Keyword arguments:" followed by one line per field, with its type, default, help and allowed range.
template <class Options>
std::string options_doc() {
  Options defaults;
  DocWriter w;
  defaults.visit(w);
  return "Keyword arguments (all optional):\n" + w.text;
}

/// "Name(a=1, b='x')".
inline std::string call_repr(const std::string& name, const py::dict& fields) {
  std::string out = name + "(";
  bool first = true;
  for (auto item : fields) {
    out += (first ? "" : ", ") + py::str(item.first).cast<std::string>() + "=" + py::repr(item.second).cast<std::string>();
    first = false;
  }
  return out + ")";
}

/// Binds algorithm A built from Options given as keyword arguments; `options` reads them back as a dict.
template <class A, class Options>
py::class_<A, Algorithm, std::shared_ptr<A>> bind_algorithm(py::module_& m, const char* py_name,
                                                            const char* recipe_name, const std::string& doc) {
  const std::string name = recipe_name;
  const std::string full_doc = doc + "\n\nRecipe name: \"" + name + "\".\n\n" + options_doc<Options>();
  py::class_<A, Algorithm, std::shared_ptr<A>> cls(m, py_name, keep_doc(full_doc));
  cls.def(py::init([name](const py::kwargs& kwargs) { return std::make_shared<A>(options_from_kwargs<Options>(kwargs, name)); }),
          keep_doc("Builds the algorithm; every option is a keyword argument (see the class docstring). Unknown "
                   "names and out-of-range values raise tessera.InputError with the C++ message."))
      .def_property_readonly("options", [](const A& a) { return options_to_dict(a.options()); },
                             "The options as a dict (times as strings).")
      .def("__repr__", [py_name](const A& a) { return call_repr(py_name, options_to_dict(a.options())); });
  return cls;
}

}  // namespace tessera::python
