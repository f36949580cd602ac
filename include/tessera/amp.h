#pragma once
/// Mixed precision: the `precision` option, its checks and the autocast scope the trainer puts around the
/// forward and the loss.
///
///     tessera::TrainerOptions().precision("amp_bf16");  // CPU or CUDA: bfloat16 autocast
///     tessera::TrainerOptions().precision("amp_fp16");  // CUDA: float16 autocast with a GradScaler
///
/// Inside the scope (BeforeForward ... AfterLoss), LibTorch's autocast runs the ops of its lower-precision list
/// (matmul, convolution, linear) in the run's dtype and keeps the others (losses, softmax, norms) in float32;
/// parameters, gradients and optimizer state stay float32. The scope clears autocast's cache of cast weights
/// when it closes, so a weight updated by the step is cast again.
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <tessera/state.h>

namespace tessera {

/// "fp32", "amp_bf16" or "amp_fp16" (InputError naming `where` and the allowed values otherwise).
Precision parse_precision(const std::string& name, const std::string& where = "precision");

/// The autocast dtype of `p` (float32 for Fp32).
c10::ScalarType autocast_dtype(Precision p);

/// Why `device` cannot run `p`, with what to use instead ("" when it can): amp_fp16 on the CPU (CPU autocast
/// runs bfloat16 only: LibTorch 1.13 refuses float16 there, and CPUs lack fast float16 matrix products).
/// amp_bf16 on a CUDA device older than compute capability 8.0 (no bfloat16 tensor cores) is refused too, when the
/// library was built with its CUDA kernels (TESSERA_CUDA) and can ask the CUDA runtime; otherwise it is not checked.
std::string precision_problem(Precision p, const c10::Device& device);
/// The capability part of precision_problem, for a CUDA device `device_name` of compute capability major.minor
/// ("" when it can run `p`): amp_bf16 needs 8.0 or newer, as torch.cuda.is_bf16_supported() says.
std::string precision_problem_on_capability(Precision p, int major, int minor, const std::string& device_name);
/// InputError "precision: <problem>" when precision_problem finds one. The Trainer calls it before step 1
/// (and build_run, at the recipe's line:column).
void check_precision_supported(Precision p, const c10::Device& device);

/// Autocast on `device` in the dtype of `p` for the life of the scope (nothing for Fp32). Restores the
/// previous autocast state on exit and clears the cast-weight cache when the outermost scope closes. Autocast
/// state is per thread: open it on the thread that runs the forward.
class AutocastScope {
 public:
  AutocastScope(Precision p, const c10::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType device_type_ = c10::DeviceType::CPU;
  bool was_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Float;
};

}  // namespace tessera
