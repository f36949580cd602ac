#!/usr/bin/env bash
# Large batches on Fashion-MNIST: the baseline recipe (ResNet-8, SGD + Nesterov, cosine with a 1-epoch warmup) at its
# batch of 128, and at a batch of 1024 with SGD (the lr scaled linearly, 8x) against the layer-wise optimizers `lars`
# and `lamb` (docs/recipes.md, "Optimizers"), all with no weight decay on biases and norms except the baseline's
# recipe as written. Prints the final test accuracy and the training time of each.
#
#   benchmarks/bench_large_batch.sh [epochs] [configurations...]     (needs build/release/tessera-run)
#   configurations: batch128 sgd_batch1024 lars_batch1024 lars_lr20_batch1024 lamb_batch1024 (default), and at a
#                   batch of 4096: sgd_batch4096 (lr 3.2, linear scaling), lars_batch4096 (lr 20), lamb_batch4096
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
epochs=${1:-3}
shift $(( $# < 1 ? $# : 1 ))
configs=("${@:-batch128 sgd_batch1024 lars_batch1024 lars_lr20_batch1024 lamb_batch1024}")
configs=(${configs[@]})
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
no_decay="groups: [{max_dims: 1, weight_decay: 0}]"
for cfg in "${configs[@]}"; do
  batch=1024
  [[ $cfg == *_batch4096 ]] && batch=4096
  case "$cfg" in
    batch128) batch=128; optimizer="{sgd: {lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4}}" ;;
    sgd_batch1024) optimizer="{sgd: {lr: 0.8, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4, $no_decay}}" ;;
    lars_batch1024) optimizer="{lars: {lr: 5.0, momentum: 0.9, weight_decay: 5.0e-4, $no_decay}}" ;;
    lars_lr20_batch1024) optimizer="{lars: {lr: 20.0, momentum: 0.9, weight_decay: 5.0e-4, $no_decay}}" ;;
    lamb_batch1024) optimizer="{lamb: {lr: 1.0e-2, weight_decay: 0.01, $no_decay}}" ;;
    sgd_batch4096) optimizer="{sgd: {lr: 3.2, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4, $no_decay}}" ;;
    lars_batch4096) optimizer="{lars: {lr: 20.0, momentum: 0.9, weight_decay: 5.0e-4, $no_decay}}" ;;
    lamb_batch4096) optimizer="{lamb: {lr: 2.0e-2, weight_decay: 0.01, $no_decay}}" ;;
    *) echo "unknown configuration $cfg" >&2; exit 2 ;;
  esac
  "$root/build/release/tessera-run" "$root/examples/recipes/fashion_mnist_baseline.yaml" max_duration="${epochs}ep" \
    data.train.loader.batch_size=$batch "optimizer=$optimizer" run_dir="$out/$cfg" "callbacks=[]" \
    "loggers=[{jsonl: {}}]" >"$out/$cfg.log" 2>&1 || { tail -3 "$out/$cfg.log"; exit 1; }
  echo "$cfg done" >&2
done
python3 - "$out" "${configs[@]}" <<'PY'
import json, pathlib, sys
out, configs = pathlib.Path(sys.argv[1]), sys.argv[2:]
print(f"{'configuration':22} {'train s':>8} {'test accuracy by epoch':>40}")
for c in configs:
    run = json.loads((out / c / "run.json").read_text())
    lines = [json.loads(l) for l in (out / c / "metrics.jsonl").read_text().splitlines()]
    accuracy = [e["metrics/test/accuracy"] for e in lines if "metrics/test/accuracy" in e]
    print(f"{c:22} {run['timestamp']['train_seconds']:8.1f} {' '.join(f'{a:.4f}' for a in accuracy):>40}")
PY
