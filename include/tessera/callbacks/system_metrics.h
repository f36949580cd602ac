#pragma once
/// The machine's load while it trains ("system_metrics_monitor" in recipes; Composer's SystemMetricsMonitor): CPU,
/// memory, disk and network from the kernel (Linux /proc), and on a CUDA run each GPU's utilisation, memory,
/// temperature and power from NVML (NVIDIA's management library, loaded at run time: nothing to link, nothing
/// needed on a machine without it).
///
///     callbacks: [{system_metrics_monitor: {interval: 10}}]
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <tessera/callback.h>
#include <tessera/options.h>

namespace tessera::callbacks {

/// Counters read at one moment; the rates come from two readings (system_metrics).
struct SystemSample {
  double seconds = 0;  ///< when it was read (steady clock)
  /// Whole-machine CPU time in clock ticks from /proc/stat's "cpu" line: busy (all but idle and iowait) and total.
  std::optional<std::pair<uint64_t, uint64_t>> cpu_ticks;
  /// This process's CPU time (every thread's, user + system) in seconds: the process CPU-time clock, not /proc
  /// (whose 10 ms ticks are too coarse for short intervals).
  std::optional<double> process_cpu_seconds;
  /// /proc/meminfo's MemTotal and MemAvailable, in bytes.
  std::optional<std::pair<uint64_t, uint64_t>> memory_total_available;
  /// /proc/loadavg's first field: processes running or waiting over the last minute.
  std::optional<double> load_average;
  /// This process's bytes read from and written to storage (/proc/self/io read_bytes, write_bytes; not page-cache
  /// hits). Absent where the kernel does not let a process read it.
  std::optional<std::pair<uint64_t, uint64_t>> process_io_bytes;
  /// Bytes received and sent by every network interface but loopback (/proc/net/dev).
  std::optional<std::pair<uint64_t, uint64_t>> network_bytes;
};

/// Reads the counters under `proc` (the kernel's /proc; another folder of the same files in tests), and the process's
/// CPU time.
SystemSample read_system_sample(const std::string& proc = "/proc");

/// What two readings say, under the monitor's names: system/cpu_percent (the whole machine, 100 = every core busy),
/// system/process_cpu_percent (this process, 100 = one core), system/memory_used_percent and system/memory_used_gb
/// (MemTotal - MemAvailable: what is not free for new work), system/load_average, system/process_read_mb_per_sec,
/// system/process_write_mb_per_sec, system/network_recv_mb_per_sec, system/network_sent_mb_per_sec (MB = 10^6 bytes).
/// Values whose counters either reading lacks are left out; the rates need `now` to be later than `before`.
std::map<std::string, double> system_metrics(const SystemSample& before, const SystemSample& now);

/// One GPU's readings from NVML.
struct GpuReading {
  double utilization_percent = 0;         ///< time a kernel was running over the driver's last sample period
  double memory_utilization_percent = 0;  ///< time device memory was being read or written, likewise
  double memory_used_bytes = 0, memory_total_bytes = 0;
  double temperature_c = 0;
  double power_w = 0;
};

/// The GPUs NVML sees (every GPU of the machine, numbered as NVML numbers them, whatever CUDA_VISIBLE_DEVICES
/// says); empty, with `why` saying why, where NVML cannot be loaded or started (no NVIDIA driver).
std::vector<GpuReading> read_gpus(std::string* why = nullptr);

struct SystemMetricsMonitorOptions {
  /// Logs every this many batches (at the batch ends of batches interval, 2·interval, ...).
  TESSERA_OPTION(int64_t, interval) = 10;
  /// On a CUDA run, also each GPU's readings (NVML).
  TESSERA_OPTION(bool, gpus) = true;
  /// The file system whose use system/disk_used_percent reports (relative: to the working directory).
  TESSERA_OPTION(std::string, disk_path) = ".";
  template <class V>
  void visit(V& v) {
    v("interval", interval_, "batches between two logged readings", Range::at_least(1));
    v("gpus", gpus_, "on a CUDA run, also each GPU's utilisation, memory, temperature and power (NVML)", Any{});
    v("disk_path", disk_path_, "a path on the file system whose use system/disk_used_percent reports", Any{});
  }
};

/// Logs system_metrics() between the previous reading and this one every `interval` batch ends (the first reading
/// is taken at fit start), system/disk_used_percent of `disk_path`'s file system, and on a CUDA run with `gpus`
/// system/gpu<i>/utilization_percent, system/gpu<i>/memory_utilization_percent, system/gpu<i>/memory_used_gb,
/// system/gpu<i>/temperature_c and system/gpu<i>/power_w for every GPU of the machine (one warning at fit start
/// where NVML is missing). With several ranks, rank 0 reads and logs: its machine's values. It only reads: training
/// is bitwise the same with or without it.
class SystemMetricsMonitor : public Callback {
 public:
  explicit SystemMetricsMonitor(SystemMetricsMonitorOptions options = {});
  std::string name() const override { return "system_metrics_monitor"; }
  void run_event(Event event, State& state, Logger& logger) override;

 private:
  SystemMetricsMonitorOptions options_;
  SystemSample last_;
  bool gpus_ = false;  // this run reads the GPUs
};

}  // namespace tessera::callbacks
