// Fuzz target: the checkpoint reader (checkpoint::read_file, then describe, as inspect_checkpoint and resume do).
// Input: a mode byte, then
//   mode % 3 == 0: the whole file as it lies on disk (magic, sizes and checksum as given);
//   mode % 3 == 1: the payload, wrapped in a valid header (size and CRC-32 right), so that mutations reach the
//                  metadata and the tensor index past the checksum;
//   mode % 3 == 2: the metadata JSON, a NUL, then the tensor bytes, wrapped in a valid payload and header.
// Contract: CheckpointError (or another tessera::Error) naming the file, never another exception, crash or report.
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "checkpoint/checkpoint_file.h"
#include "fuzz_support.h"

namespace {

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string wrap_payload(std::string_view payload) {
  std::string file("TSRCKPT1", 8);
  put_u64(file, payload.size());
  const auto crc = static_cast<uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(payload.data()), static_cast<uInt>(payload.size())));
  for (int i = 0; i < 4; ++i) file.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  file.append(4, '\0');
  file.append(payload);
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > (1 << 20)) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string file;
  switch (data[0] % 3) {
    case 0: file = std::string(body); break;
    case 1: file = wrap_payload(body); break;
    default: {
      const size_t nul = body.find('\0');
      const std::string_view meta = body.substr(0, nul);
      const std::string_view blob = nul == std::string_view::npos ? std::string_view() : body.substr(nul + 1);
      std::string payload;
      put_u64(payload, meta.size());
      payload.append(meta);
      payload.append(blob);
      file = wrap_payload(payload);
    }
  }
  const std::string path = tessera::fuzz::scratch() + "/ep0-ba1.ckpt";
  tessera::fuzz::write_bytes(path, file);
  try {
    const tessera::checkpoint::File read = tessera::checkpoint::read_file(path);
    for (const auto& [name, tensor] : read.tensors) {
      if (&read.tensor(name, path) != &tensor) __builtin_trap();
    }
    (void)tessera::checkpoint::describe(read, path);
  } catch (const tessera::Error&) {
  }
  return 0;
}
