#pragma once
/// A multi-layer perceptron classifier: flatten, [Linear-ReLU(-Dropout)] per hidden layer, Linear.
///
///     auto model = std::make_shared<tessera::MLP>(tessera::MLPOptions().in_features(784).num_classes(10));
#include <cstdint>
#include <vector>

#include <tessera/models/model.h>
#include <tessera/options.h>

namespace tessera {

/// Options of `MLP` (recipe name "mlp").
struct MLPOptions {
  /// Features per example after flattening (0 = filled in from the data by the registry).
  TESSERA_OPTION(int64_t, in_features) = 0;
  /// Width of each hidden layer.
  TESSERA_OPTION(std::vector<int64_t>, hidden) = std::vector<int64_t>{256, 256};
  /// Number of classes (0 = filled in from the data by the registry).
  TESSERA_OPTION(int64_t, num_classes) = 0;
  /// Dropout probability after each hidden activation (0 = none).
  TESSERA_OPTION(double, dropout) = 0.0;
  template <class V>
  void visit(V& v) {
    v("in_features", in_features_, "features per example (0 = from the data)", Range::at_least(0));
    v("hidden", hidden_, "widths of the hidden layers", Range::at_least(1));
    v("num_classes", num_classes_, "number of classes (0 = from the data)", Range::at_least(0));
    v("dropout", dropout_, "dropout probability after each hidden layer", Range::closed_open(0, 1));
  }
};

/// MLP classifier. Its Linear layers sit in slots "fc1", "fc2", ... and "head", and with dropout > 0 a
/// torch::nn::Dropout after each hidden activation in slots "dropout1", "dropout2", ... (gyro_dropout replaces
/// them). The input is flattened from dimension 1 and must have `in_features` features per example.
class MLP : public Model {
 public:
  /// Throws InputError on invalid options, or when in_features or num_classes is 0.
  explicit MLP(MLPOptions options);
  at::Tensor forward(const Batch& batch) override;
  /// Cross-entropy (integer or dense targets).
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch,
                  Reduction reduction = Reduction::Mean) override;
  int64_t num_classes() const override { return options_.num_classes(); }
  bool loss_is_cross_entropy() const override { return true; }
  const MLPOptions& options() const noexcept { return options_; }

 private:
  MLPOptions options_;
  std::vector<std::string> layers_;  // slot names, in order
};

}  // namespace tessera
