// Text classification: the text_classification dataset (lines of label, tab, text into padded bytes and class ids;
// the splits; the refusals, naming file and line) and the bert_classifier model (padding changes nothing, the bert
// model's parameter names, fine-tuning from a masked-language-model checkpoint, the plan-time refusals).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <tessera/data/text.h>
#include <tessera/models/bert.h>

#include "support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

/// A file in a fresh folder under the temp folder, removed at the end of the test.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& content)
      : dir_(fs::temp_directory_path() /
             fmt::format("tessera_textcls_{}_{}", ::getpid(),
                         ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::create_directories(dir_);
    std::ofstream(path(name), std::ios::binary) << content;
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name = "texts.tsv") const { return (dir_ / name).string(); }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
};

std::vector<int64_t> values(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}
std::vector<int64_t> row(const at::Tensor& t, int64_t i) { return values(t[i]); }

TEST(TextClassification, LinesBecomePaddedBytesAndLabelsBecomeClassesInByteOrder) {
  // 8 labelled lines (CRLF endings and blank lines in between); labels b, a, c.
  TempFile f("texts.tsv", "b\thi\r\na\tabcdefgh\n\nc\t\nb\tx y\na\tz\n\nc\tlast one\nb\tq\na\tw\n");
  const auto all = data::load_text_classification(
      data::TextClassificationOptions().path(f.path()).split("all").seq_length(5));
  ASSERT_EQ(all->size(), 8);
  EXPECT_EQ(all->labels(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(all->num_classes(), 3);
  EXPECT_EQ(all->tokens_per_example(), 5);
  const Batch b = all->get_batch({0, 1, 2, 3, 4, 5, 6, 7});
  EXPECT_EQ(row(b.input(), 0), (std::vector<int64_t>{'h', 'i', 0, 0, 0})) << "padded with byte 0";
  EXPECT_EQ(row(b.input(), 1), (std::vector<int64_t>{'a', 'b', 'c', 'd', 'e'})) << "cut after seq_length";
  EXPECT_EQ(row(b.input(), 2), (std::vector<int64_t>{0, 0, 0, 0, 0})) << "an empty text";
  EXPECT_EQ(row(b.input(), 3), (std::vector<int64_t>{'x', ' ', 'y', 0, 0}));
  EXPECT_EQ(values(b.target()), (std::vector<int64_t>{1, 0, 2, 1, 0, 2, 1, 0}));
  // test_fraction 0.25: lines 3 and 7 (floor((i + 1) / 4) > floor(i / 4)); train the other 6; all the 3 labels.
  const auto test = data::load_text_classification(
      data::TextClassificationOptions().path(f.path()).split("test").seq_length(5).test_fraction(0.25));
  ASSERT_EQ(test->size(), 2);
  EXPECT_EQ(test->num_classes(), 3) << "classes of the whole file";
  const Batch t = test->get_batch({0, 1});
  EXPECT_EQ(row(t.input(), 0), row(b.input(), 3));
  EXPECT_EQ(row(t.input(), 1), row(b.input(), 7));
  const auto train = data::load_text_classification(
      data::TextClassificationOptions().path(f.path()).seq_length(5).test_fraction(0.25).limit(4));
  ASSERT_EQ(train->size(), 4) << "the first 4 of the 6 training lines";
  EXPECT_EQ(row(train->get_batch({3}).input(), 0), row(b.input(), 4));
}

TEST(TextClassification, BadFilesAreRefusedWithFileAndLine) {
  const auto error_of = [](const std::string& content, const std::string& split = "train") {
    TempFile f("texts.tsv", content);
    return testing::input_error_of([&] {
      data::load_text_classification(data::TextClassificationOptions().path(f.path()).split(split).seq_length(4));
    });
  };
  EXPECT_NE(error_of("a\tone\nb two\n").find("texts.tsv:2: no tab; expected a label, a tab, the text"),
            std::string::npos);
  EXPECT_NE(error_of("a\tone\n\n\tthree\n").find("texts.tsv:3: an empty label"), std::string::npos);
  EXPECT_NE(error_of(std::string("a\tone\nb\tt\0o\n", 12)).find("texts.tsv:2: the text holds a byte 0"),
            std::string::npos);
  EXPECT_NE(error_of("a\tone\na\ttwo\n").find("has 1 label (a); expected at least 2 classes"), std::string::npos);
  EXPECT_NE(error_of("a\tone\nb\ttwo\n", "test").find("the test split of"), std::string::npos) << "2 lines, 10%";
  const std::string missing = testing::input_error_of(
      [] { data::load_text_classification(data::TextClassificationOptions().path("/nonexistent/x.tsv")); });
  EXPECT_NE(missing.find("/nonexistent/x.tsv is not a file"), std::string::npos) << missing;
}

BERTClassifierOptions small_classifier(int64_t classes = 3) {
  BERTClassifierOptions options;
  options.num_classes(classes);
  options.max_seq_length(12).d_model(16).n_layers(2).n_heads(2);
  return options;
}

TEST(BERTClassifier, PaddingChangesNothingAndTheEncoderHasTheBertModelsNames) {
  at::manual_seed(3);
  BERTClassifier model(small_classifier());
  model.eval();
  // "abc" with 3 and with 9 bytes of padding; a row of padding alone.
  at::Tensor short_ids = at::zeros({2, 6}, at::kLong), long_ids = at::zeros({2, 12}, at::kLong);
  for (int64_t j = 0; j < 3; ++j) short_ids[0][j] = long_ids[0][j] = 'a' + j;
  const at::Tensor a = model.forward(Batch(short_ids, at::zeros({2}, at::kLong)));
  const at::Tensor b = model.forward(Batch(long_ids, at::zeros({2}, at::kLong)));
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(at::allclose(a[0], b[0], 1e-5, 1e-6)) << a[0] << b[0];
  EXPECT_TRUE(a.isfinite().all().item<bool>()) << "a row of padding alone";
  // (Without the padding left out, the two would differ: the next test.)
  BERT bert(small_classifier());
  std::set<std::string> bert_names, names;
  for (const auto& p : bert.named_parameters()) bert_names.insert(p.key());
  for (const auto& p : model.named_parameters()) names.insert(p.key());
  bert_names.erase("head.weight");
  bert_names.insert({"classifier.weight", "classifier.bias"});
  EXPECT_EQ(names, bert_names);
  EXPECT_EQ(model.num_classes(), 3);
  // Refusals: no classes; a pad id outside the vocabulary; ids outside it.
  EXPECT_NE(testing::input_error_of([] { BERTClassifier m(small_classifier(0)); }).find("model.num_classes: 0"),
            std::string::npos);
  EXPECT_NE(testing::input_error_of([] { BERTClassifier m(small_classifier().pad_id(256)); })
                .find("model.pad_id: 256 is outside the vocabulary; expected an id in [0, 256)"),
            std::string::npos);
  const std::string ids = testing::input_error_of(
      [&] { model.forward(Batch(at::full({1, 4}, 300, at::kLong), at::zeros({1}, at::kLong))); });
  EXPECT_NE(ids.find("bert_classifier: token id 300"), std::string::npos) << ids;
}

TEST(BERTClassifier, PaddingIsLeftOutOfAttentionNotOnlyOfThePooling) {
  // The same encoder weights, padding as a token like any other (pad_id 255, which no row holds): the padded and the
  // unpadded text then give other logits.
  at::manual_seed(3);
  BERTClassifier masked(small_classifier());
  BERTClassifier plain(small_classifier().pad_id(255));
  {
    at::NoGradGuard no_grad;
    const auto from = masked.named_parameters();
    for (auto& p : plain.named_parameters()) p.value().copy_(from[p.key()]);
  }
  masked.eval();
  plain.eval();
  at::Tensor short_ids = at::zeros({1, 6}, at::kLong), long_ids = at::zeros({1, 12}, at::kLong);
  for (int64_t j = 0; j < 3; ++j) short_ids[0][j] = long_ids[0][j] = 'a' + j;
  const Batch s(short_ids, at::zeros({1}, at::kLong)), l(long_ids, at::zeros({1}, at::kLong));
  EXPECT_TRUE(at::allclose(masked.forward(s), masked.forward(l), 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(plain.forward(s), plain.forward(l), 1e-3, 1e-3));
}

/// Lines of two made-up languages: words of letters a-h (label "ah") and of letters q-x ("qx"), 3 to 8 letters.
std::string two_languages(int64_t lines, uint64_t seed) {
  Rng rng(seed);
  std::string out;
  for (int64_t i = 0; i < lines; ++i) {
    const bool second = rng.below(2) == 1;
    std::string word;
    const int64_t length = 3 + static_cast<int64_t>(rng.below(6));
    for (int64_t j = 0; j < length; ++j) word += static_cast<char>((second ? 'q' : 'a') + rng.below(8));
    out += (second ? "qx\t" : "ah\t") + word + "\n";
  }
  return out;
}

TEST(BERTClassifier, FineTunesFromAMaskedLanguageModelCheckpoint) {
  // A bert model trained 4 batches on masked text; its checkpoint's encoder loads into a bert_classifier
  // (weights_only, strict: false: the language head is left out, the classifier kept as initialised), which then
  // learns to tell the two languages apart.
  TempFile f("words.txt", "");
  const std::string corpus = two_languages(400, 1);
  std::ofstream(f.path("words.txt")) << corpus;
  std::ofstream(f.path("texts.tsv")) << two_languages(600, 2);
  // The pretraining run's checkpoint folder (load_path takes its newest checkpoint).
  fs::create_directories(f.path("ckpts"));
  const std::string ckpt = f.path("ckpts/ep0-ba4.ckpt");
  std::map<std::string, at::Tensor> pretrained;
  {
    auto trainer = make_trainer(Recipe::parse(fmt::format(R"(max_duration: 4ba
seed: 1
threads: 1
run_dir: ""
model: {{bert: {{d_model: 16, n_layers: 2, n_heads: 2, max_seq_length: 12}}}}
data:
  train:
    dataset: {{text: {{path: {}, seq_length: 12}}}}
    loader: {{batch_size: 8}}
    transforms: [mask_tokens]
optimizer: {{adamw: {{lr: 0.003}}}}
callbacks: []
loggers: []
)",
                                                      f.path("words.txt")),
                                          "<pretraining>"));
    trainer->fit();
    trainer->save_checkpoint(ckpt);
    for (const auto& p : trainer->state().model->named_parameters()) pretrained[p.key()] = p.value().detach().clone();
  }
  const std::string recipe = fmt::format(R"(max_duration: 3ep
seed: 2
threads: 1
run_dir: ""
model: {{bert_classifier: {{d_model: 16, n_layers: 2, n_heads: 2}}}}
data:
  train:
    dataset: {{text_classification: {{path: {0}, seq_length: 12}}}}
    loader: {{batch_size: 16}}
  eval:
    dataset: {{text_classification: {{path: {0}, split: test, seq_length: 12}}}}
    metrics: [accuracy]
optimizer: {{adamw: {{lr: 0.003}}}}
checkpoint: {{load_path: {1}, weights_only: true, strict: false}}
callbacks: []
loggers: []
)",
                                         f.path("texts.tsv"), f.path("ckpts"));
  auto trainer = make_trainer(Recipe::parse(recipe, "<fine-tuning>"));
  const Model& model = *trainer->state().model;
  for (const auto& p : model.named_parameters()) {
    const auto it = pretrained.find(p.key());
    if (p.key().rfind("classifier.", 0) == 0) {
      EXPECT_EQ(it, pretrained.end()) << p.key();
    } else {
      ASSERT_NE(it, pretrained.end()) << p.key();
      EXPECT_TRUE(at::equal(p.value(), it->second)) << p.key() << " was not loaded";
    }
  }
  EXPECT_EQ(pretrained.count("head.weight"), 1u) << "the language head, left out";
  trainer->fit();
  EXPECT_GT(trainer->evaluate().at("metrics/eval/accuracy"), 0.9) << "two alphabets: an easy task";
  // A folder without a checkpoint: refused, with what to give.
  fs::create_directories(f.path("empty"));
  std::string empty = recipe;
  empty.replace(empty.find(f.path("ckpts")), f.path("ckpts").size(), f.path("empty"));
  try {
    make_trainer(Recipe::parse(empty, "<fine-tuning>"));
    ADD_FAILURE() << "an empty load_path folder was accepted";
  } catch (const CheckpointError& e) {  // at the recipe's load_path line
    EXPECT_EQ(std::string(e.what()).rfind("<fine-tuning>:", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("checkpoint.load_path: folder '" + f.path("empty") + "' holds no checkpoint"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tessera
