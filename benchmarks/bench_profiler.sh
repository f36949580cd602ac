#!/usr/bin/env bash
# What the profiler costs, on two runs: the flagship recipe (examples/recipes/fashion_mnist.yaml) for BATCHES batches,
# and a small MLP on synthetic data for 2000 batches of 8 examples on one thread, whose batches are short enough for
# the profiler's own time per batch to show. Each runs without a profiler, with the default schedule (per epoch,
# batch 0 warms up, batches 1-4 are traced, one file), with every batch traced (Tessera's spans and torch's
# operators), and with every batch traced without torch's operators. The configurations alternate over ROUNDS rounds
# in one session, each round starting with the next one; each keeps its best training time (run.json's train_seconds: the batches' own time, without the
# set-up). "ratio" is the time over the unprofiled run's, "us/batch" the difference per batch in microseconds.
#   benchmarks/bench_profiler.sh [BATCHES [ROUNDS]]   (default: 60 5)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
batches=${1:-60}
rounds=${2:-5}
build=${BUILD_DIR:-$root/build/release}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cmake --build "$build" --target tessera-run >/dev/null
cat >"$out/mlp.yaml" <<'YAML'
max_duration: 2000ba
threads: 1
model: {mlp: {hidden: [16]}}
data:
  train:
    dataset: {synthetic: {size: 512, input_shape: [1, 4, 4], num_classes: 3}}
    loader: {batch_size: 8}
optimizer: {sgd: {lr: 0.1}}
loggers: []
callbacks: []
YAML
names=(none default every_batch every_batch_no_ops)
bench() {  # recipe, batches, label
  local recipe=$1 n=$2 label=$3
  local settings=("profiler={enabled: false}" "profiler={}" "profiler={warmup: 0, active: $n, repeat: 0}"
                  "profiler={warmup: 0, active: $n, repeat: 0, torch_ops: false}")
  declare -A best
  for ((r = 0; r < rounds; r++)); do
    for ((j = 0; j < ${#names[@]}; j++)); do
      local i=$(((j + r) % ${#names[@]}))  # each round starts with another configuration
      local dir="$out/$label-${names[$i]}-$r"
      mkdir -p "$dir"  # so that run.json is written by every configuration
      "$build/tessera-run" "$recipe" "max_duration=${n}ba" "run_dir=$dir" "checkpoint.folder=" "${settings[$i]}" \
        >/dev/null 2>&1
      local t
      t=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["timestamp"]["train_seconds"])' "$dir/run.json")
      if [ -z "${best[${names[$i]}]:-}" ] ||
         python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$t" "${best[${names[$i]}]}"; then
        best[${names[$i]}]=$t
      fi
      if [ "$r" -eq 0 ] && [ -d "$dir/traces" ]; then
        echo "$label ${names[$i]}: $(ls "$dir/traces" | wc -l) trace files, $(du -sk "$dir/traces" | cut -f1) KiB" >&2
      fi
      rm -rf "$dir/traces"
    done
  done
  for k in "${names[@]}"; do
    python3 -c 'import sys; t, base, n = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print("%-10s %-20s %10.3f %8.3f %10.1f" % (sys.argv[1], sys.argv[5], t, t / base, (t - base) / n * 1e6))' \
      "$label" "${best[$k]}" "${best[none]}" "$n" "$k"
  done
}
printf '%-10s %-20s %10s %8s %10s\n' "run" "profiler" "train s" "ratio" "us/batch"
bench "$root/examples/recipes/fashion_mnist.yaml" "$batches" flagship
bench "$out/mlp.yaml" 2000 mlp
