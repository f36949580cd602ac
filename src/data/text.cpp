// Byte-level text for language models (include/tessera/data/text.h).
#include <tessera/data/text.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/error.h>

namespace tessera::data {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kByteVocabulary = 256;

/// The files `path` names: itself, or a folder's regular files (not links, not fortune `.dat` indexes) by name.
std::vector<fs::path> text_files(const std::string& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    throw InputError(fmt::format(
        "text dataset: {} does not exist; give `path` a text file or a folder of text files (the default, "
        "/usr/share/games/fortunes, comes with the Debian package fortunes: apt-get install fortunes)",
        path));
  }
  if (!fs::is_directory(status)) return {fs::path(path)};
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    if (entry.is_symlink() || !entry.is_regular_file() || entry.path().extension() == ".dat") continue;
    files.push_back(entry.path());
  }
  if (ec) throw InputError(fmt::format("text dataset: cannot list folder {}: {}", path, ec.message()));
  std::sort(files.begin(), files.end());
  if (files.empty()) throw InputError(fmt::format("text dataset: folder {} holds no text files", path));
  return files;
}

std::vector<uint8_t> read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(fmt::format("text dataset: cannot open {}", file.string()));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw InputError(fmt::format("text dataset: cannot read {}", file.string()));
  return bytes;
}

}  // namespace

TextDataset::TextDataset(at::Tensor inputs, at::Tensor targets, int64_t vocab_size, std::string name)
    : TensorDataset(inputs, targets, vocab_size, std::move(name)), seq_length_(inputs.dim() == 2 ? inputs.size(1) : 0) {
  if (inputs.dim() != 2 || targets.sizes() != inputs.sizes() || inputs.scalar_type() != at::kLong ||
      targets.scalar_type() != at::kLong) {
    throw InputError(fmt::format("TextDataset: inputs and targets must be int64 [N, seq_length] of one shape, got {} "
                                 "and {}",
                                 c10::str(inputs.sizes()), c10::str(targets.sizes())));
  }
}

std::vector<uint8_t> read_text_split(TextOptions options) {
  validate_options(options, "dataset.text");
  std::vector<uint8_t> stream;
  for (const auto& file : text_files(options.path())) {
    const std::vector<uint8_t> bytes = read_bytes(file);
    const auto cut = static_cast<std::ptrdiff_t>(static_cast<double>(bytes.size()) * (1.0 - options.test_fraction()));
    if (options.split() == "train") {
      stream.insert(stream.end(), bytes.begin(), bytes.begin() + cut);
    } else {
      stream.insert(stream.end(), bytes.begin() + cut, bytes.end());
    }
  }
  return stream;
}

std::shared_ptr<TextDataset> load_text(TextOptions options) {
  const std::vector<uint8_t> stream = read_text_split(options);
  const int64_t s = options.seq_length();
  int64_t n = stream.empty() ? 0 : (static_cast<int64_t>(stream.size()) - 1) / s;
  if (n == 0) {
    throw InputError(fmt::format("text dataset: the {} split of {} has {} bytes, too few for one example of "
                                 "seq_length + 1 = {} tokens; lower seq_length or give more text",
                                 options.split(), options.path(), stream.size(), s + 1));
  }
  if (options.limit() > 0) n = std::min(n, options.limit());
  const at::Tensor tokens =
      at::from_blob(const_cast<uint8_t*>(stream.data()), {static_cast<int64_t>(stream.size())}, at::kByte)
          .narrow(0, 0, n * s + 1)
          .to(at::kLong);
  at::Tensor inputs = tokens.narrow(0, 0, n * s).view({n, s}).clone();
  at::Tensor targets = tokens.narrow(0, 1, n * s).view({n, s}).clone();
  return std::make_shared<TextDataset>(std::move(inputs), std::move(targets), kByteVocabulary,
                                       fmt::format("text({})", options.split()));
}

}  // namespace tessera::data
