// Byte-level text for language models (include/tessera/data/text.h).
#include <tessera/data/text.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/data/tokenizer.h>
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

TextDataset::TextDataset(at::Tensor inputs, at::Tensor targets, int64_t vocab_size, std::string name,
                         double bytes_per_token)
    : TensorDataset(inputs, targets, vocab_size, std::move(name)),
      seq_length_(inputs.dim() == 2 ? inputs.size(1) : 0),
      bytes_per_token_(bytes_per_token) {
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

std::vector<uint8_t> read_text_files(const std::string& path) {
  std::vector<uint8_t> stream;
  for (const auto& file : text_files(path)) {
    const std::vector<uint8_t> bytes = read_bytes(file);
    stream.insert(stream.end(), bytes.begin(), bytes.end());
  }
  return stream;
}

std::shared_ptr<TextDataset> load_text(TextOptions options) {
  const std::vector<uint8_t> bytes = read_text_split(options);
  at::Tensor stream;
  int64_t vocab = kByteVocabulary;
  std::string name = fmt::format("text({})", options.split());
  if (options.tokenizer().empty()) {
    if (!options.document_separator().empty())
      throw InputError("dataset.text: document_separator needs a tokenizer whose template marks where documents end "
                       "(bytes have no end-of-document token); set tokenizer: (tessera-tokenizer train ... --special "
                       "'<|endoftext|>' --template '$A <|endoftext|>') or leave document_separator out");
    stream = at::from_blob(const_cast<uint8_t*>(bytes.data()), {static_cast<int64_t>(bytes.size())}, at::kByte)
                 .to(at::kLong);
  } else {
    const Tokenizer tokenizer = Tokenizer::load(options.tokenizer());
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    const std::string& separator = options.document_separator();
    std::vector<int64_t> ids;
    int64_t documents = 0;
    if (separator.empty()) {
      ids = tokenizer.encode(text);
    } else {
      if (tokenizer.prefix_ids().empty() && tokenizer.suffix_ids().empty())
        throw InputError("dataset.text: document_separator is set but tokenizer " + options.tokenizer() +
                         " has no template to mark the documents with (its post_processor adds no tokens): the "
                         "documents would run together; train one with --template '$A <|endoftext|>' or leave "
                         "document_separator out");
      for (size_t from = 0; from < text.size();) {
        const size_t end = std::min(text.find(separator, from), text.size());
        if (end > from) {  // empty documents (separators in a row, at the start or end) are skipped
          const std::vector<int64_t> doc = tokenizer.encode(text.substr(from, end - from), true);
          ids.insert(ids.end(), doc.begin(), doc.end());
          ++documents;
        }
        from = end == text.size() ? end : end + separator.size();
      }
    }
    stream = at::tensor(ids, at::kLong);
    vocab = tokenizer.vocab_size();
    name = fmt::format("text({}, {} BPE tokens, {:.2f} bytes per token{})", options.split(), vocab,
                       ids.empty() ? 0.0 : static_cast<double>(bytes.size()) / static_cast<double>(ids.size()),
                       separator.empty() ? "" : fmt::format(", {} documents", documents));
  }
  const int64_t s = options.seq_length(), size = stream.numel();
  int64_t n = size == 0 ? 0 : (size - 1) / s;
  if (n == 0) {
    throw InputError(fmt::format("text dataset: the {} split of {} has {} {}, too few for one example of "
                                 "seq_length + 1 = {} tokens; lower seq_length or give more text",
                                 options.split(), options.path(), size,
                                 options.tokenizer().empty() ? "bytes" : "tokens", s + 1));
  }
  if (options.limit() > 0) n = std::min(n, options.limit());
  at::Tensor inputs = stream.narrow(0, 0, n * s).view({n, s}).clone();
  at::Tensor targets = stream.narrow(0, 1, n * s).view({n, s}).clone();
  return std::make_shared<TextDataset>(std::move(inputs), std::move(targets), vocab, std::move(name),
                                       static_cast<double>(bytes.size()) / static_cast<double>(size));
}

// ------------------------------------------------------------------------------------------------ classification

TextClassificationDataset::TextClassificationDataset(at::Tensor inputs, at::Tensor targets,
                                                     std::vector<std::string> labels, std::string name)
    : TensorDataset(inputs, targets, static_cast<int64_t>(labels.size()), std::move(name)),
      seq_length_(inputs.dim() == 2 ? inputs.size(1) : 0),
      labels_(std::move(labels)) {
  if (inputs.dim() != 2 || targets.dim() != 1 || targets.size(0) != inputs.size(0) ||
      inputs.scalar_type() != at::kLong || targets.scalar_type() != at::kLong) {
    throw InputError(fmt::format("TextClassificationDataset: expected int64 inputs [N, seq_length] and targets [N], "
                                 "got {} and {}",
                                 c10::str(inputs.sizes()), c10::str(targets.sizes())));
  }
}

std::shared_ptr<TextClassificationDataset> load_text_classification(TextClassificationOptions options) {
  validate_options(options, "dataset.text_classification");
  const std::string& path = options.path();
  std::error_code ec;
  if (path.empty() || !fs::is_regular_file(path, ec)) {
    throw InputError(fmt::format("text_classification dataset: {} is not a file; give `path` a file of lines: a "
                                 "label, a tab, the text",
                                 path.empty() ? "the empty path" : path));
  }
  const std::vector<uint8_t> bytes = read_bytes(path);
  struct Line {
    std::string label;
    std::vector<uint8_t> text;
  };
  std::vector<Line> lines;
  int64_t number = 0;  // 1-based line number in the file
  for (size_t begin = 0; begin < bytes.size();) {
    size_t end = begin;
    while (end < bytes.size() && bytes[end] != '\n') ++end;
    ++number;
    size_t last = end;
    if (last > begin && bytes[last - 1] == '\r') --last;  // CRLF files
    if (last > begin) {
      const auto tab = std::find(bytes.begin() + static_cast<std::ptrdiff_t>(begin),
                                 bytes.begin() + static_cast<std::ptrdiff_t>(last), uint8_t{'\t'});
      const auto stop = bytes.begin() + static_cast<std::ptrdiff_t>(last);
      if (tab == stop || tab == bytes.begin() + static_cast<std::ptrdiff_t>(begin)) {
        throw InputError(fmt::format("text_classification dataset: {}:{}: {}; expected a label, a tab, the text",
                                     path, number, tab == stop ? "no tab" : "an empty label"));
      }
      if (std::find(tab, stop, uint8_t{0}) != stop) {
        throw InputError(fmt::format("text_classification dataset: {}:{}: the text holds a byte 0, which pads "
                                     "texts; remove it",
                                     path, number));
      }
      lines.push_back({std::string(bytes.begin() + static_cast<std::ptrdiff_t>(begin), tab),
                       std::vector<uint8_t>(tab + 1, stop)});
    }
    begin = end + 1;
  }
  std::vector<std::string> labels;
  for (const auto& line : lines) labels.push_back(line.label);
  std::sort(labels.begin(), labels.end());
  labels.erase(std::unique(labels.begin(), labels.end()), labels.end());
  if (labels.size() < 2) {
    throw InputError(fmt::format("text_classification dataset: {} has {} label{}; expected at least 2 classes",
                                 path, labels.size(), labels.size() == 1 ? " (" + labels[0] + ")" : "s"));
  }
  const double f = options.test_fraction();
  std::vector<const Line*> kept;
  for (size_t i = 0; i < lines.size(); ++i) {
    const bool test = std::floor(static_cast<double>(i + 1) * f) > std::floor(static_cast<double>(i) * f);
    if (options.split() == "all" || test == (options.split() == "test")) kept.push_back(&lines[i]);
  }
  if (options.limit() > 0 && static_cast<int64_t>(kept.size()) > options.limit()) {
    kept.resize(static_cast<size_t>(options.limit()));
  }
  if (kept.empty()) {
    throw InputError(fmt::format("text_classification dataset: the {} split of {} has no line ({} labelled lines, "
                                 "test_fraction {})",
                                 options.split(), path, lines.size(), f));
  }
  const int64_t n = static_cast<int64_t>(kept.size()), s = options.seq_length();
  at::Tensor inputs = at::zeros({n, s}, at::kLong);
  at::Tensor targets = at::empty({n}, at::kLong);
  int64_t* in = inputs.data_ptr<int64_t>();
  int64_t* target = targets.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const Line& line = *kept[static_cast<size_t>(i)];
    const int64_t length = std::min<int64_t>(s, static_cast<int64_t>(line.text.size()));
    for (int64_t j = 0; j < length; ++j) in[i * s + j] = line.text[static_cast<size_t>(j)];
    target[i] = std::lower_bound(labels.begin(), labels.end(), line.label) - labels.begin();
  }
  return std::make_shared<TextClassificationDataset>(std::move(inputs), std::move(targets), std::move(labels),
                                                     fmt::format("text_classification({})", options.split()));
}

}  // namespace tessera::data
