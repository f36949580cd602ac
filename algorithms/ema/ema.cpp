#include "ema.h"

#include <cmath>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/callback.h>
#include <tessera/error.h>

namespace tessera::algorithms {
namespace {

const Time kDefaultHalfLife(1000, TimeUnit::Batch);

bool same_time(const Time& a, const Time& b) { return a.unit() == b.unit() && a.as_double() == b.as_double(); }

std::string describe(const at::Tensor& t) {
  return fmt::format("{} {} on {}", c10::str(t.sizes()), c10::toString(t.scalar_type()), t.device().str());
}

bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.device() == b.device();
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> averaged_weights(torch::nn::Module& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (item.value().defined()) out.emplace_back("param/" + item.key(), item.value());
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    if (item.value().defined()) out.emplace_back("buffer/" + item.key(), item.value());
  }
  return out;
}

std::vector<at::Tensor> weights_matching(torch::nn::Module& model, const std::vector<std::string>& names,
                                         const std::vector<at::Tensor>& averages, const std::string& who) {
  // A model changed by surgery after averaging started would otherwise be averaged against the wrong tensors.
  std::vector<at::Tensor> out;
  out.reserve(names.size());
  const auto weights = averaged_weights(model);
  bool same = weights.size() == names.size() && averages.size() == names.size();
  for (size_t i = 0; same && i < weights.size(); ++i) {
    same = weights[i].first == names[i] && same_layout(weights[i].second, averages[i]);
    out.push_back(weights[i].second);
  }
  if (!same) {
    throw Error(fmt::format(
        "{}: the model's parameters and buffers ({} of them) are no longer those the average was started on ({}): "
        "the model was changed after averaging started (surgery after the start?). Apply surgery at init (as "
        "blurpool does), or start averaging after it",
        who, weights.size(), names.size()));
  }
  return out;
}

void check_ema_options(const EMAOptions& o, const std::string& where) {
  const Time& h = o.half_life();
  if (h.unit() == TimeUnit::Token) {
    throw InputError(fmt::format("{}.half_life: \"{}\" is not supported; expected batches, epochs, samples or a "
                                 "duration (e.g. 1000ba, 1ep, 0.1dur)",
                                 where, h.str()));
  }
  if (h.as_double() <= 0) throw InputError(fmt::format("{}.half_life: must be > 0, got {}", where, h.str()));
  const Time& u = o.update_interval();
  if (u.unit() != TimeUnit::Batch && u.unit() != TimeUnit::Epoch) {
    throw InputError(fmt::format("{}.update_interval: \"{}\" is not supported; expected batches or epochs (e.g. 1ba, "
                                 "5ep), or 0ba for one unit of half_life's unit",
                                 where, u.str()));
  }
  if (o.ema_start().unit() == TimeUnit::Token) {
    throw InputError(fmt::format("{}.ema_start: \"{}\" is not supported; expected epochs, batches, samples or a "
                                 "duration (e.g. 0.5dur, 2ep)",
                                 where, o.ema_start().str()));
  }
  if (o.smoothing() > 0 && !same_time(h, kDefaultHalfLife)) {
    throw InputError(fmt::format("{}: give half_life or smoothing, not both (half_life {}, smoothing {}); smoothing "
                                 "s per update and half-life h are related by s = 2^(-update_interval/h)",
                                 where, h.str(), o.smoothing()));
  }
}

Time ema_update_interval(const EMAOptions& o) {
  if (o.update_interval().value() > 0) return o.update_interval();
  const bool epochs = o.smoothing() == 0 && o.half_life().unit() == TimeUnit::Epoch;
  return epochs ? Time(1, TimeUnit::Epoch) : Time(1, TimeUnit::Batch);
}

double ema_smoothing(const EMAOptions& o, const TimeContext* time) {
  check_ema_options(o);
  if (o.smoothing() > 0) return o.smoothing();
  const Time& h = o.half_life();
  const Time u = ema_update_interval(o);
  double ratio = 0;
  if (h.unit() == u.unit()) {
    ratio = u.as_double() / h.as_double();
  } else if (time == nullptr) {
    throw InputError(fmt::format("ema.half_life: {} is in another unit than the update interval {}; converting it "
                                 "needs the run's length and batches per epoch (it is known in a run; give both in "
                                 "the same unit to compute it outside one)",
                                 h.str(), u.str()));
  } else {
    ratio = time->to_batches(u) / time->to_batches(h);
  }
  return std::exp2(-ratio);
}

void compute_ema(const std::vector<at::Tensor>& ema, const std::vector<at::Tensor>& current, double smoothing) {
  check_option("compute_ema", "smoothing", smoothing, Range::closed(0, 1));
  if (ema.size() != current.size()) {
    throw InputError(fmt::format("compute_ema: {} averages for {} tensors; give one average per tensor, in the "
                                 "same order (the model's parameters, then its buffers)",
                                 ema.size(), current.size()));
  }
  // Floating pairs grouped by dtype and device, so that each group is one multi-tensor op (fast path on CUDA).
  struct Group {
    at::ScalarType dtype;
    c10::Device device;
    std::vector<at::Tensor> ema, current;
  };
  std::vector<Group> groups;
  std::vector<size_t> copied;
  for (size_t i = 0; i < ema.size(); ++i) {
    if (!ema[i].defined() || !current[i].defined() || !same_layout(ema[i], current[i])) {
      throw InputError(fmt::format("compute_ema: tensor {} does not match its average ({} against {}); give averages "
                                   "with the shapes, dtypes and devices of the tensors",
                                   i, current[i].defined() ? describe(current[i]) : "undefined",
                                   ema[i].defined() ? describe(ema[i]) : "undefined"));
    }
    if (!at::isFloatingType(ema[i].scalar_type())) {
      copied.push_back(i);
      continue;
    }
    Group* g = nullptr;
    for (auto& candidate : groups) {
      if (candidate.dtype == ema[i].scalar_type() && candidate.device == ema[i].device()) g = &candidate;
    }
    if (g == nullptr) g = &groups.emplace_back(Group{ema[i].scalar_type(), ema[i].device(), {}, {}});
    g->ema.push_back(ema[i]);
    g->current.push_back(current[i].detach());
  }
  at::NoGradGuard no_grad;
  for (auto& g : groups) {
    at::_foreach_mul_(g.ema, at::Scalar(smoothing));
    at::_foreach_add_(g.ema, g.current, at::Scalar(1.0 - smoothing));
  }
  for (size_t i : copied) ema[i].copy_(current[i]);
}

void compute_ema_by_name(const std::vector<std::pair<std::string, at::Tensor>>& weights,
                         const std::vector<std::pair<std::string, at::Tensor>>& averages, double smoothing) {
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, t] : averages) by_name.emplace(name, t);
  std::vector<at::Tensor> ema, current;
  for (const auto& [name, t] : weights) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      throw InputError(fmt::format("compute_ema: ema_model has no {} (give a copy of the model, e.g. from clone())",
                                   name));
    }
    ema.push_back(it->second);
    current.push_back(t);
    by_name.erase(it);
  }
  if (!by_name.empty()) {
    throw InputError(fmt::format("compute_ema: ema_model has {} that the model lacks (give a copy of the model)",
                                 by_name.begin()->first));
  }
  compute_ema(ema, current, smoothing);
}

void compute_ema(torch::nn::Module& model, torch::nn::Module& ema_model, double smoothing) {
  compute_ema_by_name(averaged_weights(model), averaged_weights(ema_model), smoothing);
}

EMA::EMA(EMAOptions options) : options_(std::move(options)) {
  validate_options(options_, "ema");
  check_ema_options(options_);
  interval_ = ema_update_interval(options_);
  spec_.name = "ema";
  const Event update = interval_.unit() == TimeUnit::Epoch ? Event::EpochEnd : Event::BatchEnd;
  const std::vector<Resource> weights = {Resource::Parameters, Resource::Buffers};
  spec_.accesses = {{update, weights, {}},
                    {Event::EvalStart, {}, weights},
                    {Event::EvalEnd, {}, weights},
                    {Event::FitEnd, {}, weights},
                    {Event::AfterLoad, {}, weights}};
  spec_.order = {{OrderRule::Relation::After, Selector::writers_of(Resource::Parameters), update,
                  "it averages the weights as the step and every other change of the batch left them"}};
  spec_.precision_note =
      "the average has the parameters' dtype (float32 under amp_bf16 and amp_fp16: autocast never changes "
      "parameters); a step the loss scaler skips is not averaged";
}

bool EMA::match(Event event, const State& state) const {
  switch (event) {
    case Event::BatchEnd:
    case Event::EpochEnd: {
      if (!spec_.acts_on(event) || !state.time.reached(state.timestamp, options_.ema_start())) return false;
      const int64_t now = interval_.unit() == TimeUnit::Epoch ? state.timestamp.epoch : state.timestamp.batch;
      if (now % interval_.value() != 0) return false;
      // No optimizer step since the last update (skipped by the loss scaler or nonfinite_loss: skip): the weights
      // did not move, and averaging them again would count them twice.
      return !started_ || state.optimizer->step_count() != steps_at_update_;
    }
    case Event::EvalStart: return started_ && !holds_averaged_weights();
    case Event::EvalEnd: return swapped_for_eval_;
    case Event::FitEnd: return started_ && state.time.reached(state.timestamp, state.time.max_duration);
    case Event::AfterLoad: return true;
    default: return false;
  }
}

void EMA::apply(Event event, State& state, Logger& logger) {
  Model& model = *state.model;
  switch (event) {
    case Event::BatchEnd:
    case Event::EpochEnd:
      update(state, logger);
      return;
    case Event::EvalStart:
      swap_in(model);
      swapped_for_eval_ = true;
      return;
    case Event::EvalEnd:
      swap_out(model);
      swapped_for_eval_ = false;
      return;
    case Event::FitEnd:
      swap_in(model);
      return;
    case Event::AfterLoad:
      after_load(state);
      return;
    default: return;
  }
}

void EMA::check(const State& state) const { (void)ema_smoothing(options_, &state.time); }

void EMA::update(State& state, Logger& logger) {
  const int64_t steps = state.optimizer->step_count();
  if (!started_) {
    names_.clear();
    ema_.clear();
    at::NoGradGuard no_grad;
    for (auto& [name, t] : averaged_weights(*state.model)) {
      names_.push_back(name);
      ema_.push_back(t.detach().clone());
    }
    started_ = true;
    steps_at_update_ = steps;
    logger.info(fmt::format("ema: averaging started at batch {} (smoothing {} every {})", state.timestamp.batch,
                            ema_smoothing(options_, &state.time), interval_.str()));
    return;
  }
  steps_at_update_ = steps;
  compute_ema(ema_, weights_matching(*state.model, names_, ema_, "ema"), ema_smoothing(options_, &state.time));
}

void EMA::swap_in(torch::nn::Module& model) {
  if (holds_averaged_weights()) return;
  const std::vector<at::Tensor> weights = weights_matching(model, names_, ema_, "ema");
  at::NoGradGuard no_grad;
  training_.reserve(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    training_.push_back(weights[i].detach().clone());
    weights[i].detach().copy_(ema_[i]);
  }
}

void EMA::swap_out(torch::nn::Module& model) {
  if (!holds_averaged_weights()) return;
  const std::vector<at::Tensor> weights = weights_matching(model, names_, ema_, "ema");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < weights.size(); ++i) weights[i].detach().copy_(training_[i]);
  training_.clear();
}

std::vector<std::pair<std::string, at::Tensor>> EMA::averages() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < ema_.size(); ++i) out.emplace_back(names_[i], ema_[i]);
  return out;
}

void EMA::copy_averages_to(torch::nn::Module& model) const {
  if (!started_) throw InputError("ema: averaging has not started yet (ema_start not reached); nothing to copy");
  const std::vector<at::Tensor> weights = weights_matching(model, names_, ema_, "ema");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < weights.size(); ++i) weights[i].detach().copy_(ema_[i]);
}

StateDict EMA::state_dict() const {
  StateDict out{{"started", at::scalar_tensor(started_ ? 1 : 0, at::kLong)},
                {"steps_at_update", at::scalar_tensor(steps_at_update_, at::kLong)}};
  for (size_t i = 0; i < ema_.size(); ++i) out[names_[i]] = ema_[i];
  for (size_t i = 0; i < training_.size(); ++i) out["training/" + names_[i]] = training_[i];
  return out;
}

void EMA::load_state_dict(const StateDict& state) {
  for (const char* key : {"started", "steps_at_update"}) {
    if (state.find(key) == state.end()) throw InputError(std::string("ema: the checkpoint has no ") + key + " entry");
  }
  loaded_ = state;
}

void EMA::after_load(State& state) {
  torch::nn::Module& model = *state.model;
  const bool complete = state.fit_complete;  // the model holds the averages after a completed fit
  if (loaded_.empty()) {
    // Weights loaded without this algorithm's state (weights_only), or no checkpoint: whatever the model holds now
    // is what trains.
    training_.clear();
    return;
  }
  StateDict loaded = std::move(loaded_);
  loaded_.clear();
  swapped_for_eval_ = false;
  training_.clear();
  names_.clear();
  ema_.clear();
  started_ = loaded.at("started").item<int64_t>() != 0;
  steps_at_update_ = loaded.at("steps_at_update").item<int64_t>();
  loaded.erase("started");
  loaded.erase("steps_at_update");
  if (!started_) {
    if (!loaded.empty()) {
      throw InputError("ema: the checkpoint has averages (" + loaded.begin()->first +
                       ") but says averaging had not started");
    }
    return;
  }
  std::vector<at::Tensor> training;
  for (auto& [name, t] : averaged_weights(model)) {
    auto take = [&](const std::string& key) -> at::Tensor {
      auto it = loaded.find(key);
      if (it == loaded.end()) return {};
      at::Tensor saved = it->second;
      loaded.erase(it);
      if (saved.sizes() != t.sizes() || saved.scalar_type() != t.scalar_type()) {
        throw InputError(fmt::format("ema: the checkpoint's {} is {}, the model's is {}: not the model it was saved "
                                     "with",
                                     key, describe(saved), describe(t)));
      }
      return saved.to(t.device()).clone();
    };
    at::Tensor average = take(name);
    if (!average.defined()) {
      throw InputError(fmt::format("ema: the checkpoint has no average for {}: not the model it was saved with", name));
    }
    names_.push_back(name);
    ema_.push_back(average);
    if (at::Tensor kept = take("training/" + name); kept.defined()) training.push_back(kept);
  }
  if (!loaded.empty()) {
    throw InputError(fmt::format("ema: the checkpoint has {}, which the model lacks: not the model it was saved with",
                                 loaded.begin()->first));
  }
  if (!training.empty() && training.size() != ema_.size()) {
    throw InputError("ema: the checkpoint keeps the training weights of only some parameters and buffers");
  }
  if (!training.empty()) {
    // Saved while the model held the averages (after a completed fit, or during an evaluation): the model's
    // weights just loaded are the averages, the training weights are these.
    training_ = std::move(training);
    if (!complete) swap_out(model);
  } else if (complete) {
    swap_in(model);  // resumed at the end of a completed run: the model keeps the averages, as after fit
  }
}

}  // namespace tessera::algorithms
