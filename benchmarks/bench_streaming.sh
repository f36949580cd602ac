#!/usr/bin/env bash
# Tessera's StreamingDataset and DataLoader against MosaicML Streaming's StreamingDataset in a PyTorch DataLoader,
# over the same MDS shards of Fashion-MNIST's 60,000 training images (written by tessera-shard: 48 shards of
# 1 MB, uncompressed, then zstd), side by side in one run: samples/s over shuffled epochs and seconds to the
# first batch of a run resumed at 90% of an epoch, for 0 and 2 loader workers (docs/streaming.md, "Benchmark");
# then the training and test shards mixed as two streams in stratified batches; then token samples of text for the
# language models (tessera-shard write --text), 128 + 1 bytes each, in batches of 32.
#
#   benchmarks/bench_streaming.sh [build dir] [work dir]
#
# Builds bench_streaming and tessera-shard when missing; creates the Streaming venv (scripts/install-peers.sh
# streaming) when missing. Run it on a quiet machine: both sides share its cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
work=${2:-$(mktemp -d)}
cmake --build "$build" --target bench_streaming tessera-shard >/dev/null
python=$(bash "$root/scripts/install-peers.sh" streaming | tail -n 1)/bin/python
for kind in raw zstd; do
  dir=$work/fmnist-$kind
  if [ ! -f "$dir/index.json" ]; then
    compression=()
    [ "$kind" = zstd ] && compression=(--compression zstd)
    "$build/tessera-shard" write --fashion-mnist --out "$dir" --size-limit 1000000 "${compression[@]}" >/dev/null
  fi
  echo "== $kind shards: $dir"
  OMP_NUM_THREADS=1 "$build/benchmarks/bench_streaming" --folder "$dir" --json "$work/tessera-$kind.json"
  "$python" "$root/benchmarks/bench_streaming.py" --folder "$dir" --tessera "$work/tessera-$kind.json" --label "$kind"
  echo
done
# Mixed streams: the training images and the 10,000 test images as two streams, in stratified batches (each batch
# 6/7 training images, 1/7 test images) on both sides.
test_dir=$work/fmnist-test-raw
[ -f "$test_dir/index.json" ] ||
  "$build/tessera-shard" write --fashion-mnist --split test --out "$test_dir" --size-limit 1000000 >/dev/null
streams=(--stream "$work/fmnist-raw" --stream "$test_dir" --batching stratified)
echo "== two streams, stratified: $work/fmnist-raw + $test_dir"
OMP_NUM_THREADS=1 "$build/benchmarks/bench_streaming" "${streams[@]}" --json "$work/tessera-stratified.json"
"$python" "$root/benchmarks/bench_streaming.py" "${streams[@]}" --tessera "$work/tessera-stratified.json" \
  --label "raw, 2 streams, stratified"
# Token samples for the language models: the fortunes as 128-byte next-token examples (tessera-shard write --text),
# batches of 32 sequences, as fortunes_gpt_streaming.yaml reads them.
echo
tokens_dir=$work/fortunes-tokens
[ -f "$tokens_dir/index.json" ] ||
  "$build/tessera-shard" write --text /usr/share/games/fortunes --seq-length 128 --size-limit 1000000 \
    --out "$tokens_dir" >/dev/null
echo "== token samples (128 + 1 bytes): $tokens_dir"
OMP_NUM_THREADS=1 "$build/benchmarks/bench_streaming" --folder "$tokens_dir" --tokens 128 --batch 32 \
  --json "$work/tessera-tokens.json"
"$python" "$root/benchmarks/bench_streaming.py" --folder "$tokens_dir" --tokens 128 --batch 32 \
  --tessera "$work/tessera-tokens.json" --label "tokens"
