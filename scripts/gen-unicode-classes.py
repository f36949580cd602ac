#!/usr/bin/env python3
"""Writes the tokenizers' Unicode tables, from Unicode's character data (PyPI's unicodedata2, Python's unicodedata, Perl).

    python3 scripts/gen-unicode-classes.py > src/data/unicode_classes.inc   (with unicodedata2==16.0.0 installed)
    python3 scripts/gen-unicode-classes.py --bert > src/data/unicode_bert.inc   (with unicodedata2==17.0.1)
    python3 scripts/gen-unicode-classes.py --normalization > src/data/unicode_normalization.inc
    python3 scripts/gen-unicode-classes.py --graphemes > src/data/unicode_graphemes.inc   (unicodedata2==16.0.0, regex)

src/data/unicode_classes.inc: the code point ranges of Unicode's letters (general categories Lu, Ll, Lt, Lm, Lo: the
regex class \\p{L}) and numbers (Nd, Nl, No: \\p{N}); and word characters (the regex class \\w of Unicode's UTS #18:
Alphabetic, marks, decimal digits, connector punctuation, Join_Control); every assigned code point's general category
(kCategories, the regex classes \\p{Lu}, \\p{P}, ...: src/data/split_regex.cpp); and case folding for (?i) (kSimpleFold:
Unicode's simple case folding, from Perl; kSeveralFolds: the characters whose full case folding is several characters,
which Oniguruma matches and split_regex.cpp refuses in a (?i) pattern). Hugging Face's regex engine (Oniguruma)
knows Unicode 16.0, newer than Python's unicodedata here (14.0), so the categories come from PyPI's unicodedata2
16.0.0; the Other_Alphabetic part of \\w comes from Perl (Python lacks the property), and the rule is checked
against Perl's own \\w where both know the characters. GPT-2's pre-tokenization pattern
(src/data/tokenizer.cpp) splits text with the first two; Hugging Face's `single_word` added tokens match only where no
word character touches them.

src/data/unicode_bert.inc (--bert): the tables of BERT's text normalization and pre-tokenization, as Hugging Face's
BertNormalizer and BertPreTokenizer use them (src/data/bert_text.cpp):
* kPunctuation: general categories Pc, Pd, Pe, Pf, Pi, Po, Ps (BertPreTokenizer isolates them, with ASCII's);
* kOther: Cc, Cf, Cn, Co, Cs (BertNormalizer's clean_text removes them, but tab, newline and carriage return);
* kNonspacingMarks: Mn (strip_accents removes them after the canonical decomposition);
* kLowercase / kLowercased: each code point's full lowercase mapping where it is not itself (SpecialCasing's
  unconditional mappings included: U+0130 becomes "i" and U+0307), as Rust's char::to_lowercase gives it (Unicode
  17.0: Python's mappings, and the newer capital letters' small letters by name, from PyPI's unicodedata2 17.0.1).

src/data/unicode_normalization.inc (--normalization): Unicode's canonical normalization data as Hugging Face's
normalizers (NFC, NFD; BertNormalizer's strip_accents) have it: their crate (unicode-normalization-alignments) holds
Unicode 9.0's, checked against Hugging Face on every code point (tests/core/tokenizer_interop_test.cpp). Canonical
decompositions and combining classes never change once a character is assigned, so the tables are Python's, limited to
the characters assigned by Unicode 9.0 (their Age from Perl):
* kDecomposition / kDecomposed: each code point's full canonical decomposition (NFD of the one character), but the
  Hangul syllables, which decompose by formula;
* kCompatibility / kCompatibilityDecomposed: the code points whose full compatibility decomposition (NFKD of the one
  character) differs from their canonical one, and that decomposition (Hugging Face's NFKC and NFKD);
* kMarks: the marks (general categories Mn, Mc, Me, as Unicode 9.0 had them: Hugging Face's StripAccents removes
  them);
* kCombiningClass: the ranges of code points of each non-zero canonical combining class;
* kComposition: the primary composites (a character whose canonical decomposition is two characters and which is not
  excluded from composition), sorted by the pair it composes from; Hangul syllables compose by formula.

src/data/unicode_graphemes.inc (--graphemes): the properties of Unicode's extended grapheme clusters (UAX #29), which
Hugging Face's Precompiled normalizer cuts text into (its crate, unicode-segmentation, knows Unicode 16.0: checked
against Hugging Face on every code point): kGraphemeBreak (Grapheme_Cluster_Break, values of unicode::GraphemeBreak),
kExtendedPictographic, kIndicConjunctBreak (InCB: Linker 1, Consonant 2, Extend 3). Python lacks these properties, so
they come from PyPI's regex module, limited to the characters assigned by Unicode 16.0 (unicodedata2).
"""
import bisect
import subprocess
import sys
import unicodedata


def runs(inside):
    """The sorted, disjoint, inclusive ranges of the code points for which inside(cp) holds."""
    out, start = [], None
    for cp in range(0x110001):
        if cp <= 0x10FFFF and inside(cp):
            if start is None:
                start = cp
        elif start is not None:
            out.append((start, cp - 1))
            start = None
    return out


def ranges(categories):
    return runs(lambda cp: unicodedata.category(chr(cp)) in categories)


def rows(items, per_row):
    lines, row = [], []
    for item in items:
        row.append(item)
        if len(row) == per_row:
            lines.append("    " + " ".join(row))
            row = []
    if row:
        lines.append("    " + " ".join(row))
    return lines


def table(name, rs):
    return "\n".join([f"constexpr CodeRange {name}[] = {{"] + rows([f"{{0x{a:X}, 0x{b:X}}}," for a, b in rs], 6) +
                     ["};"])


def value_table(name, rs):
    """rs: sorted, disjoint (first, last, value) ranges."""
    return "\n".join([f"constexpr CodeClass {name}[] = {{"] + rows([f"{{0x{a:X}, 0x{b:X}, {v}}}," for a, b, v in rs], 5) +
                     ["};"])


def value_runs(value_of):
    """The sorted, disjoint, inclusive ranges of equal non-None value_of(cp)."""
    out = []
    for cp in range(0x110000):
        v = value_of(cp)
        if v is None:
            continue
        if out and out[-1][1] == cp - 1 and out[-1][2] == v:
            out[-1] = (out[-1][0], cp, v)
        else:
            out.append((cp, cp, v))
    return out


def perl_lines(script):
    return subprocess.run(["perl", "-MUnicode::UCD", "-e", script], check=True, capture_output=True,
                          text=True).stdout.split("\n")


def mapping_tables(name, flat_name, mapping):
    """mapping: code point -> its code points. A sorted table of {code point, start, length} into a flat array."""
    entries, flat = [], []
    for cp in sorted(mapping):
        entries.append(f"{{0x{cp:X}, {len(flat)}, {len(mapping[cp])}}},")
        flat.extend(mapping[cp])
    return "\n".join([f"constexpr CodeMapping {name}[] = {{"] + rows(entries, 5) + ["};",
                      f"constexpr uint32_t {flat_name}[] = {{"] + rows([f"0x{c:X}," for c in flat], 10) + ["};"])


def perl_ranges(perl_class):
    """The ranges of code points matching a Perl regex class (Unicode rules for every code point)."""
    script = ("use feature 'unicode_strings'; for my $c (0..0x10FFFF) {"
              " next if $c >= 0xD800 && $c <= 0xDFFF; print \"$c\\n\" if chr($c) =~ /^%s$/u }" % perl_class)
    inside = set(int(line) for line in subprocess.run(["perl", "-e", script], check=True, capture_output=True,
                                                      text=True).stdout.split())
    return runs(lambda cp: cp in inside)


def word_chars(database):
    """Unicode's \\w (UTS #18): Alphabetic (letters, Nl, Other_Alphabetic), marks, decimal digits, connector
    punctuation, Join_Control; categories from `database`, Other_Alphabetic from Perl's Alphabetic (Python lacks the
    property)."""
    other_alphabetic = set()  # Perl's Alphabetic less the letters and Nl (Perl hides the contributory property)
    for a, b in perl_ranges("\\p{Alphabetic}"):
        other_alphabetic.update(cp for cp in range(a, b + 1)
                                if unicodedata.category(chr(cp)) not in {"Lu", "Ll", "Lt", "Lm", "Lo", "Nl"})
    word = {"Lu", "Ll", "Lt", "Lm", "Lo", "Nl", "Mn", "Mc", "Me", "Nd", "Pc"}
    return runs(lambda cp: database.category(chr(cp)) in word or cp in other_alphabetic or cp in (0x200C, 0x200D))


def classes():
    perl_version = subprocess.run(["perl", "-MUnicode::UCD", "-e", "print Unicode::UCD::UnicodeVersion()"],
                                  check=True, capture_output=True, text=True).stdout
    if perl_version != unicodedata.unidata_version:
        sys.exit(f"Perl's Unicode {perl_version} is not Python's {unicodedata.unidata_version}: the tables would "
                 "disagree")
    if word_chars(unicodedata) != perl_ranges("\\w"):  # the rule, checked where both sources know Unicode
        sys.exit("Unicode's \\w by category and Other_Alphabetic is not Perl's \\w")
    try:
        import unicodedata2
    except ImportError:
        sys.exit("the class tables follow Hugging Face's regex engine (Oniguruma), which knows Unicode 16.0: "
                 "pip install unicodedata2==16.0.0 (in a venv) and run this with that venv's python")
    if unicodedata2.unidata_version != "16.0.0":
        sys.exit(f"unicodedata2 has Unicode {unicodedata2.unidata_version}; expected 16.0.0 (pip install "
                 "unicodedata2==16.0.0)")

    def categories(wanted):
        return runs(lambda cp: unicodedata2.category(chr(cp)) in wanted)

    print(f"// Generated by scripts/gen-unicode-classes.py from Unicode {unicodedata2.unidata_version} (unicodedata2), "
          f"Other_Alphabetic from Perl's {perl_version}")
    print("// (checked against Hugging Face's regex engine on every code point: tests/core/tokenizer_interop_test.cpp); "
          "do not edit.")
    print("// Sorted, disjoint, inclusive code point ranges.")
    print(table("kLetters", categories({"Lu", "Ll", "Lt", "Lm", "Lo"})))
    print(table("kNumbers", categories({"Nd", "Nl", "No"})))
    print(table("kWordChars", word_chars(unicodedata2)))
    category = {c: i for i, c in enumerate(CATEGORIES)}
    print(value_table("kCategories", value_runs(
        lambda cp: None if unicodedata2.category(chr(cp)) == "Cn" else category[unicodedata2.category(chr(cp))])))
    simple, several = folds()
    print("// Unicode's simple case folding (Perl's Unicode " + perl_version + "), where a code point's fold is another.")
    print("\n".join(["constexpr CodeFold kSimpleFold[] = {"] + rows([f"{{0x{a:X}, 0x{b:X}}}," for a, b in simple], 6) +
                     ["};"]))
    print("// The code points whose full case folding is several characters, and those characters.")
    print(mapping_tables("kSeveralFolds", "kSeveralFolded", dict(several)))


# The general categories in the order of split_regex.cpp's Category enum (Cn, unassigned, is left out of the table).
CATEGORIES = ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf",
              "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"]


def folds():
    """Unicode's simple case folding ((code point, fold) where they differ), and the code points whose full folding
    is several characters (with them), from Perl's Unicode::UCD::casefold."""
    simple, several = [], []
    script = ("for my $c (0..0x10FFFF) { my $f = Unicode::UCD::casefold($c) or next;"
              " print join(',', $c, $f->{simple}, $f->{full}), \"\\n\" }")
    for line in perl_lines(script):
        if not line:
            continue
        cp, simple_fold, full = line.split(",")
        if simple_fold:
            simple.append((int(cp), int(simple_fold, 16)))
        if " " in full:
            several.append((int(cp), [int(x, 16) for x in full.split()]))
    return simple, several


def bert():
    lowercase = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if c.lower() != c:
            lowercase[cp] = [ord(x) for x in c.lower()]
    # Rust's char::to_lowercase (Hugging Face's Lowercase and BertNormalizer's lowercase) knows Unicode 17.0: the
    # capital letters Python's database lacks get the small letter of the same name (unicodedata2 17.0's names; checked
    # against Hugging Face on every code point).
    import unicodedata2
    newer = 0
    for cp in range(0x110000):
        c = chr(cp)
        if 0xD800 <= cp <= 0xDFFF or unicodedata.category(c) != "Cn" or unicodedata2.category(c) != "Lu":
            continue
        try:
            small = unicodedata2.lookup(unicodedata2.name(c).replace("CAPITAL", "SMALL"))
        except KeyError:
            continue
        if small != c:
            lowercase[cp] = [ord(small)]
            newer += 1
    print(f"// Generated by scripts/gen-unicode-classes.py --bert from Unicode {unicodedata.unidata_version}, and the "
          f"{newer} newer case pairs of")
    print(f"// Unicode {unicodedata2.unidata_version} (unicodedata2's names); do not edit.")
    print("// Sorted, disjoint, inclusive code point ranges; mappings sorted by code point.")
    print(table("kPunctuation", ranges({"Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps"})))
    print(table("kOther", ranges({"Cc", "Cf", "Cn", "Co", "Cs"})))
    print(table("kNonspacingMarks", ranges({"Mn"})))
    print(mapping_tables("kLowercase", "kLowercased", lowercase))


def normalization():
    rows_ = [line.split() for line in perl_lines("my ($l, $m) = Unicode::UCD::prop_invmap('Age');"
                                                 " print \"$l->[$_] $m->[$_]\\n\" for 0..$#$l") if line]
    starts, ages = [int(a) for a, _ in rows_], [b for _, b in rows_]

    def by_9_0(cp):  # assigned by Unicode 9.0
        age = ages[bisect.bisect_right(starts, cp) - 1]
        return age not in ("Unassigned", "NA") and tuple(int(x) for x in age.split(".")) <= (9, 0)

    decomposition, compatibility, composition = {}, {}, []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or not by_9_0(cp) or 0xAC00 <= cp <= 0xD7A3:  # Hangul syllables: by formula
            continue
        c = chr(cp)
        d = unicodedata.normalize("NFD", c)
        if d != c:
            decomposition[cp] = [ord(x) for x in d]
        k = unicodedata.normalize("NFKD", c)
        if k != d:
            compatibility[cp] = [ord(x) for x in k]
        one = unicodedata.decomposition(c)
        if one and not one.startswith("<"):
            pair = [int(x, 16) for x in one.split()]
            if len(pair) == 2 and unicodedata.normalize("NFC", chr(pair[0]) + chr(pair[1])) == c:
                composition.append((pair[0], pair[1], cp))
    combining = value_runs(lambda cp: (unicodedata.combining(chr(cp)) or None) if by_9_0(cp) else None)
    # Three characters assigned by 9.0 changed category since: U+1CF2 and U+1CF3 were Mc, U+111C9 was Po.
    changed = {0x1CF2: "Mc", 0x1CF3: "Mc", 0x111C9: "Po"}
    marks = runs(lambda cp: by_9_0(cp) and changed.get(cp, unicodedata.category(chr(cp))) in ("Mn", "Mc", "Me"))
    print(f"// Generated by scripts/gen-unicode-classes.py --normalization from Unicode {unicodedata.unidata_version}, "
          "limited to the characters assigned by")
    print("// Unicode 9.0 (Hugging Face's normalizers'); do not edit. Sorted by code point (kComposition: by pair).")
    print(mapping_tables("kDecomposition", "kDecomposed", decomposition))
    print(mapping_tables("kCompatibility", "kCompatibilityDecomposed", compatibility))
    print(table("kMarks", marks))
    print(value_table("kCombiningClass", combining))
    print("\n".join(["constexpr Composition kComposition[] = {"] +
                     rows([f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in sorted(composition)], 4) + ["};"]))


def graphemes():
    import regex  # PyPI's: Python's re has no Unicode properties
    import unicodedata2

    def has(prop, any_age=False):  # any_age: the property holds reserved code points too (Extended_Pictographic)
        rx = regex.compile(r"\p{%s}" % prop)
        return lambda cp: (not 0xD800 <= cp <= 0xDFFF and (any_age or unicodedata2.category(chr(cp)) != "Cn") and
                           rx.match(chr(cp)) is not None)

    # The order of unicode::GraphemeBreak (0 = Other: not in the table).
    names = ["CR", "LF", "Control", "Extend", "ZWJ", "Regional_Indicator", "Prepend", "SpacingMark", "L", "V", "T",
             "LV", "LVT"]
    tests = [(i + 1, has("Grapheme_Cluster_Break=" + n)) for i, n in enumerate(names)]
    # Control holds unassigned code points of some ranges (Default_Ignorable ones): keep them whatever their age.
    control = regex.compile(r"\p{Grapheme_Cluster_Break=Control}")

    def gcb(cp):
        if 0xD800 <= cp <= 0xDFFF:
            return 3  # surrogates are Control (never in UTF-8 text)
        for value, test in tests:
            if test(cp):
                return value
        if unicodedata2.category(chr(cp)) == "Cn" and control.match(chr(cp)):
            return 3
        return None

    incb = [(1, has("InCB=Linker")), (2, has("InCB=Consonant")), (3, has("InCB=Extend"))]
    print(f"// Generated by scripts/gen-unicode-classes.py --graphemes from PyPI's regex {regex.__version__}, limited "
          f"to the characters")
    print(f"// assigned by Unicode {unicodedata2.unidata_version} (unicodedata2); do not edit.")
    print(value_table("kGraphemeBreak", value_runs(gcb)))
    print(table("kExtendedPictographic", runs(has("Extended_Pictographic", any_age=True))))
    print(value_table("kIndicConjunctBreak",
                      value_runs(lambda cp: next((v for v, test in incb if test(cp)), None))))


if __name__ == "__main__":
    {"--bert": bert, "--normalization": normalization, "--graphemes": graphemes}.get(" ".join(sys.argv[1:]), classes)()
