#!/usr/bin/env bash
# Step time of the baseline recipe (ResNet-8 width 16, batch 128, Fashion-MNIST 28x28, SGD) with and without
# channels_last, for each given tessera-run build and thread count, side by side in one session: per round the two
# configurations run back to back (their order swapped every round), so each paired ratio sees the same load.
# Step time = the run's training seconds / batches (run.json), the data set's loading excluded.
#   benchmarks/bench_channels_last.sh [rounds] [batches] [threads...]     (e.g. 4 60 1 2)
#   BUILDS="build/release build/pypi" to compare toolchains (default: build/release)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-4}
batches=${2:-60}
shift $(( $# < 2 ? $# : 2 ))
threads=("${@:-1}")
builds=(${BUILDS:-build/release})
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  for t in "${threads[@]}"; do
    for build in "${builds[@]}"; do
      if (( r % 2 )); then order="none channels_last"; else order="channels_last none"; fi
      for cfg in $order; do
        algs="algorithms=[]"
        [ "$cfg" = channels_last ] && algs="algorithms=[channels_last]"
        dir="$out/$(echo "$build" | tr / _)-t$t-$cfg-$r"
        "$root/$build/tessera-run" "$root/examples/recipes/fashion_mnist_baseline.yaml" max_duration="${batches}ba" \
          threads="$t" "$algs" run_dir="$dir" "callbacks=[]" "loggers=[]" "schedulers=[]" eval_interval=1000ep \
          "checkpoint={folder: ck, interval: 1000ep}" >"$dir.log" 2>&1 || { tail -3 "$dir.log"; exit 1; }
        python3 -c "import json; j=json.load(open('$dir/run.json')); print('$build t$t $cfg $r', j['timestamp']['train_seconds']/j['timestamp']['batch']*1000)"
      done
    done
  done
done | tee "$out/raw.txt"
python3 - "$out/raw.txt" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    p = line.split()
    d[(p[0], p[1])].setdefault(p[3], {})[p[2]] = float(p[4])
for key in sorted(d):
    rounds = [v for v in d[key].values() if len(v) == 2]
    a = statistics.median(v["none"] for v in rounds)
    b = statistics.median(v["channels_last"] for v in rounds)
    ratios = [v["channels_last"] / v["none"] for v in rounds]
    print(f"{key[0]} {key[1]}: without {a:.1f} ms/step, with channels_last {b:.1f} ms/step (medians of {len(rounds)}); "
          f"paired ratios {[round(x, 3) for x in ratios]}, median {statistics.median(ratios):.3f}")
PY
