// SentencePiece model files read as transformers' SpmConverter converts them (sentencepiece_model.h).
#include "sentencepiece_model.h"

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <tessera/error.h>

#include "precompiled_charsmap.h"

namespace tessera::data::sentencepiece {

namespace {

/// Protobuf's wire format, just what a ModelProto needs: varints, 32-bit values and length-delimited fields.
class Wire {
 public:
  Wire(std::string_view bytes, const std::string& file, const char* message)
      : bytes_(bytes), file_(file), message_(message) {}
  bool done() const { return at_ >= bytes_.size(); }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ >= bytes_.size()) bad("a varint is cut short");
      const auto b = static_cast<unsigned char>(bytes_[at_++]);
      value |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return value;
    }
    bad("a varint is longer than 10 bytes");
  }
  /// The next field's number and wire type.
  std::pair<uint64_t, int> key() {
    const uint64_t k = varint();
    return {k >> 3, static_cast<int>(k & 7)};
  }
  std::string_view bytes(size_t n) {
    if (n > bytes_.size() - at_) bad(fmt::format("a field of {} bytes runs past the end", n));
    const std::string_view out = bytes_.substr(at_, n);
    at_ += n;
    return out;
  }
  std::string_view length_delimited() { return bytes(varint()); }
  float fixed32() {
    const std::string_view b = bytes(4);
    uint32_t u = 0;
    for (int k = 3; k >= 0; --k) u = (u << 8) | static_cast<unsigned char>(b[k]);
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  /// Skips a field of wire type `type` that is not read.
  void skip(int type) {
    if (type == 0) varint();
    else if (type == 1) bytes(8);
    else if (type == 2) length_delimited();
    else if (type == 5) bytes(4);
    else bad(fmt::format("wire type {} (groups or an unknown type)", type));
  }
  [[noreturn]] void bad(const std::string& what) const {
    throw InputError(fmt::format("tokenizer {}: not a SentencePiece model ({} at byte {} of its {}: {})", file_,
                                 message_, at_, bytes_.size(), what));
  }

 private:
  std::string_view bytes_;
  const std::string& file_;
  const char* message_;
  size_t at_ = 0;
};

struct Piece {
  std::string text;
  double score = 0;  ///< the file's float, as Python reads it
  uint64_t type = 1;  ///< NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
};

}  // namespace

nlohmann::json model_to_tokenizer_json(const std::string& bytes, const std::string& file) {
  std::vector<Piece> pieces;
  uint64_t model_type = 1, unk_id = 0;  // the proto's defaults: UNIGRAM, 0
  std::string charsmap;
  Wire model(bytes, file, "ModelProto");
  while (!model.done()) {
    const auto [field, type] = model.key();
    if (field == 1 && type == 2) {  // pieces
      Wire p(model.length_delimited(), file, "SentencePiece");
      Piece piece;
      while (!p.done()) {
        const auto [f, t] = p.key();
        if (f == 1 && t == 2) piece.text = std::string(p.length_delimited());
        else if (f == 2 && t == 5) piece.score = p.fixed32();
        else if (f == 3 && t == 0) piece.type = p.varint();
        else p.skip(t);
      }
      pieces.push_back(std::move(piece));
    } else if (field == 2 && type == 2) {  // trainer_spec
      Wire s(model.length_delimited(), file, "TrainerSpec");
      while (!s.done()) {
        const auto [f, t] = s.key();
        if (f == 3 && t == 0) model_type = s.varint();
        else if (f == 40 && t == 0) unk_id = s.varint();
        else s.skip(t);
      }
    } else if (field == 3 && type == 2) {  // normalizer_spec
      Wire s(model.length_delimited(), file, "NormalizerSpec");
      while (!s.done()) {
        const auto [f, t] = s.key();
        if (f == 2 && t == 2) charsmap = std::string(s.length_delimited());
        else s.skip(t);
      }
    } else {
      model.skip(type);
    }
  }
  if (pieces.empty()) model.bad("it holds no pieces");
  if (model_type != 1)
    throw InputError(fmt::format("tokenizer {}: a SentencePiece {} model; Tessera reads Unigram ones (T5's, "
                                 "XLM-RoBERTa's); convert others to a tokenizer.json with transformers",
                                 file, model_type == 2 ? "BPE" : model_type == 3 ? "word" : "character"));
  nlohmann::json vocab = nlohmann::json::array(), added = nlohmann::json::array();
  for (size_t id = 0; id < pieces.size(); ++id) {
    vocab.push_back({pieces[id].text, pieces[id].score});
    if (pieces[id].type == 3 || pieces[id].type == 4)
      added.push_back({{"id", id}, {"content", pieces[id].text}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", pieces[id].type == 3}});
  }
  nlohmann::json steps = nlohmann::json::array();
  if (!charsmap.empty())
    steps.push_back({{"type", "Precompiled"}, {"precompiled_charsmap", encode_base64(charsmap)}});
  steps.push_back({{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}});
  steps.push_back({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", "\u2581"}});
  const nlohmann::json metaspace = {
      {"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}, {"split", true}};
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", {{"type", "Sequence"}, {"normalizers", steps}}},
          {"pre_tokenizer", metaspace},
          {"post_processor", nullptr},
          {"decoder", metaspace},
          {"model", {{"type", "Unigram"}, {"unk_id", unk_id}, {"vocab", vocab}, {"byte_fallback", false}}}};
}

}  // namespace tessera::data::sentencepiece
