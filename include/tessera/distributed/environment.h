#pragma once
/// Where this process sits in a distributed run, read from the launcher's environment.
///
/// torchrun (and `tessera-run --nproc N`) set MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK and
/// LOCAL_WORLD_SIZE; srun sets SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID, and the master is MASTER_ADDR or
/// the first host of SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST), port MASTER_PORT or 29500. With neither,
/// the run has one process.
///
///     auto env = tessera::dist::read_environment();   // InputError on RANK >= WORLD_SIZE and the like
///     if (env.world_size > 1) ...
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <tessera/options.h>

namespace tessera::dist {

struct Environment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// "torchrun" (also tessera-run --nproc), "slurm" or "none" (a single process).
  std::string launcher = "none";
  /// torchrun's agent hosts the TCPStore (TORCHELASTIC_USE_AGENT_STORE=True): every rank, rank 0 too, is a client.
  bool agent_store = false;
  /// TORCHELASTIC_RESTART_COUNT: the store keys of each restart are kept apart.
  int restart_count = 0;
  bool distributed() const noexcept { return world_size > 1; }
};

/// Reads the environment through `get` (std::getenv by default; tests pass their own). Every inconsistency is an
/// InputError naming the variable, its value and what was expected (RANK >= WORLD_SIZE, a port out of range, a
/// half-set torchrun environment, a SLURM node list that cannot be read).
Environment read_environment(const std::function<std::optional<std::string>(const std::string&)>& get = {});

/// The first host of a SLURM host list: "node[01-04,07],gpu7" -> "node01", "a,b" -> "a", "x" -> "x".
/// InputError on an unbalanced bracket or an empty list.
std::string first_slurm_host(const std::string& nodelist);

/// Settings of data-parallel training (the recipe's `distributed:` section).
struct DistributedOptions {
  /// Collective backend: "auto" (NCCL on CUDA where the build has it, else Gloo), "gloo" or "nccl".
  TESSERA_OPTION(std::string, backend) = "auto";
  /// Gradient bucket size in MiB: a bucket is all-reduced as soon as all of its gradients are ready.
  TESSERA_OPTION(double, bucket_cap_mb) = 25.0;
  /// Broadcast rank 0's buffers (batch-norm running statistics) to every rank before each training forward, as
  /// PyTorch's DDP does by default; off, each rank keeps its own statistics and rank 0's are checkpointed.
  TESSERA_OPTION(bool, broadcast_buffers) = true;
  /// Batch norms take their training statistics over the global batch (every rank's share), as PyTorch's
  /// SyncBatchNorm: the model's torch BatchNorm1d/2d/3d layers become dist::SyncBatchNorm after Init's surgery.
  TESSERA_OPTION(bool, sync_batch_norm) = false;
  /// Seconds the ranks wait for each other at start (rendezvous) before giving up with an error.
  TESSERA_OPTION(double, connect_timeout) = 120.0;
  /// Seconds a collective may wait for a peer before the run fails (a dead or hung rank).
  TESSERA_OPTION(double, timeout) = 300.0;
  template <class V>
  void visit(V& v) {
    v("backend", backend_, "collective backend", Choices{{"auto", "gloo", "nccl"}});
    v("bucket_cap_mb", bucket_cap_mb_, "gradient bucket size in MiB", Range::open_closed(0, 4096));
    v("broadcast_buffers", broadcast_buffers_, "broadcast rank 0's buffers before each forward", Any{});
    v("sync_batch_norm", sync_batch_norm_, "batch-norm statistics over every rank's share", Any{});
    v("connect_timeout", connect_timeout_, "seconds to wait for all ranks at start", Range::open_closed(0, 86400));
    v("timeout", timeout_, "seconds a collective waits for a peer", Range::open_closed(0, 86400));
  }
};

}  // namespace tessera::dist
