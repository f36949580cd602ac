// SentencePiece's Unigram model, as Hugging Face's Unigram encodes (unigram.h).
#include "unigram.h"

#include <algorithm>

#include <fmt/format.h>

#include <tessera/error.h>

#include "unicode.h"

namespace tessera::data::unigram {

Model::Model(const std::vector<std::string>& pieces, std::vector<double> scores, int64_t unk_id, bool byte_fallback)
    : scores_(std::move(scores)), unk_id_(unk_id), byte_fallback_(byte_fallback) {
  // Hugging Face: the unknown token scores 10 below the lowest score of the vocabulary.
  const double lowest = scores_.empty() ? 0.0 : *std::min_element(scores_.begin(), scores_.end());
  unk_score_ = lowest - 10.0;
  // The trie: the pieces in byte order (equal ones by id); each node's children are made together, so they are
  // consecutive. An empty piece is never matched, as in Hugging Face's trie.
  std::vector<int64_t> order;
  for (size_t id = 0; id < pieces.size(); ++id)
    if (!pieces[id].empty()) order.push_back(static_cast<int64_t>(id));
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return pieces[a] != pieces[b] ? pieces[a] < pieces[b] : a < b; });
  trie_.emplace_back();
  struct Span {
    uint32_t node;
    size_t lo, hi, depth;  ///< the pieces order[lo, hi) share their first `depth` bytes, the path to `node`
  };
  std::vector<Span> todo{{0, 0, order.size(), 0}};
  while (!todo.empty()) {
    Span s = todo.back();
    todo.pop_back();
    while (s.lo < s.hi && pieces[order[s.lo]].size() == s.depth) trie_[s.node].id = order[s.lo++];  // the last id
    trie_[s.node].first_child = static_cast<uint32_t>(trie_.size());
    for (size_t lo = s.lo; lo < s.hi;) {
      const auto byte = static_cast<unsigned char>(pieces[order[lo]][s.depth]);
      size_t hi = lo;
      while (hi < s.hi && static_cast<unsigned char>(pieces[order[hi]][s.depth]) == byte) ++hi;
      Node child;
      child.byte = byte;
      todo.push_back({static_cast<uint32_t>(trie_.size()), lo, hi, s.depth + 1});
      trie_.push_back(child);
      ++trie_[s.node].children;
      lo = hi;
    }
  }
  for (int b = 0; b < 256; ++b) byte_id_[b] = find(fmt::format("<0x{:02X}>", b));
}

int64_t Model::find(std::string_view text) const {
  uint32_t node = 0;
  for (const char c : text)
    if ((node = child(node, static_cast<unsigned char>(c))) == 0) return -1;
  return text.empty() ? -1 : trie_[node].id;
}

uint32_t Model::child(uint32_t node, unsigned char byte) const {
  const Node& n = trie_[node];
  const auto begin = trie_.begin() + n.first_child, end = begin + n.children;
  const auto it = std::lower_bound(begin, end, byte, [](const Node& c, unsigned char b) { return c.byte < b; });
  return it != end && it->byte == byte ? static_cast<uint32_t>(it - trie_.begin()) : 0;
}

void Model::encode(std::string_view word, std::vector<int64_t>& out) const {
  struct Best {
    double score = 0;
    int64_t id = 0;
    int64_t start = -1;  ///< where the best path's last piece starts; -1: no path ends here yet
  };
  std::vector<Best> best(word.size() + 1);
  for (size_t start = 0; start < word.size();) {
    const size_t length = std::max<size_t>(unicode::decode_utf8(word, start).second, 1);  // a stray byte: a character
    const double before = best[start].score;
    bool single = false;  // a piece is this one character
    const auto offer = [&](size_t end, int64_t id, double score) {
      Best& b = best[end];
      if (b.start >= 0 && !(score + before > b.score)) return;
      if (id < 0)
        throw InputError(fmt::format("tokenizer: Unigram has no piece for \"{}\" and no unknown token (model.unk_id "
                                     "is null)",
                                     word.substr(start, length)));
      b = {score + before, id, static_cast<int64_t>(start)};
    };
    for (size_t end = start, node = 0; end < word.size();) {
      node = child(static_cast<uint32_t>(node), static_cast<unsigned char>(word[end++]));
      if (node == 0) break;
      const int64_t id = trie_[node].id;
      if (id < 0) continue;
      offer(end, id, scores_[id]);
      single = single || end - start == length;
    }
    if (!single) offer(start + length, unk_id_, unk_score_);
    start += length;
  }
  // Back from the end; consecutive unknown tokens (any node with the unknown token's id) are one piece.
  struct Piece {
    size_t start, end;
    int64_t id;  ///< -1: a run of unknown tokens
  };
  std::vector<Piece> pieces;  // last first
  for (size_t end = word.size(); end > 0;) {
    const Best& b = best[end];
    const auto start = static_cast<size_t>(b.start);
    const bool unknown = unk_id_ >= 0 && b.id == unk_id_;
    if (unknown && !pieces.empty() && pieces.back().id == -1 && pieces.back().start == end) pieces.back().start = start;
    else pieces.push_back({start, end, unknown ? -1 : b.id});
    end = start;
  }
  for (auto p = pieces.rbegin(); p != pieces.rend(); ++p) {
    if (p->id >= 0) {
      out.push_back(p->id);
      continue;
    }
    // Hugging Face looks a run's text up: a piece of the vocabulary, else (byte_fallback) its bytes' tokens when the
    // vocabulary has them all, else the unknown token.
    const std::string_view run = word.substr(p->start, p->end - p->start);
    if (const int64_t id = find(run); id >= 0) {
      out.push_back(id);
    } else if (byte_fallback_ && std::all_of(run.begin(), run.end(), [&](char c) {
                 return byte_id_[static_cast<unsigned char>(c)] >= 0;
               })) {
      for (const char c : run) out.push_back(byte_id_[static_cast<unsigned char>(c)]);
    } else {
      out.push_back(unk_id_);
    }
  }
}

}  // namespace tessera::data::unigram
