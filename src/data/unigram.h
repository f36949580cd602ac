#pragma once
// The Unigram model of SentencePiece's tokenizers (T5's, mT5's, XLM-RoBERTa's, ALBERT's, as Hugging Face converts
// them): each piece of the vocabulary has a score (its log probability), and a word is cut into the pieces of the
// highest total score (Viterbi over the word's characters), as Hugging Face's Unigram::encode cuts it: candidates
// tried from each character left to right, the pieces that start there shortest first, ties kept by the first one
// found; a character no piece starts with is the unknown token, scored 10 below the lowest score of the vocabulary,
// and consecutive unknown ones are one. A run of unknown characters becomes its bytes' <0xXX> tokens with
// byte_fallback (when the vocabulary has all of them), else the unknown token. Used by src/data/tokenizer.cpp.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::data::unigram {

class Model {
 public:
  /// `pieces` and `scores` by id; `unk_id` -1 for none. The caller checks the ids (unk_id < pieces.size()).
  Model(const std::vector<std::string>& pieces, std::vector<double> scores, int64_t unk_id, bool byte_fallback);
  /// Appends the ids of `word` (normalized and pre-tokenized already). InputError when a character has no piece and
  /// there is no unknown token (Hugging Face: "Encountered an unknown token but `unk_id` is missing").
  void encode(std::string_view word, std::vector<int64_t>& out) const;

  /// The pieces' scores, by id.
  const std::vector<double>& scores() const noexcept { return scores_; }

 private:
  /// A trie of the pieces' bytes: node 0 is the root; a node's children are consecutive, sorted by byte.
  struct Node {
    uint32_t first_child = 0, children = 0;
    int64_t id = -1;  ///< the piece ending here (the last of equal pieces, as Hugging Face's map keeps it), or -1
    unsigned char byte = 0;
  };
  /// The child of `node` reached by `byte`, or 0.
  uint32_t child(uint32_t node, unsigned char byte) const;
  /// The id of the piece `text` (the last of equal pieces), or -1.
  int64_t find(std::string_view text) const;

  std::vector<Node> trie_;
  std::vector<double> scores_;
  int64_t unk_id_ = -1;
  double unk_score_ = 0;
  bool byte_fallback_ = false;
  int64_t byte_id_[256];  ///< the id of <0xXX>, or -1
};

}  // namespace tessera::data::unigram
