#pragma once
/// The protocol between a residual block and the module in its `residual_gate` slot that lets the block skip
/// computing a residual branch the gate would drop (stochastic depth's block mode: algorithms/stochastic_depth).
///
/// A block (tessera::BasicBlock, or a SlottedModule of one's own) asks its gate, once per forward and before it
/// computes the branch:
///
///     auto* gate = dynamic_cast<tessera::BranchGate*>(slot("residual_gate").ptr().get());
///     if (gate != nullptr && gate->skip_branch()) return shortcut.relu();   // the branch adds exactly nothing
///     ... compute the branch, pass it through slot("residual_gate").forward(branch), add the shortcut ...
///
/// When skip_branch() returns true the block's output is what it would be with the branch multiplied by 0, and the
/// branch is not computed: its layers get no gradient (they stay undefined, as in PyTorch, so the optimizer skips
/// them for that step) and its batch norms do not update their running statistics. A gate that is not a
/// BranchGate (torch::nn::Identity, the default) is always computed through.
namespace tessera {

class BranchGate {
 public:
  virtual ~BranchGate() = default;
  /// Decides for this forward whether the branch is dropped whole. Called at most once per forward, before the
  /// gate's own forward(branch), which is called only when this returned false.
  virtual bool skip_branch() = 0;
};

}  // namespace tessera
