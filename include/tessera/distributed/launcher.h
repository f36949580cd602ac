#pragma once
/// Starts N local ranks of a program, as torchrun does on one machine (tessera-run --nproc N).
///
/// Each rank gets MASTER_ADDR=127.0.0.1, MASTER_PORT (a free port, unless MASTER_PORT is set), RANK, WORLD_SIZE,
/// LOCAL_RANK, LOCAL_WORLD_SIZE and OMP_NUM_THREADS=1 (unless set). Every line a rank prints comes out prefixed
/// with "[rank R] " on the same stream. When one rank fails, the others get SIGTERM (SIGKILL after
/// `grace_seconds`), the failure is reported, and the exit code is that rank's (128 + signal when a signal ended
/// it). SIGINT/SIGTERM to the launcher go to every rank. A rank whose launcher dies is killed (no orphans).
#include <string>
#include <vector>

namespace tessera::dist {

struct LaunchResult {
  int exit_code = 0;    ///< 0 when every rank succeeded
  int failed_rank = -1; ///< the first rank that failed (-1: none)
  int signal = 0;       ///< the signal that ended it (0: it exited)
};

/// The launcher's last line about a failed rank: its exit code, or the signal that ended it and what that
/// usually means (SIGKILL: killed from outside or by the out-of-memory killer; SIGABRT: an error it could not
/// report, such as NCCL's watchdog after distributed.timeout; SIGSEGV and kin: a crash), and where its output is.
std::string describe_rank_failure(int rank, int nproc, int exit_code, int signal);

/// Runs `program` with `args` as `nproc` ranks and waits for them. InputError for nproc < 1.
LaunchResult launch_local(int nproc, const std::string& program, const std::vector<std::string>& args,
                          double grace_seconds = 10.0);

/// A TCP port on 127.0.0.1 that nothing listens on right now.
int free_port();

}  // namespace tessera::dist
