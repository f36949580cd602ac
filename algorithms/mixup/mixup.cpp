#include "mixup.h"

#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>

namespace tessera::algorithms {
namespace {

bool is_integer(const at::Tensor& t) { return !at::isFloatingType(t.scalar_type()) && !at::isComplexType(t.scalar_type()); }

}  // namespace

// Marsaglia–Tsang 2000; for a < 1, Gamma(a) = Gamma(a + 1)·U^(1/a), in log space so that small shapes do not
// underflow to 0.
double log_gamma_sample(double a, Rng& rng) {
  if (!(a > 0.0) || !std::isfinite(a)) {
    throw InputError(fmt::format("log_gamma_sample.shape: {:g}; expected a finite shape > 0", a));
  }
  if (a < 1.0) {
    const double u = 1.0 - rng.uniform();  // (0, 1]
    return log_gamma_sample(a + 1.0, rng) + std::log(u) / a;
  }
  const double d = a - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    const double x = rng.normal();
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    const double u = 1.0 - rng.uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x || std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) {
      return std::log(d) + std::log(v);
    }
  }
}

double sample_mixing(double alpha, Rng& rng) {
  check_option_as<MixUpOptions>("sample_mixing", "alpha", alpha);
  if (alpha == 0.0) return 1.0;
  // Beta(α, α) = X / (X + Y) with X, Y ~ Gamma(α): 1 / (1 + exp(log Y − log X)).
  const double lx = log_gamma_sample(alpha, rng);
  const double ly = log_gamma_sample(alpha, rng);
  return 1.0 / (1.0 + std::exp(ly - lx));
}

at::Tensor mixing_permutation(int64_t n, Rng& rng) {
  if (n < 1) throw InputError("mixing_permutation: the batch has " + std::to_string(n) + " examples; expected >= 1");
  const std::vector<int64_t> p = rng.permutation(n);
  return at::tensor(p, at::kLong);
}

namespace {
/// Checks of the functional forms: floating inputs [N, ...], targets and indices [N].
void check_mix_inputs(const char* where, const at::Tensor& input, const at::Tensor& target, double lambda,
                      const at::Tensor& indices) {
  check_option(where, "lambda", lambda, Range::closed(0, 1));
  if (!input.defined() || input.dim() < 1 || !at::isFloatingType(input.scalar_type())) {
    throw InputError(std::string(where) + ".input: expected floating-point inputs [N, ...], got " +
                     (input.defined() ? std::string(c10::toString(input.scalar_type())) + " " + c10::str(input.sizes())
                                      : std::string("an undefined tensor")));
  }
  const int64_t n = input.size(0);
  if (!target.defined() || target.dim() < 1 || target.size(0) != n) {
    throw InputError(std::string(where) + ".target: expected targets with " + std::to_string(n) +
                     " examples (first dimension), got " + (target.defined() ? c10::str(target.sizes()) : "undefined"));
  }
  if (!indices.defined() || indices.dim() != 1 || indices.size(0) != n || !is_integer(indices)) {
    throw InputError(std::string(where) + ".indices: expected integer indices of shape [" + std::to_string(n) + "], got " +
                     (indices.defined() ? c10::str(indices.sizes()) : "undefined"));
  }
  const at::Tensor i = indices.to(at::kCPU, at::kLong);
  if (n > 0 && (i.min().item<int64_t>() < 0 || i.max().item<int64_t>() >= n)) {
    throw InputError(std::string(where) + ".indices: expected values in [0, " + std::to_string(n) + "), got [" +
                     std::to_string(i.min().item<int64_t>()) + ", " + std::to_string(i.max().item<int64_t>()) + "]");
  }
}
}  // namespace

MixedBatch mixup_batch(const at::Tensor& input, const at::Tensor& target, double lambda, const at::Tensor& indices) {
  check_mix_inputs("mixup_batch", input, target, lambda, indices);
  MixedBatch out;
  out.lambda = lambda;
  out.indices = indices.to(at::kLong);
  const at::Tensor x_perm = input.index_select(0, out.indices.to(input.device()));
  out.input = input * lambda + x_perm * (1.0 - lambda);
  out.target_perm = target.index_select(0, out.indices.to(target.device()));
  return out;
}

MixedBatch mixup_batch(const at::Tensor& input, const at::Tensor& target, double alpha, Rng& rng) {
  const double lambda = sample_mixing(alpha, rng);
  if (!input.defined() || input.dim() < 1) throw InputError("mixup_batch.input: expected inputs [N, ...]");
  return mixup_batch(input, target, lambda, mixing_permutation(input.size(0), rng));
}

at::Tensor mixed_loss(const at::Tensor& loss_original, const at::Tensor& loss_permuted, double lambda) {
  check_option("mixed_loss", "lambda", lambda, Range::closed(0, 1));
  return loss_original * lambda + loss_permuted * (1.0 - lambda);
}

// ---- the algorithms' shared part ------------------------------------------------------------------------

MixingAlgorithm::MixingAlgorithm(std::string name, bool needs_images, const std::string& input_order_reason,
                                 const std::string& other_mixer)
    : target_key_(name + "_target"), needs_images_(needs_images) {
  spec_.name = std::move(name);
  spec_.accesses = {{Event::AfterDataloader, {Resource::Inputs, Resource::Targets}, {Resource::Inputs}},
                    {Event::BeforeForward, {}, {}},
                    {Event::BeforeLoss, {Resource::Targets, Resource::Outputs, Resource::Loss}, {Resource::Loss}},
                    {Event::AfterLoss, {}, {Resource::Loss}}};
  spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::Resolution), Event::AfterDataloader,
                         input_order_reason});
  spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::BatchRows), Event::AfterDataloader,
                         "it pairs the examples that train, after rows are dropped"});
  spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::Targets), Event::BeforeLoss,
                         "it interpolates the loss over both target sets as the others leave them (label smoothing "
                         "smooths both)"});
  spec_.conflicts.push_back(
      {Selector::named(other_mixer), true,
       "both mix each example with a permuted partner and interpolate the loss over two target sets; together an "
       "input would mix up to four examples whose loss neither computes (Composer only warns); use one per run"});
  spec_.interpolates_loss = true;
}

void MixingAlgorithm::check(const State& state) const {
  const std::string& name = spec_.name;
  const Batch example = state.train_dataloader->example_batch();
  if (!example.has(Batch::kInput) || !example.has(Batch::kTarget)) {
    std::string parts;
    for (const auto& [key, t] : example.parts()) parts += (parts.empty() ? "" : ", ") + key;
    throw InputError(name + " mixes the batch parts \"input\" and \"target\"; the training batches have [" + parts +
                     "] (" + state.train_dataloader->describe() + ")");
  }
  if (example.has(target_key_)) {
    throw InputError(name + " carries the permuted targets in the batch part \"" + target_key_ +
                     "\", but the training batches already have a part of that name; rename it");
  }
  const at::Tensor& x = example.input();
  if (!at::isFloatingType(x.scalar_type())) {
    throw InputError(name + " mixes the inputs, which must be floating point; the training data's inputs are " +
                     std::string(c10::toString(x.scalar_type())) +
                     " (convert them to float first, e.g. with a normalising transform)");
  }
  if (needs_images_ && x.dim() != 4) {
    throw InputError(name + " pastes a box between images and needs image inputs [C, H, W] per example; the training "
                     "data has inputs of shape " + c10::str(x.sizes().slice(1)) + " per example");
  }
  const at::Tensor& y = example.target();
  if (needs_images_ && (is_integer(y) ? y.dim() != 1 : y.dim() != 2)) {
    throw InputError(name + " needs one class per example: integer class ids [N] or dense class targets [N, C]; the "
                     "training data has targets of shape " + c10::str(y.sizes()) + " (" +
                     std::string(c10::toString(y.scalar_type())) +
                     "): per-pixel targets would need the box pasted into them too, which " + name + " does not do");
  }
  if (!state.model->loss_reads_targets()) {
    throw InputError("the model computes its loss inside forward() from the labels it was given, so " + name +
                     " cannot compute it against the permuted targets; compute the loss outside the model (the Python "
                     "Trainer's loss_fn=(outputs, batch) -> loss) or leave " + name + " out");
  }
}

void MixingAlgorithm::apply(Event event, State& state, Logger&) {
  if (event == Event::AfterDataloader) {
    Rng rng(state.seed, {kAlgorithmStream, stream_id(), static_cast<uint64_t>(state.timestamp.batch)});
    MixedBatch m = mix(state.batch.input(), state.batch.target(), rng);
    state.batch.set(Batch::kInput, std::move(m.input));
    state.batch.set(target_key_, std::move(m.target_perm));
    last_lambda_ = m.lambda;
    last_indices_ = m.indices;
  } else if (event == Event::BeforeForward) {
    // Out of the microbatch before the model sees it (a Python model called with the whole batch, or a loss_fn
    // that unpacks it, must see the batch as its data gave it); kept for this microbatch's loss.
    if (!state.batch.has(target_key_)) {
      throw Error(spec_.name + ": the microbatch has no part \"" + target_key_ + "\" at before_forward (it is added "
                  "at after_dataloader; an algorithm or callback in between dropped it)");
    }
    microbatch_target_perm_ = state.batch.get(target_key_);
    state.batch.erase(target_key_);
  } else if (event == Event::BeforeLoss) {
    // Wraps the loss the trainer would compute now (the model's, or another algorithm's such as label smoothing).
    auto previous = state.loss_override;
    std::shared_ptr<Model> model = state.model;
    const double lambda = last_lambda_;
    const at::Tensor target_perm = microbatch_target_perm_;
    state.loss_override = [previous, model, lambda, target_perm](const at::Tensor& out, const Batch& b, Reduction r) {
      Batch permuted = b;
      permuted.set(Batch::kTarget, target_perm);
      const at::Tensor original = previous ? previous(out, b, r) : model->loss(out, b, r);
      const at::Tensor other = previous ? previous(out, permuted, r) : model->loss(out, permuted, r);
      return mixed_loss(original, other, lambda);
    };
  } else if (event == Event::AfterLoss) {
    state.loss_override = nullptr;
    microbatch_target_perm_ = at::Tensor();
  }
}

// ---- MixUp ----------------------------------------------------------------------------------------------

MixUp::MixUp(MixUpOptions options)
    : MixingAlgorithm("mixup", /*needs_images=*/false, "it mixes the inputs at the size the model sees", "cutmix"),
      options_(std::move(options)) {
  validate_options(options_, "mixup");
}

MixedBatch MixUp::mix(const at::Tensor& input, const at::Tensor& target, Rng& rng) {
  return mixup_batch(input, target, options_.alpha(), rng);
}

}  // namespace tessera::algorithms
