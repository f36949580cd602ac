// The cores a run may use (available_cores, default_threads: what threads: 0 means): the cgroup quota parsers on
// the texts the kernel writes, the quota found over a process's cgroup and its ancestors (v2, hybrid, a v1 container
// whose own path is not mounted), and the affinity mask in a child process restricted to one CPU.
#include <gtest/gtest.h>

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "../../src/cores.h"
#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

TEST(Cores, QuotaParsersRoundUpAndKnowUnlimited) {
  EXPECT_EQ(detail::cpu_max_cores("max 100000\n"), std::nullopt);
  EXPECT_EQ(detail::cpu_max_cores("200000 100000\n"), 2);
  EXPECT_EQ(detail::cpu_max_cores("150000 100000"), 2) << "1.5 cores: rounded up";
  EXPECT_EQ(detail::cpu_max_cores("50000 100000"), 1) << "at least 1";
  EXPECT_EQ(detail::cpu_max_cores("nonsense"), std::nullopt);
  EXPECT_EQ(detail::cpu_max_cores(""), std::nullopt);
  EXPECT_EQ(detail::cfs_quota_cores("-1\n", "100000\n"), std::nullopt);
  EXPECT_EQ(detail::cfs_quota_cores("250000\n", "100000\n"), 3);
  EXPECT_EQ(detail::cfs_quota_cores("", "100000"), std::nullopt);
}

class CgroupTree : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tessera-cgroup-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void write(const fs::path& relative, const std::string& text) {
    fs::create_directories((root_ / relative).parent_path());
    std::ofstream(root_ / relative) << text;
  }
  std::optional<int64_t> quota(const std::string& proc_self_cgroup) {
    write("proc_self_cgroup", proc_self_cgroup);
    return detail::cgroup_quota_cores((root_ / "proc_self_cgroup").string(), (root_ / "fs").string());
  }
  fs::path root_;
};

TEST_F(CgroupTree, UnifiedHierarchyTakesTheTightestAncestor) {
  write("fs/cgroup.controllers", "cpu memory\n");
  write("fs/user/cpu.max", "300000 100000\n");
  write("fs/user/job/cpu.max", "max 100000\n");
  write("fs/user/job/step/cpu.max", "max 100000\n");
  EXPECT_EQ(quota("0::/user/job/step\n"), 3);
  write("fs/user/job/cpu.max", "150000 100000\n");
  EXPECT_EQ(quota("0::/user/job/step\n"), 2);
  EXPECT_EQ(quota("0::/elsewhere\n"), std::nullopt) << "no quota on the way to the root";
}

TEST_F(CgroupTree, HybridSystemReadsTheV1CpuController) {
  // As on this project's machines: cgroup v1 controllers, the unified hierarchy under unified/ without cpu.
  write("fs/unified/cgroup.controllers", "\n");
  write("fs/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  write("fs/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  write("fs/cpu,cpuacct/slurm/job7/cpu.cfs_quota_us", "400000\n");
  write("fs/cpu,cpuacct/slurm/job7/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(quota("4:memory:/slurm/job7\n2:cpu,cpuacct:/slurm/job7\n0::/\n"), 4);
  EXPECT_EQ(quota("2:cpu,cpuacct:/\n0::/\n"), std::nullopt) << "-1: unlimited";
}

TEST_F(CgroupTree, AContainersV1PathThatIsNotMountedFallsBackToTheMountRoot) {
  write("fs/cpu/cpu.cfs_quota_us", "200000\n");
  write("fs/cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(quota("3:cpu:/docker/0123abcd\n"), 2);
  EXPECT_EQ(quota("3:cpuset:/docker/0123abcd\n"), std::nullopt) << "not the cpu controller";
}

TEST(Cores, AvailableCoresFollowTheAffinityMask) {
  const int64_t all = available_cores();
  EXPECT_GE(all, 1);
  EXPECT_LE(all, static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency())));
  EXPECT_EQ(default_threads(1), all);
  EXPECT_EQ(default_threads(all * 2), 1) << "at least one thread per rank";
  // A child process pinned to one CPU (as taskset -c 0, or a SLURM step with one CPU) counts one core.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof(one), &one) != 0) ::_exit(3);
    ::_exit(available_cores() == 1 && default_threads(1) == 1 && default_threads(4) == 1 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: the affinity could not be set; 1: not counted as one core";
}

}  // namespace
}  // namespace tessera
