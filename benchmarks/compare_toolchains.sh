#!/usr/bin/env bash
# Training time per epoch of a recipe (default: the baseline, ResNet-8 on Fashion-MNIST) with Debian's LibTorch
# 1.13.1 against PyPI's torch 2.x, on the same machine, alternating in one run; the median of the rounds and the
# ratio. Both builds must exist (make build; make build TORCH=pypi).
#
#   benchmarks/compare_toolchains.sh [rounds=3] [recipe] [extra overrides...]
#
# Each run trains max_duration=1ep (override it after the recipe) with no checkpoints, no progress bar, no metric
# files and no scheduler (a warmup of 1ep would not fit in 1ep; the learning rate does not change the work);
# "train time" is the trainer's own training wall time (evaluation excluded), from its console summary.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-3}
recipe=${2:-$root/examples/recipes/fashion_mnist_baseline.yaml}
shift $(( $# < 2 ? $# : 2 ))
declare -A bin=([debian]=$root/build/release/tessera-run [pypi]=$root/build/pypi/tessera-run)
for t in debian pypi; do
  [ -x "${bin[$t]}" ] || { echo "compare_toolchains: ${bin[$t]} is missing (make build${t/debian/}${t/pypi/ TORCH=pypi})" >&2; exit 2; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
declare -A times=([debian]="" [pypi]="")
for r in $(seq 1 "$rounds"); do
  for t in debian pypi; do
    "${bin[$t]}" "$recipe" max_duration=1ep "schedulers=[]" "checkpoint={}" "callbacks=[console_summary]" "loggers=[]" \
      run_dir="$tmp/$t" "$@" > "$tmp/$t.log" 2>&1 || { cat "$tmp/$t.log" >&2; exit 1; }
    s=$(grep -oE 'train time +[0-9.]+ s' "$tmp/$t.log" | grep -oE '[0-9.]+' | head -1)
    acc=$(grep -oE 'metrics/test/accuracy +[0-9.]+' "$tmp/$t.log" | grep -oE '[0-9.]+$' | head -1)
    echo "round $r  $t  train time ${s} s  test accuracy ${acc:-?}"
    times[$t]+="$s "
  done
done
median() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
d=$(median "${times[debian]}"); p=$(median "${times[pypi]}")
echo "median train time per epoch: Debian LibTorch 1.13.1 ${d} s, PyPI torch (scripts/install-torch-pypi.sh) ${p} s;" \
     "ratio debian/pypi $(awk -v a="$d" -v b="$p" 'BEGIN {printf "%.3f", a / b}') (above 1: PyPI is faster)"
