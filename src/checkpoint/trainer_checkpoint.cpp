// Trainer::save_checkpoint / load_checkpoint: the run state <-> a checkpoint file (checkpoint_file.h).
//
// Tensors are named "model/<name>", "optimizer/<param name>/<slot>", "algorithm/<i>/<key>",
// "callback/<i>/<key>" and "generator/<device>"; everything else is in the JSON metadata.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <torch/autograd.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <filesystem>
#include <mutex>
#include <optional>
#include <set>

#include <tessera/safetensors.h>
#include <tessera/trainer.h>
#include <tessera/version.h>

#include "checkpoint/checkpoint_file.h"
#include "distributed/data_parallel.h"

namespace tessera {

namespace {

using nlohmann::json;
using checkpoint::File;

constexpr int kFormatVersion = 1;

std::string torch_version() {
  return fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
}

/// Torch's default generators: "cpu", and "cuda:<i>" for each visible GPU.
std::vector<std::pair<std::string, at::Generator>> torch_generators() {
  std::vector<std::pair<std::string, at::Generator>> out;
  out.emplace_back("cpu", at::globalContext().defaultGenerator(at::Device(at::kCPU)));
  if (torch::cuda::is_available()) {
    const auto n = static_cast<int>(torch::cuda::device_count());
    for (int i = 0; i < n; ++i) {
      out.emplace_back(fmt::format("cuda:{}", i),
                       at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i))));
    }
  }
  return out;
}

/// Where a checkpoint keeps rank `rank`'s state of torch's generator `name` (rank 0's: "generator/<name>"), or of
/// the project's generator for name "tessera" (rank 0's: the metadata's "rng").
std::string rank_generator_key(const std::string& name, int rank) {
  return fmt::format("generator/{}@rank{}", name, rank);
}

/// The seed of a rank that resumes a checkpoint saved without it (more ranks than the saving run): a function
/// of the run's seed, the rank and the batch, so that ranks draw differently and a rerun draws the same.
uint64_t resume_seed(uint64_t seed, int rank, int64_t batch) {
  uint64_t h = seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(rank);
  h = (h ^ (h >> 31)) * 0xBF58476D1CE4E5B9ULL + static_cast<uint64_t>(batch);
  return h ^ (h >> 29);
}

/// Model parameters and buffers by name, in the module's order.
std::vector<std::pair<std::string, at::Tensor>> named_weights(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model.named_parameters(true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : model.named_buffers(true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::string shape_text(const at::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }

/// Names listed to a user: the first few, then a count.
std::string first_names(const std::vector<std::string>& names) {
  const size_t shown = std::min<size_t>(names.size(), 5);
  std::string out = fmt::format("{}", fmt::join(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(shown), ", "));
  if (names.size() > shown) out += fmt::format(" and {} more", names.size() - shown);
  return out;
}

/// Copies the checkpoint's weights into the model (in place, so optimizer identities stay valid), after checking them
/// all: a refused load leaves the model as it was. `fix_strict`: how the user turns strict off, in the API they
/// called. `convert_floats`: a floating-point weight of another floating-point dtype is converted (weights from a
/// safetensors file, often float16 or bfloat16); otherwise dtypes must match. Returns, when not strict and the names
/// differ, what was left out on either side ("" otherwise): a model fine-tuned from another's weights logs it.
std::string load_weights(torch::nn::Module& model, const File& file, const std::string& path, bool strict,
                         const std::string& fix_strict, bool convert_floats) {
  std::map<std::string, at::Tensor> saved;
  const std::string prefix = "model/";
  for (const auto& [name, t] : file.tensors) {
    if (name.compare(0, prefix.size(), prefix) == 0) saved.emplace(name.substr(prefix.size()), t);
  }
  std::vector<std::string> missing, mismatched;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (model's, file's)
  std::vector<std::string> loaded;
  std::set<std::string> seen;
  for (auto& [name, target] : named_weights(model)) {
    seen.insert(name);
    auto it = saved.find(name);
    if (it == saved.end()) {
      missing.push_back(name);
      continue;
    }
    const at::Tensor& src = it->second;
    const bool convertible =
        convert_floats && at::isFloatingType(src.scalar_type()) && at::isFloatingType(target.scalar_type());
    if (src.sizes() != target.sizes() || (src.scalar_type() != target.scalar_type() && !convertible)) {
      mismatched.push_back(fmt::format("{} (checkpoint {} {}, model {} {})", name, shape_text(src),
                                       c10::toString(src.scalar_type()), shape_text(target),
                                       c10::toString(target.scalar_type())));
      continue;
    }
    copies.emplace_back(target, src);
    loaded.push_back(name);
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, t] : saved) {
    if (!seen.count(name)) unexpected.push_back(name);
  }
  if (!mismatched.empty()) {
    throw InputError(fmt::format("checkpoint '{}': shapes differ from the model's: {}", path, first_names(mismatched)));
  }
  if (strict && (!missing.empty() || !unexpected.empty())) {
    std::string what;
    if (!missing.empty()) what += "the model has weights the checkpoint lacks: " + first_names(missing);
    if (!unexpected.empty()) what += std::string(what.empty() ? "" : "; ") + "the checkpoint has weights the model lacks: " + first_names(unexpected);
    throw InputError(fmt::format("checkpoint '{}' does not fit the model ({}); {} to load the weights both have",
                                 path, what, fix_strict));
  }
  if (loaded.empty()) throw InputError(fmt::format("checkpoint '{}': no weight matches the model's", path));
  at::NoGradGuard no_grad;
  for (auto& [target, src] : copies) target.copy_(src);
  if (missing.empty() && unexpected.empty()) return "";
  std::string note = fmt::format("checkpoint '{}': loaded {} of the model's {} weights (strict: false)", path,
                                 loaded.size(), seen.size());
  if (!missing.empty()) note += "; kept as initialised: " + first_names(missing);
  if (!unexpected.empty()) note += "; not in the model, left out: " + first_names(unexpected);
  return note;
}

/// Creates the folder `path` goes in when it does not exist yet (issue 20: the write failed naming its temporary
/// file); `caller` names the call in the error.
void create_parent_folder(const std::string& path, const std::string& caller) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) throw Error(caller + ": cannot create the folder '" + parent.string() + "' for " + path + ": " + ec.message());
}

/// Saves a StateDict under `prefix`; its keys go to the metadata.
json save_state_dict(const StateDict& state, const std::string& prefix, File& file) {
  json keys = json::array();
  for (const auto& [key, t] : state) {
    keys.push_back(key);
    file.tensors[prefix + key] = t;
  }
  return keys;
}

/// [{name, keys}] for algorithms or callbacks; their tensors go under "<kind>/<i>/<key>".
template <class Plugin>
json save_plugins(const std::vector<std::shared_ptr<Plugin>>& plugins, const char* kind, File& file) {
  json out = json::array();
  for (size_t i = 0; i < plugins.size(); ++i) {
    out.push_back({{"name", plugins[i]->name()},
                   {"keys", save_state_dict(plugins[i]->state_dict(), fmt::format("{}/{}/", kind, i), file)}});
  }
  return out;
}

/// The state dict saved under `prefix`. With a `device`, tensors with at least one dimension are mapped there
/// (an algorithm's buffers live with the model); scalars stay on the host, where bookkeeping reads them.
StateDict load_state_dict(const json& keys, const std::string& prefix, const File& file, const std::string& path,
                          std::optional<c10::Device> device = std::nullopt) {
  StateDict out;
  for (const auto& key : keys) {
    const at::Tensor& t = file.tensor(prefix + key.get<std::string>(), path);
    out[key.get<std::string>()] = device && t.dim() > 0 ? to_device(t, *device) : t;
  }
  return out;
}

}  // namespace

void Trainer::save_checkpoint(const std::string& path) const {
  check_callable("save_checkpoint", DuringFit::AtBoundary);
  const State& s = state_;
  // Deferred read-back (CUDA): refuse weights that a non-finite loss went into, and save the latest loss
  // (fit() reads both back before its own checkpoints; this covers a call from a callback).
  if (nonfinite_.recorded()) {
    if (auto bad = nonfinite_.first()) throw nonfinite_error(bad->batch, bad->loss);
  }
  std::map<std::string, double> metrics = s.metrics;
  if (pending_loss_.defined()) metrics["loss/train/total"] = pending_loss_.item<double>();
  File file;
  json& m = file.meta;
  m["format"] = kFormatVersion;
  m["tessera_version"] = TESSERA_VERSION_STRING;
  m["torch_version"] = torch_version();
  m["recipe"] = recipe_text_;
  m["seed"] = s.seed;
  m["rank"] = s.rank;
  m["world_size"] = s.world_size;
  m["timestamp"] = json(s.timestamp);
  m["max_duration"] = s.time.max_duration.str();
  m["data"] = {{"epoch", s.timestamp.epoch},
               {"batch_in_epoch", s.timestamp.batch_in_epoch},
               {"sample_in_epoch", s.timestamp.sample_in_epoch},
               {"shuffle_seed", s.seed},
               {"batches_per_epoch", s.time.batches_per_epoch},
               {"samples_per_epoch", s.time.samples_per_epoch},
               {"batch_size", s.train_dataloader->batch_size()}};

  // model
  json params = json::array(), buffers = json::array();
  for (const auto& item : s.model->named_parameters(true)) {
    params.push_back(item.key());
    file.tensors["model/" + item.key()] = item.value();
  }
  for (const auto& item : s.model->named_buffers(true)) {
    buffers.push_back(item.key());
    file.tensors["model/" + item.key()] = item.value();
  }
  m["model"] = {{"parameters", params}, {"buffers", buffers}};

  // optimizer: groups and state by parameter name
  std::map<const void*, std::string> name_of;
  for (const auto& item : s.model->named_parameters(true)) name_of[item.value().unsafeGetTensorImpl()] = item.key();
  auto param_name = [&](const at::Tensor& p) {
    auto it = name_of.find(p.unsafeGetTensorImpl());
    if (it == name_of.end()) throw Error("checkpoint: the optimizer holds a parameter that is not in the model");
    return it->second;
  };
  const optim::Optimizer& opt = *s.optimizer;
  json groups = json::array();
  for (const auto& g : opt.param_groups()) {
    json names = json::array();
    for (const auto& p : g.params) names.push_back(param_name(p));
    groups.push_back({{"params", names}, {"initial_lr", g.initial_lr}, {"lr", g.lr}, {"weight_decay", g.weight_decay}});
  }
  json opt_state = json::object();
  for (const auto& g : opt.param_groups()) {
    for (const auto& p : g.params) {
      auto it = opt.state().find(p.unsafeGetTensorImpl());
      if (it == opt.state().end()) continue;
      const std::string name = param_name(p);
      json defined = json::array();
      for (size_t i = 0; i < it->second.size(); ++i) {
        defined.push_back(it->second[i].defined());
        if (it->second[i].defined()) file.tensors[fmt::format("optimizer/{}/{}", name, i)] = it->second[i];
      }
      opt_state[name] = defined;
    }
  }
  m["optimizer"] = {{"name", opt.name()}, {"step_count", opt.step_count()}, {"groups", groups}, {"state", opt_state}};

  // algorithms, callbacks and schedules, in recipe order
  m["algorithms"] = save_plugins(engine_->algorithms(), "algorithm", file);
  m["callbacks"] = save_plugins(engine_->callbacks(), "callback", file);
  m["schedulers"] = save_plugins(s.schedulers, "scheduler", file);

  // generators: the project's and torch's
  m["rng"] = {{"key", s.rng.key()}, {"counter", s.rng.counter()}};
  json gens = json::array();
  for (auto& [name, gen] : torch_generators()) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    file.tensors["generator/" + name] = gen.get_state();
    gens.push_back(name);
  }
  for (const auto& [key, state] : rank_generators_) file.tensors[key] = state;  // data-parallel: ranks 1..
  m["generators"] = gens;

  // the trainer's own bookkeeping; metric values as a float64 tensor (exact, and NaN/Inf survive)
  json metric_names = json::array();
  std::vector<double> metric_values;
  for (const auto& [key, value] : metrics) {
    metric_names.push_back(key);
    metric_values.push_back(value);
  }
  file.tensors["trainer/metrics"] =
      at::tensor(at::ArrayRef<double>(metric_values), at::TensorOptions().dtype(at::kDouble));
  m["trainer"] = {{"previous_timestamp", json(previous_timestamp_)},
                  {"last_eval_batch", last_eval_batch_},
                  {"metrics", metric_names},
                  {"skipped_batches", skipped_batches_},
                  {"skipped_steps", skipped_steps_},
                  {"microbatch_size", s.microbatch_size},
                  {"fit_complete", s.fit_complete}};
  // Written while evaluations ran (a stop signal): the run resumed from it does those not finished first.
  if (evaluating_) m["trainer"]["pending_evaluations"] = event_name(*evaluating_);
  if (scaler_) m["grad_scaler"] = save_state_dict(scaler_->state_dict(), "grad_scaler/", file);
  create_parent_folder(path, "save_checkpoint");
  checkpoint::write_file(file, path);
}

void Trainer::export_weights(const std::string& path) const {
  check_callable("export_weights", DuringFit::AtBoundary);
  Safetensors contents;
  for (const auto& [name, t] : named_weights(*state_.model)) contents.tensors.emplace_back(name, t);
  const Timestamp& ts = state_.timestamp;
  contents.metadata = {{"format", "pt"},  // what Hugging Face's loaders look for
                       {"producer", std::string("tessera ") + TESSERA_VERSION_STRING},
                       {"epoch", std::to_string(ts.epoch)},
                       {"batch", std::to_string(ts.batch)}};
  create_parent_folder(path, "export_weights");
  save_safetensors(path, contents);
}

void Trainer::load_checkpoint(const std::string& path, bool weights_only, bool strict) {
  check_callable("load_checkpoint", DuringFit::Refused);
  engine_->run_event(Event::BeforeLoad, state_);
  loading_by_call_ = true;
  try {
    std::vector<std::string> rejected;
    const auto [file_path, file] = checkpoint::read_file_or_newest(path, "load_checkpoint", &rejected);
    for (const auto& r : rejected) engine_->logger().warn(r + "; using an older checkpoint");
    apply_checkpoint(file, file_path, weights_only, strict);
    paused_ = false;  // a run paused by fit(until) is replaced: the next fit starts (FitStart) where the file says
  } catch (...) {
    loading_by_call_ = false;
    throw;
  }
  loading_by_call_ = false;
  engine_->run_event(Event::AfterLoad, state_);
}

std::string Trainer::how_to_set(const std::string& option, const std::string& value) const {
  if (loading_by_call_) return fmt::format("pass {}={} to load_checkpoint", option, value);
  if (!recipe_text_.empty()) return fmt::format("set checkpoint.{}={} (in the recipe or on the command line)", option, value);
  return fmt::format("set {0}={1} in the Trainer's checkpoint options (C++: CheckpointOptions().{0}({1}))", option,
                     value);
}

void Trainer::apply_checkpoint(const File& file, const std::string& path, bool weights_only, bool strict) {
  const json& m = file.meta;
  State& s = state_;
  // Whatever the deferred loop had not read back belongs to the weights being replaced.
  auto forget_pending = [&] {
    pending_loss_ = at::Tensor();
    nonfinite_.reset();
  };
  bool changing = false;
  try {
    const bool safetensors = m.contains("safetensors");  // weights alone, from another program or export_weights
    if (safetensors && !weights_only) {
      throw InputError(fmt::format("checkpoint '{}' is a safetensors file: it holds weights only, not a run to "
                                   "resume; {} to load them",
                                   path, how_to_set("weights_only", "true")));
    }
    if (!safetensors && m.at("format").get<int>() != kFormatVersion) {
      throw CheckpointError(fmt::format("checkpoint '{}': format {} is not supported (this Tessera reads format {})",
                                        path, m.at("format").get<int>(), kFormatVersion));
    }
    if (weights_only) {
      const std::string note = load_weights(*s.model, file, path, strict, how_to_set("strict", "false"), safetensors);
      if (!note.empty()) engine_->logger().info(note);
      forget_pending();
      loaded_checkpoint_ = path;
      loaded_weights_only_ = true;
      return;
    }
    // A full resume must fit this run exactly, or the resumed run would silently differ: check everything
    // before changing anything.
    const json& data = m.at("data");
    if (data.at("batches_per_epoch").get<int64_t>() != s.time.batches_per_epoch ||
        data.at("samples_per_epoch").get<int64_t>() != s.time.samples_per_epoch) {
      throw InputError(fmt::format(
          "checkpoint '{}' was taken with {} samples in {} batches per epoch, this run has {} in {}: the data or "
          "batch size changed, so the run cannot resume exactly ({} to load the weights alone)",
          path, data.at("samples_per_epoch").get<int64_t>(), data.at("batches_per_epoch").get<int64_t>(),
          s.time.samples_per_epoch, s.time.batches_per_epoch, how_to_set("weights_only", "true")));
    }
    // Batches of 16 and of 17 from 160 examples are both 10 batches of 160 examples per epoch, but not the
    // same ones.
    const int64_t saved_batch = data.value("batch_size", int64_t{0}),
                  batch = s.train_dataloader->batch_size();
    if (saved_batch > 0 && batch > 0 && saved_batch != batch) {
      throw InputError(
          fmt::format("checkpoint '{}' was taken with batches of {} examples, this run's are of {}: the "
                      "batch size changed, so the run cannot resume exactly ({} to load the weights "
                      "alone)",
                      path, saved_batch, batch, how_to_set("weights_only", "true")));
    }
    if (m.at("seed").get<uint64_t>() != s.seed) {
      throw InputError(fmt::format("checkpoint '{}' was taken with seed {}, this run has seed {}: resume with the "
                                   "same seed (or {} to load the weights alone)",
                                   path, m.at("seed").get<uint64_t>(), s.seed, how_to_set("weights_only", "true")));
    }
    const auto& algos = engine_->algorithms();
    std::vector<std::string> saved_algos, run_algos;
    for (const auto& a : m.at("algorithms")) saved_algos.push_back(a.at("name").get<std::string>());
    for (const auto& a : algos) run_algos.push_back(a->name());
    if (saved_algos != run_algos) {
      throw InputError(fmt::format("checkpoint '{}' was taken with algorithms [{}], this run has [{}]: resume with "
                                   "the same algorithms in the same order (or {})",
                                   path, fmt::join(saved_algos, ", "), fmt::join(run_algos, ", "),
                                   how_to_set("weights_only", "true")));
    }
    // A schedule with state (plateau) resumes from its own entry: the same name at the same place in
    // schedulers:.
    const json no_schedulers = json::array();
    const json& saved_schedulers = m.contains("schedulers") ? m.at("schedulers") : no_schedulers;
    auto saved_schedule = [&](size_t i) {
      return i < saved_schedulers.size() &&
             saved_schedulers[i].at("name").get<std::string>() == s.schedulers[i]->name();
    };
    for (size_t i = 0; i < s.schedulers.size(); ++i) {
      if (!saved_schedule(i) && !s.schedulers[i]->state_dict().empty()) {
        throw InputError(
            fmt::format("checkpoint '{}' has no state for schedulers[{}] ({}): it was taken with other "
                        "schedules; resume with the schedules it was taken with (or {})",
                        path, i, s.schedulers[i]->name(), how_to_set("weights_only", "true")));
      }
    }
    optim::Optimizer& opt = *s.optimizer;
    const json& o = m.at("optimizer");
    if (o.at("name").get<std::string>() != opt.name()) {
      throw InputError(fmt::format("checkpoint '{}' was taken with optimizer {}, this run uses {}", path,
                                   o.at("name").get<std::string>(), opt.name()));
    }
    if (o.at("groups").size() != opt.param_groups().size()) {
      throw InputError(fmt::format("checkpoint '{}' was taken with {} optimizer parameter groups, this run has {}: "
                                   "resume with the optimizer's groups as they were (or {})",
                                   path, o.at("groups").size(), opt.param_groups().size(),
                                   how_to_set("weights_only", "true")));
    }
    // optimizer: groups and state, by parameter name (the model's tensors keep their identity when loaded)
    std::map<std::string, at::Tensor> params;
    for (const auto& item : s.model->named_parameters(true)) params.emplace(item.key(), item.value());
    auto param = [&](const std::string& name) {
      auto it = params.find(name);
      if (it == params.end()) {
        throw InputError(fmt::format("checkpoint '{}': the optimizer state names parameter \"{}\", which this model "
                                     "does not have",
                                     path, name));
      }
      return it->second;
    };
    // The groups' selectors come from this run's optimizer (checked above to have as many groups): they say where
    // parameters added later go. A file written before groups had a weight decay takes this run's.
    const auto& saved_groups = o.at("groups");
    std::vector<optim::ParamGroup> groups;
    for (size_t i = 0; i < saved_groups.size(); ++i) {
      const auto& g = saved_groups[i];
      optim::ParamGroup group;
      for (const auto& name : g.at("params")) group.params.push_back(param(name.get<std::string>()));
      group.initial_lr = g.at("initial_lr").get<double>();
      group.lr = g.at("lr").get<double>();
      group.weight_decay = g.contains("weight_decay") ? g.at("weight_decay").get<double>()
                                                      : opt.param_groups()[i].weight_decay;
      group.selector = opt.param_groups()[i].selector;
      groups.push_back(std::move(group));
    }
    std::unordered_map<const void*, std::vector<at::Tensor>> optimizer_state;
    for (const auto& [name, defined] : o.at("state").items()) {
      const at::Tensor p = param(name);
      std::vector<at::Tensor> slots;
      for (size_t i = 0; i < defined.size(); ++i) {
        if (!defined[i].get<bool>()) {
          slots.emplace_back();
          continue;
        }
        const at::Tensor& saved = file.tensor(fmt::format("optimizer/{}/{}", name, i), path);
        // Step counters live on the CPU; moment buffers live with their parameter (on its device: a file
        // written on CUDA resumes on the CPU and the other way round).
        const bool counter = saved.dim() == 0 && !saved.is_floating_point();
        if (!counter && saved.sizes() == p.sizes()) {
          // A moment buffer takes its parameter's memory layout (the file holds logical order): after channels_last
          // it stays NHWC like the parameter and its gradient, on the same fast elementwise path as before.
          slots.push_back(at::empty_like(p, saved.options().device(p.device()), at::MemoryFormat::Preserve).copy_(saved));
          continue;
        }
        slots.push_back(counter || p.device().is_cpu() ? saved.clone() : to_device(saved, p.device()));
      }
      optimizer_state[p.unsafeGetTensorImpl()] = std::move(slots);
    }

    // Read and checked (load_weights checks before it copies): from here on the trainer changes. A failure
    // now (a plugin's state that does not fit) leaves it half loaded, so it refuses to go on
    // (check_callable).
    const std::string note = load_weights(*s.model, file, path, strict, how_to_set("strict", "false"), false);
    changing = true;
    if (!note.empty()) engine_->logger().info(note);

    opt.param_groups() = std::move(groups);
    opt.state() = std::move(optimizer_state);
    opt.set_step_count(o.at("step_count").get<int64_t>());

    // algorithms (same order, checked above) and callbacks (matched by name, in order; extra ones start fresh)
    const json& saved_algorithms = m.at("algorithms");
    for (size_t i = 0; i < algos.size(); ++i) {
      algos[i]->load_state_dict(
          load_state_dict(saved_algorithms[i].at("keys"), fmt::format("algorithm/{}/", i), file, path, s.device));
    }
    const json& saved_callbacks = m.at("callbacks");
    std::vector<bool> used(saved_callbacks.size(), false);
    for (const auto& cb : engine_->callbacks()) {
      for (size_t i = 0; i < saved_callbacks.size(); ++i) {
        if (used[i] || saved_callbacks[i].at("name").get<std::string>() != cb->name()) continue;
        used[i] = true;
        cb->load_state_dict(load_state_dict(saved_callbacks[i].at("keys"), fmt::format("callback/{}/", i), file, path));
        break;
      }
    }

    for (size_t i = 0; i < s.schedulers.size(); ++i) {
      if (saved_schedule(i)) {
        s.schedulers[i]->load_state_dict(
            load_state_dict(saved_schedulers[i].at("keys"), fmt::format("scheduler/{}/", i), file, path));
      }
    }

    // time, generators, bookkeeping
    s.timestamp = m.at("timestamp").get<Timestamp>();
    s.rng.set_state(m.at("rng").at("key").get<uint64_t>(), m.at("rng").at("counter").get<uint64_t>());
    if (s.rank > 0) {  // data-parallel: this rank's own stream (see the torch generators below)
      auto own = file.tensors.find(rank_generator_key("tessera", s.rank));
      if (own != file.tensors.end() && own->second.numel() == 16) {
        const at::Tensor words = own->second.contiguous().view(at::kLong);
        s.rng.set_state(static_cast<uint64_t>(words[0].item<int64_t>()), static_cast<uint64_t>(words[1].item<int64_t>()));
      } else {
        s.rng = Rng(resume_seed(s.seed, s.rank, s.timestamp.batch), {kAlgorithmStream});
      }
    }
    for (auto& [name, gen] : torch_generators()) {
      std::lock_guard<std::mutex> lock(gen.mutex());
      if (s.rank > 0) {  // data-parallel: this rank's own state; a rank the saving run did not have gets a new seed
        auto own = file.tensors.find(rank_generator_key(name, s.rank));
        if (own != file.tensors.end()) {
          gen.set_state(own->second);
        } else {
          gen.set_current_seed(resume_seed(s.seed, s.rank, s.timestamp.batch));
        }
        continue;
      }
      auto it = file.tensors.find("generator/" + name);
      if (it == file.tensors.end()) continue;  // a GPU that the saving run did not have
      gen.set_state(it->second);
    }
    restored_generators_ = true;
    const json& t = m.at("trainer");
    previous_timestamp_ = t.at("previous_timestamp").get<Timestamp>();
    last_eval_batch_ = t.at("last_eval_batch").get<std::vector<int64_t>>();
    const auto metric_names = t.at("metrics").get<std::vector<std::string>>();
    const at::Tensor& metric_values = file.tensor("trainer/metrics", path);
    if (metric_values.scalar_type() != at::kDouble || metric_values.numel() != static_cast<int64_t>(metric_names.size())) {
      throw CheckpointError(fmt::format("checkpoint '{}': the metrics do not match their names", path));
    }
    s.metrics.clear();
    for (size_t i = 0; i < metric_names.size(); ++i) {
      s.metrics[metric_names[i]] = metric_values.data_ptr<double>()[i];
    }
    // Complete for this run too: resumed with a longer max_duration, a completed run trains on.
    s.fit_complete = t.value("fit_complete", false) && s.time.reached(s.timestamp, s.time.max_duration);
    pending_evaluations_.reset();
    if (t.contains("pending_evaluations")) {
      pending_evaluations_ = event_from_name(t.at("pending_evaluations").get<std::string>());
      if (pending_evaluations_ != Event::BatchEnd && pending_evaluations_ != Event::EpochEnd &&
          pending_evaluations_ != Event::FitEnd) {
        throw CheckpointError(
            fmt::format("checkpoint '{}': pending_evaluations is \"{}\"; expected batch_end, "
                        "epoch_end or fit_end",
                        path, t.at("pending_evaluations").get<std::string>()));
      }
    }
    skipped_batches_ = t.at("skipped_batches").get<int64_t>();
    skipped_steps_ = t.value("skipped_steps", int64_t{0});
    // microbatch_size auto: the size found so far holds for the rest of the run.
    if (options_.microbatch_size().is_auto()) s.microbatch_size = t.value("microbatch_size", int64_t{0});
    if (scaler_ && m.contains("grad_scaler")) {
      scaler_->load_state_dict(load_state_dict(m.at("grad_scaler"), "grad_scaler/", file, path));
    } else if (scaler_) {
      engine_->logger().warn(fmt::format("checkpoint '{}' has no loss-scaler state (its run did not scale the loss); "
                                         "the scaler starts at its initial scale", path));
    }
  } catch (const json::exception& e) {
    if (changing) load_failure_ = fmt::format("'{}': {}", path, e.what());
    throw CheckpointError(fmt::format("checkpoint '{}': the metadata is malformed: {}", path, e.what()));
  } catch (const std::exception& e) {
    if (changing) load_failure_ = fmt::format("'{}': {}", path, e.what());
    throw;
  }
  forget_pending();
  loaded_checkpoint_ = path;
  loaded_weights_only_ = false;
}

std::map<std::string, at::Tensor> Trainer::gather_rank_generators() {
  std::map<std::string, at::Tensor> out;
  // The project's generator (State::rng, seeded per rank): its key and counter as 16 bytes.
  const at::Tensor words = at::tensor(std::vector<int64_t>{static_cast<int64_t>(state_.rng.key()),
                                                           static_cast<int64_t>(state_.rng.counter())});
  const std::vector<at::Tensor> rngs = ddp_->all_gather_bytes(words.view(at::kByte));
  for (int r = 1; r < static_cast<int>(rngs.size()); ++r) out[rank_generator_key("tessera", r)] = rngs[static_cast<size_t>(r)];
  for (auto& [name, gen] : torch_generators()) {
    at::Tensor state;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      state = gen.get_state();
    }
    const std::vector<at::Tensor> all = ddp_->all_gather_bytes(state);
    for (int r = 1; r < static_cast<int>(all.size()); ++r) out[rank_generator_key(name, r)] = all[static_cast<size_t>(r)];
  }
  return out;
}

}  // namespace tessera
