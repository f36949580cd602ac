#!/usr/bin/env bash
# Mixed precision on a GPU (issue 15): precision fp32, amp_bf16 and amp_fp16 on the ResNet recipe, one epoch of
# Fashion-MNIST each, one after the other in one call, on the same GPU. Two sizes: the recipe's own model
# (fashion_mnist_baseline.yaml: ResNet-8, width 16, batch 128) and a wider one (ResNet-20, width 64, batch 512)
# whose step is compute-bound. For each: the median throughput over the epoch (speed_monitor, 20-batch windows),
# the ratio to fp32, the caching allocator's peak allocated memory (memory_monitor) and the test accuracy after the
# epoch. Prints a markdown table (docs/results.md).
#
#   benchmarks/bench_precision_gpu.sh BUILD_DIR FASHION_MNIST_FOLDER [OUT_DIR]     (needs a CUDA device)
set -euo pipefail
build=${1:?build dir}
data=${2:?fashion-mnist folder}
out=${3:-/tmp/bench_precision_gpu}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
mkdir -p "$out"

declare -a sizes=(
  "recipe|ResNet-8 w16, batch 128|"
  "wide|ResNet-20 w64, batch 512|model.resnet.depth=20 model.resnet.width=64 data.train.loader.batch_size=512"
)
failed=0
echo "| model | precision | samples/s (median) | vs fp32 | peak allocated GB | test accuracy after 1 epoch |"
echo "|---|---|---|---|---|---|"
for size in "${sizes[@]}"; do
  IFS='|' read -r key label overrides <<< "$size"
  for precision in fp32 amp_bf16 amp_fp16; do
    run="$out/$key-$precision"
    rm -rf "$run"
    # shellcheck disable=SC2086  # the overrides are separate words
    if ! "$build/tessera-run" "$root/examples/recipes/fashion_mnist_baseline.yaml" device=cuda precision=$precision \
        max_duration=1ep 'schedulers=[]' data.train.loader.workers=8 \
        data.train.dataset.fashion_mnist.folder="$data" data.eval.dataset.fashion_mnist.folder="$data" \
        'callbacks=[speed_monitor: {window: 20}, memory_monitor: {interval: 50}]' \
        run_dir="$run" checkpoint.folder="$run/checkpoints" $overrides > "$run.log" 2>&1; then
      echo "| $label | $precision | failed: $(tail -1 "$run.log") | | | |"
      failed=1
      continue
    fi
    "$python" - "$run/metrics.jsonl" "$label" "$precision" "$out/$key-fp32.rate" <<'EOF'
import json, statistics, sys, os
path, label, precision, base_file = sys.argv[1:]
rates, peak, acc = [], None, None
for line in open(path):
    m = json.loads(line)
    if "throughput/samples_per_sec" in m: rates.append(m["throughput/samples_per_sec"])
    if "memory/peak_allocated_mem" in m: peak = m["memory/peak_allocated_mem"]
    if "metrics/test/accuracy" in m: acc = m["metrics/test/accuracy"]
rate = statistics.median(rates[1:] or rates) if rates else float("nan")
if precision == "fp32":
    open(base_file, "w").write(str(rate))
base = float(open(base_file).read()) if os.path.exists(base_file) else float("nan")
fmt = lambda v, f: "n/a" if v is None else format(v, f)
print(f"| {label} | {precision} | {rate:,.0f} | {rate / base:.2f}x | {fmt(peak, '.3f')} | {fmt(acc, '.4f')} |")
EOF
  done
done
exit $failed
