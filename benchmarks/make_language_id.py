#!/usr/bin/env python3
"""Writes a language-identification task from Debian's word lists (packages wamerican, wngerman, wfrench, wspanish,
witalian: /usr/share/dict): `words.txt`, unlabelled words of the five languages, one per line, in a random order (for
masked-language-model pretraining), and `language_id.tsv`, other words labelled with their language (`label<TAB>word`,
for text classification; its last tenth, spread evenly, is the test split of the text_classification dataset).
Words of 4 to 20 letters, lower case, without apostrophes, written in only one of the lists; the labelled and the
unlabelled words are disjoint. Deterministic for a seed.

    benchmarks/make_language_id.py OUT_DIR [--unlabelled 20000] [--labelled 2000] [--seed 1]   (counts per language)
"""
import argparse
import os
import random
import sys

LISTS = {"en": "american-english", "de": "ngerman", "fr": "french", "es": "spanish", "it": "italian"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--unlabelled", type=int, default=20000, help="unlabelled words per language")
    parser.add_argument("--labelled", type=int, default=2000, help="labelled words per language")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    words = {}
    for language, name in LISTS.items():
        path = os.path.join("/usr/share/dict", name)
        if not os.path.exists(path):
            print(f"make_language_id: {path} is missing; apt-get install wamerican wngerman wfrench wspanish witalian",
                  file=sys.stderr)
            return 2
        with open(path, encoding="utf-8", errors="strict") as f:
            words[language] = {w.strip() for w in f if 4 <= len(w.strip()) <= 20 and "'" not in w and w.strip().islower()}
    seen = {}
    for language, ws in words.items():
        for w in ws:
            seen[w] = seen.get(w, 0) + 1
    rng = random.Random(args.seed)
    unlabelled, labelled = [], []
    for language in LISTS:
        own = sorted(w for w in words[language] if seen[w] == 1)
        need = args.unlabelled + args.labelled
        if len(own) < need:
            print(f"make_language_id: {language} has {len(own)} words of its own, fewer than {need}", file=sys.stderr)
            return 2
        picked = rng.sample(own, need)
        unlabelled += picked[: args.unlabelled]
        labelled += [(language, w) for w in picked[args.unlabelled:]]
    rng.shuffle(unlabelled)
    rng.shuffle(labelled)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "words.txt"), "w", encoding="utf-8") as f:
        f.write("".join(w + "\n" for w in unlabelled))
    with open(os.path.join(args.out, "language_id.tsv"), "w", encoding="utf-8") as f:
        f.write("".join(f"{language}\t{w}\n" for language, w in labelled))
    print(f"make_language_id: {len(unlabelled)} unlabelled and {len(labelled)} labelled words in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
