#include <fmt/format.h>
#include <sys/resource.h>
#include <tessera/callbacks/monitors.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <fstream>
#include <map>
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

}  // namespace

// ------------------------------------------------------------------------------------------------ SpeedMonitor

SpeedMonitor::SpeedMonitor(SpeedMonitorOptions options) : options_(std::move(options)) {
  validate_options(options_, "speed_monitor");
  const std::map<std::string, double> seconds{{"seconds", 1}, {"minutes", 60}, {"hours", 3600}, {"days", 86400}};
  unit_seconds_ = seconds.at(options_.time_unit());
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
  } else if (event == Event::BatchEnd) {
    const Timestamp& ts = state.timestamp;
    const Step step{ts.sample - sample_at_start_, ts.token - token_at_start_, ts.batch_wct};
    window_.push_back(step);
    if (static_cast<int64_t>(window_.size()) > options_.window()) window_.pop_front();

    std::map<std::string, double> values;
    if (static_cast<int64_t>(window_.size()) == options_.window()) {
      double seconds = 0;
      int64_t samples = 0, tokens = 0;
      for (const Step& s : window_) {
        seconds += s.seconds;
        samples += s.samples;
        tokens += s.tokens;
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
        if (options_.flops_per_sample() > 0) {
          const double flops = samples_per_sec * options_.flops_per_sample();
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
