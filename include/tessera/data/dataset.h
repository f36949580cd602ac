#pragma once
/// Datasets: random access to examples, fetched a batch of indices at a time.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include <tessera/batch.h>
#include <tessera/options.h>

namespace tessera::data {

/// Random-access examples. `get_batch` must be thread-safe (prefetch threads call it concurrently).
class Dataset {
 public:
  virtual ~Dataset() = default;
  /// Number of examples.
  virtual int64_t size() const = 0;
  /// The examples at `indices`, stacked into one batch (parts "input", "target", and any extras).
  virtual Batch get_batch(const std::vector<int64_t>& indices) const = 0;
  /// Number of classes for classification data (0 when not applicable).
  virtual int64_t num_classes() const { return 0; }
  /// Shape of one input example, e.g. {1, 28, 28}.
  virtual std::vector<int64_t> input_shape() const = 0;
  /// Short description for logs: "fashion_mnist(train, 60000)".
  virtual std::string describe() const = 0;
  /// Tokens in one example for sequence data (the trainer counts `tok` time with it); 0 when the data is not
  /// token sequences.
  virtual int64_t tokens_per_example() const { return 0; }
  /// True for a dataset that defines its own epoch order (a StreamingDataset: shards shuffled in blocks);
  /// the DataLoader then takes each batch's indices from `order_range` instead of shuffling itself.
  virtual bool has_order() const { return false; }
  /// The example indices at positions [begin, end) of epoch `epoch`'s order, for global batches of
  /// `batch_size` (`shuffle`: the loader's option). A pure function of its arguments; called for one batch at a
  /// time, so it must not need the positions before `begin` (resuming is O(1)). The default is an Error.
  virtual std::vector<int64_t> order_range(uint64_t seed, int64_t epoch, int64_t batch_size, bool shuffle,
                                           int64_t begin, int64_t end) const;
  /// Positions of an epoch read in global batches of `batch_size`: size(), unless the dataset's own order
  /// builds whole batches out of parts and drops what fills none (a StreamingDataset's stratified batches).
  virtual int64_t epoch_positions(int64_t batch_size) const { (void)batch_size; return size(); }
};

/// In-memory examples: every part is a tensor whose first dimension indexes examples.
class TensorDataset : public Dataset {
 public:
  TensorDataset(at::Tensor inputs, at::Tensor targets, int64_t num_classes, std::string name = "tensors");
  /// Adds an extra named part (first dimension = size()).
  void add_part(const std::string& key, at::Tensor values);

  int64_t size() const override;
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  int64_t num_classes() const override { return num_classes_; }
  std::vector<int64_t> input_shape() const override;
  std::string describe() const override;

 private:
  Batch all_;
  int64_t num_classes_;
  std::string name_;
};

/// Fashion-MNIST from the IDX `.gz` files of Debian's `dataset-fashion-mnist`
/// (/usr/share/datasets/fashion-mnist/ unless `folder` says otherwise). Inputs are float [N, 1, 28, 28] in
/// [0, 1], targets int64 class ids. A missing file is an InputError naming the file and the package.
struct FashionMnistOptions {
  TESSERA_OPTION(std::string, folder) = "/usr/share/datasets/fashion-mnist";
  TESSERA_OPTION(std::string, split) = "train";
  /// Use only the first `limit` examples (0 = all); handy for quick tests.
  TESSERA_OPTION(int64_t, limit) = 0;
  template <class V>
  void visit(V& v) {
    v("folder", folder_, "folder holding the IDX .gz files", Any{});
    v("split", split_, "which split to read", Choices{{"train", "test"}});
    v("limit", limit_, "keep only the first N examples (0 = all)", Range::at_least(0));
  }
};
std::shared_ptr<TensorDataset> load_fashion_mnist(FashionMnistOptions options);

/// Synthetic classification data of any shape and class count, a pure function of its seed: each class
/// has a random mean pattern, examples are mean + noise, so models can learn it.
struct SyntheticOptions {
  TESSERA_OPTION(int64_t, size) = 1024;
  TESSERA_OPTION(std::vector<int64_t>, input_shape) = std::vector<int64_t>{1, 8, 8};
  TESSERA_OPTION(int64_t, num_classes) = 10;
  TESSERA_OPTION(double, noise) = 1.0;
  TESSERA_OPTION(int64_t, seed) = 0;
  template <class V>
  void visit(V& v) {
    v("size", size_, "number of examples", Range::at_least(1));
    v("input_shape", input_shape_, "shape of one input, e.g. [3, 32, 32]", Range::at_least(1));
    v("num_classes", num_classes_, "number of classes", Range::at_least(2));
    v("noise", noise_, "standard deviation of the noise around each class mean", Range::at_least(0));
    v("seed", seed_, "seed of the data (independent of the run seed)", Range::at_least(0));
  }
};
std::shared_ptr<TensorDataset> make_synthetic(SyntheticOptions options);

}  // namespace tessera::data
