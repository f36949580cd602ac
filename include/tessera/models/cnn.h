#pragma once
/// A small convolutional classifier for images [N, C, H, W]:
/// conv3x3(w)-BN-ReLU, conv3x3(2w, stride 2)-BN-ReLU, maxpool 2, conv3x3(4w)-BN-ReLU, global average
/// pool, linear.
///
///     auto model = std::make_shared<tessera::CNN>(tessera::CNNOptions().in_channels(1).num_classes(10));
#include <cstdint>

#include <tessera/models/model.h>
#include <tessera/options.h>

namespace tessera {

/// Options of `CNN` (recipe name "cnn").
struct CNNOptions {
  /// Input channels (0 = filled in from the data by the registry).
  TESSERA_OPTION(int64_t, in_channels) = 0;
  /// Number of classes (0 = filled in from the data by the registry).
  TESSERA_OPTION(int64_t, num_classes) = 0;
  /// Channels of the first convolution w (then 2w and 4w).
  TESSERA_OPTION(int64_t, width) = 32;
  template <class V>
  void visit(V& v) {
    v("in_channels", in_channels_, "input channels (0 = from the data)", Range::at_least(0));
    v("num_classes", num_classes_, "number of classes (0 = from the data)", Range::at_least(0));
    v("width", width_, "channels of the first convolution", Range::at_least(1));
  }
};

/// Small CNN classifier. Slots: conv1, bn1, conv2, bn2, pool, conv3, bn3, fc.
class CNN : public Model {
 public:
  /// Throws InputError on invalid options, or when in_channels or num_classes is 0.
  explicit CNN(CNNOptions options);
  at::Tensor forward(const Batch& batch) override;
  /// Cross-entropy (integer or dense targets).
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch,
                  Reduction reduction = Reduction::Mean) override;
  int64_t num_classes() const override { return options_.num_classes(); }
  bool loss_is_cross_entropy() const override { return true; }
  const CNNOptions& options() const noexcept { return options_; }

 private:
  CNNOptions options_;
};

}  // namespace tessera
