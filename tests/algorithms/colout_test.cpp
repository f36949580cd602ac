// ColOut: the kept rows and columns against hand computation, the shapes after it (batch-wise and per example),
// targets unchanged or cut with the image, the trainer's batches (a pure function of (seed, batch)), the declared
// order against selective backprop, progressive resizing, CutOut and CutMix, the data-pipeline transform, and the
// plan-time checks.
#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tessera/algorithms/colout.h>
#include <tessera/algorithms/cutmix.h>
#include <tessera/algorithms/cutout.h>
#include <tessera/algorithms/progressive_resizing.h>
#include <tessera/algorithms/selective_backprop.h>

#include "image_batch_support.h"
#include "support.h"

namespace tessera::algorithms {
namespace {

using ::testing::HasSubstr;

TEST(ColOut, KeptCountsAndIndicesByHand) {
  EXPECT_EQ(colout_kept(28, 0.15), 23);  // ⌊0.85·28⌋ = ⌊23.8⌋
  EXPECT_EQ(colout_kept(16, 0.15), 13);
  EXPECT_EQ(colout_kept(10, 0.0), 10);
  EXPECT_EQ(colout_kept(2, 0.9), 1);  // at least one row
  EXPECT_THAT(testing::input_error_of([] { colout_kept(8, 1.0); }), HasSubstr("colout_kept.p_row: 1 is out of range"));
  // the first kept-count entries of a permutation of the rows, sorted, then the same for the columns
  Rng rng(4), copy(4);
  const ColOutIndices kept = colout_indices(10, 8, 0.3, 0.5, rng);
  std::vector<int64_t> rows = copy.permutation(10), cols = copy.permutation(8);
  rows.resize(7);
  cols.resize(4);
  std::sort(rows.begin(), rows.end());
  std::sort(cols.begin(), cols.end());
  EXPECT_EQ(kept.rows, rows);
  EXPECT_EQ(kept.cols, cols);
  EXPECT_EQ(rng, copy);
}

TEST(ColOut, ShapesAndPixelsAfterColOut) {
  const at::Tensor x = at::arange(2 * 3 * 5 * 6, at::kFloat).view({2, 3, 5, 6});
  const ColOutIndices kept{{0, 2, 3}, {1, 4}};
  const at::Tensor small = colout_batch(x, kept);
  ASSERT_EQ(small.sizes(), (std::vector<int64_t>{2, 3, 3, 2}));
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < 2; ++j) {
      EXPECT_TRUE(at::equal(small.select(2, i).select(2, j), x.select(2, kept.rows[i]).select(2, kept.cols[j])));
    }
  }
  // per example: each its own rows and columns
  const std::vector<ColOutIndices> per{{{0, 1, 2}, {0, 5}}, {{2, 3, 4}, {1, 2}}};
  const at::Tensor each = colout_samples(x, per);
  ASSERT_EQ(each.sizes(), (std::vector<int64_t>{2, 3, 3, 2}));
  EXPECT_TRUE(at::equal(each[0], colout_batch(x[0], per[0])));
  EXPECT_TRUE(at::equal(each[1], colout_batch(x[1], per[1])));
  // the drawing form: class targets unchanged; dense targets of the image's size cut with it ("auto")
  const at::Tensor labels = at::tensor({3, 1}, at::kLong);
  Rng rng(9), copy(9);
  const ColOutBatch b = colout_batch(x, labels, 0.15, 0.15, rng);
  ASSERT_EQ(b.kept.size(), 1u);
  EXPECT_EQ(b.input.sizes(), (std::vector<int64_t>{2, 3, 4, 5}));  // ⌊0.85·5⌋ = 4 rows, ⌊0.85·6⌋ = 5 columns
  EXPECT_TRUE(at::equal(b.target, labels));
  EXPECT_TRUE(at::equal(b.input, colout_batch(x, colout_indices(5, 6, 0.15, 0.15, copy))));
  const at::Tensor masks = at::arange(2 * 5 * 6, at::kLong).view({2, 5, 6});
  Rng r2(9);
  const ColOutBatch seg = colout_batch(x, masks, 0.4, 0.5, r2, /*batch=*/false);
  ASSERT_EQ(seg.kept.size(), 2u);
  EXPECT_EQ(seg.input.sizes(), (std::vector<int64_t>{2, 3, 3, 3}));
  EXPECT_EQ(seg.target.sizes(), (std::vector<int64_t>{2, 3, 3}));
  for (int64_t n = 0; n < 2; ++n) EXPECT_TRUE(at::equal(seg.target[n], colout_batch(masks[n], seg.kept[n])));
  Rng r3(9);
  EXPECT_TRUE(at::equal(colout_batch(x, masks, 0.4, 0.5, r3, true, "false").target, masks));
  // errors name the argument
  EXPECT_THAT(testing::input_error_of([&] { colout_batch(x, ColOutIndices{{0, 5}, {0}}); }),
              HasSubstr("colout_batch.kept: the rows must be ascending indices in [0, 5); got 5 at position 1"));
  EXPECT_THAT(testing::input_error_of([&] { colout_samples(x, {per[0]}); }),
              HasSubstr("colout_samples.kept: 1 entries for a batch of 2 examples"));
  Rng r4(1);
  EXPECT_THAT(testing::input_error_of([&] { colout_batch(x, labels, 0.1, 0.1, r4, true, "true"); }),
              HasSubstr("colout.resize_target: true needs targets of the images' size"));
  EXPECT_THAT(testing::input_error_of([] { ColOut(ColOutOptions().p_col(1.0)); }), HasSubstr("colout.p_col"));
  EXPECT_THAT(testing::input_error_of([] { ColOut(ColOutOptions().resize_target("maybe")); }),
              HasSubstr("colout.resize_target"));
}

TEST(ColOut, InTheTrainerTheBatchShrinksAndTheLabelsStay) {
  for (bool batch : {true, false}) {
    auto run = [batch] {
      Components c = testing::small_cnn_components();
      auto colout = std::make_shared<ColOut>(ColOutOptions().batch(batch));
      auto after = std::make_shared<testing::BatchProbe>("after");
      auto before = std::make_shared<testing::BatchProbe>("before");
      c.algorithms = {after, colout, before};
      Trainer t(TrainerOptions().max_duration(Time::parse("3ba")).threads(1), std::move(c));
      t.fit();
      return std::make_tuple(colout, after, before);
    };
    auto [colout, after, before] = run();
    ASSERT_EQ(after->inputs.size(), 3u);
    for (size_t b = 0; b < 3; ++b) {
      EXPECT_EQ(after->inputs[b].sizes(), (std::vector<int64_t>{8, 1, 13, 13})) << "batch " << b;
      EXPECT_TRUE(at::equal(after->targets[b], before->targets[b])) << "batch " << b;
    }
    ASSERT_EQ(colout->last_kept().size(), batch ? 1u : 8u);
    const at::Tensor expected = batch ? colout_batch(before->inputs[2], colout->last_kept()[0])
                                      : colout_samples(before->inputs[2], colout->last_kept());
    EXPECT_TRUE(at::equal(after->inputs[2], expected));
    if (!batch) EXPECT_NE(colout->last_kept()[0].rows, colout->last_kept()[1].rows) << "each example its own rows";
    auto [again, after2, before2] = run();  // a pure function of (seed, batch)
    for (size_t b = 0; b < 3; ++b) EXPECT_TRUE(at::equal(after->inputs[b], after2->inputs[b])) << "batch " << b;
  }
}

TEST(ColOut, TheEngineOrdersItAsDeclared) {
  // Recipe order scrambled; the declared rules give: selective backprop (scores the full-size examples), ColOut
  // (drops rows and columns of the data's image), progressive resizing (scales what is left), then CutOut and
  // CutMix (draw in pixels of the final size).
  Components c = testing::small_cnn_components();
  auto pr = std::make_shared<ProgressiveResizing>(
      ProgressiveResizingOptions().initial_scale(0.5).delay_fraction(1).finetune_fraction(0));
  auto colout = std::make_shared<ColOut>();
  auto cutout = std::make_shared<CutOut>();
  auto cutmix = std::make_shared<CutMix>();
  auto sb = std::make_shared<SelectiveBackprop>(SelectiveBackpropOptions().start(0).end(1).interrupt(0));
  auto after = std::make_shared<testing::BatchProbe>("after");
  c.algorithms = {after, cutmix, cutout, pr, colout, sb};
  Trainer t(TrainerOptions().max_duration(Time::parse("2ba")).threads(1), std::move(c));
  std::vector<std::string> order;
  for (const auto& e : t.plan().at(Event::AfterDataloader)) order.push_back(e.algorithm->name());
  EXPECT_EQ(order.back(), "after");
  auto pos = [&](const std::string& n) { return std::find(order.begin(), order.end(), n) - order.begin(); };
  EXPECT_LT(pos("selective_backprop"), pos("colout"));
  EXPECT_LT(pos("colout"), pos("progressive_resizing"));
  EXPECT_LT(pos("progressive_resizing"), pos("cutout"));
  EXPECT_LT(pos("progressive_resizing"), pos("cutmix"));
  EXPECT_LT(pos("colout"), pos("cutout"));
  const std::string table = t.plan().table();
  EXPECT_THAT(table, HasSubstr("colout before writers of resolution: it drops rows and columns of the image the data "
                               "gives; progressive resizing then scales what is left"));
  EXPECT_THAT(table, HasSubstr("colout after writers of batch rows: it drops pixels of the examples that train"));
  t.fit();
  // 16 -> ColOut 13 -> progressive resizing pinned to a multiple of 4: round(13·0.5/4)·4 = 8
  EXPECT_EQ(after->inputs.back().size(3), 8);
  EXPECT_EQ(after->inputs.back().size(0), 4);  // selective backprop kept half
  for (const CutOutHole& h : cutout->last_holes()) EXPECT_LE(h.left + h.width, 8);
  EXPECT_LE(cutmix->last_box().left + cutmix->last_box().width, 8);
}

TEST(ColOut, AsADataPipelineTransform) {
  auto ds = data::make_synthetic(data::SyntheticOptions().size(16).input_shape({1, 10, 10}).num_classes(3));
  data::DataLoader plain(ds, data::DataLoaderOptions().batch_size(4).shuffle(false));
  data::DataLoader cut(ds, data::DataLoaderOptions().batch_size(4).shuffle(false).workers(1),
                       {std::make_shared<ColOutTransform>(ColOutOptions().batch(false).p_row(0.2).p_col(0.5))});
  plain.start_epoch(1, 0);
  cut.start_epoch(1, 0);
  for (int b = 0; b < 4; ++b) {
    const Batch p = *plain.next(), c = *cut.next();
    EXPECT_EQ(c.input().sizes(), (std::vector<int64_t>{4, 1, 8, 5}));
    EXPECT_TRUE(at::equal(c.target(), p.target()));
  }
  // the same batches again: the loader's generator is keyed by (seed, epoch, batch)
  data::DataLoader again(ds, data::DataLoaderOptions().batch_size(4).shuffle(false),
                         {std::make_shared<ColOutTransform>(ColOutOptions().batch(false).p_row(0.2).p_col(0.5))});
  cut.start_epoch(1, 0, 2);
  again.start_epoch(1, 0, 2);
  EXPECT_TRUE(at::equal(cut.next()->input(), again.next()->input()));
}

TEST(ColOut, PlanTimeChecksNameTheProblem) {
  {
    Components c = testing::tiny_components(32, 8);
    auto ds = std::make_shared<data::TensorDataset>(at::zeros({16, 16}), at::zeros({16}, at::kLong), 3);
    c.train_dataloader = testing::loader(ds, 8);
    c.algorithms = {std::make_shared<ColOut>()};
    EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
                HasSubstr("colout drops rows and columns of images and needs image inputs [C, H, W] per example; the "
                          "training data has inputs of shape [16] per example"));
  }
  {
    Components c = testing::small_cnn_components();
    c.algorithms = {std::make_shared<ColOut>(ColOutOptions().resize_target("true"))};
    EXPECT_THAT(testing::input_error_of([&] { Trainer t(TrainerOptions().threads(1), std::move(c)); }),
                HasSubstr("colout.resize_target: true needs targets of the images' size"));
  }
}

}  // namespace
}  // namespace tessera::algorithms
