// Fuzz target: an MDS dataset folder as the Reader opens it: index.json (read_index: every field checked), then the
// first shard it lists and a few of its samples.
// Input: the index.json text, then optionally a NUL and the bytes of a file "shard.00000.mds" beside it.
// Contract: InputError naming index.json, the shard and the key (or the shard file), never another exception,
// crash or report.
#include <cstdint>
#include <string>
#include <string_view>

#include <tessera/data/mds.h>

#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 20)) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string dir = tessera::fuzz::scratch();
  tessera::fuzz::write_bytes(dir + "/index.json", std::string(input.substr(0, nul)));
  std::filesystem::remove(dir + "/shard.00000.mds");
  if (nul != std::string_view::npos) tessera::fuzz::write_bytes(dir + "/shard.00000.mds", std::string(input.substr(nul + 1)));
  try {
    const tessera::data::mds::Reader reader(dir);
    (void)reader.index().total_samples();
    for (int64_t i = 0; i < std::min<int64_t>(reader.size(), 8); ++i) {
      const auto sample = reader.sample(i);
      for (int64_t c = 0; c < sample.num_columns(); ++c) (void)sample.tensor(c);
    }
  } catch (const tessera::Error&) {
  }
  return 0;
}
