#pragma once
// The regular expressions of Hugging Face's Split pre-tokenizer (tokenizer.json's `{"Regex": …}` patterns), in the
// syntax and with the matching rules of its engine, Oniguruma: leftmost match, alternatives tried in order,
// quantifiers greedy unless lazy (`*?`) or possessive (`*+`), Unicode classes of Unicode 16.0 (unicode_classes.inc).
// Checked against Hugging Face on every code point (tests/core/tokenizer_interop_test.cpp). Used by byte-level BPE
// tokenizers (src/data/tokenizer.cpp) whose pattern is not one of the hand-written ones.
//
// Supported: literal characters and escapes (\t \n \r \f \v \e \a, \xHH, \x{H…}, \uHHHH, an escaped punctuation
// character); `.` (any character but a line feed); \s \S \d \D \w \W \h \H; \p{…} \P{…} \p{^…} with a general category
// (L, Lu, Letter, Uppercase_Letter, LC, M, N, P, S, Z, C and their subcategories, in any case) or Any; bracket classes
// with ranges, negation, escapes and nested brackets; groups (?:…) (…) (?<name>…), (?i:…) (?-i:…) (?i) (?-i),
// lookahead (?=…) (?!…), atomic groups (?>…); quantifiers ? * + {n} {n,} {n,m} {,m}, lazy and possessive.
// Refused (RegexError naming the construct and where it is): anchors (^ $ \A \z \Z \b \B \G), back-references,
// lookbehind, scripts and other properties (\p{Han}), POSIX brackets ([:alpha:]), class intersection (&&), other
// escapes, and under (?i) what Oniguruma's case folding would match beyond Unicode's simple folding: a bracket class
// holding an escape class or a property, and a literal whose full case folding is several characters (ß, ﬁ) or that
// holds such a folding ("ss").
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tessera/error.h>

namespace tessera::data {

/// A pattern Tessera cannot compile (what, and where: the character offset in the pattern), or one that takes too
/// many steps on a text (catastrophic backtracking) or nests too deep for the stack.
struct RegexError : InputError {
  using InputError::InputError;
};

class SplitRegex {
 public:
  /// Compiles `pattern` (UTF-8). Throws RegexError.
  explicit SplitRegex(std::string_view pattern);

  /// The [start, end) byte offsets of the matches in `text`, left to right, as Oniguruma's search finds them and
  /// Hugging Face's Split takes them: each search starts where the last match ended; an empty match right where the
  /// last one ended is skipped (the search starts one character further). A byte that starts no valid UTF-8
  /// character is one character that is no letter, number, mark, punctuation, symbol, separator, space or word
  /// character. RegexError when the search takes more than 100,000 steps plus 256 per byte of the text
  /// (catastrophic backtracking, such as (a*)*b's on a run of a's), rather than run for ages.
  std::vector<std::pair<size_t, size_t>> matches(std::string_view text) const;

  /// A class of characters: categories, ranges, built-in classes and nested classes, negated or not.
  struct Set {
    enum Builtin { none, space, word };
    bool negated = false;
    bool any = false;         ///< \p{Any}
    Builtin builtin = none;   ///< \s, \w
    uint32_t categories = 0;  ///< a bit per general category
    std::vector<std::pair<uint32_t, uint32_t>> ranges;
    std::vector<int> subsets;  ///< nested classes (indexes in sets_)
    bool fold = false;         ///< (?i): a character also matches when a case variant of it does
  };

  /// A node of the pattern: a character class (a literal character is one too), a sequence, alternatives, a
  /// quantifier, a lookahead or an atomic group.
  struct Node {
    enum Kind { set, seq, alt, repeat, look, atomic };
    enum Mode { greedy, lazy, possessive };
    Kind kind = seq;
    int set_index = -1;
    std::vector<int> children;
    int min = 0, max = -1;  ///< repeat: -1 is unbounded
    Mode mode = greedy;
    bool negate = false;  ///< look: (?!…)
  };

 private:
  std::vector<Node> nodes_;
  std::vector<Set> sets_;
  int root_ = -1;
  friend class RegexParser;
  friend class RegexMatcher;
};

/// What Hugging Face's Split does with the matches (its SplitDelimiterBehavior).
enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };
/// "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous", as tokenizer.json spells them; and
/// back (false when `name` is none of them).
const char* split_behavior_name(SplitBehavior behavior);
bool split_behavior_from_name(const std::string& name, SplitBehavior& out);

/// The pieces Split cuts `text` into, given the matches (`invert`: the text between them counts as the matches).
/// Empty pieces are left out, as Hugging Face does.
std::vector<std::string_view> split_pieces(std::string_view text, const std::vector<std::pair<size_t, size_t>>& matches,
                                           SplitBehavior behavior, bool invert);

}  // namespace tessera::data
