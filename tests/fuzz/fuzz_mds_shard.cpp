// Fuzz target: the MDS shard reader (Shard::open: header and offset table, then every sample's columns decoded:
// scalars, str/bytes, ndarray with and without dtype/shape in the encoding, png, jpeg, pil), from a raw shard file or
// a zstd-compressed one.
// Input: a selector byte (bits 0-2: the column set below; bit 3: compressed), then for a raw shard its bytes (the
// index entry is made to agree with its size and sample count, so that mutations reach the samples); for a
// compressed one a little-endian u32 (the decompressed size the index claims) and the zstd file.
// Contract: InputError naming the shard file (and sample and column), never another exception, crash or report.
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <tessera/data/mds.h>

#include "fuzz_support.h"

namespace {

using namespace tessera::data::mds;

const std::vector<std::vector<std::pair<std::string, std::string>>> kColumnSets = {
    {{"image", "ndarray:uint8:4,4"}, {"label", "int"}},
    {{"x", "ndarray"}},
    {{"a", "str"}, {"b", "bytes"}, {"c", "uint16"}, {"d", "float16"}},
    {{"img", "png"}},
    {{"img", "jpeg"}},
    {{"img", "pil"}, {"y", "uint64"}},
    {{"v", "ndarray:float32"}, {"w", "ndarray:uint32"}},
    {{"u", "uint32"}, {"i", "int8"}, {"f", "float64"}, {"s", "int16"}},
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > (1 << 20)) return 0;
  const uint8_t selector = data[0];
  const uint8_t* body = data + 1;
  size_t body_size = size - 1;
  ShardInfo info;
  for (const auto& [name, encoding] : kColumnSets[selector & 7]) {
    info.column_names.push_back(name);
    info.column_encodings.push_back(encoding);
    info.column_sizes.push_back(Encoding::parse(encoding, "fuzz").fixed_size());
  }
  const std::string dir = tessera::fuzz::scratch();
  std::filesystem::remove(dir + "/shard.00000.mds");
  std::filesystem::remove(dir + "/shard.00000.mds.zstd");
  info.raw_data.basename = "shard.00000.mds";
  if (selector & 8) {
    if (body_size < 4) return 0;
    uint32_t raw_bytes;
    std::memcpy(&raw_bytes, body, 4);
    // At most 64 MiB (Streaming's default shard size limit): a real zstd bomb that decompresses to gigabytes would
    // stop the fuzzer on memory, not find a bug; claims the data does not back are still tried up to that size.
    info.raw_data.bytes = raw_bytes & ((uint32_t{1} << 26) - 1);
    info.compression = "zstd";
    info.zip_data = FileInfo{"shard.00000.mds.zstd", static_cast<int64_t>(body_size - 4), {}};
    tessera::fuzz::write_bytes(dir + "/" + info.zip_data->basename, body + 4, body_size - 4);
    info.samples = 0;  // unknown before decompressing: a mismatch is one of the errors checked
    if (body_size >= 8 && selector & 16) {
      uint32_t samples;
      std::memcpy(&samples, body + 4, 4);
      info.samples = samples;
    }
  } else {
    uint32_t samples = 0;
    if (body_size >= 4) std::memcpy(&samples, body, 4);
    info.samples = samples;
    info.raw_data.bytes = static_cast<int64_t>(body_size);
    tessera::fuzz::write_bytes(dir + "/" + info.raw_data.basename, body, body_size);
  }
  try {
    const auto shard = Shard::open(dir, info);
    for (int64_t i = 0; i < std::min<int64_t>(shard->size(), 64); ++i) {
      try {
        const SampleView s = shard->sample(i);
        for (int64_t c = 0; c < s.num_columns(); ++c) {
          try {
            const at::Tensor t = s.tensor(c);
            if (t.numel() > 0) (void)t.sum().item<double>();
          } catch (const tessera::Error&) {
          }
        }
      } catch (const tessera::Error&) {
      }
    }
  } catch (const tessera::Error&) {
  }
  return 0;
}
