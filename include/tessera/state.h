#pragma once
/// Everything an algorithm or callback may read or change during a run.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <tessera/batch.h>
#include <tessera/evaluator.h>
#include <tessera/models/model.h>
#include <tessera/optim/optimizer.h>
#include <tessera/optim/scheduler.h>
#include <tessera/rng.h>
#include <tessera/time.h>

namespace tessera {

namespace data { class BatchSource; }

/// Numeric precision of the forward pass and the loss: float32, or autocast in bfloat16 or float16 (amp.h).
enum class Precision { Fp32, AmpBf16, AmpFp16 };
const char* precision_name(Precision p);

/// Where the rows of State::batch sit in the step's global batch (all ranks' rows), for a module or algorithm that
/// treats an example by its place in the whole batch (gyro dropout spreads its masks over it), so that training a
/// batch in microbatches, or sharing it out over ranks, changes nothing. The trainer sets it while a training batch
/// runs (from AfterDataloader to AfterTrainBatch, through SAM's second pass) and unsets it after; it stays unset in
/// evaluation, in SWA's statistics pass and in a forward of the user's own.
struct BatchPlace {
  /// State::batch (`rows` examples) is rows [first, first + rows) of this rank's batch of `rank_rows` rows: the
  /// microbatch being trained, or the whole batch as the algorithms left it (at AfterDataloader, as the data gave it).
  int64_t first = 0, rows = 0, rank_rows = 0;
  /// This rank's batch came from rows [share_begin, share_end) of a global batch of `global_rows` rows, as the data
  /// gave them (one rank: [0, global_rows)).
  int64_t share_begin = 0, share_end = 0, global_rows = 0;

  bool is_set() const noexcept { return rows > 0 && rank_rows > 0 && global_rows > 0; }
  /// Which of `parts` equal parts of the global batch each of `units` rows of a tensor computed from State::batch
  /// falls in ([units] int64 on `options`' device): the tensor has units / rows consecutive rows per example (1
  /// for [N, ...]; S for the [N·S, D] token rows of a sequence model). Row u of example i (global place g in [0, 1))
  /// gets floor(parts · g): exact when the algorithms kept every row of the data, in proportion within this rank's
  /// share when they dropped some (selective backprop). Unset, the rows are spread over themselves (row u of U gets
  /// floor(u · parts / U)). InputError when `units` is not a multiple of `rows`.
  at::Tensor parts_of_rows(int64_t units, int64_t parts, const at::TensorOptions& options) const;
};

struct State {
  std::shared_ptr<Model> model;
  std::shared_ptr<optim::Optimizer> optimizer;
  std::vector<std::shared_ptr<optim::Scheduler>> schedulers;

  /// The current batch: the full batch from AfterDataloader to BeforeTrainBatch and at AfterTrainBatch;
  /// the current microbatch from BeforeForward to AfterBackward; the eval batch during evaluation.
  Batch batch;
  /// The model's outputs for `batch` (after the forward).
  at::Tensor outputs;
  /// The loss of the current microbatch (after the loss; scaled for accumulation only inside backward).
  at::Tensor loss;
  /// When set (by an algorithm, between BeforeLoss and AfterLoss), the trainer computes the loss with this
  /// instead of `model->loss` (e.g. label smoothing's fused cross-entropy). Algorithms that install it
  /// declare that they write the Loss at BeforeLoss and clear it at AfterLoss.
  std::function<at::Tensor(const at::Tensor& outputs, const Batch& batch, Reduction reduction)> loss_override;
  /// The loss as the trainer computes it: `loss_override` if set, else `model->loss`.
  at::Tensor compute_loss(const at::Tensor& out, const Batch& b, Reduction r = Reduction::Mean) {
    return loss_override ? loss_override(out, b, r) : model->loss(out, b, r);
  }

  /// Set by the trainer while AfterTrainBatch runs, empty at every other event: zeroes the gradients and runs
  /// the forward, loss and backward of every microbatch of the current batch again at the parameters as they
  /// are now (firing BeforeForward to AfterBackward for each, so that the algorithms acting there act again),
  /// then does to the new gradients what the trainer did to the first ones: averages them over the ranks and,
  /// with a loss scaler, leaves them unscaled with any inf/NaN recorded (an overflow in either pass skips the
  /// step). The train metrics are not updated and the logged loss stays the first pass's; a non-finite loss
  /// is handled as nonfinite_loss says, like the first. Returns the batch's loss at these parameters (0-d, on
  /// the device, not read back). Used by SAM for its second forward and backward.
  std::function<at::Tensor()> recompute_gradients;
  /// Set by the trainer during fit() between batches (BatchEnd to the next batch's data, EpochEnd; a call inside
  /// a batch is an Error): hands `visit` every batch of one epoch of this rank's training data (the current
  /// epoch's order, on the device, as the loader yields them: no event fires and no algorithm sees them), then
  /// puts the loader back where training left it; on several ranks it then averages each of `average` (tensors
  /// that `visit` computed, such as batch-norm statistics) over the ranks, in place. Returns the number of
  /// batches. Used by SWA to recompute the batch-norm statistics of the averaged weights.
  std::function<int64_t(const std::function<void(const Batch&)>& visit, const std::vector<at::Tensor>& average)>
      pass_over_training_data;

  Timestamp timestamp;
  /// Run length and units conversion (max_duration, batches per epoch, samples per epoch).
  TimeContext time;
  /// Examples per microbatch (0 = the full batch).
  int64_t microbatch_size = 0;
  /// Where `batch` sits in the global batch (BatchPlace). Shared, so that modules can hold it and read it in their
  /// forward (gyro dropout's layers); the trainer changes it in place.
  std::shared_ptr<BatchPlace> batch_place = std::make_shared<BatchPlace>();
  Precision precision = Precision::Fp32;
  /// Where the run trains (TrainerOptions::device, resolved): the model is there from BeforeLoad on, and every
  /// batch from AfterDataloader on.
  c10::Device device = c10::Device(c10::kCPU);

  /// The run seed (rank 0's), and this rank's seed derived from it.
  uint64_t seed = 0;
  /// The project's generator for algorithms; streams derived from it are independent and checkpointed.
  Rng rng;

  std::shared_ptr<data::BatchSource> train_dataloader;
  std::vector<Evaluator> evaluators;
  /// The label of the evaluator running, from EvalStart to EvalEnd ("" otherwise; Composer's dataloader_label).
  std::string eval_label;
  /// Latest values: "loss/train/total", "metrics/train/accuracy", "metrics/eval/accuracy"...
  std::map<std::string, double> metrics;
  /// The names of the training metrics the trainer computes ("accuracy", ...), logged as "metrics/train/<name>".
  std::vector<std::string> train_metric_names;

  int rank = 0;
  int world_size = 1;

  /// True while the evaluators run after training (at fit_end): their metrics are reported, but nothing
  /// trains after them, so they decide nothing (the stoppers and the plateau schedule leave them out, so that
  /// a run stopped early and resumed decides as the run in one go).
  bool final_evaluation = false;
  /// Whether the run has finished: its last batch, epoch end, final evaluation and final checkpoint done (set
  /// just before that checkpoint, which keeps it, so that a run resumed from it trains nothing). A checkpoint
  /// written at the last batch before those is not complete: the resumed run does them.
  bool fit_complete = false;

  /// Ends training after the current batch (the run then fires its end-of-fit events as usual).
  void stop_training() noexcept { stop_requested_ = true; }
  bool stop_requested() const noexcept { return stop_requested_; }
  /// Fraction of max_duration elapsed.
  double elapsed_fraction() const { return time.elapsed_fraction(timestamp); }

 private:
  bool stop_requested_ = false;
};

}  // namespace tessera
