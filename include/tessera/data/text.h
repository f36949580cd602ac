#pragma once
/// Text for language models: the bytes of text files as tokens (a byte-level vocabulary of 256), or their tokens by a
/// byte-level BPE tokenizer (data/tokenizer.h), cut into fixed-length sequences for next-token prediction; and
/// labelled texts for text classifiers (bert_classifier).
///
///     auto train = tessera::data::load_text(tessera::data::TextOptions().seq_length(128));
///     // train->get_batch({0}): input int64 [1, 128] = bytes [0, 128), target int64 [1, 128] = bytes [1, 129)
///     auto bpe = tessera::data::load_text(tessera::data::TextOptions().tokenizer("fortunes-4096.json"));
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <tessera/data/dataset.h>
#include <tessera/options.h>

namespace tessera::data {

/// Options of `load_text` (recipe name "text").
struct TextOptions {
  /// A text file, or a folder whose regular files (not links, not `.dat` index files) are read in name order.
  /// The default is the fortune cookies of Debian's `fortunes` package (2.6 MB of English text).
  TESSERA_OPTION(std::string, path) = "/usr/share/games/fortunes";
  /// "train": the first 1 − test_fraction of every file; "test": the rest of every file.
  TESSERA_OPTION(std::string, split) = "train";
  /// Tokens per example.
  TESSERA_OPTION(int64_t, seq_length) = 128;
  /// Share of every file held out for the test split.
  TESSERA_OPTION(double, test_fraction) = 0.1;
  /// Keep only the first N examples (0 = all).
  TESSERA_OPTION(int64_t, limit) = 0;
  /// A byte-level BPE tokenizer (a tokenizer.json, or a folder with one or with vocab.json + merges.txt; see
  /// data/tokenizer.h) that turns the split's bytes into tokens; "" = every byte is a token.
  TESSERA_OPTION(std::string, tokenizer) = "";
  /// Text that ends each document (such as "\n%\n" between Debian's fortunes; cut out): each document of the split
  /// is encoded on its own with the tokenizer's post-processor tokens around it (encode(text, true), such as a
  /// template "$A <|endoftext|>"), so the model learns where documents end. Needs a tokenizer with a template.
  /// "" = the split is one stream of text.
  TESSERA_OPTION(std::string, document_separator) = "";
  template <class V>
  void visit(V& v) {
    v("path", path_, "a text file, or a folder of text files", Any{});
    v("split", split_, "which split to read", Choices{{"train", "test"}});
    v("seq_length", seq_length_, "tokens per example", Range::at_least(2));
    v("test_fraction", test_fraction_, "share of every file held out for the test split", Range::open(0, 1));
    v("limit", limit_, "keep only the first N examples (0 = all)", Range::at_least(0));
    v("tokenizer", tokenizer_, "a byte-level BPE or WordPiece tokenizer.json (\"\" = bytes are the tokens)", Any{});
    v("document_separator", document_separator_,
      "text between documents: each is encoded with the tokenizer's template tokens around it (\"\" = one stream)",
      Any{});
  }
};

/// Token sequences in memory: inputs and targets int64 [N, seq_length], the targets the inputs shifted by one
/// token. Example i covers tokens [i·S, i·S + S] of its split's stream (S = seq_length), so examples do not
/// overlap and every token but the last of the stream is predicted once per epoch. `num_classes()` is the
/// vocabulary size (256, or the tokenizer's), `tokens_per_example()` is S.
class TextDataset : public TensorDataset {
 public:
  TextDataset(at::Tensor inputs, at::Tensor targets, int64_t vocab_size, std::string name,
              double bytes_per_token = 1.0);
  int64_t tokens_per_example() const override { return seq_length_; }
  /// Bytes of text per token in the split's stream: 1 without a tokenizer. A loss in nats per token divided by
  /// ln 2 and by this is in bits per byte, comparable across tokenizers.
  double bytes_per_token() const noexcept { return bytes_per_token_; }

 private:
  int64_t seq_length_;
  double bytes_per_token_;
};

/// The token stream of one split of the files at `options.path`: for each file in order, its first
/// ⌊(1 − test_fraction)·bytes⌋ bytes (train) or the rest (test), concatenated; each byte is one token.
std::vector<uint8_t> read_text_split(TextOptions options);

/// The bytes of the files at `path` (a file, or a folder's files as `TextOptions::path` reads them), concatenated.
std::vector<uint8_t> read_text_files(const std::string& path);

/// The dataset of `options`. Errors (InputError): a path that does not exist or holds no text, a split too short
/// for one example of seq_length + 1 tokens, a tokenizer that cannot be read (Tokenizer::load's errors).
std::shared_ptr<TextDataset> load_text(TextOptions options);

/// Options of `load_text_classification` (recipe name "text_classification").
struct TextClassificationOptions {
  /// A file of labelled texts, one per line: the label, a tab, the text (UTF-8 or any bytes but 0). Empty lines are
  /// skipped.
  TESSERA_OPTION(std::string, path) = "";
  /// "train", "test" (the share test_fraction of the lines, spread evenly over the file: line i, counting the
  /// labelled lines from 0, when floor((i + 1) · test_fraction) > floor(i · test_fraction)) or "all".
  TESSERA_OPTION(std::string, split) = "train";
  /// Tokens per example: a text's bytes, cut after seq_length, padded with byte 0 up to it.
  TESSERA_OPTION(int64_t, seq_length) = 128;
  TESSERA_OPTION(double, test_fraction) = 0.1;
  /// Keep only the first N examples of the split (0 = all).
  TESSERA_OPTION(int64_t, limit) = 0;
  template <class V>
  void visit(V& v) {
    v("path", path_, "a file of lines: label, tab, text", Any{});
    v("split", split_, "which lines to read", Choices{{"train", "test", "all"}});
    v("seq_length", seq_length_, "tokens per example (bytes, cut or padded with byte 0)", Range::at_least(1));
    v("test_fraction", test_fraction_, "share of the lines held out for the test split", Range::open(0, 1));
    v("limit", limit_, "keep only the first N examples (0 = all)", Range::at_least(0));
  }
};

/// Labelled texts in memory: inputs int64 [N, seq_length] (bytes, then byte 0), targets int64 [N] class ids.
/// `num_classes()` is the number of distinct labels in the whole file (every split numbers them alike: label k in
/// byte order is class k), `labels()` their names, `tokens_per_example()` seq_length.
class TextClassificationDataset : public TensorDataset {
 public:
  TextClassificationDataset(at::Tensor inputs, at::Tensor targets, std::vector<std::string> labels, std::string name);
  int64_t tokens_per_example() const override { return seq_length_; }
  const std::vector<std::string>& labels() const noexcept { return labels_; }

 private:
  int64_t seq_length_;
  std::vector<std::string> labels_;
};

/// The dataset of `options`. Errors (InputError, naming the file and line): a missing file; a line without a tab,
/// with an empty label, or with a byte 0 (the padding); fewer than 2 labels; a split without a line.
std::shared_ptr<TextClassificationDataset> load_text_classification(TextClassificationOptions options);

}  // namespace tessera::data
