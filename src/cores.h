#pragma once
/// How many cores a cgroup CPU quota allows, for available_cores() (trainer.h). Internal to the library; the parsers
/// are separate so that tests can give them any text (tests/core/cores_test.cpp).
#include <cstdint>
#include <optional>
#include <string>

namespace tessera::detail {

/// From the text of cgroup v2's cpu.max ("max 100000": unlimited; "150000 100000": quota and period in µs):
/// ceil(quota / period), at least 1; nullopt when unlimited or not understood.
std::optional<int64_t> cpu_max_cores(const std::string& text);

/// The same from cgroup v1's cpu.cfs_quota_us ("-1": unlimited) and cpu.cfs_period_us.
std::optional<int64_t> cfs_quota_cores(const std::string& quota, const std::string& period);

/// The tightest CPU quota over this process's cgroup and its ancestors (v2's cpu.max, or v1's cpu controller), read
/// from /proc/self/cgroup and the cgroup file systems under `root` (/sys/fs/cgroup); nullopt when there is none.
std::optional<int64_t> cgroup_quota_cores(const std::string& proc_self_cgroup = "/proc/self/cgroup",
                                          const std::string& root = "/sys/fs/cgroup");

}  // namespace tessera::detail
