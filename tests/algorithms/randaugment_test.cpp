// RandAugment: every operation against a hand computation on a tiny image, the magnitudes drawn as declared, the
// per-example generators, the transform in the DataLoader (a pure function of (seed, epoch, batch): the same batch
// after a restart at any position and on any number of workers), the Trainer installing it and refusing data that
// cannot run it, and the plan-time checks.
#include <cmath>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tessera/algorithms/randaugment.h>

#include "image_batch_support.h"
#include "support.h"

namespace tessera::algorithms {
namespace {

using ::testing::HasSubstr;

at::Tensor image(std::vector<float> values, std::vector<int64_t> shape) {
  return at::tensor(at::ArrayRef<float>(values), at::TensorOptions(at::kFloat)).view(shape);
}

void expect_close(const at::Tensor& got, const at::Tensor& want, double atol = 1e-6) {
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(at::allclose(got, want, 0, atol)) << "got\n" << got << "\nwant\n" << want;
}

TEST(RandAugment, AutocontrastStretchesEachChannelAndLeavesAConstantOne) {
  const at::Tensor x = image({0.2f, 0.4f, 0.6f, 0.3f, 0.5f, 0.5f, 0.5f, 0.5f}, {1, 2, 2, 2});
  // channel 0: (x - 0.2)/0.4; channel 1 constant: unchanged
  expect_close(augment::autocontrast(x), image({0, 0.5f, 1, 0.25f, 0.5f, 0.5f, 0.5f, 0.5f}, {1, 2, 2, 2}));
}

TEST(RandAugment, EqualizeFollowsPilsLookUpTable) {
  // 256 pixels: 128 at level 10, 127 at level 20, 1 at level 30. step = (256 - 1) // 255 = 1, n starts at 0:
  // level 10 -> 0, level 20 -> 128 (the pixels below it), level 30 -> 255.
  std::vector<float> v(256);
  for (int i = 0; i < 256; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i < 128 ? 10 : i < 255 ? 20 : 30) / 255.f;
  const at::Tensor out = augment::equalize(image(v, {1, 16, 16}));
  std::vector<float> want(256);
  for (int i = 0; i < 256; ++i) want[static_cast<size_t>(i)] = static_cast<float>(i < 128 ? 0 : i < 255 ? 128 : 255) / 255.f;
  expect_close(out, image(want, {1, 16, 16}));
  // Fewer than 256 pixels below the top level: step 0, unchanged.
  const at::Tensor small = image({0, 0, 128 / 255.f, 1}, {1, 2, 2});
  EXPECT_TRUE(at::equal(augment::equalize(small), small));
}

TEST(RandAugment, PosterizeKeepsTheHighBits) {
  const at::Tensor x = image({183 / 255.f, 1.f, 0.f, 64 / 255.f}, {1, 2, 2});  // 183 = 0b10110111
  expect_close(augment::posterize(x, 4), image({176 / 255.f, 240 / 255.f, 0.f, 64 / 255.f}, {1, 2, 2}));
  expect_close(augment::posterize(x, 8), x);
  EXPECT_EQ(augment::posterize(x, 0).abs().sum().item<float>(), 0.f);
  EXPECT_THAT(testing::input_error_of([&] { augment::posterize(x, 9); }), HasSubstr("posterize.bits: 9; expected 0..8"));
}

TEST(RandAugment, SolarizeInvertsFromTheThresholdOn) {
  expect_close(augment::solarize(image({0.2f, 0.5f, 0.8f, 0.49f}, {1, 2, 2}), 0.5),
               image({0.2f, 0.5f, 0.2f, 0.49f}, {1, 2, 2}));
}

TEST(RandAugment, TranslateMovesTheContentAndFillsWithZeros) {
  const at::Tensor x = image({1, 2, 3, 4, 5, 6, 7, 8}, {1, 1, 2, 4}).div(10);
  expect_close(augment::translate_x(x, 1), image({2, 3, 4, 0, 6, 7, 8, 0}, {1, 1, 2, 4}).div(10));
  expect_close(augment::translate_x(x, -2), image({0, 0, 1, 2, 0, 0, 5, 6}, {1, 1, 2, 4}).div(10));
  expect_close(augment::translate_y(x, 1), image({5, 6, 7, 8, 0, 0, 0, 0}, {1, 1, 2, 4}).div(10));
  expect_close(augment::translate_x(x, 0.5), image({1.5f, 2.5f, 3.5f, 2, 5.5f, 6.5f, 7.5f, 4}, {1, 1, 2, 4}).div(10));
}

TEST(RandAugment, ShearIsAboutTheTopLeftCorner) {
  // Output (x, y) reads the input at column (x + 1/2) + (y + 1/2): halfway between two pixels on row 0, a whole
  // pixel further on row 1.
  const at::Tensor x = image({1, 2, 3, 4, 5, 6, 7, 8}, {1, 2, 4}).div(10);
  expect_close(augment::shear_x(x, 1.0), image({1.5f, 2.5f, 3.5f, 2, 6.5f, 7.5f, 4, 0}, {1, 2, 4}).div(10));
  // shear_y on the transpose is the transpose of shear_x
  expect_close(augment::shear_y(x.transpose(-2, -1).contiguous(), 1.0),
               augment::shear_x(x, 1.0).transpose(-2, -1).contiguous());
}

TEST(RandAugment, RotateIsCounterClockwiseAboutTheCentre) {
  const at::Tensor x = at::arange(16, at::TensorOptions(at::kFloat)).div(16).view({1, 1, 4, 4});
  expect_close(augment::rotate(x, 90), at::rot90(x, 1, {-2, -1}), 1e-5);
  expect_close(augment::rotate(x, -90), at::rot90(x, -1, {-2, -1}), 1e-5);
  expect_close(augment::rotate(x, 180), x.flip({-2, -1}), 1e-5);
  expect_close(augment::rotate(x, 0), x);
}

TEST(RandAugment, EnhancementsBlendWithTheirDegenerateImagesAndClip) {
  const at::Tensor x = image({0.2f, 0.4f, 0.6f, 0.8f}, {1, 2, 2});
  expect_close(augment::brightness(x, 0.5), x * 0.5);
  expect_close(augment::brightness(x, 2.0), image({0.4f, 0.8f, 1, 1}, {1, 2, 2}));
  // contrast: around the mean grey 0.5
  expect_close(augment::contrast(x, 2.0), image({0, 0.3f, 0.7f, 1}, {1, 2, 2}));
  expect_close(augment::contrast(x, 0.0), at::full_like(x, 0.5));
  // color: one channel is its own grey; three channels blend with the luma
  expect_close(augment::color(x, 0.0), x);
  const at::Tensor rgb = image({1, 0, 0}, {3, 1, 1});
  expect_close(augment::color(rgb, 0.0), image({0.299f, 0.299f, 0.299f}, {3, 1, 1}));
  expect_close(augment::color(rgb, 0.5), image({0.6495f, 0.1495f, 0.1495f}, {3, 1, 1}));
  EXPECT_THAT(testing::input_error_of([] { augment::color(at::zeros({2, 2, 2}), 0.5); }),
              HasSubstr("color: the colour operations need 1 or 3 channels, got images of shape [2, 2, 2]"));
  // sharpness: the interior blends with the 3x3 smoothing [[1, 1, 1], [1, 5, 1], [1, 1, 1]]/13, the border is kept
  std::vector<float> v(9, 0.f);
  v[4] = 0.5f;
  const at::Tensor dot = image(v, {1, 3, 3});
  const double smooth = 0.5 * 5 / 13;
  std::vector<float> want(9, 0.f);
  want[4] = static_cast<float>(smooth + 2 * (0.5 - smooth));
  expect_close(augment::sharpness(dot, 2.0), image(want, {1, 3, 3}));
  want[4] = static_cast<float>(smooth);
  expect_close(augment::sharpness(dot, 0.0), image(want, {1, 3, 3}));
  const at::Tensor tiny = image({0.1f, 0.9f}, {1, 1, 2});  // no interior: unchanged
  expect_close(augment::sharpness(tiny, 3.0), tiny);
}

TEST(RandAugment, MagnitudesAreDrawnAsDeclared) {
  const at::Tensor x = at::arange(36, at::TensorOptions(at::kFloat)).div(36).view({1, 6, 6});
  // Composer's draws, in its arithmetic: a level l ~ U(0.1, severity), ⌊l·max/10⌋ or l·max/10, then a sign.
  const auto level = [](double severity, Rng& r) { return 0.1 + (severity - 0.1) * r.uniform(); };
  const auto signed_ = [](double v, Rng& r) { return r.uniform() > 0.5 ? -v : v; };
  for (uint64_t seed = 0; seed < 8; ++seed) {
    Rng rng(seed), copy(seed);
    // rotate: ±⌊l·30/10⌋ degrees
    const at::Tensor got = augment::apply("rotate", x, 9, rng);
    const double degrees = std::trunc(level(9, copy) * 30 / 10.0);
    EXPECT_TRUE(at::equal(got, augment::rotate(x, signed_(degrees, copy)))) << seed;
    EXPECT_EQ(rng, copy);
    // translate_x: ±⌊l·(W/3)/10⌋ pixels (W = 6)
    const at::Tensor moved = augment::apply("translate_x", x, 9, rng);
    const double px = std::trunc(level(9, copy) * 2.0 / 10.0);
    EXPECT_TRUE(at::equal(moved, augment::translate_x(x, signed_(px, copy)))) << seed;
    // posterize: 4 − ⌊l·4/10⌋ bits; solarize: threshold (256 − ⌊l·256/10⌋)/255
    const at::Tensor poster = augment::apply("posterize", x, 5, rng);
    EXPECT_TRUE(at::equal(poster, augment::posterize(x, 4 - static_cast<int64_t>(std::trunc(level(5, copy) * 4 / 10.0)))));
    const at::Tensor solar = augment::apply("solarize", x, 5, rng);
    EXPECT_TRUE(at::equal(solar, augment::solarize(x, (256.0 - std::trunc(level(5, copy) * 256 / 10.0)) / 255.0)));
    // brightness ("all"): with probability 1/2 U(1, severity), else U(1 − 0.09·severity, 1)
    const at::Tensor bright = augment::apply("brightness", x, 9, rng);
    double factor = 0;
    if (copy.uniform() > 0.5) {
      factor = 1.0 + (9 - 1.0) * copy.uniform();
    } else {
      const double lo = 1.0 - 0.09 * 9;
      factor = lo + (1.0 - lo) * copy.uniform();
    }
    EXPECT_TRUE(at::equal(bright, augment::brightness(x, factor))) << seed;
    // brightness_original: l·1.8/10 + 0.1
    const at::Tensor original = augment::apply("brightness_original", x, 9, rng);
    EXPECT_TRUE(at::equal(original, augment::brightness(x, level(9, copy) * 1.8 / 10.0 + 0.1)));
    EXPECT_EQ(rng, copy);
  }
  Rng rng(0);
  EXPECT_THAT(testing::input_error_of([&] { augment::apply("invert", x, 5, rng); }),
              HasSubstr("augment::apply.op: \"invert\" is not an augmentation; expected one of: autocontrast"));
  EXPECT_THAT(testing::input_error_of([&] { augment::apply("rotate", x, 11, rng); }),
              HasSubstr("augment::apply.severity: 11 is out of range [0, 10]"));
  EXPECT_THAT(testing::input_error_of([&] { augment::apply("rotate", x.to(at::kLong), 5, rng); }),
              HasSubstr("expected float images [..., C, H, W] with intensities in [0, 1], got Long [1, 6, 6]"));
}

TEST(RandAugment, AugmentationSets) {
  EXPECT_EQ(augmentation_set("safe").size(), 9u);
  EXPECT_EQ(augmentation_set("all").size(), 13u);
  EXPECT_EQ(augmentation_set("all").back(), "sharpness");
  EXPECT_EQ(augmentation_set("original").back(), "sharpness_original");
  for (const std::string& op : augmentation_set("original")) {
    EXPECT_NE(std::find(augment::operation_names().begin(), augment::operation_names().end(), op),
              augment::operation_names().end())
        << op;
  }
  EXPECT_THAT(testing::input_error_of([] { augmentation_set("most"); }),
              HasSubstr("augmentation_set: \"most\" is not a set; expected one of: all, safe, original"));
}

TEST(RandAugment, DepthOperationsDrawnUniformlyFromTheSet) {
  const at::Tensor x = at::rand({1, 8, 8}, at::TensorOptions(at::kFloat));
  const std::vector<std::string>& ops = augmentation_set("all");
  Rng rng(3), copy(3);
  const at::Tensor got = randaugment_image(x, 9, 3, ops, rng);
  at::Tensor want = x;
  for (int d = 0; d < 3; ++d) want = augment::apply(ops[copy.below(ops.size())], want, 9, copy);
  EXPECT_TRUE(at::equal(got, want));
  EXPECT_EQ(rng, copy);
  EXPECT_GE(got.min().item<float>(), 0.f);
  EXPECT_LE(got.max().item<float>(), 1.f);
  EXPECT_THAT(testing::input_error_of([&] { randaugment_image(x, 9, 0, ops, rng); }),
              HasSubstr("randaugment_image.depth: 0 is out of range; expected a number >= 1"));
  EXPECT_THAT(testing::input_error_of([&] { randaugment_image(x, 9, 1, {}, rng); }),
              HasSubstr("randaugment_image.ops: empty"));
}

TEST(RandAugment, EachExampleHasItsOwnGenerator) {
  const at::Tensor x = at::rand({5, 1, 8, 8}, at::TensorOptions(at::kFloat));
  const auto& ops = augmentation_set("all");
  Rng rng(11);
  const Rng before = rng;
  const at::Tensor out = randaugment_images(x, 9, 2, ops, rng);
  EXPECT_EQ(rng, before) << "the batch generator is not advanced";
  ASSERT_EQ(out.sizes(), x.sizes());
  for (int64_t i = 0; i < 5; ++i) {
    Rng example = before.derive({static_cast<uint64_t>(i)});
    EXPECT_TRUE(at::equal(out[i], randaugment_image(x[i], 9, 2, ops, example))) << i;
  }
  // the first three examples alone get the same augmentations
  Rng again(11);
  EXPECT_TRUE(at::equal(randaugment_images(x.narrow(0, 0, 3), 9, 2, ops, again), out.narrow(0, 0, 3)));
  EXPECT_FALSE(at::equal(out, x));
  EXPECT_THAT(testing::input_error_of([&] { randaugment_images(x[0], 9, 2, ops, rng); }),
              HasSubstr("randaugment_images.images: expected images [N, C, H, W], got [1, 8, 8]"));
}

std::shared_ptr<data::TensorDataset> images_in_unit_interval(int64_t n = 24) {
  return testing::unit_interval(
      *data::make_synthetic(data::SyntheticOptions().size(n).input_shape({1, 8, 8}).num_classes(3)));
}

TEST(RandAugment, InTheDataLoaderABatchIsAPureFunctionOfSeedEpochAndBatch) {
  auto ds = images_in_unit_interval();
  auto make = [&](int64_t workers) {
    auto l = testing::loader(ds, 8, true, workers);
    EXPECT_TRUE(l->set_algorithm_transforms({RandAugment().data_transform()}));
    return l;
  };
  auto a = make(0), b = make(2);
  std::vector<at::Tensor> full;
  a->start_epoch(42, 1);
  while (auto batch = a->next()) full.push_back(batch->input());
  ASSERT_EQ(full.size(), 3u);
  // another loader with two worker threads, restarted at batch 2, then at batch 1
  b->start_epoch(42, 1, 2);
  EXPECT_TRUE(at::equal(b->next()->input(), full[2]));
  b->start_epoch(42, 1, 1);
  EXPECT_TRUE(at::equal(b->next()->input(), full[1]));
  EXPECT_TRUE(at::equal(b->next()->input(), full[2]));
  // by hand: the loader's generator for the batch, RandAugment's stream, then example i's
  const std::vector<int64_t> idx = a->batch_indices(42, 1, 1);
  const at::Tensor raw = ds->get_batch(idx).input();
  Rng batch_rng(42, {kAlgorithmStream, kTransformStream, 1, 1});
  Rng own = batch_rng.derive({0x7a4d8a9ULL});
  EXPECT_TRUE(at::equal(full[1], randaugment_images(raw, 9, 2, augmentation_set("all"), own)));
  // another epoch or seed: other augmentations of the same examples
  a->start_epoch(43, 1);
  EXPECT_FALSE(at::equal(a->next()->input(), full[0]));
  // cleared: the raw examples
  a->set_algorithm_transforms({});
  a->start_epoch(42, 1, 1);
  EXPECT_TRUE(at::equal(a->next()->input(), raw));
}

TEST(RandAugment, RunsBeforeTheLoadersOwnTransformsWhichDrawTheSameNumbers) {
  auto ds = images_in_unit_interval();
  const std::vector<std::shared_ptr<const data::BatchTransform>> own{
      std::make_shared<data::HorizontalFlip>(data::HorizontalFlipOptions()),
      std::make_shared<data::Normalize>(data::NormalizeOptions().mean({0.5}).std({0.25}))};
  auto loader = [&] { return std::make_shared<data::DataLoader>(ds, data::DataLoaderOptions().batch_size(8).workers(0), own); };
  /// Draws from its generator and leaves the batch (the loader's flips must not move), or fills it with ones.
  class Probe : public data::BatchTransform {
   public:
    explicit Probe(bool fill) : fill_(fill) {}
    void apply(Batch& batch, Rng& rng) const override {
      for (int i = 0; i < 100; ++i) (void)rng.uniform();
      if (fill_) batch.set(Batch::kInput, at::ones_like(batch.input()));
    }
    std::string name() const override { return "probe"; }

   private:
    bool fill_;
  };
  auto plain = loader(), drawing = loader(), filling = loader();
  drawing->set_algorithm_transforms({std::make_shared<Probe>(false)});
  filling->set_algorithm_transforms({std::make_shared<Probe>(true)});
  for (auto& l : {plain, drawing, filling}) l->start_epoch(1, 0);
  for (int b = 0; b < 3; ++b) {
    const at::Tensor want = plain->next()->input();
    EXPECT_TRUE(at::equal(drawing->next()->input(), want)) << b;
    // ones before normalize: (1 - 0.5)/0.25 = 2 everywhere
    const at::Tensor got = filling->next()->input();
    EXPECT_TRUE(at::equal(got, at::full_like(got, 2.0))) << b;
  }
}

/// A batch source that cannot run transforms (as a Python DataLoader): the default of BatchSource.
class OpaqueSource : public data::BatchSource {
 public:
  explicit OpaqueSource(std::shared_ptr<data::DataLoader> inner) : inner_(std::move(inner)) {}
  int64_t num_batches() const override { return inner_->num_batches(); }
  int64_t num_samples() const override { return inner_->num_samples(); }
  void start_epoch(uint64_t seed, int64_t epoch, int64_t first_batch) override {
    inner_->start_epoch(seed, epoch, first_batch);
  }
  std::optional<Batch> next() override { return inner_->next(); }
  std::string describe() const override { return "an opaque source"; }
  Batch example_batch() override { return inner_->example_batch(); }
  int64_t num_classes() const override { return inner_->num_classes(); }

 private:
  std::shared_ptr<data::DataLoader> inner_;
};

Components cnn_components(std::shared_ptr<data::BatchSource> source, int64_t channels = 1) {
  Components c;
  at::manual_seed(0);
  c.model = std::make_shared<CNN>(CNNOptions().in_channels(channels).num_classes(3).width(4));
  c.train_dataloader = std::move(source);
  c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.05));
  return c;
}

TEST(RandAugment, TheTrainerInstallsItAndTheModelSeesAugmentedImages) {
  auto ds = images_in_unit_interval();
  auto l = testing::loader(ds, 8);
  Components c = cnn_components(l);
  auto ra = std::make_shared<RandAugment>(RandAugmentOptions().depth(1).severity(5));
  c.algorithms = {ra};
  auto inputs = std::make_shared<testing::BatchProbe>("probe");  // the batches the step is given
  c.algorithms.push_back(inputs);
  Trainer t(TrainerOptions().max_duration(Time::parse("2ba")).threads(1).seed(5), std::move(c));
  ASSERT_EQ(l->algorithm_transforms().size(), 1u);
  EXPECT_EQ(l->algorithm_transforms()[0], ra->data_transform());
  EXPECT_EQ(t.plan().at(Event::BeforeDataloader).size(), 1u);
  t.fit();
  EXPECT_EQ(t.trace().at("randaugment/before_dataloader").count, 2);
  // The model saw exactly the augmented batches (another loader with the transform, same seed and epoch), not the
  // raw ones.
  ASSERT_EQ(inputs->inputs.size(), 2u);
  auto reference = testing::loader(ds, 8);
  reference->set_algorithm_transforms({ra->data_transform()});
  auto raw = testing::loader(ds, 8);
  reference->start_epoch(5, 0);
  raw->start_epoch(5, 0);
  for (size_t b = 0; b < 2; ++b) {
    const at::Tensor raw_input = raw->next()->input();
    EXPECT_TRUE(at::equal(inputs->inputs[b], reference->next()->input())) << b;
    EXPECT_FALSE(at::equal(inputs->inputs[b], raw_input)) << b;
  }
  EXPECT_TRUE(ra->spec().writes(Resource::Inputs, Event::BeforeDataloader));
  // a second Trainer on the same loader without it clears it
  Components again = cnn_components(l);
  Trainer plain(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), std::move(again));
  EXPECT_TRUE(l->algorithm_transforms().empty());
}

TEST(RandAugment, DataThatCannotRunTransformsIsRefusedBeforeInit) {
  auto source = std::make_shared<OpaqueSource>(testing::loader(images_in_unit_interval(), 8));
  Components c = cnn_components(source);
  c.algorithms = {std::make_shared<RandAugment>()};
  EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
              HasSubstr("randaugment runs in the data pipeline (a transform on the training DataLoader's threads, "
                        "keyed by (seed, epoch, batch) so that resuming is exact), but the training data (an opaque "
                        "source) cannot run transforms"));
  // without it the same source trains
  Components plain = cnn_components(source);
  Trainer t(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), std::move(plain));
  t.fit();
}

TEST(RandAugment, PlanTimeChecksNameTheProblem) {
  auto refuse = [](std::shared_ptr<data::TensorDataset> ds, RandAugmentOptions o = RandAugmentOptions()) {
    const int64_t channels = ds->input_shape().size() == 3 ? ds->input_shape()[0] : 1;
    Components c = cnn_components(testing::loader(std::move(ds), 8), channels);
    c.algorithms = {std::make_shared<RandAugment>(o)};
    return testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); });
  };
  // normal noise: outside [0, 1]
  EXPECT_THAT(refuse(data::make_synthetic(data::SyntheticOptions().size(16).input_shape({1, 8, 8}).num_classes(3))),
              HasSubstr("randaugment augments images with intensities in [0, 1] (posterize, solarize and equalize "
                        "read 8-bit levels), but the training data's first example has values in ["));
  // not images
  EXPECT_THAT(refuse(testing::unit_interval(
                  *data::make_synthetic(data::SyntheticOptions().size(16).input_shape({64}).num_classes(3)))),
              HasSubstr("randaugment augments images and needs image inputs [C, H, W] per example"));
  // five channels: the colour operations need 1 or 3; the safe set does not
  auto five = testing::unit_interval(
      *data::make_synthetic(data::SyntheticOptions().size(16).input_shape({5, 8, 8}).num_classes(3)));
  EXPECT_THAT(refuse(five), HasSubstr("randaugment: the colour operations (color, contrast) need 1 or 3 channels; the "
                                      "training images have 5; use augmentation_set \"safe\""));
  Components safe = cnn_components(testing::loader(five, 8), 5);
  safe.algorithms = {std::make_shared<RandAugment>(RandAugmentOptions().augmentation_set("safe"))};
  Trainer t(TrainerOptions().max_duration(Time::parse("1ba")).threads(1), std::move(safe));
  t.fit();
  EXPECT_THAT(testing::input_error_of([] { RandAugment(RandAugmentOptions().severity(11)); }),
              HasSubstr("randaugment.severity: 11 is out of range; expected a number [0, 10]"));
  EXPECT_THAT(testing::input_error_of([] { RandAugment(RandAugmentOptions().augmentation_set("most")); }),
              HasSubstr("randaugment.augmentation_set: \"most\" is not allowed"));
}

}  // namespace
}  // namespace tessera::algorithms
