#pragma once
/// Hugging Face's safetensors format: a model's weights as PyTorch (`safetensors.torch.load_file`), Hugging Face
/// transformers and JAX read them, and weights trained elsewhere for a Tessera model (docs/checkpoints.md,
/// "Weights for other programs").
///
///     bytes 0..7     N, the header's size (little-endian u64)
///     bytes 8..8+N   the header, JSON: {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
///                    ..., "__metadata__": {"<key>": "<value>", ...}}, padded with spaces to a multiple of 8
///     the rest       the tensors' bytes, row-major, little-endian, at their offsets, one after the other
///
/// Trainer::export_weights writes a model's parameters and buffers this way; `checkpoint.load_path` of a
/// `.safetensors` file (with `weights_only: true`) loads them into a run.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>

namespace tessera {

/// The contents of a safetensors file.
struct Safetensors {
  /// Named tensors, in the order of their bytes in the file.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  /// The header's "__metadata__" (strings only, as the format requires).
  std::map<std::string, std::string> metadata;
};

/// Writes `contents` to `path` atomically (a temporary file, fsynced, renamed; the folder fsynced), each tensor
/// copied to the CPU in row-major order. InputError for an empty or repeated name, a name "__metadata__", or a dtype
/// the format has no code for (complex numbers, unsigned integers wider than 8 bits); nothing is written then.
/// Dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
void save_safetensors(const std::string& path, const Safetensors& contents);

/// Reads and validates `path`: CheckpointError naming the file and the problem for a file that is missing,
/// truncated, or malformed (a header that is not JSON or too large, an unknown dtype, a tensor whose bytes do not fit
/// its shape, offsets that overlap, leave gaps or pass the end, non-string metadata).
Safetensors load_safetensors(const std::string& path);

}  // namespace tessera
