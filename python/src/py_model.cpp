// The user's own model as a tessera::Model: a Python torch.nn.Module (its forward runs with the GIL taken for
// that call only) or a TorchScript module (its forward runs in C++, no Python at all).
//
// The C++ side sees the module's parameters and buffers through a mirror: a tree of empty torch::nn::Modules,
// one per Python submodule that holds tensors, registering the *same* tensors (no copies) under the same
// names. So the optimizer, checkpoints, fingerprints, layer freezing and the device move work on them as on a
// C++ model, and every change is seen by the Python module. Surgery (BlurPool) replaces Python submodules with
// Python modules calling Tessera's ops (tessera/_surgery.py); the mirror is then rebuilt and the optimizer
// synced.
#include <array>
#include <map>
#include <sstream>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/csrc/jit/serialization/import.h>

#include <tessera/algorithm.h>
#include <tessera/algorithms/blurpool.h>
#include <tessera/data/dataloader.h>
#include <tessera/error.h>
#include <tessera/surgery.h>

#include "user_parts.h"

namespace tessera::python {
namespace {

/// One Python submodule's tensors in the mirror.
class MirrorModule : public torch::nn::Module {
 public:
  MirrorModule() : torch::nn::Module("Mirror") {}
};

py::module_ adapters() { return py::module_::import("tessera._adapters"); }

/// Checks the loss a user's loss_fn (or model) returned: a tensor with one element for the mean, [N] per example.
at::Tensor checked_loss(py::handle value, Reduction reduction, int64_t batch_size, const std::string& who) {
  if (!is_tensor(value)) {
    throw InputError(who + " returned a " + type_name(value) + "; expected a tensor (the loss)");
  }
  at::Tensor loss = value.cast<at::Tensor>();
  if (reduction == Reduction::None) {
    if (loss.dim() != 1 || loss.size(0) != batch_size) {
      throw InputError(who + " with reduction=\"none\" returned shape " + c10::str(loss.sizes()) +
                       "; expected one loss per example, shape [" + std::to_string(batch_size) + "]");
    }
    return loss;
  }
  if (loss.numel() != 1) {
    throw InputError(who + " returned shape " + c10::str(loss.sizes()) + "; expected a scalar loss (one element)");
  }
  return loss.dim() == 0 ? loss : loss.reshape({});
}

const char* reduction_name(Reduction r) { return r == Reduction::Mean ? "mean" : r == Reduction::Sum ? "sum" : "none"; }

/// Everything a user model shares, Python module or TorchScript: the mirror, the loss, the probe.
class UserModel : public Model {
 public:
  UserModel(const UserModelOptions& options, std::shared_ptr<BatchContext> context, std::function<Batch()> example)
      : module_(options.module), loss_fn_(options.loss_fn.is_none() ? py::object() : options.loss_fn),
        loss_terms_(options.loss_terms.is_none() ? py::object() : options.loss_terms), call_(options.call),
        output_key_(options.output_key),
        context_(std::move(context)), example_(std::move(example)) {
    if (!options.loss_fn.is_none()) {
      if (!PyCallable_Check(options.loss_fn.ptr())) {
        throw InputError("loss_fn: expected a callable (outputs, batch) -> loss, got " + describe_value(options.loss_fn));
      }
      loss_takes_reduction_ = adapters().attr("accepts_keyword")(options.loss_fn, "reduction").cast<bool>();
    }
    if (!options.loss_terms.is_none() && !PyCallable_Check(options.loss_terms.ptr())) {
      throw InputError("loss_terms: expected a callable batch -> int tensor [N] (the terms the loss averages over, "
                       "per example), got " + describe_value(options.loss_terms));
    }
  }

  /// With loss_terms=: what it counts in the batch; with a loss_fn alone: none (each example one term); otherwise
  /// the default cross-entropy's positions with a target.
  at::Tensor loss_terms(const Batch& batch) const override {
    if (!loss_terms_) return loss_fn_ ? at::Tensor() : Model::loss_terms(batch);
    py::gil_scoped_acquire gil;
    const py::object value = loss_terms_.get()(batch_to_python(batch, context_->current));
    if (!is_tensor(value)) {
      throw InputError("loss_terms returned a " + type_name(value) + "; expected integer counts per example, shape [" +
                       std::to_string(batch.size()) + "]");
    }
    return value.cast<at::Tensor>().to(batch.parts().front().second.device());  // the trainer checks the rest
  }

  at::Tensor loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction) override {
    const bool ours = outputs.defined() && outputs.unsafeGetTensorImpl() == last_primary_;
    if (loss_fn_) {
      py::gil_scoped_acquire gil;
      if (reduction != Reduction::Mean && !loss_takes_reduction_) {
        throw InputError("loss_fn: a per-example loss (reduction=\"" + std::string(reduction_name(reduction)) +
                         "\") is needed here, and loss_fn takes no `reduction` keyword; give loss_fn a `reduction` "
                         "parameter (\"mean\", \"sum\" or \"none\")");
      }
      const py::object out = ours && last_raw_ ? last_raw_.get() : py::cast(outputs);
      const py::object py_batch = batch_to_python(batch, context_->current);
      const py::object value = reduction == Reduction::Mean
                                   ? loss_fn_.get()(out, py_batch)
                                   : loss_fn_.get()(out, py_batch, py::arg("reduction") = reduction_name(reduction));
      return checked_loss(value, reduction, batch.size(), "loss_fn");
    }
    if (ours && last_loss_.defined()) {
      if (reduction != Reduction::Mean) {
        throw InputError("the model computes its own loss (its output has \"loss\"), which gives no per-example "
                         "losses; pass loss_fn=(outputs, batch, reduction=\"mean\") -> loss to the Trainer");
      }
      return last_loss_;
    }
    if (!batch.has(Batch::kTarget)) {
      throw InputError("the batch has no target (its parts: " + part_names(batch) +
                       "), so the default cross-entropy loss cannot be computed; pass loss_fn=(outputs, batch) -> "
                       "loss, or target_key= naming the labels in dict batches");
    }
    return cross_entropy(outputs, batch.target(), reduction);
  }

  bool supports_per_example_loss() const override {
    if (loss_fn_) return loss_takes_reduction_;
    return !computes_loss_in_forward();
  }
  bool loss_is_cross_entropy() const override { return !loss_fn_ && !computes_loss_in_forward(); }
  bool loss_reads_targets() const override { return loss_fn_ || !computes_loss_in_forward(); }

  /// Whether the model's outputs carry their own loss (a dict with "loss"): known from the first forward, or
  /// found by one forward of an example batch in eval mode without gradients when an algorithm asks before it.
  bool computes_loss_in_forward() const {
    if (!probed_) {
      auto* self = const_cast<UserModel*>(this);
      const bool was_training = self->is_training();
      self->train(false);
      {
        c10::NoGradGuard no_grad;
        (void)self->forward(example_());
      }
      self->train(was_training);
      self->probed_ = true;
      self->probe_has_loss_ = last_loss_.defined();
    }
    return probe_has_loss_;
  }

 protected:
  /// Rebuilds the mirror from the module's tensors: [(module path, [(name, param)], [(name, buffer)])].
  void mirror(const py::list& modules) {
    for (const auto& name : top_children_) unregister_module(name);
    top_children_.clear();
    std::map<std::string, std::shared_ptr<torch::nn::Module>> holders;
    for (const auto& entry : modules) {
      const py::tuple t = entry.cast<py::tuple>();
      const std::string path = t[0].cast<std::string>();
      torch::nn::Module* holder = this;
      if (!path.empty()) {
        const auto dot = path.rfind('.');
        const std::string parent = dot == std::string::npos ? "" : path.substr(0, dot);
        const std::string leaf = dot == std::string::npos ? path : path.substr(dot + 1);
        torch::nn::Module* up = parent.empty() ? static_cast<torch::nn::Module*>(this) : holders.at(parent).get();
        auto made = std::make_shared<MirrorModule>();
        up->register_module(leaf, made);
        if (parent.empty()) top_children_.push_back(leaf);
        holders[path] = made;
        holder = made.get();
      }
      for (const auto& p : t[1].cast<py::list>()) {
        const py::tuple item = p.cast<py::tuple>();
        const std::string name = item[0].cast<std::string>();
        const at::Tensor tensor = item[1].cast<at::Tensor>();
        if (holder == this && named_parameters(false).contains(name)) {
          if (named_parameters(false)[name].unsafeGetTensorImpl() != tensor.unsafeGetTensorImpl()) {
            throw InputError("model: the top-level parameter \"" + name + "\" was replaced by another tensor; "
                             "keep top-level parameters, or wrap them in a submodule");
          }
          continue;
        }
        holder->register_parameter(name, tensor, tensor.requires_grad());
      }
      for (const auto& b : t[2].cast<py::list>()) {
        const py::tuple item = b.cast<py::tuple>();
        const std::string name = item[0].cast<std::string>();
        if (holder == this && named_buffers(false).contains(name)) continue;
        holder->register_buffer(name, item[1].cast<at::Tensor>());
      }
    }
  }

  /// Remembers what the module returned for `loss` and finds the outputs in it.
  at::Tensor take_outputs(const py::object& raw) {
    last_loss_ = at::Tensor();
    at::Tensor primary;
    if (is_tensor(raw)) {
      primary = raw.cast<at::Tensor>();
    } else if (is_mapping(raw)) {
      const py::dict d(raw);
      if (d.contains("loss") && is_tensor(d["loss"])) last_loss_ = d["loss"].cast<at::Tensor>();
      if (!d.contains(output_key_.c_str()) || !is_tensor(d[output_key_.c_str()])) {
        std::string keys;
        for (const auto& item : d) keys += (keys.empty() ? "" : ", ") + py::str(item.first).cast<std::string>();
        throw InputError("model: its output is a dict with keys " + keys + "; expected a tensor under \"" +
                         output_key_ + "\" (the outputs that metrics read; output_key= names another key)");
      }
      primary = d[output_key_.c_str()].cast<at::Tensor>();
    } else if (py::isinstance<py::tuple>(raw) || py::isinstance<py::list>(raw)) {
      const py::sequence s = raw;
      if (s.size() == 0 || !is_tensor(s[0])) {
        throw InputError("model: its output is a " + type_name(raw) +
                         " whose first element is not a tensor; expected the outputs (logits) first");
      }
      primary = s[0].cast<at::Tensor>();
    } else {
      throw InputError("model: its output is a " + type_name(raw) +
                       "; expected a tensor, a tuple with the outputs first, or a dict with \"" + output_key_ + "\"");
    }
    last_raw_.reset(raw);
    last_primary_ = primary.unsafeGetTensorImpl();
    if (!probed_) {  // any forward answers the probe's question: no probing forward after one
      probed_ = true;
      probe_has_loss_ = last_loss_.defined();
    }
    return primary;
  }

  static std::string part_names(const Batch& batch) {
    std::string out;
    for (const auto& [key, t] : batch.parts()) out += (out.empty() ? "" : ", ") + key;
    return out;
  }

  GilObject module_;
  GilObject loss_fn_;
  GilObject loss_terms_;
  std::string call_;
  std::string output_key_;
  std::shared_ptr<BatchContext> context_;
  std::function<Batch()> example_;

 private:
  bool loss_takes_reduction_ = false;
  bool probed_ = false;
  bool probe_has_loss_ = false;
  GilObject last_raw_;
  const c10::TensorImpl* last_primary_ = nullptr;
  at::Tensor last_loss_;
  std::vector<std::string> top_children_;
};

/// A Python torch.nn.Module.
class PythonModel : public UserModel {
 public:
  PythonModel(const UserModelOptions& options, std::shared_ptr<BatchContext> context, std::function<Batch()> example)
      : UserModel(options, std::move(context), std::move(example)) {
    mirror(adapters().attr("module_tensors")(module_.get()));
    Module::train(module_.get().attr("training").cast<bool>());
  }

  at::Tensor forward(const Batch& batch) override {
    py::gil_scoped_acquire gil;
    const py::object py_batch = batch_to_python(batch, context_->current);
    const bool mapping = context_->current.kind == BatchLayout::Kind::Mapping;
    const std::string call = call_ == "auto" ? (mapping ? "kwargs" : "input") : call_;
    py::object out;
    if (call == "input") {
      out = module_.get()(py::cast(batch.input()));
    } else if (call == "batch") {
      out = module_.get()(py_batch);
    } else {  // kwargs
      if (!mapping) throw InputError("model_call=\"kwargs\" needs dict batches; the batches are not dicts");
      out = module_.get()(**py::dict(py_batch));
    }
    if (!checked_[is_training() ? 1 : 0]) {
      checked_[is_training() ? 1 : 0] = true;
      check_tensors_kept();
    }
    return take_outputs(out);
  }

  void train(bool on) override {
    Module::train(on);
    py::gil_scoped_acquire gil;
    module_.get().attr("train")(on);
  }

  /// Forward hooks on every submodule of the Python module, removed when the handle goes.
  std::shared_ptr<void> observe_layers(LayerObserver observer) override {
    struct Hooks {
      GilObject handles;
      ~Hooks() {
        py::gil_scoped_acquire gil;
        adapters().attr("remove_hooks")(handles.get());
      }
    };
    py::gil_scoped_acquire gil;
    const py::cpp_function report([observer = std::move(observer)](const std::string& layer, const std::string& port,
                                                                   const at::Tensor& value) { observer(layer, port, value); });
    py::object handles = adapters().attr("observe_layers")(module_.get(), report);
    if (py::len(handles) == 0) return nullptr;  // a module without submodules: only the model's input and output
    auto hooks = std::make_shared<Hooks>();
    hooks->handles.reset(std::move(handles));
    return hooks;
  }

  /// After the first forward in each mode (GIL held): the module still holds the tensors the trainer trains,
  /// saves and averages. A forward that assigns a new tensor to a buffer (`self.steps = self.steps + 1`)
  /// would otherwise leave the checkpoints, the fingerprint and EMA with the old one, silently.
  void check_tensors_kept() {
    std::map<std::string, const c10::TensorImpl*> mine;
    for (const auto& item : named_parameters(true)) mine[item.key()] = item.value().unsafeGetTensorImpl();
    for (const auto& item : named_buffers(true)) mine[item.key()] = item.value().unsafeGetTensorImpl();
    for (const auto& entry : adapters().attr("module_tensors")(module_.get()).cast<py::list>()) {
      const py::tuple t = entry.cast<py::tuple>();
      const std::string path = t[0].cast<std::string>();
      for (const int kind : {1, 2}) {
        for (const auto& p : t[kind].cast<py::list>()) {
          const py::tuple item = p.cast<py::tuple>();
          const std::string name = (path.empty() ? "" : path + ".") + item[0].cast<std::string>();
          const auto it = mine.find(name);
          if (it != mine.end() && it->second == item[1].cast<at::Tensor>().unsafeGetTensorImpl()) continue;
          throw InputError(
              "model: the forward " + std::string(it == mine.end() ? "added" : "replaced") + " the " +
              (kind == 1 ? "parameter" : "buffer") + " \"" + name +
              "\" (a new tensor assigned to it); "
              "the trainer trains, saves and averages the tensors the module held when it was given, so "
              "it would go on with the old one: update it in place (self.x += 1, self.x.copy_(...))");
        }
      }
    }
  }

  std::optional<std::map<std::string, int64_t>> external_surgery(const Algorithm& algorithm, optim::Optimizer* optimizer,
                                                                 bool dry_run) override {
    py::gil_scoped_acquire gil;
    const py::dict counts = py::module_::import("tessera._surgery").attr("apply")(module_.get(), py::cast(&algorithm), dry_run);
    std::map<std::string, int64_t> out;
    for (const auto& item : counts) out[item.first.cast<std::string>()] = item.second.cast<int64_t>();
    if (!dry_run) {
      const std::vector<at::Tensor> before = parameters();
      mirror(adapters().attr("module_tensors")(module_.get()));
      Module::train(module_.get().attr("training").cast<bool>());
      if (optimizer != nullptr) sync_optimizer(*optimizer, before, named_parameters());
      checked_ = {false, false};  // its forward is asked again
    }
    return out;
  }

 private:
  std::array<bool, 2> checked_{false,
                               false};  ///< check_tensors_kept done after a forward in eval, in train mode
};

/// A TorchScript module, run from C++: saved to bytes on the Python side, loaded here, and pointed at the
/// Python module's own tensors.
class ScriptModel : public UserModel {
 public:
  ScriptModel(const UserModelOptions& options, std::shared_ptr<BatchContext> context, std::function<Batch()> example)
      : UserModel(options, std::move(context), std::move(example)) {
    if (call_ != "auto" && call_ != "input") {
      throw InputError("model_call=\"" + call_ + "\": a TorchScript module is called with the input tensor only "
                       "(model_call=\"input\")");
    }
    const std::string bytes = adapters().attr("script_bytes")(module_.get()).cast<std::string>();
    std::istringstream in(bytes);
    script_ = torch::jit::load(in);
    const py::list modules = adapters().attr("module_tensors")(module_.get());
    for (const auto& entry : modules) {  // the loaded module uses the Python module's tensors
      const py::tuple t = entry.cast<py::tuple>();
      torch::jit::Module m = script_;
      const std::string path = t[0].cast<std::string>();
      std::stringstream parts(path);
      for (std::string part; std::getline(parts, part, '.');) m = torch::jit::Module(m.attr(part).toObject());
      for (int k = 1; k <= 2; ++k) {
        for (const auto& item : t[k].cast<py::list>()) {
          const py::tuple named = item.cast<py::tuple>();
          m.setattr(named[0].cast<std::string>(), named[1].cast<at::Tensor>());
        }
      }
    }
    mirror(modules);
    const bool training = module_.get().attr("training").cast<bool>();
    Module::train(training);
    script_.train(training);
  }

  at::Tensor forward(const Batch& batch) override {
    const c10::IValue out = script_.forward({batch.input()});
    if (out.isTensor()) return out.toTensor();
    py::gil_scoped_acquire gil;  // a tuple or dict result: read it as for Python modules
    return take_outputs(torch::jit::toPyObject(out));
  }

  void train(bool on) override {
    Module::train(on);
    script_.train(on);
    py::gil_scoped_acquire gil;
    module_.get().attr("train")(on);
  }

  /// TorchScript modules run in C++ and have no hooks there.
  std::shared_ptr<void> observe_layers(LayerObserver) override { return nullptr; }

  std::optional<std::map<std::string, int64_t>> external_surgery(const Algorithm& algorithm, optim::Optimizer*,
                                                                 bool) override {
    throw InputError(algorithm.name() + ": the model is a TorchScript module, whose layers cannot be replaced; give "
                     "the Python module (before torch.jit.script/trace) to use surgery algorithms");
  }

 private:
  torch::jit::Module script_;
};

}  // namespace

std::shared_ptr<Model> make_user_model(const UserModelOptions& options, std::shared_ptr<BatchContext> context,
                                       std::function<Batch()> example) {
  const py::module_ torch = py::module_::import("torch");
  if (options.call != "auto" && options.call != "input" && options.call != "batch" && options.call != "kwargs") {
    throw InputError("model_call: \"" + options.call + "\" is not allowed; expected auto, input, batch or kwargs");
  }
  if (py::isinstance(options.module, torch.attr("jit").attr("ScriptModule"))) {
    return std::make_shared<ScriptModel>(options, std::move(context), std::move(example));
  }
  if (py::isinstance(options.module, torch.attr("nn").attr("Module"))) {
    return std::make_shared<PythonModel>(options, std::move(context), std::move(example));
  }
  throw InputError("model: expected a torch.nn.Module, a TorchScript module or a recipe entry ({\"resnet\": {...}}), got " +
                   describe_value(options.module));
}

}  // namespace tessera::python

namespace tessera::python {
namespace {

std::array<int64_t, 2> pair_arg(const std::vector<int64_t>& v, const char* what) {
  if (v.size() != 2) throw InputError(std::string(what) + ": expected 2 values, got " + std::to_string(v.size()));
  return {v[0], v[1]};
}

}  // namespace

void bind_user_parts(py::module_& m) {
  namespace alg = tessera::algorithms;
  m.def(
      "_blur2d", [](const at::Tensor& x, const std::vector<int64_t>& stride) { return alg::blur2d(x, pair_arg(stride, "stride")); },
      py::arg("x"), py::arg("stride"), "BlurConv2d's blur (tessera._surgery).");
  m.def(
      "_blur_maxpool2d",
      [](const at::Tensor& x, const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
         const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation, bool ceil_mode) {
        const auto k = pair_arg(kernel, "kernel_size");
        const auto p = pair_arg(padding, "padding");
        const auto d = pair_arg(dilation, "dilation");
        torch::nn::MaxPool2dOptions pool({k[0], k[1]});
        pool.padding({p[0], p[1]}).dilation({d[0], d[1]}).ceil_mode(ceil_mode);
        return alg::blur_maxpool2d(x, pool, pair_arg(stride, "stride"));
      },
      py::arg("x"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
      py::arg("ceil_mode"), "BlurMaxPool2d's forward (tessera._surgery).");
  py::module_ d = m.attr("data");
  d.def(
      "shuffled_order",
      [](uint64_t seed, int64_t epoch, int64_t n) {
        const std::vector<int64_t> order = data::shuffled_order(seed, epoch, n);
        return at::tensor(order, at::kLong);
      },
      py::arg("seed"), py::arg("epoch"), py::arg("n"),
      "The order of the examples of epoch `epoch` (int64 tensor, a permutation of 0..n-1): a pure function of "
      "(seed, epoch), the one Tessera's DataLoader and tessera.data.ResumableSampler use.");
}

}  // namespace tessera::python
