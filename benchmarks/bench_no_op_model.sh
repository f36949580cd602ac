#!/usr/bin/env bash
# How fast the data pipeline and the trainer can go without the model: examples/recipes/fashion_mnist_baseline.yaml
# (ResNet-8, Fashion-MNIST with random crop, flip and normalize on the loader's threads) for `epochs` with its
# model, then with no_op_model (the model replaced by a one-parameter stand-in) for `no_op_epochs` at 0, 1 and 2
# loader workers, back to back in one session. Prints training seconds (run.json's train_seconds: evaluation excluded) and samples per
# second; "x model" is the throughput against the run with the model. No schedule (one epoch is shorter than the
# recipe's warmup; the step costs the same).
#   benchmarks/bench_no_op_model.sh [epochs (1)] [no_op_epochs (20)]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
epochs=${1:-1}
no_op_epochs=${2:-20}
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
run() {  # name, epochs, overrides...
  local name=$1 n=$2
  shift 2
  "$root/build/release/tessera-run" "$root/examples/recipes/fashion_mnist_baseline.yaml" max_duration="${n}ep" \
    run_dir="$out/$name" "schedulers=[]" "callbacks=[]" "loggers=[{jsonl: {}}]" "checkpoint={}" "$@" >"$out/$name.log" 2>&1 ||
    { tail -3 "$out/$name.log"; exit 1; }
  echo "$name done" >&2
}
run model "$epochs"
for workers in 0 1 2; do
  run no_op_workers_$workers "$no_op_epochs" "algorithms=[no_op_model]" data.train.loader.workers=$workers
done
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for name in ("model", "no_op_workers_0", "no_op_workers_1", "no_op_workers_2"):
    ts = json.loads((out / name / "run.json").read_text())["timestamp"]
    rows[name] = (ts["train_seconds"], ts["sample"] / ts["train_seconds"])
print(f"{'configuration':18} {'train s':>8} {'samples/s':>10} {'x model':>8}")
for name, (seconds, rate) in rows.items():
    print(f"{name:18} {seconds:8.2f} {rate:10.0f} {rate / rows['model'][1]:8.1f}")
PY
