// Byte-level BPE tokenizers (include/tessera/data/tokenizer.h): GPT-2's pre-tokenization, Hugging Face's merge
// order when encoding and when training, and its tokenizer.json format; WordPiece tokenizers read from it (BERT's
// normalizer and pre-tokenizer: bert_text.cpp).
#include <tessera/data/tokenizer.h>

#include <algorithm>
#include <cctype>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <tessera/error.h>

#include "../checkpoint/checkpoint_file.h"
#include "bert_text.h"
#include "normalization.h"
#include "sentencepiece_model.h"
#include "sentencepiece_text.h"
#include "split_regex.h"
#include "unicode.h"
#include "unigram.h"

namespace tessera::data {

namespace detail {
/// A WordPiece tokenizer.json's model, normalizer and decoder.
struct WordPieceModel {
  std::optional<bert::Normalizer> normalizer;  ///< none: the text as it is
  bool strip_accents_given = false;            ///< BertNormalizer's strip_accents was a boolean (else null: lowercase)
  std::string unk_token = "[UNK]";
  int64_t unk_id = -1;
  std::string prefix = "##";            ///< continuing_subword_prefix
  int64_t max_chars = 100;              ///< max_input_chars_per_word
  std::optional<std::string> decoder_prefix;  ///< the WordPiece decoder's prefix; none: tokens joined by " "
  bool cleanup = true;                  ///< the decoder's cleanup
  std::unordered_map<std::string, int64_t> id_of;  ///< the model's vocabulary: spelling -> id
};

/// A SentencePiece-style BPE tokenizer.json's normalizer, pre-tokenizer, decoder and model settings: BPE over the
/// characters of the text (Llama 2's, Mistral's), not over its bytes.
struct SentencePieceModel {
  std::vector<sentencepiece::TextStep> normalizer;
  bool whitespace_split = false;  ///< WhitespaceSplit before Metaspace (older files): cut at whitespace, dropped
  std::optional<sentencepiece::Metaspace> metaspace;  ///< none: the whole text (or piece) is one word
  std::vector<sentencepiece::DecodeStep> decoder;
  std::string normalizer_json = "null", pre_tokenizer_json = "null", decoder_json = "null";  ///< as read
  bool byte_fallback = false;  ///< a character not in the vocabulary is its bytes' <0xXX> tokens
  bool fuse_unk = false;       ///< consecutive unknown characters are one unknown token
  std::optional<std::string> unk_token;
  int64_t unk_id = -1;
  std::unordered_map<std::string, int64_t> id_of;  ///< the model's vocabulary: spelling -> id
  int64_t byte_id[256];                            ///< the id of <0xXX>, or -1
  /// What a space becomes ("▁"), when no token of the vocabulary holds it after another character (SentencePiece
  /// trained on words): then no merge joins a character to a "▁" after it, and a text cut before each such "▁"
  /// encodes piece by piece, each piece cached, to the same ids as in one go. Empty: the text is encoded whole.
  std::string cut_before;
  /// Set for a Unigram model (T5's, XLM-RoBERTa's): each word cut into the pieces of the highest total score, not
  /// merged (byte_fallback, unk_id and unk_token then as its tokenizer.json gives them; fuse_unk unused).
  std::shared_ptr<const unigram::Model> unigram;
};
/// A byte-level BPE tokenizer's text steps before its bytes are merged: a Unicode normalization, Split
/// pre-tokenizers one after the other (each cutting the pieces of the one before), then ByteLevel, which cuts each
/// piece by GPT-2's pattern or not. Without one (Tokenizer::pre_ null): GPT-2's pattern alone.
struct PreTokenizer {
  struct Split {
    std::string pattern;   ///< the regex, or the text of a {"String": …} pattern
    bool literal = false;  ///< a {"String": …} pattern: its occurrences are the matches
    SplitBehavior behavior = SplitBehavior::isolated;
    bool invert = false;
    std::optional<Pattern> hand_written;      ///< a named pattern's regex, Isolated, not inverted: cut by hand
    std::shared_ptr<const SplitRegex> regex;  ///< else the regex, compiled
  };
  std::optional<unicode::NormalForm> normalizer;
  std::vector<Split> splits;
  bool byte_level_regex = true;  ///< ByteLevel's use_regex: GPT-2's pattern cuts each piece
};
}  // namespace detail

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using unicode::append_utf8;
using unicode::CodeClass;
using unicode::CodeFold;
using unicode::CodeMapping;
using unicode::CodeRange;
using unicode::decode_utf8;
using unicode::in_ranges;
using unicode::is_space;
using unicode::valid_utf8;
#include "unicode_classes.inc"

enum class Class { letter, number, space, other };

/// One character of `s` at byte `i`: its length in bytes and class. A byte that does not start a valid UTF-8
/// character (overlong, surrogate, beyond U+10FFFF, cut short) is one character of class `other`.
struct Char {
  size_t size;
  Class cls;
};

Char char_at(std::string_view s, size_t i) {
  const auto [cp, n] = decode_utf8(s, i);
  if (n == 0) return {1, Class::other};
  if (is_space(cp)) return {n, Class::space};
  if (in_ranges(cp, std::begin(kLetters), std::end(kLetters))) return {n, Class::letter};
  if (in_ranges(cp, std::begin(kNumbers), std::end(kNumbers))) return {n, Class::number};
  return {n, Class::other};
}

/// The end of the run of characters of class `cls` starting at `i`.
size_t run_end(std::string_view s, size_t i, Class cls) {
  while (i < s.size()) {
    const Char c = char_at(s, i);
    if (c.cls != cls) break;
    i += c.size;
  }
  return i;
}

/// Bytes of the contraction ('s 't 're 've 'm 'll 'd) at `i`, or 0. With `any_case`, as a case-insensitive regex
/// matches them: each letter in either case, and U+017F (long s, whose case folding is s) for s.
size_t contraction_at(std::string_view s, size_t i, bool any_case) {
  if (s[i] != '\'' || i + 1 >= s.size()) return 0;
  const auto lower = [&](size_t k) {
    const char c = s[k];
    return any_case && c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  };
  const char c = lower(i + 1);
  if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
  if (any_case && s.compare(i + 1, 2, "\xC5\xBF") == 0) return 3;  // 'ſ
  if (i + 2 >= s.size()) return 0;
  const char d = lower(i + 2);
  return (c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l') ? 3 : 0;
}

/// The end of the pattern's `\s+(?!\S)|\s+` at `i` (a space): the run of spaces, less its last character when
/// something follows and the run has two or more.
size_t spaces_end(std::string_view s, size_t i) {
  const size_t end = run_end(s, i, Class::space);
  if (end == s.size()) return end;
  size_t last = i, k = i;
  while (k < end) last = k, k += char_at(s, k).size;
  return last > i ? last : end;
}

/// Bytes of the piece GPT-2's pattern matches at `i` (its alternatives tried in order, each greedy).
size_t gpt2_piece_at(std::string_view s, size_t i) {
  if (const size_t n = contraction_at(s, i, false)) return n;
  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional space, then a run of one class.
  const size_t start = s[i] == ' ' ? i + 1 : i;
  if (start < s.size()) {
    const Class cls = char_at(s, start).cls;
    if (cls != Class::space) return run_end(s, start, cls) - i;
  }
  return spaces_end(s, i) - i;
}

bool is_line_break(char c) { return c == '\r' || c == '\n'; }

/// Bytes of the piece Llama 3's pattern matches at `i`, its alternatives tried in order:
/// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
/// With `digits` 1, Qwen2's (\p{N} for \p{N}{1,3}).
size_t llama3_piece_at(std::string_view s, size_t i, int digits) {
  if (const size_t n = contraction_at(s, i, true)) return n;
  const Char c = char_at(s, i);
  // [^\r\n\p{L}\p{N}]?\p{L}+: letters, with one character before them that is no line break, letter or number.
  if (c.cls == Class::letter) return run_end(s, i, Class::letter) - i;
  const size_t next = i + c.size;
  if (!is_line_break(s[i]) && c.cls != Class::number && next < s.size() && char_at(s, next).cls == Class::letter)
    return run_end(s, next, Class::letter) - i;
  if (c.cls == Class::number) {  // \p{N}{1,3}
    size_t end = next;
    for (int taken = 1; taken < digits && end < s.size(); ++taken) {
      const Char d = char_at(s, end);
      if (d.cls != Class::number) break;
      end += d.size;
    }
    return end - i;
  }
  // " ?[^\s\p{L}\p{N}]+[\r\n]*": punctuation and the like, with the line breaks right after it.
  const size_t start = s[i] == ' ' ? i + 1 : i;
  if (start < s.size() && char_at(s, start).cls == Class::other) {
    size_t end = run_end(s, start, Class::other);
    while (end < s.size() && is_line_break(s[end])) ++end;
    return end - i;
  }
  // "\s*[\r\n]+": spaces up to the last line break of their run (c is a space here).
  const size_t end = run_end(s, i, Class::space);
  for (size_t k = end; k > i; --k)
    if (is_line_break(s[k - 1])) return k - i;
  return spaces_end(s, i) - i;
}

/// The regex of each named pattern, as tokenizer.json holds it (GPT-2's in ByteLevel, the others in a Split).
constexpr const char* kGpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kO200kRegex =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr Pattern kNamed[] = {Pattern::gpt2, Pattern::llama3, Pattern::qwen2, Pattern::o200k};

/// Appends the pieces a named pattern cuts `text` into: by hand (GPT-2's, Llama 3's, Qwen2's) or by its regex.
void cut_by(Pattern pattern, std::string_view text, std::vector<std::string_view>& out) {
  if (pattern == Pattern::o200k) {
    static const SplitRegex o200k(kO200kRegex);
    for (std::string_view piece : split_pieces(text, o200k.matches(text), SplitBehavior::isolated, false))
      out.push_back(piece);
    return;
  }
  for (size_t i = 0; i < text.size();) {
    const size_t n = pattern == Pattern::gpt2 ? gpt2_piece_at(text, i)
                                              : llama3_piece_at(text, i, pattern == Pattern::qwen2 ? 1 : 3);
    out.push_back(text.substr(i, n));
    i += n;
  }
}

/// The [start, end) of each occurrence of `text` in `s`, left to right, not overlapping (a Split's String pattern).
std::vector<std::pair<size_t, size_t>> occurrences(std::string_view s, std::string_view text) {
  std::vector<std::pair<size_t, size_t>> out;
  if (text.empty()) return out;
  for (size_t at = s.find(text); at != std::string_view::npos; at = s.find(text, at + text.size()))
    out.emplace_back(at, at + text.size());
  return out;
}

/// The pieces a byte-level BPE tokenizer's pre-tokenizer cuts `text` (normalized already) into, appended to `out`.
void cut_pieces(const detail::PreTokenizer& pre, std::string_view text, std::vector<std::string_view>& out) {
  std::vector<std::string_view> pieces{text}, next;
  for (const detail::PreTokenizer::Split& split : pre.splits) {
    next.clear();
    for (std::string_view piece : pieces) {
      if (split.hand_written) {
        cut_by(*split.hand_written, piece, next);
        continue;
      }
      const auto matches = split.literal ? occurrences(piece, split.pattern) : split.regex->matches(piece);
      for (std::string_view p : split_pieces(piece, matches, split.behavior, split.invert)) next.push_back(p);
    }
    std::swap(pieces, next);
  }
  for (std::string_view piece : pieces) {
    if (pre.byte_level_regex) cut_by(Pattern::gpt2, piece, out);
    else out.push_back(piece);
  }
}

/// GPT-2's byte-level characters: printable Latin-1 bytes stand for themselves, the other bytes for U+0100 onwards.
struct ByteLevel {
  uint32_t char_of[256];
  int16_t byte_of[512];
  ByteLevel() {
    std::fill(std::begin(byte_of), std::end(byte_of), int16_t{-1});
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char_of[b] = printable ? static_cast<uint32_t>(b) : next++;
      byte_of[char_of[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteLevel& byte_level_table() {
  static const ByteLevel table;
  return table;
}

std::string spell(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) append_utf8(out, byte_level_table().char_of[b]);
  return out;
}

/// The bytes a byte-level spelling stands for, or false when a character is not one of the 256.
bool unspell(std::string_view spelling, std::string& bytes) {
  bytes.clear();
  for (size_t i = 0; i < spelling.size();) {
    const auto [cp, n] = decode_utf8(spelling, i);
    if (n == 0 || cp >= 512 || byte_level_table().byte_of[cp] < 0) return false;
    bytes += static_cast<char>(byte_level_table().byte_of[cp]);
    i += n;
  }
  return true;
}

uint64_t pair_key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

/// Whether the character ending just before byte `i` of `s` is a word character (Unicode's \w; a byte that ends no
/// valid UTF-8 character is not).
bool word_char_before(std::string_view s, size_t i) {
  for (size_t n = 1; n <= 4 && n <= i; ++n) {
    const auto [cp, size] = decode_utf8(s, i - n);
    if (size == n) return in_ranges(cp, std::begin(kWordChars), std::end(kWordChars));
  }
  return false;
}

bool word_char_at(std::string_view s, size_t i) {
  if (i >= s.size()) return false;
  const auto [cp, size] = decode_utf8(s, i);
  return size > 0 && in_ranges(cp, std::begin(kWordChars), std::end(kWordChars));
}

/// Where the run of whitespace ending at byte `i` of `s` starts.
size_t space_run_before(std::string_view s, size_t i) {
  for (bool moved = true; moved && i > 0;) {
    moved = false;
    for (size_t n = 1; n <= 4 && n <= i; ++n) {
      const auto [cp, size] = decode_utf8(s, i - n);
      if (size != n) continue;
      if (is_space(cp)) i -= n, moved = true;
      break;
    }
  }
  return i;
}

// ---- training (Hugging Face's BpeTrainer, same merge order) ----

/// One adjacent pair's count and the words it was seen in, as queued by the trainer.
struct QueuedPair {
  int64_t count;
  uint64_t pair;
  std::vector<int32_t> words;
};
/// Heap order: the highest count first, then the pair of smallest (left, right) ids.
bool lower_priority(const QueuedPair& x, const QueuedPair& y) {
  return x.count != y.count ? x.count < y.count : x.pair > y.pair;
}

/// Merges every non-overlapping (a, b) of `word`, left to right, into `merged`; returns the pair count changes,
/// as Hugging Face's Word::merge does (the pairs around each merge lose one, the pairs with `merged` gain one).
std::vector<std::pair<uint64_t, int>> merge_word(std::vector<int64_t>& word, int64_t a, int64_t b, int64_t merged) {
  std::vector<std::pair<uint64_t, int>> changes;
  for (size_t i = 0; i < word.size(); ++i) {
    if (word[i] != a || i + 1 >= word.size() || word[i + 1] != b) continue;
    if (i > 0) {
      changes.emplace_back(pair_key(word[i - 1], a), -1);
      changes.emplace_back(pair_key(word[i - 1], merged), 1);
    }
    word[i] = merged;
    word.erase(word.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    if (i + 1 < word.size()) {
      changes.emplace_back(pair_key(b, word[i + 1]), -1);
      changes.emplace_back(pair_key(merged, word[i + 1]), 1);
    }
  }
  return changes;
}

[[noreturn]] void bad_file(const std::string& file, const std::string& what) {
  throw InputError("tokenizer " + file + ": " + what);
}

std::string read_whole(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) bad_file(file, "cannot open it");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) bad_file(file, "cannot read it");
  return buf.str();
}

json parse_json(const std::string& file) {
  try {
    return json::parse(read_whole(file));
  } catch (const json::exception& e) {
    bad_file(file, std::string("not valid JSON (") + e.what() + ")");
  }
}

/// A vocabulary and merges as spelt in tokenizer.json or vocab.json + merges.txt, before checking.
struct Spelt {
  std::map<int64_t, std::string> vocab;                       ///< id -> spelling
  std::vector<std::pair<std::string, std::string>> merges;    ///< in rank order
  std::vector<AddedToken> added;
  bool add_prefix_space = false;
  std::shared_ptr<detail::PreTokenizer> pre;  ///< byte-level BPE's normalizer and Splits (null: GPT-2's pattern)
  bool ignore_merges = false;
  std::vector<int64_t> prefix, suffix;  ///< the post-processor's ids around a text
  std::string post_processor;           ///< its JSON ("" = none)
  std::shared_ptr<detail::WordPieceModel> wordpiece;  ///< set for a WordPiece model (vocab then holds its spellings)
  std::shared_ptr<detail::SentencePieceModel> sentencepiece;  ///< set for BPE over characters (vocab as spelt)
};

void read_vocab(const json& v, const std::string& file, Spelt& out) {
  if (!v.is_object()) bad_file(file, "the vocabulary is not a JSON object of token -> id");
  for (const auto& [spelling, id] : v.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      bad_file(file, fmt::format("vocabulary entry \"{}\": id {} is not an integer >= 0", spelling, id.dump()));
    if (!out.vocab.emplace(id.get<int64_t>(), spelling).second)
      bad_file(file, fmt::format("vocabulary id {} is given to both \"{}\" and \"{}\"", id.get<int64_t>(),
                                 out.vocab.at(id.get<int64_t>()), spelling));
  }
}

void add_merge(std::string_view line, const std::string& where, const std::string& file, Spelt& out) {
  const size_t space = line.find(' ');
  if (space == std::string_view::npos || space == 0 || space + 1 >= line.size() ||
      line.find(' ', space + 1) != std::string_view::npos)
    bad_file(file, fmt::format("{}: \"{}\" is not two tokens separated by one space", where, line));
  out.merges.emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
}

/// Reads one Split pre-tokenizer: its pattern (a regex, compiled here, or a String), behavior and invert.
detail::PreTokenizer::Split read_split(const json& j, const std::string& file) {
  const auto where = [&](const std::string& what) { bad_file(file, "pre_tokenizer Split " + what); };
  detail::PreTokenizer::Split split;
  const json& pattern = j.value("pattern", json());
  const bool regex = pattern.is_object() && pattern.size() == 1 && pattern.contains("Regex");
  split.literal = pattern.is_object() && pattern.size() == 1 && pattern.contains("String");
  if ((!regex && !split.literal) || !pattern.begin()->is_string())
    where("pattern " + pattern.dump() + " is neither {\"Regex\": \"...\"} nor {\"String\": \"...\"}");
  split.pattern = pattern.begin()->get<std::string>();
  const json& behavior = j.value("behavior", json());
  if (!behavior.is_string() || !split_behavior_from_name(behavior.get<std::string>(), split.behavior))
    where("behavior " + behavior.dump() +
          " is not one of \"Removed\", \"Isolated\", \"MergedWithPrevious\", \"MergedWithNext\", \"Contiguous\"");
  const json& invert = j.value("invert", json(false));
  if (!invert.is_boolean()) where("invert " + invert.dump() + " is not true or false");
  split.invert = invert.get<bool>();
  if (split.literal) return split;
  if (split.behavior == SplitBehavior::isolated && !split.invert)
    for (Pattern named : kNamed)
      if (split.pattern == pattern_regex(named)) split.hand_written = named;
  if (split.hand_written == Pattern::o200k) split.hand_written.reset();  // its regex, compiled below, cuts it
  if (split.hand_written) return split;
  try {
    split.regex = std::make_shared<const SplitRegex>(split.pattern);
  } catch (const RegexError& e) {
    where("pattern \"" + split.pattern + "\": " + e.what() + "; expected a regex Tessera reads (src/data/split_regex.h)");
  }
  return split;
}

/// Reads a byte-level BPE pre-tokenizer: ByteLevel (with GPT-2's pattern; add_prefix_space), alone, or after Split
/// pre-tokenizers in a Sequence (with GPT-2's pattern or without: Llama 3's, Qwen2's, GPT-4o's, DeepSeek V3's).
void read_pre_tokenizer(const json& p, const std::string& file, Spelt& out) {
  const auto refuse = [&](const std::string& what) {
    bad_file(file, "pre_tokenizer " + what +
                       "; Tessera reads byte-level BPE tokenizers whose pre-tokenizer is ByteLevel with GPT-2's pattern "
                       "(use_regex: true; GPT-2's, RoBERTa's), or a Sequence of Splits then ByteLevel (Llama 3's, "
                       "Qwen2's, GPT-4o's)");
  };
  const auto type_of = [](const json& j) { return j.is_object() ? j.value("type", std::string("?")) : j.dump(); };
  if (p.is_null()) refuse("is null (no pre-tokenization)");
  const std::string type = type_of(p);
  if (type == "Sequence") {
    const json& items = p.value("pretokenizers", json::array());
    if (items.size() == 1) return read_pre_tokenizer(items[0], file, out);
    if (items.empty() || type_of(items.back()) != "ByteLevel")
      refuse(fmt::format("is a Sequence of {} pre-tokenizers not ending in ByteLevel ({})", items.size(),
                         items.dump().substr(0, 200)));
    if (!out.pre) out.pre = std::make_shared<detail::PreTokenizer>();
    for (size_t k = 0; k + 1 < items.size(); ++k) {
      if (type_of(items[k]) != "Split")
        refuse(fmt::format("is a Sequence whose item {} is {} (expected Split pre-tokenizers, then ByteLevel)", k,
                           type_of(items[k])));
      out.pre->splits.push_back(read_split(items[k], file));
    }
    const json& byte_level = items.back();
    out.pre->byte_level_regex = byte_level.value("use_regex", true);
    if (byte_level.value("add_prefix_space", false))
      refuse("is Splits then ByteLevel with add_prefix_space: true (a space put before every piece)");
    return;
  }
  if (type != "ByteLevel") refuse("is " + type);
  if (!p.value("use_regex", true)) refuse("is ByteLevel with use_regex: false (its pieces come from another pattern)");
  out.add_prefix_space = p.value("add_prefix_space", false);
}

/// Reads a byte-level BPE normalizer: null, NFC, NFD, NFKC or NFKD (alone or the only one of a Sequence).
void read_byte_level_normalizer(const json& n, const std::string& file, Spelt& out) {
  if (n.is_null()) return;
  const std::string type = n.is_object() ? n.value("type", std::string("?")) : n.dump();
  if (type == "Sequence" && n.value("normalizers", json::array()).size() == 1)
    return read_byte_level_normalizer(n["normalizers"][0], file, out);
  unicode::NormalForm form;
  if (!unicode::normal_form_from_name(type, form))
    bad_file(file, "normalizer " + n.dump().substr(0, 200) +
                       " before a byte-level BPE pre-tokenizer; Tessera reads NFC (Qwen2's), NFD, NFKC, NFKD or none "
                       "there");
  if (!out.pre) out.pre = std::make_shared<detail::PreTokenizer>();
  out.pre->normalizer = form;
}

/// The ids of a [token, id] pair (RobertaProcessing's and BertProcessing's cls and sep).
int64_t pair_id(const json& p, const char* key, const std::string& file) {
  const json& v = p.value(key, json());
  if (!v.is_array() || v.size() != 2 || !v[0].is_string() || !v[1].is_number_integer() || v[1].get<int64_t>() < 0)
    bad_file(file, fmt::format("post_processor {}.{} is {}, expected [token, id]", p.value("type", ""), key, v.dump()));
  return v[1].get<int64_t>();
}

/// Reads the ids a post-processor puts around one text: TemplateProcessing's single template, RobertaProcessing's
/// and BertProcessing's cls … sep; ByteLevel's only changes offsets. A Sequence may hold one of those that add ids.
void read_post_processor(const json& p, const std::string& file, Spelt& out, bool top = true) {
  if (p.is_null()) return;
  if (top) out.post_processor = p.dump();
  const std::string type = p.is_object() ? p.value("type", "") : "";
  const bool adds_before = !out.prefix.empty() || !out.suffix.empty();
  std::vector<int64_t> before, after;
  if (type == "ByteLevel") return;
  if (type == "Sequence" && top) {
    for (const json& item : p.value("processors", json::array())) read_post_processor(item, file, out, false);
    return;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    before = {pair_id(p, "cls", file)};
    after = {pair_id(p, "sep", file)};
  } else if (type == "TemplateProcessing") {
    const json& specials = p.value("special_tokens", json::object());
    bool seen_a = false;
    for (const json& piece : p.value("single", json::array())) {
      if (piece.contains("Sequence")) {
        if (seen_a || piece["Sequence"].value("id", "") != "A")
          bad_file(file, "post_processor TemplateProcessing's single template holds " + piece.dump() +
                             "; expected the sequence $A once");
        seen_a = true;
        continue;
      }
      const std::string name = piece.contains("SpecialToken") ? piece["SpecialToken"].value("id", "") : "";
      const json& entry = specials.value(name, json());
      if (name.empty() || !entry.is_object() || !entry.value("ids", json()).is_array())
        bad_file(file, "post_processor TemplateProcessing's single template holds " + piece.dump() +
                           ", which is neither $A nor one of its special_tokens");
      for (const json& id : entry["ids"]) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0)
          bad_file(file, "post_processor special token \"" + name + "\" has id " + id.dump() + ", expected an integer >= 0");
        (seen_a ? after : before).push_back(id.get<int64_t>());
      }
    }
    if (!seen_a) bad_file(file, "post_processor TemplateProcessing's single template has no $A");
  } else {
    bad_file(file, "post_processor " + (type.empty() ? p.dump() : type) +
                       (type == "Sequence" ? " inside a Sequence" : "") +
                       "; Tessera reads TemplateProcessing, RobertaProcessing, BertProcessing and ByteLevel, alone or "
                       "in one Sequence");
  }
  if (adds_before)
    bad_file(file, "post_processor is a Sequence of two processors that add tokens (Hugging Face gives the second "
                   "the first's output as a pair of texts); expected one");
  out.prefix = std::move(before);
  out.suffix = std::move(after);
}

/// Hugging Face's TemplateProcessing for `single` ("$A" once and special tokens, space-separated; special token k has
/// id k) and the pair template it implies (the single one for $A, then again for $B with type id 1).
std::string template_json(const std::string& single, const std::vector<std::string>& specials) {
  using ojson = nlohmann::ordered_json;
  ojson one = ojson::array(), two = ojson::array(), tokens = ojson::object();
  std::istringstream words(single);
  int seen_a = 0;
  for (std::string word; words >> word;) {
    if (word == "$A") {
      ++seen_a;
      one.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
      continue;
    }
    const auto it = std::find(specials.begin(), specials.end(), word);
    if (it == specials.end())
      throw InputError(fmt::format("tokenizer training: single_template \"{}\" holds \"{}\", which is neither $A nor "
                                   "one of the special tokens [{}]",
                                   single, word, fmt::join(specials, ", ")));
    one.push_back({{"SpecialToken", {{"id", word}, {"type_id", 0}}}});
    tokens[word] = {{"id", word}, {"ids", {it - specials.begin()}}, {"tokens", {word}}};
  }
  if (seen_a != 1)
    throw InputError(fmt::format("tokenizer training: single_template \"{}\" holds $A {} times; expected once, with "
                                 "special tokens around it, such as \"$A <|endoftext|>\"",
                                 single, seen_a));
  for (const auto& piece : one) two.push_back(piece);
  for (auto piece : one) {
    if (piece.contains("Sequence")) piece["Sequence"]["id"] = "B";
    piece.begin().value()["type_id"] = 1;
    two.push_back(piece);
  }
  return ojson{{"type", "TemplateProcessing"}, {"single", one}, {"pair", two}, {"special_tokens", tokens}}.dump();
}

/// The keys under which a file holds BertNormalizer's flags (null: the file has none; its default holds).
struct BertFlagKeys {
  const char* clean_text;
  const char* handle_chinese_chars;
  const char* lowercase;
};

/// BertNormalizer's flags from `object` (tokenizer.json's normalizer, or BERT's tokenizer_config.json): absent or null
/// ones take Hugging Face's defaults, strip_accents null follows lowercase. `where` starts the errors' key names.
bert::Normalizer read_bert_flags(const json& object, const BertFlagKeys& keys, const std::string& where,
                                 const std::string& file, detail::WordPieceModel& wp) {
  const auto flag = [&](const char* key, bool fallback) {
    const json v = key != nullptr ? object.value(key, json()) : json();
    if (v.is_null()) return fallback;
    if (!v.is_boolean()) bad_file(file, fmt::format("{}{} is {}, expected true or false", where, key, v.dump()));
    return v.get<bool>();
  };
  bert::Normalizer n;
  n.clean_text = flag(keys.clean_text, true);
  n.handle_chinese_chars = flag(keys.handle_chinese_chars, true);
  n.lowercase = flag(keys.lowercase, true);
  wp.strip_accents_given = !object.value("strip_accents", json()).is_null();
  n.strip_accents = flag("strip_accents", n.lowercase);
  return n;
}

/// A WordPiece model with BertNormalizer (or none), BertPreTokenizer and the WordPiece decoder (or none).
void read_wordpiece(const json& doc, const std::string& file, Spelt& out) {
  auto wp = std::make_shared<detail::WordPieceModel>();
  const auto type_of = [](const json& j) { return j.is_object() ? j.value("type", std::string("?")) : j.dump(); };
  const json& normalizer = doc.value("normalizer", json());
  if (!normalizer.is_null()) {
    if (type_of(normalizer) != "BertNormalizer")
      bad_file(file, "WordPiece with normalizer " + type_of(normalizer) +
                         "; Tessera reads WordPiece with BertNormalizer (BERT's) or without a normalizer");
    wp->normalizer = read_bert_flags(normalizer, {"clean_text", "handle_chinese_chars", "lowercase"},
                                     "normalizer BertNormalizer.", file, *wp);
  }
  const json& pre = doc.value("pre_tokenizer", json());
  if (type_of(pre) != "BertPreTokenizer")
    bad_file(file, "WordPiece with pre_tokenizer " + (pre.is_null() ? std::string("null") : type_of(pre)) +
                       "; Tessera reads WordPiece with BertPreTokenizer (BERT's)");
  const json& decoder = doc.value("decoder", json());
  if (!decoder.is_null()) {
    if (type_of(decoder) != "WordPiece")
      bad_file(file, "WordPiece with decoder " + type_of(decoder) + "; Tessera reads the WordPiece decoder or none");
    wp->decoder_prefix = decoder.value("prefix", std::string("##"));
    wp->cleanup = decoder.value("cleanup", true);
  }
  const json& model = doc["model"];
  const json& unk = model.value("unk_token", json());
  if (!unk.is_string()) bad_file(file, "model.unk_token is " + unk.dump() + ", expected the unknown token's text");
  wp->unk_token = unk.get<std::string>();
  wp->prefix = model.value("continuing_subword_prefix", std::string("##"));
  const json& max_chars = model.value("max_input_chars_per_word", json(100));
  if (!max_chars.is_number_integer() || max_chars.get<int64_t>() < 1)
    bad_file(file, "model.max_input_chars_per_word is " + max_chars.dump() + ", expected an integer of at least 1");
  wp->max_chars = max_chars.get<int64_t>();
  read_vocab(model.value("vocab", json()), file, out);
  out.wordpiece = std::move(wp);
}

/// SentencePiece's schemes, as Hugging Face converts them: Prepend, Replace, Strip and Precompiled normalizers, no
/// pre-tokenizer or Metaspace, a decoder of Replace, ByteFallback, Fuse, Strip or Metaspace steps; then BPE over
/// characters (the model's byte_fallback, fuse_unk and unk_token) or Unigram (its vocabulary of pieces and scores,
/// unk_id and byte_fallback).
void read_sentencepiece(const json& doc, const std::string& file, Spelt& out) {
  const json& decoder = doc.value("decoder", json());
  if (decoder.is_object() && decoder.value("type", std::string()) == "ByteLevel")
    bad_file(file, "pre_tokenizer is " + doc.value("pre_tokenizer", json()).dump() +
                       " but the decoder is ByteLevel; a byte-level BPE tokenizer needs the ByteLevel pre-tokenizer "
                       "(GPT-2's, RoBERTa's) or a Split by Llama 3's pattern then ByteLevel");
  auto sp = std::make_shared<detail::SentencePieceModel>();
  sp->normalizer = sentencepiece::read_normalizer(doc.value("normalizer", json()), file);
  const json& pre = doc.value("pre_tokenizer", json());
  if (!pre.is_null()) {
    const bool sequence = pre.value("type", std::string()) == "Sequence";
    const json steps = sequence ? pre.value("pretokenizers", json::array()) : json::array({pre});
    for (size_t i = 0; i < steps.size(); ++i) {  // WhitespaceSplit first, Metaspace after
      if (i == 0 && steps[i].is_object() && steps[i].value("type", std::string()) == "WhitespaceSplit") {
        sp->whitespace_split = true;
      } else if (!sp->metaspace && steps[i].is_object() && steps[i].value("type", std::string()) == "Metaspace") {
        sp->metaspace = sentencepiece::read_metaspace(steps[i], file);
      } else {
        bad_file(file, "pre_tokenizer " + pre.dump().substr(0, 200) +
                           "; Tessera reads Metaspace, WhitespaceSplit, WhitespaceSplit then Metaspace, or none before "
                           "SentencePiece-style BPE and Unigram");
      }
    }
  }
  sp->decoder = sentencepiece::read_decoder(doc.value("decoder", json()), file);
  sp->normalizer_json = doc.value("normalizer", json()).dump();
  sp->pre_tokenizer_json = pre.dump();
  sp->decoder_json = doc.value("decoder", json()).dump();
  const json& model = doc["model"];
  const bool unigram = model.value("type", std::string()) == "Unigram";  // it always fuses: no fuse_unk
  for (auto [key, flag] : {std::pair{"byte_fallback", &sp->byte_fallback}, {"fuse_unk", &sp->fuse_unk}}) {
    const json& v = model.value(key, json(false));
    if (!v.is_boolean()) bad_file(file, fmt::format("model.{} is {}, expected true or false", key, v.dump()));
    *flag = v.get<bool>();
  }
  if (unigram) {
    const json& vocab = model.value("vocab", json());
    if (!vocab.is_array() || vocab.empty())
      bad_file(file, "model.vocab is " + std::string(vocab.is_array() ? "empty" : "not a JSON array") +
                         "; expected Unigram's [piece, score] pairs");
    std::vector<std::string> pieces;
    std::vector<double> scores;
    for (size_t id = 0; id < vocab.size(); ++id) {
      const json& entry = vocab[id];
      if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() || !entry[1].is_number())
        bad_file(file, fmt::format("model.vocab[{}] is {}, expected [\"piece\", score]", id, entry.dump()));
      pieces.push_back(entry[0].get<std::string>());
      scores.push_back(entry[1].get<double>());
      out.vocab.emplace(static_cast<int64_t>(id), pieces.back());
    }
    const json& unk_id = model.value("unk_id", json());
    if (!unk_id.is_null() && (!unk_id.is_number_integer() || unk_id.get<int64_t>() < 0 ||
                              unk_id.get<int64_t>() >= static_cast<int64_t>(vocab.size())))
      bad_file(file, fmt::format("model.unk_id is {}, expected null or an id of the model's {} pieces", unk_id.dump(),
                                 vocab.size()));
    if (!unk_id.is_null()) {
      sp->unk_id = unk_id.get<int64_t>();
      sp->unk_token = pieces[static_cast<size_t>(sp->unk_id)];
    }
    sp->unigram = std::make_shared<const unigram::Model>(pieces, std::move(scores), sp->unk_id, sp->byte_fallback);
    out.sentencepiece = std::move(sp);
    return;
  }
  const json& unk = model.value("unk_token", json());
  if (!unk.is_null() && !unk.is_string()) bad_file(file, "model.unk_token is " + unk.dump() + ", expected a token or null");
  if (unk.is_string()) sp->unk_token = unk.get<std::string>();
  out.sentencepiece = std::move(sp);
}

/// Added tokens and the post-processor, of either model.
void read_added_and_post_processor(const json& doc, const std::string& file, Spelt& out) {
  for (const json& t : doc.value("added_tokens", json::array())) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || t["id"].get<int64_t>() < 0 ||
        !t.contains("content") ||
        !t["content"].is_string() || t["content"].get<std::string>().empty())
      bad_file(file, "added token " + t.dump() + " lacks an integer id >= 0 or a non-empty content");
    AddedToken a{t["content"].get<std::string>(), t["id"].get<int64_t>()};
    for (auto [key, flag] : {std::pair{"special", &a.special}, {"lstrip", &a.lstrip}, {"rstrip", &a.rstrip},
                             {"single_word", &a.single_word}, {"normalized", &a.normalized}}) {
      if (!t.contains(key)) continue;
      if (!t[key].is_boolean())
        bad_file(file, fmt::format("added token \"{}\": {} is {}, expected true or false", a.content, key, t[key].dump()));
      *flag = t[key].get<bool>();
    }
    out.added.push_back(std::move(a));
  }
  read_post_processor(doc.value("post_processor", json()), file, out);
}

/// A tokenizer.json document (read from `file`, or made from it: a SentencePiece model).
Spelt read_tokenizer_doc(const json& doc, const std::string& file) {
  if (!doc.is_object() || !doc.contains("model")) bad_file(file, "no \"model\": not a tokenizer.json");
  Spelt out;
  const std::string model_type = doc["model"].value("type", "BPE");
  if (model_type == "WordPiece") {
    read_wordpiece(doc, file, out);
    read_added_and_post_processor(doc, file, out);
    return out;
  }
  const json& pre_tokenizer = doc.value("pre_tokenizer", json());
  const json& model = doc["model"];
  const std::string type = model.value("type", "BPE");
  const auto sentencepiece_step = [](const json& p) {
    const std::string t = p.is_object() ? p.value("type", std::string()) : "";
    return t == "Metaspace" || t == "WhitespaceSplit";
  };
  const bool sentencepiece_style =
      pre_tokenizer.is_null() || sentencepiece_step(pre_tokenizer) ||
      (pre_tokenizer.value("type", std::string()) == "Sequence" &&
       !pre_tokenizer.value("pretokenizers", json::array()).empty() &&
       std::all_of(pre_tokenizer["pretokenizers"].begin(), pre_tokenizer["pretokenizers"].end(), sentencepiece_step));
  if (type == "Unigram") {
    if (!sentencepiece_style)
      bad_file(file, "Unigram with pre_tokenizer " + pre_tokenizer.dump().substr(0, 200) +
                         "; Tessera reads Unigram tokenizers with Metaspace, WhitespaceSplit then Metaspace, or none");
    read_sentencepiece(doc, file, out);
    read_added_and_post_processor(doc, file, out);
    return out;
  }
  if (type != "BPE")
    bad_file(file, "model type " + type + "; Tessera reads BPE (byte-level or SentencePiece-style), Unigram and "
                   "WordPiece tokenizers");
  if (sentencepiece_style) {
    read_sentencepiece(doc, file, out);
  } else {
    read_byte_level_normalizer(doc.value("normalizer", json()), file, out);
    read_pre_tokenizer(pre_tokenizer, file, out);
  }
  const auto unset = [&](const char* key) {
    return !model.contains(key) || model[key].is_null() || (model[key].is_string() && model[key].get<std::string>().empty());
  };
  if (!unset("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0)
    bad_file(file, "BPE dropout is on (model.dropout); Tessera encodes deterministically: set it to null");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!unset(key)) bad_file(file, std::string("model.") + key + " is set; Tessera's BPE does not use one");
  const json& ignore_merges = model.value("ignore_merges", json(false));
  if (!ignore_merges.is_boolean())
    bad_file(file, "model.ignore_merges is " + ignore_merges.dump() + ", expected true or false");
  out.ignore_merges = ignore_merges.get<bool>();
  read_vocab(model.value("vocab", json()), file, out);
  const json& merges = model.value("merges", json::array());
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    const std::string where = fmt::format("merge {}", r);
    if (m.is_string()) add_merge(m.get<std::string>(), where, file, out);
    else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
      out.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    else bad_file(file, where + ": " + m.dump() + " is neither \"a b\" nor [\"a\", \"b\"]");
  }
  read_added_and_post_processor(doc, file, out);
  return out;
}

/// BERT's original files: vocab.txt (a token per line, ids by line) and, if present beside it, tokenizer_config.json
/// (do_lower_case, strip_accents, tokenize_chinese_chars), read as Hugging Face's BertWordPieceTokenizer makes them:
/// BertNormalizer, BertPreTokenizer, the WordPiece decoder, [UNK] [SEP] [CLS] [PAD] [MASK] special where present, and
/// BertProcessing's [CLS] … [SEP].
Spelt read_bert_vocab(const std::string& vocab_file, const std::string& config_file) {
  Spelt out;
  std::istringstream lines(read_whole(vocab_file));
  std::map<std::string, int64_t> id_of;
  std::string line;
  for (int64_t id = 0; std::getline(lines, line); ++id) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    if (!id_of.emplace(line, id).second)
      bad_file(vocab_file, fmt::format("line {} repeats \"{}\" of line {}", id + 1, line, id_of[line] + 1));
    out.vocab.emplace(id, line);
  }
  auto wp = std::make_shared<detail::WordPieceModel>();
  const json config = config_file.empty() ? json::object() : parse_json(config_file);
  wp->normalizer = read_bert_flags(config, {nullptr, "tokenize_chinese_chars", "do_lower_case"}, "", config_file, *wp);
  wp->decoder_prefix = "##";
  for (const char* special : {"[UNK]", "[SEP]", "[CLS]", "[PAD]", "[MASK]"}) {
    if (const auto it = id_of.find(special); it != id_of.end()) out.added.push_back(AddedToken{special, it->second});
  }
  std::sort(out.added.begin(), out.added.end(), [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  const auto sep = id_of.find("[SEP]"), cls = id_of.find("[CLS]");
  if (sep != id_of.end() && cls != id_of.end()) {
    out.prefix = {cls->second};
    out.suffix = {sep->second};
    out.post_processor =
        json{{"type", "BertProcessing"}, {"sep", {"[SEP]", sep->second}}, {"cls", {"[CLS]", cls->second}}}.dump();
  }
  out.wordpiece = std::move(wp);
  return out;
}

Spelt read_gpt2_files(const std::string& vocab_file, const std::string& merges_file) {
  Spelt out;
  read_vocab(parse_json(vocab_file), vocab_file, out);
  std::istringstream lines(read_whole(merges_file));
  std::string line;
  for (int64_t n = 1; std::getline(lines, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (n == 1 && line.rfind("#version", 0) == 0)) continue;
    add_merge(line, fmt::format("line {}", n), merges_file, out);
  }
  return out;
}

}  // namespace

std::string pattern_name(Pattern pattern) {
  switch (pattern) {
    case Pattern::gpt2: return "gpt2";
    case Pattern::llama3: return "llama3";
    case Pattern::qwen2: return "qwen2";
    case Pattern::o200k: return "o200k";
    case Pattern::custom: break;
  }
  return "custom";
}

Pattern pattern_from_name(const std::string& name) {
  for (Pattern named : kNamed)
    if (name == pattern_name(named)) return named;
  throw InputError("tokenizer pattern \"" + name +
                   "\" is not known; expected gpt2 (GPT-2's), llama3 (Llama 3's), qwen2 (Qwen2's) or o200k (GPT-4o's)");
}

std::string pattern_regex(Pattern pattern) {
  switch (pattern) {
    case Pattern::gpt2: return kGpt2Regex;
    case Pattern::llama3: return kLlama3Regex;
    case Pattern::qwen2: return kQwen2Regex;
    case Pattern::o200k: return kO200kRegex;
    case Pattern::custom: break;
  }
  throw InputError("a custom pre-tokenizer has no one regex: see Tokenizer::pre_tokenizer_json()");
}

std::vector<std::string_view> pretokenize(std::string_view text, Pattern pattern) {
  if (pattern == Pattern::custom)
    throw InputError("pretokenize: a custom pre-tokenizer is a tokenizer's own; expected gpt2, llama3, qwen2 or o200k");
  std::vector<std::string_view> pieces;
  cut_by(pattern, text, pieces);
  return pieces;
}

namespace {

/// What a byte-level BPE tokenizer's pre-tokenizer steps amount to: one of the named patterns, or custom.
Pattern pattern_of(const detail::PreTokenizer* pre) {
  if (pre == nullptr || (pre->splits.empty() && pre->byte_level_regex)) return Pattern::gpt2;
  if (pre->splits.size() != 1 || pre->byte_level_regex) return Pattern::custom;
  const detail::PreTokenizer::Split& split = pre->splits[0];
  for (Pattern named : {Pattern::llama3, Pattern::qwen2, Pattern::o200k})
    if (!split.literal && split.behavior == SplitBehavior::isolated && !split.invert && split.pattern == pattern_regex(named))
      return named;
  return Pattern::custom;
}

/// The pre-tokenizer of a named pattern, or of `regex` (a Split, each match a piece), with `normalizer`.
std::shared_ptr<detail::PreTokenizer> pre_tokenizer_for(Pattern pattern, const std::string& regex,
                                                        std::optional<unicode::NormalForm> normalizer) {
  if (pattern == Pattern::gpt2 && regex.empty() && !normalizer) return nullptr;
  auto pre = std::make_shared<detail::PreTokenizer>();
  pre->normalizer = normalizer;
  if (pattern == Pattern::gpt2 && regex.empty()) return pre;
  detail::PreTokenizer::Split split;
  split.pattern = regex.empty() ? pattern_regex(pattern) : regex;
  if (regex.empty() && pattern != Pattern::o200k) split.hand_written = pattern;
  else split.regex = std::make_shared<const SplitRegex>(split.pattern);
  pre->splits.push_back(std::move(split));
  pre->byte_level_regex = false;
  return pre;
}

}  // namespace

void Tokenizer::index_added() {
  // A normalized added token is matched in the normalized text, as its normalized content (Hugging Face's).
  match_text_.clear();
  for (const AddedToken& a : added_) {
    if (a.normalized && wordpiece_ && wordpiece_->normalizer) {
      match_text_.push_back(bert::normalize(a.content, *wordpiece_->normalizer));
    } else if (a.normalized && sentencepiece_) {
      match_text_.push_back(sentencepiece::normalize(a.content, sentencepiece_->normalizer));
    } else if (a.normalized && pre_ && pre_->normalizer) {
      match_text_.push_back(unicode::normalize(a.content, *pre_->normalizer));
    } else {
      match_text_.push_back(a.content);
    }
  }
  for (auto* pass : {&raw_order_, &normalized_order_}) pass->assign(256, {});
  std::vector<int32_t> by_length;
  for (size_t k = 0; k < added_.size(); ++k) {
    if (!match_text_[k].empty()) by_length.push_back(static_cast<int32_t>(k));  // normalized away: never matched
  }
  std::stable_sort(by_length.begin(), by_length.end(),
                   [&](int32_t x, int32_t y) { return match_text_[x].size() > match_text_[y].size(); });
  for (int32_t k : by_length) {
    auto& pass = added_[k].normalized ? normalized_order_ : raw_order_;
    pass[static_cast<unsigned char>(match_text_[k][0])].push_back(k);
  }
}

void Tokenizer::index() {
  index_added();
  const int64_t n = vocab_size();
  added_of_.assign(static_cast<size_t>(n), -1);
  for (size_t k = 0; k < added_.size(); ++k) added_of_[static_cast<size_t>(added_[k].id)] = static_cast<int32_t>(k);
  if (wordpiece_) return;  // its lookup table is the model's vocabulary
  std::unordered_map<std::string, int64_t> id_of;  // bytes -> the lowest id; tokens that are not added ones first
  for (int64_t id = n - 1; id >= 0; --id)
    if (added_of_[static_cast<size_t>(id)] < 0) id_of[tokens_[static_cast<size_t>(id)]] = id;
  for (const AddedToken& a : added_) id_of.emplace(a.content, a.id);
  for (int b = 0; b < 256 && !sentencepiece_; ++b) byte_ids_[b] = id_of.at(std::string(1, static_cast<char>(b)));
  merge_of_.clear();
  for (size_t r = 0; r < merges_.size(); ++r) {
    const auto [a, b] = merges_[r];
    merge_of_[pair_key(a, b)] = {static_cast<int32_t>(r), id_of.at(tokens_[a] + tokens_[b])};
  }
}

/// Cuts the added tokens of one pass (`order`: indices in added_ by first byte, longest first) out of `text` as
/// Hugging Face's AddedVocabulary::find_matches does: matches are leftmost, then longest, and do not overlap; a
/// single_word match touching a word character is passed over (its text stays text); lstrip and rstrip widen a
/// match over the whitespace beside it. Appends the matched tokens' ids to `out`; on_text(part) for the text between.
template <class Text>
void Tokenizer::split_added(std::string_view text, const std::vector<std::vector<int32_t>>& order,
                            std::vector<int64_t>& out, Text&& on_text) const {
  size_t from = 0;  // where the text after the last match taken starts
  for (size_t i = 0; i < text.size();) {
    const AddedToken* hit = nullptr;
    size_t length = 0;
    for (int32_t k : order[static_cast<unsigned char>(text[i])]) {
      if (text.compare(i, match_text_[k].size(), match_text_[k]) == 0) {
        hit = &added_[k];
        length = match_text_[k].size();
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + length;
    i = stop;
    if (hit->single_word && (word_char_before(text, start) || word_char_at(text, stop))) continue;
    if (hit->lstrip) start = std::max(space_run_before(text, start), from);
    if (hit->rstrip) stop = run_end(text, stop, Class::space);
    if (from < start) on_text(text.substr(from, start - from));
    out.push_back(hit->id);
    from = stop;
  }
  if (from < text.size()) on_text(text.substr(from));
}

Tokenizer Tokenizer::train(const std::vector<std::string>& texts, const TokenizerTrainOptions& options) {
  TokenizerTrainOptions checked = options;
  validate_options(checked, "tokenizer training");
  Tokenizer t;
  t.pattern_ = pattern_from_name(options.pattern());
  if (!options.split_regex().empty() && t.pattern_ != Pattern::gpt2)
    throw InputError("tokenizer training: both pattern \"" + options.pattern() + "\" and split_regex are given; expected "
                     "one of them");
  std::optional<unicode::NormalForm> form;  // the options' check allows none, nfc, nfd, nfkc, nfkd
  std::string upper = options.normalizer();
  std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
  if (upper != "NONE") unicode::normal_form_from_name(upper, form.emplace());
  try {
    t.pre_ = pre_tokenizer_for(t.pattern_, options.split_regex(), form);
  } catch (const RegexError& e) {
    throw InputError("tokenizer training: split_regex \"" + options.split_regex() + "\": " + e.what() +
                     "; expected a regex Tessera reads (src/data/split_regex.h)");
  }
  t.pattern_ = pattern_of(t.pre_.get());
  for (const std::string& s : options.special_tokens()) {
    if (s.empty()) throw InputError("tokenizer training: special_tokens holds an empty token");
    if (!valid_utf8(s)) throw InputError("tokenizer training: special token \"" + s + "\" is not valid UTF-8");
    if (std::count(options.special_tokens().begin(), options.special_tokens().end(), s) > 1)
      throw InputError("tokenizer training: special token \"" + s + "\" is given twice");
    t.added_.push_back({s, t.vocab_size()});
    t.tokens_.push_back(s);
  }
  t.index_added();
  if (!options.single_template().empty()) {
    t.post_processor_ = template_json(options.single_template(), options.special_tokens());
    Spelt spelt;
    read_post_processor(json::parse(t.post_processor_), "(single_template)", spelt);
    t.prefix_ = spelt.prefix;
    t.suffix_ = spelt.suffix;
  }
  const int64_t base = t.vocab_size() + 256;
  if (options.vocab_size() < base) {
    throw InputError(fmt::format("tokenizer training: vocab_size {} is below the {} special tokens + 256 bytes = {}; "
                                 "expected at least {}",
                                 options.vocab_size(), t.vocab_size(), base, base));
  }
  std::vector<int> bytes(256);
  for (int b = 0; b < 256; ++b) bytes[b] = b;
  std::sort(bytes.begin(), bytes.end(),
            [](int x, int y) { return byte_level_table().char_of[x] < byte_level_table().char_of[y]; });
  std::unordered_map<std::string, int64_t> id_of;
  int64_t byte_id[256];
  for (int b : bytes) {
    byte_id[b] = t.vocab_size();
    id_of[std::string(1, static_cast<char>(b))] = t.vocab_size();
    t.tokens_.emplace_back(1, static_cast<char>(b));
  }

  // The distinct pieces of all texts (normalized, when the tokenizer normalizes) and how often each occurs.
  std::unordered_map<std::string_view, int64_t> seen;
  std::vector<int64_t> cut;
  std::vector<std::string_view> pieces;
  std::deque<std::string> normalized;  // the texts the pieces are views into, when normalized
  for (const std::string& text : texts)
    t.split_added(text, t.raw_order_, cut, [&](std::string_view part) {
      pieces.clear();
      if (t.pre_ && t.pre_->normalizer) part = normalized.emplace_back(unicode::normalize(part, *t.pre_->normalizer));
      t.cut_text(part, pieces);
      for (std::string_view p : pieces) ++seen[p];
    });
  std::vector<std::pair<std::string_view, int64_t>> distinct(seen.begin(), seen.end());
  std::sort(distinct.begin(), distinct.end());
  std::vector<std::vector<int64_t>> words(distinct.size());
  std::vector<int64_t> counts(distinct.size());
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  for (size_t w = 0; w < distinct.size(); ++w) {
    counts[w] = distinct[w].second;
    for (unsigned char c : distinct[w].first) words[w].push_back(byte_id[c]);
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t key = pair_key(words[w][i], words[w][i + 1]);
      pair_counts[key] += counts[w];
      auto& at = where[key];
      if (at.empty() || at.back() != static_cast<int32_t>(w)) at.push_back(static_cast<int32_t>(w));
    }
  }
  std::vector<QueuedPair> queue;
  const auto enqueue = [&](std::unordered_map<uint64_t, std::vector<int32_t>>& pairs) {
    for (auto& [key, at] : pairs) {
      const int64_t count = pair_counts[key];
      if (count <= 0) continue;
      queue.push_back({count, key, std::move(at)});
      std::push_heap(queue.begin(), queue.end(), lower_priority);
    }
    pairs.clear();
  };
  enqueue(where);

  while (t.vocab_size() < options.vocab_size() && !queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), lower_priority);
    QueuedPair top = std::move(queue.back());
    queue.pop_back();
    const int64_t current = pair_counts[top.pair];
    if (top.count != current) {  // counts only fall after a pair is queued: requeue it with its count
      top.count = current;
      queue.push_back(std::move(top));
      std::push_heap(queue.begin(), queue.end(), lower_priority);
      continue;
    }
    if (top.count < 1 || top.count < options.min_frequency()) break;
    const auto a = static_cast<int64_t>(top.pair >> 32), b = static_cast<int64_t>(top.pair & 0xFFFFFFFFu);
    std::string merged_bytes = t.tokens_[a] + t.tokens_[b];
    auto [it, added] = id_of.emplace(merged_bytes, t.vocab_size());
    if (added) t.tokens_.push_back(std::move(merged_bytes));
    const int64_t merged = it->second;
    t.merges_.emplace_back(a, b);
    for (int32_t w : top.words) {
      for (const auto& [key, change] : merge_word(words[w], a, b, merged)) {
        pair_counts[key] += change * counts[w];
        if (change <= 0) continue;
        auto& at = where[key];
        if (at.empty() || at.back() != w) at.push_back(w);
      }
    }
    enqueue(where);
  }
  t.index();
  return t;
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  Spelt spelt;
  try {
    if (fs::is_directory(path, ec)) {
      const fs::path dir(path);
      if (fs::exists(dir / "tokenizer.json")) {
        file = (dir / "tokenizer.json").string();
        spelt = read_tokenizer_doc(parse_json(file), file);
      } else if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) {
        file = (dir / "vocab.json").string();
        spelt = read_gpt2_files(file, (dir / "merges.txt").string());
      } else if (fs::exists(dir / "spiece.model")) {  // T5's original files
        file = (dir / "spiece.model").string();
        spelt = read_tokenizer_doc(sentencepiece::model_to_tokenizer_json(read_whole(file), file), file);
      } else if (fs::exists(dir / "vocab.txt")) {
        file = (dir / "vocab.txt").string();
        const fs::path config = dir / "tokenizer_config.json";
        spelt = read_bert_vocab(file, fs::exists(config) ? config.string() : "");
      } else {
        throw InputError("tokenizer " + path +
                         ": the folder holds neither tokenizer.json, vocab.json + merges.txt (GPT-2's), spiece.model "
                         "(T5's) nor vocab.txt (BERT's); expected a byte-level BPE tokenizer (train one with "
                         "tessera-tokenizer train), a Unigram or a WordPiece one");
      }
    } else if (!fs::exists(path, ec)) {
      throw InputError("tokenizer " + path +
                       " does not exist; expected a tokenizer.json file or a folder holding one (train one with "
                       "tessera-tokenizer train)");
    } else if (fs::path(path).extension() == ".model") {  // a SentencePiece model (sentencepiece.bpe.model, …)
      spelt = read_tokenizer_doc(sentencepiece::model_to_tokenizer_json(read_whole(path), path), path);
    } else {
      spelt = read_tokenizer_doc(parse_json(path), path);
    }
  } catch (const json::exception& e) {  // a value of the wrong JSON type where the checks above read one
    bad_file(file, std::string("unexpected JSON: ") + e.what());
  }

  Tokenizer t;
  t.add_prefix_space_ = spelt.add_prefix_space;
  t.pre_ = spelt.pre;
  t.pattern_ = pattern_of(t.pre_.get());
  t.ignore_merges_ = spelt.ignore_merges;
  std::map<int64_t, const AddedToken*> added;
  std::map<std::string, int64_t> added_text;
  for (const AddedToken& a : spelt.added) {
    if (!added.emplace(a.id, &a).second)
      bad_file(file, fmt::format("added tokens \"{}\" and \"{}\" both have id {}", added[a.id]->content, a.content, a.id));
    if (!added_text.emplace(a.content, a.id).second)
      bad_file(file, fmt::format("added tokens {} and {} are both \"{}\"", added_text[a.content], a.id, a.content));
  }
  const int64_t n = std::max(spelt.vocab.empty() ? 0 : spelt.vocab.rbegin()->first + 1,
                             added.empty() ? 0 : added.rbegin()->first + 1);
  std::unordered_map<std::string, int64_t> id_of;  // spelling -> id
  const bool unigram = spelt.sentencepiece && spelt.sentencepiece->unigram;
  std::set<int64_t> unmergeable;  // added tokens in the vocabulary whose text is not the bytes of their spelling
  std::string bytes;
  for (int64_t id = 0; id < n; ++id) {
    const auto v = spelt.vocab.find(id);
    const auto a = added.find(id);
    if (a != added.end()) {
      const std::string& text = a->second->content;
      if (v != spelt.vocab.end() && v->second != text)
        bad_file(file, fmt::format("id {} is \"{}\" in the vocabulary but the added token \"{}\"", id, v->second, text));
      if (!spelt.sentencepiece && v != spelt.vocab.end() && (!unspell(text, bytes) || bytes != text))
        unmergeable.insert(id);
      t.tokens_.push_back(text);
      t.added_.push_back(*a->second);
    } else if (v == spelt.vocab.end()) {
      bad_file(file, fmt::format("no token has id {} (the ids run to {}); expected ids 0, 1, … without gaps", id, n - 1));
    } else if (spelt.wordpiece || spelt.sentencepiece) {
      t.tokens_.push_back(v->second);
    } else if (!unspell(v->second, bytes)) {
      bad_file(file, fmt::format("vocabulary entry \"{}\" (id {}) is not spelt in GPT-2's byte-level characters: "
                                 "not a byte-level BPE vocabulary",
                                 v->second, id));
    } else {
      t.tokens_.push_back(bytes);
    }
    if (v == spelt.vocab.end()) continue;
    if (unigram) id_of[v->second] = id;  // Hugging Face's Unigram keeps the last id of a piece listed twice
    else id_of.emplace(v->second, id);
  }
  for (const AddedToken& a : spelt.added) {  // Hugging Face gives an added token that is in the vocabulary its id there
    if (const auto it = id_of.find(a.content); it != id_of.end() && it->second != a.id)
      bad_file(file, fmt::format("added token \"{}\" has id {}, but the vocabulary gives it id {}; expected the same id "
                                 "(Hugging Face would use {})",
                                 a.content, a.id, it->second, it->second));
  }
  for (const auto* ids : {&spelt.prefix, &spelt.suffix})
    for (int64_t id : *ids)
      if (id >= n) bad_file(file, fmt::format("the post_processor adds id {}, beyond the {} tokens", id, n));
  t.prefix_ = spelt.prefix;
  t.suffix_ = spelt.suffix;
  t.post_processor_ = spelt.post_processor;
  if (spelt.wordpiece) {
    const auto unk = id_of.find(spelt.wordpiece->unk_token);
    if (unk == id_of.end())
      bad_file(file, fmt::format("model.unk_token \"{}\" is not in the vocabulary; WordPiece gives it for the words it "
                                 "cannot cut",
                                 spelt.wordpiece->unk_token));
    spelt.wordpiece->unk_id = unk->second;
    spelt.wordpiece->id_of = std::move(id_of);
    t.wordpiece_ = std::move(spelt.wordpiece);
    t.index();
    return t;
  }
  if (spelt.sentencepiece && !unigram) {  // BPE over characters (a Unigram model has no merges, no cut)
    detail::SentencePieceModel& sp = *spelt.sentencepiece;
    if (sp.unk_token) {
      const auto unk = id_of.find(*sp.unk_token);
      if (unk == id_of.end())
        bad_file(file, fmt::format("model.unk_token \"{}\" is not in the vocabulary; BPE gives it for the characters "
                                   "it has no token for",
                                   *sp.unk_token));
      sp.unk_id = unk->second;
    }
    for (int b = 0; b < 256; ++b) {
      const auto it = id_of.find(fmt::format("<0x{:02X}>", b));
      sp.byte_id[b] = it == id_of.end() ? -1 : it->second;
    }
    std::string space = sp.metaspace ? sp.metaspace->replacement : "";
    for (const sentencepiece::TextStep& step : sp.normalizer)
      if (step.kind == sentencepiece::TextStep::Kind::replace && !step.regex && step.from == " ") space = step.text;
    const auto after_another = [&](std::string_view text, size_t at) {  // the `space` at `at` follows another character
      return at > 0 && !(at >= space.size() && text.compare(at - space.size(), space.size(), space) == 0);
    };
    const auto inside = [&](const std::string& token) {
      for (size_t at = token.find(space, 1); at != std::string::npos; at = token.find(space, at + 1))
        if (after_another(token, at)) return true;
      return false;
    };
    const bool whole = space.empty() || !id_of.count(space) || t.ignore_merges_ ||
                       std::any_of(id_of.begin(), id_of.end(), [&](const auto& token) { return inside(token.first); });
    if (!whole) sp.cut_before = space;
  }
  for (int b = 0; b < 256 && !spelt.sentencepiece; ++b) {
    const std::string one = spell(std::string(1, static_cast<char>(b)));
    const auto it = id_of.find(one);
    if (it == id_of.end() || unmergeable.count(it->second))
      bad_file(file, fmt::format("the vocabulary has no token for byte 0x{:02x} (\"{}\"); a byte-level BPE "
                                 "vocabulary holds all 256 bytes",
                                 b, one));
  }
  for (size_t r = 0; r < spelt.merges.size(); ++r) {
    const auto& [x, y] = spelt.merges[r];
    const auto a = id_of.find(x), b = id_of.find(y), m = id_of.find(x + y);
    if (a == id_of.end() || b == id_of.end() || m == id_of.end())
      bad_file(file, fmt::format("merge {} (\"{} {}\"): \"{}\" is not in the vocabulary", r, x, y,
                                 a == id_of.end() ? x : b == id_of.end() ? y : x + y));
    for (const auto& it : {a, b, m})
      if (unmergeable.count(it->second))
        bad_file(file, fmt::format("merge {} (\"{} {}\"): \"{}\" is an added token whose text is not the bytes its "
                                   "byte-level spelling stands for, which merges cannot make",
                                   r, x, y, it->first));
    t.merges_.emplace_back(a->second, b->second);
  }
  if (t.ignore_merges_ && !spelt.sentencepiece) {  // Hugging Face looks a piece's spelling up in the vocabulary
    for (const auto& [spelling, id] : id_of)
      if (unspell(spelling, bytes)) t.whole_of_.emplace(bytes, id);
  }
  if (spelt.sentencepiece) {
    spelt.sentencepiece->id_of = std::move(id_of);
    t.sentencepiece_ = std::move(spelt.sentencepiece);
  }
  t.index();
  return t;
}

namespace {
nlohmann::ordered_json byte_level_json(bool add_prefix_space, bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true}, {"use_regex", use_regex}};
}
}  // namespace

std::string Tokenizer::to_json() const {
  using ojson = nlohmann::ordered_json;
  ojson added = ojson::array();
  for (const AddedToken& a : added_) {
    added.push_back({{"id", a.id}, {"content", a.content}, {"single_word", a.single_word}, {"lstrip", a.lstrip},
                     {"rstrip", a.rstrip}, {"normalized", a.normalized}, {"special", a.special}});
  }
  const ojson post_processor = post_processor_.empty() ? ojson() : ojson::parse(post_processor_);
  // The model's vocabulary, by id: every token but the added ones that are not in it (WordPiece, SentencePiece-style).
  const auto model_vocab = [](const std::unordered_map<std::string, int64_t>& id_of) {
    std::vector<std::pair<int64_t, std::string>> by_id;
    for (const auto& [spelling, id] : id_of) by_id.emplace_back(id, spelling);
    std::sort(by_id.begin(), by_id.end());
    ojson sorted = ojson::object();
    for (const auto& [id, spelling] : by_id) sorted[spelling] = id;
    return sorted;
  };
  if (sentencepiece_) {  // the text steps as read; a Unigram model (pieces and scores) or BPE over characters
    const detail::SentencePieceModel& sp = *sentencepiece_;
    ojson model;
    if (sp.unigram) {
      ojson vocab = ojson::array();
      const std::vector<double>& scores = sp.unigram->scores();
      for (size_t id = 0; id < scores.size(); ++id) vocab.push_back({tokens_[id], scores[id]});
      model = {{"type", "Unigram"},
               {"unk_id", sp.unk_id >= 0 ? ojson(sp.unk_id) : ojson()},
               {"vocab", vocab},
               {"byte_fallback", sp.byte_fallback}};
    } else {
      ojson merges = ojson::array();  // as pairs: a spelling may hold a space
      for (const auto& [a, b] : merges_) merges.push_back({token_to_string(a), token_to_string(b)});
      model = {{"type", "BPE"},
               {"dropout", nullptr},
               {"unk_token", sp.unk_token ? ojson(*sp.unk_token) : ojson()},
               {"continuing_subword_prefix", nullptr},
               {"end_of_word_suffix", nullptr},
               {"fuse_unk", sp.fuse_unk},
               {"byte_fallback", sp.byte_fallback},
               {"ignore_merges", ignore_merges_},
               {"vocab", model_vocab(sp.id_of)},
               {"merges", merges}};
    }
    const ojson doc = {{"version", "1.0"},
                       {"truncation", nullptr},
                       {"padding", nullptr},
                       {"added_tokens", added},
                       {"normalizer", ojson::parse(sp.normalizer_json)},
                       {"pre_tokenizer", ojson::parse(sp.pre_tokenizer_json)},
                       {"post_processor", post_processor},
                       {"decoder", ojson::parse(sp.decoder_json)},
                       {"model", model}};
    return doc.dump(2) + "\n";
  }
  if (wordpiece_) {
    const detail::WordPieceModel& wp = *wordpiece_;
    ojson normalizer;
    if (wp.normalizer) {
      normalizer = {{"type", "BertNormalizer"},
                    {"clean_text", wp.normalizer->clean_text},
                    {"handle_chinese_chars", wp.normalizer->handle_chinese_chars},
                    {"strip_accents", wp.strip_accents_given ? ojson(wp.normalizer->strip_accents) : ojson()},
                    {"lowercase", wp.normalizer->lowercase}};
    }
    const ojson decoder =
        wp.decoder_prefix ? ojson{{"type", "WordPiece"}, {"prefix", *wp.decoder_prefix}, {"cleanup", wp.cleanup}}
                          : ojson();
    const ojson doc = {{"version", "1.0"},
                       {"truncation", nullptr},
                       {"padding", nullptr},
                       {"added_tokens", added},
                       {"normalizer", normalizer},
                       {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
                       {"post_processor", post_processor},
                       {"decoder", decoder},
                       {"model",
                        {{"type", "WordPiece"},
                         {"unk_token", wp.unk_token},
                         {"continuing_subword_prefix", wp.prefix},
                         {"max_input_chars_per_word", wp.max_chars},
                         {"vocab", model_vocab(wp.id_of)}}}};
    return doc.dump(2) + "\n";
  }
  ojson vocab = ojson::object();
  for (int64_t id = 0; id < vocab_size(); ++id) vocab[token_to_string(id)] = id;
  ojson merges = ojson::array();
  for (const auto& [a, b] : merges_) merges.push_back(token_to_string(a) + " " + token_to_string(b));
  const std::string normal_form = normalizer();
  ojson doc = {{"version", "1.0"},
               {"truncation", nullptr},
               {"padding", nullptr},
               {"added_tokens", added},
               {"normalizer", normal_form.empty() ? ojson() : ojson{{"type", normal_form}}},
               {"pre_tokenizer", ojson::parse(pre_tokenizer_json())},
               {"post_processor", post_processor},
               {"decoder", byte_level_json(true, true)},
               {"model",
                {{"type", "BPE"},
                 {"dropout", nullptr},
                 {"unk_token", nullptr},
                 {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr},
                 {"fuse_unk", false},
                 {"byte_fallback", false},
                 {"ignore_merges", ignore_merges_},
                 {"vocab", vocab},
                 {"merges", merges}}}};
  return doc.dump(2) + "\n";
}

std::string Tokenizer::model() const {
  return wordpiece_ ? "WordPiece" : sentencepiece_ && sentencepiece_->unigram ? "Unigram" : "BPE";
}

std::string Tokenizer::pre_tokenizer_json() const {
  using ojson = nlohmann::ordered_json;
  if (wordpiece_ || sentencepiece_) return "null";
  if (!pre_ || pre_->splits.empty()) return byte_level_json(add_prefix_space_, true).dump();
  ojson items = ojson::array();
  for (const detail::PreTokenizer::Split& split : pre_->splits) {
    items.push_back({{"type", "Split"},
                     {"pattern", {{split.literal ? "String" : "Regex", split.pattern}}},
                     {"behavior", split_behavior_name(split.behavior)},
                     {"invert", split.invert}});
  }
  items.push_back(byte_level_json(false, pre_->byte_level_regex));
  return ojson{{"type", "Sequence"}, {"pretokenizers", items}}.dump();
}

std::string Tokenizer::normalizer() const {
  if (!pre_ || !pre_->normalizer) return "";
  return unicode::normal_form_name(*pre_->normalizer);
}

void Tokenizer::save(const std::string& path) const { checkpoint::write_text_atomically(path, to_json()); }

void Tokenizer::merge(std::vector<int64_t>& ids) const {
  // Hugging Face's Word::merge_all: a min-heap of (rank, position); stale entries are skipped when popped.
  struct Symbol {
    int64_t id;
    int32_t prev, next;
    bool alive;
  };
  struct Entry {
    int32_t rank, pos;
    int64_t merged;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const auto n = static_cast<int32_t>(ids.size());
  if (n < 2) return;
  std::vector<Symbol> sym(static_cast<size_t>(n));
  std::vector<Entry> heap;
  const auto push = [&](int32_t pos, int32_t right) {
    const auto m = merge_of_.find(pair_key(sym[pos].id, sym[right].id));
    if (m == merge_of_.end()) return;
    heap.push_back({m->second.first, pos, m->second.second});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i < n; ++i) sym[i] = {ids[static_cast<size_t>(i)], i - 1, i + 1 < n ? i + 1 : -1, true};
  for (int32_t i = 0; i + 1 < n; ++i) push(i, i + 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Entry top = heap.back();
    heap.pop_back();
    Symbol& s = sym[top.pos];
    if (!s.alive || s.next < 0) continue;
    const int32_t right = s.next;
    const auto m = merge_of_.find(pair_key(s.id, sym[right].id));
    if (m == merge_of_.end() || m->second.second != top.merged) continue;
    s.id = top.merged;
    s.next = sym[right].next;
    sym[right].alive = false;
    if (s.next >= 0) sym[s.next].prev = top.pos;
    if (s.prev >= 0) push(s.prev, top.pos);
    if (s.next >= 0) push(top.pos, s.next);
  }
  ids.clear();
  for (int32_t i = 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int64_t>& out, Cache& cache) const {
  if (piece.size() == 1 && !sentencepiece_) {
    out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  const std::string key(piece);
  if (ignore_merges_) {  // SentencePiece-style pieces are spelt as the vocabulary is: its own lookup serves
    const auto& whole_of = sentencepiece_ ? sentencepiece_->id_of : whole_of_;
    if (const auto whole = whole_of.find(key); whole != whole_of.end()) return out.push_back(whole->second);
  }
  if (const auto hit = cache.find(key); hit != cache.end()) {
    out.insert(out.end(), hit->second.begin(), hit->second.end());
    return;
  }
  std::vector<int64_t> ids;
  if (sentencepiece_ && sentencepiece_->unigram) {
    sentencepiece_->unigram->encode(piece, ids);
  } else {
    if (sentencepiece_) initial_characters(piece, ids);
    else for (unsigned char b : piece) ids.push_back(byte_ids_[b]);
    merge(ids);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  cache.emplace(key, std::move(ids));
}

void Tokenizer::encode_words(std::string_view text, std::vector<int64_t>& out, Cache& cache) const {
  const std::string& space = sentencepiece_->cut_before;
  if (space.empty()) return encode_piece(text, out, cache);
  size_t from = 0;  // cut before each `space` that follows another character: no token spans such a cut
  for (size_t at = text.find(space, 1); at != std::string_view::npos; at = text.find(space, at + space.size())) {
    if (at >= space.size() && text.compare(at - space.size(), space.size(), space) == 0) continue;
    encode_piece(text.substr(from, at - from), out, cache);
    from = at;
  }
  encode_piece(text.substr(from), out, cache);
}

void Tokenizer::initial_characters(std::string_view word, std::vector<int64_t>& ids) const {
  // Hugging Face's BPE::merge_word: each character's token; else, with byte_fallback, its bytes' <0xXX> tokens when
  // all are in the vocabulary; else the unknown token (consecutive ones fused with fuse_unk; with neither, the
  // character is left out). As there, an unknown token waiting to be fused goes after byte tokens that follow it.
  const detail::SentencePieceModel& sp = *sentencepiece_;
  bool unknown = false;
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::max<size_t>(decode_utf8(word, i).second, 1);  // a byte that is not UTF-8: a character
    const std::string_view c = word.substr(i, n);
    i += n;
    if (const auto it = sp.id_of.find(std::string(c)); it != sp.id_of.end()) {
      if (unknown) ids.push_back(sp.unk_id), unknown = false;
      ids.push_back(it->second);
      continue;
    }
    if (sp.byte_fallback && std::all_of(c.begin(), c.end(), [&](char b) { return sp.byte_id[static_cast<unsigned char>(b)] >= 0; })) {
      for (unsigned char b : c) ids.push_back(sp.byte_id[b]);
      continue;
    }
    if (sp.unk_id < 0) continue;
    if (unknown && !sp.fuse_unk) ids.push_back(sp.unk_id);
    unknown = true;
  }
  if (unknown) ids.push_back(sp.unk_id);
}

void Tokenizer::encode_word(std::string_view word, std::vector<int64_t>& out) const {
  // Hugging Face's WordPiece::tokenize: from each start, the longest piece in the vocabulary (with the prefix after
  // the first); a word with a part no piece covers is the unknown token, whole.
  const detail::WordPieceModel& wp = *wordpiece_;
  const size_t first = out.size();
  if (bert::characters(word) > static_cast<size_t>(wp.max_chars)) return out.push_back(wp.unk_id);
  std::string piece;
  for (size_t start = 0; start < word.size();) {
    int64_t found = -1;
    size_t end = word.size();
    while (start < end) {
      piece.assign(start > 0 ? wp.prefix : std::string());
      piece.append(word.substr(start, end - start));
      if (const auto it = wp.id_of.find(piece); it != wp.id_of.end()) {
        found = it->second;
        break;
      }
      end -= bert::last_character_size(word.substr(start, end - start));
    }
    if (found < 0) {
      out.resize(first);
      return out.push_back(wp.unk_id);
    }
    out.push_back(found);
    start = end;
  }
}

std::vector<int64_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int64_t> out;
  if (add_special_tokens) out = prefix_;
  if (wordpiece_) {
    // Added tokens not normalized are cut out of the raw text; the parts between are normalized, then the normalized
    // added tokens are cut out of them, and what remains is split into words, each cut into pieces.
    const auto words = [&](std::string_view part) {
      for (std::string_view word : bert::pre_tokenize(part)) encode_word(word, out);
    };
    split_added(text, raw_order_, out, [&](std::string_view part) {
      const std::string normalized =
          wordpiece_->normalizer ? bert::normalize(part, *wordpiece_->normalizer) : std::string(part);
      split_added(normalized, normalized_order_, out, words);
    });
    if (add_special_tokens) out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }
  Cache cache;
  if (sentencepiece_) {
    // Added tokens not normalized are cut out of the raw text; each part between is normalized, the normalized added
    // tokens are cut out of it, and Metaspace (when there is one) cuts what remains into words.
    const detail::SentencePieceModel& sp = *sentencepiece_;
    split_added(text, raw_order_, out, [&](std::string_view part) {
      const bool at_start = part.data() == text.data();
      const std::string normalized = sentencepiece::normalize(part, sp.normalizer);
      const auto metaspace = [&](std::string_view words) {  // `words` at the start of the text: Prepend::first's place
        if (!sp.metaspace) return encode_words(words, out, cache);
        const bool first = at_start && words.data() == normalized.data();
        for (const std::string& word : sentencepiece::pre_tokenize(words, *sp.metaspace, first))
          encode_words(word, out, cache);  // Metaspace's split made words already; else the text is one
      };
      split_added(normalized, normalized_order_, out, [&](std::string_view words) {
        if (!sp.whitespace_split) return metaspace(words);
        for (std::string_view piece : sentencepiece::whitespace_split(words)) metaspace(piece);
      });
    });
    if (add_special_tokens) out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }
  // Added tokens not normalized are cut out of the raw text; each part between is normalized (when the tokenizer
  // has a normalizer), the normalized added tokens are cut out of it, and the pre-tokenizer cuts what remains.
  std::string prefixed;
  std::vector<std::string_view> pieces;
  const auto encode_text = [&](std::string_view part) {
    if (add_prefix_space_ && part.front() != ' ') {
      prefixed = " ";
      prefixed += part;
      part = prefixed;
    }
    pieces.clear();
    cut_text(part, pieces);
    for (std::string_view p : pieces) encode_piece(p, out, cache);
  };
  const auto* normalizer = pre_ && pre_->normalizer ? &*pre_->normalizer : nullptr;
  split_added(text, raw_order_, out, [&](std::string_view part) {
    if (normalizer == nullptr) return split_added(part, normalized_order_, out, encode_text);
    const std::string normalized = unicode::normalize(part, *normalizer);
    split_added(normalized, normalized_order_, out, encode_text);
  });
  if (add_special_tokens) out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

void Tokenizer::cut_text(std::string_view text, std::vector<std::string_view>& out) const {
  if (pre_) cut_pieces(*pre_, text, out);
  else cut_by(Pattern::gpt2, text, out);
}

const std::string& Tokenizer::token_bytes(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw InputError(fmt::format("tokenizer: token id {} is outside the vocabulary [0, {})", id, vocab_size()));
  return tokens_[static_cast<size_t>(id)];
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string out;
  std::vector<std::string_view> pieces;  // WordPiece's, for its decoder
  std::vector<std::string> spelt;       // SentencePiece-style BPE's, for its decoder
  for (int64_t id : ids) {
    const std::string& bytes = token_bytes(id);
    if (skip_special_tokens && is_special(id)) continue;
    if (sentencepiece_) {
      spelt.push_back(bytes);
    } else if (wordpiece_) {
      pieces.push_back(bytes);
    } else {
      out += bytes;
    }
  }
  if (sentencepiece_) return sentencepiece::decode(std::move(spelt), sentencepiece_->decoder);
  if (!wordpiece_) return out;
  if (wordpiece_->decoder_prefix) return bert::decode(pieces, *wordpiece_->decoder_prefix, wordpiece_->cleanup);
  return fmt::format("{}", fmt::join(pieces, " "));  // no decoder: Hugging Face joins the tokens with spaces
}

std::string Tokenizer::token_to_string(int64_t id) const {
  const std::string& bytes = token_bytes(id);
  return added_of_[static_cast<size_t>(id)] >= 0 || !byte_level() ? bytes : spell(bytes);
}

int64_t Tokenizer::string_to_token(const std::string& spelling) const {
  for (const AddedToken& a : added_)
    if (a.content == spelling) return a.id;
  if (!byte_level()) {
    const auto& id_of = wordpiece_ ? wordpiece_->id_of : sentencepiece_->id_of;
    const auto it = id_of.find(spelling);
    return it == id_of.end() ? -1 : it->second;
  }
  std::string bytes;
  if (!unspell(spelling, bytes)) return -1;
  for (int64_t id = 0; id < vocab_size(); ++id)
    if (added_of_[static_cast<size_t>(id)] < 0 && tokens_[static_cast<size_t>(id)] == bytes) return id;
  return -1;
}

bool Tokenizer::is_special(int64_t id) const {
  token_bytes(id);
  const int32_t k = added_of_[static_cast<size_t>(id)];
  return k >= 0 && added_[static_cast<size_t>(k)].special;
}

std::vector<std::string> Tokenizer::special_tokens() const {
  std::vector<std::string> out;
  for (const AddedToken& a : added_)
    if (a.special) out.push_back(a.content);
  return out;
}

std::string Tokenizer::describe() const {
  const auto specials = static_cast<int64_t>(special_tokens().size());
  const auto others = static_cast<int64_t>(added_.size()) - specials;
  const std::string added = others > 0 ? fmt::format(", {} other added", others) : "";
  std::string pattern;
  if (pattern_ == Pattern::llama3) pattern = " (Llama 3's pattern)";
  if (pattern_ == Pattern::qwen2) pattern = " (Qwen2's pattern)";
  if (pattern_ == Pattern::o200k) pattern = " (GPT-4o's o200k pattern)";
  if (pattern_ == Pattern::custom) {
    pattern = fmt::format(" ({} Split pre-tokenizer{}{})", pre_->splits.size(), pre_->splits.size() == 1 ? "" : "s",
                          pre_->byte_level_regex ? ", then GPT-2's pattern" : "");
  }
  if (!normalizer().empty()) pattern += ", " + normalizer() + "-normalized";
  std::string out = fmt::format("byte-level BPE{}, {} tokens ({} special{}), {} merges{}", pattern, vocab_size(),
                                specials, added, merges_.size(),
                                ignore_merges_ ? ", whole pieces in the vocabulary unmerged" : "");
  if (sentencepiece_ && sentencepiece_->unigram) {
    const detail::SentencePieceModel& sp = *sentencepiece_;
    out = fmt::format("Unigram, {} tokens ({} special{}){}{}", vocab_size(), specials, added,
                      sp.byte_fallback ? ", byte fallback" : "",
                      sp.unk_token ? ", unknown " + *sp.unk_token : std::string());
  } else if (sentencepiece_) {
    const detail::SentencePieceModel& sp = *sentencepiece_;
    out = fmt::format("SentencePiece-style BPE, {} tokens ({} special{}), {} merges{}{}{}", vocab_size(), specials,
                      added, merges_.size(), sp.byte_fallback ? ", byte fallback" : "",
                      sp.unk_token ? ", unknown " + *sp.unk_token : std::string(),
                      ignore_merges_ ? ", whole pieces in the vocabulary unmerged" : "");
  }
  if (wordpiece_) {
    std::vector<std::string> steps;
    if (const auto& n = wordpiece_->normalizer) {
      if (n->lowercase) steps.emplace_back("lowercased");
      if (n->strip_accents) steps.emplace_back("accents stripped");
      if (n->handle_chinese_chars) steps.emplace_back("CJK ideographs split");
      if (steps.empty()) steps.emplace_back("case and accents kept");
    } else {
      steps.emplace_back("not normalized");
    }
    out = fmt::format("WordPiece, {} tokens ({} special{}), {}", vocab_size(), specials, added, fmt::join(steps, ", "));
  }
  if (prefix_.empty() && suffix_.empty()) return out;
  std::vector<std::string> around;
  for (int64_t id : prefix_) around.push_back(token_to_string(id));
  around.emplace_back("…");
  for (int64_t id : suffix_) around.push_back(token_to_string(id));
  return out + "; encode(text, true) gives " + fmt::format("{}", fmt::join(around, " "));
}

std::string Tokenizer::fingerprint() const {
  uint64_t h = 1469598103934665603ull;
  const auto mix = [&](const void* data, size_t size) {
    for (size_t i = 0; i < size; ++i) h = (h ^ static_cast<const unsigned char*>(data)[i]) * 1099511628211ull;
  };
  for (int64_t id = 0; id < vocab_size(); ++id) {
    const std::string s = token_to_string(id);
    mix(s.data(), s.size() + 1);
    const int32_t k = added_of_[static_cast<size_t>(id)];
    const char added = k >= 0 ? 1 : 0;
    mix(&added, 1);
    if (k < 0) continue;
    const AddedToken& a = added_[static_cast<size_t>(k)];
    const char flags = static_cast<char>((a.special ? 0 : 1) | a.lstrip << 1 | a.rstrip << 2 | a.single_word << 3 |
                                         a.normalized << 4);
    if (flags != 0) mix(&flags, 1);  // the defaults leave the fingerprints of earlier versions as they were
  }
  for (const auto& m : merges_) mix(&m, sizeof m);
  mix(&add_prefix_space_, 1);
  if (pattern_ != Pattern::gpt2 || ignore_merges_) {  // GPT-2's fingerprints stay as they were
    std::string settings = pattern_ == Pattern::custom ? pre_tokenizer_json() : pattern_name(pattern_);
    if (ignore_merges_) settings += " ignore_merges";
    mix(settings.data(), settings.size());
  }
  if (!normalizer().empty()) mix(normalizer().data(), normalizer().size());
  if (wordpiece_) {  // the model and normalizer settings (byte-level BPE's fingerprints stay as they were)
    const detail::WordPieceModel& wp = *wordpiece_;
    const std::string settings = fmt::format(
        "WordPiece {} {} {} {} {}", wp.unk_token, wp.prefix, wp.max_chars,
        wp.normalizer ? fmt::format("{}{}{}{}", wp.normalizer->clean_text, wp.normalizer->handle_chinese_chars,
                                    wp.normalizer->strip_accents, wp.normalizer->lowercase)
                      : "none",
        wp.decoder_prefix ? fmt::format("{} {}", *wp.decoder_prefix, wp.cleanup) : "none");
    mix(settings.data(), settings.size());
  }
  if (sentencepiece_) {  // the text steps as read, and the model's settings
    const detail::SentencePieceModel& sp = *sentencepiece_;
    const std::string settings = fmt::format("SentencePiece {} {} {} {}{} {}", sp.normalizer_json, sp.pre_tokenizer_json,
                                             sp.decoder_json, sp.byte_fallback, sp.fuse_unk, sp.unk_token.value_or(""));
    mix(settings.data(), settings.size());
    if (sp.unigram) mix(sp.unigram->scores().data(), sp.unigram->scores().size() * sizeof(double));
  }
  if (!prefix_.empty() || !suffix_.empty()) {
    for (const auto* ids : {&prefix_, &suffix_}) {
      const auto count = static_cast<int64_t>(ids->size());
      mix(&count, sizeof count);
      mix(ids->data(), ids->size() * sizeof(int64_t));
    }
  }
  return fmt::format("{:016x}", h);
}

}  // namespace tessera::data
