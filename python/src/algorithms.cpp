// tessera.algorithms (every algorithm with its Options as keyword arguments) and tessera.functional (the
// functional forms on plain tensors). Thin: the keyword arguments come from each Options' `visit`, the
// validation is the C++ one.
#include "common.h"

#include <tessera/algorithm.h>
#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/label_smoothing.h>
#include <tessera/algorithms/layer_freezing.h>
#include <tessera/algorithms/progressive_resizing.h>
#include <tessera/algorithms/selective_backprop.h>
#include <tessera/models/model.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
#include <tessera/rng.h>

namespace tessera::python {
namespace {

namespace alg = tessera::algorithms;

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

Reduction reduction_from(const std::string& s) {
  if (s == "mean") return Reduction::Mean;
  if (s == "sum") return Reduction::Sum;
  if (s == "none") return Reduction::None;
  throw InputError("reduction: \"" + s + "\" is not allowed; expected one of: mean, sum, none");
}

/// An Rng from a tessera.Rng or an integer seed.
Rng rng_from(py::handle h, const char* where) {
  if (py::isinstance<Rng>(h)) return h.cast<Rng>();
  if (PyLong_Check(h.ptr()) && !PyBool_Check(h.ptr())) return Rng(h.cast<uint64_t>());
  throw InputError(std::string(where) + ": rng: expected a tessera.Rng or an integer seed, got " + describe_value(h));
}

}  // namespace

void bind_algorithms(py::module_& m, py::module_& f) {
  // ---- the five algorithms --------------------------------------------------------------------------------
  bind_algorithm<alg::BlurPool, alg::BlurPoolOptions>(
      m, "BlurPool", "blurpool",
      "BlurPool: anti-aliased downsampling by model surgery at INIT (Zhang 2019). Strided convolutions become "
      "blur+conv and max-pools become max(stride 1)+blur, with the fixed filter (1/16)[1 2 1]^T[1 2 1].")
      .def_property_readonly("counts", [](const alg::BlurPool& a) {
        return py::dict(py::arg("convs") = a.counts().convs, py::arg("maxpools") = a.counts().maxpools);
      }, "What the last application replaced: {'convs': n, 'maxpools': m}.");

  bind_algorithm<alg::LabelSmoothing, alg::LabelSmoothingOptions>(
      m, "LabelSmoothing", "label_smoothing",
      "Label smoothing (Szegedy et al. 2016): trains against (1 - alpha) onehot(y) + alpha / C, by default with "
      "the fused loss that never builds the dense targets.");

  bind_algorithm<alg::LayerFreezing, alg::LayerFreezingOptions>(
      m, "LayerFreezing", "layer_freezing",
      "Layer freezing: progressively stops training the early layers at each EPOCH_END (their parameters leave "
      "the optimizer with their state). Resumes exactly.")
      .def_property_readonly("frozen_depth", &alg::LayerFreezing::frozen_depth, "Number of layers frozen so far.");

  bind_algorithm<alg::ProgressiveResizing, alg::ProgressiveResizingOptions>(
      m, "ProgressiveResizing", "progressive_resizing",
      "Progressive resizing: trains on smaller images early and full-size ones at the end (AFTER_DATALOADER).")
      .def_property_readonly("last_scale", &alg::ProgressiveResizing::last_scale,
                             "The pinned scale used for the last batch.");

  bind_algorithm<alg::SelectiveBackprop, alg::SelectiveBackpropOptions>(
      m, "SelectiveBackprop", "selective_backprop",
      "Selective backprop (Jiang et al. 2019): trains on the examples with the highest loss, chosen at "
      "AFTER_DATALOADER on the full batch.");

  m.def(
      "make",
      [](const py::object& entry) {
        // {name: {options}} or a bare name, read exactly as a recipe's `algorithms:` entry.
        const std::string text = py::module_::import("json").attr("dumps")(entry).cast<std::string>();
        const Recipe recipe = Recipe::parse("{\"algorithm\": " + text + "}", "<algorithm>");
        return make_algorithm(recipe.root().child("algorithm"));
      },
      py::arg("entry"),
      "Builds an algorithm from a recipe entry: a name (\"blurpool\") or {name: {options}}, through the registry.");
  m.def("registered", []() { return registered_names("algorithms"); },
        "The recipe names of the registered algorithms.");

  // ---- functional forms -----------------------------------------------------------------------------------
  f.def(
      "smooth_labels",
      [](const at::Tensor& targets, int64_t num_classes, double alpha) {
        return alg::smooth_labels(targets, num_classes, alpha);
      },
      py::arg("targets"), py::arg("num_classes"), py::arg("alpha") = 0.1,
      "(1 - alpha) * onehot(targets) + alpha / num_classes for integer targets [N, ...] (class dimension 1 in "
      "the result), or the same mix of dense targets [N, C, ...].");
  f.def(
      "smoothed_cross_entropy",
      [](const at::Tensor& logits, const at::Tensor& labels, double alpha, const std::string& reduction) {
        return alg::smoothed_cross_entropy(logits, labels, alpha, reduction_from(reduction));
      },
      py::arg("logits"), py::arg("labels"), py::arg("alpha") = 0.1, py::arg("reduction") = "mean",
      "Fused label-smoothed cross-entropy of logits [N, C, ...] against integer labels [N, ...]: "
      "(1 - alpha) CE + alpha mean_c(-log softmax), equal to the cross-entropy against smooth_labels() "
      "without building it. reduction: 'mean', 'sum' or 'none'.");
  f.def(
      "cross_entropy",
      [](const at::Tensor& logits, const at::Tensor& targets, const std::string& reduction) {
        return tessera::cross_entropy(logits, targets, reduction_from(reduction));
      },
      py::arg("logits"), py::arg("targets"), py::arg("reduction") = "mean",
      "Cross-entropy of logits [N, C, ...] against integer targets [N, ...] or dense targets [N, C, ...].");
  f.def(
      "blur2d", [](const at::Tensor& x, int64_t stride) { return alg::blur2d(x, stride); }, py::arg("x"),
      py::arg("stride") = 1,
      "Depthwise blur of x [N, C, H, W] with the filter (1/16)[1 2 1]^T[1 2 1], zero padding 1 and the given "
      "stride. Inputs smaller than 3x3 pass through.");
  f.def("blur_filter",
        [](int64_t channels, const at::Tensor& like) { return alg::blur_filter(channels, like.options()); },
        py::arg("channels"), py::arg("like"),
        "The [channels, 1, 3, 3] blur weight, with the dtype and device of `like`.");
  f.def("selection_weights", &alg::selection_weights, py::arg("losses"), py::arg("keep"),
        "Selective-backprop selection probabilities: p[i] ~ ((rank(i) + 0.5) / N)^(1/keep - 1), rank ascending "
        "by loss.");
  f.def(
      "select_by_loss",
      [](const at::Tensor& losses, double keep, const py::object& rng) {
        if (py::isinstance<Rng>(rng)) return alg::select_by_loss(losses, keep, rng.cast<Rng&>());
        Rng r = rng_from(rng, "select_by_loss");
        return alg::select_by_loss(losses, keep, r);
      },
      py::arg("losses"), py::arg("keep"), py::arg("rng"),
      "Indices (int64, ascending) of floor(keep * N) examples drawn without replacement with "
      "selection_weights(). rng: a tessera.Rng (advanced in place) or an integer seed.");
  f.def("progressive_scale", &alg::progressive_scale, py::arg("elapsed"), py::arg("initial_scale"),
        py::arg("delay"), py::arg("finetune"),
        "Progressive-resizing scale at an elapsed fraction of training (before pinning).");
  f.def("pinned_scale", &alg::pinned_scale, py::arg("scale"), py::arg("width"), py::arg("increment"),
        "A scale pinned on `width` to a multiple of `increment`, returned as W'/W.");
  f.def(
      "resize_batch",
      [](const at::Tensor& x, double scale, const std::string& mode, const std::string& interpolation,
         const py::object& rng) {
        if (py::isinstance<Rng>(rng)) {
          return alg::resize_batch_input(x, scale, mode, interpolation, rng.cast<Rng&>());
        }
        Rng r = rng.is_none() ? Rng(0) : rng_from(rng, "resize_batch");
        return alg::resize_batch_input(x, scale, mode, interpolation, r);
      },
      py::arg("x"), py::arg("scale"), py::arg("mode") = "resize", py::arg("interpolation") = "bilinear",
      py::arg("rng") = py::none(),
      "Progressive resizing of a batch of images [N, C, H, W] to (floor(H*scale), floor(W*scale)): mode "
      "'resize' (interpolation 'bilinear' or 'nearest') or 'crop' (one random window for the batch, its corner "
      "from rng: a tessera.Rng or a seed; default seed 0). scale >= 1 returns x.");
  f.def("freeze_depth", &alg::freeze_depth, py::arg("elapsed"), py::arg("num_layers"), py::arg("freeze_start"),
        py::arg("freeze_level"), "Layer freezing: the number of layers to freeze at an elapsed fraction.");
  f.def(
      "apply_blurpool",
      [](Model& model, const py::kwargs& kwargs) {
        const auto counts = alg::apply_blurpool(model, options_from_kwargs<alg::BlurPoolOptions>(kwargs, "blurpool"));
        return py::dict(py::arg("convs") = counts.convs, py::arg("maxpools") = counts.maxpools);
      },
      py::arg("model"),
      "BlurPool surgery on a tessera.Model (keyword arguments as for tessera.algorithms.BlurPool); returns "
      "{'convs': n, 'maxpools': m}.");
  f.def(
      "freeze_layers", [](Model& model, int64_t depth) { return alg::freeze_layers(model, nullptr, depth); },
      py::arg("model"), py::arg("depth"),
      "Freezes the first `depth` freezable layers of a tessera.Model (requires_grad off); returns the number frozen.");
}

}  // namespace tessera::python
