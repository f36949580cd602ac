// The tessera._C extension: thin pybind11 bindings of the core. Validation stays in C++; tensors cross as
// the same TensorImpl (torch's type caster); the GIL is released around training and taken back only inside
// Python plugins (the trampolines below).
#include "common.h"
#include "user_parts.h"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <type_traits>

#include <ATen/ATen.h>

#include <tessera/algorithm.h>
#include <tessera/batch.h>
#include <tessera/callback.h>
#include <tessera/checkpoint.h>
#include <tessera/class_metrics.h>
#include <tessera/data/dataloader.h>
#include <tessera/data/dataset.h>
#include <tessera/engine.h>
#include <tessera/event.h>
#include <tessera/models/model.h>
#include <tessera/optim/optimizer.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
#include <tessera/rng.h>
#include <tessera/state.h>
#include <tessera/time.h>
#include <tessera/trainer.h>
#include <tessera/version.h>
#include <torch/version.h>

namespace tessera::python {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Small helpers

/// tessera.inspect_checkpoint's dict.
py::dict checkpoint_info_to_python(const CheckpointInfo& info) {
  py::dict out;
  out["path"] = info.path;
  out["epoch"] = info.timestamp.epoch;
  out["batch"] = info.timestamp.batch;
  out["sample"] = info.timestamp.sample;
  out["timestamp"] = info.timestamp;
  out["tessera_version"] = info.tessera_version;
  out["torch_version"] = info.torch_version;
  out["seed"] = info.seed;
  out["world_size"] = info.world_size;
  out["recipe"] = info.recipe;
  return out;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

Event event_from_string(const std::string& text) {
  if (auto e = event_from_name(text)) return *e;
  std::vector<std::string> names;
  for (Event e : all_events()) names.emplace_back(event_name(e));
  std::string msg = "unknown event \"" + text + "\"";
  const std::string guess = suggest_name(text, names);
  if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
  throw InputError(msg + " (events: " + join(names) + ")");
}

const std::vector<Resource>& all_resources() {
  static const std::vector<Resource> all = {
      Resource::ModelStructure, Resource::Parameters, Resource::OptimizerGroups, Resource::Inputs,
      Resource::Targets,        Resource::BatchRows,  Resource::Resolution,      Resource::Outputs,
      Resource::Loss,           Resource::Gradients,  Resource::LearningRate,    Resource::Buffers,
      Resource::SequenceLength};
  return all;
}

/// "model structure" -> "model_structure".
std::string resource_key(Resource r) {
  std::string s = resource_name(r);
  for (char& c : s) c = c == ' ' ? '_' : c;
  return s;
}

Resource resource_from_string(std::string text) {
  for (char& c : text) c = c == ' ' ? '_' : c;
  std::vector<std::string> names;
  for (Resource r : all_resources()) {
    if (resource_key(r) == text) return r;
    names.push_back(resource_key(r));
  }
  std::string msg = "unknown resource \"" + text + "\"";
  const std::string guess = suggest_name(text, names);
  if (!guess.empty()) msg += "; did you mean \"" + guess + "\"?";
  throw InputError(msg + " (resources: " + join(names) + ")");
}

}  // namespace

/// An Event from an Event or its snake_case name (InputError with a did-you-mean otherwise).
Event to_event(py::handle h) {
  if (py::isinstance<py::str>(h)) return event_from_string(h.cast<std::string>());
  if (py::isinstance<Event>(h)) return h.cast<Event>();
  throw InputError("expected an event (tessera.Event or its name), got " + describe_value(h));
}

std::vector<Resource> to_resources(py::handle h) {
  if (py::isinstance<py::str>(h)) throw InputError("expected a list of resources, got " + describe_value(h));
  std::vector<Resource> out;
  for (py::handle r : h) {
    if (py::isinstance<py::str>(r)) {
      out.push_back(resource_from_string(r.cast<std::string>()));
    } else if (py::isinstance<Resource>(r)) {
      out.push_back(r.cast<Resource>());
    } else {
      throw InputError("expected a resource (tessera.Resource or its name), got " + describe_value(r));
    }
  }
  return out;
}

namespace {

TimeUnit unit_from_string(const std::string& s) {
  for (TimeUnit u : {TimeUnit::Epoch, TimeUnit::Batch, TimeUnit::Sample, TimeUnit::Token, TimeUnit::Duration}) {
    if (s == unit_suffix(u)) return u;
  }
  throw InputError("unknown time unit \"" + s + "\"; expected one of: ep, ba, sp, tok, dur");
}

/// Rng(seed, {ids...}) for a runtime list of ids (the C++ API takes an initializer_list).
Rng make_rng(uint64_t seed, const std::vector<uint64_t>& s) {
  switch (s.size()) {
    case 0: return Rng(seed);
    case 1: return Rng(seed, {s[0]});
    case 2: return Rng(seed, {s[0], s[1]});
    case 3: return Rng(seed, {s[0], s[1], s[2]});
    case 4: return Rng(seed, {s[0], s[1], s[2], s[3]});
    default: throw InputError("Rng: at most 4 stream ids, got " + std::to_string(s.size()));
  }
}

Rng derive_rng(const Rng& r, const std::vector<uint64_t>& s) {
  switch (s.size()) {
    case 0: return r.derive({});
    case 1: return r.derive({s[0]});
    case 2: return r.derive({s[0], s[1]});
    case 3: return r.derive({s[0], s[1], s[2]});
    case 4: return r.derive({s[0], s[1], s[2], s[3]});
    default: throw InputError("Rng.derive: at most 4 stream ids, got " + std::to_string(s.size()));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Recipes as Python data

/// A YAML scalar as Python: int, float, bool (true/false), None (null, ~, empty), else str.
py::object scalar_to_python(const ConfigNode& node) {
  if (node.is_null()) return py::none();
  const std::string s = node.scalar();
  if (s == "true" || s == "True") return py::bool_(true);
  if (s == "false" || s == "False") return py::bool_(false);
  if (!s.empty()) {
    char* end = nullptr;
    errno = 0;
    const long long i = std::strtoll(s.c_str(), &end, 10);
    if (end && *end == '\0' && errno == 0) return py::int_(i);
    if (end && *end == '\0') return py::module_::import("builtins").attr("int")(s);  // beyond 64 bits
    const double d = std::strtod(s.c_str(), &end);
    if (end && *end == '\0' && s.find_first_of("0123456789") != std::string::npos) return py::float_(d);
  }
  return py::str(s);
}

py::object node_to_python(const ConfigNode& node) {
  if (!node.present() || node.is_null()) return py::none();
  if (node.is_map()) {
    py::dict out;
    for (const auto& k : node.keys()) out[py::str(k)] = node_to_python(node.child(k));
    return std::move(out);
  }
  if (node.is_sequence()) {
    py::list out;
    for (const auto& e : node.elements()) out.append(node_to_python(e));
    return std::move(out);
  }
  return scalar_to_python(node);
}

py::dict plan_to_python(const Plan& plan) {
  py::dict events;
  for (Event e : all_events()) {
    const auto& entries = plan.at(e);
    if (entries.empty()) continue;
    py::list list;
    for (const PlanEntry& entry : entries) {
      list.append(py::make_tuple(entry.algorithm->name(), entry.reasons));
    }
    events[py::str(event_name(e))] = list;
  }
  py::dict out;
  out["events"] = events;
  out["warnings"] = plan.warnings();
  out["table"] = plan.table();
  out["json"] = plan.to_json();
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Signals during fit() and evaluate(). The GIL is released there, so Python's own handlers could only run once the
// call returned. For the length of a call made on the main thread (where signals are handled):
// - a signal whose Python handling is the default (SIGINT's KeyboardInterrupt, SIGTERM's termination) gets
//   Tessera's stop handler, as in tessera-run: the run stops at the next batch, training or evaluation, fit()
//   writes a checkpoint when it has a folder, and the call raises tessera.Interrupted (a KeyboardInterrupt) for
//   SIGINT or tessera.Terminated (a SystemExit, status 128 + 15) for SIGTERM. A second signal exits at once.
// - a signal with the program's own Python handler keeps it: a C handler chained in front notes the signal, and
//   at the next batch boundary the call takes the GIL to run Python's pending handlers; what they raise, the
//   call raises.
// - ignored signals, and calls on other threads, are left alone.

std::atomic<bool> g_python_signal_pending{false};
struct sigaction g_python_handlers[NSIG];  // Python's C-level handlers, chained behind on_python_signal

extern "C" void on_python_signal(int sig) {
  g_python_signal_pending.store(true);
  const auto handler = g_python_handlers[sig].sa_handler;
  if (handler != SIG_DFL && handler != SIG_IGN && handler != nullptr) handler(sig);  // Python notes it
}

/// Runs Python's pending signal handlers at batch boundaries while a guarded call chains them.
class PythonSignalsCallback : public Callback {
 public:
  std::string name() const override { return "python_signals"; }
  void run_event(Event event, State&, Logger&) override {
    if (event != Event::BatchEnd && event != Event::EpochEnd && event != Event::EvalBatchEnd) return;
    if (!armed.load(std::memory_order_relaxed) || !g_python_signal_pending.exchange(false)) return;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
  std::atomic<bool> armed{false};  ///< set by SignalGuard while it chains a Python handler
};

/// The signal handling above, for the length of one fit() or evaluate().
class SignalGuard {
 public:
  explicit SignalGuard(PythonSignalsCallback& callback) : callback_(callback) {
    py::object threading = py::module_::import("threading");
    if (!threading.attr("current_thread")().is(threading.attr("main_thread")())) return;
    py::object signal = py::module_::import("signal");
    std::vector<int> stop;
    for (int sig : {SIGINT, SIGTERM}) {
      py::object handler = signal.attr("getsignal")(sig);
      const py::object python_default = sig == SIGINT ? signal.attr("default_int_handler") : signal.attr("SIG_DFL");
      if (handler.is(python_default) || handler.equal(python_default)) {
        stop.push_back(sig);
      } else if (PyCallable_Check(handler.ptr())) {
        struct sigaction sa {};
        sa.sa_handler = on_python_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART | SA_ONSTACK;
        if (::sigaction(sig, &sa, &g_python_handlers[sig]) == 0) chained_.push_back(sig);
      }
    }
    stop_.emplace(stop);
    g_python_signal_pending = false;
    callback_.armed = !chained_.empty();
  }
  ~SignalGuard() {
    callback_.armed = false;
    for (int sig : chained_) ::sigaction(sig, &g_python_handlers[sig], nullptr);  // a late signal stays noted there
  }

 private:
  PythonSignalsCallback& callback_;
  std::optional<StopSignalScope> stop_;
  std::vector<int> chained_;
};

/// Raises tessera.Interrupted (SIGINT) or tessera.Terminated (SIGTERM) with `message`.
[[noreturn]] void raise_stop(int sig, const std::string& message, const std::string& checkpoint) {
  py::object exc = py::module_::import("tessera._signals").attr("stop_exception")(sig, message, checkpoint);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw py::error_already_set();
}

/// `call()` (fit or evaluate) without the GIL, under a SignalGuard; a stop becomes the Python exception, which
/// names the trainer's newest checkpoint when `checkpoints` (fit() writes one as it stops).
template <class Call>
auto call_with_signals(PythonSignalsCallback& callback, const Trainer& trainer, bool checkpoints, Call&& call) {
  SignalGuard guard(callback);
  using Result = decltype(call());
  std::optional<std::conditional_t<std::is_void_v<Result>, bool, Result>> result;
  try {
    py::gil_scoped_release release;
    if constexpr (std::is_void_v<Result>) {
      call();
      result = true;
    } else {
      result = call();
    }
  } catch (const Interrupted& e) {
    raise_stop(e.signal(), e.what(), checkpoints ? trainer.last_checkpoint() : std::string());
  }
  // A signal after the last batch boundary: the call finished, and the program still asked to stop.
  if (const int sig = stop_signal(); sig != 0) {
    raise_stop(sig, std::string("stopped by ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + " as the call ended (it had finished)",
               checkpoints ? trainer.last_checkpoint() : std::string());
  }
  if constexpr (!std::is_void_v<Result>) return std::move(*result);
}

// ---------------------------------------------------------------------------------------------------------
// The trainer as Python sees it: a Trainer built from a recipe, plus algorithm and callback objects, plus the
// user's own model and data (user_parts.h).

/// The parts tessera.Trainer passes as objects: {"module", "loss_fn", "loss_terms", "model_call", "output_key",
/// "train_dataloader", "train_metrics": [(metric name, None or object)], "eval_dataloaders": [(label, iterable[,
/// metrics as train_metrics])], "input_key", "target_key", "dataloader_resume"}.
/// `user[key]`, or `fallback` when absent.
std::string user_text(const py::dict& user, const char* key, const char* fallback) {
  return user.contains(key) ? user[key].cast<std::string>() : std::string(fallback);
}

/// precision, recall or f1 (or a weighted one) with its options ({"num_classes": 10, "per_class": True}), given under
/// its name in a dict of metrics.
std::shared_ptr<Metric> class_averaged_from(const py::dict& options, const std::string& name,
                                            const std::string& keyword) {
  const std::string where = keyword + "['" + name + "']";
  if (!make_class_averaged(name)) {
    throw InputError(where + ": options are given, but only precision, recall, f1 and their weighted_ averages take "
                     "any (num_classes, per_class); give " + name + " by name in a list");
  }
  return make_class_averaged(name, options_from_kwargs<ClassAveragedOptions>(options, where));
}

/// The metrics of a `train_metrics` or `eval_metrics` keyword (tessera/_metrics.py): (name, None) for Tessera's own,
/// (name, {options}) for one of Tessera's with options, (name, object) for a Python metric.
std::vector<std::shared_ptr<Metric>> metrics_from(py::handle entries, const std::string& keyword) {
  std::vector<std::shared_ptr<Metric>> out;
  for (const auto& m : entries.cast<py::list>()) {
    const py::tuple entry = m.cast<py::tuple>();
    const std::string name = entry[0].cast<std::string>();
    if (py::isinstance<py::dict>(entry[1])) {  // a Tessera metric with options: {"f1": {"num_classes": 10}}
      out.push_back(class_averaged_from(entry[1].cast<py::dict>(), name, keyword));
      continue;
    }
    if (!entry[1].is_none()) {
      out.push_back(make_user_metric(name, py::reinterpret_borrow<py::object>(entry[1])));
      continue;
    }
    try {
      out.push_back(make_metric(name));
    } catch (const InputError& e) {
      throw InputError(keyword + ": " + e.what());
    }
  }
  return out;
}

/// `context` is shared by the user's data and model: the model sees each batch in the form its source gave.
GivenParts given_parts(const py::dict& user, const std::shared_ptr<BatchContext>& context,
                       std::function<Batch()> example) {
  GivenParts given;
  if (user.empty()) return given;
  const auto text = [&](const char* key, const char* fallback) { return user_text(user, key, fallback); };
  const std::string input_key = text("input_key", Batch::kInput);
  const std::string target_key = text("target_key", Batch::kTarget);
  const std::string resume = text("dataloader_resume", "refuse");
  if (user.contains("train_dataloader")) {
    given.train_data = make_user_source(user["train_dataloader"], "train_dataloader", input_key, target_key, resume, context);
  }
  if (user.contains("train_metrics")) given.train_metrics = metrics_from(user["train_metrics"], "train_metrics");
  if (user.contains("eval_dataloaders")) {
    for (const auto& item : user["eval_dataloaders"].cast<py::list>()) {
      const py::tuple t = item.cast<py::tuple>();
      Evaluator ev;
      ev.label = t[0].cast<std::string>();
      ev.dataloader = make_user_source(py::reinterpret_borrow<py::object>(t[1]), "eval_dataloader[\"" + ev.label + "\"]",
                                       input_key, target_key, resume, context);
      if (t.size() > 2) {
        ev.metrics = metrics_from(t[2], "eval_metrics");
      } else {
        ev.metrics.push_back(std::make_shared<Accuracy>(1));
      }
      given.evaluators.push_back(std::move(ev));
    }
  }
  if (user.contains("module")) {
    UserModelOptions options;
    options.module = user["module"];
    options.loss_fn = user.contains("loss_fn") ? py::reinterpret_borrow<py::object>(user["loss_fn"]) : py::none();
    options.loss_terms =
        user.contains("loss_terms") ? py::reinterpret_borrow<py::object>(user["loss_terms"]) : py::none();
    options.call = text("model_call", "auto");
    options.output_key = text("output_key", "logits");
    given.model = make_user_model(options, context, std::move(example));
    given.model_name = py::str(py::type::handle_of(options.module).attr("__name__")).cast<std::string>();
  }
  return given;
}

/// The native trainer, shared with the State and Logger views its Python plugins are handed (OwnerScope, common.h):
/// a view a plugin keeps keeps it (not the plugins, so no cycle through them).
struct TrainerSlot {
  std::unique_ptr<Trainer> trainer;
};

class PyTrainer {
 public:
  PyTrainer(const Recipe& recipe, const std::vector<py::object>& algorithms, const std::vector<py::object>& callbacks,
            const py::dict& user)
      : recipe_(recipe) {
    const OwnerScope scope(slot_);  // the plugins run at init
    std::vector<std::shared_ptr<Algorithm>> algs;
    std::vector<std::shared_ptr<Callback>> cbs;
    for (const py::object& o : algorithms) {
      if (!py::isinstance<Algorithm>(o)) throw InputError("algorithms: expected tessera.Algorithm objects, got " + describe_value(o));
      algs.push_back(o.cast<std::shared_ptr<Algorithm>>());
      resolve_plugin(algs.back());
      check_plugin_state(algs.back());
      plugins_.push_back(o);
    }
    for (const py::object& o : callbacks) {
      if (!py::isinstance<Callback>(o)) throw InputError("callbacks: expected tessera.Callback objects, got " + describe_value(o));
      cbs.push_back(o.cast<std::shared_ptr<Callback>>());
      resolve_plugin(cbs.back());
      check_plugin_state(cbs.back());
      plugins_.push_back(o);
    }
    // The user's own model and data (tessera.Trainer(model=<torch.nn.Module>, train_dataloader=...)).
    auto train_source = std::make_shared<std::shared_ptr<data::BatchSource>>();  // set once the run is built
    input_key_ = user_text(user, "input_key", Batch::kInput);
    target_key_ = user_text(user, "target_key", Batch::kTarget);
    const GivenParts given =
        given_parts(user, context_, [train_source] { return (*train_source)->example_batch(); });
    std::vector<std::shared_ptr<optim::Scheduler>> tables;  // torch schedules followed as torch steps them
    if (user.contains("torch_tables")) {
      for (const auto& t : user["torch_tables"].cast<py::list>()) {
        const py::tuple entry = t.cast<py::tuple>();
        tables.push_back(make_torch_table_schedule(entry[0], entry[1].cast<std::string>(), entry[2].cast<bool>()));
      }
    }
    py::gil_scoped_release release;
    Run run = build_run(recipe, given);
    *train_source = run.components.train_dataloader;
    for (auto& t : tables) run.components.schedulers.push_back(std::move(t));
    for (auto& a : algs) run.components.algorithms.push_back(std::move(a));
    for (auto& c : cbs) run.components.callbacks.push_back(std::move(c));
    signals_ = std::make_shared<PythonSignalsCallback>();
    run.components.callbacks.push_back(signals_);
    model_name_ = run.model_name;
    metric_files_ = run.metric_files;
    checkpoint_ = resolve_against_run_dir(run.checkpoint, run.trainer.run_dir());
    // Into the slot before Init: when a later step throws, what a plugin kept at Init stays valid (the slot holds
    // the Trainer, closed, for as long as such views do).
    make_trainer(std::move(run), recipe.text(), slot_->trainer);
    trainer_ = slot_->trainer.get();
  }

  /// The plugins' close() runs now, while their Python objects are alive (plugins_). A view a plugin kept may keep
  /// the native trainer longer: closed, it calls no plugin again.
  ~PyTrainer() { close_plugins(); }

  /// The cyclic garbage collector's view of what this trainer holds (bind_recipe_trainer): its Python plugins, through
  /// which a cycle back to it is common (a callback keeping the Trainer, to call save_checkpoint).
  int traverse(visitproc visit, void* arg) const {
    for (const py::object& p : plugins_) Py_VISIT(p.ptr());
    return 0;
  }
  /// The collector breaks such a cycle: the plugins are closed (as by the destructor) and let go.
  void clear() {
    close_plugins();
    plugins_.clear();
  }

  void fit(const std::optional<Time>& until) {
    const OwnerScope scope(slot_);
    call_with_signals(*signals_, *trainer_, true, [&] {
      if (until) {
        trainer_->fit(*until);
      } else {
        trainer_->fit();
      }
    });
  }

  std::map<std::string, double> evaluate() {
    const OwnerScope scope(slot_);
    return call_with_signals(*signals_, *trainer_, false, [&] { return trainer_->evaluate(); });
  }

  std::vector<at::Tensor> predict(const py::object& data, int64_t subset_batches) {
    std::shared_ptr<data::BatchSource> source;
    if (py::isinstance<data::BatchSource>(data)) {
      source = data.cast<std::shared_ptr<data::BatchSource>>();
    } else if (is_mapping(data) || is_tensor(data) || data.is_none()) {
      throw InputError("predict: data is a " + type_name(data) +
                       "; expected a torch.utils.data.DataLoader or another iterable of batches with a len() (tensors, "
                       "(input, ...) tuples or dicts of tensors), or a tessera BatchSource");
    } else {
      source = make_user_source(data, "predict data", input_key_, target_key_, "refuse", context_);
    }
    const OwnerScope scope(slot_);
    return call_with_signals(*signals_, *trainer_, false,
                             [&] { return trainer_->predict(*source, subset_batches); });
  }

  void save_checkpoint(const std::string& path) {
    const OwnerScope scope(slot_);
    py::gil_scoped_release release;
    trainer_->save_checkpoint(path);
  }

  void export_weights(const std::string& path) {
    py::gil_scoped_release release;
    trainer_->export_weights(path);
  }

  void load_checkpoint(const std::string& path, bool weights_only, bool strict) {
    const OwnerScope scope(slot_);
    py::gil_scoped_release release;
    trainer_->load_checkpoint(path, weights_only, strict);
  }

  void close() {
    const OwnerScope scope(slot_);
    trainer_->engine().close();
  }

  Trainer& trainer() { return *trainer_; }
  const Recipe& recipe() const { return recipe_; }
  const std::string& model_name() const { return model_name_; }
  const std::vector<std::string>& metric_files() const { return metric_files_; }
  const CheckpointOptions& checkpoint() const { return checkpoint_; }

 private:
  void close_plugins() noexcept {
    if (trainer_ == nullptr) return;
    try {
      trainer_->engine().close();  // once: a closed engine calls no plugin again
    } catch (const std::exception& e) {  // not out of a destructor (as the Trainer's own destructor does)
      const std::string what = e.what();
      std::cerr << "tessera: warning: closing the callbacks failed: " << what.substr(0, what.find('\n')) << "\n";
    }
  }

  std::vector<py::object> plugins_;  // declared first: outlives the trainer, which calls into them
  Recipe recipe_;
  std::string model_name_;
  std::vector<std::string> metric_files_;
  CheckpointOptions checkpoint_;
  std::shared_ptr<PythonSignalsCallback> signals_;
  std::shared_ptr<BatchContext> context_ = std::make_shared<BatchContext>();  ///< the user's data and model share it
  std::string input_key_, target_key_;  ///< the user's batch keys (dicts), for predict's data too
  std::shared_ptr<TrainerSlot> slot_ = std::make_shared<TrainerSlot>();
  Trainer* trainer_ = nullptr;  ///< slot_'s, once built
};


/// The PyTrainer of a _Trainer object, or nullptr while it has none (being constructed, or its construction failed).
PyTrainer* native_of(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  const py::detail::value_and_holder v =
      inst->get_value_and_holder(py::detail::get_type_info(typeid(PyTrainer)), /*throw_if_missing=*/false);
  return v && v.holder_constructed() ? static_cast<PyTrainer*>(v.value_ptr()) : nullptr;
}

void bind_enums(py::module_& m) {
  py::enum_<Event> event(m, "Event", "The events a Trainer fires, in order (str(event) gives the snake_case name).");
  for (Event e : all_events()) event.value(keep_doc(upper(event_name(e))), e);
  event.def(py::init(&event_from_string), py::arg("name"), "An event from its snake_case name (\"after_dataloader\").")
      .def_property_readonly("snake_name", [](Event e) { return std::string(event_name(e)); })
      .def_property_readonly("is_after", &is_after_event, "after_* events (algorithm order reversed)")
      .def_property_readonly("is_eval", &is_eval_event);
  // str(event) is the snake_case name (replacing, not overloading, the enum's own __str__)
  event.attr("__str__") = py::cpp_function([](Event e) { return std::string(event_name(e)); }, py::is_method(event));
  py::implicitly_convertible<py::str, Event>();

  py::enum_<Resource> resource(m, "Resource", "What an algorithm reads or writes (spec accesses).");
  for (Resource r : all_resources()) resource.value(keep_doc(upper(resource_key(r))), r);
  resource.def(py::init(&resource_from_string), py::arg("name"), "A resource from its name (\"inputs\").");
  resource.attr("__str__") = py::cpp_function([](Resource r) { return resource_key(r); }, py::is_method(resource));
  py::implicitly_convertible<py::str, Resource>();

  py::enum_<TimeUnit> unit(m, "TimeUnit", "Units of training time.");
  unit
      .value("EPOCH", TimeUnit::Epoch)
      .value("BATCH", TimeUnit::Batch)
      .value("SAMPLE", TimeUnit::Sample)
      .value("TOKEN", TimeUnit::Token)
      .value("DURATION", TimeUnit::Duration)
      .def(py::init(&unit_from_string), py::arg("suffix"));
  unit.attr("__str__") = py::cpp_function([](TimeUnit u) { return std::string(unit_suffix(u)); }, py::is_method(unit));
  py::implicitly_convertible<py::str, TimeUnit>();

  py::enum_<Reduction>(m, "Reduction", "How a loss reduces over examples.")
      .value("MEAN", Reduction::Mean)
      .value("SUM", Reduction::Sum)
      .value("NONE", Reduction::None)
      .def(py::init(&parse_reduction), py::arg("name"));
  py::implicitly_convertible<py::str, Reduction>();
}

void bind_time(py::module_& m) {
  py::class_<Time>(m, "Time", "An amount of training time: Time.parse('10ep'), Time(500, 'ba'), Time.fraction(0.3).")
      .def(py::init<int64_t, TimeUnit>(), py::arg("value"), py::arg("unit"))
      .def(py::init([](const std::string& s) { return Time::parse(s); }), py::arg("text"))
      .def_static("parse", [](const std::string& s) { return Time::parse(s); }, py::arg("text"),
                  "Parses '10ep', '500ba', '2048sp', '3e4tok', '0.3dur' (InputError otherwise).")
      .def_static("fraction", &Time::fraction, py::arg("value"), "A fraction of max_duration.")
      .def_property_readonly("unit", &Time::unit)
      .def_property_readonly("value", &Time::value, "The integral count (0 for a duration).")
      .def("as_double", &Time::as_double)
      .def("__str__", &Time::str)
      .def("__repr__", [](const Time& t) { return "Time('" + t.str() + "')"; })
      .def(py::self == py::self)
      .def(py::self != py::self)
      .def(py::self < py::self)
      .def(py::self <= py::self)
      .def(py::self > py::self)
      .def(py::self >= py::self)
      .def(py::self + py::self)
      .def(py::self - py::self);
  py::implicitly_convertible<py::str, Time>();

  py::class_<Timestamp>(m, "Timestamp", "Where a run is: counters of epochs, batches, samples, tokens and wall-clock.")
      .def(py::init<>())
      .def_readonly("iteration", &Timestamp::iteration)
      .def_readonly("epoch", &Timestamp::epoch)
      .def_readonly("batch", &Timestamp::batch)
      .def_readonly("sample", &Timestamp::sample)
      .def_readonly("token", &Timestamp::token)
      .def_readonly("epoch_in_iteration", &Timestamp::epoch_in_iteration)
      .def_readonly("batch_in_epoch", &Timestamp::batch_in_epoch)
      .def_readonly("sample_in_epoch", &Timestamp::sample_in_epoch)
      .def_readonly("token_in_epoch", &Timestamp::token_in_epoch)
      .def_readonly("total_wct", &Timestamp::total_wct)
      .def_readonly("epoch_wct", &Timestamp::epoch_wct)
      .def_readonly("batch_wct", &Timestamp::batch_wct)
      .def("get", &Timestamp::get, py::arg("unit"), "The counter of a unit (ep, ba, sp, tok).")
      .def(py::self == py::self)
      .def("__repr__", [](const Timestamp& t) {
        return "Timestamp(epoch=" + std::to_string(t.epoch) + ", batch=" + std::to_string(t.batch) +
               ", sample=" + std::to_string(t.sample) + ", batch_in_epoch=" + std::to_string(t.batch_in_epoch) + ")";
      });

  py::class_<Rng>(m, "Rng", "Tessera's counter-based generator (SplitMix64): a pure function of (seed, stream ids).")
      .def(py::init([](uint64_t seed, const std::vector<uint64_t>& stream) { return make_rng(seed, stream); }),
           py::arg("seed") = 0, py::arg("stream") = std::vector<uint64_t>{},
           "Rng(seed, stream=[ids]) equals C++ Rng(seed, {ids...}) (up to 4 stream ids).")
      .def("next_u64", &Rng::next_u64)
      .def("uniform", &Rng::uniform, "Uniform in [0, 1).")
      .def("below", &Rng::below, py::arg("n"), "Uniform integer in [0, n).")
      .def("normal", &Rng::normal)
      .def("permutation", &Rng::permutation, py::arg("n"))
      .def("derive", &derive_rng, py::arg("stream"), "A generator on a derived stream (up to 4 ids); does not advance this one.")
      .def_property_readonly("key", &Rng::key)
      .def_property_readonly("counter", &Rng::counter)
      .def("set_state", &Rng::set_state, py::arg("key"), py::arg("counter"))
      .def(py::self == py::self);
}

void bind_recipe_trainer(py::module_& m) {
  py::class_<Recipe>(m, "Recipe", "A YAML recipe with command-line style overrides applied (docs/recipes.md).")
      .def_static("load", &Recipe::load, py::arg("path"), py::arg("overrides") = std::vector<std::string>{},
                  "Reads a recipe file; errors are tessera.InputError with file:line:col.")
      .def_static("parse", &Recipe::parse, py::arg("text"), py::arg("name") = "<string>",
                  py::arg("overrides") = std::vector<std::string>{})
      .def_property_readonly("path", &Recipe::path)
      .def_property_readonly("overrides", &Recipe::overrides)
      .def_property_readonly("text", &Recipe::text, "The recipe as run (overrides applied), as YAML.")
      .def("to_dict", [](const Recipe& r) { return node_to_python(r.root()); },
           "The recipe as Python data (scalars typed as YAML would: int, float, bool, None, str).")
      .def(
          "location",
          [](const Recipe& r, const std::string& key) {
            const ConfigNode node = r.root().child(key);
            return node.present() ? node.location() : std::string();
          },
          py::arg("key"),
          "Where the top-level `key` is set: \"recipes/x.yaml:12:9\", or \"<command line> override 2\"; \"\" "
          "when the recipe does not set it.")
      .def("__str__", &Recipe::text)
      .def("__repr__", [](const Recipe& r) { return "Recipe('" + r.path() + "')"; });

  m.def("_compile_plan", [](const std::vector<std::shared_ptr<Algorithm>>& algorithms) {
    std::vector<Algorithm*> ptrs;
    for (const auto& a : algorithms) {
      resolve_plugin(a);
      ptrs.push_back(a.get());
    }
    return plan_to_python(compile_plan(ptrs, nullptr));
  }, py::arg("algorithms"));

  m.def(
      "inspect_checkpoint",
      [](py::object path) {
        const std::string p = path_from_python(path, "inspect_checkpoint: path");
        CheckpointInfo info;
        {
          py::gil_scoped_release release;
          info = inspect_checkpoint(p);
        }
        return checkpoint_info_to_python(info);
      },
      py::arg("path"),
      "Reads and verifies a checkpoint file (its checksum) and returns what it says about itself: {'path', "
      "'epoch', 'batch', 'sample', 'timestamp' (a tessera.Timestamp), 'tessera_version', 'torch_version', 'seed', "
      "'world_size', 'recipe' (the recipe as run, '' when the run did not come from one)}. "
      "tessera.CheckpointError when the file is missing, truncated or corrupt.");
  m.def("registered", &registered_names, py::arg("kind"),
        "Recipe names registered for a kind: 'models', 'algorithms', 'datasets', 'optimizers', 'schedulers', ...");

  py::class_<PyTrainer>(m, "_Trainer", "The C++ trainer; use tessera.Trainer.",
                        py::custom_type_setup([](PyHeapTypeObject* heap_type) {
                          // Collectable cycles through the plugins (PyTrainer::traverse). A trainer being
                          // constructed or whose construction failed has no C++ object yet: nothing to visit.
                          PyTypeObject* type = &heap_type->ht_type;
                          type->tp_flags |= Py_TPFLAGS_HAVE_GC;
                          type->tp_traverse = [](PyObject* self, visitproc visit, void* arg) {
                            Py_VISIT(Py_TYPE(self));
                            auto* trainer = native_of(self);
                            return trainer == nullptr ? 0 : trainer->traverse(visit, arg);
                          };
                          type->tp_clear = [](PyObject* self) {
                            if (auto* trainer = native_of(self)) trainer->clear();
                            return 0;
                          };
                        }))
      .def(py::init<const Recipe&, const std::vector<py::object>&, const std::vector<py::object>&, const py::dict&>(),
           py::arg("recipe"), py::arg("algorithms") = std::vector<py::object>{},
           py::arg("callbacks") = std::vector<py::object>{}, py::arg("user") = py::dict())
      .def("fit", &PyTrainer::fit, py::arg("until") = py::none(),
           "Trains until max_duration or state.stop_training(); with `until` (a time of the run: '3ba', '1ep', "
           "'0.5dur') it returns there, the run paused, and the next fit() continues it as if it had not stopped "
           "(no second fit_start; the weights of the run in one go). The GIL is released; Python plugins take it "
           "for their own calls. Ctrl-C (SIGINT) and SIGTERM stop it at the next batch, after a checkpoint when it has a "
           "folder, and raise tessera.Interrupted / tessera.Terminated.")
      .def("evaluate", &PyTrainer::evaluate,
           "Runs every evaluator once; returns {'metrics/<label>/<name>': value}. Ctrl-C and SIGTERM stop it at the "
           "next batch.")
      .def("predict", &PyTrainer::predict, py::arg("data"), py::arg("subset_batches") = -1,
           "The model's outputs for each batch of `data` (a torch DataLoader or another iterable of batches with a "
           "len(), targets not needed; or a tessera BatchSource), in order, detached and on the CPU: a list of "
           "tensors. At most `subset_batches` batches when >= 0. The predict_* events fire; the forward runs in "
           "evaluation mode without gradients and in eval_precision. Not while fit() runs. Ctrl-C and SIGTERM stop "
           "it at the next batch.")
      .def_property_readonly("state", [](PyTrainer& t) -> State& { return t.trainer().state(); },
                             py::return_value_policy::reference_internal)
      .def_property_readonly("_plan", [](PyTrainer& t) { return plan_to_python(t.trainer().plan()); })
      .def_property_readonly("trace", [](PyTrainer& t) {
        py::dict out;
        for (const auto& [key, r] : t.trainer().trace()) {
          out[py::str(key)] = py::dict(py::arg("count") = r.count, py::arg("first_batch") = r.first_batch,
                                       py::arg("last_batch") = r.last_batch, py::arg("seconds") = r.seconds);
        }
        return out;
      }, "What ran: {'algorithm/event': {'count', 'first_batch', 'last_batch', 'seconds'}} (seconds: host time "
         "in apply()).")
      .def_property_readonly("algorithms", [](PyTrainer& t) { return t.trainer().engine().algorithms(); })
      .def_property_readonly("callbacks", [](PyTrainer& t) { return t.trainer().engine().callbacks(); })
      .def_property_readonly("model", [](PyTrainer& t) { return t.trainer().state().model; })
      .def_property_readonly("options", [](PyTrainer& t) { return options_to_dict(t.trainer().options()); })
      .def_property_readonly("checkpoint", [](PyTrainer& t) { return options_to_dict(t.checkpoint()); },
                             "The checkpoint settings (the recipe's checkpoint: section, as given to the trainer).")
      .def("save_checkpoint",
           [](PyTrainer& t, py::object path) { t.save_checkpoint(path_from_python(path, "save_checkpoint: path")); },
           py::arg("path"),
           "Writes the whole run state (weights, optimizer, time, generators, algorithm and callback state, data "
           "position, metrics) to `path` atomically. Call it between batches: before or after fit(), or from a "
           "callback at batch_checkpoint/epoch_checkpoint. With checkpoint.folder set, fit() also saves on its own.")
      .def("export_weights",
           [](PyTrainer& t, py::object path) { t.export_weights(path_from_python(path, "export_weights: path")); },
           py::arg("path"),
           "Writes the model's parameters and buffers, by name, to `path` as a safetensors file (Hugging Face's "
           "format: safetensors.torch.load_file reads it; metadata format 'pt', producer, epoch, batch), atomically. "
           "The weights as they are now: after a completed run with ema or swa, the averages.")
      .def("load_checkpoint",
           [](PyTrainer& t, py::object path, bool weights_only, bool strict) {
             t.load_checkpoint(path_from_python(path, "load_checkpoint: path"), weights_only, strict);
           },
           py::arg("path"), py::arg("weights_only") = false, py::arg("strict") = true,
           "Loads `path` (firing before_load and after_load): everything, so that fit() continues the saved run "
           "exactly, or only the model weights with weights_only=True. strict=True refuses parameter names or "
           "shapes that differ from the model's. A .safetensors file holds weights alone and loads with "
           "weights_only=True (floating-point weights converted to the model's dtype). tessera.CheckpointError when "
           "the file is missing, truncated or corrupt; tessera.InputError when it does not fit this run.")
      .def_property_readonly("loaded_checkpoint", [](PyTrainer& t) { return t.trainer().loaded_checkpoint(); },
                             "The checkpoint this trainer resumed from or loaded ('' = none).")
      .def_property_readonly("last_checkpoint", [](PyTrainer& t) { return t.trainer().last_checkpoint(); },
                             "The last checkpoint fit() wrote into checkpoint.folder ('' = none).")
      .def_property_readonly("traces", [](PyTrainer& t) { return t.trainer().traces(); },
                             "The trace files the profiler wrote so far (the `profiler` option), in order: Chrome "
                             "trace-event JSON, for Perfetto's UI or chrome://tracing.")
      .def_property_readonly(
          "profiled_windows",
          [](PyTrainer& t) {
            const py::object loads = py::module_::import("json").attr("loads");
            py::list out;
            for (const tessera::ProfiledWindow& w : t.trainer().profiled_windows()) out.append(loads(w.to_json()));
            return out;
          },
          "Where the batches of each profiled window went, as run.json's profiler_windows: its file, batches, "
          "milliseconds per batch (batch_ms, phases_ms, algorithms_ms) and evaluation and checkpoint time in all.")
      .def_property_readonly("skipped_batches", [](PyTrainer& t) { return t.trainer().skipped_batches(); },
                             "Training batches whose update was dropped because their loss was not finite "
                             "(nonfinite_loss: skip).")
      .def_property_readonly("skipped_steps", [](PyTrainer& t) { return t.trainer().skipped_steps(); },
                             "Optimizer steps the loss scaler skipped because a gradient was inf/NaN (the batch "
                             "still counts in time).")
      .def_property_readonly("loss_scale",
                             [](PyTrainer& t) -> std::optional<double> {
                               const GradScaler* scaler = t.trainer().grad_scaler();
                               if (scaler == nullptr) return std::nullopt;
                               return scaler->scale_value();
                             },
                             "The loss scaler's current scale (precision amp_fp16 or loss_scaling: dynamic); None "
                             "without a scaler.")
      .def_property_readonly("recipe", &PyTrainer::recipe)
      .def_property_readonly("model_name", &PyTrainer::model_name)
      .def_property_readonly("metric_files", &PyTrainer::metric_files)
      .def("weights_fingerprint", [](PyTrainer& t) { return weights_fingerprint(*t.trainer().state().model); },
           "FNV-1a 64 over the model's parameters then buffers (name, 0 byte, exact bytes), as 16 hex digits: "
           "two runs agree exactly when their final weights are bitwise equal (up to hash collisions).")
      .def("close", &PyTrainer::close, "Closes the callbacks (files are flushed).");
}

}  // namespace
}  // namespace tessera::python

PYBIND11_MODULE(_C, m) {
  using namespace tessera::python;
  m.doc() = "Tessera's C++ core (import tessera instead).";
  m.attr("__version__") = TESSERA_VERSION_STRING;
  m.attr("_torch_version") = TORCH_VERSION;
  // tessera/_stubgen.py writes the TrainerOptions TypedDict (_options.pyi) from it.
  m.attr("_trainer_options_doc") = options_doc<tessera::TrainerOptions>();
  m.attr("_profiler_options_doc") = options_doc<tessera::ProfilerOptions>();  // the `profiler` option's dict

  // tessera.Error(RuntimeError), tessera.InputError(tessera.Error, ValueError) and
  // tessera.CheckpointError(tessera.InputError), as in C++; the most derived class is caught first.
  static py::exception<tessera::Error> error(m, "Error", PyExc_RuntimeError);
  static py::exception<tessera::InputError> input_error(m, "InputError", py::make_tuple(error, py::handle(PyExc_ValueError)));
  static py::exception<tessera::CheckpointError> checkpoint_error(m, "CheckpointError", input_error);
  error.doc() = "A failure while running (tessera::Error).";
  input_error.doc() = "Bad input: a recipe, an option value, an impossible combination (tessera::InputError).";
  checkpoint_error.doc() =
      "A checkpoint file that is missing, truncated, corrupt or not a checkpoint; the message names the file and "
      "the problem (tessera::CheckpointError).";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const tessera::CheckpointError& e) {
      PyErr_SetString(checkpoint_error.ptr(), e.what());
    } catch (const tessera::InputError& e) {
      PyErr_SetString(input_error.ptr(), e.what());
    } catch (const tessera::Error& e) {
      PyErr_SetString(error.ptr(), e.what());
    }
  });

  bind_enums(m);
  bind_time(m);
  bind_state(m);
  bind_plugins(m);
  bind_recipe_trainer(m);
  py::module_ data = m.def_submodule("data", "Datasets as tensors.");
  py::module_ algorithms = m.def_submodule("algorithms", "The algorithms, with their options as keyword arguments.");
  py::module_ functional = m.def_submodule("functional", "Functional forms on plain tensors.");
  bind_algorithms(algorithms, functional, data);
  bind_mds(data);
  bind_tokenizer(data);
  bind_user_parts(m);
  use_python_type_names(m);
}
