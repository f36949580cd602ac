#pragma once
// Checkpoint folder bookkeeping used by the Trainer (internal).
#include <cstdint>
#include <string>
#include <vector>

#include <tessera/time.h>

namespace tessera::checkpoint {

/// "ep<E>-ba<B>.ckpt".
std::string file_name(const Timestamp& ts);
/// Deletes all but the `keep` newest checkpoint files of `folder` (never `newest`), and temporary files left
/// by killed runs; returns the deleted checkpoints.
std::vector<std::string> prune(const std::string& folder, int64_t keep, const std::string& newest);
/// For a run that starts fresh in `folder`: moves the checkpoint files (and `latest`) an earlier run left
/// there into `folder`/earlier-<N> (the first N free), so that they keep out of this run's pruning and
/// resumption and nothing is lost; removes their temporary files. Returns the folder they went to ("" when
/// there were none).
std::string move_earlier_run_aside(const std::string& folder);

}  // namespace tessera::checkpoint
