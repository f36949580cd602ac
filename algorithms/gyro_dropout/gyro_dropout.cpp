#include "gyro_dropout.h"

#include <cmath>
#include <numeric>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/dropout.h>

#include <tessera/callback.h>
#include <tessera/error.h>
#include <tessera/rng.h>
#include <tessera/state.h>
#include <tessera/surgery.h>

namespace tessera::algorithms {
namespace {

constexpr uint64_t kGyroDropoutStream = 0x6d90d0ULL;

void check_sizes(const GyroDropoutOptions& options) {
  if (options.tau() > options.sigma()) {
    throw InputError(fmt::format("gyro_dropout: tau ({}) must be at most sigma ({}): it trains tau distinct masks of "
                                 "the sigma preselected ones at once",
                                 options.tau(), options.sigma()));
  }
}

/// x [N, F, ...] times scaled [M, F]'s row floor(n · M / N) for row n, or, with a place that is set, for the part
/// of the global batch row n falls in (BatchPlace::parts_of_rows).
at::Tensor apply_rows(const at::Tensor& x, const at::Tensor& scaled, const BatchPlace& place = BatchPlace()) {
  const at::Tensor rows = place.parts_of_rows(x.size(0), scaled.size(0), x.options());
  at::Tensor mask = scaled.index_select(0, rows);  // [N, F]
  std::vector<int64_t> shape = mask.sizes().vec();
  shape.resize(static_cast<size_t>(x.dim()), 1);  // [N, F, 1, ...]
  return x * mask.view(shape);
}

/// The input of layer `layer` (or, for layer -1, of the functional form) against the masks' number of features
/// (-1: not made yet).
void check_input(const at::Tensor& x, int64_t features, int64_t layer) {
  if (x.dim() >= 2 && (features < 0 || x.size(1) == features)) return;  // every forward: no message built
  const std::string who = layer < 0 ? "the input" : fmt::format("layer {}'s input", layer);
  if (x.dim() < 2) {
    throw InputError(fmt::format("gyro_dropout: {} has shape {}; expected [N, features, ...]", who, c10::str(x.sizes())));
  }
  if (layer < 0) {
    throw InputError(fmt::format("gyro_dropout: the input has {} features (dimension 1 of {}); the masks have {}",
                                 x.size(1), c10::str(x.sizes()), features));
  }
  throw InputError(fmt::format("gyro_dropout: {} has {} features (dimension 1 of {}), and had {} before: a layer's "
                               "masks are made once, for one number of features",
                               who, x.size(1), c10::str(x.sizes()), features));
}

}  // namespace

at::Tensor gyro_dropout_masks(uint64_t seed, int64_t layer, int64_t features, double p, int64_t sigma) {
  if (features < 1 || sigma < 1) {
    throw InputError(fmt::format("gyro_dropout_masks: features ({}) and sigma ({}) must be at least 1", features, sigma));
  }
  Rng rng(seed, {kAlgorithmStream, kGyroDropoutStream, 0, static_cast<uint64_t>(layer)});
  at::Tensor masks = at::empty({sigma, features}, at::kFloat);
  float* out = masks.data_ptr<float>();
  for (int64_t i = 0; i < sigma * features; ++i) out[i] = rng.uniform() >= p ? 1.0f : 0.0f;
  return masks;
}

std::vector<int64_t> gyro_dropout_selection(uint64_t seed, int64_t layer, int64_t period, int64_t sigma, int64_t tau) {
  if (tau < 1 || tau > sigma) {
    throw InputError(fmt::format("gyro_dropout_selection: tau ({}) must be in [1, sigma = {}]", tau, sigma));
  }
  Rng rng(seed, {kAlgorithmStream, kGyroDropoutStream, 1, static_cast<uint64_t>(layer), static_cast<uint64_t>(period)});
  std::vector<int64_t> order(static_cast<size_t>(sigma));
  std::iota(order.begin(), order.end(), 0);
  for (int64_t i = 0; i < tau; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(sigma - i)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  order.resize(static_cast<size_t>(tau));
  return order;
}

int64_t gyro_dropout_period_length(double total_batches, int64_t sigma, int64_t tau) {
  if (!std::isfinite(total_batches) || total_batches < 0 || sigma < 1 || tau < 1) {
    throw InputError(fmt::format("gyro_dropout: cannot cut a run of {} batches into periods (sigma {}, tau {})",
                                 total_batches, sigma, tau));
  }
  return std::max<int64_t>(1, static_cast<int64_t>(std::floor(total_batches / static_cast<double>(sigma)))) * tau;
}

at::Tensor gyro_dropout(const at::Tensor& x, const at::Tensor& selected, double p) {
  if (!(p >= 0 && p < 1)) throw InputError(fmt::format("gyro_dropout: p must be in [0, 1), got {}", p));
  if (selected.dim() != 2 || selected.size(0) < 1) {
    throw InputError(fmt::format("gyro_dropout: expected selected masks [M, features] with M >= 1, got shape {}",
                                 c10::str(selected.sizes())));
  }
  check_input(x, selected.size(1), -1);
  if (x.size(0) == 0) return x.clone();
  return apply_rows(x, selected.to(x.device(), x.scalar_type()).mul(1.0 / (1.0 - p)));
}

// ------------------------------------------------------------------------------------------------ GyroDropoutMasks

GyroDropoutMasks::GyroDropoutMasks(GyroDropoutOptions options, int64_t layer)
    : options_(std::move(options)), layer_(layer) {
  validate_options(options_, "gyro_dropout");
  check_sizes(options_);
}

void GyroDropoutMasks::select(uint64_t seed, int64_t period) {
  if (seed != seed_) masks_ = at::Tensor();
  if (seed != seed_ || period != period_) selected_ = at::Tensor();
  seed_ = seed;
  period_ = period;
}

at::Tensor GyroDropoutMasks::selected(int64_t features) {
  if (masks_.defined() && masks_.size(1) != features) {
    throw InputError(fmt::format("gyro_dropout: layer {}'s masks were made for {} features, not {}", layer_,
                                 masks_.size(1), features));
  }
  if (!masks_.defined()) masks_ = gyro_dropout_masks(seed_, layer_, features, options_.p(), options_.sigma());
  const std::vector<int64_t> picks = gyro_dropout_selection(seed_, layer_, period_, options_.sigma(), options_.tau());
  return masks_.index_select(0, at::tensor(picks, at::kLong));
}

at::Tensor GyroDropoutMasks::forward(const at::Tensor& x, bool training) {
  if (!training) return x;
  check_input(x, masks_.defined() ? masks_.size(1) : -1, layer_);
  if (x.size(0) == 0) return x.clone();
  if (!selected_.defined() || selected_.device() != x.device() || selected_.scalar_type() != x.scalar_type()) {
    selected_ = selected(x.size(1)).mul_(static_cast<float>(1.0 / (1.0 - options_.p()))).to(x.device(), x.scalar_type());
  }
  try {
    return apply_rows(x, selected_, place_ ? *place_ : BatchPlace());
  } catch (const InputError& e) {  // only a place that is set refuses rows
    throw InputError(fmt::format("gyro_dropout: layer {}'s input has {}", layer_, e.what()));
  }
}

GyroDropoutLayerImpl::GyroDropoutLayerImpl(std::shared_ptr<GyroDropoutMasks> masks) : masks_(std::move(masks)) {}

at::Tensor GyroDropoutLayerImpl::forward(const at::Tensor& x) { return masks_->forward(x, is_training()); }

void GyroDropoutLayerImpl::pretty_print(std::ostream& stream) const {
  stream << "tessera::GyroDropoutLayer(layer=" << masks_->layer() << ")";
}

// ------------------------------------------------------------------------------------------------ surgery

namespace {

int64_t gyro_dropout_slots(torch::nn::Module& model, const std::function<std::shared_ptr<GyroDropoutMasks>()>& make) {
  int64_t n = 0;
  replace_slots(model, nullptr, [&](const std::string&, torch::nn::AnyModule& current) -> std::optional<torch::nn::AnyModule> {
    if (current.ptr()->as<torch::nn::DropoutImpl>() == nullptr) return std::nullopt;
    ++n;
    if (!make) return std::nullopt;
    return torch::nn::AnyModule(GyroDropoutLayer(make()));
  });
  return n;
}

}  // namespace

std::vector<std::shared_ptr<GyroDropoutMasks>> apply_gyro_dropout(torch::nn::Module& model,
                                                                  const GyroDropoutOptions& options) {
  GyroDropoutOptions checked = options;
  validate_options(checked, "gyro_dropout");
  check_sizes(checked);
  std::vector<std::shared_ptr<GyroDropoutMasks>> layers;
  gyro_dropout_slots(model, [&] {
    layers.push_back(std::make_shared<GyroDropoutMasks>(checked, static_cast<int64_t>(layers.size())));
    return layers.back();
  });
  return layers;
}

int64_t count_gyro_dropout(torch::nn::Module& model) { return gyro_dropout_slots(model, nullptr); }

// ------------------------------------------------------------------------------------------------ the algorithm

GyroDropout::GyroDropout(GyroDropoutOptions options) : options_(std::move(options)) {
  validate_options(options_, "gyro_dropout");
  check_sizes(options_);
  spec_.name = "gyro_dropout";
  // The layers hold no parameters: no optimizer change. Before each batch it moves the layers to the batch's period
  // (part of the module tree's behaviour, declared as the structure it changes), before selective backprop's
  // scoring forward at AfterDataloader.
  spec_.accesses = {{Event::Init, {Resource::ModelStructure}, {Resource::ModelStructure}},
                    {Event::BeforeDataloader, {Resource::ModelStructure}, {Resource::ModelStructure}}};
  spec_.required_on_load = true;
}

std::shared_ptr<GyroDropoutMasks> GyroDropout::add_layer() {
  layers_.push_back(std::make_shared<GyroDropoutMasks>(options_, static_cast<int64_t>(layers_.size())));
  layers_.back()->follow(place_);
  return layers_.back();
}

void GyroDropout::check(const State& state) const {
  (void)gyro_dropout_period_length(state.time.total_batches(), options_.sigma(), options_.tau());
  const SurgeryCount planned = surgery(*state.model, *this, nullptr, /*dry_run=*/true, "dropouts",
                                       [&] { return count_gyro_dropout(*state.model); });
  if (planned.layers > 0) return;
  throw InputError(fmt::format(
      "the model has no dropout layer{} (a torch::nn::Dropout module; a call of the dropout function cannot be "
      "replaced), so it would have no effect; give the model dropout (mlp, resnet and gpt: dropout: 0.1) or remove it",
      planned.external ? " (torch.nn.Dropout)" : " in a slot"));
}

void GyroDropout::apply(Event event, State& state, Logger& logger) {
  if (event == Event::Init) {
    layers_.clear();
    place_ = state.batch_place;
    if (!state.model->external_surgery(*this, nullptr, /*dry_run=*/false)) {
      layers_ = apply_gyro_dropout(*state.model, options_);
      for (const auto& layer : layers_) layer->follow(place_);
    }
    logger.info(fmt::format("gyro_dropout: {} dropout layers replaced (p {}, sigma {}, tau {}; new masks every {} "
                            "batches)",
                            layers_.size(), options_.p(), options_.sigma(), options_.tau(),
                            gyro_dropout_period_length(state.time.total_batches(), options_.sigma(), options_.tau())));
    return;
  }
  const int64_t length = gyro_dropout_period_length(state.time.total_batches(), options_.sigma(), options_.tau());
  for (const auto& layer : layers_) layer->select(state.seed, state.timestamp.batch / length);
}

}  // namespace tessera::algorithms
