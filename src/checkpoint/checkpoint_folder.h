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

}  // namespace tessera::checkpoint
