// Fuzz target: the IDX reader of Fashion-MNIST (data::load_fashion_mnist; gzip or plain files, zlib reads both).
// Input: a byte for the options (split, limit), then the images file, a NUL separator "\0IDX\0", and the labels
// file. Contract: a dataset, or InputError naming the file and what is wrong, never another exception, crash,
// sanitizer report or an allocation the files' contents do not back.
#include <cstdint>
#include <string>
#include <string_view>

#include <tessera/data/dataset.h>
#include <tessera/error.h>

#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > (1 << 20)) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  constexpr std::string_view kSeparator("\0IDX\0", 5);
  const size_t sep = body.find(kSeparator);
  const std::string_view images = body.substr(0, sep);
  const std::string_view labels = sep == std::string_view::npos ? std::string_view() : body.substr(sep + kSeparator.size());
  const bool train = (data[0] & 1) != 0;
  const std::string folder = tessera::fuzz::scratch();
  const std::string prefix = folder + (train ? "/train" : "/t10k");
  tessera::fuzz::write_bytes(prefix + "-images-idx3-ubyte.gz", std::string(images));
  tessera::fuzz::write_bytes(prefix + "-labels-idx1-ubyte.gz", std::string(labels));
  try {
    auto dataset = tessera::data::load_fashion_mnist(tessera::data::FashionMnistOptions()
                                                         .folder(folder)
                                                         .split(train ? "train" : "test")
                                                         .limit(static_cast<int64_t>(data[0] >> 1)));
    if (dataset->size() > 0) (void)dataset->get_batch({0, dataset->size() - 1});
  } catch (const tessera::Error&) {
  }
  return 0;
}
