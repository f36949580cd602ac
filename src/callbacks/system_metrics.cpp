// system_metrics_monitor: the kernel's counters (Linux /proc) and NVML's GPU readings.
#include <tessera/callbacks/system_metrics.h>

#include <dlfcn.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <type_traits>

#include <fmt/format.h>

#include <tessera/error.h>

#include "../posix_io.h"

namespace tessera::callbacks {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// The number after `key` ("MemTotal:", "read_bytes:") in a file of "key value" lines.
std::optional<uint64_t> field(const std::string& text, const std::string& key) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(key, 0) != 0) continue;
    std::istringstream rest(line.substr(key.size()));
    uint64_t value = 0;
    if (rest >> value) return value;
  }
  return std::nullopt;
}

std::optional<std::pair<uint64_t, uint64_t>> cpu_ticks(const std::string& stat) {
  std::istringstream in(stat);
  std::string label;
  if (!(in >> label) || label != "cpu") return std::nullopt;
  // user nice system idle iowait irq softirq steal (guest time is already in user and nice)
  uint64_t v[8] = {};
  for (uint64_t& x : v) {
    if (!(in >> x)) return std::nullopt;
  }
  uint64_t total = 0;
  for (uint64_t x : v) total += x;
  return std::make_pair(total - v[3] - v[4], total);
}

std::optional<std::pair<uint64_t, uint64_t>> network_bytes(const std::string& dev) {
  std::istringstream lines(dev);
  std::string line;
  uint64_t received = 0, sent = 0;
  bool any = false;
  while (std::getline(lines, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;  // the two header lines
    std::istringstream name_in(line.substr(0, colon));
    std::string name;
    name_in >> name;
    if (name == "lo") continue;
    std::istringstream in(line.substr(colon + 1));
    uint64_t v[9] = {};  // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes
    bool ok = true;
    for (uint64_t& x : v) ok = ok && static_cast<bool>(in >> x);
    if (!ok) continue;
    received += v[0];
    sent += v[8];
    any = true;
  }
  if (!any) return std::make_pair(uint64_t{0}, uint64_t{0});  // no interface but loopback: nothing moved
  return std::make_pair(received, sent);
}

// ------------------------------------------------------------------------------------------------ NVML

/// NVML's C interface, the part read here (nvml.h; stable across driver versions: these are its _v2 entry points
/// and plain structs).
struct Nvml {
  using Device = void*;
  struct Utilization {
    unsigned int gpu, memory;
  };
  struct Memory {
    unsigned long long total, free, used;
  };
  int (*init)() = nullptr;
  int (*device_count)(unsigned int*) = nullptr;
  int (*handle_by_index)(unsigned int, Device*) = nullptr;
  int (*utilization)(Device, Utilization*) = nullptr;
  int (*memory)(Device, Memory*) = nullptr;
  int (*temperature)(Device, int, unsigned int*) = nullptr;  // sensor 0: the GPU die
  int (*power)(Device, unsigned int*) = nullptr;             // milliwatts
  std::string error;                                         // why it is unusable ("" when usable)

  /// The process's NVML, loaded and started on first use.
  static const Nvml& get() {
    static const Nvml nvml = load();
    return nvml;
  }

 private:
  static Nvml load() {
    Nvml n;
    void* lib = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      n.error = "NVML (libnvidia-ml.so.1, part of NVIDIA's driver) could not be loaded";
      return n;
    }
    auto bind = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(lib, name));
      if (fn == nullptr && n.error.empty()) n.error = fmt::format("NVML has no {}", name);
    };
    bind(n.init, "nvmlInit_v2");
    bind(n.device_count, "nvmlDeviceGetCount_v2");
    bind(n.handle_by_index, "nvmlDeviceGetHandleByIndex_v2");
    bind(n.utilization, "nvmlDeviceGetUtilizationRates");
    bind(n.memory, "nvmlDeviceGetMemoryInfo");
    bind(n.temperature, "nvmlDeviceGetTemperature");
    bind(n.power, "nvmlDeviceGetPowerUsage");
    if (n.error.empty()) {
      const int status = n.init();
      if (status != 0) n.error = fmt::format("NVML did not start (nvmlInit_v2 returned {})", status);
    }
    return n;  // the library stays loaded for the process's life (NVML is not shut down: other users may share it)
  }
};

}  // namespace

SystemSample read_system_sample(const std::string& proc) {
  SystemSample s;
  s.seconds = now_seconds();
  if (auto stat = posix::read_small_file(proc + "/stat")) s.cpu_ticks = cpu_ticks(*stat);
  timespec cpu {};
  if (::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu) == 0) {
    s.process_cpu_seconds = static_cast<double>(cpu.tv_sec) + static_cast<double>(cpu.tv_nsec) * 1e-9;
  }
  if (auto meminfo = posix::read_small_file(proc + "/meminfo")) {
    const auto total = field(*meminfo, "MemTotal:"), available = field(*meminfo, "MemAvailable:");
    if (total && available && *total > 0) s.memory_total_available = std::make_pair(*total * 1024, *available * 1024);
  }
  if (auto loadavg = posix::read_small_file(proc + "/loadavg")) {
    std::istringstream in(*loadavg);
    double one_minute = 0;
    if (in >> one_minute) s.load_average = one_minute;
  }
  if (auto io = posix::read_small_file(proc + "/self/io")) {
    const auto read = field(*io, "read_bytes:"), written = field(*io, "write_bytes:");
    if (read && written) s.process_io_bytes = std::make_pair(*read, *written);
  }
  if (auto dev = posix::read_small_file(proc + "/net/dev")) s.network_bytes = network_bytes(*dev);
  return s;
}

std::map<std::string, double> system_metrics(const SystemSample& before, const SystemSample& now) {
  std::map<std::string, double> out;
  const double seconds = now.seconds - before.seconds;
  if (now.memory_total_available) {
    const auto [total, available] = *now.memory_total_available;
    const double used = static_cast<double>(total - std::min(total, available));
    out["system/memory_used_percent"] = 100.0 * used / static_cast<double>(total);
    out["system/memory_used_gb"] = used / 1e9;
  }
  if (now.load_average) out["system/load_average"] = *now.load_average;
  if (before.cpu_ticks && now.cpu_ticks && now.cpu_ticks->second > before.cpu_ticks->second) {
    out["system/cpu_percent"] = 100.0 * static_cast<double>(now.cpu_ticks->first - before.cpu_ticks->first) /
                                static_cast<double>(now.cpu_ticks->second - before.cpu_ticks->second);
  }
  if (seconds <= 0) return out;
  if (before.process_cpu_seconds && now.process_cpu_seconds) {
    out["system/process_cpu_percent"] = 100.0 * (*now.process_cpu_seconds - *before.process_cpu_seconds) / seconds;
  }
  const auto rate = [&](const auto& a, const auto& b, const std::string& first, const std::string& second) {
    if (!a || !b) return;
    out[first] = static_cast<double>(b->first - a->first) / 1e6 / seconds;
    out[second] = static_cast<double>(b->second - a->second) / 1e6 / seconds;
  };
  rate(before.process_io_bytes, now.process_io_bytes, "system/process_read_mb_per_sec",
       "system/process_write_mb_per_sec");
  rate(before.network_bytes, now.network_bytes, "system/network_recv_mb_per_sec", "system/network_sent_mb_per_sec");
  return out;
}

std::vector<GpuReading> read_gpus(std::string* why) {
  static std::mutex mutex;  // NVML is thread-safe; this keeps the readings of one call together
  const std::lock_guard<std::mutex> lock(mutex);
  const Nvml& nvml = Nvml::get();
  if (!nvml.error.empty()) {
    if (why) *why = nvml.error;
    return {};
  }
  unsigned int count = 0;
  if (nvml.device_count(&count) != 0) {
    if (why) *why = "NVML could not count the GPUs";
    return {};
  }
  std::vector<GpuReading> gpus;
  for (unsigned int i = 0; i < count; ++i) {
    GpuReading r;
    Nvml::Device device = nullptr;
    if (nvml.handle_by_index(i, &device) == 0) {
      Nvml::Utilization u{};
      if (nvml.utilization(device, &u) == 0) {
        r.utilization_percent = u.gpu;
        r.memory_utilization_percent = u.memory;
      }
      Nvml::Memory m{};
      if (nvml.memory(device, &m) == 0) {
        r.memory_used_bytes = static_cast<double>(m.used);
        r.memory_total_bytes = static_cast<double>(m.total);
      }
      unsigned int celsius = 0, milliwatts = 0;
      if (nvml.temperature(device, 0, &celsius) == 0) r.temperature_c = celsius;
      if (nvml.power(device, &milliwatts) == 0) r.power_w = milliwatts / 1000.0;
    }
    gpus.push_back(r);
  }
  if (gpus.empty() && why) *why = "NVML sees no GPU";
  return gpus;
}

SystemMetricsMonitor::SystemMetricsMonitor(SystemMetricsMonitorOptions options) : options_(std::move(options)) {
  validate_options(options_, "system_metrics_monitor");
  if (options_.disk_path().empty()) {
    throw InputError("system_metrics_monitor.disk_path: empty; give a path on the file system to watch (\".\": the "
                     "working directory's)");
  }
  struct statvfs fs {};
  if (::statvfs(options_.disk_path().c_str(), &fs) != 0) {  // found now, not as a metric that never appears
    throw InputError("system_metrics_monitor.disk_path: '" + options_.disk_path() + "' cannot be read (" +
                     std::strerror(errno) + "); give an existing path on the file system to watch");
  }
}

void SystemMetricsMonitor::run_event(Event event, State& state, Logger& logger) {
  if (state.rank != 0) return;
  if (event == Event::FitStart) {
    last_ = read_system_sample();
    gpus_ = false;
    if (options_.gpus() && state.device.is_cuda()) {
      std::string why;
      gpus_ = !read_gpus(&why).empty();
      if (!gpus_) logger.warn("system_metrics_monitor: no GPU readings: " + why);
    }
    return;
  }
  if (event != Event::BatchEnd || state.timestamp.batch % options_.interval() != 0) return;
  const SystemSample now = read_system_sample();
  std::map<std::string, double> values = system_metrics(last_, now);
  last_ = now;
  struct statvfs fs {};
  if (::statvfs(options_.disk_path().c_str(), &fs) == 0 && fs.f_blocks > 0) {
    // Used over what a user can fill (used + available to unprivileged users), as df reports.
    const double used = static_cast<double>(fs.f_blocks - fs.f_bfree);
    const double usable = used + static_cast<double>(fs.f_bavail);
    if (usable > 0) values["system/disk_used_percent"] = 100.0 * used / usable;
  }
  if (gpus_) {
    const std::vector<GpuReading> gpus = read_gpus();
    for (size_t i = 0; i < gpus.size(); ++i) {
      const std::string prefix = fmt::format("system/gpu{}/", i);
      values[prefix + "utilization_percent"] = gpus[i].utilization_percent;
      values[prefix + "memory_utilization_percent"] = gpus[i].memory_utilization_percent;
      values[prefix + "memory_used_gb"] = gpus[i].memory_used_bytes / 1e9;
      values[prefix + "temperature_c"] = gpus[i].temperature_c;
      values[prefix + "power_w"] = gpus[i].power_w;
    }
  }
  logger.log_metrics(values, state.timestamp);
}

}  // namespace tessera::callbacks
