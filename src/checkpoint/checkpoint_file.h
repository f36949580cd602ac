#pragma once
// The checkpoint file format (internal; docs/checkpoints.md describes it for users).
//
//   bytes 0..7    magic "TSRCKPT1"
//   bytes 8..15   payload size in bytes (little-endian u64)
//   bytes 16..19  CRC-32 (zlib) of the payload (little-endian u32)
//   bytes 20..23  zero
//   payload       u64 size of the metadata, the metadata (JSON, UTF-8), then the tensor bytes
//
// The metadata's "tensors" member lists every tensor: name -> {dtype, shape, offset, nbytes}, offsets into
// the tensor bytes. Tensors are stored contiguous, in CPU memory order, so a round trip is bitwise exact.
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>
#include <nlohmann/json.hpp>

#include <tessera/checkpoint.h>
#include <tessera/time.h>

namespace tessera {

// Timestamp <-> JSON, every field by name (in namespace tessera so that argument-dependent lookup finds it).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Timestamp, iteration, epoch, batch, sample, token, epoch_in_iteration,
                                   batch_in_epoch, sample_in_epoch, token_in_epoch, total_wct, epoch_wct, batch_wct)

}  // namespace tessera

namespace tessera::checkpoint {

struct File {
  nlohmann::json meta = nlohmann::json::object();
  std::map<std::string, at::Tensor> tensors;

  /// The tensor `name`; CheckpointError naming `path` when it is absent.
  const at::Tensor& tensor(const std::string& name, const std::string& path) const;
};

/// Writes `file` to `path` atomically: a temporary file in the same folder, flushed and fsynced, renamed
/// over `path`, then the folder fsynced. On failure the temporary file is removed and `path` is untouched.
void write_file(const File& file, const std::string& path);
/// Reads and verifies `path` (size, checksum, metadata, tensor bounds): CheckpointError naming the file
/// and the problem.
File read_file(const std::string& path);

/// What `file` (read from `path`) says about itself; CheckpointError when its metadata is malformed.
CheckpointInfo describe(const File& file, const std::string& path);

/// The newest checkpoint file of `folder` that verifies, read once: its path and contents (nullopt when the
/// folder holds no checkpoint files). Rejected files are reported as in tessera::newest_valid_checkpoint,
/// and CheckpointError when there are files but none is valid.
std::optional<std::pair<std::string, File>> read_newest_valid(const std::string& folder,
                                                              std::vector<std::string>* rejected);

/// A checkpoint to load: the file `path`, or the newest valid checkpoint of the folder `path` (rejected files
/// reported in `rejected`, as read_newest_valid). CheckpointError for a folder without one, naming `option` (the
/// setting or argument that gave the path).
std::pair<std::string, File> read_file_or_newest(const std::string& path, const std::string& option,
                                                 std::vector<std::string>* rejected);

/// Writes `text` to `path` atomically (the `latest` pointer).
void write_text_atomically(const std::string& path, const std::string& text);
/// Writes the byte ranges `pieces`, one after the other, to `path` atomically, as write_file does.
void write_pieces_atomically(const std::vector<std::pair<const void*, size_t>>& pieces, const std::string& path);

}  // namespace tessera::checkpoint
