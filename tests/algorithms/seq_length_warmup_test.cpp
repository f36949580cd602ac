// Sequence-length warmup: the schedule, the batch cut and re-chunked, a run's lengths, and its plan-time refusals.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/algorithms/seq_length_warmup.h>

#include "support.h"

namespace tessera {
namespace {

using algorithms::SeqLengthWarmup;
using algorithms::SeqLengthWarmupOptions;
using algorithms::warmup_seq_length;

TEST(SeqLengthWarmup, ScheduleFollowsComposersFormula) {
  // T = 100, duration 0.3: W = 30; (64 - 8) / 8 = 7 steps, one every 30 / 7 = 4 batches.
  const auto at = [](int64_t b) { return warmup_seq_length(b, 100, 0.3, 8, 64, 8); };
  EXPECT_EQ(at(0), 8);
  EXPECT_EQ(at(3), 8);
  EXPECT_EQ(at(4), 16);
  EXPECT_EQ(at(27), 56);
  EXPECT_EQ(at(28), 64);
  EXPECT_EQ(at(99), 64);
  // No warmup: full length from the start.
  EXPECT_EQ(warmup_seq_length(0, 100, 0.0, 8, 64, 8), 64);
  EXPECT_EQ(warmup_seq_length(0, 3, 0.3, 8, 64, 8), 64);  // W = int(0.9) = 0
  // Fewer warmup batches than steps (Composer divides by zero): one step per batch.
  EXPECT_EQ(warmup_seq_length(2, 10, 0.3, 8, 64, 8), 24);
  // max - min below one step: one step, after W batches.
  EXPECT_EQ(warmup_seq_length(29, 100, 0.3, 8, 12, 8), 8);
  EXPECT_EQ(warmup_seq_length(30, 100, 0.3, 8, 12, 8), 12);
  // A very long run does not overflow.
  EXPECT_EQ(warmup_seq_length(int64_t{1} << 62, int64_t{1} << 62, 0.5, 8, 64, 8), 64);
  const std::string bad = testing::input_error_of([] { warmup_seq_length(0, 10, 0.3, 16, 8, 8); });
  EXPECT_NE(bad.find("max_seq_length 8 is below min_seq_length 16"), std::string::npos) << bad;
}

TEST(SeqLengthWarmup, TruncatingKeepsTheFirstTokensOfEverySequencePart) {
  const at::Tensor x = at::arange(16, at::kLong).view({2, 8});
  Batch b(x, x + 1);
  b.set("weight", at::ones({2}));
  const Batch cut = set_seq_length(b, 3, /*truncate=*/true);
  EXPECT_TRUE(at::equal(cut.input(), x.narrow(1, 0, 3)));
  EXPECT_TRUE(at::equal(cut.target(), x.narrow(1, 0, 3) + 1));
  EXPECT_EQ(cut.get("weight").sizes(), (std::vector<int64_t>{2}));
  // At or above the length: unchanged.
  EXPECT_TRUE(at::equal(set_seq_length(b, 8, true).input(), x));
  EXPECT_TRUE(at::equal(set_seq_length(b, 20, false).input(), x));
}

TEST(SeqLengthWarmup, RechunkingKeepsTheTokensAndTheirTargetsAligned) {
  const at::Tensor x = at::arange(16, at::kLong).view({2, 8});
  const Batch b(x, x + 1);
  const Batch chunks = set_seq_length(b, 3, /*truncate=*/false);  // 16 tokens -> 5 rows of 3, one dropped
  ASSERT_EQ(chunks.input().sizes(), (std::vector<int64_t>{5, 3}));
  EXPECT_TRUE(at::equal(chunks.input(), at::arange(15, at::kLong).view({5, 3})));
  EXPECT_TRUE(at::equal(chunks.target(), chunks.input() + 1));
  // Trailing dimensions travel along ([N, S, D] embeddings).
  const Batch dense(at::zeros({2, 8, 4}), x);
  EXPECT_EQ(set_seq_length(dense, 4, false).input().sizes(), (std::vector<int64_t>{4, 4, 4}));
  // A part that is not a sequence cannot follow the tokens.
  Batch weighted = b;
  weighted.set("weight", at::ones({2}));
  const std::string error = testing::input_error_of([&] { set_seq_length(weighted, 3, false); });
  EXPECT_NE(error.find("batch part \"weight\" of shape [2] is not a sequence of the input's length 8"),
            std::string::npos)
      << error;
  const std::string flat = testing::input_error_of([] { set_seq_length(Batch(at::zeros({4}), at::zeros({4})), 2, true); });
  EXPECT_NE(flat.find("expected sequences [N, S, ...]"), std::string::npos) << flat;
}

/// The sequence length and row count of every microbatch trained.
class ShapeLog : public Callback {
 public:
  std::string name() const override { return "shapes"; }
  void run_event(Event event, State& s, Logger&) override {
    if (event == Event::BeforeForward) shapes.push_back(c10::str(s.batch.input().sizes()));
  }
  std::vector<std::string> shapes;
};

std::vector<std::string> trained_shapes(SeqLengthWarmupOptions options, int64_t microbatch = 0) {
  Components c = testing::gpt_components(32);  // 4 batches of [8, 8]
  c.algorithms.push_back(std::make_shared<SeqLengthWarmup>(options));
  auto log = std::make_shared<ShapeLog>();
  c.callbacks.push_back(log);
  Trainer trainer(TrainerOptions().max_duration(Time::parse("3ep")).microbatch_size(microbatch).threads(1),
                  std::move(c));
  trainer.fit();
  return log->shapes;
}

TEST(SeqLengthWarmup, ARunLengthensItsSequencesOnSchedule) {
  // 12 batches, duration 0.5: W = 6; (8 - 2) / 2 = 3 steps, one every 2 batches; max from the data (8).
  const auto options = SeqLengthWarmupOptions().duration(0.5).min_seq_length(2).step_size(2).truncate(true);
  std::vector<std::string> expected;
  for (int64_t len : {2, 2, 4, 4, 6, 6, 8, 8, 8, 8, 8, 8}) expected.push_back(fmt::format("[8, {}]", len));
  EXPECT_EQ(trained_shapes(options), expected);
  // Re-chunked: the same 64 tokens per batch in more rows (64 / 6 = 10 rows, 4 tokens dropped), in microbatches of 8.
  const std::vector<std::string> rechunked = trained_shapes(SeqLengthWarmupOptions(options).truncate(false), 8);
  const std::vector<std::string> first{"[8, 2]", "[8, 2]", "[8, 2]", "[8, 2]"};  // batch 0: 32 rows of 2
  EXPECT_EQ(std::vector<std::string>(rechunked.begin(), rechunked.begin() + 4), first);
  EXPECT_EQ(rechunked[8], "[8, 4]");   // batch 2: 16 rows of 4
  EXPECT_EQ(rechunked[12], "[8, 6]");  // batch 4: 10 rows of 6 in microbatches of 8 and 2
  EXPECT_EQ(rechunked[13], "[2, 6]");
}

TEST(SeqLengthWarmup, RefusesDataAndModelsItCannotServeBeforeStepOne) {
  const auto refuse = [](std::shared_ptr<Model> model, std::shared_ptr<data::TensorDataset> data,
                         SeqLengthWarmupOptions options) {
    return testing::input_error_of([&] {
      Components c;
      c.model = model;
      c.train_dataloader = testing::loader(std::move(data), 8);
      c.optimizer = std::make_shared<optim::SGD>(c.model->parameters(), optim::SGDOptions().lr(0.1));
      c.algorithms.push_back(std::make_shared<SeqLengthWarmup>(options));
      Trainer trainer(TrainerOptions().threads(1), std::move(c));
    });
  };
  const std::string images = refuse(testing::tiny_model(), testing::tiny_data(16), SeqLengthWarmupOptions());
  EXPECT_NE(images.find("seq_length_warmup shortens token sequences and needs inputs [S] per example (a text "
                        "dataset); the training data has inputs of shape [1, 4, 4] per example"),
            std::string::npos)
      << images;
  const std::string too_long =
      refuse(testing::tiny_gpt(), testing::tiny_text(16), SeqLengthWarmupOptions().min_seq_length(2).max_seq_length(16));
  EXPECT_NE(too_long.find("max_seq_length 16 is longer than the training data's sequences (8 tokens)"),
            std::string::npos)
      << too_long;
  // Flat vectors of 8 features pass for sequences, but this model needs all 8.
  at::manual_seed(0);
  auto fixed = std::make_shared<Classifier<testing::TinyNetImpl>>(std::make_shared<testing::TinyNetImpl>(8, 4, 3), 3);
  const auto vectors = data::make_synthetic(data::SyntheticOptions().size(16).input_shape({8}).num_classes(3));
  const std::string model = refuse(fixed, vectors, SeqLengthWarmupOptions().min_seq_length(2).truncate(true));
  EXPECT_NE(model.find("seq_length_warmup: the model cannot take sequences of 2 tokens (min_seq_length), the first "
                       "length of the schedule: its forward fails with"),
            std::string::npos)
      << model;
  // One target per example cannot follow re-chunked tokens (the default).
  const std::string per_example = refuse(fixed, vectors, SeqLengthWarmupOptions().min_seq_length(2));
  EXPECT_NE(per_example.find("is not a sequence of the input's length 8, so it cannot follow the tokens into new "
                             "examples (truncate: false); use truncate: true"),
            std::string::npos)
      << per_example;
  const std::string options =
      testing::input_error_of([] { SeqLengthWarmup(SeqLengthWarmupOptions().min_seq_length(16).max_seq_length(8)); });
  EXPECT_NE(options.find("max_seq_length 8 is below min_seq_length 16"), std::string::npos) << options;
}

TEST(SeqLengthWarmup, DeclaresWhatItChanges) {
  const SeqLengthWarmup cut(SeqLengthWarmupOptions().truncate(true));
  EXPECT_TRUE(cut.spec().writes(Resource::SequenceLength, Event::AfterDataloader));
  EXPECT_FALSE(cut.spec().writes(Resource::BatchRows));
  const SeqLengthWarmup chunks;  // re-chunks by default
  EXPECT_TRUE(chunks.spec().writes(Resource::BatchRows, Event::AfterDataloader));
  EXPECT_FALSE(cut.spec().required_on_load);
}

}  // namespace
}  // namespace tessera
