// The Split pre-tokenizer's regex engine (src/data/split_regex.h) and Unicode normalization (src/data/normalization.h):
// Oniguruma's rules as Hugging Face's Split shows them, the hand-written patterns' pieces on every code point, and the
// refusals. tests/core/tokenizer_interop_test.cpp checks both against Hugging Face itself.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <tessera/data/tokenizer.h>
#include <tessera/error.h>

#include "../../src/data/normalization.h"
#include "../../src/data/split_regex.h"
#include "core/unicode_texts.h"

namespace tessera {
namespace {

using data::SplitBehavior;
using data::SplitRegex;

std::vector<std::string> cut(const std::string& pattern, const std::string& text,
                             SplitBehavior behavior = SplitBehavior::isolated, bool invert = false) {
  const SplitRegex re(pattern);
  std::vector<std::string> out;
  for (std::string_view piece : data::split_pieces(text, re.matches(text), behavior, invert)) out.emplace_back(piece);
  return out;
}

using Pieces = std::vector<std::string>;

// Each expectation is what Hugging Face tokenizers 0.22.2's Split gives (Removed shows what matched).
TEST(SplitRegex, FollowsOnigurumasRulesAsHuggingFacesSplitShowsThem) {
  const auto removed = SplitBehavior::removed;
  EXPECT_EQ(cut(".", "a\nb\rc", removed), Pieces{"\n"});  // any character but a line feed
  EXPECT_EQ(cut("[]a]", "]ab", removed), Pieces{"b"});    // a ] first in a bracket is itself
  EXPECT_EQ(cut("a{2,}+", "aaaaab", removed), Pieces{"b"});  // {n,}+ repeats the repeat (Ruby syntax)
  EXPECT_EQ(cut("a{2}?", "aaab", removed), (Pieces{"a", "b"}));
  EXPECT_EQ(cut("a{,2}", "aaab", removed), Pieces{"b"});
  EXPECT_EQ(cut("(?i)a|b", "AB", removed), Pieces{});
  EXPECT_EQ(cut("x(?i)a|b", "xAB", removed), Pieces{"B"});  // x(?i:a|b)
  EXPECT_EQ(cut("(?i:\\p{Lu}+)", "ABCabc1", removed), Pieces{"abc1"});  // properties are not folded
  EXPECT_EQ(cut("(?i:[A-C]+)", "abcABCxyz", removed), Pieces{"xyz"});   // brackets are
  EXPECT_EQ(cut("(?i:[^a])", "aAbB", removed), Pieces{"aA"});
  EXPECT_EQ(cut("(?i:s)", "sS\xC5\xBFx", removed), Pieces{"x"});  // long s folds to s
  EXPECT_EQ(cut("a+?", "aaa", removed), Pieces{});
  EXPECT_EQ(cut("a++a", "aaa", removed), Pieces{"aaa"});  // possessive: no backtracking
  EXPECT_EQ(cut("(?>a+)a", "aaa", removed), Pieces{"aaa"});
  EXPECT_EQ(cut("a*+b", "aab", removed), Pieces{});
  EXPECT_EQ(cut("\\s+(?=x)", "a  x", removed), (Pieces{"a", "x"}));
  EXPECT_EQ(cut("\\s+(?!\\S)", "a  x", removed), (Pieces{"a", " x"}));
  EXPECT_EQ(cut("\\x{41}|\\u0042|\\x43|\\-", "ABCD-", removed), Pieces{"D"});
  EXPECT_EQ(cut("\\p{Any}", "aB1", removed), Pieces{});
  EXPECT_EQ(cut("\\p{ L }", "aB1 .", removed), Pieces{"1 ."});
  EXPECT_EQ(cut("\\p{Cased_Letter}", "aB1 .", removed), Pieces{"1 ."});
  EXPECT_EQ(cut("\\p{^L}|\\P{N}", "a1", removed), Pieces{});
  EXPECT_EQ(cut("[\\w-]", "a-b!", removed), Pieces{"!"});
  EXPECT_EQ(cut("[a\\-z]", "a-b!z", removed), Pieces{"b!"});
  EXPECT_EQ(cut("\\h+", "0fG", removed), Pieces{"G"});
  EXPECT_EQ(cut("[[a-c]x]+", "abxd", removed), Pieces{"d"});
  EXPECT_EQ(cut("\\d+", "12\xD9\xA3x\xC2\xB2", removed), (Pieces{"x\xC2\xB2"}));  // Arabic-Indic 3 is Nd, ² is No
  // Empty matches: one right where the last match ended is passed over (the search moves on a character).
  EXPECT_EQ(cut("x*", "aaxxa"), (Pieces{"a", "a", "xx", "a"}));
  // The behaviors, and invert.
  EXPECT_EQ(cut("a", "baab", removed), (Pieces{"b", "b"}));
  EXPECT_EQ(cut("a", "baab", SplitBehavior::merged_with_previous), (Pieces{"ba", "a", "b"}));
  EXPECT_EQ(cut("a", "baab", SplitBehavior::merged_with_next), (Pieces{"b", "a", "ab"}));
  EXPECT_EQ(cut("a", "baab", SplitBehavior::contiguous), (Pieces{"b", "aa", "b"}));
  EXPECT_EQ(cut("a", "baab", SplitBehavior::isolated, true), (Pieces{"b", "a", "a", "b"}));
  EXPECT_EQ(cut("a", "baab", removed, true), (Pieces{"a", "a"}));
  // A byte that is not UTF-8 is a character of no class: only negated classes match it.
  EXPECT_EQ(cut("[^\\s\\p{L}\\p{N}]+", "a\xFF\xFE.b", removed), (Pieces{"a", "b"}));
  EXPECT_EQ(cut("\\p{Any}", "\xFF", removed), Pieces{"\xFF"});
}

TEST(SplitRegex, RefusesWhatItDoesNotReadSayingWhereAndWhy) {
  const auto refused = [](const std::string& pattern, const std::string& expected) {
    try {
      SplitRegex re(pattern);
      ADD_FAILURE() << pattern << " was compiled";
    } catch (const data::RegexError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << pattern << ": " << e.what();
    }
  };
  refused("^a", "at character 0: the anchor ^");
  refused("a$", "at character 1: the anchor $");
  refused("a\\b", "at character 2: the escape \\b (not supported: anchors, back-references");
  refused("(a)\\1", "the escape \\1");
  refused("(?<=a)b", "at character 0: lookbehind");
  refused("\\p{Han}", "the property {Han}: Tessera knows the general categories");
  refused("[[:alpha:]]", "POSIX bracket");
  refused("[a-z&&[^c]]", "class intersection");
  refused("(?i:ss)", "the full case folding of \xC3\x9F (U+00DF)");
  refused("(?i:\xC3\x9F)", "under (?i), \xC3\x9F (U+00DF), whose full case folding is several characters");
  refused("(?i:[\\w])", "under (?i), a bracket class holding");
  refused("(ab", "at character 0: a ( without its )");
  refused("ab)", "at character 2: an unmatched )");
  refused("[ab", "at character 0: a [ without its ]");
  refused("*a", "at character 0: a quantifier with nothing before it");
  refused("a{3,2}", "a repeat {3,2} whose maximum is below its minimum");
  refused("[z-a]", "the range z-a whose end is before its start");
  refused("\\x{110000}", "a code point above U+10FFFF");
  refused("a\xFF", "byte 1 is not valid UTF-8");
  refused("a(?x:a)", "at character 1: the group (?x");
  refused("a\\", "a \\ at the end of the pattern");
}

// What would run for ages or overflow the stack stops with a RegexError (an InputError) instead.
TEST(SplitRegex, StopsCatastrophicBacktrackingAndDeepNestingWithAnError) {
  const auto error_of = [](const std::string& pattern, const std::string& text) {
    try {
      SplitRegex(pattern).matches(text);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("(a*)*b", std::string(40, 'a')).find("steps on a text of 40 bytes, at byte 0 "
                                                          "(catastrophic backtracking)"),
            std::string::npos);
  EXPECT_NE(error_of("(?:ab|c)+", std::string(20000, 'c') + "ab").find("more than 2000 nested steps"),
            std::string::npos);
  // One character per alternative is one class: no nesting however long the run.
  EXPECT_EQ(cut("(?:a|b|\\s)+", std::string(100000, 'a') + " b!").size(), 2u);
  EXPECT_EQ(cut("(a*)*b", std::string(40, 'a') + "b"), Pieces{std::string(40, 'a') + "b"});
}

// The regex engine, given the hand-written patterns' regexes, cuts every text as the hand-written code does.
TEST(SplitRegex, CutsAsTheHandWrittenPatternsOnEveryCodePoint) {
  std::vector<std::string> texts = test::every_code_point_in_context(256);
  texts.back() += "\xFF 'S\xFE\xC0x\xE2\x82 12345 \n\n ";  // and bytes that are not UTF-8
  for (const data::Pattern pattern : {data::Pattern::gpt2, data::Pattern::llama3, data::Pattern::qwen2}) {
    SCOPED_TRACE(data::pattern_name(pattern));
    const SplitRegex re(data::pattern_regex(pattern));
    int wrong = 0;
    for (size_t i = 0; i < texts.size() && wrong < 3; ++i) {
      const auto ours = data::split_pieces(texts[i], re.matches(texts[i]), SplitBehavior::isolated, false);
      if (ours == data::pretokenize(texts[i], pattern)) continue;
      ++wrong;
      ADD_FAILURE() << "text " << i << " (code points from " << i * 256 << ") is cut otherwise";
    }
  }
}

TEST(Normalization, ComposesAndDecomposesAsUnicode9) {
  using data::unicode::NormalForm;
  const auto nfc = [](const std::string& s) { return data::unicode::normalize(s, NormalForm::nfc); };
  const auto nfd = [](const std::string& s) { return data::unicode::normalize(s, NormalForm::nfd); };
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");                          // e + acute: é
  EXPECT_EQ(nfd("\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo: 각
  EXPECT_EQ(nfd("\xEA\xB0\x81"), "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8");
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");  // Angstrom sign: its singleton decomposition, Å
  // Marks put in canonical order (dot below, 220, before acute, 230), then composed: ạ́ is U+1EA1 + U+0301.
  EXPECT_EQ(nfd("a\xCC\x81\xCC\xA3"), "a\xCC\xA3\xCC\x81");
  EXPECT_EQ(nfc("a\xCC\x81\xCC\xA3"), "\xE1\xBA\xA1\xCC\x81");
  EXPECT_EQ(nfc("\xE0\xA5\x98"), "\xE0\xA4\x95\xE0\xA4\xBC");  // U+0958 is excluded from composition
  // U+11938 (Unicode 13) decomposes in today's Unicode, not in Unicode 9's data that Hugging Face's crate holds.
  EXPECT_EQ(nfd("\xF0\x91\xA4\xB8"), "\xF0\x91\xA4\xB8");
  EXPECT_EQ(nfc("ascii stays"), "ascii stays");
  EXPECT_EQ(nfc("\xFF" "e\xCC\x81\xC0"), "\xFF\xC3\xA9\xC0");  // bytes that are not UTF-8 stay as they are
}

}  // namespace
}  // namespace tessera
