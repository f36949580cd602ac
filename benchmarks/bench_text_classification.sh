#!/usr/bin/env bash
# Fine-tuning against training from scratch, side by side in one session: the language-identification task of
# benchmarks/make_language_id.py (five languages' words from Debian's word lists), the bert_classifier model of
# examples/recipes/words_bert_classifier.yaml trained once from the final weights of the masked-language-model run
# of examples/recipes/words_bert.yaml and once from scratch, for each seed, on all 9,000 training words (6 epochs)
# and on the first 1,000 (30 epochs). Prints the test accuracy on the 1,000 held-out words and the training seconds.
#   benchmarks/bench_text_classification.sh [seeds...]        (default: 42 43)
# Needs tessera-run built (make) and the word lists (apt-get install wamerican wngerman wfrench wspanish witalian).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${TESSERA_RUN:-$root/build/release/tessera-run}
seeds=("${@:-42 43}")
seeds=(${seeds[@]})
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
cd "$out"
python3 "$root/benchmarks/make_language_id.py" data/language_id
"$run" "$root/examples/recipes/words_bert.yaml" callbacks=[] > pretrain.log 2>&1
echo "pretraining: $(grep -o '"metrics/test/accuracy":[0-9.]*' runs/words_bert/metrics.jsonl | tail -1)" \
  "in $(grep -o '"wct":[0-9.]*' runs/words_bert/metrics.jsonl | tail -1 | cut -d: -f2) s"
last() { grep -o "\"$2\":[0-9.]*" "$1/metrics.jsonl" | tail -1 | cut -d: -f2; }
printf '%-16s %-6s %-12s %-14s %s\n' labels seed start "test accuracy" "train s"
for labels in 9000 1000; do
  for seed in "${seeds[@]}"; do
    for start in pretrained scratch; do
      dir=runs/$labels-$seed-$start
      args=(callbacks=[] "run_dir=$dir" "seed=$seed")
      [ "$labels" = 1000 ] && args+=(max_duration=30ep data.train.dataset.text_classification.limit=1000)
      [ "$start" = scratch ] && args+=(checkpoint.load_path=)
      "$run" "$root/examples/recipes/words_bert_classifier.yaml" "${args[@]}" > "$dir.log" 2>&1
      printf '%-16s %-6s %-12s %-14s %s\n' "$labels" "$seed" "$start" "$(last "$dir" metrics/test/accuracy)" \
        "$(last "$dir" wct)"
    done
  done
done
echo "runs in $out"
