#include "label_smoothing.h"

#include <ATen/ATen.h>

#include <tessera/error.h>

#include "label_smoothing_ops.h"

namespace tessera::algorithms {
namespace {

bool is_integer(const at::Tensor& t) { return !at::isFloatingType(t.scalar_type()) && !at::isComplexType(t.scalar_type()); }

at::Tensor reduce(const at::Tensor& per_example, Reduction reduction) {
  switch (reduction) {
    case Reduction::Mean: return per_example.mean();
    case Reduction::Sum: return per_example.sum();
    case Reduction::None: return per_example;
  }
  return per_example;
}

}  // namespace

at::Tensor smooth_labels(const at::Tensor& targets, int64_t num_classes, double alpha) {
  check_option_as<LabelSmoothingOptions>("smooth_labels", "smoothing", alpha);
  if (num_classes < 1) throw InputError("smooth_labels: num_classes must be >= 1, got " + std::to_string(num_classes));
  at::Tensor dense;
  if (is_integer(targets)) {
    if (targets.lt(0).any().item<bool>()) {
      throw InputError("smooth_labels: the targets hold negative ids (kIgnoreTarget -100 marks positions with "
                       "nothing to predict: masked language modelling), which dense targets cannot express; smooth "
                       "them inside the loss instead (label_smoothing with fused: true, or smoothed_cross_entropy)");
    }
    dense = at::one_hot(targets.to(at::kLong), num_classes).to(at::kFloat);  // [N, ..., C]
    if (dense.dim() > 2) dense = dense.movedim(-1, 1).contiguous();            // class dimension 1
  } else {
    if (targets.dim() < 2 || targets.size(1) != num_classes) {
      throw InputError("smooth_labels: dense targets must be [N, C, ...] with C = " + std::to_string(num_classes) +
                       ", got " + c10::str(targets.sizes()));
    }
    dense = targets;
  }
  return dense * (1.0 - alpha) + alpha / static_cast<double>(num_classes);
}

at::Tensor smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, double alpha, Reduction reduction) {
  check_option_as<LabelSmoothingOptions>("smoothed_cross_entropy", "smoothing", alpha);
  if (!is_integer(labels)) throw InputError("smoothed_cross_entropy: expected integer class labels, got " + std::string(c10::toString(labels.scalar_type())));
  if (logits.dim() == 2 && labels.dim() == 1 && at::isFloatingType(logits.scalar_type())) {
    // The op tessera::smoothed_cross_entropy (label_smoothing_ops.cpp): fused where the library has a kernel for the
    // logits' device, else the stock formula below. [N, C, ...] keeps the stock ops.
    auto [mean, per] = fused_smoothed_cross_entropy(logits, labels, alpha);
    return reduction == Reduction::Mean ? mean : reduce(per, reduction);
  }
  const at::Tensor logp = at::log_softmax(logits, 1);
  // Per example (and position): −log p_y and the mean over classes of −log p_c; 0 where the label is kIgnoreTarget.
  const at::Tensor index = labels.to(at::kLong);
  const at::Tensor targeted = index.ne(kIgnoreTarget);
  const at::Tensor nll = -logp.gather(1, index.masked_fill(targeted.logical_not(), 0).unsqueeze(1)).squeeze(1);
  const at::Tensor uniform = -logp.mean(1);
  const at::Tensor per = (nll * (1.0 - alpha) + uniform * alpha) * targeted;
  return reduce_over_targets(per, index, reduction);
}

LabelSmoothing::LabelSmoothing(LabelSmoothingOptions options) : options_(std::move(options)) {
  validate_options(options_, "label_smoothing");
  spec_.name = "label_smoothing";
  spec_.accesses = {{Event::BeforeLoss, {Resource::Targets, Resource::Outputs}, {Resource::Targets, Resource::Loss}},
                    {Event::AfterLoss, {}, {Resource::Targets, Resource::Loss}}};
  spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::Targets), Event::BeforeLoss,
                         "it smooths the final targets, after every other change to them"});
  spec_.precision_note = "under amp_bf16/amp_fp16 the smoothed cross-entropy runs in float32 (the logits are cast up)";
}

void LabelSmoothing::check(const State& state) const {
  if (!state.model->loss_reads_targets()) {
    throw InputError("label_smoothing: the model computes its loss inside forward() from the labels it was given, so "
                     "smoothed targets would not reach it; compute the loss outside the model (the Python Trainer's "
                     "loss_fn=(outputs, batch) -> loss) or leave label smoothing out");
  }
}

void LabelSmoothing::apply(Event event, State& state, Logger&) {
  const double alpha = options_.smoothing();
  if (event == Event::BeforeLoss) {
    const at::Tensor& targets = state.batch.target();
    if (options_.fused() && is_integer(targets) && state.model->loss_is_cross_entropy()) {
      state.loss_override = [alpha](const at::Tensor& out, const Batch& b, Reduction r) {
        // Under autocast the logits may be bfloat16/float16: the loss runs in float32, as autocast runs
        // cross_entropy (its gradient flows back to the logits in their own dtype).
        const bool low = out.scalar_type() == at::kHalf || out.scalar_type() == at::kBFloat16;
        return smoothed_cross_entropy(low ? out.to(at::kFloat) : out, b.target(), alpha, r);
      };
      return;
    }
    // Dense path: the loss sees smoothed targets. Installed as a loss over whatever batch it is given (not by
    // replacing the batch's targets), so that an algorithm that also computes the loss against other targets
    // (MixUp, CutMix: permuted ones) gets those smoothed too.
    auto previous = state.loss_override;
    std::shared_ptr<Model> model = state.model;
    const int64_t classes = state.outputs.size(1);
    state.loss_override = [previous, model, classes, alpha](const at::Tensor& out, const Batch& b, Reduction r) {
      Batch smoothed = b;
      smoothed.set(Batch::kTarget, smooth_labels(b.target(), classes, alpha));
      return previous ? previous(out, smoothed, r) : model->loss(out, smoothed, r);
    };
  } else if (event == Event::AfterLoss) {
    state.loss_override = nullptr;
  }
}

}  // namespace tessera::algorithms
