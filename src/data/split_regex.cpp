#include "split_regex.h"

#include <algorithm>
#include <cctype>
#include <iterator>
#include <unordered_map>

#include <fmt/format.h>

#include "unicode.h"

namespace tessera::data {
namespace {

using unicode::CodeClass;
using unicode::CodeFold;
using unicode::CodeMapping;
using unicode::CodeRange;
#include "unicode_classes.inc"

/// The code point of a byte that starts no valid UTF-8 character: in no category, matched only by negated classes.
constexpr uint32_t kInvalid = 0xFFFFFFFF;
/// General categories, in the generator's order (scripts/gen-unicode-classes.py CATEGORIES).
enum Category : uint32_t { Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe, Pi, Pf, Po, Sm, Sc, Sk, So,
                           Zs, Zl, Zp, Cc, Cf, Cs, Co, Cn };
constexpr uint32_t bit(Category c) { return 1u << c; }
constexpr uint32_t kL = bit(Lu) | bit(Ll) | bit(Lt) | bit(Lm) | bit(Lo), kM = bit(Mn) | bit(Mc) | bit(Me),
                   kN = bit(Nd) | bit(Nl) | bit(No),
                   kP = bit(Pc) | bit(Pd) | bit(Ps) | bit(Pe) | bit(Pi) | bit(Pf) | bit(Po),
                   kS = bit(Sm) | bit(Sc) | bit(Sk) | bit(So), kZ = bit(Zs) | bit(Zl) | bit(Zp),
                   kC = bit(Cc) | bit(Cf) | bit(Cs) | bit(Co) | bit(Cn);

Category category(uint32_t cp) {
  static const std::vector<uint8_t> bmp = [] {
    std::vector<uint8_t> table(0x10000, Cn);
    for (const CodeClass& r : kCategories) {
      for (uint32_t c = r.first; c <= r.last && c < 0x10000; ++c) table[c] = static_cast<uint8_t>(r.value);
    }
    return table;
  }();
  if (cp < 0x10000) return static_cast<Category>(bmp[cp]);
  return static_cast<Category>(unicode::value_in(cp, std::begin(kCategories), std::end(kCategories), Cn));
}

uint32_t simple_fold(uint32_t cp) {
  const CodeFold* it = std::lower_bound(std::begin(kSimpleFold), std::end(kSimpleFold), cp,
                                        [](const CodeFold& f, uint32_t c) { return f.code_point < c; });
  return it != std::end(kSimpleFold) && it->code_point == cp ? it->fold : cp;
}

/// The code points whose simple case folding is that of `cp` (cp among them).
std::vector<uint32_t> case_variants(uint32_t cp) {
  static const auto by_fold = [] {
    std::unordered_map<uint32_t, std::vector<uint32_t>> out;
    for (const CodeFold& f : kSimpleFold) out[f.fold].push_back(f.code_point);
    for (auto& [fold, cps] : out) cps.push_back(fold);
    return out;
  }();
  const auto it = by_fold.find(simple_fold(cp));
  return it == by_fold.end() ? std::vector<uint32_t>{cp} : it->second;
}

/// The full case folding of `cp` when it is several characters (ß: "ss"), else empty.
std::vector<uint32_t> several_fold(uint32_t cp) {
  const CodeMapping* m = unicode::find_mapping(cp, std::begin(kSeveralFolds), std::end(kSeveralFolds));
  if (m == nullptr) return {};
  return {kSeveralFolded + m->start, kSeveralFolded + m->start + m->length};
}

/// Oniguruma's \w, as Hugging Face's Split matches it (checked on every code point): Unicode's word characters
/// (kWordChars) but Join_Control (U+200C, U+200D), and the Latin-1 digits and fractions ¹ ² ³ ¼ ½ ¾.
bool is_word(uint32_t cp) {
  if (cp == 0x200C || cp == 0x200D) return false;
  if (cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || (cp >= 0xBC && cp <= 0xBE)) return true;
  return unicode::in_ranges(cp, std::begin(kWordChars), std::end(kWordChars));
}

std::pair<uint32_t, size_t> char_at(std::string_view s, size_t i) {
  const auto [cp, n] = unicode::decode_utf8(s, i);
  return n == 0 ? std::pair<uint32_t, size_t>{kInvalid, 1} : std::pair<uint32_t, size_t>{cp, n};
}

std::string show(uint32_t cp) {
  std::string out;
  if (cp >= 0x20 && cp != 0x7F) unicode::append_utf8(out, cp);
  else out = fmt::format("\\x{{{:X}}}", cp);
  return out;
}

}  // namespace

namespace {

bool in_set(const std::vector<SplitRegex::Set>& sets, const SplitRegex::Set& s, uint32_t cp);

bool raw_in_set(const std::vector<SplitRegex::Set>& sets, const SplitRegex::Set& s, uint32_t cp) {
  if (cp != kInvalid) {
    if (s.any || (s.categories >> category(cp) & 1)) return true;
    if (s.builtin == SplitRegex::Set::space && unicode::is_space(cp)) return true;
    if (s.builtin == SplitRegex::Set::word && is_word(cp)) return true;
    for (const auto& [lo, hi] : s.ranges)
      if (cp >= lo && cp <= hi) return true;
  }
  for (int k : s.subsets)
    if (in_set(sets, sets[static_cast<size_t>(k)], cp)) return true;
  return false;
}

bool in_set(const std::vector<SplitRegex::Set>& sets, const SplitRegex::Set& s, uint32_t cp) {
  bool in = raw_in_set(sets, s, cp);
  if (!in && s.fold && cp != kInvalid) {
    for (uint32_t v : case_variants(cp)) {
      if (v != cp && raw_in_set(sets, s, v)) {
        in = true;
        break;
      }
    }
  }
  return in != s.negated;
}

}  // namespace

/// Reads a pattern into nodes (recursive descent over its code points).
class RegexParser {
 public:
  RegexParser(SplitRegex& re, std::string_view pattern) : re_(re) {
    for (size_t i = 0; i < pattern.size();) {
      const auto [cp, n] = unicode::decode_utf8(pattern, i);
      if (n == 0) throw RegexError(fmt::format("byte {} is not valid UTF-8", i));
      p_.push_back(cp);
      i += n;
    }
  }

  int parse() {
    const int root = alternatives();
    if (i_ < p_.size()) fail("an unmatched )");
    return root;
  }

 private:
  using Set = SplitRegex::Set;
  using Node = SplitRegex::Node;

  [[noreturn]] void fail(const std::string& what) const {
    throw RegexError(fmt::format("at character {}: {}", i_, what));
  }
  bool at(uint32_t c, size_t ahead = 0) const { return i_ + ahead < p_.size() && p_[i_ + ahead] == c; }
  bool more() const { return i_ < p_.size(); }

  int add(Node n) {
    re_.nodes_.push_back(std::move(n));
    return static_cast<int>(re_.nodes_.size()) - 1;
  }
  int add_set(Set s) {
    re_.sets_.push_back(std::move(s));
    return static_cast<int>(re_.sets_.size()) - 1;
  }
  int set_node(int set) {
    Node n;
    n.kind = Node::set;
    n.set_index = set;
    return add(std::move(n));
  }

  /// a|b|…, up to a ) or the end.
  int alternatives() {
    std::vector<int> options{sequence()};
    while (at('|')) {
      ++i_;
      options.push_back(sequence());
    }
    if (options.size() == 1) return options[0];
    const auto is_set = [&](int k) { return re_.nodes_[static_cast<size_t>(k)].kind == Node::set; };
    if (std::all_of(options.begin(), options.end(), is_set)) {  // one character each, (?:a|\s): one class
      Set any_of;
      for (int k : options) any_of.subsets.push_back(re_.nodes_[static_cast<size_t>(k)].set_index);
      return set_node(add_set(std::move(any_of)));
    }
    Node n;
    n.kind = Node::alt;
    n.children = std::move(options);
    return add(std::move(n));
  }

  /// Atoms with their quantifiers, up to a |, a ) or the end. A (?i) or (?-i) makes the rest of the group, its
  /// alternatives included, a group of its own with that setting (as Oniguruma reads `x(?i)a|b`: x(?i:a|b)).
  int sequence() {
    Node n;
    n.kind = Node::seq;
    std::vector<std::pair<int, uint32_t>> literals;  // this sequence's run of literal characters: (node, folded)
    const auto check_run = [&] {
      if (literals.size() >= 2) check_several_folds(literals);
      literals.clear();
    };
    while (more() && !at('|') && !at(')')) {
      if (at('(') && at('?', 1) && (at('i', 2) || (at('-', 2) && at('i', 3)))) {
        const size_t flag = at('-', 2) ? 4 : 3;
        if (at(')', flag)) {
          const bool saved = fold_;
          fold_ = flag == 3;
          i_ += flag + 1;
          check_run();
          n.children.push_back(alternatives());
          fold_ = saved;
          break;
        }
      }
      if (at('*') || at('+') || at('?') || (at('{') && interval_ahead()))
        fail("a quantifier with nothing before it to repeat");
      uint32_t literal = kInvalid;
      int item = atom(literal);
      const bool quantified = quantifiers(item);
      if (fold_ && literal != kInvalid && !quantified) {
        literals.emplace_back(item, simple_fold(literal));
      } else {
        check_run();
      }
      n.children.push_back(item);
    }
    check_run();
    if (n.children.size() == 1) return n.children[0];
    return add(std::move(n));
  }

  /// Under (?i), Oniguruma matches a character whose full case folding is several characters (ß, "ss") against those
  /// characters in the pattern; Tessera's folding is one character to one, so such a pattern is refused.
  void check_several_folds(const std::vector<std::pair<int, uint32_t>>& run) const {
    for (const CodeMapping& m : kSeveralFolds) {
      const uint32_t* first = kSeveralFolded + m.start;
      const auto found = std::search(run.begin(), run.end(), first, first + m.length,
                                     [](const std::pair<int, uint32_t>& r, uint32_t c) { return r.second == c; });
      if (found != run.end())
        throw RegexError(fmt::format("under (?i), the characters of the full case folding of {} (U+{:04X}), which "
                                     "Oniguruma would match and Tessera does not",
                                     show(m.code_point), m.code_point));
    }
  }

  /// Whether a {n}, {n,}, {n,m} or {,m} starts here (else the { is a literal, as in Oniguruma).
  bool interval_ahead() const {
    size_t k = i_ + 1;
    bool digits = false, comma = false;
    for (; k < p_.size() && p_[k] != '}'; ++k) {
      if (p_[k] == ',' && !comma) comma = true;
      else if (p_[k] >= '0' && p_[k] <= '9') digits = true;
      else return false;
    }
    return k < p_.size() && digits;
  }

  /// Wraps `item` in the quantifiers after it; whether there was one.
  bool quantifiers(int& item) {
    bool any = false;
    while (more()) {
      int min = 0, max = -1;
      bool interval = false, exact = false;
      if (at('?')) max = 1;
      else if (at('*')) min = 0;
      else if (at('+')) min = 1;
      else if (at('{') && interval_ahead()) interval = true;
      else break;
      if (interval) {
        ++i_;
        const auto number = [&]() -> int {
          if (!(more() && p_[i_] >= '0' && p_[i_] <= '9')) return -1;
          int v = 0;
          while (more() && p_[i_] >= '0' && p_[i_] <= '9') {
            v = v * 10 + static_cast<int>(p_[i_++] - '0');
            if (v > 100000) fail("a repeat count above 100000");
          }
          return v;
        };
        const int lo = number();
        min = lo < 0 ? 0 : lo;
        if (at(',')) {
          ++i_;
          max = number();
        } else {
          max = min;
          exact = true;
        }
        ++i_;  // }
        if (max >= 0 && max < min) fail(fmt::format("a repeat {{{},{}}} whose maximum is below its minimum", min, max));
      } else {
        ++i_;
      }
      Node n;
      n.kind = Node::repeat;
      n.min = min;
      n.max = max;
      n.children = {item};
      if (at('?') && !exact) {  // (in Oniguruma's Ruby syntax, {n}? is ({n})?, the next loop's)
        ++i_;
        n.mode = Node::lazy;
      } else if (!interval && at('+')) {  // *+ ++ ?+ (in Oniguruma's Ruby syntax, {n,m}+ repeats the repeat)
        ++i_;
        n.mode = Node::possessive;
      }
      if (n.mode == Node::possessive && re_.nodes_[static_cast<size_t>(item)].kind != Node::set) {
        n.mode = Node::greedy;
        Node atomic;
        atomic.kind = Node::atomic;
        atomic.children = {add(std::move(n))};
        item = add(std::move(atomic));
      } else {
        item = add(std::move(n));
      }
      any = true;
    }
    return any;
  }

  /// One atom; `literal` is set to its code point when it is a literal character.
  int atom(uint32_t& literal) {
    const uint32_t c = p_[i_];
    if (c == '(') return group();
    if (c == '[') {
      ++i_;
      return set_node(bracket());
    }
    if (c == '.') {
      ++i_;
      Set s;
      s.negated = true;
      s.ranges = {{'\n', '\n'}};
      return set_node(add_set(std::move(s)));
    }
    if (c == '^' || c == '$') fail(fmt::format("the anchor {} (not supported)", show(c)));
    if (c == '\\') {
      ++i_;
      int set = -1;
      const uint32_t e = escape(set, false);
      if (set >= 0) return set_node(set);
      literal = e;
      return set_node(literal_set(e));
    }
    ++i_;
    literal = c;
    return set_node(literal_set(c));
  }

  int literal_set(uint32_t c) {
    Set s;
    if (fold_) {
      if (!several_fold(c).empty())
        fail(fmt::format("under (?i), {} (U+{:04X}), whose full case folding is several characters", show(c), c));
      for (uint32_t v : case_variants(c)) s.ranges.emplace_back(v, v);
    } else {
      s.ranges = {{c, c}};
    }
    return add_set(std::move(s));
  }

  int group() {
    const size_t open = i_;
    ++i_;
    const bool saved = fold_;
    Node wrapper;
    bool plain = true;
    if (at('?')) {
      ++i_;
      if (at(':')) {
        ++i_;
      } else if (at('=') || at('!')) {
        wrapper.kind = Node::look;
        wrapper.negate = at('!');
        plain = false;
        ++i_;
      } else if (at('>')) {
        wrapper.kind = Node::atomic;
        plain = false;
        ++i_;
      } else if (at('<') && (at('=', 1) || at('!', 1))) {
        i_ = open;
        fail("lookbehind (?<= or (?<! (not supported)");
      } else if (at('<')) {  // (?<name>…): a group; nothing refers back to it
        while (more() && !at('>')) ++i_;
        if (!more()) fail("a group name without its >");
        ++i_;
      } else if (at('i') || at('-')) {
        const bool off = at('-');
        if (off) ++i_;
        if (!at('i')) fail("an option other than i");
        ++i_;
        if (!at(':')) fail("an option other than i");
        ++i_;
        fold_ = !off;
      } else {
        const std::string kind = more() ? show(p_[i_]) : std::string();
        i_ = open;
        fail(fmt::format("the group (?{} (not supported)", kind));
      }
    }
    const int inside = alternatives();
    if (!at(')')) {
      i_ = open;
      fail("a ( without its )");
    }
    ++i_;
    fold_ = saved;
    if (plain) return inside;
    wrapper.children = {inside};
    return add(std::move(wrapper));
  }

  uint32_t hex(size_t min_digits, size_t max_digits) {
    uint32_t v = 0;
    size_t n = 0;
    for (; n < max_digits && more(); ++n, ++i_) {
      const uint32_t d = p_[i_];
      const int digit = d >= '0' && d <= '9' ? static_cast<int>(d - '0')
                        : d >= 'a' && d <= 'f' ? static_cast<int>(d - 'a' + 10)
                        : d >= 'A' && d <= 'F' ? static_cast<int>(d - 'A' + 10)
                                               : -1;
      if (digit < 0) break;
      v = v * 16 + static_cast<uint32_t>(digit);
      if (v > 0x10FFFF) fail("a code point above U+10FFFF");
    }
    if (n < min_digits) fail("a hexadecimal escape without its digits");
    return v;
  }

  /// The escape after a backslash: a class (its set into `set`), or the code point of a literal character.
  uint32_t escape(int& set, bool in_bracket) {
    if (!more()) fail("a \\ at the end of the pattern");
    const uint32_t c = p_[i_++];
    const auto builtin = [&](bool negated, auto&& fill) {
      Set s;
      s.negated = negated;
      fill(s);
      set = add_set(std::move(s));
      return 0u;
    };
    switch (c) {
      case 't': return '\t';
      case 'n': return '\n';
      case 'r': return '\r';
      case 'f': return '\f';
      case 'v': return '\v';
      case 'e': return 0x1B;
      case 'a': return 0x07;
      case 'x':
        if (at('{')) {
          ++i_;
          const uint32_t v = hex(1, 8);
          if (!at('}')) fail("\\x{ without its }");
          ++i_;
          return v;
        }
        return hex(1, 2);
      case 'u': return hex(4, 4);
      case 's': case 'S': return builtin(c == 'S', [](Set& s) { s.builtin = Set::space; });
      case 'w': case 'W': return builtin(c == 'W', [](Set& s) { s.builtin = Set::word; });
      case 'd': case 'D': return builtin(c == 'D', [](Set& s) { s.categories = bit(Nd); });
      case 'h': case 'H':
        return builtin(c == 'H', [](Set& s) { s.ranges = {{'0', '9'}, {'A', 'F'}, {'a', 'f'}}; });
      case 'p': case 'P': return property(c == 'P', set);
      default: break;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
      --i_;
      fail(fmt::format("the escape \\{} (not supported{})", show(c),
                       in_bracket ? "" : ": anchors, back-references and octal escapes are not"));
    }
    return c;  // an escaped punctuation character, space or other character stands for itself
  }

  uint32_t property(bool negated, int& set) {
    if (!at('{')) fail("\\p or \\P without {name}");
    ++i_;
    if (at('^')) {
      negated = !negated;
      ++i_;
    }
    std::string name, key;
    while (more() && !at('}')) {
      const uint32_t c = p_[i_++];
      unicode::append_utf8(name, c);
      if (c == ' ' || c == '_' || c == '-') continue;
      key += c < 0x80 ? static_cast<char>(std::tolower(static_cast<int>(c))) : '?';
    }
    if (!more()) fail("\\p{ without its }");
    ++i_;
    static const std::unordered_map<std::string, uint32_t> kByName = {
        {"l", kL}, {"letter", kL}, {"lu", bit(Lu)}, {"uppercaseletter", bit(Lu)}, {"ll", bit(Ll)},
        {"lowercaseletter", bit(Ll)}, {"lt", bit(Lt)}, {"titlecaseletter", bit(Lt)}, {"lm", bit(Lm)},
        {"modifierletter", bit(Lm)}, {"lo", bit(Lo)}, {"otherletter", bit(Lo)}, {"lc", bit(Lu) | bit(Ll) | bit(Lt)},
        {"casedletter", bit(Lu) | bit(Ll) | bit(Lt)}, {"m", kM}, {"mark", kM}, {"combiningmark", kM},
        {"mn", bit(Mn)}, {"nonspacingmark", bit(Mn)}, {"mc", bit(Mc)}, {"spacingmark", bit(Mc)}, {"me", bit(Me)},
        {"enclosingmark", bit(Me)}, {"n", kN}, {"number", kN}, {"nd", bit(Nd)}, {"decimalnumber", bit(Nd)},
        {"nl", bit(Nl)}, {"letternumber", bit(Nl)}, {"no", bit(No)}, {"othernumber", bit(No)}, {"p", kP},
        {"punctuation", kP}, {"pc", bit(Pc)}, {"connectorpunctuation", bit(Pc)}, {"pd", bit(Pd)},
        {"dashpunctuation", bit(Pd)}, {"ps", bit(Ps)}, {"openpunctuation", bit(Ps)}, {"pe", bit(Pe)},
        {"closepunctuation", bit(Pe)}, {"pi", bit(Pi)}, {"initialpunctuation", bit(Pi)}, {"pf", bit(Pf)},
        {"finalpunctuation", bit(Pf)}, {"po", bit(Po)}, {"otherpunctuation", bit(Po)}, {"s", kS}, {"symbol", kS},
        {"sm", bit(Sm)}, {"mathsymbol", bit(Sm)}, {"sc", bit(Sc)}, {"currencysymbol", bit(Sc)}, {"sk", bit(Sk)},
        {"modifiersymbol", bit(Sk)}, {"so", bit(So)}, {"othersymbol", bit(So)}, {"z", kZ}, {"separator", kZ},
        {"zs", bit(Zs)}, {"spaceseparator", bit(Zs)}, {"zl", bit(Zl)}, {"lineseparator", bit(Zl)},
        {"zp", bit(Zp)}, {"paragraphseparator", bit(Zp)}, {"c", kC}, {"other", kC}, {"cc", bit(Cc)},
        {"control", bit(Cc)}, {"cf", bit(Cf)}, {"format", bit(Cf)}, {"cs", bit(Cs)}, {"surrogate", bit(Cs)},
        {"co", bit(Co)}, {"privateuse", bit(Co)}, {"cn", bit(Cn)}, {"unassigned", bit(Cn)}};
    Set s;
    s.negated = negated;
    if (key == "any") {
      s.any = true;
    } else if (const auto it = kByName.find(key); it != kByName.end()) {
      s.categories = it->second;
    } else {
      fail(fmt::format("the property {{{}}}: Tessera knows the general categories (L, Lu, Letter, ..., Cn) and Any, "
                       "not scripts or other properties",
                       name));
    }
    set = add_set(std::move(s));
    return 0;
  }

  /// Puts class `k` (an escape inside a bracket) into bracket class `s`: its categories and ranges into s's own when
  /// it is not negated and s has no other built-in class (one lookup per character instead of one per escape), else
  /// as a nested class.
  void merge_or_nest(Set& s, int k) {
    const Set& c = re_.sets_[static_cast<size_t>(k)];
    if (c.negated || c.any || !c.subsets.empty() || (c.builtin != Set::none && s.builtin != Set::none)) {
      s.subsets.push_back(k);
      return;
    }
    s.categories |= c.categories;
    s.ranges.insert(s.ranges.end(), c.ranges.begin(), c.ranges.end());
    if (c.builtin != Set::none) s.builtin = c.builtin;
  }

  /// A bracket class, after its [.
  int bracket() {
    const size_t open = i_ - 1;
    Set s;
    s.fold = fold_;
    if (at('^')) {
      s.negated = true;
      ++i_;
    }
    bool first = true;
    bool has_class = false;
    for (;; first = false) {
      if (!more()) {
        i_ = open;
        fail("a [ without its ]");
      }
      if (at(']') && !first) {
        ++i_;
        break;
      }
      if (at('[')) {
        if (at(':', 1)) fail("a POSIX bracket [: (not supported)");
        ++i_;
        s.subsets.push_back(bracket());
        continue;
      }
      if (at('&') && at('&', 1)) fail("a class intersection && (not supported)");
      int set = -1;
      uint32_t lo = p_[i_++];
      if (lo == '\\') lo = escape(set, true);
      if (set >= 0) {
        merge_or_nest(s, set);
        has_class = true;
        continue;
      }
      uint32_t hi = lo;
      if (at('-') && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
        ++i_;
        hi = p_[i_++];
        if (hi == '[') fail("a range ending in [");
        if (hi == '\\') hi = escape(set, true);
        if (set >= 0) fail("a range ending in a class");
        if (hi < lo) fail(fmt::format("the range {}-{} whose end is before its start", show(lo), show(hi)));
      }
      s.ranges.emplace_back(lo, hi);
    }
    if (fold_ && has_class)
      fail("under (?i), a bracket class holding \\s, \\w, \\d, \\h or \\p (Oniguruma's case folding of it is not "
           "Tessera's)");
    if (fold_) {
      for (const auto& [lo, hi] : s.ranges)
        for (uint32_t c = lo; c <= hi && c - lo < 0x20000; ++c)
          if (!several_fold(c).empty())
            fail(fmt::format("under (?i), a bracket class holding {} (U+{:04X}), whose full case folding is several "
                             "characters",
                             show(c), c));
    }
    return add_set(std::move(s));
  }

  SplitRegex& re_;
  std::vector<uint32_t> p_;
  size_t i_ = 0;
  bool fold_ = false;
};

/// Backtracking search, each node trying its ways in Oniguruma's order, with what comes after it as a continuation.
class RegexMatcher {
 public:
  RegexMatcher(const SplitRegex& re, std::string_view s) : re_(re), s_(s), budget_(100000 + 256 * s.size()) {}

  /// Whether the pattern matches at `pos`; its end in end_. All attempts on the text together may take 100,000
  /// steps plus 256 per byte of the text.
  bool match_at(size_t pos) {
    start_ = pos;
    return match(re_.root_, pos, nullptr);
  }
  size_t end() const { return end_; }

 private:
  using Node = SplitRegex::Node;
  /// What to match after a node: the rest of a sequence (from `index`), or more of a repeat (`count` done, the
  /// last one starting at `start`); then `next`.
  struct Cont {
    const Node* node;
    size_t index;
    size_t start;
    const Cont* next;
  };

  struct Depth {
    explicit Depth(int& d) : d_(d) {
      if (++d_ > 2000)
        throw RegexError("the pattern needs more than 2000 nested steps on this text (a repeated group over a long "
                         "text); Tessera's matcher stops there rather than overflow its stack");
    }
    ~Depth() { --d_; }
    int& d_;
  };

  /// Drops what a repeat pushed on ends_, however it leaves.
  struct Unwind {
    std::vector<size_t>& ends;
    size_t base;
    ~Unwind() { ends.resize(base); }
  };

  bool proceed(const Cont* k, size_t pos) {
    if (k == nullptr) {
      end_ = pos;
      return true;
    }
    const Node& n = *k->node;
    if (n.kind == Node::seq) {
      if (k->index == n.children.size()) return proceed(k->next, pos);
      const Cont c{k->node, k->index + 1, 0, k->next};
      return match(n.children[k->index], pos, &c);
    }
    return repeat(n, k->index, pos, k->start, k->next);  // after one more iteration of a repeat
  }

  bool repeat(const Node& n, size_t count, size_t pos, size_t last_start, const Cont* next) {
    const Depth depth(depth_);
    if (count > 0 && pos == last_start) return proceed(next, pos);  // an empty iteration ends the loop
    const bool more = n.max < 0 || count < static_cast<size_t>(n.max);
    const bool enough = count >= static_cast<size_t>(n.min);
    const Cont c{&n, count + 1, pos, next};
    if (n.mode == Node::lazy) {
      if (enough && proceed(next, pos)) return true;
      return more && match(n.children[0], pos, &c);
    }
    if (more && match(n.children[0], pos, &c)) return true;
    return enough && proceed(next, pos);
  }

  bool in(int set, size_t pos, size_t& after) const {
    if (pos >= s_.size()) return false;
    const auto [cp, n] = char_at(s_, pos);
    if (!in_set(re_.sets_, re_.sets_[static_cast<size_t>(set)], cp)) return false;
    after = pos + n;
    return true;
  }

  bool match(int index, size_t pos, const Cont* k) {
    if (++steps_ > budget_)
      throw RegexError(fmt::format("the pattern took more than {} steps on a text of {} bytes, at byte {} "
                                   "(catastrophic backtracking); Tessera stops there rather than run for ages",
                                   budget_, s_.size(), start_));
    const Node& n = re_.nodes_[static_cast<size_t>(index)];
    switch (n.kind) {
      case Node::set: {
        size_t after;
        return in(n.set_index, pos, after) && proceed(k, after);
      }
      case Node::seq: {
        if (n.children.empty()) return proceed(k, pos);
        const Depth depth(depth_);
        const Cont c{&n, 1, 0, k};
        return match(n.children[0], pos, &c);
      }
      case Node::alt:
        for (int child : n.children)
          if (match(child, pos, k)) return true;
        return false;
      case Node::repeat: {
        const Node& child = re_.nodes_[static_cast<size_t>(n.children[0])];
        if (child.kind != Node::set) return repeat(n, 0, pos, pos, k);
        // One character at a time: the ends after 0, 1, … characters (on a stack shared by the nested repeats, so
        // that no match allocates), tried in the quantifier's order.
        const size_t base = ends_.size();
        const Unwind unwind{ends_, base};
        ends_.push_back(pos);
        size_t after;
        while ((n.max < 0 || ends_.size() - base <= static_cast<size_t>(n.max)) &&
               in(child.set_index, ends_.back(), after))
          ends_.push_back(after);
        const size_t most = ends_.size() - 1 - base, least = static_cast<size_t>(n.min);
        if (most < least) return false;
        if (n.mode == Node::possessive) return proceed(k, ends_[base + most]);
        if (n.mode == Node::lazy) {
          for (size_t j = least; j <= most; ++j)
            if (proceed(k, ends_[base + j])) return true;
          return false;
        }
        for (size_t j = most + 1; j-- > least;)
          if (proceed(k, ends_[base + j])) return true;
        return false;
      }
      case Node::look: {
        const size_t saved = end_;
        const bool found = match(n.children[0], pos, nullptr);
        end_ = saved;
        return found != n.negate && proceed(k, pos);
      }
      case Node::atomic: {
        if (!match(n.children[0], pos, nullptr)) return false;
        return proceed(k, end_);
      }
    }
    return false;
  }

  const SplitRegex& re_;
  std::string_view s_;
  size_t end_ = 0;
  int depth_ = 0;
  size_t steps_ = 0, budget_, start_ = 0;  ///< match() calls on this text, the most allowed, the attempt's start
  std::vector<size_t> ends_;                    ///< the single-character repeats' ends, innermost last
};

SplitRegex::SplitRegex(std::string_view pattern) {
  RegexParser parser(*this, pattern);
  root_ = parser.parse();
}

std::vector<std::pair<size_t, size_t>> SplitRegex::matches(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  RegexMatcher m(*this, text);
  size_t from = 0;
  bool matched_before = false;
  size_t last_match_end = 0;
  for (;;) {
    size_t start = from;
    bool found = false;
    for (;;) {
      if (m.match_at(start)) {
        found = true;
        break;
      }
      if (start >= text.size()) break;
      start += char_at(text, start).second;
    }
    if (!found) break;
    const size_t end = m.end();
    if (end == start && matched_before && last_match_end == end) {  // an empty match where the last one ended
      if (from >= text.size()) break;
      from += char_at(text, from).second;
      continue;
    }
    out.emplace_back(start, end);
    from = last_match_end = end;
    matched_before = true;
  }
  return out;
}

const char* split_behavior_name(SplitBehavior behavior) {
  switch (behavior) {
    case SplitBehavior::removed: return "Removed";
    case SplitBehavior::isolated: return "Isolated";
    case SplitBehavior::merged_with_previous: return "MergedWithPrevious";
    case SplitBehavior::merged_with_next: return "MergedWithNext";
    case SplitBehavior::contiguous: return "Contiguous";
  }
  return "Isolated";
}

bool split_behavior_from_name(const std::string& name, SplitBehavior& out) {
  for (SplitBehavior b : {SplitBehavior::removed, SplitBehavior::isolated, SplitBehavior::merged_with_previous,
                          SplitBehavior::merged_with_next, SplitBehavior::contiguous}) {
    if (name == split_behavior_name(b)) {
      out = b;
      return true;
    }
  }
  return false;
}

std::vector<std::string_view> split_pieces(std::string_view text, const std::vector<std::pair<size_t, size_t>>& matches,
                                           SplitBehavior behavior, bool invert) {
  // Every part of the text in order, matches and the text between them, each marked as a match or not.
  struct Part {
    size_t start, end;
    bool match;
  };
  std::vector<Part> parts;
  size_t last = 0;
  for (const auto& [start, end] : matches) {
    if (start != last) parts.push_back({last, start, invert});
    parts.push_back({start, end, !invert});
    last = end;
  }
  if (last != text.size()) parts.push_back({last, text.size(), invert});
  std::vector<Part> kept;  // Hugging Face's fold over the parts: a match joins its neighbour, or parts join
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::isolated: kept = parts; break;
    case SplitBehavior::removed:
      for (const Part& p : parts)
        if (!p.match) kept.push_back(p);
      break;
    case SplitBehavior::merged_with_previous:
      for (const Part& p : parts) {
        if (p.match && !previous_match && !kept.empty()) kept.back().end = p.end;
        else kept.push_back(p);
        previous_match = p.match;
      }
      break;
    case SplitBehavior::merged_with_next:
      for (size_t k = parts.size(); k-- > 0;) {
        const Part& p = parts[k];
        if (p.match && !previous_match && !kept.empty()) kept.back().start = p.start;
        else kept.push_back(p);
        previous_match = p.match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    case SplitBehavior::contiguous:
      for (const Part& p : parts) {
        if (p.match == previous_match && !kept.empty()) kept.back().end = p.end;
        else kept.push_back(p);
        previous_match = p.match;
      }
      break;
  }
  std::vector<std::string_view> out;
  for (const Part& p : kept)
    if (p.end > p.start) out.push_back(text.substr(p.start, p.end - p.start));
  return out;
}

}  // namespace tessera::data
