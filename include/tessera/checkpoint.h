#pragma once
/// Checkpoints: settings (the `checkpoint:` section of a recipe), and what can be asked of a checkpoint file.
///
/// A checkpoint holds everything a run needs to continue bit for bit: weights and buffers, optimizer state
/// and parameter groups, the timestamp, every generator (torch CPU/CUDA and the project's own), each
/// algorithm's and callback's state, the data position, the metrics so far and metadata (versions, recipe).
/// Files are written atomically (temporary file, fsync, rename, folder fsync) with a checksum of the
/// payload; a `latest` pointer beside them names the newest. The Trainer saves and loads them
/// (Trainer::save_checkpoint, Trainer::load_checkpoint, and CheckpointOptions given to its constructor);
/// the format is described in docs/checkpoints.md.
///
///     auto opts = tessera::CheckpointOptions().folder("runs/a/checkpoints").interval(tessera::Time::parse("1ep"))
///                                             .autoresume(true);
///     tessera::Trainer trainer(trainer_options, components, opts);
///     trainer.fit();  // resumes from the newest valid checkpoint in the folder, if any
#include <tessera/error.h>
#include <tessera/options.h>
#include <tessera/time.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

/// Where and when to save checkpoints, and what to load at the start of a run.
struct CheckpointOptions {
  /// Folder for checkpoints ("" = no checkpoints). A relative folder is resolved against the run folder.
  TESSERA_OPTION(std::string, folder) = "";
  /// Save every `interval` (ep intervals at epoch end, ba/sp at batch end). A checkpoint is also written at
  /// the end of training and when a stop signal arrives.
  TESSERA_OPTION(Time, interval) = Time(1, TimeUnit::Epoch);
  /// Number of most recent checkpoints kept in `folder` (the newest is never deleted).
  TESSERA_OPTION(int64_t, keep) = 3;
  /// Resume from the newest valid checkpoint in `folder` when there is one (an empty folder starts fresh).
  TESSERA_OPTION(bool, autoresume) = false;
  /// When autoresume finds checkpoint files but none is valid: start fresh instead of stopping with an error.
  TESSERA_OPTION(bool, fresh_start_if_invalid) = false;
  /// A checkpoint file to load before training, a run's checkpoint folder (its newest valid checkpoint), or a
  /// .safetensors file of weights (with weights_only); "" = none. Autoresume takes precedence when it finds one.
  TESSERA_OPTION(std::string, load_path) = "";
  /// Load only the model weights from `load_path` (not the optimizer, schedulers, RNG or data position).
  TESSERA_OPTION(bool, weights_only) = false;
  /// Refuse a checkpoint whose parameter names or shapes differ from the model's (else: load the common ones).
  TESSERA_OPTION(bool, strict) = true;
  /// Autoresume even when the recipe now differs from the checkpoint's in what trains (model, data, optimizer,
  /// schedulers, algorithms, seed...). Off by default: such a resume mixes two runs, so it is refused, listing
  /// the differences. Changes that do not alter the training (max_duration, loggers, callbacks, evaluation,
  /// checkpoint settings, threads, device) are always allowed, and reported.
  TESSERA_OPTION(bool, resume_changed_recipe) = false;

  template <class V>
  void visit(V& v) {
    v("folder", folder_, "folder for checkpoints (empty = none; relative to run_dir)", Any{});
    v("interval", interval_, "time between checkpoints", Any{});
    v("keep", keep_, "number of most recent checkpoints kept", Range::at_least(1));
    v("autoresume", autoresume_, "resume from the newest valid checkpoint in folder", Any{});
    v("fresh_start_if_invalid", fresh_start_if_invalid_,
      "start fresh when autoresume finds only invalid checkpoints (default: error)", Any{});
    v("load_path", load_path_,
      "checkpoint file (or a run's checkpoint folder: its newest) to load before training (empty = none)", Any{});
    v("weights_only", weights_only_, "load only the model weights from load_path", Any{});
    v("strict", strict_, "refuse checkpoints whose parameters differ from the model's", Any{});
    v("resume_changed_recipe", resume_changed_recipe_,
      "autoresume even when the recipe changed what trains (default: refuse, listing the changes)", Any{});
  }
};

/// `options` with a relative `folder` resolved against `run_dir` (the Trainer and the recipe runner both call it, so
/// a folder "ck" of a run in "runs/b" is "runs/b/ck" whichever way the run was set up).
CheckpointOptions resolve_against_run_dir(CheckpointOptions options, const std::string& run_dir);

/// A checkpoint file that is missing, truncated, corrupt or not a checkpoint; what() names the file and
/// the problem in one line.
class CheckpointError : public InputError {
 public:
  using InputError::InputError;
};

/// What a checkpoint file says about itself (its payload verified against its checksum).
struct CheckpointInfo {
  std::string path;
  Timestamp timestamp;
  std::string tessera_version;
  std::string torch_version;
  /// The recipe as run ("" when the run did not come from a recipe).
  std::string recipe;
  int64_t seed = 0;
  int world_size = 1;
};

/// Reads and verifies a checkpoint file: CheckpointError when it is missing, truncated or corrupt.
CheckpointInfo inspect_checkpoint(const std::string& path);

/// The checkpoint files of a folder (named `ep<E>-ba<B>.ckpt`), newest (largest batch) first, not verified.
std::vector<std::string> checkpoint_files(const std::string& folder);

/// The newest checkpoint of `folder` that verifies, "" when the folder holds no checkpoint files. Every
/// invalid one passed over is reported in `rejected` ("<file>: <problem>"). CheckpointError when there are
/// checkpoint files but none is valid.
std::string newest_valid_checkpoint(const std::string& folder, std::vector<std::string>* rejected = nullptr);

}  // namespace tessera
