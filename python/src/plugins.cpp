// Python plugins: the trampolines that let Python subclasses of tessera.Algorithm, Callback and
// LoggerDestination run inside the C++ loop (taking the GIL only for their own calls), their state in
// checkpoints (tessera/_plugin_state.py), and the bindings of the spec types they declare.
#include "common.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <tessera/algorithm.h>
#include <tessera/callback.h>
#include <tessera/event.h>
#include <tessera/recipe.h>
#include <tessera/state.h>

namespace tessera::python {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Trampolines: Python subclasses of Algorithm and Callback run inside the C++ loop. The GIL is taken only
// for the calls that reach Python; everything else (the spec, which events a callback wants, the default
// `match`) is resolved once and answered from C++.

thread_local std::shared_ptr<void> current_owner;

template <class T>
py::object view(T& object) {
  if (!current_owner) return py::cast(&object, py::return_value_policy::reference);
  return py::cast(std::shared_ptr<T>(current_owner, &object));
}

}  // namespace

OwnerScope::OwnerScope(std::shared_ptr<void> owner) : previous_(std::exchange(current_owner, std::move(owner))) {}
OwnerScope::~OwnerScope() { current_owner = std::move(previous_); }
py::object view_of(const State& state) { return view(const_cast<State&>(state)); }
py::object view_of(Logger& logger) { return view(logger); }

namespace {

py::handle python_self(const void* cpp, const std::type_info& base) {
  return py::detail::get_object_handle(cpp, py::detail::get_type_info(base));
}

/// True when the Python class of `self` defines `name` itself (not inherited from the C++ binding `base`).
bool overrides(py::handle self, const char* name, py::handle base) {
  py::object mine = py::getattr(py::type::handle_of(self), name, py::none());
  py::object theirs = py::getattr(base, name, py::none());
  return !mine.is_none() && !mine.is(theirs);
}

/// A Python plugin's state_dict() as named tensors (tessera/_plugin_state.py: plain values are kept exactly).
/// `Base` is the C++ class the trampoline binds; without an override the plugin has no state.
template <class Base>
StateDict plugin_state_dict(const Base* plugin, const std::string& owner) {
  py::gil_scoped_acquire gil;
  py::function f = py::get_override(plugin, "state_dict");
  if (!f) return {};
  py::object encoded = py::module_::import("tessera._plugin_state").attr("to_checkpoint")(f(), owner);
  return encoded.cast<StateDict>();
}

template <class Base>
void plugin_load_state_dict(Base* plugin, const StateDict& state) {
  py::gil_scoped_acquire gil;
  py::function f = py::get_override(static_cast<const Base*>(plugin), "load_state_dict");
  if (!f) return;
  f(py::module_::import("tessera._plugin_state").attr("from_checkpoint")(state));
}

class PyAlgorithm : public Algorithm {
 public:
  const AlgorithmSpec& spec() const override {
    resolve();
    return spec_;
  }
  bool match(Event event, const State& state) const override {
    resolve();
    if (!match_overridden_) return Algorithm::match(event, state);
    py::gil_scoped_acquire gil;
    return self().attr("match")(event, view_of(state)).cast<bool>();
  }
  void apply(Event event, State& state, Logger& logger) override {
    resolve();
    py::gil_scoped_acquire gil;
    try {
      self().attr("apply")(event, view_of(state), view_of(logger));
    } catch (py::error_already_set& e) {
      add_note(e, "in algorithm \"" + spec_.name + "\" at " + event_name(event));
      throw;
    }
  }
  void check(const State& state) const override {
    resolve();
    if (!check_overridden_) return;
    py::gil_scoped_acquire gil;
    self().attr("check")(view_of(state));
  }
  StateDict state_dict() const override {
    resolve();
    return plugin_state_dict<Algorithm>(this, "algorithm \"" + spec_.name + "\"");
  }
  void load_state_dict(const StateDict& state) override { plugin_load_state_dict<Algorithm>(this, state); }

  /// Reads the declared spec (a `spec` attribute holding an AlgorithmSpec, or a `spec()` method) once.
  void resolve() const {
    if (resolved_) return;
    py::gil_scoped_acquire gil;
    if (resolved_) return;
    py::handle me = self();
    if (!me) throw Error("a Python tessera.Algorithm was used after its Python object was destroyed");
    py::handle base = py::type::of<Algorithm>();
    const std::string cls = py::str(py::type::handle_of(me).attr("__qualname__")).cast<std::string>();
    py::object attr = me.attr("spec");
    if (py::isinstance<AlgorithmSpec>(attr)) {
      spec_ = attr.cast<AlgorithmSpec>();
    } else if (overrides(me, "spec", base)) {
      if (!PyCallable_Check(attr.ptr())) {
        throw InputError(cls + ".spec: expected a tessera.AlgorithmSpec (spec = tessera.AlgorithmSpec(name=..., "
                               "accesses=[...])) or a method spec(self) returning one, got " + describe_value(attr));
      }
      py::object value = attr();
      if (!py::isinstance<AlgorithmSpec>(value)) {
        throw InputError(cls + ".spec() must return a tessera.AlgorithmSpec, got " + describe_value(value));
      }
      spec_ = value.cast<AlgorithmSpec>();
    } else {
      throw InputError(cls + ": a Python tessera.Algorithm must declare its spec: a class attribute "
                             "`spec = tessera.AlgorithmSpec(...)` or a method `spec(self)`");
    }
    if (spec_.name.empty()) throw InputError(cls + ": the spec has no name");
    if (!overrides(me, "apply", base)) {
      throw InputError(cls + ": a Python tessera.Algorithm must define apply(self, event, state, logger)");
    }
    match_overridden_ = overrides(me, "match", base);
    check_overridden_ = overrides(me, "check", base);
    resolved_ = true;
  }

 private:
  py::handle self() const { return python_self(static_cast<const Algorithm*>(this), typeid(Algorithm)); }
  mutable AlgorithmSpec spec_;
  mutable bool resolved_ = false;
  mutable bool match_overridden_ = false;
  mutable bool check_overridden_ = false;
};

/// A Python callback's public methods that are not events but are near an event name (`batch_ends`) would
/// never be called: a Python warning names each with the event it probably means.
void warn_about_misspelt_events(py::handle self, py::handle base) {
  std::vector<std::string> events;
  for (Event e : all_events()) events.emplace_back(event_name(e));
  py::handle cls = py::type::handle_of(self);
  for (py::handle item : py::module_::import("builtins").attr("dir")(cls)) {
    const std::string name = item.cast<std::string>();
    if (name.empty() || name[0] == '_' || py::hasattr(base, name.c_str())) continue;
    if (std::find(events.begin(), events.end(), name) != events.end()) continue;
    if (!PyCallable_Check(py::getattr(cls, name.c_str()).ptr())) continue;
    const std::string guess = suggest_name(name, events);
    if (guess.empty()) continue;
    const std::string text = py::str(cls.attr("__qualname__")).cast<std::string>() + "." + name +
                             " is not an event, so it is never called; did you mean \"" + guess + "\"?";
    if (PyErr_WarnEx(PyExc_UserWarning, text.c_str(), 1) != 0) throw py::error_already_set();
  }
}

/// Callbacks and logger destinations written in Python. An event reaches Python when the class overrides
/// `run_event`, or defines a method named after the event (`batch_end(self, state, logger)`), optionally
/// restricted by an `events` attribute (an iterable of Events or names).
template <class Base>
class PyCallbackT : public Base {
 public:
  std::string name() const override {
    resolve();
    return name_;
  }
  void run_event(Event event, State& state, Logger& logger) override {
    resolve();
    if (!wanted_[static_cast<size_t>(event)]) return;
    py::gil_scoped_acquire gil;
    try {
      if (run_event_overridden_) {
        self().attr("run_event")(event, view_of(state), view_of(logger));
      } else {
        self().attr(event_name(event))(view_of(state), view_of(logger));
      }
    } catch (py::error_already_set& e) {
      add_note(e, "in callback \"" + name_ + "\" at " + event_name(event));
      throw;
    }
  }
  void close() override {
    py::gil_scoped_acquire gil;
    try {
      PYBIND11_OVERRIDE(void, Base, close, );
    } catch (py::error_already_set& e) {
      add_note(e, "in callback \"" + name() + "\" at close()");
      throw;
    }
  }
  StateDict state_dict() const override {
    resolve();
    return plugin_state_dict<Base>(this, "callback \"" + name_ + "\"");
  }
  void load_state_dict(const StateDict& state) override { plugin_load_state_dict<Base>(this, state); }

  void resolve() const {
    if (resolved_) return;
    py::gil_scoped_acquire gil;
    if (resolved_) return;
    py::handle me = self();
    if (!me) throw Error("a Python tessera.Callback was used after its Python object was destroyed");
    py::handle base = py::type::of<Base>();
    py::handle cls = py::type::handle_of(me);
    // name: a `name` string attribute, a method or property of the subclass, else the class name
    py::object name_attr = py::getattr(cls, "name", py::none());
    if (py::isinstance<py::str>(name_attr)) {
      name_ = name_attr.cast<std::string>();
    } else if (overrides(me, "name", base)) {
      py::object v = me.attr("name");
      if (PyCallable_Check(v.ptr())) v = v();
      name_ = py::str(v).cast<std::string>();
    } else {
      name_ = py::str(cls.attr("__name__")).cast<std::string>();
    }
    run_event_overridden_ = overrides(me, "run_event", base);
    if (!run_event_overridden_) warn_about_misspelt_events(me, base);
    std::vector<bool> wanted(kNumEvents, false);
    for (Event e : all_events()) {
      wanted[static_cast<size_t>(e)] =
          run_event_overridden_ || (py::hasattr(me, event_name(e)) && PyCallable_Check(me.attr(event_name(e)).ptr()));
    }
    py::object events = py::getattr(me, "events", py::none());
    if (!events.is_none()) {
      std::vector<bool> only(kNumEvents, false);
      for (py::handle e : events) {
        only[static_cast<size_t>(to_event(e))] = true;
      }
      for (size_t i = 0; i < wanted.size(); ++i) wanted[i] = wanted[i] && only[i];
    }
    wanted_ = std::move(wanted);
    resolved_ = true;
  }

 protected:
  py::handle self() const { return python_self(static_cast<const Base*>(this), typeid(Base)); }

 private:
  mutable std::string name_;
  mutable std::vector<bool> wanted_;
  mutable bool run_event_overridden_ = false;
  mutable bool resolved_ = false;
};

using PyCallback = PyCallbackT<Callback>;

class PyLoggerDestination : public PyCallbackT<LoggerDestination> {
 public:
  void log_metrics(const std::map<std::string, double>& values, const Timestamp& ts) override {
    PYBIND11_OVERRIDE(void, LoggerDestination, log_metrics, values, ts);
  }
  void log_hyperparameters(const std::map<std::string, std::string>& values) override {
    PYBIND11_OVERRIDE(void, LoggerDestination, log_hyperparameters, values);
  }
  void log_text(const std::string& level, const std::string& text) override {
    PYBIND11_OVERRIDE(void, LoggerDestination, log_text, level, text);
  }
  void log_image(const std::string& tag, const at::Tensor& image, const Timestamp& ts) override {
    PYBIND11_OVERRIDE(void, LoggerDestination, log_image, tag, image, ts);
  }
  /// True when the subclass defines log_image.
  bool takes_images() const override {
    py::gil_scoped_acquire gil;
    return overrides(self(), "log_image", py::type::of<LoggerDestination>());
  }
};

}  // namespace

// Resolving while the GIL is held means that training never waits for it just to read a spec.
void resolve_plugin(const std::shared_ptr<Algorithm>& a) {
  if (auto* p = dynamic_cast<PyAlgorithm*>(a.get())) p->resolve();
}
void resolve_plugin(const std::shared_ptr<Callback>& c) {
  if (auto* p = dynamic_cast<PyCallback*>(c.get())) p->resolve();
  if (auto* p = dynamic_cast<PyLoggerDestination*>(c.get())) p->resolve();
}

void check_plugin_state(const std::shared_ptr<Algorithm>& a) {
  if (dynamic_cast<PyAlgorithm*>(a.get())) (void)a->state_dict();
}
void check_plugin_state(const std::shared_ptr<Callback>& c) {
  if (dynamic_cast<PyCallback*>(c.get()) || dynamic_cast<PyLoggerDestination*>(c.get())) (void)c->state_dict();
}

void bind_plugins(py::module_& m) {
  py::class_<Selector>(m, "Selector", "Which algorithms a rule is about: one by name, or the writers of a resource.")
      .def(py::init(&Selector::named), py::arg("algorithm"))
      .def(py::init(&Selector::writers_of), py::arg("writes"))
      .def_static("named", &Selector::named, py::arg("algorithm"))
      .def_static("writers_of", &Selector::writers_of, py::arg("resource"))
      .def_readonly("algorithm", &Selector::algorithm)
      .def_readonly("writes", &Selector::writes)
      .def("describe", &Selector::describe)
      .def("__repr__", [](const Selector& s) { return "Selector(" + s.describe() + ")"; });
  py::implicitly_convertible<py::str, Selector>();
  py::implicitly_convertible<Resource, Selector>();

  py::class_<Access>(m, "Access", "Reads and writes at one event.")
      .def(py::init([](const py::object& event, const py::object& reads, const py::object& writes) {
             return Access{to_event(event), to_resources(reads), to_resources(writes)};
           }),
           py::arg("event"), py::arg("reads") = py::tuple(), py::arg("writes") = py::tuple(),
           "Access(event, reads=[...], writes=[...]); events and resources as enums or names.")
      .def_readonly("event", &Access::event)
      .def_readonly("reads", &Access::reads)
      .def_readonly("writes", &Access::writes);

  py::class_<OrderRule>(m, "OrderRule", "Run before/after other algorithms, at one event or every shared event.")
      .def(py::init([](const std::string& relation, Selector other, const py::object& event_or_none, std::string reason) {
             const std::optional<Event> event =
                 event_or_none.is_none() ? std::nullopt : std::optional<Event>(to_event(event_or_none));
             OrderRule r;
             if (relation == "before") {
               r.relation = OrderRule::Relation::Before;
             } else if (relation == "after") {
               r.relation = OrderRule::Relation::After;
             } else {
               throw InputError("OrderRule: relation \"" + relation + "\" is not allowed; expected one of: before, after");
             }
             r.other = std::move(other);
             r.event = event;
             r.reason = std::move(reason);
             return r;
           }),
           py::arg("relation"), py::arg("other"), py::arg("event") = py::none(), py::arg("reason") = "")
      .def_property_readonly("relation", [](const OrderRule& r) {
        return std::string(r.relation == OrderRule::Relation::Before ? "before" : "after");
      })
      .def_readonly("other", &OrderRule::other)
      .def_readonly("event", &OrderRule::event)
      .def_readonly("reason", &OrderRule::reason);

  py::class_<Conflict>(m, "Conflict", "A refused (hard) or warned-about (soft) combination.")
      .def(py::init([](Selector other, bool hard, std::string reason) { return Conflict{std::move(other), hard, std::move(reason)}; }),
           py::arg("other"), py::arg("hard") = true, py::arg("reason") = "")
      .def_readonly("other", &Conflict::other)
      .def_readonly("hard", &Conflict::hard)
      .def_readonly("reason", &Conflict::reason);

  py::class_<AlgorithmSpec>(m, "AlgorithmSpec",
                            "What an algorithm declares: its events with reads/writes, ordering rules, conflicts "
                            "and flags. The engine orders and checks algorithms from it before step 1.")
      .def(py::init([](std::string name, std::vector<Access> accesses, std::vector<OrderRule> order,
                       std::vector<Conflict> conflicts, bool required_on_load, bool interpolates_loss,
                       bool leaves_parameters_unused, bool may_repeat, bool skips_modules) {
             AlgorithmSpec s;
             s.name = std::move(name);
             s.accesses = std::move(accesses);
             s.order = std::move(order);
             s.conflicts = std::move(conflicts);
             s.required_on_load = required_on_load;
             s.interpolates_loss = interpolates_loss;
             s.leaves_parameters_unused = leaves_parameters_unused;
             s.may_repeat = may_repeat;
             s.skips_modules = skips_modules;
             return s;
           }),
           py::arg("name"), py::arg("accesses") = std::vector<Access>{}, py::arg("order") = std::vector<OrderRule>{},
           py::arg("conflicts") = std::vector<Conflict>{}, py::arg("required_on_load") = false,
           py::arg("interpolates_loss") = false, py::arg("leaves_parameters_unused") = false,
           py::arg("may_repeat") = false, py::arg("skips_modules") = false)
      .def_readonly("name", &AlgorithmSpec::name)
      .def_readonly("accesses", &AlgorithmSpec::accesses)
      .def_readonly("order", &AlgorithmSpec::order)
      .def_readonly("conflicts", &AlgorithmSpec::conflicts)
      .def_readonly("required_on_load", &AlgorithmSpec::required_on_load)
      .def_readonly("interpolates_loss", &AlgorithmSpec::interpolates_loss)
      .def_readonly("leaves_parameters_unused", &AlgorithmSpec::leaves_parameters_unused)
      .def_readonly("may_repeat", &AlgorithmSpec::may_repeat)
      .def_readonly("skips_modules", &AlgorithmSpec::skips_modules)
      .def("events", &AlgorithmSpec::events)
      .def("acts_on", &AlgorithmSpec::acts_on, py::arg("event"))
      .def("writes", &AlgorithmSpec::writes, py::arg("resource"), py::arg("at") = py::none())
      .def("reads", &AlgorithmSpec::reads, py::arg("resource"), py::arg("at") = py::none());

  py::class_<Algorithm, PyAlgorithm, std::shared_ptr<Algorithm>>(
      m, "Algorithm",
      "Base of the algorithms. A Python subclass declares `spec` (a tessera.AlgorithmSpec, as a class attribute "
      "or a method) and defines apply(self, event, state, logger); optionally match(self, event, state), "
      "check(self, state), state_dict(self) and load_state_dict(self, state) (a dict of tensors and plain values: "
      "int, float, bool, str, None, dicts and lists, kept exactly in checkpoints). It runs inside the C++ loop at "
      "its events, ordered by the engine like any C++ algorithm. Call super().__init__() in __init__.")
      .def(py::init<>())
      .def("spec", &Algorithm::spec, py::return_value_policy::copy, "The declared spec.")
      .def_property_readonly("name", [](const Algorithm& a) { return a.name(); })
      .def("match", &Algorithm::match, py::arg("event"), py::arg("state"),
           "Whether to act at `event` now (default: the event is one of the spec's).")
      .def("apply", &Algorithm::apply, py::arg("event"), py::arg("state"), py::arg("logger"))
      .def("check", &Algorithm::check, py::arg("state"), "Plan-time check against the run; raise to refuse it.")
      .def("state_dict", &Algorithm::state_dict)
      .def("load_state_dict", &Algorithm::load_state_dict, py::arg("state"));

  py::class_<Callback, PyCallback, std::shared_ptr<Callback>>(
      m, "Callback",
      "Base of the callbacks (they observe, never change training). A Python subclass defines methods named "
      "after events — batch_end(self, state, logger), after_loss(self, state, logger), ... — or "
      "run_event(self, event, state, logger); an optional `events` attribute restricts which events reach "
      "Python, and `name` names it (default: the class name). Callbacks run after the algorithms at every "
      "event. Call super().__init__() in __init__.")
      .def(py::init<>())
      .def_property_readonly("callback_name", &Callback::name)
      .def("close", &Callback::close)
      .def("state_dict", &Callback::state_dict)
      .def("load_state_dict", &Callback::load_state_dict, py::arg("state"));

  py::class_<LoggerDestination, Callback, PyLoggerDestination, std::shared_ptr<LoggerDestination>>(
      m, "LoggerDestination",
      "Where logged values go. A Python subclass may define log_metrics(self, values, timestamp), "
      "log_hyperparameters(self, values), log_text(self, level, text) and log_image(self, tag, image, timestamp) "
      "(a uint8 tensor [height, width, 1 or 3]; defining it makes the destination keep pictures), plus event "
      "methods as a Callback.")
      .def(py::init<>())
      .def("log_metrics", &LoggerDestination::log_metrics, py::arg("values"), py::arg("timestamp"))
      .def("log_hyperparameters", &LoggerDestination::log_hyperparameters, py::arg("values"))
      .def("log_text", &LoggerDestination::log_text, py::arg("level"), py::arg("text"))
      .def("log_image", &LoggerDestination::log_image, py::arg("tag"), py::arg("image"), py::arg("timestamp"));
}

}  // namespace tessera::python
