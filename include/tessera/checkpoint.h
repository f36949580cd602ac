#pragma once
/// Checkpoint settings (the `checkpoint:` section of a recipe).
///
/// For now only the options exist: recipes are validated against them, and `tessera-run` says when they are
/// set but not yet acted on. Saving, loading and exact resume come later.
///
///     auto opts =
///     tessera::CheckpointOptions().folder("runs/a/checkpoints").interval(tessera::Time::parse("1ep"));
#include <tessera/options.h>
#include <tessera/time.h>

#include <cstdint>
#include <string>

namespace tessera {

/// Where and when to save checkpoints, and what to load at the start of a run.
struct CheckpointOptions {
  /// Folder for checkpoints ("" = no checkpoints). A relative folder is resolved against the run folder.
  TESSERA_OPTION(std::string, folder) = "";
  /// Save every `interval` (ep intervals at epoch end, ba/sp at batch end).
  TESSERA_OPTION(Time, interval) = Time(1, TimeUnit::Epoch);
  /// Number of most recent checkpoints kept in `folder`.
  TESSERA_OPTION(int64_t, keep) = 3;
  /// Resume from the latest checkpoint in `folder` when there is one.
  TESSERA_OPTION(bool, autoresume) = false;
  /// A checkpoint file to load before training ("" = none).
  TESSERA_OPTION(std::string, load_path) = "";
  /// Load only the model weights from `load_path` (not the optimizer, schedulers, RNG or data position).
  TESSERA_OPTION(bool, weights_only) = false;
  /// Refuse a checkpoint whose parameter names or shapes differ from the model's.
  TESSERA_OPTION(bool, strict) = true;

  template <class V>
  void visit(V& v) {
    v("folder", folder_, "folder for checkpoints (empty = none; relative to run_dir)", Any{});
    v("interval", interval_, "time between checkpoints", Any{});
    v("keep", keep_, "number of most recent checkpoints kept", Range::at_least(1));
    v("autoresume", autoresume_, "resume from the latest checkpoint in folder", Any{});
    v("load_path", load_path_, "checkpoint file to load before training (empty = none)", Any{});
    v("weights_only", weights_only_, "load only the model weights from load_path", Any{});
    v("strict", strict_, "refuse checkpoints whose parameters differ from the model's", Any{});
  }
};

}  // namespace tessera
