#include "swa.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/batchnorm.h>

#include <tessera/algorithms/ema.h>
#include <tessera/algorithms/ghost_batchnorm.h>
#include <tessera/distributed/sync_batch_norm.h>
#include <tessera/amp.h>
#include <tessera/callback.h>
#include <tessera/error.h>

namespace tessera::algorithms {
namespace {

constexpr double kPi = 3.14159265358979323846;

void check_time_unit(const std::string& where, const char* name, const Time& t) {
  if (t.unit() == TimeUnit::Token) {
    throw InputError(fmt::format("{}.{}: \"{}\" is not supported; expected epochs, batches, samples or a duration "
                                 "(e.g. 0.7dur, 8ep, 500ba)",
                                 where, name, t.str()));
  }
}

/// The options of every batch norm of the model: torch's, and Ghost BatchNorm's and sync_batch_norm's layers (which
/// keep the options of the batch norm they replaced). InputError naming a module with running statistics of another kind.
std::vector<torch::nn::BatchNormOptions*> batchnorm_options(torch::nn::Module& model) {
  std::vector<torch::nn::BatchNormOptions*> out;
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    torch::nn::Module& m = *item.value();
    torch::nn::BatchNormOptions* options = nullptr;
    if (auto* bn = m.as<torch::nn::BatchNorm1dImpl>()) options = &bn->options;
    if (auto* bn = m.as<torch::nn::BatchNorm2dImpl>()) options = &bn->options;
    if (auto* bn = m.as<torch::nn::BatchNorm3dImpl>()) options = &bn->options;
    if (auto* bn = m.as<GhostBatchNormLayerImpl>()) options = &bn->options;
    if (auto* bn = m.as<dist::SyncBatchNormImpl>()) options = &bn->options;
    if (options != nullptr) {
      if (options->track_running_stats()) out.push_back(options);
      continue;
    }
    const auto own = m.named_buffers(/*recurse=*/false);
    if (own.contains("running_mean") || own.contains("running_var")) {
      throw InputError(fmt::format("recompute_batchnorm: module '{}' ({}) keeps running statistics, but only "
                                   "torch's BatchNorm1d/2d/3d and Ghost BatchNorm's and SyncBatchNorm's layers "
                                   "can have theirs "
                                   "recomputed at swa_end (not a PyTorch "
                                   "model's: recompute them after fit, e.g. with torch.optim.swa_utils.update_bn); set "
                                   "recompute_batchnorm: false",
                                   item.key().empty() ? "<model>" : item.key(), m.name()));
    }
  }
  return out;
}

/// The running statistics of the model's batch norms (floating tensors; they are averaged over the ranks).
std::vector<at::Tensor> running_statistics(torch::nn::Module& model) {
  std::vector<at::Tensor> out;
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    const std::string& key = item.key();
    const bool stat = key.size() >= 12 && (key.rfind("running_mean") == key.size() - 12 ||
                                           key.rfind("running_var") == key.size() - 11);
    if (stat && item.value().defined() && item.value().is_floating_point()) out.push_back(item.value());
  }
  return out;
}

}  // namespace

void check_swa_options(const SWAOptions& o, const std::string& where) {
  check_time_unit(where, "swa_start", o.swa_start());
  check_time_unit(where, "swa_end", o.swa_end());
  const Time& u = o.update_interval();
  if ((u.unit() != TimeUnit::Batch && u.unit() != TimeUnit::Epoch) || u.value() <= 0) {
    throw InputError(fmt::format("{}.update_interval: \"{}\" is not supported; expected a positive number of batches "
                                 "or epochs (e.g. 1ep, 10ba)",
                                 where, u.str()));
  }
  if (o.swa_start().unit() == o.swa_end().unit() && o.swa_start().as_double() >= o.swa_end().as_double()) {
    throw InputError(fmt::format("{}.swa_end: {} is not after swa_start {}; averaging needs swa_start < swa_end", where,
                                 o.swa_end().str(), o.swa_start().str()));
  }
}

void swa_update(const std::vector<at::Tensor>& average, const std::vector<at::Tensor>& current, int64_t count) {
  if (count < 0) {
    throw InputError(fmt::format("swa_update: count must be >= 0 (snapshots already averaged), got {}", count));
  }
  compute_ema(average, current, static_cast<double>(count) / static_cast<double>(count + 1));
}

void swa_update_by_name(const std::vector<std::pair<std::string, at::Tensor>>& weights,
                        const std::vector<std::pair<std::string, at::Tensor>>& averages, int64_t count) {
  if (count < 0) {
    throw InputError(fmt::format("swa_update: count must be >= 0 (snapshots already averaged), got {}", count));
  }
  compute_ema_by_name(weights, averages, static_cast<double>(count) / static_cast<double>(count + 1));
}

void swa_update(torch::nn::Module& average_model, torch::nn::Module& model, int64_t count) {
  swa_update_by_name(averaged_weights(model), averaged_weights(average_model), count);
}

double swa_annealed_lr(double start_lr, double swa_lr, double progress, const std::string& strategy) {
  check_option_as<SWAOptions>("swa_annealed_lr", "anneal_strategy", strategy);
  check_option("swa_annealed_lr", "start_lr", start_lr, Range::at_least(0));
  check_option("swa_annealed_lr", "swa_lr", swa_lr, Range::at_least(0));
  const double p = std::clamp(progress, 0.0, 1.0);
  const double f = strategy == "cos" ? (1.0 - std::cos(kPi * p)) / 2.0 : p;
  return (1.0 - f) * start_lr + f * swa_lr;  // exactly start_lr at p = 0 and swa_lr at p = 1
}

int64_t count_batchnorm(torch::nn::Module& model) { return static_cast<int64_t>(batchnorm_options(model).size()); }

std::vector<at::Tensor> recompute_batchnorm(torch::nn::Module& model, const std::function<void()>& forwards) {
  const std::vector<torch::nn::BatchNormOptions*> options = batchnorm_options(model);
  if (options.empty()) return {};
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    torch::nn::Module& m = *item.value();
    if (auto* bn = m.as<torch::nn::BatchNorm1dImpl>()) bn->reset_running_stats();
    if (auto* bn = m.as<torch::nn::BatchNorm2dImpl>()) bn->reset_running_stats();
    if (auto* bn = m.as<torch::nn::BatchNorm3dImpl>()) bn->reset_running_stats();
    if (auto* bn = m.as<dist::SyncBatchNormImpl>()) bn->reset_running_stats();
    if (auto* bn = m.as<GhostBatchNormLayerImpl>(); bn != nullptr && bn->running_mean.defined()) {
      at::NoGradGuard no_grad;
      bn->running_mean.zero_();
      bn->running_var.fill_(1);
      if (bn->num_batches_tracked.defined()) bn->num_batches_tracked.zero_();
    }
  }
  struct Restore {
    torch::nn::Module& model;
    bool training;
    std::vector<std::pair<torch::nn::BatchNormOptions*, c10::optional<double>>> momenta;
    ~Restore() {
      for (auto& [o, m] : momenta) o->momentum(m);
      model.train(training);
    }
  } restore{model, model.is_training(), {}};
  for (auto* o : options) {
    restore.momenta.emplace_back(o, o->momentum());
    o->momentum(c10::nullopt);  // cumulative: the k-th batch enters with weight 1/k
  }
  model.train(true);
  {
    at::NoGradGuard no_grad;
    forwards();
  }
  return running_statistics(model);
}

std::vector<at::Tensor> recompute_batchnorm(Model& model, const std::vector<Batch>& batches) {
  return recompute_batchnorm(static_cast<torch::nn::Module&>(model), [&] {
    for (const Batch& b : batches) (void)model.forward(b);
  });
}

SWA::SWA(SWAOptions options) : options_(std::move(options)) {
  validate_options(options_, "swa");
  check_swa_options(options_);
  spec_.name = "swa";
  update_event_ = options_.update_interval().unit() == TimeUnit::Epoch ? Event::EpochEnd : Event::BatchEnd;
  const std::vector<Resource> weights = {Resource::Parameters, Resource::Buffers};
  // Snapshots at the update event; the average replaces the weights at BatchEnd or EpochEnd (swa_end).
  spec_.accesses = {{Event::BatchEnd, weights, weights}, {Event::EpochEnd, weights, weights}};
  if (options_.schedule_swa_lr()) spec_.accesses.push_back({Event::BatchStart, {}, {Resource::LearningRate}});
  spec_.accesses.push_back({Event::AfterLoad, weights, {}});
  for (Event e : {Event::BatchEnd, Event::EpochEnd}) {
    spec_.order.push_back({OrderRule::Relation::After, Selector::writers_of(Resource::Parameters), e,
                           "it averages the weights as the step and every other change of the batch left them"});
  }
  spec_.conflicts.push_back(
      {Selector::named("ema"), /*hard=*/false,
       "both replace the weights by an average: EMA's averages (which then include SWA's weights) are what "
       "evaluations see and what the model keeps at fit end, so SWA's average is not the final model"});
  spec_.precision_note =
      "the average has the parameters' dtype (float32 under amp_bf16 and amp_fp16: autocast never changes "
      "parameters); a step the loss scaler skips is not a snapshot; the batch-norm pass runs under the run's autocast";
}

bool SWA::update_due(Event event, const State& state) const {
  if (finished_ || event != update_event_ || !state.time.reached(state.timestamp, options_.swa_start())) return false;
  const Time& u = options_.update_interval();
  const int64_t now = u.unit() == TimeUnit::Epoch ? state.timestamp.epoch : state.timestamp.batch;
  if (now % u.value() != 0) return false;
  // No optimizer step since the last snapshot: the same weights would count twice.
  return count_ == 0 || state.optimizer->step_count() != steps_at_update_;
}

bool SWA::end_due(Event event, const State& state) const {
  if (finished_ || !state.time.reached(state.timestamp, options_.swa_end())) return false;
  // An epoch-interval average ends at the epoch's end, after the epoch's snapshot, not at its last BatchEnd.
  return !(event == Event::BatchEnd && update_event_ == Event::EpochEnd &&
           state.timestamp.batch_in_epoch >= state.time.batches_per_epoch);
}

bool SWA::match(Event event, const State& state) const {
  switch (event) {
    case Event::BatchStart:
      return options_.schedule_swa_lr() && state.time.reached(state.timestamp, options_.swa_start());
    case Event::BatchEnd:
    case Event::EpochEnd: return update_due(event, state) || end_due(event, state);
    case Event::AfterLoad: return true;
    default: return false;
  }
}

void SWA::apply(Event event, State& state, Logger& logger) {
  switch (event) {
    case Event::BatchStart: set_learning_rate(state); return;
    case Event::BatchEnd:
    case Event::EpochEnd:
      if (update_due(event, state)) update(state);
      if (end_due(event, state)) finish(state, logger);
      return;
    case Event::AfterLoad: after_load(state); return;
    default: return;
  }
}

void SWA::check(const State& state) const {
  const TimeContext& t = state.time;
  const double start = t.to_batches(options_.swa_start()), end = t.to_batches(options_.swa_end());
  if (start >= end) {
    throw InputError(fmt::format("swa_start {} ({:g} batches) is not before swa_end {} ({:g} batches)",
                                 options_.swa_start().str(), start, options_.swa_end().str(), end));
  }
  if (end > t.total_batches() + 1e-9) {
    throw InputError(fmt::format("swa_end {} ({:g} batches) is after max_duration {} ({:g} batches): the average "
                                 "would never replace the weights",
                                 options_.swa_end().str(), end, t.max_duration.str(), t.total_batches()));
  }
  if (options_.recompute_batchnorm() && state.model) (void)count_batchnorm(*state.model);
}

void SWA::update(State& state) {
  if (count_ == 0) {
    names_.clear();
    average_.clear();
    at::NoGradGuard no_grad;
    for (auto& [name, t] : averaged_weights(*state.model)) {
      names_.push_back(name);
      average_.push_back(t.detach().clone());
    }
  } else {
    swa_update(average_, weights_matching(*state.model, names_, average_, "swa"), count_);
  }
  ++count_;
  steps_at_update_ = state.optimizer->step_count();
}

void SWA::finish(State& state, Logger& logger) {
  if (count_ == 0) {
    throw Error(fmt::format("swa: swa_end {} was reached at batch {} with no snapshot taken since swa_start {} "
                            "(one every {}): widen the window or shorten update_interval",
                            options_.swa_end().str(), state.timestamp.batch, options_.swa_start().str(),
                            options_.update_interval().str()));
  }
  Model& model = *state.model;
  {
    const std::vector<at::Tensor> weights = weights_matching(model, names_, average_, "swa");
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < weights.size(); ++i) weights[i].detach().copy_(average_[i]);
  }
  std::string statistics;
  if (options_.recompute_batchnorm() && count_batchnorm(model) > 0) {
    if (!state.pass_over_training_data) {
      throw Error("swa: the trainer offers no pass_over_training_data here, so the batch-norm statistics of the "
                  "averaged weights cannot be recomputed (set recompute_batchnorm: false)");
    }
    // The statistics' tensors (reset in place by recompute_batchnorm), averaged over the ranks after the pass.
    const std::vector<at::Tensor> stats = running_statistics(model);
    int64_t batches = 0;
    recompute_batchnorm(static_cast<torch::nn::Module&>(model), [&] {
      batches = state.pass_over_training_data(
          [&](const Batch& batch) {
            // The run's microbatches (memory) under the run's autocast: the statistics training computes.
            const AutocastScope autocast(state.precision, state.device);
            for (const Batch& part : batch.split(state.microbatch_size)) (void)model.forward(part);
          },
          stats);
    });
    statistics = fmt::format("; batch-norm statistics recomputed over {} batches", batches);
  }
  logger.info(fmt::format("swa: the average of {} snapshots replaced the weights at batch {}{}", count_,
                          state.timestamp.batch, statistics));
  finished_ = true;
  names_.clear();
  average_.clear();
}

void SWA::set_learning_rate(State& state) {
  if (lr_start_batch_ < 0) {
    // The schedulers' factor at swa_start, as the trainer set it for this batch.
    double alpha = 1.0;
    for (const auto& s : state.schedulers) alpha *= s->alpha(state.timestamp, state.time);
    lr_start_batch_ = state.timestamp.batch;
    lr_start_factor_ = alpha;
  }
  const double anneal =
      static_cast<double>(options_.anneal_steps()) * state.time.to_batches(options_.update_interval());
  const double since = static_cast<double>(state.timestamp.batch - lr_start_batch_);
  const double progress = anneal > 0 ? since / anneal : 1.0;
  for (auto& group : state.optimizer->param_groups()) {
    const double start = group.initial_lr * lr_start_factor_;
    group.lr = swa_annealed_lr(start, options_.swa_lr() > 0 ? options_.swa_lr() : start, progress,
                               options_.anneal_strategy());
  }
}

std::vector<std::pair<std::string, at::Tensor>> SWA::averages() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < average_.size(); ++i) out.emplace_back(names_[i], average_[i]);
  return out;
}

StateDict SWA::state_dict() const {
  StateDict out{{"count", at::scalar_tensor(count_, at::kLong)},
                {"finished", at::scalar_tensor(finished_ ? 1 : 0, at::kLong)},
                {"steps_at_update", at::scalar_tensor(steps_at_update_, at::kLong)},
                {"lr_start_batch", at::scalar_tensor(lr_start_batch_, at::kLong)},
                {"lr_start_factor", at::scalar_tensor(lr_start_factor_, at::kDouble)}};
  for (size_t i = 0; i < average_.size(); ++i) out[names_[i]] = average_[i];
  return out;
}

void SWA::load_state_dict(const StateDict& state) {
  for (const char* key : {"count", "finished", "steps_at_update", "lr_start_batch", "lr_start_factor"}) {
    if (state.find(key) == state.end()) throw InputError(std::string("swa: the checkpoint has no ") + key + " entry");
  }
  loaded_ = state;
}

void SWA::after_load(State& state) {
  if (loaded_.empty()) return;  // no checkpoint, or weights only: the run starts its average afresh
  StateDict loaded = std::move(loaded_);
  loaded_.clear();
  auto take = [&](const std::string& key) {
    at::Tensor t = loaded.at(key);
    loaded.erase(key);
    return t;
  };
  count_ = take("count").item<int64_t>();
  finished_ = take("finished").item<int64_t>() != 0;
  steps_at_update_ = take("steps_at_update").item<int64_t>();
  lr_start_batch_ = take("lr_start_batch").item<int64_t>();
  lr_start_factor_ = take("lr_start_factor").item<double>();
  names_.clear();
  average_.clear();
  if (count_ > 0 && !finished_) {
    for (auto& [name, t] : averaged_weights(*state.model)) {
      auto it = loaded.find(name);
      if (it == loaded.end()) {
        throw InputError(
            fmt::format("swa: the checkpoint has no average for {}: not the model it was saved with", name));
      }
      if (it->second.sizes() != t.sizes() || it->second.scalar_type() != t.scalar_type()) {
        throw InputError(fmt::format("swa: the checkpoint's {} is {} {}, the model's is {} {}: not the model it was "
                                     "saved with",
                                     name, c10::str(it->second.sizes()), c10::toString(it->second.scalar_type()),
                                     c10::str(t.sizes()), c10::toString(t.scalar_type())));
      }
      names_.push_back(name);
      average_.push_back(it->second.to(t.device()).clone());
      loaded.erase(it);
    }
  }
  if (!loaded.empty()) {
    throw InputError(fmt::format("swa: the checkpoint has {}, which {}", loaded.begin()->first,
                                 count_ > 0 && !finished_ ? "the model lacks: not the model it was saved with"
                                                          : "a state with no average in progress cannot have"));
  }
}

}  // namespace tessera::algorithms
