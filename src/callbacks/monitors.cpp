#include <fmt/format.h>
#include <sys/resource.h>
#include <tessera/callbacks/monitors.h>
#include <tessera/error.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <string_view>
#include <utility>
#include <vector>

#ifdef TESSERA_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace tessera::callbacks {
namespace {

/// Whether a monitor logging every `interval` batches logs at this one.
bool due(const State& state, int64_t interval) { return state.timestamp.batch % interval == 0; }

double gigabytes(int64_t bytes) { return static_cast<double>(bytes) / 1e9; }

/// Seconds in one `time_unit` (an option validated as seconds, minutes, hours or days).
double seconds_per(const std::string& time_unit) {
  const std::map<std::string, double> seconds{{"seconds", 1}, {"minutes", 60}, {"hours", 3600}, {"days", 86400}};
  return seconds.at(time_unit);
}

}  // namespace

// ------------------------------------------------------------------------------------------------ FlopCounter

struct FlopCounterAccess {
  /// The innermost live counter of this thread, and how many counted ops are running on it.
  static thread_local FlopCounter* current;
  static thread_local int depth;

  /// Product: mm, bmm ([(B,) M, K] x [(B,) K, N] from input 0); ProductWithBias: addmm, baddbmm (from input 1).
  enum class Kind { None, Product, ProductWithBias, Convolution, Attention };
  static Kind kind(const char* name) {
    static const std::map<std::string, Kind, std::less<>> kinds{
        {"aten::mm", Kind::Product},
        {"aten::bmm", Kind::Product},
        {"aten::addmm", Kind::ProductWithBias},
        {"aten::baddbmm", Kind::ProductWithBias},
        {"aten::convolution", Kind::Convolution},
        {"aten::_scaled_dot_product_flash_attention", Kind::Attention},
        {"aten::_scaled_dot_product_flash_attention_for_cpu", Kind::Attention},
        {"aten::_scaled_dot_product_efficient_attention", Kind::Attention},
        {"aten::_scaled_dot_product_cudnn_attention", Kind::Attention},
    };
    const auto it = kinds.find(std::string_view(name));
    return it == kinds.end() ? Kind::None : it->second;
  }

  static double product(c10::IntArrayRef sizes, size_t from = 0, size_t to = SIZE_MAX) {
    double p = 1;
    for (size_t i = from; i < std::min(to, sizes.size()); ++i) p *= static_cast<double>(sizes[i]);
    return p;
  }
  static c10::IntArrayRef sizes(const c10::IValue& v) {
    return v.isTensor() ? v.toTensor().sizes() : c10::IntArrayRef();
  }
  static std::vector<int64_t> ints(c10::ArrayRef<const c10::IValue> in, size_t i) {
    return i < in.size() && in[i].isIntList() ? in[i].toIntVector() : std::vector<int64_t>{};
  }

  /// 2 per multiply-add of the op, from its inputs (read when it starts: LibTorch 2.x keeps them only then).
  static double flops(Kind k, const at::RecordFunction& fn) {
    const auto in = fn.inputs();
    switch (k) {
      case Kind::Product:
      case Kind::ProductWithBias: {  // 2 · (B ·) M · K · N
        const size_t first = k == Kind::Product ? 0 : 1;
        const auto a = sizes(in[first]), b = sizes(in[first + 1]);
        return a.empty() || b.empty() ? 0 : 2 * product(a) * static_cast<double>(b.back());
      }
      case Kind::Convolution: {
        // convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups): weight
        // [C_out, C_in / groups, k...] (transposed: [C_in, C_out / groups, k...]); each output element (each input
        // element, transposed) takes weight.size(1) · prod(k) multiply-adds.
        const auto x = sizes(in[0]), w = sizes(in[1]);
        if (x.size() < 3 || w.size() != x.size()) return 0;
        const double per_element = 2 * product(w, 1);
        if (in.size() > 6 && in[6].isBool() && in[6].toBool()) return product(x) * per_element;
        const auto stride = ints(in, 3), padding = ints(in, 4), dilation = ints(in, 5);
        double outputs = static_cast<double>(x[0]) * static_cast<double>(w[0]);
        // One value in a list stands for every spatial dimension (conv2d(x, w, {}, 1, 1)).
        auto at = [](const std::vector<int64_t>& v, size_t i, int64_t otherwise) {
          return v.empty() ? otherwise : v.size() == 1 ? v[0] : i < v.size() ? v[i] : otherwise;
        };
        for (size_t d = 2; d < x.size(); ++d) {
          const int64_t s = at(stride, d - 2, 1), p = at(padding, d - 2, 0), dil = at(dilation, d - 2, 1);
          outputs *= static_cast<double>(std::max<int64_t>(0, (x[d] + 2 * p - dil * (w[d] - 1) - 1) / s + 1));
        }
        return outputs * per_element;
      }
      case Kind::Attention: {  // q [..., S, D], k [..., S_kv, D], v [..., S_kv, D_v]: q·kᵀ and softmax·v
        const auto q = sizes(in[0]), key = sizes(in[1]), v = sizes(in[2]);
        if (q.size() < 2 || key.size() < 2 || v.empty()) return 0;
        const double rows = product(q, 0, q.size() - 1), keys = static_cast<double>(key[key.size() - 2]);
        return 2 * rows * keys * (static_cast<double>(q.back()) + static_cast<double>(v.back()));
      }
      case Kind::None:
        break;
    }
    return 0;
  }

  /// A counted op's start returns one of these, so that its end knows without looking the name up again.
  struct Counted : at::ObserverContext {};

  static std::unique_ptr<at::ObserverContext> start(const at::RecordFunction& fn) {
    const Kind k = kind(fn.name());
    if (k == Kind::None) return nullptr;
    if (depth++ == 0) {  // an op inside a counted one is part of it
      const double f = flops(k, fn);
      for (FlopCounter* c = current; c != nullptr; c = c->outer_) c->flops_ += f;
    }
    return std::make_unique<Counted>();
  }
  static void end(const at::RecordFunction&, at::ObserverContext* counted) {
    if (counted != nullptr) --depth;
  }
};

thread_local FlopCounter* FlopCounterAccess::current = nullptr;
thread_local int FlopCounterAccess::depth = 0;

FlopCounter::FlopCounter() : outer_(FlopCounterAccess::current) {
  if (outer_ == nullptr) {
    FlopCounterAccess::depth = 0;
    handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(&FlopCounterAccess::start, &FlopCounterAccess::end)
                                             .needsInputs(true)
                                             .scopes({at::RecordScope::FUNCTION}));
  }
  FlopCounterAccess::current = this;
}

FlopCounter::~FlopCounter() {
  FlopCounterAccess::current = outer_;
  if (outer_ == nullptr) at::removeCallback(handle_);
}

// ------------------------------------------------------------------------------------------------ SpeedMonitor

SpeedMonitor::SpeedMonitor(SpeedMonitorOptions options) : options_(std::move(options)) {
  validate_options(options_, "speed_monitor");
  if (options_.count_flops() && options_.flops_per_sample() > 0) {
    throw InputError("speed_monitor: flops_per_sample and count_flops both say how many FLOPs a batch takes; give "
                     "one of them");
  }
  unit_seconds_ = seconds_per(options_.time_unit());
}

void SpeedMonitor::run_event(Event event, State& state, Logger& logger) {
  if (state.rank != 0) return;
  if (event == Event::FitStart) {
    window_.clear();  // a resumed run measures afresh (the window's batches ran in another process)
  } else if (event == Event::EvalStart) {
    eval_start_ = std::chrono::steady_clock::now();
    in_eval_ = true;
  } else if (event == Event::EvalEnd && in_eval_) {
    eval_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - eval_start_).count();
    in_eval_ = false;
  } else if (event == Event::BatchStart) {
    sample_at_start_ = state.timestamp.sample;
    token_at_start_ = state.timestamp.token;
    batch_flops_ = 0;
  } else if (event == Event::BeforeForward && options_.count_flops()) {
    counter_.reset();  // a forward that raised (an out-of-memory error retried smaller) is not counted
    counter_ = std::make_unique<FlopCounter>();
  } else if (event == Event::AfterForward && counter_) {
    batch_flops_ += counter_->flops();
    counter_.reset();
  } else if (event == Event::BatchEnd) {
    counter_.reset();
    const Timestamp& ts = state.timestamp;
    // The backward of a matrix product or a convolution takes twice its forward (the input's and the weight's
    // gradients).
    const Step step{ts.sample - sample_at_start_, ts.token - token_at_start_, ts.batch_wct, 3 * batch_flops_};
    window_.push_back(step);
    if (static_cast<int64_t>(window_.size()) > options_.window()) window_.pop_front();

    std::map<std::string, double> values;
    if (static_cast<int64_t>(window_.size()) == options_.window()) {
      double seconds = 0, counted = 0;
      int64_t samples = 0, tokens = 0;
      for (const Step& s : window_) {
        seconds += s.seconds;
        samples += s.samples;
        tokens += s.tokens;
        counted += s.flops;
      }
      if (seconds > 0) {
        const double devices = static_cast<double>(std::max(1, state.world_size));
        const double batches_per_sec = static_cast<double>(window_.size()) / seconds;
        const double samples_per_sec = static_cast<double>(samples) / seconds;
        values["throughput/batches_per_sec"] = batches_per_sec;
        values["throughput/samples_per_sec"] = samples_per_sec;
        values["throughput/device/batches_per_sec"] = batches_per_sec;  // every rank takes a step per batch
        values["throughput/device/samples_per_sec"] = samples_per_sec / devices;
        if (tokens > 0) {
          values["throughput/tokens_per_sec"] = static_cast<double>(tokens) / seconds;
          values["throughput/device/tokens_per_sec"] = static_cast<double>(tokens) / seconds / devices;
        }
        if (options_.flops_per_sample() > 0 || options_.count_flops()) {
          const double flops = options_.count_flops() ? counted / seconds * devices
                                                      : samples_per_sec * options_.flops_per_sample();
          values["throughput/flops_per_sec"] = flops;
          values["throughput/device/flops_per_sec"] = flops / devices;
          if (options_.peak_flops() > 0) values["throughput/device/mfu"] = flops / devices / options_.peak_flops();
        }
      }
    }
    values["time/train"] = ts.total_wct / unit_seconds_;
    values["time/eval"] = eval_seconds_ / unit_seconds_;
    values["time/total"] = (ts.total_wct + eval_seconds_) / unit_seconds_;
    logger.log_metrics(values, ts);
  }
}

StateDict SpeedMonitor::state_dict() const {
  return {{"eval_seconds", at::scalar_tensor(eval_seconds_, at::kDouble)}};
}

void SpeedMonitor::load_state_dict(const StateDict& state) { eval_seconds_ = state.at("eval_seconds").item<double>(); }

// ------------------------------------------------------------------------------------------------ RuntimeEstimator

int64_t evaluations_left(const Evaluator& evaluator, const Timestamp& now, const TimeContext& time) {
  const double total = time.total_batches();
  const auto last = static_cast<int64_t>(std::ceil(total - 1e-9));  // the last batch's number
  if (now.batch > last) return 0;
  const Time& every = evaluator.interval;
  if (every.as_double() <= 0) return 1;  // only at the end of fit
  // The interval in batches; epoch intervals fire at the ends of epochs whose number is a multiple.
  const double width = every.unit() == TimeUnit::Epoch
                           ? static_cast<double>(every.value() * std::max<int64_t>(1, time.batches_per_epoch))
                           : time.to_batches(every);
  if (width <= 0) return 1;
  const auto multiples = [&](int64_t batch) {
    return static_cast<int64_t>(std::floor(static_cast<double>(batch) / width + 1e-9));
  };
  // Batches n..last end at a multiple for each multiple passed after batch n - 1; the end of fit evaluates unless the
  // last batch already did.
  int64_t left = multiples(last) - multiples(now.batch - 1);
  if (multiples(last) == multiples(last - 1)) ++left;
  return std::max<int64_t>(0, left);
}

RuntimeEstimator::RuntimeEstimator(RuntimeEstimatorOptions options) : options_(std::move(options)) {
  validate_options(options_, "runtime_estimator");
  unit_seconds_ = seconds_per(options_.time_unit());
}

void EvaluationClock::run_event(Event event, const State& state) {
  if (event == Event::EvalStart) {
    start_ = std::chrono::steady_clock::now();
    running_ = true;
  } else if (event == Event::EvalEnd && running_) {
    runs_[state.eval_label].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    running_ = false;
  }
}

double EvaluationClock::seconds_left(const State& state) const {
  double seconds = 0;
  for (const Evaluator& evaluator : state.evaluators) {
    const auto it = runs_.find(evaluator.label);
    if (it == runs_.end() || it->second.empty()) continue;
    const std::vector<double>& runs = it->second;
    const size_t first = runs.size() > 1 ? 1 : 0;
    double sum = 0;
    for (size_t i = first; i < runs.size(); ++i) sum += runs[i];
    const double mean = sum / static_cast<double>(runs.size() - first);
    seconds += mean * static_cast<double>(evaluations_left(evaluator, state.timestamp, state.time));
  }
  return seconds;
}

void RuntimeEstimator::run_event(Event event, State& state, Logger& logger) {
  if (state.rank != 0) return;
  evaluations_.run_event(event, state);
  if (event == Event::FitStart) {
    batches_seen_ = batches_timed_ = 0;  // a resumed run measures its batches afresh
    seconds_timed_ = 0;
  } else if (event == Event::BatchEnd) {
    if (++batches_seen_ <= options_.skip_batches()) return;
    ++batches_timed_;
    seconds_timed_ += state.timestamp.batch_wct;
    const double batches_left = std::max(0.0, state.time.total_batches() - static_cast<double>(state.timestamp.batch));
    const double seconds =
        seconds_timed_ / static_cast<double>(batches_timed_) * batches_left + evaluations_.seconds_left(state);
    logger.log_metrics({{"wall_clock/remaining_estimate", seconds / unit_seconds_}}, state.timestamp);
  }
}

StateDict RuntimeEstimator::state_dict() const {
  StateDict out;
  for (const auto& [label, runs] : evaluations_.runs()) {
    out["eval_seconds/" + label] = at::tensor(runs, at::kDouble);
  }
  return out;
}

void RuntimeEstimator::load_state_dict(const StateDict& state) {
  evaluations_.runs().clear();
  for (const auto& [key, value] : state) {
    if (key.rfind("eval_seconds/", 0) != 0) continue;
    const at::Tensor runs = value.to(at::kCPU, at::kDouble).contiguous();
    evaluations_.runs()[key.substr(13)] = std::vector<double>(runs.data_ptr<double>(), runs.data_ptr<double>() + runs.numel());
  }
}

// ------------------------------------------------------------------------------------------------ LrMonitor

LrMonitor::LrMonitor(LrMonitorOptions options) : options_(std::move(options)) {
  validate_options(options_, "lr_monitor");
}

void LrMonitor::run_event(Event event, State& state, Logger& logger) {
  if (event != Event::BatchStart || state.rank != 0 || !state.optimizer || !due(state, options_.interval())) return;
  std::map<std::string, double> values;
  const auto& groups = state.optimizer->param_groups();
  for (size_t i = 0; i < groups.size(); ++i) {
    values[fmt::format("lr-{}/group{}", state.optimizer->name(), i)] = groups[i].lr;
  }
  if (const std::optional<double> momentum = state.optimizer->momentum()) {  // set by a schedule (cycle_momentum)
    values[fmt::format("{}-{}", state.optimizer->momentum_option(), state.optimizer->name())] = *momentum;
  }
  logger.log_metrics(values, state.timestamp);
}

// ------------------------------------------------------------------------------------------------ OptimizerMonitor

OptimizerMonitor::OptimizerMonitor(OptimizerMonitorOptions options) : options_(std::move(options)) {
  validate_options(options_, "optimizer_monitor");
}

void OptimizerMonitor::run_event(Event event, State& state, Logger& logger) {
  if (event != Event::AfterTrainBatch || state.rank != 0 || !due(state, options_.interval())) return;
  at::NoGradGuard no_grad;
  std::vector<std::string> names;
  std::vector<at::Tensor> grad_norms, param_norms;
  for (const auto& item : state.model->named_parameters(/*recurse=*/true)) {
    const at::Tensor& grad = item.value().grad();
    if (!grad.defined()) continue;
    names.push_back(item.key());
    grad_norms.push_back(grad.detach().to(at::kFloat).norm());
    param_norms.push_back(item.value().detach().to(at::kFloat).norm());
  }
  if (names.empty()) return;
  // Every norm in one tensor, read back at once: [grad norms..., param norms..., global grad, global param].
  const at::Tensor grads = at::stack(grad_norms), params = at::stack(param_norms);
  const at::Tensor all = at::cat({grads, params, grads.norm().unsqueeze(0), params.norm().unsqueeze(0)})
                             .to(at::kCPU, at::kDouble);
  const double* v = all.data_ptr<double>();
  const size_t n = names.size();
  std::map<std::string, double> values{{"l2_norm/grad/global", v[2 * n]}, {"l2_norm/param/global", v[2 * n + 1]}};
  if (options_.per_parameter()) {
    for (size_t i = 0; i < n; ++i) {
      values["l2_norm/grad/" + names[i]] = v[i];
      values["l2_norm/param/" + names[i]] = v[n + i];
    }
  }
  logger.log_metrics(values, state.timestamp);
}

// ------------------------------------------------------------------------------------------------ MemoryMonitor

HostMemory host_memory() {
  HostMemory m;
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0, resident_pages = 0;
  if (statm >> size_pages >> resident_pages) m.rss_bytes = resident_pages * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
  struct rusage usage {};
  if (::getrusage(RUSAGE_SELF, &usage) == 0) m.peak_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;  // KiB
  m.peak_rss_bytes = std::max(m.peak_rss_bytes, m.rss_bytes);
  return m;
}

MemoryMonitor::MemoryMonitor(MemoryMonitorOptions options) : options_(std::move(options)) {
  validate_options(options_, "memory_monitor");
}

void MemoryMonitor::run_event(Event event, State& state, Logger& logger) {
  if (state.rank != 0) return;
#ifndef TESSERA_CUDA
  if (event == Event::FitStart && state.device.is_cuda()) {
    logger.warn("memory_monitor: this build of Tessera has no access to the CUDA allocator's statistics (built "
                "without TESSERA_CUDA; docs/kernels.md); only the host's memory is logged");
  }
#endif
  if (event != Event::AfterTrainBatch || !due(state, options_.interval())) return;
  const HostMemory host = host_memory();
  std::map<std::string, double> values{{"memory/host_rss_mem", gigabytes(host.rss_bytes)},
                                       {"memory/host_peak_rss_mem", gigabytes(host.peak_rss_bytes)}};
#ifdef TESSERA_CUDA
  if (state.device.is_cuda()) {
    const auto index = state.device.has_index() ? state.device.index() : c10::cuda::current_device();
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    const size_t all = 0;  // StatType::AGGREGATE: small and large pools together
    values["memory/current_allocated_mem"] = gigabytes(stats.allocated_bytes[all].current);
    values["memory/peak_allocated_mem"] = gigabytes(stats.allocated_bytes[all].peak);
    values["memory/current_reserved_mem"] = gigabytes(stats.reserved_bytes[all].current);
    values["memory/peak_reserved_mem"] = gigabytes(stats.reserved_bytes[all].peak);
    values["memory/alloc_retries"] = static_cast<double>(stats.num_alloc_retries);
  }
#endif
  logger.log_metrics(values, state.timestamp);
}

}  // namespace tessera::callbacks
