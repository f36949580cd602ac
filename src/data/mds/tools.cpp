// The logic behind `tessera-shard`: converting Fashion-MNIST to MDS and inspecting a dataset folder.
#include <numeric>
#include <sstream>

#include <ATen/ATen.h>
#include <xxhash.h>

#include <tessera/data/dataset.h>
#include <tessera/data/text.h>

#include "data/mds/detail.h"

namespace tessera::data::mds {

Index write_fashion_mnist(const std::string& out, const FashionMnistShardOptions& source, WriterOptions writer) {
  if (source.image_encoding() != "ndarray" && source.image_encoding() != "png")
    throw InputError("fashion-mnist image_encoding: \"" + source.image_encoding() + "\" is not one of: ndarray, png");
  auto dataset = load_fashion_mnist(
      FashionMnistOptions().folder(source.folder()).split(source.split()).limit(source.limit()));
  std::vector<int64_t> all(static_cast<size_t>(dataset->size()));
  std::iota(all.begin(), all.end(), 0);
  const Batch batch = dataset->get_batch(all);
  // The dataset holds bytes / 255 as float: scaling back and rounding recovers the IDX bytes exactly.
  const at::Tensor images = batch.input().mul(255.0).round_().to(at::kByte).reshape({-1, 28, 28}).contiguous();
  const at::Tensor labels = batch.target().to(at::kLong).contiguous();
  writer.columns({{"image", source.image_encoding() == "png" ? "png" : "ndarray:uint8:28,28"}, {"label", "int"}});
  Writer w(out, writer);
  const int64_t* label = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < images.size(0); ++i) w.write({{"image", images[i]}, {"label", label[i]}});
  return w.finish();
}

int text_token_width(int64_t vocab_size) { return vocab_size <= 256 ? 1 : vocab_size <= 65536 ? 2 : 4; }

Index write_text(const std::string& out, const TextOptions& source, WriterOptions writer) {
  const auto text = load_text(source);  // its examples, and its refusals (no text, too short a split)
  std::vector<int64_t> all(static_cast<size_t>(text->size()));
  std::iota(all.begin(), all.end(), 0);
  const Batch examples = text->get_batch(all);
  const int64_t s = source.seq_length();
  // Example i is tokens [i·S, i·S + S] of the split: its input, then its target's last token.
  const at::Tensor ids = at::cat({examples.input(), examples.target().narrow(1, s - 1, 1)}, 1).contiguous();
  const int width = text_token_width(text->num_classes());
  writer.columns({{"tokens", "bytes"}});
  Writer w(out, writer);
  const int64_t* id = ids.data_ptr<int64_t>();
  std::string sample(static_cast<size_t>((s + 1) * width), '\0');
  for (int64_t i = 0; i < ids.size(0); ++i) {
    for (int64_t k = 0; k <= s; ++k) {  // little-endian ids of `width` bytes
      const auto v = static_cast<uint64_t>(id[i * (s + 1) + k]);
      for (int b = 0; b < width; ++b) sample[static_cast<size_t>(k * width + b)] = static_cast<char>(v >> (8 * b));
    }
    w.write({{"tokens", sample}});
  }
  return w.finish();
}

Inspection inspect(const std::string& dir, ReaderOptions options) {
  Reader reader(dir, options);
  Inspection r;
  r.column_names = reader.column_names();
  r.column_encodings = reader.column_encodings();
  r.samples = reader.size();
  r.shards = reader.num_shards();
  r.compression = reader.index().shards.front().compression;
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> state(XXH3_createState(), XXH3_freeState);
  XXH3_64bits_reset(state.get());
  for (int64_t k = 0; k < reader.num_shards(); ++k) {
    const ShardInfo& info = reader.index().shards[static_cast<size_t>(k)];
    r.raw_bytes += info.raw_data.bytes;
    r.zip_bytes += info.zip_data ? info.zip_data->bytes : 0;
    const auto shard = reader.shard(k);
    for (int64_t i = 0; i < shard->size(); ++i) {
      const Bytes rec = shard->sample(i).record();
      XXH3_64bits_update(state.get(), rec.data, rec.size);
    }
  }
  char hex[24];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(XXH3_64bits_digest(state.get())));
  r.checksum = hex;
  return r;
}

std::string format_inspection(const std::string& dir, const Inspection& r) {
  std::ostringstream os;
  os << "dataset:     " << dir << "\n";
  os << "samples:     " << r.samples << "\n";
  os << "shards:      " << r.shards << "\n";
  os << "compression: " << (r.compression.empty() ? "none" : r.compression) << "\n";
  os << "bytes:       " << r.raw_bytes << " raw";
  if (r.zip_bytes > 0) os << ", " << r.zip_bytes << " compressed";
  os << "\ncolumns:\n";
  for (size_t c = 0; c < r.column_names.size(); ++c)
    os << "  " << r.column_names[c] << ": " << r.column_encodings[c] << "\n";
  os << "checksum:    xxh3_64:" << r.checksum << " (all sample records in order)\n";
  return os.str();
}

}  // namespace tessera::data::mds
