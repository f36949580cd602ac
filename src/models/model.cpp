// SlottedModule and the cross-entropy loss shared by the classifiers.
#include <tessera/models/model.h>

#include <algorithm>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <c10/util/Exception.h>

#include <tessera/error.h>

namespace tessera {
namespace {

std::string slot_names(const std::map<std::string, torch::nn::AnyModule>& slots) {
  if (slots.empty()) return "none";
  std::string out;
  for (const auto& [name, module] : slots) out += (out.empty() ? "" : ", ") + name;
  return out;
}

std::string shape(const at::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }

/// Per example of integer `targets` [N, ...]: how many positions have a target (not kIgnoreTarget), int64 [N].
at::Tensor targeted_per_example(const at::Tensor& targets) {
  const at::Tensor targeted = targets.ne(kIgnoreTarget);
  return targets.dim() == 1 ? targeted.to(at::kLong) : targeted.flatten(1).sum(1);
}

}  // namespace

torch::nn::AnyModule& SlottedModule::register_slot(const std::string& name, torch::nn::AnyModule module) {
  if (module.is_empty()) throw Error(fmt::format("register_slot(\"{}\"): the module is empty", name));
  if (slots_.count(name) != 0) {
    throw Error(fmt::format("register_slot(\"{}\"): a slot of that name exists already (slots: {})", name,
                            slot_names(slots_)));
  }
  register_module(name, module.ptr());
  return slots_.emplace(name, std::move(module)).first->second;
}

torch::nn::AnyModule& SlottedModule::slot(const std::string& name) {
  auto it = slots_.find(name);
  if (it == slots_.end()) {
    throw Error(
        fmt::format("{} has no slot \"{}\"; its slots are: {}", this->name(), name, slot_names(slots_)));
  }
  return it->second;
}

void SlottedModule::replace_slot(const std::string& name, torch::nn::AnyModule module) {
  auto& current = slot(name);
  if (module.is_empty()) throw Error(fmt::format("replace_slot(\"{}\"): the module is empty", name));
  replace_module(name, module.ptr());
  current = std::move(module);
}

namespace detail {
thread_local std::vector<SlotObservation*> slot_observations;
}  // namespace detail

void SlottedModule::report(const std::string& slot, const std::string& port, const at::Tensor& value) const {
  const std::vector<detail::SlotObservation*> observations = detail::slot_observations;  // (an observer may add one)
  for (const detail::SlotObservation* observation : observations) {
    const auto it = observation->prefixes.find(this);
    if (it != observation->prefixes.end()) observation->observer(it->second + slot, port, value);
  }
}

std::shared_ptr<void> Model::observe_layers(LayerObserver observer) {
  /// An observation in this thread's list for as long as it lives (taken out of that list when it goes, also when
  /// handles go out of order or on another thread).
  struct Installed {
    detail::SlotObservation observation;
    std::vector<detail::SlotObservation*>* list = nullptr;
    ~Installed() {
      if (list != nullptr) list->erase(std::remove(list->begin(), list->end(), &observation), list->end());
    }
  };
  auto installed = std::make_shared<Installed>();
  installed->observation.observer = std::move(observer);
  size_t slots = 0;
  const auto note = [&](const torch::nn::Module& module, const std::string& name) {
    if (const auto* slotted = dynamic_cast<const SlottedModule*>(&module)) {
      installed->observation.prefixes[slotted] = name.empty() ? std::string() : name + ".";
      slots += slotted->slots().size();
    }
  };
  note(*this, "");
  for (const auto& item : named_modules("", /*include_self=*/false)) note(*item.value(), item.key());
  if (slots == 0) return nullptr;
  installed->list = &detail::slot_observations;
  installed->list->push_back(&installed->observation);
  return installed;
}

at::Tensor Model::loss_terms(const Batch& batch) const {
  if (!loss_is_cross_entropy() || !batch.has(Batch::kTarget)) return {};
  const at::Tensor& targets = batch.target();
  const auto type = targets.defined() ? targets.scalar_type() : at::kFloat;
  if (at::isFloatingType(type) || at::isComplexType(type) || type == at::kBool || targets.dim() == 0) return {};
  return targeted_per_example(targets);
}

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets, Reduction reduction) {
  if (!logits.defined() || !targets.defined()) {
    throw InputError("cross_entropy: logits and targets must be defined tensors");
  }
  if (logits.dim() < 2) {
    throw InputError(fmt::format("cross_entropy: logits must have shape [N, C, ...], got {}", shape(logits)));
  }
  const auto type = targets.scalar_type();
  if (!at::isFloatingType(type) && !at::isComplexType(type)) {
    // Class indices [N, ...]: the logits' shape without the class dimension.
    bool ok = targets.dim() == logits.dim() - 1 && targets.size(0) == logits.size(0);
    for (int64_t d = 2; ok && d < logits.dim(); ++d) ok = targets.size(d - 1) == logits.size(d);
    if (!ok) {
      throw InputError(
          fmt::format("cross_entropy: integer targets of shape {} do not match logits of shape {}; expected "
                      "class indices "
                      "of the logits' shape without dimension 1",
                      shape(targets), shape(logits)));
    }
    const at::Tensor log_probs = at::log_softmax(logits, 1);
    const at::Tensor index = type == at::kLong ? targets : targets.to(at::kLong);
    switch (reduction) {
      case Reduction::Mean:
        return at::nll_loss_nd(log_probs, index, {}, at::Reduction::Mean);
      case Reduction::Sum:
        return at::nll_loss_nd(log_probs, index, {}, at::Reduction::Sum);
      case Reduction::None:
        return reduce_over_targets(at::nll_loss_nd(log_probs, index, {}, at::Reduction::None), index, reduction);
    }
  }
  if (targets.sizes() != logits.sizes()) {
    throw InputError(
        fmt::format("cross_entropy: dense targets of shape {} do not match logits of shape {}; expected the "
                    "logits' shape "
                    "(or integer class indices without dimension 1)",
                    shape(targets), shape(logits)));
  }
  // sum_c t_c log p_c per position; negated once after the reduction.
  const at::Tensor per = (at::log_softmax(logits, 1) * targets).sum(1);
  switch (reduction) {
    case Reduction::Mean:
      return per.mean().neg();
    case Reduction::Sum:
      return per.sum().neg();
    case Reduction::None:
      return per.dim() > 1 ? per.flatten(1).mean(1).neg() : per.neg();
  }
  return {};
}

at::Tensor reduce_over_targets(const at::Tensor& per, const at::Tensor& targets, Reduction reduction) {
  if (reduction == Reduction::Sum) return per.sum();
  if (reduction == Reduction::None && per.dim() == 1) return per;
  // The mean over all positions scaled by positions / targeted positions: exactly 1, so bitwise the plain mean,
  // when nothing is ignored.
  const bool mean = reduction == Reduction::Mean;
  const at::Tensor rows = mean ? per.reshape({-1}) : per.flatten(1);
  const at::Tensor targeted =
      (mean ? targets.ne(kIgnoreTarget).sum() : targeted_per_example(targets)).clamp_min(1).to(per.scalar_type());
  const at::Tensor scale = at::full_like(targeted, static_cast<double>(rows.size(-1))).div_(targeted);
  return (mean ? rows.mean() : rows.mean(1)).mul(scale);
}

std::string try_on_example(Model& model, const Batch& batch, const std::function<void(const Batch&)>& fn) {
  Batch moved;
  const auto params = model.parameters();
  if (params.empty()) {
    moved = batch;
  } else {
    for (const auto& [key, t] : batch.parts()) moved.set(key, t.defined() ? t.to(params.front().device()) : t);
  }
  const bool was_training = model.is_training();
  model.eval();
  std::string error;
  try {
    at::NoGradGuard no_grad;
    fn(moved);
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    error = e.what();
  }
  model.train(was_training);
  return error.substr(0, error.find('\n'));
}

std::string weights_fingerprint(const torch::nn::Module& module) {
  uint64_t h = 14695981039346656037ull;
  auto feed = [&h](const void* data, size_t n) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= bytes[i];
      h *= 1099511628211ull;
    }
  };
  auto feed_tensor = [&](const std::string& name, const at::Tensor& t) {
    feed(name.c_str(), name.size() + 1);
    const at::Tensor c = t.detach().to(at::kCPU).contiguous();
    feed(c.data_ptr(), c.nbytes());
  };
  for (const auto& p : module.named_parameters(true)) feed_tensor(p.key(), p.value());
  for (const auto& b : module.named_buffers(true)) feed_tensor(b.key(), b.value());
  return fmt::format("{:016x}", h);
}

}  // namespace tessera
