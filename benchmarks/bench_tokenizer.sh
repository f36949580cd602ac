#!/usr/bin/env bash
# Byte-level BPE against bytes on the small GPT of examples/recipes/fortunes_gpt.yaml (4 blocks, d_model 128, Debian's
# fortunes), side by side in one session: tokenizers of each vocabulary size trained on the training split
# (tessera-tokenizer), then the byte-level recipe for 1 epoch and examples/recipes/fortunes_gpt_bpe.yaml for 1 and 2
# epochs per vocabulary. All runs see sequences of 128 tokens in batches of 32; a BPE epoch is about a third of the
# batches of a byte epoch (each token covers about 3 bytes). The table gives training seconds (run.json), the final
# test cross-entropy per token and in bits per byte (nats / ln 2 / the test split's bytes per token, which makes
# vocabularies comparable), and the tokenizer's training time and compression.
#   benchmarks/bench_tokenizer.sh [vocabulary sizes...]   (default: 1024 2048 4096)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vocabs=("${@:-1024 2048 4096}")
vocabs=(${vocabs[@]})
out=${BENCH_OUT:-$(mktemp -d)}
build=${BUILD_DIR:-$root/build/release}
text=/usr/share/games/fortunes
mkdir -p "$out"
cmake --build "$build" --target tessera-run tessera-tokenizer >/dev/null
run() {  # NAME RECIPE OVERRIDES...
  local name=$1 recipe=$2
  shift 2
  "$build/tessera-run" "$recipe" run_dir="$out/$name" "callbacks=[]" "loggers=[{jsonl: {}}]" "$@" \
    >"$out/$name.log" 2>&1 || { tail -3 "$out/$name.log"; exit 1; }
  echo "$name done" >&2
}
run bytes_1ep "$root/examples/recipes/fortunes_gpt.yaml" max_duration=1ep
for v in "${vocabs[@]}"; do
  tok="$out/fortunes-$v.json"
  "$build/tessera-tokenizer" train "$text" --vocab-size "$v" --out "$tok" >"$out/tokenizer-$v.txt"
  "$build/tessera-tokenizer" encode "$tok" "$text" --split test >>"$out/tokenizer-$v.txt"
  for e in 1 2; do
    run "bpe${v}_${e}ep" "$root/examples/recipes/fortunes_gpt_bpe.yaml" max_duration=${e}ep \
      data.train.dataset.text.tokenizer="$tok" data.eval.dataset.text.tokenizer="$tok"
  done
done
python3 - "$out" "${vocabs[@]}" <<'PY'
import json, math, pathlib, re, sys
out, vocabs = pathlib.Path(sys.argv[1]), sys.argv[2:]
def final(name):
    run = json.loads((out / name / "run.json").read_text())
    return run["timestamp"]["train_seconds"], run["metrics"]["metrics/test/cross_entropy"], run["metrics"]["metrics/test/accuracy"]
print(f"{'run':14} {'vocab':>6} {'bytes/token':>11} {'train s':>8} {'nats/token':>10} {'bits/byte':>9} {'token acc':>9}")
s, ce, acc = final("bytes_1ep")
print(f"{'bytes_1ep':14} {256:6d} {1.0:11.3f} {s:8.1f} {ce:10.4f} {ce / math.log(2):9.4f} {acc:9.4f}")
for v in vocabs:
    info = (out / f"tokenizer-{v}.txt").read_text()
    seconds = float(re.search(r"in ([0-9.]+) s", info).group(1))
    per_token = float(re.search(r"\(test\): .* ([0-9.]+) bytes per token", info).group(1))
    for e in (1, 2):
        name = f"bpe{v}_{e}ep"
        s, ce, acc = final(name)
        print(f"{name:14} {int(v):6d} {per_token:11.3f} {s:8.1f} {ce:10.4f} {ce / math.log(2) / per_token:9.4f} {acc:9.4f}")
    print(f"  (tokenizer {v}: trained in {seconds:.1f} s)")
PY
