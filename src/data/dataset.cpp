// In-memory datasets: TensorDataset, Fashion-MNIST (IDX files read with zlib) and synthetic data.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <tessera/data/dataset.h>
#include <tessera/error.h>
#include <tessera/rng.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

namespace tessera::data {

std::vector<int64_t> Dataset::order_range(uint64_t, int64_t, int64_t, bool, int64_t, int64_t) const {
  throw Error("Dataset::order_range: " + describe() + " has no order of its own (has_order() is false)");
}

// ---------------------------------------------------------------------------------------------
// TensorDataset

TensorDataset::TensorDataset(at::Tensor inputs, at::Tensor targets, int64_t num_classes, std::string name)
    : num_classes_(num_classes), name_(std::move(name)) {
  if (!inputs.defined() || !targets.defined())
    throw InputError("TensorDataset \"" + name_ + "\": inputs and targets must be defined tensors");
  if (inputs.dim() == 0 || targets.dim() == 0)
    throw InputError("TensorDataset \"" + name_ + "\": inputs and targets need a first (example) dimension");
  if (inputs.size(0) != targets.size(0))
    throw InputError("TensorDataset \"" + name_ + "\": " + std::to_string(inputs.size(0)) + " inputs but " +
                     std::to_string(targets.size(0)) + " targets");
  if (num_classes < 0)
    throw InputError("TensorDataset \"" + name_ + "\": num_classes must be >= 0, got " +
                     std::to_string(num_classes));
  all_ = Batch(std::move(inputs), std::move(targets));
}

void TensorDataset::add_part(const std::string& key, at::Tensor values) {
  if (!values.defined() || values.dim() == 0 || values.size(0) != size())
    throw InputError("TensorDataset \"" + name_ + "\": part \"" + key + "\" must have first dimension " +
                     std::to_string(size()) +
                     (values.defined() && values.dim() > 0
                          ? ", got " + std::to_string(values.size(0))
                          : std::string(", got a scalar or undefined tensor")));
  all_.set(key, std::move(values));
}

int64_t TensorDataset::size() const { return all_.input().size(0); }

Batch TensorDataset::get_batch(const std::vector<int64_t>& indices) const {
  const int64_t n = size();
  for (int64_t i : indices) {
    if (i < 0 || i >= n)
      throw Error("TensorDataset \"" + name_ + "\": example index " + std::to_string(i) +
                  " is out of range [0, " + std::to_string(n) + ")");
  }
  // A view of the caller's indices: index_select copies the rows before returning, so no copy is needed.
  const at::Tensor index =
      at::from_blob(const_cast<int64_t*>(indices.data()), {static_cast<int64_t>(indices.size())},
                    at::TensorOptions(at::kLong));
  Batch out;
  out.parts().reserve(all_.parts().size());
  for (const auto& [key, tensor] : all_.parts()) {
    out.parts().emplace_back(key,
                             tensor.index_select(0, tensor.is_cpu() ? index : index.to(tensor.device())));
  }
  return out;
}

std::vector<int64_t> TensorDataset::input_shape() const {
  const auto sizes = all_.input().sizes();
  return std::vector<int64_t>(sizes.begin() + 1, sizes.end());
}

std::string TensorDataset::describe() const {
  // "fashion_mnist(train)" -> "fashion_mnist(train, 60000)"; "tensors" -> "tensors(100)".
  const std::string n = std::to_string(size());
  if (!name_.empty() && name_.back() == ')') return name_.substr(0, name_.size() - 1) + ", " + n + ")";
  return name_ + "(" + n + ")";
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST

namespace {

constexpr int64_t kFashionClasses = 10;

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    if (!std::filesystem::exists(path)) {
      throw InputError("Fashion-MNIST file " + path +
                       " not found; install the Debian package dataset-fashion-mnist "
                       "(apt-get install dataset-fashion-mnist) or set the dataset's folder to the directory "
                       "holding train-images-idx3-ubyte.gz and the other IDX .gz files");
    }
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) throw InputError("cannot open Fashion-MNIST file " + path);
    gzbuffer(file_, 1 << 18);
  }
  ~GzFile() {
    if (file_ != nullptr) gzclose(file_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  void read(void* dst, size_t bytes, const char* what) {
    auto* p = static_cast<char*>(dst);
    while (bytes > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(bytes, size_t{1} << 30));
      const int got = gzread(file_, p, chunk);
      if (got <= 0) {
        int errnum = 0;
        const char* msg = gzerror(file_, &errnum);
        throw InputError(
            "Fashion-MNIST file " + path_ + " is truncated or corrupt while reading " + what +
            (errnum != Z_OK && msg != nullptr ? std::string(" (zlib: ") + msg + ")" : std::string()));
      }
      p += got;
      bytes -= static_cast<size_t>(got);
    }
  }

  /// Reads `bytes` bytes into a buffer that grows as the data arrives, so that a header claiming more than the
  /// file holds fails as truncated, after reading what is there, instead of allocating what the header says.
  std::vector<uint8_t> read_counted(size_t bytes, const char* what) {
    constexpr size_t kChunk = size_t{1} << 20;
    std::vector<uint8_t> out;
    while (out.size() < bytes) {
      const size_t chunk = std::min(kChunk, bytes - out.size());
      const size_t old_size = out.size();
      out.resize(old_size + chunk);
      read(out.data() + old_size, chunk, what);
    }
    return out;
  }

  uint32_t read_be32(const char* what) {
    std::array<unsigned char, 4> b{};
    read(b.data(), b.size(), what);
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

void expect(GzFile& f, uint32_t got, uint32_t expected, const char* what) {
  if (got != expected)
    throw InputError("Fashion-MNIST file " + f.path() + ": " + what + " is " + std::to_string(got) +
                     ", expected " + std::to_string(expected) + " (is it an IDX file of Fashion-MNIST?)");
}

}  // namespace

std::shared_ptr<TensorDataset> load_fashion_mnist(FashionMnistOptions options) {
  if (options.split() != "train" && options.split() != "test")
    throw InputError("fashion_mnist.split: \"" + options.split() + "\" is not one of: train, test");
  if (options.limit() < 0)
    throw InputError("fashion_mnist.limit: " + std::to_string(options.limit()) + " is out of range >= 0");

  const std::string prefix = options.folder() + "/" + (options.split() == "train" ? "train" : "t10k");
  GzFile images(prefix + "-images-idx3-ubyte.gz");
  GzFile labels(prefix + "-labels-idx1-ubyte.gz");

  expect(images, images.read_be32("the magic number"), 0x00000803, "the magic number");
  const uint32_t n_images = images.read_be32("the number of images");
  expect(images, images.read_be32("the number of rows"), 28, "the number of rows");
  expect(images, images.read_be32("the number of columns"), 28, "the number of columns");
  expect(labels, labels.read_be32("the magic number"), 0x00000801, "the magic number");
  const uint32_t n_labels = labels.read_be32("the number of labels");
  if (n_images != n_labels)
    throw InputError("Fashion-MNIST files " + images.path() + " and " + labels.path() + " disagree: " +
                     std::to_string(n_images) + " images but " + std::to_string(n_labels) + " labels");

  int64_t n = n_images;
  if (options.limit() > 0) n = std::min<int64_t>(n, options.limit());

  // The counts come from the files: the bytes are read before any tensor of that size is allocated.
  std::vector<uint8_t> label_data = labels.read_counted(static_cast<size_t>(n), "the labels");
  std::vector<uint8_t> image_data = images.read_counted(static_cast<size_t>(n) * 28 * 28, "the images");
  at::Tensor image_bytes = at::from_blob(image_data.data(), {n, 1, 28, 28}, at::TensorOptions(at::kByte));
  at::Tensor label_bytes = at::from_blob(label_data.data(), {n}, at::TensorOptions(at::kByte));
  const uint8_t* lp = label_data.data();
  for (int64_t i = 0; i < n; ++i) {
    if (lp[i] >= kFashionClasses)
      throw InputError("Fashion-MNIST file " + labels.path() + ": label " + std::to_string(lp[i]) +
                       " of example " + std::to_string(i) + " is not a class id in [0, 10)");
  }

  at::Tensor inputs = image_bytes.to(at::kFloat).div_(255.0);
  at::Tensor targets = label_bytes.to(at::kLong);
  return std::make_shared<TensorDataset>(std::move(inputs), std::move(targets), kFashionClasses,
                                         "fashion_mnist(" + options.split() + ")");
}

// ---------------------------------------------------------------------------------------------
// Synthetic data

namespace {
constexpr uint64_t kSyntheticStream = 0x53594E54;  // "SYNT"
}

std::shared_ptr<TensorDataset> make_synthetic(SyntheticOptions options) {
  const auto bad = [](const std::string& what) { throw InputError("synthetic." + what); };
  if (options.size() < 1) bad("size: " + std::to_string(options.size()) + " is out of range >= 1");
  if (options.num_classes() < 2)
    bad("num_classes: " + std::to_string(options.num_classes()) + " is out of range >= 2");
  if (!(options.noise() >= 0)) bad("noise: " + std::to_string(options.noise()) + " is out of range >= 0");
  if (options.seed() < 0) bad("seed: " + std::to_string(options.seed()) + " is out of range >= 0");
  if (options.input_shape().empty()) bad("input_shape: must have at least one dimension, e.g. [1, 8, 8]");
  int64_t dim = 1;
  for (int64_t d : options.input_shape()) {
    if (d < 1) bad("input_shape: every dimension must be >= 1, got " + std::to_string(d));
    if (dim > std::numeric_limits<int64_t>::max() / d) bad("input_shape: too many elements");
    dim *= d;
  }

  const int64_t n = options.size();
  const int64_t classes = options.num_classes();
  // Made in memory at once (inputs, targets and their shuffle, the class means): more than the machine has is
  // refused here rather than failing inside the allocator.
  const double bytes = static_cast<double>(n) * (static_cast<double>(dim) * 4 + 16) +
                       static_cast<double>(classes) * static_cast<double>(dim) * 4;
  const double memory = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  if (memory > 0 && bytes > memory) {
    bad(fmt::format("size: {} examples of {} values ({} classes) take {:.3g} GB in memory, more than this machine's "
                    "{:.3g} GB; use fewer examples or a smaller input_shape",
                    n, dim, classes, bytes / 1e9, memory / 1e9));
  }
  const auto seed = static_cast<uint64_t>(options.seed());
  const float noise = static_cast<float>(options.noise());

  // Class means: one standard normal per input element and class.
  std::vector<float> means(static_cast<size_t>(classes * dim));
  {
    Rng rng(seed, {kSyntheticStream, 1});
    for (float& m : means) m = static_cast<float>(rng.normal());
  }
  // Balanced labels (i mod C) in a shuffled order.
  at::Tensor targets = at::empty({n}, at::TensorOptions(at::kLong));
  {
    const std::vector<int64_t> perm = Rng(seed, {kSyntheticStream, 2}).permutation(n);
    int64_t* t = targets.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) t[i] = perm[static_cast<size_t>(i)] % classes;
  }
  // Examples: each from its own stream, so the loop parallelises without changing the result.
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), options.input_shape().begin(), options.input_shape().end());
  at::Tensor inputs = at::empty(shape, at::TensorOptions(at::kFloat));
  float* x = inputs.data_ptr<float>();
  const int64_t* t = targets.data_ptr<int64_t>();
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Rng rng(seed, {kSyntheticStream, 3, static_cast<uint64_t>(i)});
      const float* mean = means.data() + t[i] * dim;
      float* row = x + i * dim;
      for (int64_t j = 0; j < dim; ++j) row[j] = mean[j] + noise * static_cast<float>(rng.normal());
    }
  });
  return std::make_shared<TensorDataset>(std::move(inputs), std::move(targets), classes,
                                         "synthetic(seed=" + std::to_string(options.seed()) + ")");
}

}  // namespace tessera::data
