// available_cores() and default_threads() (trainer.h): the CPU affinity mask, then the cgroup CPU quota.
#include "cores.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <tessera/trainer.h>

#include "posix_io.h"

namespace tessera {
namespace detail {
namespace {

std::optional<int64_t> quota_cores(double quota, double period) {
  if (!(quota > 0) || !(period > 0)) return std::nullopt;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(quota / period)));
}

std::optional<double> number(const std::string& text) {
  std::istringstream in(text);
  double v = 0;
  if (!(in >> v)) return std::nullopt;
  return v;
}

/// The file's text, "" when it cannot be read.
std::string slurp(const std::filesystem::path& path) { return posix::read_small_file(path.string()).value_or(""); }

/// `path` ("/a/b") and its ancestors ("/a", "/").
std::vector<std::string> with_ancestors(std::string path) {
  std::vector<std::string> out;
  while (!path.empty() && path.back() == '/' && path.size() > 1) path.pop_back();
  if (path.empty() || path[0] != '/') path = "/" + path;
  for (;;) {
    out.push_back(path);
    if (path == "/") break;
    const size_t slash = path.rfind('/');
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
  return out;
}

void keep_tightest(std::optional<int64_t>& best, std::optional<int64_t> found) {
  if (found && (!best || *found < *best)) best = found;
}

}  // namespace

std::optional<int64_t> cpu_max_cores(const std::string& text) {
  std::istringstream in(text);
  std::string quota, period;
  if (!(in >> quota >> period) || quota == "max") return std::nullopt;
  const auto q = number(quota), p = number(period);
  if (!q || !p) return std::nullopt;
  return quota_cores(*q, *p);
}

std::optional<int64_t> cfs_quota_cores(const std::string& quota, const std::string& period) {
  const auto q = number(quota), p = number(period);
  if (!q || !p) return std::nullopt;
  return quota_cores(*q, *p);
}

std::optional<int64_t> cgroup_quota_cores(const std::string& proc_self_cgroup, const std::string& root) {
  namespace fs = std::filesystem;
  std::optional<int64_t> best;
  std::istringstream lines(slurp(proc_self_cgroup));
  for (std::string line; std::getline(lines, line);) {
    // "<id>:<controllers>:<path>"; v2's line is "0::<path>".
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controllers.empty()) {
      // The unified hierarchy: at the root, or under unified/ on a hybrid system.
      const fs::path base = fs::exists(fs::path(root) / "cgroup.controllers") ? fs::path(root) : fs::path(root) / "unified";
      for (const auto& p : with_ancestors(path)) {
        const fs::path file = base / p.substr(1) / "cpu.max";
        if (fs::exists(file)) keep_tightest(best, cpu_max_cores(slurp(file)));
      }
      continue;
    }
    std::istringstream names(controllers);
    bool cpu = false;
    for (std::string name; std::getline(names, name, ',');) cpu = cpu || name == "cpu";
    if (!cpu) continue;
    // cgroup v1's cpu controller, mounted as cpu,cpuacct or cpu; inside a container the process's path may not
    // exist under the mount (whose root is then the container's group): its ancestors, down to the root, are read.
    for (const fs::path& base : {fs::path(root) / controllers, fs::path(root) / "cpu"}) {
      if (!fs::exists(base)) continue;
      for (const auto& p : with_ancestors(path)) {
        const fs::path dir = base / p.substr(1);
        if (fs::exists(dir / "cpu.cfs_quota_us")) {
          keep_tightest(best, cfs_quota_cores(slurp(dir / "cpu.cfs_quota_us"), slurp(dir / "cpu.cfs_period_us")));
        }
      }
      break;
    }
  }
  return best;
}

}  // namespace detail

int64_t available_cores() {
  int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) cores = std::max(1, CPU_COUNT(&mask));
  if (const auto quota = detail::cgroup_quota_cores()) cores = std::min(cores, *quota);
  return cores;
}

int64_t default_threads(int64_t ranks_on_machine) {
  return std::max<int64_t>(1, available_cores() / std::max<int64_t>(1, ranks_on_machine));
}

}  // namespace tessera
