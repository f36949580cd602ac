// Small text files for tests that train language models on text (the `text` dataset's `path`) and text classifiers
// (the `text_classification` dataset's).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>
#include <tessera/data/tokenizer.h>

namespace tessera::testing {

/// A text file of 4 KB (a pattern of lowercase words) under the temp folder, written once per test binary.
inline const std::string& small_text_file() {
  static const std::string path = [] {
    const auto p =
        std::filesystem::temp_directory_path() / ("tessera_small_text_" + std::to_string(::getpid()) + ".txt");
    std::ofstream out(p);
    for (int i = 0; out.tellp() < 4096; ++i) out << "the quick brown fox " << (i % 7 == 0 ? "jumps\n" : "runs ");
    return p.string();
  }();
  return path;
}

/// A byte-level BPE tokenizer of 264 tokens (<|endoftext|>, the bytes, 7 merges; template "$A <|endoftext|>")
/// trained on small_text_file(), saved under the temp folder once per test binary (the `text` dataset's `tokenizer`).
inline const std::string& small_text_tokenizer() {
  static const std::string path = [] {
    std::ifstream in(small_text_file());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto p =
        std::filesystem::temp_directory_path() / ("tessera_small_tokenizer_" + std::to_string(::getpid()) + ".json");
    data::Tokenizer::train({text}, data::TokenizerTrainOptions().vocab_size(264).special_tokens({"<|endoftext|>"}).single_template(
        "$A <|endoftext|>")).save(p.string());
    return p.string();
  }();
  return path;
}

/// A WordPiece tokenizer as BERT's (uncased BertNormalizer, BertPreTokenizer, BertProcessing [CLS] $A [SEP], the
/// WordPiece decoder) of 64 tokens for small_text_file(): the 5 special tokens, 5 of its words, "ju" "##mps", the
/// letters and the letters after "##"; saved under the temp folder once per test binary.
inline const std::string& small_text_wordpiece() {
  static const std::string path = [] {
    std::vector<std::string> tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown",
                                       "fox",   "runs",  "ju",    "##mps"};
    for (char c = 'a'; c <= 'z'; ++c) tokens.emplace_back(1, c);
    for (char c = 'a'; c <= 'z'; ++c) tokens.push_back(std::string("##") + c);
    nlohmann::json vocab = nlohmann::json::object(), added = nlohmann::json::array();
    for (size_t id = 0; id < tokens.size(); ++id) vocab[tokens[id]] = id;
    for (size_t id = 0; id < 5; ++id) added.push_back({{"id", id}, {"content", tokens[id]}, {"special", true}});
    const nlohmann::json doc = {
        {"added_tokens", added},
        {"normalizer", {{"type", "BertNormalizer"}, {"lowercase", true}}},
        {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
        {"post_processor", {{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"[CLS]", 2}}}},
        {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
        {"model", {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"vocab", vocab}}}};
    const auto p =
        std::filesystem::temp_directory_path() / ("tessera_small_wordpiece_" + std::to_string(::getpid()) + ".json");
    std::ofstream(p) << doc.dump();
    return p.string();
  }();
  return path;
}

/// A file of 120 labelled texts (the `text_classification` dataset's `path`): lines of small_text_file()'s words,
/// labelled "odd" or "even" by the count of their words, written once per test binary.
inline const std::string& small_labelled_text_file() {
  static const std::string path = [] {
    const auto p =
        std::filesystem::temp_directory_path() / ("tessera_small_labels_" + std::to_string(::getpid()) + ".tsv");
    std::ofstream out(p);
    const char* words[] = {"the", "quick", "brown", "fox", "jumps", "runs"};
    for (int i = 0; i < 120; ++i) {
      const int count = 1 + i % 5;
      out << (count % 2 == 0 ? "even" : "odd") << '\t';
      for (int w = 0; w < count; ++w) out << (w ? " " : "") << words[(i + w) % 6];
      out << '\n';
    }
    return p.string();
  }();
  return path;
}

}  // namespace tessera::testing
