#pragma once
/// Where a run trains (the `device` option: cpu, cuda, cuda:N, auto), and the device-side bookkeeping that lets
/// the trainer's CUDA loop run without reading values back to the host every batch.
///
///     c10::Device d = tessera::resolve_device("auto");   // cuda:0 when a GPU is visible, else cpu
///     tessera::resolve_device("cuda");                   // InputError on a machine without CUDA
#include <cstdint>
#include <optional>
#include <string>

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

namespace tessera {

/// The forms of the `device` option, as error messages list them.
inline constexpr const char* kDeviceForms = "cpu, cuda, cuda:N (N = 0, 1, ...) or auto";

/// Whether `spec` is written as one of the forms (syntax only: "cuda:7" is well formed on any machine).
bool is_device_spec(const std::string& spec);

/// What is wrong with `spec` on this machine ("" = nothing): not one of the forms ("\"gpu\" is not a device;
/// expected cpu, cuda, ..."), or CUDA asked for where there is none, or cuda:N past the visible devices
/// ("cuda:2 was requested but 1 CUDA device is visible (cuda:0); use device: cpu or auto").
std::string device_problem(const std::string& spec);

/// The device `spec` names here: "cpu" -> cpu; "cuda" -> cuda:0; "cuda:N" -> cuda:N; "auto" -> cuda:0 when
/// CUDA is available, else cpu. InputError "<where>.device: <problem>" when device_problem() finds one.
c10::Device resolve_device(const std::string& spec, const std::string& where = "trainer");

/// A tensor on `device` (the same tensor when it is there already). Host to GPU copies go through pinned memory
/// (pinning first when needed: one host copy) and are asynchronous, so the host does not wait for the GPU.
at::Tensor to_device(const at::Tensor& t, c10::Device device);

/// The first non-finite training loss of a run, tracked on the loss's device without reading anything back:
/// `record` queues a few element-wise operations; `first` reads the result (a device synchronisation, done by
/// the trainer at log intervals, checkpoints, evaluations and the end). Works on any device (the tests use the
/// CPU).
///
///     NonfiniteTracker t;
///     t.record(loss_sum, batch);                       // every batch, no sync
///     if (auto bad = t.first()) throw ...(bad->batch, bad->loss);
class NonfiniteTracker {
 public:
  struct Found {
    int64_t batch;  ///< the batch (global index) whose loss was first not finite
    double loss;    ///< that loss (NaN, +inf or -inf)
  };
  /// Notes batch `batch`'s loss (a one-element tensor on any device).
  void record(const at::Tensor& loss, int64_t batch);
  /// The first non-finite loss recorded since construction or reset(), if any. Reads back from the device.
  std::optional<Found> first() const;
  /// Forgets everything recorded.
  void reset();
  /// Whether anything was recorded since construction or reset().
  bool recorded() const noexcept { return first_batch_.defined(); }

 private:
  at::Tensor first_batch_;  ///< int64 scalar on the loss's device; -1 while every loss was finite
  at::Tensor first_loss_;   ///< float64 scalar: the loss at first_batch_
};

}  // namespace tessera
