#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz for a set time each (make fuzz; docs/hardening.md) and prints what each
# did: executions, executions per second, corpus size. Fails on the first crash, hang (-timeout), leak, out-of-memory
# or sanitizer report, naming the target and the input that caused it (kept under <build>/fuzz-artifacts/<target>/).
#
#   scripts/fuzz.sh BUILD_DIR SECONDS [TARGET...]
#   FUZZ_RUNS=1000000 scripts/fuzz.sh BUILD_DIR 0 [TARGET...]    # a number of executions instead of a time
#
# The working corpus of each target is <build>/fuzz-corpus/<target> (kept between runs), seeded from the committed
# tests/fuzz/corpus/<target>; new inputs go there, never into the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: scripts/fuzz.sh BUILD_DIR SECONDS [TARGET...]}
seconds=${2:?usage: scripts/fuzz.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_recipe fuzz_time fuzz_checkpoint fuzz_idx fuzz_mds_index fuzz_mds_shard fuzz_tokenizer fuzz_split_regex
           fuzz_sentencepiece_model)
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# One LibTorch thread: the readers do not need more, and each target's executions are then comparable.
export OMP_NUM_THREADS=1
# FUZZ_RUNS: stop each target after that many executions (-runs) rather than after SECONDS.
limit=(-max_total_time="$seconds")
[ -n "${FUZZ_RUNS:-}" ] && limit=(-runs="$FUZZ_RUNS")
printf '%-16s %12s %10s %10s %8s\n' target executions seconds exec/s corpus
status=0
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/$t
  [ -x "$bin" ] || { echo "fuzz.sh: $bin is missing: build it first (make fuzz)" >&2; exit 1; }
  corpus=$build/fuzz-corpus/$t
  artifacts=$build/fuzz-artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  log=$build/fuzz-logs/$t.log
  mkdir -p "$(dirname "$log")"
  start=$(date +%s)
  if "$bin" "${limit[@]}" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
       -artifact_prefix="$artifacts/" "$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    took=$(( $(date +%s) - start ))
    rate=$(( runs / (took > 0 ? took : 1) ))
    size=$(find "$corpus" -type f | wc -l)
    printf '%-16s %12s %10s %10s %8s\n' "$t" "$runs" "$took" "$rate" "$size"
  else
    echo "fuzz.sh: $t FAILED (log: $log; input: $(ls -t "$artifacts" | head -n 1))" >&2
    grep -E 'ERROR|SUMMARY|runtime error|terminate called|what\(\)' "$log" | head -n 20 >&2 || true
    status=1
  fi
done
exit $status
