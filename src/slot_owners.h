#pragma once
/// Private helper for surgeries that wrap a layer and keep it in a slot of the wrapper (blurpool's BlurConv2d keeps
/// its conv in slot "conv"; factorize's modules keep their factors in "module0" and "module1"). Other surgeries must
/// reach those layers (weight standardization standardizes the conv inside a BlurConv2d), but the surgery that made
/// the wrapper must not wrap them again when it is applied a second time.
#include <set>

#include <torch/nn/module.h>

#include <tessera/models/model.h>

namespace tessera::detail {

/// The modules sitting in the slots of the modules of `model` (the model itself included) whose type is one of
/// `Wrappers` (module implementation types, such as BlurConv2dImpl).
template <typename... Wrappers>
std::set<const torch::nn::Module*> slots_of(torch::nn::Module& model) {
  std::set<const torch::nn::Module*> out;
  auto note = [&](const torch::nn::Module& m) {
    if (!((m.as<Wrappers>() != nullptr) || ...)) return;
    if (const auto* slotted = dynamic_cast<const SlottedModule*>(&m)) {
      for (const auto& [name, slot] : slotted->slots()) out.insert(slot.ptr().get());
    }
  };
  note(model);  // (modules(include_self) needs the model in a shared_ptr; a functional call may pass one on the stack)
  for (const auto& m : model.modules(/*include_self=*/false)) note(*m);
  return out;
}

}  // namespace tessera::detail
