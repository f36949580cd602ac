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
#include <string>

#include <ATen/Tensor.h>
#include <nlohmann/json.hpp>

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

/// Writes `text` to `path` atomically (the `latest` pointer).
void write_text_atomically(const std::string& path, const std::string& text);

}  // namespace tessera::checkpoint
