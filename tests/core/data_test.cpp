#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <tessera/data/dataloader.h>
#include <tessera/data/dataset.h>
#include <tessera/data/transforms.h>
#include <tessera/error.h>
#include <tessera/rng.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <set>

using namespace tessera;
using namespace tessera::data;

namespace {

const char* kFashionFolder = "/usr/share/datasets/fashion-mnist";

bool fashion_installed() {
  return std::filesystem::exists(std::string(kFashionFolder) + "/train-images-idx3-ubyte.gz") &&
         std::filesystem::exists(std::string(kFashionFolder) + "/t10k-labels-idx1-ubyte.gz");
}

// n examples of shape [1, 6, 6] whose pixels encode the example id; an extra part "id" too.
std::shared_ptr<TensorDataset> numbered(int64_t n) {
  auto inputs = at::arange(n, at::kFloat).view({n, 1, 1, 1}).expand({n, 1, 6, 6}).contiguous() +
                at::arange(36, at::kFloat).view({1, 1, 6, 6}) / 100.0;
  auto ds = std::make_shared<TensorDataset>(inputs, at::arange(n, at::kLong).remainder(3), 3, "numbered");
  ds->add_part("id", at::arange(n, at::kLong));
  return ds;
}

std::vector<std::shared_ptr<const BatchTransform>> augmentations() {
  return {std::make_shared<RandomCrop>(RandomCropOptions().padding(2)),
          std::make_shared<HorizontalFlip>(HorizontalFlipOptions().p(0.5)),
          std::make_shared<Normalize>(NormalizeOptions().mean({0.5}).std({2.0}))};
}

std::vector<Batch> collect(DataLoader& loader) {
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].parts().size(), b[i].parts().size());
    for (size_t p = 0; p < a[i].parts().size(); ++p) {
      EXPECT_EQ(a[i].parts()[p].first, b[i].parts()[p].first);
      EXPECT_TRUE(at::equal(a[i].parts()[p].second, b[i].parts()[p].second))
          << "batch " << i << " part " << p;
    }
  }
}

std::vector<int64_t> ids_of(const Batch& b) {
  const at::Tensor id = b.get("id").contiguous();
  return std::vector<int64_t>(id.data_ptr<int64_t>(), id.data_ptr<int64_t>() + id.numel());
}

class FailingDataset : public Dataset {
 public:
  int64_t size() const override { return 20; }
  Batch get_batch(const std::vector<int64_t>& indices) const override {
    if (std::find(indices.begin(), indices.end(), 13) != indices.end()) throw Error("example 13 is broken");
    return Batch(at::zeros({static_cast<int64_t>(indices.size()), 1}),
                 at::zeros({static_cast<int64_t>(indices.size())}, at::kLong));
  }
  std::vector<int64_t> input_shape() const override { return {1}; }
  std::string describe() const override { return "failing"; }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// TensorDataset

TEST(TensorDataset, GetBatchSelectsTheSameRowsOfEveryPart) {
  auto ds = numbered(10);
  EXPECT_EQ(ds->size(), 10);
  EXPECT_EQ(ds->num_classes(), 3);
  EXPECT_EQ(ds->input_shape(), (std::vector<int64_t>{1, 6, 6}));
  EXPECT_EQ(ds->describe(), "numbered(10)");
  const Batch b = ds->get_batch({7, 2, 2});
  ASSERT_EQ(b.parts().size(), 3u);
  EXPECT_EQ(ids_of(b), (std::vector<int64_t>{7, 2, 2}));
  EXPECT_EQ(b.target()[0].item<int64_t>(), 1);
  EXPECT_FLOAT_EQ(b.input()[1][0][0][0].item<float>(), 2.0f);
  EXPECT_THROW(ds->get_batch({10}), Error);
  EXPECT_THROW(ds->get_batch({-1}), Error);
  EXPECT_THROW(ds->add_part("bad", at::zeros({9})), InputError);
  EXPECT_THROW(TensorDataset(at::zeros({3, 2}), at::zeros({4}), 2), InputError);
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST

TEST(FashionMnist, MissingFolderNamesTheFileAndThePackage) {
  try {
    load_fashion_mnist(FashionMnistOptions().folder("/nonexistent/tessera-fmnist"));
    FAIL() << "no exception";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("/nonexistent/tessera-fmnist/train-images-idx3-ubyte.gz"), std::string::npos) << msg;
    EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
  }
  EXPECT_THROW(load_fashion_mnist(FashionMnistOptions().split("validation")), InputError);
}

TEST(FashionMnist, CorruptFileIsAnInputErrorNamingIt) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("tessera-fmnist-bad-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const char* name : {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    FILE* f = std::fopen((dir / name).c_str(), "wb");
    std::fputs("not an idx file at all", f);  // gzread passes plain files through
    std::fclose(f);
  }
  try {
    load_fashion_mnist(FashionMnistOptions().folder(dir.string()).split("test"));
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("t10k-images-idx3-ubyte.gz"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("magic number"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

// Found by fuzzing (tests/fuzz/corpus/fuzz_idx/regress_idx_huge): the image count of the header was trusted and
// a tensor of that size allocated (4294967295 images: 3 TB) before reading; now the file's bytes come first.
TEST(FashionMnist, HeaderCountBeyondTheFileIsTruncationNotAnAllocation) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("tessera-fmnist-count-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const char* name, const std::vector<uint32_t>& header, size_t payload) {
    std::string bytes;
    for (uint32_t v : header)
      for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<char>((v >> shift) & 0xff));
    bytes.append(payload, '\1');
    FILE* f = std::fopen((dir / name).c_str(), "wb");
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  };
  write("t10k-images-idx3-ubyte.gz", {0x803, 0xffffffffu, 28, 28}, 2 * 784);
  write("t10k-labels-idx1-ubyte.gz", {0x801, 0xffffffffu}, 2);
  auto error = [&]() -> std::string {
    try {
      load_fashion_mnist(FashionMnistOptions().folder(dir.string()).split("test"));
    } catch (const InputError& e) {
      return e.what();
    }
    return "no InputError";
  };
  const std::string msg = error();
  EXPECT_NE(msg.find("t10k-labels-idx1-ubyte.gz is truncated or corrupt while reading the labels"), std::string::npos)
      << msg;
  // With as many labels as the header says, the images file is the one found short.
  write("t10k-images-idx3-ubyte.gz", {0x803, 3, 28, 28}, 2 * 784);
  write("t10k-labels-idx1-ubyte.gz", {0x801, 3}, 3);
  const std::string images = error();
  EXPECT_NE(images.find("t10k-images-idx3-ubyte.gz is truncated or corrupt while reading the images"),
            std::string::npos)
      << images;
  // And a complete pair of files reads: 3 images of value 1/255, labels 1.
  write("t10k-images-idx3-ubyte.gz", {0x803, 3, 28, 28}, 3 * 784);
  const auto ds = load_fashion_mnist(FashionMnistOptions().folder(dir.string()).split("test"));
  const Batch b = ds->get_batch({0, 1, 2});
  EXPECT_EQ(b.input().sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  EXPECT_TRUE(b.input().eq(1.0f / 255.0f).all().item<bool>());
  EXPECT_TRUE(b.target().eq(1).all().item<bool>());
  std::filesystem::remove_all(dir);
}

TEST(FashionMnist, ShapesTypesAndLabels) {
  if (!fashion_installed()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto test = load_fashion_mnist(FashionMnistOptions().split("test"));
  EXPECT_EQ(test->size(), 10000);
  EXPECT_EQ(test->describe(), "fashion_mnist(test, 10000)");
  auto train = load_fashion_mnist(FashionMnistOptions().split("train").limit(1000));
  ASSERT_EQ(train->size(), 1000);
  EXPECT_EQ(train->num_classes(), 10);
  EXPECT_EQ(train->input_shape(), (std::vector<int64_t>{1, 28, 28}));
  const Batch all = train->get_batch([] {
    std::vector<int64_t> v(1000);
    for (int i = 0; i < 1000; ++i) v[i] = i;
    return v;
  }());
  EXPECT_EQ(all.input().scalar_type(), at::kFloat);
  EXPECT_EQ(all.input().sizes(), (std::vector<int64_t>{1000, 1, 28, 28}));
  EXPECT_GE(all.input().min().item<float>(), 0.0f);
  EXPECT_LE(all.input().max().item<float>(), 1.0f);
  EXPECT_EQ(all.input().max().item<float>(), 1.0f);  // some pixel is saturated
  EXPECT_EQ(all.target().scalar_type(), at::kLong);
  EXPECT_EQ(all.target().min().item<int64_t>(), 0);
  EXPECT_EQ(all.target().max().item<int64_t>(), 9);
  // Roughly balanced classes in the first 1000 examples.
  const at::Tensor counts = at::bincount(all.target());
  EXPECT_GT(counts.min().item<int64_t>(), 60);
}

// ---------------------------------------------------------------------------------------------
// Synthetic

TEST(Synthetic, IsAPureFunctionOfItsSeed) {
  const auto opts = SyntheticOptions().size(200).input_shape({2, 3, 3}).num_classes(4).seed(7);
  auto a = make_synthetic(opts);
  auto b = make_synthetic(opts);
  auto c = make_synthetic(SyntheticOptions(opts).seed(8));
  std::vector<int64_t> all(200);
  for (int i = 0; i < 200; ++i) all[i] = i;
  const Batch ba = a->get_batch(all), bb = b->get_batch(all), bc = c->get_batch(all);
  EXPECT_TRUE(at::equal(ba.input(), bb.input()));
  EXPECT_TRUE(at::equal(ba.target(), bb.target()));
  EXPECT_FALSE(at::equal(ba.input(), bc.input()));
  EXPECT_EQ(ba.input().sizes(), (std::vector<int64_t>{200, 2, 3, 3}));
  EXPECT_EQ(a->input_shape(), (std::vector<int64_t>{2, 3, 3}));
  EXPECT_EQ(a->num_classes(), 4);
  // Balanced labels, in a shuffled order.
  EXPECT_TRUE(at::equal(at::bincount(ba.target()), at::full({4}, 50, at::kLong)));
  EXPECT_FALSE(at::equal(ba.target(), at::arange(200, at::kLong).remainder(4)));
  EXPECT_THROW(make_synthetic(SyntheticOptions().num_classes(1)), InputError);
  EXPECT_THROW(make_synthetic(SyntheticOptions().input_shape({})), InputError);
}

TEST(Synthetic, ClassesAreSeparableByTheirMeans) {
  // With little noise a nearest-class-mean classifier (means estimated on half the data) is near perfect.
  auto ds = make_synthetic(SyntheticOptions().size(400).input_shape({16}).num_classes(5).noise(0.5).seed(3));
  std::vector<int64_t> all(400);
  for (int i = 0; i < 400; ++i) all[i] = i;
  const Batch b = ds->get_batch(all);
  const at::Tensor x = b.input(), y = b.target();
  const at::Tensor xs = x.narrow(0, 0, 200), ys = y.narrow(0, 0, 200);
  std::vector<at::Tensor> means;
  for (int c = 0; c < 5; ++c) means.push_back(xs.index({ys == c}).mean(0));
  const at::Tensor m = at::stack(means);  // [5, 16]
  const at::Tensor xt = x.narrow(0, 200, 200), yt = y.narrow(0, 200, 200);
  const at::Tensor d = at::cdist(xt, m);  // [200, 5]
  const double acc = d.argmin(1).eq(yt).to(at::kDouble).mean().item<double>();
  EXPECT_GT(acc, 0.95);
  // The class means themselves differ by much more than the noise.
  EXPECT_GT(at::pdist(m).min().item<float>(), 2.0f);
}

// ---------------------------------------------------------------------------------------------
// Transforms

TEST(Transforms, NormalizePerChannelAndBroadcast) {
  Rng rng(0);
  Batch b(at::ones({2, 3, 2, 2}), at::zeros({2}, at::kLong));
  Normalize({NormalizeOptions().mean({1.0, 0.0, 0.5}).std({1.0, 2.0, 0.25})}).apply(b, rng);
  EXPECT_TRUE(at::allclose(b.input()[1][0], at::zeros({2, 2})));
  EXPECT_TRUE(at::allclose(b.input()[1][1], at::full({2, 2}, 0.5)));
  EXPECT_TRUE(at::allclose(b.input()[1][2], at::full({2, 2}, 2.0)));
  Batch one(at::full({2, 3, 2, 2}, 3.0), at::zeros({2}, at::kLong));
  Normalize(NormalizeOptions().mean({1.0}).std({2.0})).apply(one, rng);
  EXPECT_TRUE(at::allclose(one.input(), at::ones({2, 3, 2, 2})));
  // Byte images come out as float.
  Batch bytes(at::full({1, 1, 2, 2}, 255, at::kByte), at::zeros({1}, at::kLong));
  Normalize(NormalizeOptions().mean({0.0}).std({255.0})).apply(bytes, rng);
  EXPECT_EQ(bytes.input().scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(bytes.input(), at::ones({1, 1, 2, 2})));
}

TEST(Transforms, NormalizeChannelMismatchIsAnInputError) {
  Rng rng(0);
  Batch b(at::ones({2, 1, 2, 2}), at::zeros({2}, at::kLong));
  const Normalize n(NormalizeOptions().mean({0.1, 0.2, 0.3}).std({1.0, 1.0, 1.0}));
  try {
    n.apply(b, rng);
    FAIL() << "no exception";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("1 channels"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Normalize(NormalizeOptions().mean({0.1, 0.2}).std({1.0, 1.0, 1.0})), InputError);
  EXPECT_THROW(Normalize(NormalizeOptions().std({0.0})), InputError);
}

TEST(Transforms, RandomCropShiftsEachExampleWithinThePadding) {
  const int64_t n = 64, p = 2;
  // Every pixel is distinct and positive, so the crop offset of each example can be recovered.
  const at::Tensor img =
      at::arange(1, 1 + 8 * 8, at::kFloat).view({1, 1, 8, 8}).expand({n, 1, 8, 8}).contiguous();
  Batch b(img.clone(), at::zeros({n}, at::kLong));
  Rng rng(5);
  RandomCrop(RandomCropOptions().padding(p)).apply(b, rng);
  ASSERT_EQ(b.input().sizes(), img.sizes());
  const at::Tensor padded = at::constant_pad_nd(img, {p, p, p, p}, 0);
  std::set<std::pair<int64_t, int64_t>> offsets;
  Rng replay(5);
  for (int64_t i = 0; i < n; ++i) {
    const auto dy = static_cast<int64_t>(replay.below(2 * p + 1));
    const auto dx = static_cast<int64_t>(replay.below(2 * p + 1));
    offsets.insert({dy, dx});
    const at::Tensor expected = padded[i].narrow(-2, dy, 8).narrow(-1, dx, 8);
    ASSERT_TRUE(at::equal(b.input()[i], expected)) << i;
  }
  EXPECT_GT(offsets.size(), 10u);  // offsets differ between examples
  // A non-contiguous input (the general path) gives the same result as the contiguous one.
  Batch strided(at::cat({img, img}, -1).narrow(-1, 0, 8), at::zeros({n}, at::kLong));
  ASSERT_FALSE(strided.input().is_contiguous());
  Rng again(5);
  RandomCrop(RandomCropOptions().padding(p)).apply(strided, again);
  EXPECT_TRUE(at::equal(strided.input(), b.input()));
  // Padding larger than the image leaves some examples all zero; still the documented windows.
  Batch small(at::ones({32, 3, 2, 2}), at::zeros({32}, at::kLong));
  Rng big(1);
  RandomCrop(RandomCropOptions().padding(3)).apply(small, big);
  EXPECT_EQ(small.input().sizes(), (std::vector<int64_t>{32, 3, 2, 2}));
  EXPECT_LT(small.input().sum().item<float>(), 32 * 12);
}

TEST(Transforms, HorizontalFlipFlipsTheChosenExamples) {
  const int64_t n = 200;
  const at::Tensor img = at::arange(n * 2 * 3 * 4, at::kFloat).view({n, 2, 3, 4});
  Batch b(img.clone(), at::zeros({n}, at::kLong));
  Rng rng(17);
  HorizontalFlip(HorizontalFlipOptions().p(0.5)).apply(b, rng);
  Rng replay(17);
  int flipped = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool flip = replay.uniform() < 0.5;
    flipped += flip;
    ASSERT_TRUE(at::equal(b.input()[i], flip ? img[i].flip({-1}) : img[i])) << i;
  }
  EXPECT_GT(flipped, 70);
  EXPECT_LT(flipped, 130);
  Batch all(img.clone(), at::zeros({n}, at::kLong));
  HorizontalFlip(HorizontalFlipOptions().p(1.0)).apply(all, rng);
  EXPECT_TRUE(at::equal(all.input(), img.flip({-1})));
  Batch none(img.clone(), at::zeros({n}, at::kLong));
  HorizontalFlip(HorizontalFlipOptions().p(0.0)).apply(none, rng);
  EXPECT_TRUE(at::equal(none.input(), img));
}

TEST(Transforms, InPlaceAndCopyingPathsAgreeAndSharedInputsAreNotModified) {
  // A batch that owns its input alone is transformed in place; one whose input is still visible to the
  // caller (or is a view, or a type the fast paths do not cover) gets a new tensor. Same results either way.
  const at::Tensor base = at::rand({16, 3, 7, 9});
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kByte, at::kHalf}) {
    for (const auto& transform : augmentations()) {
      const at::Tensor shared = base.mul(100).to(dtype);
      const at::Tensor keep = shared.clone();
      Batch owned(shared.clone(), at::zeros({16}, at::kLong));
      Batch visible(shared, at::zeros({16}, at::kLong));
      Rng r1(21), r2(21);
      transform->apply(owned, r1);
      transform->apply(visible, r2);
      EXPECT_TRUE(at::equal(shared, keep)) << transform->name() << " " << dtype;
      EXPECT_TRUE(at::equal(owned.input(), visible.input())) << transform->name() << " " << dtype;
      EXPECT_EQ(r1, r2);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// DataLoader

TEST(DataLoader, NumBatchesAndDropLast) {
  auto ds = numbered(10);
  EXPECT_EQ(DataLoader(ds, DataLoaderOptions().batch_size(4)).num_batches(), 3);
  EXPECT_EQ(DataLoader(ds, DataLoaderOptions().batch_size(4)).num_samples(), 10);
  EXPECT_EQ(DataLoader(ds, DataLoaderOptions().batch_size(4).drop_last(true)).num_batches(), 2);
  EXPECT_EQ(DataLoader(ds, DataLoaderOptions().batch_size(4).drop_last(true)).num_samples(), 8);
  EXPECT_EQ(DataLoader(ds, DataLoaderOptions().batch_size(5).drop_last(true)).num_batches(), 2);

  DataLoader loader(ds, DataLoaderOptions().batch_size(4).drop_last(true).workers(2));
  loader.start_epoch(1, 0);
  const auto batches = collect(loader);
  ASSERT_EQ(batches.size(), 2u);
  for (const auto& b : batches) EXPECT_EQ(b.size(), 4);
  DataLoader keep(ds, DataLoaderOptions().batch_size(4).workers(0));
  keep.start_epoch(1, 0);
  const auto all = collect(keep);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[2].size(), 2);
}

TEST(DataLoader, EpochOrderIsAPermutationEqualToBatchIndices) {
  auto ds = numbered(23);
  DataLoader loader(ds, DataLoaderOptions().batch_size(5).workers(2));
  loader.start_epoch(99, 3);
  const auto batches = collect(loader);
  ASSERT_EQ(batches.size(), 5u);
  std::vector<int64_t> seen;
  for (size_t b = 0; b < batches.size(); ++b) {
    const auto ids = ids_of(batches[b]);
    EXPECT_EQ(ids, loader.batch_indices(99, 3, static_cast<int64_t>(b)));
    seen.insert(seen.end(), ids.begin(), ids.end());
  }
  // The documented order: Rng(seed, {kShuffleStream, epoch}).permutation(N), cut into batches.
  EXPECT_EQ(seen, Rng(99, {kShuffleStream, 3}).permutation(23));
  std::sort(seen.begin(), seen.end());
  for (int64_t i = 0; i < 23; ++i) EXPECT_EQ(seen[i], i);
  EXPECT_THROW(loader.batch_indices(99, 3, 5), Error);
}

TEST(DataLoader, OrderDependsOnSeedAndEpochOnly) {
  auto ds = numbered(50);
  const DataLoader loader(ds, DataLoaderOptions().batch_size(50));
  EXPECT_EQ(loader.batch_indices(1, 0, 0), loader.batch_indices(1, 0, 0));
  EXPECT_NE(loader.batch_indices(1, 0, 0), loader.batch_indices(1, 1, 0));
  EXPECT_NE(loader.batch_indices(1, 0, 0), loader.batch_indices(2, 0, 0));
  const DataLoader ordered(ds, DataLoaderOptions().batch_size(20).shuffle(false));
  EXPECT_EQ(ordered.batch_indices(1, 4, 2), (std::vector<int64_t>{40, 41, 42, 43, 44, 45, 46, 47, 48, 49}));
}

TEST(DataLoader, WorkersDoNotChangeTheBatches) {
  auto ds = numbered(37);
  std::vector<std::vector<Batch>> runs;
  for (int64_t workers : {0, 1, 2, 3}) {
    DataLoader loader(ds, DataLoaderOptions().batch_size(4).workers(workers).prefetch(2), augmentations());
    loader.start_epoch(5, 1);
    runs.push_back(collect(loader));
  }
  for (size_t i = 1; i < runs.size(); ++i) expect_same_batches(runs[0], runs[i]);
  ASSERT_EQ(runs[0].size(), 10u);
  // The transforms did something: the inputs are not the raw rows.
  const Batch raw = ds->get_batch(ids_of(runs[0][0]));
  EXPECT_FALSE(at::equal(raw.input(), runs[0][0].input()));
  EXPECT_TRUE(at::equal(raw.get("id"), runs[0][0].get("id")));
}

TEST(DataLoader, StartingAtBatchKGivesTheRestOfAFullPass) {
  auto ds = numbered(30);
  for (int64_t workers : {0, 2}) {
    DataLoader loader(ds, DataLoaderOptions().batch_size(4).workers(workers), augmentations());
    loader.start_epoch(11, 2);
    const auto full = collect(loader);
    ASSERT_EQ(full.size(), 8u);
    for (int64_t k : {0, 1, 5, 7, 8}) {
      loader.start_epoch(11, 2, k);
      const auto rest = collect(loader);
      expect_same_batches(rest, std::vector<Batch>(full.begin() + k, full.end()));
    }
    EXPECT_THROW(loader.start_epoch(11, 2, 9), InputError);
  }
}

TEST(DataLoader, RestartingMidEpochCancelsTheBatchesInFlight) {
  auto ds = numbered(100);
  DataLoader loader(ds, DataLoaderOptions().batch_size(3).workers(3).prefetch(4), augmentations());
  loader.start_epoch(1, 0);
  loader.next();
  loader.next();  // workers are ahead by now
  loader.start_epoch(1, 1);
  const auto epoch1 = collect(loader);
  DataLoader fresh(ds, DataLoaderOptions().batch_size(3).workers(0), augmentations());
  fresh.start_epoch(1, 1);
  expect_same_batches(epoch1, collect(fresh));
  // Abandoning an epoch half way and destroying the loader joins the threads cleanly.
  loader.start_epoch(1, 2);
  loader.next();
}

TEST(DataLoader, ProducerExceptionsAreRethrownInOrder) {
  auto ds = std::make_shared<FailingDataset>();
  for (int64_t workers : {0, 2}) {
    DataLoader loader(ds, DataLoaderOptions().batch_size(4).shuffle(false).workers(workers));
    loader.start_epoch(0, 0);
    // Batches 0..2 (examples 0..11) are fine; batch 3 holds example 13.
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(loader.next().has_value()) << workers;
    try {
      loader.next();
      FAIL() << "no exception";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("example 13"), std::string::npos);
    }
    EXPECT_FALSE(loader.next().has_value());
  }
}

TEST(DataLoader, NextBeforeStartEpochAndBadOptionsAreErrors) {
  auto ds = numbered(4);
  DataLoader loader(ds, DataLoaderOptions());
  EXPECT_THROW(loader.next(), Error);
  EXPECT_THROW(DataLoader(ds, DataLoaderOptions().batch_size(0)), InputError);
  EXPECT_THROW(DataLoader(ds, DataLoaderOptions().prefetch(0)), InputError);
  EXPECT_THROW(DataLoader(nullptr, DataLoaderOptions()), InputError);
}

namespace {
// Records the intra-op thread count seen by the thread that applies it.
class ThreadCountProbe : public BatchTransform {
 public:
  void apply(Batch&, Rng&) const override { seen_.store(at::get_num_threads()); }
  std::string name() const override { return "probe"; }
  mutable std::atomic<int> seen_{-1};
};
}  // namespace

TEST(DataLoader, ProducerThreadsUseOneIntraOpThreadWithoutChangingTheCaller) {
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  auto probe = std::make_shared<ThreadCountProbe>();
  {
    DataLoader loader(numbered(8), DataLoaderOptions().batch_size(4).workers(1), {probe});
    loader.start_epoch(0, 0);
    collect(loader);
  }
  EXPECT_EQ(probe->seen_.load(), 1);
  EXPECT_EQ(at::get_num_threads(), 2);
  at::set_num_threads(before);
}
