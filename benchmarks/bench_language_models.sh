#!/usr/bin/env bash
# The sequence methods on the small GPT of examples/recipes/fortunes_gpt.yaml (4 blocks, d_model 128, Debian's fortunes
# as bytes, sequences of 128), each against its baseline, side by side in one session: every configuration trains the
# same number of epochs with the test split evaluated every 100 batches, and the table gives its training time, its
# final test perplexity per byte, and the training time at which it first reached the baseline's final perplexity
# (time to quality; "-" when it never did). The baselines are fp32 for the fp32 methods (and for ALiBi under amp_bf16:
# how much sooner the composition reaches the fp32 quality) and amp_bf16 for
# low_precision_layernorm, and the GPT with dropout 0.1 for gyro_dropout (which replaces its dropout layers). Times are
# training seconds (run.json's train_seconds, the metrics' wct: evaluation
# excluded). The bert_* configurations train the BERT of examples/recipes/fortunes_bert.yaml (masked language
# modelling; perplexity on the masked bytes) against `bert`.
#   benchmarks/bench_language_models.sh [epochs] [configurations...]
#   configurations: baseline seq_length_warmup seq_length_warmup_truncate alibi gated_linear_units amp_bf16
#                   low_precision_layernorm alibi_amp_bf16 dropout stochastic_depth gyro_dropout (default: all GPT
#                   ones); llama, llama_amp_bf16 (the same GPT with Llama's architecture: RMSNorm, rotary positions,
#                   SwiGLU of width 352, no biases, 2 key/value heads for 4); bert bert_alibi bert_gated_linear_units bert_amp_bf16 bert_muon; optimizers against the
#                   baseline's AdamW: adamw_no_decay_groups (no decay on biases and norms), lion (lr 3e-4, weight decay
#                   1.0), lion_lr1e-3 (weight decay 0.3), lion_lr1e-4, lamb (lr 3e-3, decay 0.1, none on biases and
#                   norms), lamb_lr1e-2; adamw_lr6e-3, adamw_lr1e-2 (with the no-decay groups); muon (lr 0.02, no
#                   decay; AdamW as the baseline's, without decay on biases and norms, for the embeddings, the head,
#                   biases and norms), muon_lr5e-2, muon_match_rms_adamw (the AdamW's lr 3e-3 and decay 0.1 for the
#                   matrices too, lr scaled by 0.2 sqrt(max(A, B)))
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
epochs=${1:-1}
shift $(( $# < 1 ? $# : 1 ))
configs=("${@:-baseline seq_length_warmup seq_length_warmup_truncate alibi gated_linear_units amp_bf16 low_precision_layernorm alibi_amp_bf16 dropout stochastic_depth gyro_dropout}")
configs=(${configs[@]})
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
for cfg in "${configs[@]}"; do
  precision=fp32
  dropout=0
  optimizer=()  # the recipe's (AdamW 3e-3, weight decay 0.1) unless a configuration sets one
  no_decay="groups: [{max_dims: 1, weight_decay: 0}]"  # biases, LayerNorm weights (and nothing else: 1-D only)
  model=gpt
  architecture=()  # the recipe's (GPT-2's) unless a configuration sets one
  llama=(model.gpt.norm=rms_norm model.gpt.positions=rotary model.gpt.gated=true model.gpt.activation=silu
         model.gpt.bias=false model.gpt.n_kv_heads=2 model.gpt.d_ff=352)
  case "$cfg" in bert*) model=bert ;; esac
  case "${cfg#bert_}" in
    bert) algs="[]" ;;
    baseline) algs="[]" ;;
    seq_length_warmup) algs="[{seq_length_warmup: {duration: 0.3, min_seq_length: 8, step_size: 8}}]" ;;  # re-chunks
    seq_length_warmup_truncate)  # Composer's default
      algs="[{seq_length_warmup: {duration: 0.3, min_seq_length: 8, step_size: 8, truncate: true}}]" ;;
    alibi) algs="[{alibi: {train_sequence_length_scaling: 0.25}}]" ;;
    alibi_amp_bf16) algs="[{alibi: {train_sequence_length_scaling: 0.25}}]"; precision=amp_bf16 ;;
    gated_linear_units) algs="[gated_linear_units]" ;;
    amp_bf16) algs="[]"; precision=amp_bf16 ;;
    llama) algs="[]"; architecture=("${llama[@]}") ;;
    llama_amp_bf16) algs="[]"; architecture=("${llama[@]}"); precision=amp_bf16 ;;
    low_precision_layernorm) algs="[low_precision_layernorm]"; precision=amp_bf16 ;;
    dropout) algs="[]"; dropout=0.1 ;;  # GPT-2's residual and embedding dropout
    stochastic_depth) algs="[{stochastic_depth: {drop_rate: 0.1}}]" ;;  # whole blocks, linear in depth
    gyro_dropout) algs="[{gyro_dropout: {p: 0.1}}]"; dropout=0.1 ;;  # the same rate, on 256 fixed masks (tau 16)
    adamw_no_decay_groups) algs="[]"; optimizer=("optimizer={adamw: {lr: 3.0e-3, weight_decay: 0.1, $no_decay}}") ;;
    adamw_lr6e-3|adamw_lr1e-2)  # AdamW tuned further, as muon's fair baseline
      algs="[]"; lr=${cfg#adamw_lr}; optimizer=("optimizer={adamw: {lr: $lr, weight_decay: 0.1, $no_decay}}") ;;
    lion_lr1e-3) algs="[]"; optimizer=("optimizer={lion: {lr: 1.0e-3, weight_decay: 0.3}}") ;;  # lr /3, wd x3
    lion) algs="[]"; optimizer=("optimizer={lion: {lr: 3.0e-4, weight_decay: 1.0}}") ;;  # lr /10, wd x10 (the paper's rule)
    lion_lr1e-4) algs="[]"; optimizer=("optimizer={lion: {lr: 1.0e-4, weight_decay: 1.0}}") ;;
    lamb) algs="[]"; optimizer=("optimizer={lamb: {lr: 3.0e-3, weight_decay: 0.1, $no_decay}}") ;;  # AdamW's lr
    lamb_lr1e-2) algs="[]"; optimizer=("optimizer={lamb: {lr: 1.0e-2, weight_decay: 0.1, $no_decay}}") ;;
    muon|muon_lr5e-2|muon_match_rms_adamw)
      algs="[]"
      adamw_lr=3.0e-3; [ "$model" = bert ] && adamw_lr=1.0e-3  # the recipe's AdamW lr
      muon_rest="adamw_names: [\"embed.*\", \"pos_embed.*\", \"head.*\"], adamw_lr: $adamw_lr, adamw_weight_decay: 0.1"
      case "${cfg#bert_}" in
        muon) optimizer=("optimizer={muon: {lr: 0.02, weight_decay: 0, $muon_rest, $no_decay}}") ;;
        muon_lr5e-2) optimizer=("optimizer={muon: {lr: 0.05, weight_decay: 0, $muon_rest, $no_decay}}") ;;
        *) optimizer=("optimizer={muon: {lr: 3.0e-3, weight_decay: 0.1, adjust_lr: match_rms_adamw, $muon_rest, $no_decay}}") ;;
      esac ;;
    *) echo "unknown configuration $cfg" >&2; exit 2 ;;
  esac
  "$root/build/release/tessera-run" "$root/examples/recipes/fortunes_$model.yaml" max_duration="${epochs}ep" \
    precision="$precision" model.$model.dropout="$dropout" "algorithms=$algs" run_dir="$out/$cfg" eval_interval=100ba "callbacks=[]" \
    "loggers=[{jsonl: {}}]" "${optimizer[@]}" "${architecture[@]}" >"$out/$cfg.log" 2>&1 || { tail -3 "$out/$cfg.log"; exit 1; }
  echo "$cfg done" >&2
done
python3 - "$out" "${configs[@]}" <<'PY'
import json, pathlib, sys
out, configs = pathlib.Path(sys.argv[1]), sys.argv[2:]
def load(cfg):
    run = json.loads((out / cfg / "run.json").read_text())
    evals = [json.loads(l) for l in (out / cfg / "metrics.jsonl").read_text().splitlines()]
    # wct: the training seconds so far (the timestamp counts batches only, evaluations excluded)
    return run["timestamp"]["train_seconds"], [(e["wct"], e["metrics/test/perplexity"]) for e in evals
                                                if "metrics/test/perplexity" in e]
runs = {c: load(c) for c in configs}
def base_of(c):
    if c.startswith("bert"):
        return "bert"
    return {"low_precision_layernorm": "amp_bf16", "gyro_dropout": "dropout"}.get(c, "baseline")
print(f"{'configuration':26} {'train s':>8} {'x base':>7} {'final ppl':>10} {'s to base ppl':>14}")
for c in configs:
    train, curve = runs[c]
    b = base_of(c)
    if b not in runs:
        print(f"{c:26} {train:8.1f} {'':>7} {curve[-1][1]:10.3f}")
        continue
    target = runs[b][1][-1][1]
    reach = next((t for t, p in curve if p <= target), None)
    print(f"{c:26} {train:8.1f} {train / runs[b][0]:7.3f} {curve[-1][1]:10.3f} {('%.1f' % reach) if reach else '-':>14}")
PY
