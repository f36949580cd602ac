#pragma once
/// Text for language models: the bytes of text files as tokens (a byte-level vocabulary of 256), cut into
/// fixed-length sequences for next-token prediction.
///
///     auto train = tessera::data::load_text(tessera::data::TextOptions().seq_length(128));
///     // train->get_batch({0}): input int64 [1, 128] = bytes [0, 128), target int64 [1, 128] = bytes [1, 129)
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
  template <class V>
  void visit(V& v) {
    v("path", path_, "a text file, or a folder of text files", Any{});
    v("split", split_, "which split to read", Choices{{"train", "test"}});
    v("seq_length", seq_length_, "tokens per example", Range::at_least(2));
    v("test_fraction", test_fraction_, "share of every file held out for the test split", Range::open(0, 1));
    v("limit", limit_, "keep only the first N examples (0 = all)", Range::at_least(0));
  }
};

/// Token sequences in memory: inputs and targets int64 [N, seq_length], the targets the inputs shifted by one
/// token. Example i covers tokens [i·S, i·S + S] of its split's stream (S = seq_length), so examples do not
/// overlap and every token but the last of the stream is predicted once per epoch. `num_classes()` is the
/// vocabulary size (256), `tokens_per_example()` is S.
class TextDataset : public TensorDataset {
 public:
  TextDataset(at::Tensor inputs, at::Tensor targets, int64_t vocab_size, std::string name);
  int64_t tokens_per_example() const override { return seq_length_; }

 private:
  int64_t seq_length_;
};

/// The token stream of one split of the files at `options.path`: for each file in order, its first
/// ⌊(1 − test_fraction)·bytes⌋ bytes (train) or the rest (test), concatenated; each byte is one token.
std::vector<uint8_t> read_text_split(TextOptions options);

/// The dataset of `options`. Errors (InputError): a path that does not exist or holds no text, a split too short
/// for one example of seq_length + 1 tokens.
std::shared_ptr<TextDataset> load_text(TextOptions options);

}  // namespace tessera::data
