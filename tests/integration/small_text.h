// Small text files for tests that train language models on text (the `text` dataset's `path`) and text classifiers
// (the `text_classification` dataset's).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <tessera/data/tokenizer.h>

namespace tessera::testing {

/// A path under the temp folder named after `stem` and this process: each test binary writes its own files.
inline std::string per_process_path(const std::string& stem, const std::string& extension) {
  return (std::filesystem::temp_directory_path() / (stem + std::to_string(::getpid()) + extension)).string();
}

/// Writes `doc` (a tokenizer.json) to per_process_path(stem, ".json"); returns the path.
inline std::string write_per_process(const std::string& stem, const nlohmann::json& doc) {
  const std::string path = per_process_path(stem, ".json");
  std::ofstream(path) << doc.dump();
  return path;
}

/// A text file of 4 KB (a pattern of lowercase words) under the temp folder, written once per test binary.
inline const std::string& small_text_file() {
  static const std::string path = [] {
    const std::string p = per_process_path("tessera_small_text_", ".txt");
    std::ofstream out(p);
    for (int i = 0; out.tellp() < 4096; ++i) out << "the quick brown fox " << (i % 7 == 0 ? "jumps\n" : "runs ");
    return p;
  }();
  return path;
}

/// small_text_file()'s text.
inline std::string small_text() {
  std::ifstream in(small_text_file());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A byte-level BPE tokenizer of 264 tokens (<|endoftext|>, the bytes, 7 merges; template "$A <|endoftext|>")
/// trained on small_text_file(), saved under the temp folder once per test binary (the `text` dataset's `tokenizer`).
inline const std::string& small_text_tokenizer() {
  static const std::string path = [] {
    const std::string text = small_text();
    const std::string p = per_process_path("tessera_small_tokenizer_", ".json");
    data::Tokenizer::train({text}, data::TokenizerTrainOptions().vocab_size(264).special_tokens({"<|endoftext|>"}).single_template(
        "$A <|endoftext|>")).save(p);
    return p;
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
    return write_per_process("tessera_small_wordpiece_", doc);
  }();
  return path;
}

/// A byte-level BPE tokenizer of 280 tokens with Llama 3's pattern and ignore_merges (<|endoftext|>, the bytes, 23
/// merges; template "$A <|endoftext|>") trained on small_text_file(), saved under the temp folder once per test binary.
inline const std::string& small_text_llama3() {
  static const std::string path = [] {
    const std::string text = small_text();
    nlohmann::json doc = nlohmann::json::parse(
        data::Tokenizer::train({text}, data::TokenizerTrainOptions().vocab_size(280).pattern("llama3")
                                           .special_tokens({"<|endoftext|>"}).single_template("$A <|endoftext|>"))
            .to_json());
    doc["model"]["ignore_merges"] = true;
    return write_per_process("tessera_small_llama3_", doc);
  }();
  return path;
}

/// A byte-level BPE tokenizer of 280 tokens with GPT-4o's pattern (cut by the regex engine) after an NFC normalizer
/// (<|endoftext|>, the bytes, the merges; template "$A <|endoftext|>") trained on small_text_file(), saved under the
/// temp folder once per test binary.
inline const std::string& small_text_o200k() {
  static const std::string path = [] {
    return write_per_process(
        "tessera_small_o200k_",
        nlohmann::json::parse(data::Tokenizer::train({small_text()}, data::TokenizerTrainOptions()
                                                                         .vocab_size(280)
                                                                         .pattern("o200k")
                                                                         .normalizer("nfc")
                                                                         .special_tokens({"<|endoftext|>"})
                                                                         .single_template("$A <|endoftext|>"))
                                  .to_json()));
  }();
  return path;
}

/// A SentencePiece-style BPE tokenizer as Llama 2's (normalizer Prepend "▁" then Replace " " by "▁", byte fallback,
/// decoder Replace, ByteFallback, Fuse, Strip; template "<s> $A </s>") for small_text_file(): <unk> <s> </s>, the 256
/// <0xXX> tokens, "▁", the lowercase letters but z, and the merges that make "▁" + each of its words; saved under the
/// temp folder once per test binary.
inline const std::string& small_text_sentencepiece() {
  static const std::string path = [] {
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    for (int b = 0; b < 256; ++b) {
      static const char* hex = "0123456789ABCDEF";
      tokens.push_back(std::string("<0x") + hex[b / 16] + hex[b % 16] + ">");
    }
    const std::string space = "\u2581";
    tokens.push_back(space);
    for (char c = 'a'; c < 'z'; ++c) tokens.emplace_back(1, c);
    nlohmann::json merges = nlohmann::json::array();
    for (const std::string word : {"the", "quick", "brown", "fox", "runs", "jumps"}) {
      std::string made = space;
      for (char c : word) {
        const std::string next = made + c;
        if (std::find(tokens.begin(), tokens.end(), next) == tokens.end()) {
          merges.push_back({made, std::string(1, c)});
          tokens.push_back(next);
        }
        made = next;
      }
    }
    nlohmann::json vocab = nlohmann::json::object(), added = nlohmann::json::array();
    for (size_t id = 0; id < tokens.size(); ++id) vocab[tokens[id]] = id;
    for (size_t id = 0; id < 3; ++id) added.push_back({{"id", id}, {"content", tokens[id]}, {"special", true}});
    const auto replace = [](const std::string& from, const std::string& to) {
      return nlohmann::json{{"type", "Replace"}, {"pattern", {{"String", from}}}, {"content", to}};
    };
    const auto special = [](const char* name, int id) {
      return nlohmann::json{{name, {{"id", name}, {"ids", {id}}, {"tokens", {name}}}}};
    };
    nlohmann::json tokens_of = special("<s>", 1);
    tokens_of.update(special("</s>", 2));
    const nlohmann::json doc = {
        {"added_tokens", added},
        {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", space}}, replace(" ", space)}}}},
        {"pre_tokenizer", nullptr},
        {"post_processor",
         {{"type", "TemplateProcessing"},
          {"single",
           {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
            {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
          {"special_tokens", tokens_of}}},
        {"decoder",
         {{"type", "Sequence"},
          {"decoders",
           {replace(space, " "), {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
            {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
        {"model",
         {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true}, {"vocab", vocab},
          {"merges", merges}}}};
    return write_per_process("tessera_small_sentencepiece_", doc);
  }();
  return path;
}

/// A Unigram tokenizer as T5's (normalizer Strip then Replace " {2,}" by "▁", Metaspace, template "$A </s>") for
/// small_text_file(): <pad> </s> <unk>, "▁", the lowercase letters but z, "▁the", "▁fox", "qu" and "ick": "the" and
/// "fox" are one piece, "quick" three (▁ qu ick), the other words "▁" and their letters; saved under the temp folder
/// once per test binary.
inline const std::string& small_text_unigram() {
  static const std::string path = [] {
    nlohmann::json vocab = nlohmann::json::array({{"<pad>", 0.0}, {"</s>", 0.0}, {"<unk>", 0.0}, {"\u2581", -3.0}});
    for (char c = 'a'; c < 'z'; ++c) vocab.push_back({std::string(1, c), -5.0});
    for (const char* word : {"the", "fox"}) vocab.push_back({std::string("\u2581") + word, -1.0});
    vocab.push_back({"qu", -2.0});
    vocab.push_back({"ick", -2.0});
    nlohmann::json added = nlohmann::json::array();
    for (size_t id = 0; id < 3; ++id) added.push_back({{"id", id}, {"content", vocab[id][0]}, {"special", true}});
    const nlohmann::json metaspace = {
        {"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}, {"split", true}};
    const nlohmann::json doc = {
        {"added_tokens", added},
        {"normalizer",
         {{"type", "Sequence"},
          {"normalizers",
           {{{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}},
            {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", "\u2581"}}}}}},
        {"pre_tokenizer", metaspace},
        {"post_processor",
         {{"type", "TemplateProcessing"},
          {"single",
           {{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
          {"special_tokens", {{"</s>", {{"id", "</s>"}, {"ids", {1}}, {"tokens", {"</s>"}}}}}}}},
        {"decoder", metaspace},
        {"model", {{"type", "Unigram"}, {"unk_id", 2}, {"vocab", vocab}, {"byte_fallback", false}}}};
    return write_per_process("tessera_small_unigram_", doc);
  }();
  return path;
}

/// A file of 120 labelled texts (the `text_classification` dataset's `path`): lines of small_text_file()'s words,
/// labelled "odd" or "even" by the count of their words, written once per test binary.
inline const std::string& small_labelled_text_file() {
  static const std::string path = [] {
    const std::string p = per_process_path("tessera_small_labels_", ".tsv");
    std::ofstream out(p);
    const char* words[] = {"the", "quick", "brown", "fox", "jumps", "runs"};
    for (int i = 0; i < 120; ++i) {
      const int count = 1 + i % 5;
      out << (count % 2 == 0 ? "even" : "odd") << '\t';
      for (int w = 0; w < count; ++w) out << (w ? " " : "") << words[(i + w) % 6];
      out << '\n';
    }
    return p;
  }();
  return path;
}

}  // namespace tessera::testing
