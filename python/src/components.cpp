// The state classes (Batch, Model, Optimizer, DataLoader, Logger, State), tessera.algorithms (every algorithm
// with its Options as keyword arguments), tessera.functional (the functional forms on plain tensors) and
// tessera.data. Thin: the keyword arguments come from each Options' `visit`, the
// validation is the C++ one.
#include "common.h"

#include <cstdio>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/python_variable.h>

#include <tessera/algorithm.h>
#include <tessera/algorithms/augmix.h>
#include <tessera/algorithms/blurpool.h>
#include <tessera/algorithms/channels_last.h>
#include <tessera/algorithms/colout.h>
#include <tessera/algorithms/cutmix.h>
#include <tessera/algorithms/cutout.h>
#include <tessera/algorithms/ema.h>
#include <tessera/algorithms/factorize.h>
#include <tessera/algorithms/ghost_batchnorm.h>
#include <tessera/algorithms/label_smoothing.h>
#include <tessera/algorithms/mixup.h>
#include <tessera/algorithms/no_op_model.h>
#include <tessera/algorithms/gradient_clipping.h>
#include <tessera/algorithms/gyro_dropout.h>
#include <tessera/algorithms/layer_freezing.h>
#include <tessera/algorithms/progressive_resizing.h>
#include <tessera/algorithms/randaugment.h>
#include <tessera/algorithms/sam.h>
#include <tessera/algorithms/selective_backprop.h>
#include <tessera/algorithms/squeeze_excite.h>
#include <tessera/algorithms/stochastic_depth.h>
#include <tessera/algorithms/weight_standardization.h>
#include <tessera/algorithms/swa.h>
#include <tessera/batch.h>
#include <tessera/callback.h>
#include <tessera/data/dataloader.h>
#include <tessera/data/dataset.h>
#include <tessera/models/model.h>
#include <tessera/optim/optimizer.h>
#include <tessera/recipe.h>
#include <tessera/registry.h>
#include <tessera/rng.h>
#include <tessera/state.h>

namespace tessera::python {
namespace {

namespace alg = tessera::algorithms;

/// An Rng from a tessera.Rng or an integer seed.
Rng rng_from(py::handle h, const char* where) {
  if (py::isinstance<Rng>(h)) return h.cast<Rng>();
  if (PyLong_Check(h.ptr()) && !PyBool_Check(h.ptr())) {
    const unsigned long long seed = PyLong_AsUnsignedLongLong(h.ptr());
    if (!PyErr_Occurred()) return Rng(static_cast<uint64_t>(seed));
    PyErr_Clear();  // negative or 64 bits exceeded
    throw InputError(std::string(where) + ".rng: " + py::repr(h).cast<std::string>() +
                     " is out of range; expected a tessera.Rng or an integer seed in [0, 2^64)");
  }
  throw InputError(std::string(where) + ".rng: expected a tessera.Rng or an integer seed, got " + describe_value(h));
}

/// A State tensor set from Python: a torch.Tensor, or None for "no tensor" (an undefined at::Tensor).
template <at::Tensor State::*member>
void set_optional_tensor(State& s, const py::object& value) {
  if (value.is_none()) {
    s.*member = at::Tensor();
  } else if (THPVariable_Check(value.ptr())) {
    s.*member = value.cast<at::Tensor>();
  } else {
    throw InputError("State: expected a torch.Tensor or None, got " + describe_value(value));
  }
}

py::dict tensor_dict(const torch::OrderedDict<std::string, at::Tensor>& items) {
  py::dict out;
  for (const auto& item : items) out[py::str(item.key())] = item.value();
  return out;
}

/// The parts of every example of a dataset, as one Batch.
Batch whole_dataset(const data::Dataset& ds) {
  std::vector<int64_t> all(static_cast<size_t>(ds.size()));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  return ds.get_batch(all);
}

}  // namespace

void bind_state(py::module_& m) {
  py::class_<Batch>(m, "Batch",
                    "Named tensor parts sharing their first dimension ('input', 'target' and any extras). "
                    "Mapping-like: batch['input'], batch['mask'] = t, 'mask' in batch, batch.keys(). The "
                    "tensors are shared with C++, never copied.")
      .def(py::init<>())
      .def(py::init<at::Tensor, at::Tensor>(), py::arg("input"), py::arg("target"))
      .def(py::init([](const py::dict& parts) {
             Batch b;
             for (auto item : parts) b.set(py::str(item.first).cast<std::string>(), item.second.cast<at::Tensor>());
             return b;
           }),
           py::arg("parts"))
      .def("__getitem__", [](const Batch& b, const std::string& key) {
        if (!b.has(key)) {
          try {
            (void)b.get(key);
          } catch (const std::exception& e) {
            throw py::key_error(e.what());
          }
        }
        return b.get(key);
      })
      .def("__setitem__", &Batch::set)
      .def("__delitem__", [](Batch& b, const std::string& key) {
        if (!b.has(key)) throw py::key_error(key);
        b.erase(key);
      })
      .def("__contains__", &Batch::has)
      .def("__len__", [](const Batch& b) { return b.parts().size(); }, "Number of parts (see `size` for samples).")
      .def("__iter__", [](const Batch& b) {
        py::list keys;
        for (const auto& p : b.parts()) keys.append(p.first);
        return py::iter(keys);
      })
      .def("keys", [](const Batch& b) {
        std::vector<std::string> keys;
        for (const auto& p : b.parts()) keys.push_back(p.first);
        return keys;
      })
      .def("items", [](const Batch& b) {
        py::list out;
        for (const auto& p : b.parts()) out.append(py::make_tuple(p.first, p.second));
        return out;
      })
      .def_property("input", [](const Batch& b) { return b.input(); },
                    [](Batch& b, const at::Tensor& t) { b.set(Batch::kInput, t); })
      .def_property("target", [](const Batch& b) { return b.target(); },
                    [](Batch& b, const at::Tensor& t) { b.set(Batch::kTarget, t); })
      .def_property_readonly("size", &Batch::size, "Number of samples.")
      .def("validate", &Batch::validate)
      .def("split", &Batch::split, py::arg("microbatch_size"))
      .def("select", &Batch::select, py::arg("index"))
      .def("to", [](const Batch& b, const std::string& device) { return b.to(c10::Device(device)); }, py::arg("device"))
      .def("__repr__", [](const Batch& b) {
        std::string out = "Batch(";
        bool first = true;
        for (const auto& [k, v] : b.parts()) {
          out += (first ? "" : ", ") + k + "=" + c10::toString(v.scalar_type()) + c10::str(v.sizes());
          first = false;
        }
        return out + ")";
      });

  py::class_<Model, std::shared_ptr<Model>>(m, "Model",
                                            "A Tessera model (a LibTorch module tree). Its parameters and buffers "
                                            "are the C++ tensors themselves.")
      .def("forward", [](Model& model, const Batch& b) { return model.forward(b); }, py::arg("batch"))
      .def("__call__", [](Model& model, const at::Tensor& x) {
        Batch b;
        b.set(Batch::kInput, x);
        return model.forward(b);
      }, py::arg("input"))
      .def("loss", [](Model& model, const at::Tensor& out, const Batch& b, Reduction r) { return model.loss(out, b, r); },
           py::arg("outputs"), py::arg("batch"), py::arg("reduction") = Reduction::Mean)
      .def("named_parameters", [](const Model& model) { return tensor_dict(model.named_parameters(true)); })
      .def("parameters", [](const Model& model) { return model.parameters(true); })
      .def("named_buffers", [](const Model& model) { return tensor_dict(model.named_buffers(true)); })
      .def("state_dict", [](const Model& model) {
        py::dict out = tensor_dict(model.named_parameters(true));
        for (const auto& b : model.named_buffers(true)) out[py::str(b.key())] = b.value();
        return out;
      }, "Parameters then buffers, by name (the live tensors).")
      .def("load_state_dict", [](Model& model, const std::map<std::string, at::Tensor>& values, bool strict) {
        at::NoGradGuard no_grad;
        std::vector<std::string> missing;
        size_t used = 0;
        auto load = [&](const std::string& name, at::Tensor& t) {
          auto it = values.find(name);
          if (it == values.end()) {
            missing.push_back(name);
            return;
          }
          if (!it->second.sizes().equals(t.sizes())) {
            throw InputError("load_state_dict: " + name + " has shape " + c10::str(it->second.sizes()) +
                             ", the model's is " + c10::str(t.sizes()));
          }
          t.copy_(it->second);
          ++used;
        };
        for (auto& p : model.named_parameters(true)) load(p.key(), p.value());
        for (auto& b : model.named_buffers(true)) load(b.key(), b.value());
        if (strict && (!missing.empty() || used != values.size())) {
          throw InputError("load_state_dict: " + std::to_string(missing.size()) + " missing (" + join(missing) + ") and " +
                           std::to_string(values.size() - used) + " unexpected entries");
        }
      }, py::arg("state_dict"), py::arg("strict") = true, "Copies values into the model's tensors in place.")
      .def("train", [](Model& model, bool on) { model.train(on); }, py::arg("mode") = true)
      .def("eval", [](Model& model) { model.eval(); })
      .def_property_readonly("training", [](const Model& model) { return model.is_training(); })
      .def_property_readonly("num_classes", &Model::num_classes)
      .def("weights_fingerprint", [](const Model& model) { return weights_fingerprint(model); },
           "FNV-1a 64 over the parameters then buffers (name, 0 byte, bytes), as 16 hex digits.")
      .def("__repr__", [](const Model& model) {
        std::ostringstream s;
        s << model;
        return s.str();
      });

  py::class_<optim::Optimizer, std::shared_ptr<optim::Optimizer>>(m, "Optimizer",
                                                                 "A Tessera optimizer (tessera.registered('optimizers') lists them).")
      .def_property_readonly("name", &optim::Optimizer::name)
      .def_property_readonly("param_groups", [](const optim::Optimizer& o) {
        py::list out;
        for (const auto& g : o.param_groups()) {
          out.append(py::dict(py::arg("params") = g.params, py::arg("lr") = g.lr, py::arg("initial_lr") = g.initial_lr,
                              py::arg("weight_decay") = g.weight_decay));
        }
        return out;
      }, "A snapshot of the groups: [{'params': [...], 'lr': ..., 'initial_lr': ..., 'weight_decay': ...}]; group 0 "
         "has the optimizer's own settings, group i + 1 the recipe's groups[i].")
      .def_property_readonly("step_count", &optim::Optimizer::step_count)
      .def_property_readonly("momentum", &optim::Optimizer::momentum,
                             "The momentum (or beta1: momentum_option) a schedule set for this batch (onecycle's "
                             "cycle_momentum, torch's schedulers that cycle it), or None: the optimizer's own.")
      .def_property_readonly("momentum_option", &optim::Optimizer::momentum_option,
                             "The option a momentum schedule sets: 'momentum', 'beta1', or '' (none).")
      .def("contains", &optim::Optimizer::contains, py::arg("param"));

  py::class_<data::BatchSource, std::shared_ptr<data::BatchSource>>(
      m, "BatchSource", "Where a run draws batches from: Tessera's DataLoader or an adapter around Python data (read-only view).")
      .def_property_readonly("num_batches", &data::BatchSource::num_batches)
      .def_property_readonly("num_samples", &data::BatchSource::num_samples)
      .def("describe", &data::BatchSource::describe);
  py::class_<data::DataLoader, data::BatchSource, std::shared_ptr<data::DataLoader>>(
      m, "DataLoader", "Tessera's data loader of a run (read-only view).")
      .def_property_readonly("batch_size", [](const data::DataLoader& l) { return l.options().batch_size(); })
      .def_property_readonly("dataset", [](const data::DataLoader& l) { return l.dataset().describe(); })
      .def("batch_indices", &data::DataLoader::batch_indices, py::arg("seed"), py::arg("epoch"), py::arg("batch"));

  py::class_<Logger, std::shared_ptr<Logger>>(m, "Logger", "What algorithms and callbacks log through.")
      .def("log_metrics", &Logger::log_metrics, py::arg("values"), py::arg("timestamp"))
      .def("log_hyperparameters", &Logger::log_hyperparameters, py::arg("values"))
      .def("log_image", &Logger::log_image, py::arg("tag"), py::arg("image"), py::arg("timestamp"),
           "A picture (uint8 tensor [height, width, 1 or 3] on the CPU) for the destinations that keep pictures.")
      .def_property_readonly("takes_images", &Logger::takes_images, "True when a destination keeps pictures.")
      .def("warn", &Logger::warn, py::arg("text"))
      .def("info", &Logger::info, py::arg("text"));

  py::class_<BatchPlace>(m, "BatchPlace",
                         "Where state.batch sits in the step's global batch (all ranks' rows), while a training batch "
                         "runs: rows [first, first + rows) of this rank's batch of rank_rows, which came from rows "
                         "[share_begin, share_end) of a global batch of global_rows. Unset (is_set False) otherwise.")
      .def_readonly("first", &BatchPlace::first)
      .def_readonly("rows", &BatchPlace::rows)
      .def_readonly("rank_rows", &BatchPlace::rank_rows)
      .def_readonly("share_begin", &BatchPlace::share_begin)
      .def_readonly("share_end", &BatchPlace::share_end)
      .def_readonly("global_rows", &BatchPlace::global_rows)
      .def_property_readonly("is_set", &BatchPlace::is_set)
      .def(
          "parts_of_rows",
          [](const BatchPlace& p, int64_t units, int64_t parts) { return p.parts_of_rows(units, parts, at::kLong); },
          py::arg("units"), py::arg("parts"),
          "Which of `parts` equal parts of the global batch each of `units` rows computed from state.batch falls in "
          "(int64 [units]; units / rows rows per example).");

  py::class_<State, std::shared_ptr<State>>(m, "State",
                    "Everything an algorithm or callback may read or change during a run. Tensors are the C++ ones "
                    "(no copies): edit state.batch['input'] or assign state.loss and the trainer sees it.")
      .def_readwrite("batch", &State::batch, "The current batch (full batch or microbatch, see docs/events.md).")
      .def_property("outputs", [](const State& s) { return s.outputs; }, &set_optional_tensor<&State::outputs>,
                    "The model's outputs for the batch (None before the forward; assign None to clear them).")
      .def_property("loss", [](const State& s) { return s.loss; }, &set_optional_tensor<&State::loss>,
                    "The loss of the current microbatch (None before the loss; assign None to clear it).")
      .def_readwrite("loss_override", &State::loss_override,
                     "A callable (outputs, batch, reduction) -> loss replacing the model's loss, or None.")
      .def("compute_loss", [](State& s, const at::Tensor& out, const Batch& b, Reduction r) { return s.compute_loss(out, b, r); },
           py::arg("outputs"), py::arg("batch"), py::arg("reduction") = Reduction::Mean)
      .def_property_readonly("timestamp", [](const State& s) { return s.timestamp; })
      .def_property_readonly("max_duration", [](const State& s) { return s.time.max_duration; })
      .def_property_readonly("batches_per_epoch", [](const State& s) { return s.time.batches_per_epoch; })
      .def_property_readonly("samples_per_epoch", [](const State& s) { return s.time.samples_per_epoch; })
      .def_property_readonly("elapsed_fraction", &State::elapsed_fraction)
      .def_property_readonly("model", [](const State& s) { return s.model; })
      .def_property_readonly("optimizer", [](const State& s) { return s.optimizer; })
      .def_property_readonly("train_dataloader", [](const State& s) { return s.train_dataloader; })
      .def_property_readonly("metrics", [](const State& s) { return s.metrics; }, "Latest metric values (a copy).")
      .def_readonly("eval_label", &State::eval_label,
                    "The label of the evaluator running, from eval_start to eval_end ('' otherwise).")
      .def_readwrite("microbatch_size", &State::microbatch_size)
      .def_property_readonly("batch_place", [](const State& s) { return *s.batch_place; },
                             "Where state.batch sits in the global batch now (a copy; tessera.BatchPlace).")
      .def_property_readonly("precision", [](const State& s) { return std::string(precision_name(s.precision)); })
      .def_property_readonly("device", [](const State& s) { return s.device.str(); })
      .def_readonly("seed", &State::seed)
      .def_readonly("rank", &State::rank)
      .def_readonly("world_size", &State::world_size)
      .def_readwrite("rng", &State::rng, "The run's generator for algorithms.")
      .def("stop_training", &State::stop_training, "Ends training after the current batch.")
      .def_property_readonly("stop_requested", &State::stop_requested)
      .def_readonly("fit_complete", &State::fit_complete,
                    "The run reached max_duration and its fit ended; false before, while paused by fit(until=...) "
                    "and after an early stop.");
}
/// Calls f(rng) with the generator `rng` names: a tessera.Rng itself (advanced in place), or a new one from a seed
/// (default 0).
template <class F>
auto with_rng(const py::object& rng, const char* where, F&& f) {
  if (py::isinstance<Rng>(rng)) return f(rng.cast<Rng&>());
  Rng own = rng.is_none() ? Rng(0) : rng_from(rng, where);
  return f(own);
}

/// RandAugment and AugMix: the algorithms, and their operations and functional forms.
void bind_data_augmentation(py::module_& m, py::module_& f) {
  bind_algorithm<alg::AugMix, alg::AugMixOptions>(
      m, "AugMix", "augmix",
      "AugMix (Hendrycks et al. 2020) in the data pipeline: each training image becomes (1 - m) x + m sum_k w_k "
      "chain_k(x), with w ~ Dirichlet(alpha) over width chains of depth operations (-1: 1 to 3) and m ~ Beta(alpha, "
      "alpha), drawn per example from (seed, epoch, batch, example) on the DataLoader's threads. Needs Tessera's "
      "DataLoader (train_data=) and images in [0, 1]; refused before step 1 otherwise.");
  bind_algorithm<alg::RandAugment, alg::RandAugmentOptions>(
      m, "RandAugment", "randaugment",
      "RandAugment (Cubuk et al. 2020) in the data pipeline: depth operations per training image, drawn from the "
      "augmentation set, at magnitudes growing with severity, per example from (seed, epoch, batch, example) on the "
      "DataLoader's threads. Needs Tessera's DataLoader (train_data=) and images in [0, 1]; refused before step 1 "
      "otherwise.");

  const char* images_doc = " Images [..., C, H, W], float, intensities in [0, 1]; returns a new tensor.";
  f.def("augment_autocontrast", &alg::augment::autocontrast, py::arg("images"),
        (std::string("Each channel of each image stretched to [0, 1] (a constant one left as it is).") + images_doc).c_str());
  f.def("augment_equalize", &alg::augment::equalize, py::arg("images"),
        (std::string("PIL's histogram equalization per channel on the 256 levels round(255 x).") + images_doc).c_str());
  f.def("augment_posterize", &alg::augment::posterize, py::arg("images"), py::arg("bits"),
        (std::string("The 8-bit value with only its `bits` (0..8) high bits kept.") + images_doc).c_str());
  f.def("augment_solarize", &alg::augment::solarize, py::arg("images"), py::arg("threshold"),
        (std::string("1 - x where x >= threshold, else x.") + images_doc).c_str());
  f.def("augment_rotate", &alg::augment::rotate, py::arg("images"), py::arg("degrees"),
        (std::string("Counter-clockwise rotation about the centre, bilinear, zero fill.") + images_doc).c_str());
  f.def("augment_shear_x", &alg::augment::shear_x, py::arg("images"), py::arg("factor"),
        (std::string("Shear about the top-left corner: output (x, y) reads the input at (x + factor y, y).") + images_doc).c_str());
  f.def("augment_shear_y", &alg::augment::shear_y, py::arg("images"), py::arg("factor"),
        (std::string("Shear about the top-left corner: output (x, y) reads the input at (x, y + factor x).") + images_doc).c_str());
  f.def("augment_translate_x", &alg::augment::translate_x, py::arg("images"), py::arg("pixels"),
        (std::string("The content moves left by `pixels` (zero fill).") + images_doc).c_str());
  f.def("augment_translate_y", &alg::augment::translate_y, py::arg("images"), py::arg("pixels"),
        (std::string("The content moves up by `pixels` (zero fill).") + images_doc).c_str());
  f.def("augment_color", &alg::augment::color, py::arg("images"), py::arg("factor"),
        (std::string("PIL's ImageEnhance.Color: blend with the grey image (1 or 3 channels), clipped.") + images_doc).c_str());
  f.def("augment_contrast", &alg::augment::contrast, py::arg("images"), py::arg("factor"),
        (std::string("PIL's ImageEnhance.Contrast: blend with the mean grey, clipped.") + images_doc).c_str());
  f.def("augment_brightness", &alg::augment::brightness, py::arg("images"), py::arg("factor"),
        (std::string("PIL's ImageEnhance.Brightness: factor x, clipped.") + images_doc).c_str());
  f.def("augment_sharpness", &alg::augment::sharpness, py::arg("images"), py::arg("factor"),
        (std::string("PIL's ImageEnhance.Sharpness: blend with the 3x3 smoothing inside the border, clipped.") + images_doc).c_str());
  f.def(
      "augment_apply",
      [](const std::string& op, const at::Tensor& images, double severity, const py::object& rng) {
        return with_rng(rng, "augment_apply", [&](Rng& r) { return alg::augment::apply(op, images, severity, r); });
      },
      py::arg("op"), py::arg("images"), py::arg("severity"), py::arg("rng") = py::none(),
      "Operation `op` (augmentation_set('original') and 'all' name them) at a magnitude drawn for severity (0..10) "
      "as Composer's augmentation primitives draw it, from rng (a tessera.Rng advanced in place, or a seed; "
      "default 0).");
  f.def("augmentation_set", &alg::augmentation_set, py::arg("name"),
        "The operations of an augmentation set: 'all', 'safe' (without the colour, contrast, brightness and "
        "sharpness enhancements) or 'original' (the enhancements with their original magnitudes).");
  f.def(
      "randaugment_image",
      [](const at::Tensor& image, int64_t severity, int64_t depth, const std::string& set, const py::object& rng) {
        return with_rng(rng, "randaugment_image", [&](Rng& r) {
          return alg::randaugment_image(image, severity, depth, alg::augmentation_set(set), r);
        });
      },
      py::arg("image"), py::arg("severity") = 9, py::arg("depth") = 2, py::arg("augmentation_set") = "all",
      py::arg("rng") = py::none(),
      "RandAugment of one image [C, H, W] in [0, 1]: depth operations drawn uniformly from the set, each at a "
      "magnitude drawn for severity, from rng (a tessera.Rng advanced in place, or a seed; default 0).");
  f.def(
      "randaugment_images",
      [](const at::Tensor& images, int64_t severity, int64_t depth, const std::string& set, const py::object& rng) {
        return with_rng(rng, "randaugment_images", [&](Rng& r) {
          return alg::randaugment_images(images, severity, depth, alg::augmentation_set(set), r);
        });
      },
      py::arg("images"), py::arg("severity") = 9, py::arg("depth") = 2, py::arg("augmentation_set") = "all",
      py::arg("rng") = py::none(),
      "randaugment_image of every image of [N, C, H, W], example i with rng.derive([i]) (rng, a tessera.Rng or a "
      "seed, is not advanced): what the RandAugment algorithm does to a batch in the DataLoader.");
  f.def(
      "augmix_weights",
      [](int64_t width, double alpha, const py::object& rng) -> py::tuple {
        return with_rng(rng, "augmix_weights", [&](Rng& r) {
          const alg::AugMixWeights w = alg::augmix_weights(width, alpha, r);
          return py::make_tuple(w.chains, w.mix);
        });
      },
      py::arg("width") = 3, py::arg("alpha") = 1.0, py::arg("rng") = py::none(),
      "AugMix's weights of one image: (chain weights ~ Dirichlet(alpha), summing to 1; skip weight m ~ Beta(alpha, "
      "alpha)), drawn from rng (a tessera.Rng advanced in place, or a seed; default 0).");
  f.def(
      "augmix_image",
      [](const at::Tensor& image, int64_t severity, int64_t depth, int64_t width, double alpha, const std::string& set,
         const py::object& rng) {
        return with_rng(rng, "augmix_image", [&](Rng& r) {
          return alg::augmix_image(image, severity, depth, width, alpha, alg::augmentation_set(set), r);
        });
      },
      py::arg("image"), py::arg("severity") = 3, py::arg("depth") = -1, py::arg("width") = 3, py::arg("alpha") = 1.0,
      py::arg("augmentation_set") = "all", py::arg("rng") = py::none(),
      "AugMix of one image [C, H, W] in [0, 1]: (1 - m) x + m sum_k w_k chain_k(x) with augmix_weights, then each "
      "chain's depth (-1: 1 to 3) and operations, from rng (a tessera.Rng advanced in place, or a seed; default 0).");
  f.def(
      "augmix_images",
      [](const at::Tensor& images, int64_t severity, int64_t depth, int64_t width, double alpha, const std::string& set,
         const py::object& rng) {
        return with_rng(rng, "augmix_images", [&](Rng& r) {
          return alg::augmix_images(images, severity, depth, width, alpha, alg::augmentation_set(set), r);
        });
      },
      py::arg("images"), py::arg("severity") = 3, py::arg("depth") = -1, py::arg("width") = 3, py::arg("alpha") = 1.0,
      py::arg("augmentation_set") = "all", py::arg("rng") = py::none(),
      "augmix_image of every image of [N, C, H, W], example i with rng.derive([i]) (rng is not advanced): what the "
      "AugMix algorithm does to a batch in the DataLoader.");
}

/// copy.copy or copy.deepcopy of a model after surgery (a user's own EMA or evaluation copy): the copy has the same
/// masks and period, and neither the algorithm nor the trainer's batch place moves it afterwards.
std::shared_ptr<alg::GyroDropoutMasks> detached_copy(const alg::GyroDropoutMasks& masks) {
  auto copy = std::make_shared<alg::GyroDropoutMasks>(masks);
  copy->follow(nullptr);
  return copy;
}

void bind_algorithms(py::module_& m, py::module_& f, py::module_& d) {
  // ---- the five algorithms --------------------------------------------------------------------------------
  bind_algorithm<alg::BlurPool, alg::BlurPoolOptions>(
      m, "BlurPool", "blurpool",
      "BlurPool: anti-aliased downsampling by model surgery at INIT (Zhang 2019). Strided convolutions become "
      "blur+conv and max-pools become max(stride 1)+blur, with the fixed filter (1/16)[1 2 1]^T[1 2 1].")
      .def_property_readonly("counts", [](const alg::BlurPool& a) {
        return py::dict(py::arg("convs") = a.counts().convs, py::arg("maxpools") = a.counts().maxpools);
      }, "What the last application replaced: {'convs': n, 'maxpools': m}.");

  bind_algorithm<alg::ChannelsLast, alg::ChannelsLastOptions>(
      m, "ChannelsLast", "channels_last",
      "Channels-last at INIT (after surgery): the model's 4-D parameters and buffers are stored NHWC "
      "(torch.channels_last) in place, so convolutions run their channels-last kernels; inputs are not converted.")
      .def_property_readonly("converted", &alg::ChannelsLast::converted,
                             "How many 4-D parameters and buffers the last application converted.");

  bind_algorithm<alg::ColOut, alg::ColOutOptions>(
      m, "ColOut", "colout",
      "ColOut at AFTER_DATALOADER: drops a fraction p_row of the rows and p_col of the columns of the images (the "
      "same for the whole batch, or per example with batch=False), drawn from (seed, batch); dense targets of the "
      "images' size lose them too (resize_target). Ordered before progressive resizing and after selective backprop.")
      .def_property_readonly(
          "last_kept",
          [](const alg::ColOut& a) {
            py::list out;
            for (const auto& k : a.last_kept()) out.append(py::make_tuple(k.rows, k.cols));
            return out;
          },
          "The (rows, columns) kept in the last batch: one pair with batch=True, else one per example.");

  bind_algorithm<alg::CutMix, alg::CutMixOptions>(
      m, "CutMix", "cutmix",
      "CutMix (Yun et al. 2019) at AFTER_DATALOADER: one box of each image's partner in a permutation of the batch "
      "is pasted into it (sides sqrt(1 - lambda) of the image's, lambda ~ Beta(alpha, alpha)), lambda becomes the "
      "fraction of the image left, and the loss is lambda L(y) + (1 - lambda) L(y[perm]).")
      .def_property_readonly("last_lambda", [](const alg::CutMix& a) { return a.last_lambda(); },
                             "lambda of the last batch, adjusted to its box (the weight of the original targets).");

  bind_algorithm<alg::CutOut, alg::CutOutOptions>(
      m, "CutOut", "cutout",
      "CutOut (DeVries & Taylor 2017) at AFTER_DATALOADER: num_holes square holes of side length (a fraction of the "
      "shorter image side if < 1, else pixels), centres drawn from (seed, batch), are zeroed in every image of the "
      "batch; targets unchanged.")
      .def_property_readonly(
          "last_holes",
          [](const alg::CutOut& a) {
            py::list out;
            for (const auto& h : a.last_holes()) out.append(py::make_tuple(h.top, h.left, h.top + h.height, h.left + h.width));
            return out;
          },
          "The holes of the last batch as (top, left, bottom, right), end-exclusive.");

  bind_algorithm<alg::EMA, alg::EMAOptions>(
      m, "EMA", "ema",
      "Exponential moving average of the weights (parameters and batch-norm statistics), updated after the "
      "optimizer step every update_interval once ema_start is reached: w_ema <- s w_ema + (1 - s) w with "
      "s = 2^(-update_interval / half_life) (or smoothing). Evaluations run on the averages (the training weights "
      "are restored bit for bit afterwards); a completed fit leaves the averages in the model. Checkpoints keep "
      "both, so a resumed run continues exactly.")
      .def_property_readonly("started", &alg::EMA::started, "Whether averaging has started (ema_start reached).")
      .def_property_readonly("holds_averaged_weights", &alg::EMA::holds_averaged_weights,
                             "Whether the model holds the averages now (during an evaluation, after a completed fit).")
      .def(
          "averages",
          [](const alg::EMA& a) {
            py::dict out;
            for (const auto& [name, t] : a.averages()) out[py::str(name)] = t;
            return out;
          },
          "The averages by name: {'param/<name>': tensor, 'buffer/<name>': tensor}; empty before the start.")
      .def("copy_averages_to", [](const alg::EMA& a, Model& model) { a.copy_averages_to(model); }, py::arg("model"),
           "Copies the averages into a tessera.Model with the same parameter and buffer names.");

  bind_algorithm<alg::Factorize, alg::FactorizeOptions>(
      m, "Factorize", "factorize",
      "Factorize by model surgery at INIT (Composer's Factorize): every Conv2d with at least min_channels input and "
      "output channels becomes a k x k conv to r channels (no bias) then a 1x1 conv to the output channels (the "
      "original bias), every Linear with at least min_features inputs and outputs a Linear to r features then one to "
      "the outputs, when that reduces the multiply-adds (r (in k^2 + out) < in out k^2); r = latent_channels "
      "(latent_features) or that fraction of min(in, out) when below 1. The factors start from the truncated SVD "
      "of the weight. Runs after squeeze_excite, before blurpool.")
      .def_property_readonly("counts", [](const alg::Factorize& a) {
        return py::dict(py::arg("convs") = a.counts().convs, py::arg("linears") = a.counts().linears);
      }, "What the last application factorized: {'convs': n, 'linears': m}.");

  bind_algorithm<alg::GhostBatchNorm, alg::GhostBatchNormOptions>(
      m, "GhostBatchNorm", "ghost_batchnorm",
      "Ghost batch norm by model surgery at INIT (Hoffer et al. 2017): in training, every BatchNorm1d/2d/3d "
      "normalises each chunk of ghost_batch_size examples by its own statistics (running statistics updated per "
      "chunk with momentum / chunks); in evaluation it is the batch norm it replaced. Same parameters and keys.")
      .def_property_readonly("replaced", &alg::GhostBatchNorm::replaced,
                             "How many batch norms the last application replaced.");

  bind_algorithm<alg::GradientClipping, alg::GradientClippingOptions>(
      m, "GradientClipping", "gradient_clipping",
      "Gradient clipping at AFTER_TRAIN_BATCH (after every microbatch, before the step): the global norm "
      "('norm'), each value ('value') or each unit relative to its weights ('adaptive', AGC) bounded by "
      "clipping_threshold.");

  bind_algorithm<alg::SAM, alg::SAMOptions>(
      m, "SAM", "sam",
      "Sharpness-aware minimisation (Foret et al. 2021) at AFTER_TRAIN_BATCH on every interval-th batch: the "
      "weights move by rho * g / (||g|| + epsilon) along the whole batch's gradient, the trainer runs every "
      "microbatch's forward and backward again there, the weights and batch-norm statistics are put back, and the "
      "step uses the second gradients.");

  bind_algorithm<alg::SWA, alg::SWAOptions>(
      m, "SWA", "swa",
      "Stochastic weight averaging (Izmailov et al. 2018): from swa_start on, every update_interval after the step, "
      "the weights join an equal-weight running mean of the snapshots; at swa_end the mean replaces the weights "
      "and the batch-norm statistics are recomputed with a pass over the training data (recompute_batchnorm). "
      "With schedule_swa_lr the learning rate is annealed (linear or cos, over anneal_steps update intervals) from "
      "its value at swa_start to swa_lr, then held. Checkpoints keep the averages, so a resumed run continues "
      "exactly.")
      .def_property_readonly("count", &alg::SWA::count, "Snapshots in the average so far.")
      .def_property_readonly("finished", &alg::SWA::finished,
                             "Whether swa_end was reached and the average went into the model.")
      .def(
          "averages",
          [](const alg::SWA& a) {
            py::dict out;
            for (const auto& [name, t] : a.averages()) out[py::str(name)] = t;
            return out;
          },
          "The averages by name: {'param/<name>': tensor, 'buffer/<name>': tensor}; empty before the first snapshot "
          "and after they went into the model.");

  bind_algorithm<alg::LabelSmoothing, alg::LabelSmoothingOptions>(
      m, "LabelSmoothing", "label_smoothing",
      "Label smoothing (Szegedy et al. 2016): trains against (1 - alpha) onehot(y) + alpha / C, by default with "
      "the fused loss that never builds the dense targets.");

  bind_algorithm<alg::LayerFreezing, alg::LayerFreezingOptions>(
      m, "LayerFreezing", "layer_freezing",
      "Layer freezing: progressively stops training the early layers at each EPOCH_END (their parameters leave "
      "the optimizer with their state). Resumes exactly.")
      .def_property_readonly("frozen_depth", &alg::LayerFreezing::frozen_depth, "Number of layers frozen so far.");

  bind_algorithm<alg::MixUp, alg::MixUpOptions>(
      m, "MixUp", "mixup",
      "MixUp (Zhang et al. 2018) at AFTER_DATALOADER: x <- lambda x + (1 - lambda) x[perm] with lambda ~ "
      "Beta(alpha, alpha) and a permutation of the whole batch, drawn from (seed, batch); the loss is "
      "lambda L(y) + (1 - lambda) L(y[perm]).")
      .def_property_readonly("last_lambda", [](const alg::MixUp& a) { return a.last_lambda(); },
                             "lambda of the last batch (the weight of the original examples).");

  bind_data_augmentation(m, f);
  bind_language_model_algorithms(m, f);

  bind_algorithm<alg::ProgressiveResizing, alg::ProgressiveResizingOptions>(
      m, "ProgressiveResizing", "progressive_resizing",
      "Progressive resizing: trains on smaller images early and full-size ones at the end (AFTER_DATALOADER).")
      .def_property_readonly("last_scale", &alg::ProgressiveResizing::last_scale,
                             "The pinned scale used for the last batch.");

  py::class_<alg::GyroDropoutMasks, std::shared_ptr<alg::GyroDropoutMasks>>(
      m, "GyroDropoutMasks",
      "The masks of one gyro dropout layer and the period it trains (the algorithm moves it before each batch); "
      "the module that replaces a torch.nn.Dropout in a Python model calls forward(x, training).")
      .def("forward", &alg::GyroDropoutMasks::forward, py::arg("x"), py::arg("training"),
           "In training, x times the period's mask of each example (example n of the global batch of N gets mask "
           "floor(n * tau / N), by the trainer's state.batch_place; outside training batches, of x's own rows), "
           "divided by 1 - p; otherwise x.")
      .def("selected", &alg::GyroDropoutMasks::selected, py::arg("features"),
           "The tau masks trained now, [tau, features] of 0 and 1.")
      .def("select", &alg::GyroDropoutMasks::select, py::arg("seed"), py::arg("period"),
           "Trains the masks of `period` of the run seeded `seed` from now on.")
      .def_property_readonly("layer", &alg::GyroDropoutMasks::layer)
      .def_property_readonly("period", &alg::GyroDropoutMasks::period)
      .def("__copy__", &detached_copy)
      .def("__deepcopy__", [](const alg::GyroDropoutMasks& m, const py::dict&) { return detached_copy(m); },
           py::arg("memo"));

  bind_algorithm<alg::GyroDropout, alg::GyroDropoutOptions>(
      m, "GyroDropout", "gyro_dropout",
      "Gyro dropout by surgery at INIT (Lee et al. 2022): every dropout layer trains only sigma preselected masks, "
      "tau of them at once (each on its share of the batch), a new choice of tau every max(1, T // sigma) * tau "
      "batches (T: the run's length). Masks and choices from (seed, layer, period): exact resume, the same on every "
      "rank. In evaluation the layers are the identity.")
      .def("add_layer", &alg::GyroDropout::add_layer,
           "A new layer's masks, numbered after the ones before (the surgery on a Python model calls it).")
      .def_property_readonly("replaced", [](const alg::GyroDropout& a) { return a.layers().size(); },
                             "How many dropout layers the last application replaced.");

  bind_algorithm<alg::SelectiveBackprop, alg::SelectiveBackpropOptions>(
      m, "SelectiveBackprop", "selective_backprop",
      "Selective backprop (Jiang et al. 2019): trains on the examples with the highest loss, chosen at "
      "AFTER_DATALOADER on the full batch.");

  bind_algorithm<alg::SqueezeExcite, alg::SqueezeExciteOptions>(
      m, "SqueezeExcite", "squeeze_excite",
      "Squeeze-and-Excitation by model surgery at INIT (Hu et al. 2018): every Conv2d with at least min_channels "
      "input and output channels is followed by y * sigmoid(W2 relu(W1 mean_hw(y))), W1: C -> d, W2: d -> C "
      "without biases (d = latent_channels, or that fraction of C when below 1). Runs before blurpool.")
      .def_property_readonly("replaced", &alg::SqueezeExcite::replaced,
                             "How many convolutions the last application extended.");

  bind_algorithm<alg::StochasticDepth, alg::StochasticDepthOptions>(
      m, "StochasticDepth", "stochastic_depth",
      "Stochastic depth by surgery at INIT (Huang et al. 2016): each residual block's gate drops its residual branch "
      "in training with probability (i+1)/L * drop_rate (linear) or drop_rate (uniform), for the whole batch (block) "
      "or per example (sample); in evaluation the branch is scaled by the survival probability. Optional warmup of "
      "the rate (drop_warmup, a fraction of the run). Random draws per (seed, batch, rank).")
      .def_property_readonly(
          "drop_rates",
          [](const alg::StochasticDepth& a) {
            std::vector<double> rates;
            for (const auto& g : a.gates()) rates.push_back(g->drop_rate);
            return rates;
          },
          "The current drop rate of each residual gate, in block order (empty before INIT).");

  bind_algorithm<alg::WeightStandardization, alg::WeightStandardizationOptions>(
      m, "WeightStandardization", "weight_standardization",
      "Weight standardization by surgery at INIT (Qiao et al. 2019): every Conv1d/2d/3d but the last "
      "n_last_layers_ignore convolves with its weight standardized per output channel, (w - mean) / sqrt(var + eps). "
      "Runs after blurpool and squeeze_excite.")
      .def_property_readonly("replaced", &alg::WeightStandardization::replaced,
                             "How many convolutions the last application replaced.");

  bind_algorithm<alg::NoOpModel, alg::NoOpModelOptions>(
      m, "NoOpModel", "no_op_model",
      "No-op model at INIT (Composer's NoOpModel): the model is replaced by a stand-in with one parameter whose "
      "forward costs nothing (the targets' class scores), and the optimizer gets that parameter, so that the run "
      "measures the data pipeline and the trainer. Its metrics and weights mean nothing. Refused with model surgery.");

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
  f.def("make_no_op_model",
        [](const Model& model, int64_t num_classes) {
          return std::shared_ptr<Model>(alg::make_no_op_model(model, num_classes));
        },
        py::arg("model"), py::arg("num_classes") = 0,
        "The stand-in of no_op_model for a tessera.Model: one parameter 'weight' = 1.5; outputs the batch's targets "
        "as class scores times it; cross-entropy loss. num_classes: used when the model does not say (0 = the "
        "model's).");
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
        return alg::smoothed_cross_entropy(logits, labels, alpha, parse_reduction(reduction));
      },
      py::arg("logits"), py::arg("labels"), py::arg("alpha") = 0.1, py::arg("reduction") = "mean",
      "Fused label-smoothed cross-entropy of logits [N, C, ...] against integer labels [N, ...]: "
      "(1 - alpha) CE + alpha mean_c(-log softmax), equal to the cross-entropy against smooth_labels() "
      "without building it. reduction: 'mean', 'sum' or 'none'.");
  f.def(
      "cross_entropy",
      [](const at::Tensor& logits, const at::Tensor& targets, const std::string& reduction) {
        return tessera::cross_entropy(logits, targets, parse_reduction(reduction));
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
  f.def(
      "sample_mixing",
      [](double alpha, const py::object& rng) {
        Rng own = py::isinstance<Rng>(rng) || rng.is_none() ? Rng(0) : rng_from(rng, "sample_mixing");
        return alg::sample_mixing(alpha, py::isinstance<Rng>(rng) ? rng.cast<Rng&>() : own);
      },
      py::arg("alpha"), py::arg("rng") = py::none(),
      "lambda ~ Beta(alpha, alpha) (alpha = 0 gives 1). rng: a tessera.Rng (advanced in place) or a seed; default 0.");
  f.def(
      "mixup_batch",
      [](const at::Tensor& input, const at::Tensor& target, const py::object& mixing, double alpha,
         const py::object& indices, const py::object& rng) {
        Rng own = py::isinstance<Rng>(rng) || rng.is_none() ? Rng(0) : rng_from(rng, "mixup_batch");
        Rng& r = py::isinstance<Rng>(rng) ? rng.cast<Rng&>() : own;
        const double lambda = mixing.is_none() ? alg::sample_mixing(alpha, r) : mixing.cast<double>();
        const at::Tensor idx =
            indices.is_none() ? alg::mixing_permutation(input.dim() > 0 ? input.size(0) : 0, r) : indices.cast<at::Tensor>();
        const alg::MixedBatch out = alg::mixup_batch(input, target, lambda, idx);
        return py::make_tuple(out.input, out.target_perm, out.lambda);
      },
      py::arg("input"), py::arg("target"), py::arg("mixing") = py::none(), py::arg("alpha") = 0.2,
      py::arg("indices") = py::none(), py::arg("rng") = py::none(),
      "MixUp of a batch: returns (mixing * input + (1 - mixing) * input[indices], target[indices], mixing). "
      "mixing (the weight of the original examples) defaults to a draw from Beta(alpha, alpha), indices to a "
      "random permutation, both from rng (a tessera.Rng advanced in place, or a seed; default 0). Train with "
      "mixed_loss(loss(out, target), loss(out, target_perm), mixing).");
  f.def(
      "cutmix_batch",
      [](const at::Tensor& input, const at::Tensor& target, double alpha, const py::object& bbox,
         const py::object& indices, bool uniform_sampling, const py::object& rng) {
        Rng own = py::isinstance<Rng>(rng) || rng.is_none() ? Rng(0) : rng_from(rng, "cutmix_batch");
        Rng& r = py::isinstance<Rng>(rng) ? rng.cast<Rng&>() : own;
        alg::CutMixBatch out;
        if (bbox.is_none() && indices.is_none()) {
          out = alg::cutmix_batch(input, target, alpha, r, uniform_sampling);
        } else {
          if (bbox.is_none() || indices.is_none()) {
            throw InputError("cutmix_batch: give both bbox and indices, or neither (both are then drawn)");
          }
          const auto b = bbox.cast<std::tuple<int64_t, int64_t, int64_t, int64_t>>();
          const alg::CutMixBox box{std::get<0>(b), std::get<1>(b), std::get<2>(b) - std::get<0>(b),
                                   std::get<3>(b) - std::get<1>(b)};
          out = alg::cutmix_batch(input, target, box, indices.cast<at::Tensor>());
        }
        const auto& x = out.box;
        return py::make_tuple(out.input, out.target_perm, out.lambda,
                              py::make_tuple(x.top, x.left, x.top + x.height, x.left + x.width));
      },
      py::arg("input"), py::arg("target"), py::arg("alpha") = 1.0, py::arg("bbox") = py::none(),
      py::arg("indices") = py::none(), py::arg("uniform_sampling") = false, py::arg("rng") = py::none(),
      "CutMix of images [N, C, H, W]: returns (mixed, target[indices], lambda, bbox) where the box bbox = (top, "
      "left, bottom, right) (end-exclusive) of input[indices] is pasted into every image and lambda = 1 - box "
      "area / (H W). bbox and indices default to draws (Beta(alpha, alpha), then the permutation, then the box) "
      "from rng (a tessera.Rng advanced in place, or a seed; default 0).");
  f.def(
      "colout_batch",
      [](const at::Tensor& input, const py::object& target, double p_row, double p_col, bool batch,
         const std::string& resize_target, const py::object& rng) {
        Rng own = py::isinstance<Rng>(rng) || rng.is_none() ? Rng(0) : rng_from(rng, "colout_batch");
        Rng& r = py::isinstance<Rng>(rng) ? rng.cast<Rng&>() : own;
        const at::Tensor y = target.is_none() ? at::Tensor() : target.cast<at::Tensor>();
        alg::ColOutBatch out = alg::colout_batch(input, y, p_row, p_col, r, batch, resize_target);
        return py::make_tuple(out.input, target.is_none() ? py::object(py::none()) : py::cast(out.target));
      },
      py::arg("input"), py::arg("target") = py::none(), py::arg("p_row") = 0.15, py::arg("p_col") = 0.15,
      py::arg("batch") = true, py::arg("resize_target") = "auto", py::arg("rng") = py::none(),
      "ColOut of images [N, ..., H, W]: returns (input, target) with max(1, floor((1 - p_row) H)) rows and "
      "max(1, floor((1 - p_col) W)) columns kept in order (the same for the batch, or per example with "
      "batch=False), drawn from rng (a tessera.Rng advanced in place, or a seed; default 0). Targets of the "
      "images' size lose the same rows and columns (resize_target 'auto', 'true' or 'false'); others are returned "
      "unchanged.");
  f.def(
      "cutout_batch",
      [](const at::Tensor& input, int64_t num_holes, double length, const py::object& holes, bool uniform_sampling,
         const py::object& rng) -> py::tuple {
        std::vector<alg::CutOutHole> hs;
        if (holes.is_none()) {
          Rng own = py::isinstance<Rng>(rng) || rng.is_none() ? Rng(0) : rng_from(rng, "cutout_batch");
          Rng& r = py::isinstance<Rng>(rng) ? rng.cast<Rng&>() : own;
          if (input.dim() < 2) return py::make_tuple(alg::cutout_batch(input, hs), py::list());
          const int64_t height = input.size(-2), width = input.size(-1);
          hs = alg::cutout_holes(height, width, num_holes, alg::cutout_length(height, width, length), r, uniform_sampling);
        } else {
          for (const auto& b : holes.cast<std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>>()) {
            hs.push_back({std::get<0>(b), std::get<1>(b), std::get<2>(b) - std::get<0>(b), std::get<3>(b) - std::get<1>(b)});
          }
        }
        py::list out;
        for (const auto& h : hs) out.append(py::make_tuple(h.top, h.left, h.top + h.height, h.left + h.width));
        return py::make_tuple(alg::cutout_batch(input, hs), out);
      },
      py::arg("input"), py::arg("num_holes") = 1, py::arg("length") = 0.5, py::arg("holes") = py::none(),
      py::arg("uniform_sampling") = false, py::arg("rng") = py::none(),
      "CutOut of images [..., H, W]: returns (cut, holes), a copy with the same square holes zeroed in every image "
      "and channel, and the holes as (top, left, bottom, right) (end-exclusive). The side is length times the "
      "shorter image side if length < 1, else length pixels; the holes default to draws (centre column, then row, "
      "per hole) from rng (a tessera.Rng advanced in place, or a seed; default 0), or are given as holes=.");
  f.def("mixed_loss", &alg::mixed_loss, py::arg("loss_original"), py::arg("loss_permuted"), py::arg("mixing"),
        "mixing * loss_original + (1 - mixing) * loss_permuted: the interpolated loss of MixUp and CutMix.");
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
      "apply_factorize",
      [](Model& model, const py::kwargs& kwargs) {
        const auto counts = alg::apply_factorize(model, options_from_kwargs<alg::FactorizeOptions>(kwargs, "factorize"));
        return py::dict(py::arg("convs") = counts.convs, py::arg("linears") = counts.linears);
      },
      py::arg("model"),
      "Factorize surgery on a tessera.Model (keyword arguments as for tessera.algorithms.Factorize); returns "
      "{'convs': n, 'linears': m}.");
  f.def(
      "factorize_matrix",
      [](const at::Tensor& weight, int64_t rank) -> py::tuple {
        const auto [first, second] = alg::factorize_matrix(weight, rank);
        return py::make_tuple(first, second);
      },
      py::arg("weight"), py::arg("rank"),
      "The truncated SVD of weight [out, in] = U S V^T as (first, second) = (S_r^1/2 V_r^T [rank, in], "
      "U_r S_r^1/2 [out, rank]): second @ first is the best rank-`rank` approximation of weight (computed in "
      "float64, returned in weight's dtype).");
  f.def("factorize_latent", &alg::factorize_latent, py::arg("latent"), py::arg("in_size"), py::arg("out_size"),
        "The rank for a layer with in_size inputs and out_size outputs: latent when >= 1, else "
        "max(1, int(latent * min(in_size, out_size))).");
  f.def("factorize_reduces_cost", &alg::factorize_reduces_cost, py::arg("in_size"), py::arg("out_size"),
        py::arg("kernel_area"), py::arg("rank"),
        "Whether rank * (in_size * kernel_area + out_size) < in_size * out_size * kernel_area (fewer multiply-adds "
        "per output position).");
  f.def(
      "apply_ghost_batchnorm",
      [](Model& model, const py::kwargs& kwargs) {
        return alg::apply_ghost_batchnorm(model, options_from_kwargs<alg::GhostBatchNormOptions>(kwargs, "ghost_batchnorm"));
      },
      py::arg("model"),
      "Ghost batch norm surgery on a tessera.Model (keyword arguments as for tessera.algorithms.GhostBatchNorm); "
      "returns how many batch norms were replaced.");
  f.def("ghost_batch_norm",
        [](const at::Tensor& input, const std::optional<at::Tensor>& running_mean,
           const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, bool training,
           std::optional<double> momentum, double eps, int64_t ghost_batch_size,
           const std::optional<at::Tensor>& num_batches_tracked) {
          return alg::ghost_batch_norm(input, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()),
                                       running_mean.value_or(at::Tensor()), running_var.value_or(at::Tensor()),
                                       num_batches_tracked.value_or(at::Tensor()), training, momentum, eps, ghost_batch_size);
        },
        py::arg("input"), py::arg("running_mean"), py::arg("running_var"), py::arg("weight") = py::none(),
        py::arg("bias") = py::none(), py::arg("training") = true, py::arg("momentum") = 0.1, py::arg("eps") = 1e-5,
        py::arg("ghost_batch_size") = 32, py::arg("num_batches_tracked") = py::none(),
        "Batch norm (as torch.nn.functional.batch_norm) of each chunk of ghost_batch_size examples when training, "
        "the running statistics (updated in place, or None) moved once per chunk with momentum / chunks "
        "(momentum None: a cumulative average; num_batches_tracked, if given, counts the chunks in place); not "
        "training: torch's batch norm.");
  f.def(
      "apply_gyro_dropout",
      [](Model& model, const py::kwargs& kwargs) {
        return alg::apply_gyro_dropout(model, options_from_kwargs<alg::GyroDropoutOptions>(kwargs, "gyro_dropout"));
      },
      py::arg("model"),
      "Gyro-dropout surgery on a tessera.Model (keyword arguments as for tessera.algorithms.GyroDropout); returns "
      "the masks of the replaced layers (tessera.GyroDropoutMasks), in order.");
  f.def("gyro_dropout", &alg::gyro_dropout, py::arg("x"), py::arg("selected"), py::arg("p"),
        "x [N, F, ...] times selected [M, F]'s row floor(n * M / N) for example n, divided by 1 - p.");
  f.def("gyro_dropout_masks", &alg::gyro_dropout_masks, py::arg("seed"), py::arg("layer"), py::arg("features"),
        py::arg("p"), py::arg("sigma"), "The sigma preselected 0/1 masks [sigma, features] of a layer.");
  f.def("gyro_dropout_selection", &alg::gyro_dropout_selection, py::arg("seed"), py::arg("layer"), py::arg("period"),
        py::arg("sigma"), py::arg("tau"), "The tau distinct masks a layer trains in a period.");
  f.def("gyro_dropout_period_length", &alg::gyro_dropout_period_length, py::arg("total_batches"), py::arg("sigma"),
        py::arg("tau"), "Batches per period: max(1, total_batches // sigma) * tau.");
  f.def(
      "apply_squeeze_excite",
      [](Model& model, const py::kwargs& kwargs) {
        return alg::apply_squeeze_excite(model, options_from_kwargs<alg::SqueezeExciteOptions>(kwargs, "squeeze_excite"));
      },
      py::arg("model"),
      "Squeeze-Excite surgery on a tessera.Model (keyword arguments as for tessera.algorithms.SqueezeExcite); "
      "returns how many convolutions got an SE block.");
  f.def("squeeze_excite_latent", &alg::squeeze_excite_latent, py::arg("latent_channels"), py::arg("channels"),
        "The SE bottleneck width for a conv with `channels` output channels: latent_channels when >= 1, else "
        "max(1, int(latent_channels * channels)).");
  f.def("squeeze_excite", &alg::squeeze_excite, py::arg("x"), py::arg("w1"), py::arg("w2"),
        "The SE block on x [N, C, H, W]: x * sigmoid(relu(mean_hw(x) @ w1.T) @ w2.T)[:, :, None, None] with "
        "w1 [d, C], w2 [C, d].");
  f.def(
      "apply_stochastic_depth",
      [](Model& model, const py::kwargs& kwargs) {
        return static_cast<int64_t>(
            alg::apply_stochastic_depth(model, options_from_kwargs<alg::StochasticDepthOptions>(kwargs, "stochastic_depth"))
                .size());
      },
      py::arg("model"),
      "Stochastic-depth surgery on a tessera.Model (keyword arguments as for tessera.algorithms.StochasticDepth); "
      "returns how many residual gates it replaced.");
  f.def("stochastic_depth_drop_rates", &alg::stochastic_depth_drop_rates, py::arg("num_blocks"), py::arg("drop_rate"),
        py::arg("drop_distribution") = "linear",
        "The drop rate of each block: (i + 1) / num_blocks * drop_rate (linear) or drop_rate (uniform).");
  f.def(
      "stochastic_depth",
      [](const at::Tensor& branch, double drop_rate, const std::string& mode, bool training, const py::object& rng) {
        Rng own = py::isinstance<Rng>(rng) || rng.is_none() ? Rng(0) : rng_from(rng, "stochastic_depth");
        Rng& r = py::isinstance<Rng>(rng) ? rng.cast<Rng&>() : own;
        return alg::stochastic_depth(branch, drop_rate, mode, training, r);
      },
      py::arg("branch"), py::arg("drop_rate"), py::arg("mode") = "block", py::arg("training") = true,
      py::arg("rng") = py::none(),
      "The residual branch as a stochastic-depth gate passes it on, with draws from rng (a tessera.Rng advanced in "
      "place, or a seed; default 0): training, "
      "block mode keeps it iff floor(1 - p + u) = 1 (else branch * 0), sample mode multiplies example n by "
      "floor(1 - p + u_n); not training: branch * (1 - p).");
  f.def(
      "apply_weight_standardization",
      [](Model& model, const py::kwargs& kwargs) {
        return alg::apply_weight_standardization(
            model, options_from_kwargs<alg::WeightStandardizationOptions>(kwargs, "weight_standardization"));
      },
      py::arg("model"),
      "Weight-standardization surgery on a tessera.Model (keyword arguments as for "
      "tessera.algorithms.WeightStandardization); returns how many convolutions it replaced.");
  f.def("standardize_weight", &alg::standardize_weight, py::arg("weight"), py::arg("eps") = 1e-5,
        "(w - mean) / sqrt(var + eps) per output channel (dimension 0), population statistics over the others.");
  f.def(
      "apply_channels_last", [](Model& model) { return alg::apply_channels_last(model); }, py::arg("model"),
      "Channels-last on a tessera.Model: its 4-D parameters and buffers stored NHWC in place; returns how many.");
  f.def("to_channels_last", &alg::to_channels_last, py::arg("tensors"),
        "Stores each 4-D tensor of `tensors` (and its .grad) channels-last in place (the same tensor objects); "
        "returns how many were 4-D.");
  f.def(
      "clip_gradients",
      [](const std::vector<at::Tensor>& parameters, const std::string& clipping_type, double clipping_threshold)
          -> py::object {
        const at::Tensor total = alg::clip_gradients(parameters, clipping_type, clipping_threshold);
        return total.defined() ? py::cast(total) : py::none();
      },
      py::arg("parameters"), py::arg("clipping_type") = "norm", py::arg("clipping_threshold") = 1.0,
      "Gradient clipping in place on the .grad of `parameters` (a list of tensors; those without a gradient are "
      "skipped): 'norm' (global L2 norm, as torch.nn.utils.clip_grad_norm_), 'value' or 'adaptive' (AGC). "
      "Returns the norm before clipping for 'norm', else None.");
  f.def(
      "sam_gradients",
      [](const std::vector<at::Tensor>& parameters, const py::function& closure, double rho, double epsilon)
          -> py::object {
        const at::Tensor norm = alg::sam_gradients(parameters, [&] { closure(); }, rho, epsilon);
        return norm.defined() ? py::cast(norm) : py::none();
      },
      py::arg("parameters"), py::arg("closure"), py::arg("rho") = 0.05, py::arg("epsilon") = 1e-12,
      "SAM's gradient: with the .grad of `parameters` (a list of tensors; those without one take no part) at w, "
      "moves them to w + rho * g / (||g|| + epsilon) (not when ||g|| is not finite), calls closure(), which must "
      "zero the gradients and run the backward again, and puts the exact weights back. Returns ||g||, or None "
      "when no parameter has a gradient (closure is then not called).");
  f.def("compute_ema", &alg::compute_ema_by_name, py::arg("weights"), py::arg("averages"), py::arg("smoothing"),
        "averages <- smoothing * averages + (1 - smoothing) * weights, in place, on (name, tensor) lists matched by "
        "name (floating-point tensors; others are copied). tessera.functional.compute_ema wraps it for modules.");
  f.def("swa_update", &alg::swa_update_by_name, py::arg("weights"), py::arg("averages"), py::arg("count"),
        "averages <- (count * averages + weights) / (count + 1), in place, on (name, tensor) lists matched by name "
        "(floating-point tensors; others are copied); count is the number of snapshots already averaged. "
        "tessera.functional.swa_update wraps it for modules.");
  f.def("swa_annealed_lr", &alg::swa_annealed_lr, py::arg("start_lr"), py::arg("swa_lr"), py::arg("progress"),
        py::arg("strategy") = "linear",
        "SWA's learning rate: (1 - f) * start_lr + f * swa_lr, f = p ('linear') or (1 - cos(pi p)) / 2 ('cos'), "
        "p = progress clamped to [0, 1].");
  f.def(
      "ema_smoothing",
      [](const std::string& half_life, const std::string& update_interval) {
        return alg::ema_smoothing(
            alg::EMAOptions().half_life(Time::parse(half_life)).update_interval(Time::parse(update_interval)));
      },
      py::arg("half_life"), py::arg("update_interval") = "0ba",
      "The EMA decay per update for a half-life and an update interval in the same unit: 2^(-update_interval / "
      "half_life) ('0ba': one unit of half_life's unit).");
  f.def(
      "freeze_layers", [](Model& model, int64_t depth) { return alg::freeze_layers(model, nullptr, depth); },
      py::arg("model"), py::arg("depth"),
      "Freezes the first `depth` freezable layers of a tessera.Model (requires_grad off); returns the number frozen.");

  // ---- data sets as tensors -------------------------------------------------------------------------------
  d.def("synthetic", [](const py::kwargs& kwargs) {
    const auto ds = data::make_synthetic(options_from_kwargs<data::SyntheticOptions>(kwargs, "synthetic"));
    return whole_dataset(*ds);
  }, keep_doc("The 'synthetic' dataset of recipes as one Batch ('input', 'target').\n\n" + options_doc<data::SyntheticOptions>()));
  d.def("fashion_mnist", [](const py::kwargs& kwargs) {
    const auto ds = data::load_fashion_mnist(options_from_kwargs<data::FashionMnistOptions>(kwargs, "fashion_mnist"));
    return whole_dataset(*ds);
  }, keep_doc("Fashion-MNIST (Debian's dataset-fashion-mnist) as one Batch.\n\n" + options_doc<data::FashionMnistOptions>()));
}

}  // namespace tessera::python
