#pragma once
// The text steps of SentencePiece-style tokenizers (Llama 2's and Mistral's BPE over characters, T5's and
// XLM-RoBERTa's Unigram: spaces written as "▁", bytes as <0xXX> tokens) as Hugging Face's tokenizer.json declares
// them: the normalizer (Prepend, Replace, Strip, Precompiled, …), the Metaspace pre-tokenizer (after WhitespaceSplit
// or not), and the decoder (Replace, ByteFallback, Fuse, Strip, Metaspace). Read by src/data/tokenizer.cpp; each step
// does what Hugging Face `tokenizers` does with it.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "normalization.h"

namespace tessera::data {
class SplitRegex;
}

namespace tessera::data::sentencepiece {

class PrecompiledCharsmap;

/// A normalizer step: Prepend (`text` before a non-empty text), Replace (every `from`, or every match of `regex`, by
/// `text`), Strip (the whitespace at the start, the end or both), Precompiled (SentencePiece's character map), a
/// Unicode normal form (NFC, NFD, NFKC, NFKD), StripAccents (the marks removed) or Lowercase.
struct TextStep {
  enum class Kind { prepend, replace, strip, precompiled, normal_form, strip_accents, lowercase };
  Kind kind = Kind::replace;
  unicode::NormalForm form = unicode::NormalForm::nfc;  ///< normal_form
  std::string from, text;
  std::shared_ptr<const SplitRegex> regex;  ///< replace: a {"Regex": …} pattern (then `from` holds its text)
  bool left = false, right = false;         ///< strip
  std::shared_ptr<const PrecompiledCharsmap> charsmap;  ///< precompiled
};

/// The Metaspace pre-tokenizer: spaces become `replacement`, which is put before the text (always, or before the
/// text's first part only, or never) unless it starts with it; with `split`, a piece starts at each replacement.
struct Metaspace {
  enum class Prepend { always, first, never };
  std::string replacement = "\u2581";
  Prepend prepend = Prepend::always;
  bool split = true;
};

/// A decoder step, applied to the tokens' spellings in order.
struct DecodeStep {
  enum class Kind { replace, byte_fallback, fuse, strip, metaspace };
  Kind kind = Kind::fuse;
  std::string from, text;       ///< replace: every `from` by `text`; strip: the character stripped; metaspace: from
  int64_t start = 0, stop = 0;  ///< strip: at most this many from the start and the end of each token
  bool strip_first = false;     ///< metaspace: the first token loses its leading space (prepend scheme not never)
};

/// The parsed steps. Each reader throws InputError "tokenizer FILE: …" naming what it cannot read.
std::vector<TextStep> read_normalizer(const nlohmann::json& normalizer, const std::string& file);
Metaspace read_metaspace(const nlohmann::json& pre_tokenizer, const std::string& file);
std::vector<DecodeStep> read_decoder(const nlohmann::json& decoder, const std::string& file);

/// `text` after the normalizer's steps.
std::string normalize(std::string_view text, const std::vector<TextStep>& steps);
/// The pieces WhitespaceSplit cuts `text` into: the runs between whitespace (Unicode's White_Space), which is dropped.
/// Views into `text`.
std::vector<std::string_view> whitespace_split(std::string_view text);
/// The pieces Metaspace makes of `text` (`first`: the text's first part, where Prepend::first puts the replacement).
std::vector<std::string> pre_tokenize(std::string_view text, const Metaspace& metaspace, bool first);
/// The tokens' spellings after the decoder's steps, concatenated. ByteFallback turns each run of <0xXX> tokens into
/// its bytes, or one U+FFFD per byte where they are not valid UTF-8.
std::string decode(std::vector<std::string> tokens, const std::vector<DecodeStep>& steps);
/// The byte a <0xXX> token stands for, or -1 for another token.
int byte_of_token(std::string_view token);

}  // namespace tessera::data::sentencepiece
