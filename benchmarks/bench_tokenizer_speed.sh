#!/usr/bin/env bash
# Tessera's byte-level BPE against Hugging Face `tokenizers` (the version pinned in the streaming peers' venv,
# scripts/install-peers.sh streaming), side by side in one session on the same text (Debian's fortunes, all of every
# file): training a vocabulary of each size (the same merges: tests/core/tokenizer_interop_test.cpp) and encoding the
# whole text. Tessera trains and encodes on one thread; Hugging Face trains with its thread pool (rayon, every core)
# and encodes one string on one thread, or a list of the fortunes with `encode_batch` on every core. The ratio column
# is Hugging Face's time over Tessera's (above 1: Tessera is faster); each time is the best of three. Last, Hugging
# Face's trainers make three other kinds of tokenizer of the largest size, and both encode the whole text with each:
# WordPiece (BERT's: uncased BertNormalizer, BertPreTokenizer), byte-level BPE with Llama 3's pre-tokenizer and
# ignore_merges, with Qwen2's (NFC, then its Split), GPT-4o's (o200k's Split) and DeepSeek V3's (three Splits), and
# SentencePiece-style BPE (Llama 2's: "▁" for spaces, byte fallback, the text one word); and SentencePiece's trainer
# (PyPI's sentencepiece) makes a Unigram of the largest size, converted by transformers as T5's (its nmt_nfkc
# character map, Strip, Replace, Metaspace).
#   benchmarks/bench_tokenizer_speed.sh [vocabulary sizes...]   (default: 2048 8192)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vocabs=("${@:-2048 8192}")
vocabs=(${vocabs[@]})
build=${BUILD_DIR:-$root/build/release}
text=/usr/share/games/fortunes
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python=${TESSERA_STREAMING_VENV:-$HOME/.cache/tessera/venv-peers-streaming-0.13.0}/bin/python
[ -x "$python" ] || bash "$root/scripts/install-peers.sh" streaming >/dev/null
cmake --build "$build" --target tessera-tokenizer >/dev/null
export BENCH_OUT=$out  # all.txt: every fortune file as one text, as Hugging Face reads it (UTF-8, bad bytes replaced)
"$python" - "$text" <<'PY'
import os, sys
folder = sys.argv[1]
files = sorted(f for f in os.listdir(folder) if not f.endswith(".dat") and not os.path.islink(os.path.join(folder, f))
               and os.path.isfile(os.path.join(folder, f)))
text = b"".join(open(os.path.join(folder, f), "rb").read() for f in files).decode("utf-8", "replace")
open(os.path.join(os.environ["BENCH_OUT"], "all.txt"), "w", encoding="utf-8").write(text)
PY
printf '%-34s %10s %10s %8s\n' "step" "tessera s" "hf s" "hf/tessera"
for v in "${vocabs[@]}"; do
  best() { sort -g | head -1; }
  tessera_train=$(for i in 1 2 3; do "$build/tessera-tokenizer" train "$text" --all --vocab-size "$v" \
                    --out "$out/t$v.json" | sed -n 's/.* in \([0-9.]*\) s: .*/\1/p'; done | best)
  encoded=$("$build/tessera-tokenizer" encode "$out/t$v.json" "$text")
  tessera_encode=$(for i in 1 2 3; do "$build/tessera-tokenizer" encode "$out/t$v.json" "$text" |
                     sed -n 's/^encoded in \([0-9.]*\) s .*/\1/p'; done | best)
  tessera_tokens=$(sed -n 's/.* bytes -> \([0-9]*\) tokens.*/\1/p' <<<"$encoded")
  "$python" - "$text" "$v" "$tessera_train" "$tessera_encode" "$tessera_tokens" "$out/t$v.json" <<'PY'
import os, sys, time
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
folder, vocab, ours_train, ours_encode, ours_tokens, ours_file = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
                                                                 float(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
text = open(os.path.join(os.environ["BENCH_OUT"], "all.txt"), encoding="utf-8").read()
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, show_progress=False,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
def best(step):
    times = []
    for _ in range(3):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    return min(times), result
train, _ = best(lambda: tok.train_from_iterator([text], trainer))
encode, ids = best(lambda: tok.encode(text, add_special_tokens=False).ids)
docs = text.split("\n%\n")
batch, _ = best(lambda: tok.encode_batch(docs, add_special_tokens=False))
mb = len(text.encode()) / 1e6
def row(step, ours, hf):
    print(f"{step:34} {ours:10.3f} {hf:10.3f} {hf / ours if ours else float('nan'):8.2f}x")
row(f"train {vocab} ({mb:.2f} MB)", ours_train, train)
row(f"encode, one string, one thread", ours_encode, encode)
row(f"  hf encode_batch, {len(docs)} fortunes", ours_encode, batch)
same = Tokenizer.from_file(ours_file).encode(text, add_special_tokens=False).ids
print(f"  (tokens: Tessera {ours_tokens}, Hugging Face {len(ids)} with its own merges, {len(same)} with Tessera's file)")
PY
done
v=${vocabs[-1]}
for kind in wordpiece llama3 qwen2 o200k deepseek sentencepiece unigram; do
"$python" - "$text" "$v" "$out/$kind$v.json" "$kind" <<'PY'
import json, os, sys
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
folder, vocab, file, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
text = open(os.path.join(os.environ["BENCH_OUT"], "all.txt"), encoding="utf-8").read()
if kind == "unigram":  # T5's: SentencePiece's Unigram on the fortunes' lines, converted by transformers
    import io, warnings
    import sentencepiece as spm
    from transformers import T5Tokenizer
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer
    warnings.filterwarnings("ignore")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([l for l in text.splitlines() if l.strip()]),
                                   model_writer=model, model_type="unigram", vocab_size=vocab, hard_vocab_limit=False,
                                   minloglevel=2)
    with open(file + ".model", "wb") as f:
        f.write(model.getvalue())
    with open(file, "w") as f:
        f.write(convert_slow_tokenizer(T5Tokenizer(file + ".model", extra_ids=0, legacy=False)).to_str())
    sys.exit(0)
elif kind == "wordpiece":  # BERT's
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab, show_progress=False,
                                        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
elif kind in ("llama3", "qwen2", "o200k", "deepseek"):  # their Splits (Llama 3's ignore_merges is set below)
    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")
    contractions = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    patterns = {
        "llama3": [llama3], "qwen2": [llama3.replace(r"\p{N}{1,3}", r"\p{N}")],
        "o200k": [r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+" + contractions +
                  r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + contractions +
                  r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
        "deepseek": [r"\p{N}{1,3}", "[一-龥\u3040-ゟ゠-ヿ]+",
                     r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|"
                     r"\s*[\r\n]+|\s+(?!\S)|\s+"]}[kind]
    tok = Tokenizer(models.BPE())
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(p), "isolated") for p in patterns] +
                                                [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
else:  # Llama 2's: BPE over characters, "▁" for spaces, byte fallback; trained on words (Metaspace's split: the
    # trainer is slow on one long word), then written as Llama 2's, which encodes each text as one word
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, show_progress=False, limit_alphabet=200,
                                  special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)])
tok.train_from_iterator([text], trainer)
doc = json.loads(tok.to_str())
doc["model"]["ignore_merges"] = kind == "llama3" or doc["model"].get("ignore_merges", False)
doc["added_tokens"] = [a for a in doc["added_tokens"] if not a["content"].startswith("<0x")]
if kind == "sentencepiece":
    doc["pre_tokenizer"] = None
    doc["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
with open(file, "w") as f:
    json.dump(doc, f, ensure_ascii=False)
PY
encoded=$("$build/tessera-tokenizer" encode "$out/$kind$v.json" "$text")
encode=$(for i in 1 2 3; do "$build/tessera-tokenizer" encode "$out/$kind$v.json" "$text" |
           sed -n 's/^encoded in \([0-9.]*\) s .*/\1/p'; done | sort -g | head -1)
tokens=$(sed -n 's/.* bytes -> \([0-9]*\) tokens.*/\1/p' <<<"$encoded")
"$python" - "$text" "$encode" "$tokens" "$out/$kind$v.json" "$kind" <<'PY'
import os, sys, time
from tokenizers import Tokenizer
folder, ours, ours_tokens, file, kind = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
text = open(os.path.join(os.environ["BENCH_OUT"], "all.txt"), encoding="utf-8").read()
tok = Tokenizer.from_file(file)
times = []
for _ in range(3):
    start = time.perf_counter()
    ids = tok.encode(text, add_special_tokens=False).ids
    times.append(time.perf_counter() - start)
hf = min(times)
name = {"wordpiece": "WordPiece", "llama3": "Llama 3 BPE", "qwen2": "Qwen2 BPE (NFC)", "o200k": "GPT-4o BPE",
        "deepseek": "DeepSeek V3 BPE", "sentencepiece": "SentencePiece BPE", "unigram": "T5 Unigram"}[kind]
print(f"{name + ' ' + str(tok.get_vocab_size()) + ' encode, one thread':34} {ours:10.3f} {hf:10.3f} {hf / ours:8.2f}x")
print(f"  (tokens: Tessera {ours_tokens}, Hugging Face {len(ids)})")
PY
done
