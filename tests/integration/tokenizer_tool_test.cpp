// Byte-level BPE end to end: `tessera-tokenizer` train / encode / decode / inspect and its bad input (exit 2); the
// text dataset with a tokenizer (its tokens are the tokenizer's ids of the split, its vocabulary the tokenizer's;
// with document_separator, each document's tokens followed by the template's end-of-document token);
// `tessera-shard write --text --tokenizer [--document-separator]` samples that stream as the text dataset's examples
// (uint16 ids); the streaming dataset encoding a str column with `tokenizer` as it reads it (with the template's
// tokens around each sample, or without); a GPT
// recipe on BPE tokens trained, stopped, resumed bitwise, and continuing prompts with `tessera-run --generate`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <numeric>
#include <string>

#include <tessera/data/streaming.h>
#include <tessera/data/text.h>
#include <tessera/data/tokenizer.h>

#include "core/mds_support.h"
#include "integration/small_text.h"
#include "support.h"

namespace tessera {
namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

Result tool(const char* path, const std::string& dir, const std::string& args) {
  const std::string out = dir + "/stdout.txt", err = dir + "/stderr.txt";
  const std::string command = std::string("'") + path + "' " + args + " >'" + out + "' 2>'" + err + "'";
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, test::read_file(out), test::read_file(err)};
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// `s` in single quotes, for a shell command line.
std::string quoted(const std::string& s) {
  std::string q = "'";
  q += s;
  q += '\'';
  return q;
}

/// A text of repeated sentences, long enough for a few hundred merges and a test split.
std::string sentences() {
  std::string s;
  for (int i = 0; i < 400; ++i)
    s += "the quick brown fox " + std::string(i % 3 ? "jumps over" : "runs past") + " the lazy dog " +
         std::to_string(i % 17) + ". ";
  return s;
}

TEST(TokenizerTool, TrainsOnTheTrainSplitEncodesDecodesAndInspects) {
  test::TempDir tmp("tokenizer_tool");
  const std::string file = tmp.path() + "/text.txt", tok = tmp.path() + "/tok.json";
  test::write_file(file, sentences());
  const Result r = tool(TESSERA_TOKENIZER_PATH, tmp.path(),
                        "train '" + file + "' --vocab-size 300 --special '<|endoftext|>' --out '" + tok + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  const data::Tokenizer t = data::Tokenizer::load(tok);
  EXPECT_EQ(t.vocab_size(), 300);
  EXPECT_TRUE(has(r.out, "fingerprint " + t.fingerprint())) << r.out;
  // The train split: the first 90% of the file, as the text dataset reads it.
  const std::vector<uint8_t> train = data::read_text_split(data::TextOptions().path(file));
  EXPECT_TRUE(has(r.out, "trained on " + std::to_string(train.size()) + " bytes")) << r.out;
  const data::Tokenizer same = data::Tokenizer::train({std::string(train.begin(), train.end())},
                                                      data::TokenizerTrainOptions().vocab_size(300).special_tokens({"<|endoftext|>"}));
  EXPECT_EQ(same.fingerprint(), t.fingerprint());

  const Result ids = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "encode '" + tok + "' '" + file + "' --ids");
  ASSERT_EQ(ids.code, 0) << ids.err;
  std::string expected;
  for (int64_t id : t.encode(sentences())) {
    if (!expected.empty()) expected += ' ';
    expected += std::to_string(id);
  }
  EXPECT_EQ(ids.out, expected + "\n");
  const Result stats = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "encode '" + tok + "' '" + file + "' --split test");
  ASSERT_EQ(stats.code, 0) << stats.err;
  const std::vector<uint8_t> test_split = data::read_text_split(data::TextOptions().path(file).split("test"));
  EXPECT_TRUE(has(stats.out, "(test): " + std::to_string(test_split.size()) + " bytes -> " +
                                 std::to_string(t.encode(std::string(test_split.begin(), test_split.end())).size()) +
                                 " tokens"))
      << stats.out;
  const std::vector<int64_t> fox = t.encode("the quick brown fox<|endoftext|>");
  std::string args;
  for (int64_t id : fox) {
    args += ' ';
    args += std::to_string(id);
  }
  const Result text = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "decode '" + tok + "'" + args);
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_EQ(text.out, "the quick brown fox<|endoftext|>");
  const Result inspect = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "inspect '" + tok + "'");
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_TRUE(has(inspect.out, "byte-level BPE, 300 tokens (1 special)")) << inspect.out;
  EXPECT_TRUE(has(inspect.out, "special token 0: <|endoftext|>")) << inspect.out;
  EXPECT_TRUE(has(inspect.out, "merge 0: ")) << inspect.out;

  // Llama 3's pattern: the tokenizer the library trains with it, named by inspect.
  const std::string llama3 = tmp.path() + "/llama3.json";
  const Result trained = tool(TESSERA_TOKENIZER_PATH, tmp.path(),
                              "train '" + file + "' --vocab-size 300 --pattern llama3 --out '" + llama3 + "'");
  ASSERT_EQ(trained.code, 0) << trained.err;
  EXPECT_EQ(data::Tokenizer::load(llama3).fingerprint(),
            data::Tokenizer::train({std::string(train.begin(), train.end())},
                                   data::TokenizerTrainOptions().vocab_size(300).pattern("llama3"))
                .fingerprint());
  const Result named = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "inspect '" + llama3 + "'");
  EXPECT_TRUE(has(named.out, "byte-level BPE (Llama 3's pattern), 300 tokens")) << named.out;
  // Qwen2's pattern with NFC, and a regex of one's own.
  const std::string qwen2 = tmp.path() + "/qwen2.json", own = tmp.path() + "/own.json";
  ASSERT_EQ(tool(TESSERA_TOKENIZER_PATH, tmp.path(),
                 "train '" + file + "' --vocab-size 300 --pattern qwen2 --normalizer nfc --out '" + qwen2 + "'")
                .code,
            0);
  EXPECT_TRUE(has(tool(TESSERA_TOKENIZER_PATH, tmp.path(), "inspect '" + qwen2 + "'").out,
                  "byte-level BPE (Qwen2's pattern), NFC-normalized, "));
  ASSERT_EQ(tool(TESSERA_TOKENIZER_PATH, tmp.path(),
                 "train '" + file + "' --vocab-size 300 --split-regex '\\p{L}+|\\s+|.' --out '" + own + "'")
                .code,
            0);
  EXPECT_EQ(data::Tokenizer::load(own).pattern(), data::Pattern::custom);
  const Result bad_regex = tool(TESSERA_TOKENIZER_PATH, tmp.path(),
                                "train '" + file + "' --split-regex '(?<=a)b' --out x.json");
  EXPECT_EQ(bad_regex.code, 2);
  EXPECT_TRUE(has(bad_regex.err, "split_regex \"(?<=a)b\": at character 0: lookbehind")) << bad_regex.err;

  // Bad input: exit 2, saying what.
  EXPECT_EQ(tool(TESSERA_TOKENIZER_PATH, tmp.path(), "train '" + file + "' --pattern gpt4 --out x.json").code, 2);
  const Result missing = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "encode '" + tmp.path() + "/none.json' '" + file + "'");
  EXPECT_EQ(missing.code, 2);
  EXPECT_TRUE(has(missing.err, "none.json does not exist")) << missing.err;
  const Result small = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "train '" + file + "' --vocab-size 100 --out x.json");
  EXPECT_EQ(small.code, 2);
  EXPECT_TRUE(has(small.err, "vocab_size 100 is below")) << small.err;
  const Result unknown = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "decode '" + tok + "' 300");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_TRUE(has(unknown.err, "token id 300 is outside the vocabulary [0, 300)")) << unknown.err;
  EXPECT_EQ(tool(TESSERA_TOKENIZER_PATH, tmp.path(), "train").code, 2);
}

TEST(TokenizerTool, EncodesDecodesAndInspectsWithAWordPieceTokenizer) {
  test::TempDir tmp("tokenizer_tool");
  const std::string tok = testing::small_text_wordpiece(), file = tmp.path() + "/text.txt";
  test::write_file(file, "The QUICK brown fox jumps. Über!");
  const data::Tokenizer t = data::Tokenizer::load(tok);
  const Result ids = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "encode '" + tok + "' '" + file + "' --ids --split all");
  ASSERT_EQ(ids.code, 0) << ids.err;
  // the quick brown fox ju ##mps . u ##b ##e ##r ! (lowercased, the accent stripped, "." and "!" unknown)
  EXPECT_EQ(ids.out, "5 6 7 8 10 11 1 32 39 42 55 1\n");
  const Result text = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "decode '" + tok + "' 2 5 6 10 11 3 --skip-special-tokens");
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_EQ(text.out, "the quick jumps");
  const Result inspect = tool(TESSERA_TOKENIZER_PATH, tmp.path(), "inspect '" + tok + "'");
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_TRUE(has(inspect.out, "WordPiece, 64 tokens (5 special), lowercased, accents stripped, CJK ideographs split; "
                               "encode(text, true) gives [CLS] … [SEP]"))
      << inspect.out;
  EXPECT_TRUE(has(inspect.out, "special token 4: [MASK]")) << inspect.out;
  EXPECT_TRUE(has(inspect.out, "pieces: the quick brown fox runs ju ##mps a b c")) << inspect.out;
  EXPECT_EQ(t.encode("The QUICK brown fox jumps. Über!").size(), 12u);
}

TEST(TokenizerTool, DocumentsEndWithTheTemplatesTokens) {
  test::TempDir tmp("tokenizer_documents");
  const std::string file = tmp.path() + "/text.txt", tok = tmp.path() + "/tok.json";
  // 72 bytes; the train split is the first 64: documents "one fox", "two foxes", "three" and 32 z's (an empty
  // document between two separators is skipped).
  test::write_file(file, "one fox\n%\ntwo foxes\n%\n\n%\nthree\n%\n" + std::string(40, 'z'));
  const Result r = tool(TESSERA_TOKENIZER_PATH, tmp.path(),
                        std::string("train ") + quoted(file) + " --all --vocab-size 270 --min-frequency 1 --special '<|endoftext|>' "
                        "--template '$A <|endoftext|>' --out " + quoted(tok));
  ASSERT_EQ(r.code, 0) << r.err;
  const data::Tokenizer t = data::Tokenizer::load(tok);
  EXPECT_EQ(t.suffix_ids(), (std::vector<int64_t>{0}));
  std::vector<int64_t> expected;
  for (const std::string& doc : std::vector<std::string>{"one fox", "two foxes", "three", std::string(32, 'z')}) {
    const std::vector<int64_t> ids = t.encode(doc);
    expected.insert(expected.end(), ids.begin(), ids.end());
    expected.push_back(0);
  }
  const auto text = data::load_text(
      data::TextOptions().path(file).seq_length(2).tokenizer(tok).document_separator("\n%\n"));
  const int64_t n = (static_cast<int64_t>(expected.size()) - 1) / 2;
  ASSERT_EQ(text->size(), n);
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  const Batch b = text->get_batch(all);
  EXPECT_TRUE(at::equal(b.input(), at::tensor(expected, at::kLong).narrow(0, 0, n * 2).view({n, 2})));
  EXPECT_TRUE(at::equal(b.target(), at::tensor(expected, at::kLong).narrow(0, 1, n * 2).view({n, 2})));
  EXPECT_TRUE(has(text->describe(), "4.33 bytes per token, 4 documents")) << text->describe();
  // tessera-shard writes the same examples for the streaming dataset.
  const std::string out = tmp.path() + "/mds";
  const Result shard = tool(TESSERA_SHARD_PATH, tmp.path(),
                            std::string("write --text ") + quoted(file) + " --tokenizer " + quoted(tok) +
                                " --document-separator '\n%\n' --seq-length 2 --out " + quoted(out));
  ASSERT_EQ(shard.code, 0) << shard.err;
  const data::StreamingDataset streamed(
      data::StreamingOptions().local(out).input("tokens").seq_length(2).token_dtype("uint16").num_classes(270));
  ASSERT_EQ(streamed.size(), n);
  EXPECT_TRUE(at::equal(streamed.get_batch(all).input(), b.input()));
  // Refused before reading on: no tokenizer, or one without a template.
  EXPECT_THAT(testing::input_error_of([&] {
                data::load_text(data::TextOptions().path(file).seq_length(2).document_separator("\n%\n"));
              }),
              ::testing::HasSubstr("document_separator needs a tokenizer whose template marks where documents end"));
  const std::string plain = tmp.path() + "/plain.json";
  data::Tokenizer::train({"one fox"}, data::TokenizerTrainOptions().vocab_size(260)).save(plain);
  EXPECT_THAT(testing::input_error_of([&] {
                data::load_text(data::TextOptions().path(file).seq_length(2).tokenizer(plain).document_separator("%"));
              }),
              ::testing::HasSubstr("plain.json has no template to mark the documents with"));
}

TEST(TokenizerTool, TheTextDatasetAndShardsHoldTheTokenizersIds) {
  test::TempDir tmp("tokenizer_text");
  const std::string file = tmp.path() + "/text.txt", tok = tmp.path() + "/tok.json", out = tmp.path() + "/mds";
  test::write_file(file, sentences());
  const std::vector<uint8_t> train = data::read_text_split(data::TextOptions().path(file));
  const data::Tokenizer t =
      data::Tokenizer::train({std::string(train.begin(), train.end())}, data::TokenizerTrainOptions().vocab_size(300));
  t.save(tok);
  const auto text = data::load_text(data::TextOptions().path(file).seq_length(16).tokenizer(tok));
  const std::vector<int64_t> ids = t.encode(std::string(train.begin(), train.end()));
  const int64_t n = (static_cast<int64_t>(ids.size()) - 1) / 16;
  ASSERT_EQ(text->size(), n);
  ASSERT_EQ(text->num_classes(), 300);
  EXPECT_DOUBLE_EQ(text->bytes_per_token(), static_cast<double>(train.size()) / static_cast<double>(ids.size()));
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  const Batch b = text->get_batch(all);
  const at::Tensor stream = at::tensor(ids, at::kLong);
  EXPECT_TRUE(at::equal(b.input(), stream.narrow(0, 0, n * 16).view({n, 16})));
  EXPECT_TRUE(at::equal(b.target(), stream.narrow(0, 1, n * 16).view({n, 16})));
  EXPECT_TRUE(has(text->describe(), "300 BPE tokens")) << text->describe();

  const Result r = tool(TESSERA_SHARD_PATH, tmp.path(),
                        "write --text '" + file + "' --tokenizer '" + tok + "' --seq-length 16 --out '" + out + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "seq_length: 16, token_dtype: uint16, num_classes: 300")) << r.out;
  const data::StreamingDataset streamed(
      data::StreamingOptions().local(out).input("tokens").seq_length(16).token_dtype("uint16").num_classes(300));
  ASSERT_EQ(streamed.size(), n);
  const Batch s = streamed.get_batch(all);
  EXPECT_TRUE(at::equal(s.input(), b.input()));
  EXPECT_TRUE(at::equal(s.target(), b.target()));
  // A tokenizer that cannot be read: exit 2, naming it.
  const Result bad = tool(TESSERA_SHARD_PATH, tmp.path(),
                          "write --text '" + file + "' --tokenizer '" + tmp.path() + "/none.json' --out '" + tmp.path() + "/x'");
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(has(bad.err, "none.json does not exist")) << bad.err;
}

TEST(TokenizerTool, StreamingEncodesATextColumnAsItIsRead) {
  test::TempDir tmp("tokenizer_streaming");
  const std::string dir = tmp.path() + "/mds", tok = tmp.path() + "/tok.json";
  const data::Tokenizer t = data::Tokenizer::train(
      {sentences()},
      data::TokenizerTrainOptions().vocab_size(300).special_tokens({"<|endoftext|>"}).single_template("$A <|endoftext|>"));
  t.save(tok);
  std::vector<std::string> texts;
  {
    data::mds::Writer writer(dir, data::mds::WriterOptions().columns({{"text", "str"}, {"n", "int"}}).size_limit(400));
    for (int i = 0; i < 30; ++i) {
      texts.push_back(sentences().substr(static_cast<size_t>(i * 37), static_cast<size_t>(10 + i * 5)));
      writer.write({{"text", texts.back()}, {"n", int64_t{i}}});
    }
    writer.finish();
  }
  const int64_t S = 12;
  const auto options = [&] { return data::StreamingOptions().local(dir).input("text").seq_length(S).tokenizer(tok); };
  std::vector<int64_t> all(30);
  std::iota(all.begin(), all.end(), 0);
  // Each sample's text and the template's end-of-text token (add_special_tokens, the default), or the text alone.
  for (const bool special : {true, false}) {
    const data::StreamingDataset streamed(options().add_special_tokens(special));
    EXPECT_EQ(streamed.num_classes(), 300);
    const Batch b = streamed.get_batch(all);
    for (int64_t i = 0; i < 30; ++i) {
      SCOPED_TRACE("sample " + std::to_string(i) + (special ? " with" : " without") + " the special tokens");
      const std::vector<int64_t> ids = t.encode(texts[static_cast<size_t>(i)], special);
      const auto n = static_cast<int64_t>(ids.size());
      at::Tensor input = at::zeros({S}, at::kLong), target = at::full({S}, int64_t{-100}, at::kLong);
      for (int64_t k = 0; k < std::min(n, S); ++k) input[k] = ids[static_cast<size_t>(k)];
      for (int64_t k = 0; k + 1 < std::min(n, S + 1); ++k) target[k] = ids[static_cast<size_t>(k + 1)];
      EXPECT_TRUE(at::equal(b.input()[i], input));
      EXPECT_TRUE(at::equal(b.target()[i], target));
    }
  }
  EXPECT_EQ(t.encode(texts[0], true).back(), 0);
  // Refused before anything is read, saying why.
  using testing::input_error_of;
  EXPECT_NE(input_error_of([&] { data::StreamingDataset(options().seq_length(0)); }).find("set without seq_length"),
            std::string::npos);
  EXPECT_NE(input_error_of([&] { data::StreamingDataset(options().token_dtype("uint16")); }).find("not both"),
            std::string::npos);
  EXPECT_NE(input_error_of([&] { data::StreamingDataset(options().input("n")); }).find("is \"int\""),
            std::string::npos);
  EXPECT_NE(input_error_of([&] { data::StreamingDataset(options().num_classes(280)); })
                .find("280 is below the tokenizer's 300 tokens"),
            std::string::npos);
  EXPECT_NE(input_error_of([&] { data::StreamingDataset(options().tokenizer(tmp.path() + "/none.json")); })
                .find("none.json does not exist"),
            std::string::npos);
}

TEST(TokenizerTool, AGptOnBpeTokensResumesBitwiseAndGeneratesThroughItsTokenizer) {
  test::TempDir tmp("tokenizer_run");
  const std::string file = tmp.path() + "/text.txt", tok = tmp.path() + "/tok.json";
  test::write_file(file, sentences());
  data::Tokenizer::train(
      {sentences()},
      data::TokenizerTrainOptions().vocab_size(320).special_tokens({"<|endoftext|>"}).single_template("$A <|endoftext|>"))
      .save(tok);
  // The text as one stream, or as sentences each ended by <|endoftext|> (document_separator).
  std::string separator;
  const auto recipe = [&](const std::string& run_dir) {
    const std::string path = tmp.path() + "/" + run_dir + ".yaml";
    test::write_file(
        path, "max_duration: 12ba\nseed: 3\nthreads: 1\nrun_dir: " + tmp.path() + "/" + run_dir +
                  "\nmodel: {gpt: {d_model: 16, n_layers: 2, n_heads: 2}}\n"
                  "data:\n  train:\n    dataset: {text: {path: " + file + ", seq_length: 16, tokenizer: " + tok +
                  ", document_separator: '" + separator + "'}}\n    loader: {batch_size: 4, shuffle: true}\n"
                  "optimizer: {adamw: {lr: 0.01}}\n"
                  "callbacks: [{generate: {prompts: ['the quick'], interval: 6ba, max_new_tokens: 3, "
                  "eos_text: '<|endoftext|>', tokenizer: " + tok + "}}]\n"
                  "checkpoint: {folder: checkpoints, interval: 6ba}\n");
    return path;
  };
  const auto fingerprint = [](const std::string& out) { return out.substr(out.rfind("weights-fingerprint: ")); };
  for (const std::string& sep : {std::string(". "), std::string()}) {
    separator = sep;
    SCOPED_TRACE("document_separator '" + sep + "'");
    const Result whole = tool(TESSERA_RUN_PATH, tmp.path(), quoted(recipe(sep.empty() ? "whole" : "whole_docs")));
    ASSERT_EQ(whole.code, 0) << whole.err;
    EXPECT_TRUE(has(whole.out + whole.err, "generate @ 0ep 6ba: \"the quick\" -> \"")) << whole.out << whole.err;
    const std::string part = recipe(sep.empty() ? "part" : "part_docs");
    ASSERT_EQ(tool(TESSERA_RUN_PATH, tmp.path(), "'" + part + "' max_duration=6ba").code, 0);
    const Result resumed = tool(TESSERA_RUN_PATH, tmp.path(), "'" + part + "' checkpoint.autoresume=true");
    ASSERT_EQ(resumed.code, 0) << resumed.err;
    EXPECT_EQ(fingerprint(resumed.out), fingerprint(whole.out));
  }
  // --generate continues the prompt in the recipe's tokens.
  const Result generated = tool(TESSERA_RUN_PATH, tmp.path(),
                                quoted(recipe("whole")) + " checkpoint.autoresume=true --generate 'the quick' "
                                "--generate-options '{max_new_tokens: 4, temperature: 0}'");
  ASSERT_EQ(generated.code, 0) << generated.err;
  EXPECT_EQ(generated.out.rfind("the quick", 0), 0u) << generated.out;
  EXPECT_GT(generated.out.size(), std::string("the quick\n").size());
  // eos_text is one token of the recipe's tokenizer, or refused naming the tokens it is.
  const Result stopping = tool(TESSERA_RUN_PATH, tmp.path(),
                               quoted(recipe("whole")) + " checkpoint.autoresume=true --generate 'the quick' "
                               "--generate-options '{max_new_tokens: 4, eos_text: \"<|endoftext|>\"}'");
  ASSERT_EQ(stopping.code, 0) << stopping.err;
  EXPECT_EQ(stopping.out.rfind("the quick", 0), 0u) << stopping.out;
  const Result two = tool(TESSERA_RUN_PATH, tmp.path(),
                          quoted(recipe("whole")) + " checkpoint.autoresume=true --generate 'the quick' "
                          "--generate-options '{eos_text: \"the quick\"}'");
  EXPECT_EQ(two.code, 2) << two.out << two.err;
  EXPECT_TRUE(has(two.err, "generate.eos_text: \"the quick\" is ")) << two.err;
  EXPECT_TRUE(has(two.err, "tokens in the tokenizer's vocabulary")) << two.err;
}

}  // namespace
}  // namespace tessera
