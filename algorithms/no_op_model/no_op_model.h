#pragma once
/// No-op model (Composer's NoOpModel): at Init the model is replaced by a stand-in with a single parameter whose
/// forward costs nothing, so that a run measures everything but the model: the data pipeline (loading, decoding,
/// the algorithms' transforms on the loader's threads), the transfer to the device, the batch algorithms, the
/// optimizer step, evaluation, checkpoints and logging. The run's throughput is then the most the rest of the
/// pipeline can feed; its metrics and weights mean nothing.
///
/// The stand-in outputs the batch's targets as class scores, one-hot (integer targets [N] or [N, S] give scores
/// [N, C] or [N, C, S]; dense targets [N, C, ...] are used as they are), times its parameter `weight` (1.5, as
/// Composer's), and its loss is cross-entropy against the targets, so every loss, metric and per-example loss
/// works on it. The optimizer is given the stand-in's parameter instead of the model's. It needs the number of classes
/// (the model's, else the training data's, else the class dimension of the model's outputs on an example batch),
/// and no model surgery in the same run (refused before step 1: the surgery would change
/// a model that never trains).
///
///     auto stand_in = tessera::algorithms::make_no_op_model(*model);  // the functional form
#include <cstdint>
#include <memory>

#include <ATen/Tensor.h>

#include <tessera/algorithm.h>
#include <tessera/models/model.h>
#include <tessera/options.h>

namespace tessera::algorithms {

struct NoOpModelOptions {
  template <class V>
  void visit(V&) {}
};

/// The stand-in model: one parameter "weight" [1] = 1.5; forward(batch) = class scores of the batch's targets times
/// the weight; loss = cross-entropy against the targets.
class NoOpModelImpl : public Model {
 public:
  explicit NoOpModelImpl(int64_t num_classes);
  at::Tensor forward(const Batch& batch) override;
  at::Tensor loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction = Reduction::Mean) override;
  int64_t num_classes() const override { return num_classes_; }
  bool loss_is_cross_entropy() const override { return true; }
  const at::Tensor& weight() const noexcept { return weight_; }

 private:
  int64_t num_classes_;
  at::Tensor weight_;
};

/// The functional form: a stand-in for `model` with the model's number of classes, or `num_classes` when the model
/// does not say (a user's module: Model::num_classes() is 0; the algorithm passes the training data's), on the device
/// of the model's first parameter or buffer. InputError when neither gives a number of classes.
std::shared_ptr<NoOpModelImpl> make_no_op_model(const Model& model, int64_t num_classes = 0);

/// The algorithm (recipe name "no_op_model").
class NoOpModel : public Algorithm {
 public:
  explicit NoOpModel(NoOpModelOptions options = NoOpModelOptions());
  const AlgorithmSpec& spec() const override { return spec_; }
  void apply(Event event, State& state, Logger& logger) override;
  /// A number of classes (the model's, the training data's, or the model's outputs').
  void check(const State& state) const override;
  const NoOpModelOptions& options() const noexcept { return options_; }

 private:
  NoOpModelOptions options_;
  AlgorithmSpec spec_;
};

}  // namespace tessera::algorithms
