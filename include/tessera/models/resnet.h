#pragma once
/// CIFAR-style ResNet (He et al. 2016, section 4.2) for images [N, C, H, W]: a conv3x3(w)-BN-ReLU stem,
/// three stages of n basic blocks with widths w, 2w, 4w (stride 2 at the first block of stages 2 and 3,
/// with a 1x1 conv + BN shortcut where the shape changes), global average pool, linear.
/// depth = 6n + 2 (20, 32, 44, 56, 110). With norm "group", every BN is a GroupNorm instead (Wu & He 2018), in the
/// same slots (bn1, bn2, shortcut_bn).
///
///     auto model = std::make_shared<tessera::ResNet>(
///         tessera::ResNetOptions().depth(20).in_channels(3).num_classes(10));
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <tessera/models/model.h>
#include <tessera/options.h>

namespace tessera {

/// Options of `ResNet` (recipe name "resnet").
struct ResNetOptions {
  /// Number of weighted layers, 6n + 2.
  TESSERA_OPTION(int64_t, depth) = 20;
  /// Channels of the first stage w (then 2w and 4w).
  TESSERA_OPTION(int64_t, width) = 16;
  /// Input channels (0 = filled in from the data by the registry).
  TESSERA_OPTION(int64_t, in_channels) = 0;
  /// Number of classes (0 = filled in from the data by the registry).
  TESSERA_OPTION(int64_t, num_classes) = 0;
  /// Dropout probability on the pooled features before the classifier (0 = none; a torch::nn::Dropout in slot
  /// "dropout" when positive, which gyro_dropout replaces).
  TESSERA_OPTION(double, dropout) = 0.0;
  /// The normalisation after each convolution: "batch" (torch::nn::BatchNorm2d) or "group" (torch::nn::GroupNorm
  /// with `groups` groups, which must divide the width; under autocast it computes in fp32, autocast's policy for
  /// group_norm on CUDA, on every device and LibTorch version).
  TESSERA_OPTION(std::string, norm) = "batch";
  /// Groups of each GroupNorm (norm "group" only).
  TESSERA_OPTION(int64_t, groups) = 8;
  template <class V>
  void visit(V& v) {
    v("depth", depth_, "number of layers, 6n+2 (20, 32, 44, 56, 110)", Range::at_least(8));
    v("width", width_, "channels of the first stage", Range::at_least(1));
    v("in_channels", in_channels_, "input channels (0 = from the data)", Range::at_least(0));
    v("num_classes", num_classes_, "number of classes (0 = from the data)", Range::at_least(0));
    v("dropout", dropout_, "dropout probability before the classifier", Range::closed_open(0, 1));
    v("norm", norm_, "normalisation after each convolution", Choices{{"batch", "group"}});
    v("groups", groups_, "groups of each GroupNorm (norm: group), a divisor of the width", Range::at_least(1));
  }
};

/// A basic residual block: conv3x3(stride)-BN-ReLU-conv3x3-BN, through the residual gate, plus the input (or a
/// 1x1 conv(stride)-BN projection of it when the stride or width changes), then ReLU; GroupNorms for BNs with
/// norm "group".
/// Slots: conv1, bn1, conv2, bn2, residual_gate and, with a projection, shortcut_conv, shortcut_bn. The residual
/// gate is a torch::nn::Identity (no parameters, so no state-dict keys) that surgery may replace to scale or drop
/// the residual branch (stochastic depth: algorithms/stochastic_depth). A gate that is a tessera::BranchGate
/// (models/branch_gate.h) is asked before the branch is computed, and a branch it drops whole is not computed.
class BasicBlock : public SlottedModule {
 public:
  /// `group_norm_groups` 0: BatchNorm2d; otherwise GroupNorm with that many groups.
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, int64_t group_norm_groups = 0);
  at::Tensor forward(const at::Tensor& x);
  /// Whether the shortcut is a projection (1x1 conv + BN).
  bool has_projection() const noexcept { return projection_; }

 private:
  bool projection_;
};

/// CIFAR-style ResNet classifier. Slots of the model: conv1, bn1, fc (and dropout when dropout > 0); the blocks are
/// children "layer1".."layer3" (ModuleLists), so parameter names read "layer2.0.conv1.weight".
class ResNet : public Model {
 public:
  /// Throws InputError on invalid options (depth not 6n+2, in_channels or num_classes 0, groups not dividing the
  /// width under norm "group").
  explicit ResNet(ResNetOptions options);
  at::Tensor forward(const Batch& batch) override;
  /// Cross-entropy (integer or dense targets).
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch,
                  Reduction reduction = Reduction::Mean) override;
  int64_t num_classes() const override { return options_.num_classes(); }
  bool loss_is_cross_entropy() const override { return true; }
  const ResNetOptions& options() const noexcept { return options_; }
  /// The residual blocks in forward order.
  const std::vector<std::shared_ptr<BasicBlock>>& blocks() const noexcept { return blocks_; }

 private:
  ResNetOptions options_;
  std::vector<std::shared_ptr<BasicBlock>> blocks_;
};

}  // namespace tessera
