#!/usr/bin/env bash
# Fine-tuning a Hugging Face GPT-2 or Llama checkpoint: Tessera against transformers in a plain PyTorch loop, in one
# process on PyPI's torch 2.15 (docs/results.md, "Fine-tuning a Hugging Face GPT-2" and "... Llama").
#
#   benchmarks/bench_gpt2.sh --rounds 3 --steps 30        # extra arguments go to benchmarks/bench_gpt2.py
#   benchmarks/bench_gpt2.sh --arch llama                 # Llama's architecture
#
# 1. scripts/install-peers.sh streaming: the venv with transformers, on the project's torch 2.15 venv (idempotent);
# 2. benchmarks/pypi_site.sh: Tessera built against the same torch, its wheel unpacked into build/bench-gpt2/site;
# 3. benchmarks/bench_gpt2.py with that venv's Python.
# Set TESSERA_BENCH_SKIP_BUILD=1 to reuse the wheel already unpacked.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
peers=$(bash scripts/install-peers.sh streaming | tail -n 1)
site=$root/build/bench-gpt2/site
if [ "${TESSERA_BENCH_SKIP_BUILD:-0}" != 1 ] || [ ! -d "$site/tessera" ]; then
  bash benchmarks/pypi_site.sh "$site" "$peers/bin/python"
fi
PYTHONPATH=$site OMP_WAIT_POLICY=PASSIVE exec "$peers/bin/python" benchmarks/bench_gpt2.py "$@"
