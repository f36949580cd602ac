#include <tessera/surgery.h>

#include <tuple>
#include <unordered_set>

#include <torch/nn/modules/batchnorm.h>

namespace tessera {

namespace {
template <class Impl>
std::optional<BatchNormParts> parts_of(torch::nn::Module& module, std::vector<int64_t> input_dims) {
  auto* bn = module.as<Impl>();
  if (bn == nullptr) return std::nullopt;
  return BatchNormParts{&bn->options, std::move(input_dims), bn->weight, bn->bias, bn->running_mean,
                        bn->running_var, bn->num_batches_tracked};
}
}  // namespace

std::optional<BatchNormParts> find_batch_norm(torch::nn::Module& module) {
  if (auto parts = parts_of<torch::nn::BatchNorm1dImpl>(module, {2, 3})) return parts;
  if (auto parts = parts_of<torch::nn::BatchNorm2dImpl>(module, {4})) return parts;
  return parts_of<torch::nn::BatchNorm3dImpl>(module, {5});
}

int64_t replace_slots(torch::nn::Module& model, optim::Optimizer* optimizer, const SlotPolicy& policy) {
  const std::vector<at::Tensor> before = model.parameters();
  // Snapshot of the tree first: replacements must not be visited again. The snapshot keeps every module alive, and
  // the modules inside a replaced slot (a whole network replaced by another: gated_linear_units) are skipped, so the
  // policy never sees a module that has left the model.
  std::vector<std::tuple<std::string, SlottedModule*, std::shared_ptr<torch::nn::Module>>> owners;
  if (auto* self = dynamic_cast<SlottedModule*>(&model)) owners.emplace_back("", self, nullptr);
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (auto* slotted = dynamic_cast<SlottedModule*>(item.value().get())) owners.emplace_back(item.key(), slotted, item.value());
  }
  std::unordered_set<const torch::nn::Module*> detached;
  int64_t replaced = 0;
  for (const auto& [prefix, owner, keep_alive] : owners) {
    if (detached.count(owner) != 0) continue;
    std::vector<std::string> names;
    for (const auto& kv : owner->slots()) names.push_back(kv.first);
    for (const auto& name : names) {
      torch::nn::AnyModule& current = owner->slot(name);
      std::optional<torch::nn::AnyModule> next = policy(prefix.empty() ? name : prefix + "." + name, current);
      if (!next) continue;
      next->ptr()->train(current.ptr()->is_training());  // a new module is made in training mode
      std::unordered_set<const torch::nn::Module*> kept;  // modules the replacement shares with the replaced one
      for (const auto& inner : next->ptr()->modules(/*include_self=*/true)) kept.insert(inner.get());
      for (const auto& inner : current.ptr()->modules(/*include_self=*/true)) {
        if (kept.count(inner.get()) == 0) detached.insert(inner.get());
      }
      owner->replace_slot(name, std::move(*next));
      ++replaced;
    }
  }
  if (optimizer != nullptr && replaced > 0) sync_optimizer(*optimizer, before, model.named_parameters());
  return replaced;
}

int64_t count_slots(torch::nn::Module& model, const std::function<bool(torch::nn::Module&)>& matches) {
  int64_t n = 0;
  for (const auto& module : model.modules(/*include_self=*/true)) {
    const auto* slotted = dynamic_cast<SlottedModule*>(module.get());
    if (slotted == nullptr) continue;
    for (const auto& [name, slot] : slotted->slots()) n += matches(*slot.ptr());
  }
  return n;
}

SurgeryCount surgery(Model& model, const Algorithm& algorithm, optim::Optimizer* optimizer, bool dry_run,
                     const std::string& key, const std::function<int64_t()>& on_slots) {
  if (const auto external = model.external_surgery(algorithm, optimizer, dry_run)) {
    const auto it = external->find(key);
    return {it == external->end() ? 0 : it->second, true};
  }
  return {on_slots(), false};
}

void sync_optimizer(optim::Optimizer& optimizer, const std::vector<at::Tensor>& before,
                    const optim::NamedParameters& after) {
  std::unordered_set<const void*> after_ids, before_ids;
  for (const auto& item : after) after_ids.insert(item.value().unsafeGetTensorImpl());
  for (const auto& p : before) before_ids.insert(p.unsafeGetTensorImpl());
  std::vector<at::Tensor> gone;
  for (const auto& p : before) {
    if (!after_ids.count(p.unsafeGetTensorImpl())) gone.push_back(p);
  }
  if (!gone.empty()) optimizer.remove_parameters(gone);
  for (const auto& item : after) {
    const at::Tensor& p = item.value();
    if (!before_ids.count(p.unsafeGetTensorImpl()) && !optimizer.contains(p)) optimizer.add_parameter(item.key(), p);
  }
}

}  // namespace tessera
