#include "no_op_model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/callback.h>
#include <tessera/data/batch_source.h>
#include <tessera/error.h>
#include <tessera/optim/optimizer.h>
#include <tessera/state.h>

namespace tessera::algorithms {

NoOpModelImpl::NoOpModelImpl(int64_t num_classes) : num_classes_(num_classes) {
  if (num_classes < 1) {
    throw InputError(fmt::format("no_op_model: num_classes is {}; expected >= 1 (the stand-in outputs class scores)",
                                 num_classes));
  }
  weight_ = register_parameter("weight", at::full({1}, 1.5));
}

at::Tensor NoOpModelImpl::forward(const Batch& batch) {
  const at::Tensor& targets = batch.target();
  at::Tensor scores;
  if (at::isFloatingType(targets.scalar_type())) {
    scores = targets.to(weight_.options());  // dense targets [N, C, ...]: scores as they are
  } else {
    // [N, ...] class indices -> one-hot [N, ..., C] -> [N, C, ...], classes in dimension 1 as every loss expects;
    // a position with nothing to predict (kIgnoreTarget) scores class 0, which no loss or metric reads.
    const at::Tensor index = targets.to(at::kLong);
    scores = at::one_hot(index.masked_fill(index.eq(kIgnoreTarget), 0), num_classes_).to(weight_.options());
    if (scores.dim() > 2) scores = scores.movedim(-1, 1);
  }
  return scores * weight_;
}

at::Tensor NoOpModelImpl::loss(const at::Tensor& outputs, const Batch& batch, Reduction reduction) {
  return cross_entropy(outputs, batch.target(), reduction);
}

std::shared_ptr<NoOpModelImpl> make_no_op_model(const Model& model, int64_t num_classes) {
  const int64_t classes = model.num_classes() > 0 ? model.num_classes() : num_classes;
  if (classes < 1) {
    throw InputError("no_op_model needs the number of classes, for the stand-in outputs class scores of the targets, "
                     "and found none (the model's num_classes() is 0, and neither the training data nor the model's "
                     "outputs gave one); remove no_op_model, or give the model its number of classes");
  }
  auto stand_in = std::make_shared<NoOpModelImpl>(classes);
  const auto params = model.parameters();
  const auto buffers = model.buffers();
  if (!params.empty()) {
    stand_in->to(params.front().device());
  } else if (!buffers.empty()) {
    stand_in->to(buffers.front().device());
  }
  return stand_in;
}

NoOpModel::NoOpModel(NoOpModelOptions options) : options_(std::move(options)) {
  spec_.name = "no_op_model";
  spec_.accesses = {{Event::Init, {}, {Resource::ModelStructure, Resource::Parameters, Resource::OptimizerGroups}}};
  spec_.required_on_load = true;  // a checkpoint holds the stand-in's parameter
  spec_.conflicts.push_back({Selector::writers_of(Resource::ModelStructure), true,
                             "no_op_model replaces the whole model by a stand-in, so the other's model surgery would "
                             "change a model that never trains; remove one of them"});
}

namespace {
/// The run's number of classes: the model's, else the training data's, else the class dimension of the model's
/// outputs on an example batch (a user's module trained from a torch DataLoader); 0 when none tells.
int64_t run_classes(const State& state) {
  if (state.model->num_classes() > 0) return state.model->num_classes();
  if (!state.train_dataloader) return 0;
  if (state.train_dataloader->num_classes() > 0) return state.train_dataloader->num_classes();
  int64_t classes = 0;
  (void)try_on_example(*state.model, state.train_dataloader->example_batch(), [&](const Batch& b) {
    const at::Tensor out = state.model->forward(b);
    if (out.dim() >= 2) classes = out.size(1);
  });
  return classes;
}
}  // namespace

void NoOpModel::check(const State& state) const {
  (void)make_no_op_model(*state.model, run_classes(state));
  if (state.optimizer && state.optimizer->param_groups().size() > 1) {
    throw InputError(fmt::format("no_op_model: the model is replaced by a stand-in with one parameter, so the "
                                 "optimizer's {} parameter groups (groups:) would select nothing; leave groups out "
                                 "of a no_op_model run",
                                 state.optimizer->param_groups().size() - 1));
  }
}

void NoOpModel::apply(Event, State& state, Logger& logger) {
  std::shared_ptr<NoOpModelImpl> stand_in = make_no_op_model(*state.model, run_classes(state));
  const auto old = state.model->parameters();
  int64_t values = 0;
  for (const auto& p : old) values += p.numel();
  state.optimizer->remove_parameters(old);
  state.optimizer->add_parameter("weight", stand_in->weight());
  state.model = stand_in;
  logger.info(fmt::format("no_op_model: the model ({} parameters in {} tensors) is replaced by a stand-in with one "
                          "parameter: this run measures the data pipeline and the trainer, its metrics and weights "
                          "mean nothing",
                          values, old.size()));
}

}  // namespace tessera::algorithms
