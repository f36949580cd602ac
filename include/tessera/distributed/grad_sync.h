#pragma once
/// Gradient averaging across ranks that overlaps the backward pass, as PyTorch's DDP does: the trainable
/// parameters are grouped into buckets (in reverse registration order, about the order their gradients become
/// ready; `bucket_cap_mb` each, one dtype and device per bucket); a hook after each parameter's gradient
/// accumulation copies the gradient into its bucket, and a bucket whose gradients are all there is all-reduced
/// at once, while backward goes on. Buckets are launched strictly in bucket order, so every rank issues the same
/// collectives in the same order. finish() launches the buckets still waiting (a parameter that took no part in
/// this backward contributes zeros), waits for all, and writes sum / world_size back into each `.grad`.
///
///     GradSync sync(comm, 25 << 20);
///     sync.prepare(trainable);    // before each backward: rebuilds buckets when the trainable set changed
///     sync.arm(last_microbatch);  // only the last microbatch's backward synchronises (the others accumulate)
///     loss.backward();
///     sync.finish();
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/distributed/comm.h>

namespace tessera {
class Model;
}

namespace tessera::dist {

class GradSync {
 public:
  GradSync(std::shared_ptr<Comm> comm, int64_t bucket_cap_bytes);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  /// (Re)builds the buckets and hooks when the model's trainable parameters differ from the last call (first
  /// call, layer freezing, surgery). Every rank must see the same parameters in the same order.
  void prepare(const std::vector<at::Tensor>& trainable,
               const std::function<std::vector<std::string>()>& names = {});
  /// Whether a parameter may get no gradient in a synchronised backward (an algorithm declares
  /// leaves_parameters_unused): it then contributes its accumulated gradient or zeros. Off, such a parameter is
  /// an Error naming it (after the all-reduce completes on every rank, so that no rank is left waiting).
  void find_unused(bool on);
  /// Whether the next backward synchronises (true) or only accumulates locally (false).
  void arm(bool sync);
  /// After backward: completes an armed synchronisation (no-op otherwise).
  void finish();
  /// Without hooks: averages every parameter's accumulated `.grad` over the ranks now (all buckets launched at
  /// once, after the last backward). For runs where a rank may abandon a backward midway (an out-of-memory retry
  /// with microbatch_size auto) or where gradients are unscaled per microbatch (a loss scaler): no collective runs
  /// during backward, so no rank can be left waiting in one. A parameter without a gradient on this rank is
  /// unused (zeros, or an Error naming it unless find_unused).
  void all_reduce_accumulated();

  /// Off: all-reduces start only in finish(), after backward (for measuring what the overlap hides).
  void set_overlap(bool on);

  /// Buckets of the current layout (for tests and logs).
  size_t num_buckets() const;
  /// Seconds finish() spent waiting for all-reduces, summed over calls: the communication backward did not hide.
  double exposed_wait_seconds() const;
  /// Buckets whose all-reduce was started from inside backward during the last synchronised backward.
  int64_t launched_during_backward() const;

  struct Core;

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace tessera::dist
