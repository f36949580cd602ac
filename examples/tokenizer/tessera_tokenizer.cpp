// tessera-tokenizer: trains byte-level BPE tokenizers and encodes text with them, or with WordPiece ones (BERT's
// tokenizer.json) and SentencePiece-style BPE ones (Llama 2's) (include/tessera/data/tokenizer.h,
// docs/language-models.md "Tokenizers").
//
//   tessera-tokenizer train PATH --vocab-size N --out T.json [--min-frequency 2] [--special TOKEN ...]
//                           [--template '$A <|endoftext|>'] [--pattern gpt2|llama3|qwen2|o200k | --split-regex R]
//                           [--normalizer none|nfc|nfd|nfkc|nfkd]
//                           [--test-fraction 0.1 | --all]   (PATH: a text file or a folder, as the text dataset reads)
//   tessera-tokenizer encode T.json PATH [--ids] [--split all|train|test] [--test-fraction 0.1]
//                                [--add-special-tokens]     (bytes, tokens, bytes per token, time; --ids: the ids)
//   tessera-tokenizer decode T.json ID ... [--skip-special-tokens]   (the text of the ids)
//   tessera-tokenizer inspect T.json     (kind, size, added tokens, post-processor, the first merges or pieces)
//
// Training reads the text dataset's train split (the first 1 − test_fraction of every file) unless --all, so that
// the held-out text stays unseen by the tokenizer too. Exit codes: 0 success, 2 bad input, 1 anything else.
#include <tessera/data/text.h>
#include <tessera/data/tokenizer.h>
#include <tessera/error.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <set>
#include <string>
#include <vector>

using tessera::data::Tokenizer;

int main(int argc, char** argv) {
  CLI::App app{"tessera-tokenizer: trains byte-level BPE tokenizers (Hugging Face tokenizer.json) and encodes text "
               "with them or with WordPiece (BERT's), SentencePiece-style BPE (Llama 2's) and Unigram (T5's) ones"};
  app.require_subcommand(1);

  CLI::App* train = app.add_subcommand("train", "train a tokenizer on a text file or a folder of them");
  std::string train_path, out;
  tessera::data::TokenizerTrainOptions options;
  double test_fraction = 0.1;
  bool all = false;
  train->add_option("path", train_path, "a text file, or a folder of text files")->required();
  train->add_option("--vocab-size", options.vocab_size(), "tokens: special tokens + 256 bytes + merges")
      ->capture_default_str();
  train->add_option("--min-frequency", options.min_frequency(), "merge only pairs seen at least this often")
      ->capture_default_str();
  train->add_option("--special", options.special_tokens(), "special tokens (ids 0, 1, ...), e.g. '<|endoftext|>'");
  train->add_option("--template", options.single_template(),
                    "the special tokens around each text, such as '$A <|endoftext|>' (the post-processor's template)");
  auto* pattern = train->add_option("--pattern", options.pattern(),
                                    "the pattern that cuts text into pieces: gpt2 (GPT-2's), llama3 (Llama 3's, "
                                    "numbers in threes), qwen2 (Qwen2's, single digits) or o200k (GPT-4o's)")
                      ->check(CLI::IsMember({"gpt2", "llama3", "qwen2", "o200k"}))
                      ->capture_default_str();
  train->add_option("--split-regex", options.split_regex(),
                    "a pre-tokenizer regex of your own instead of --pattern (Hugging Face's Split, Oniguruma syntax)")
      ->excludes(pattern);
  train->add_option("--normalizer", options.normalizer(),
                    "Unicode normalization before the text is cut: none, nfc, nfd, nfkc or nfkd")
      ->check(CLI::IsMember({"none", "nfc", "nfd", "nfkc", "nfkd"}))
      ->capture_default_str();
  train->add_option("--out", out, "the tokenizer.json to write")->required();
  auto* fraction = train->add_option("--test-fraction", test_fraction,
                                     "train on the text dataset's train split: all but this share of every file")
                       ->capture_default_str();
  train->add_flag("--all", all, "train on the whole of every file")->excludes(fraction);

  CLI::App* encode = app.add_subcommand("encode", "encode a text file (or folder) and report the compression");
  std::string encode_tokenizer, encode_path;
  bool print_ids = false, add_special_tokens = false;
  encode->add_option("tokenizer", encode_tokenizer, "a tokenizer.json, a SentencePiece .model, or a folder with one")->required();
  encode->add_option("path", encode_path, "a text file, or a folder of text files")->required();
  encode->add_flag("--ids", print_ids, "print the ids, one line, space-separated");
  encode->add_flag("--add-special-tokens", add_special_tokens,
                   "put the post-processor's tokens around the text (such as RoBERTa's <s> ... </s>)");
  std::string encode_split = "all";
  double encode_fraction = 0.1;
  encode->add_option("--split", encode_split, "all of every file, or the text dataset's train or test split")
      ->check(CLI::IsMember({"all", "train", "test"}))
      ->capture_default_str();
  encode->add_option("--test-fraction", encode_fraction, "with --split: the text dataset's test_fraction")
      ->capture_default_str();

  CLI::App* decode = app.add_subcommand("decode", "print the text of token ids");
  std::string decode_tokenizer;
  std::vector<int64_t> ids;
  decode->add_option("tokenizer", decode_tokenizer, "a tokenizer.json, a SentencePiece .model, or a folder with one")->required();
  decode->add_option("ids", ids, "token ids")->required();
  bool skip_special_tokens = false;
  decode->add_flag("--skip-special-tokens", skip_special_tokens, "leave the special tokens out");

  CLI::App* inspect = app.add_subcommand("inspect", "what a tokenizer holds");
  std::string inspect_tokenizer;
  inspect->add_option("tokenizer", inspect_tokenizer, "a tokenizer.json, a SentencePiece .model, or a folder with one")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    if (train->parsed()) {
      tessera::data::TextOptions text;
      text.path(train_path);
      const std::vector<uint8_t> bytes =
          all ? tessera::data::read_text_files(train_path)
              : tessera::data::read_text_split(text.split("train").test_fraction(test_fraction));
      const auto start = std::chrono::steady_clock::now();
      const Tokenizer t = Tokenizer::train({std::string(bytes.begin(), bytes.end())}, options);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      t.save(out);
      std::cout << fmt::format("trained on {} bytes of {} in {:.3f} s: {}\nwrote {} (fingerprint {})\n", bytes.size(),
                               train_path, seconds, t.describe(), out, t.fingerprint());
    } else if (encode->parsed()) {
      const Tokenizer t = Tokenizer::load(encode_tokenizer);
      tessera::data::TextOptions text;
      text.path(encode_path).test_fraction(encode_fraction);
      const std::vector<uint8_t> bytes = encode_split == "all" ? tessera::data::read_text_files(encode_path)
                                                                : tessera::data::read_text_split(text.split(encode_split));
      const auto start = std::chrono::steady_clock::now();
      const std::vector<int64_t> encoded =
          t.encode(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), add_special_tokens);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (print_ids) {
        std::string line;
        for (size_t i = 0; i < encoded.size(); ++i) line += (i ? " " : "") + std::to_string(encoded[i]);
        std::cout << line << "\n";
      } else {
        std::cout << fmt::format("{} ({}): {} bytes -> {} tokens, {:.3f} bytes per token ({})\nencoded in {:.3f} s "
                                 "({:.1f} MB/s, one thread)\n",
                                 encode_path, encode_split, bytes.size(), encoded.size(),
                                 encoded.empty() ? 0.0 : static_cast<double>(bytes.size()) / static_cast<double>(encoded.size()),
                                 t.describe(), seconds, static_cast<double>(bytes.size()) / 1e6 / std::max(seconds, 1e-9));
      }
    } else if (decode->parsed()) {
      std::cout << Tokenizer::load(decode_tokenizer).decode(ids, skip_special_tokens) << std::flush;
    } else if (inspect->parsed()) {
      const Tokenizer t = Tokenizer::load(inspect_tokenizer);
      std::cout << fmt::format("{}: {}\nfingerprint: {}\n", inspect_tokenizer, t.describe(), t.fingerprint());
      for (const tessera::data::AddedToken& a : t.added_tokens()) {
        std::string flags;
        for (auto [on, name] : {std::pair{a.lstrip, "lstrip"}, {a.rstrip, "rstrip"}, {a.single_word, "single_word"},
                                {a.normalized, "normalized"}})
          if (on) flags += std::string(" ") + name;
        std::cout << fmt::format("{} token {}: {}{}\n", a.special ? "special" : "added", a.id, a.content,
                                 flags.empty() ? "" : " (" + flags.substr(1) + ")");
      }
      const size_t shown = std::min<size_t>(t.merges().size(), 20);
      for (size_t r = 0; r < shown; ++r)
        std::cout << fmt::format("merge {}: {} {}\n", r, t.token_to_string(t.merges()[r].first),
                                 t.token_to_string(t.merges()[r].second));
      if (t.model() == "WordPiece") {  // the first tokens after the added ones
        std::set<int64_t> added;
        for (const tessera::data::AddedToken& a : t.added_tokens()) added.insert(a.id);
        std::vector<std::string> pieces;
        for (int64_t id = 0; id < t.vocab_size() && pieces.size() < 20; ++id)
          if (added.count(id) == 0) pieces.push_back(t.token_to_string(id));
        std::cout << fmt::format("pieces: {} ...\n", fmt::join(pieces, " "));
      }
    }
    return 0;
  } catch (const tessera::InputError& e) {
    std::cerr << "tessera-tokenizer: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "tessera-tokenizer: " << e.what() << "\n";
    return 1;
  }
}
