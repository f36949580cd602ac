#pragma once
/// A c10d process group (TCPStore rendezvous + Gloo, or NCCL in a CUDA build) behind a small interface that
/// hides the LibTorch 1.13 / 2.x differences (ProcessGroup vs Backend) and keeps c10d out of public headers.
///
///     auto env = tessera::dist::read_environment();
///     auto comm = tessera::dist::Comm::create(env, tessera::dist::DistributedOptions(), c10::Device("cpu"));
///     comm->all_reduce_sum(t);   // in place, on every rank
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <tessera/distributed/environment.h>

namespace tessera::dist {

/// Whether this build of Tessera can run Gloo (CPU) and NCCL (CUDA) process groups.
bool gloo_available() noexcept;
bool nccl_available() noexcept;

class Comm {
 public:
  /// Rendezvous at env.master_addr:master_port (rank 0 hosts the TCPStore unless torchrun's agent does) and the
  /// process group. InputError (exit 2 in tessera-run) when the master cannot be reached or its port cannot be
  /// listened on within options.connect_timeout, or when the backend is not in this build; the message names
  /// the address, the port and what to change.
  static std::shared_ptr<Comm> create(const Environment& env, const DistributedOptions& options, c10::Device device);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const noexcept;
  int world_size() const noexcept;
  /// "gloo" or "nccl".
  const std::string& backend() const noexcept;
  const Environment& environment() const noexcept;

  /// Sums `t` over the ranks, in place; blocks. Error naming `what` when a peer failed or timed out.
  void all_reduce_sum(at::Tensor& t, const std::string& what = "all-reduce");
  /// Starts summing `t` in place and returns a function that waits for it (and throws as above).
  std::function<void()> all_reduce_sum_async(at::Tensor t, const std::string& what = "all-reduce");
  /// Rank `root`'s values into `tensors` on every rank (flattened per dtype, one collective each).
  void broadcast(const std::vector<at::Tensor>& tensors, int root = 0, const std::string& what = "broadcast");
  /// Every rank reaches this point.
  void barrier(const std::string& what = "barrier");
  /// The sum over the ranks of a small CPU tensor (flags, counts), returned on the CPU, computed on the host: with
  /// NCCL through a Gloo group of its own (where the build has Gloo), so that agreeing on a flag does not read a
  /// value back from the GPU, which would wait for the whole step queued there; else by the run's group.
  at::Tensor host_sum(const at::Tensor& cpu, const std::string& what);

  struct Impl;

 private:
  explicit Comm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::dist
