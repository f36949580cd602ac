#!/usr/bin/env bash
# Tessera against Composer and a plain PyTorch loop, all on PyPI's torch 2.15 (docs/results.md, "Against Composer").
#
#   benchmarks/run_composer_bench.sh steps --rounds 3            # step time and per-phase breakdown
#   benchmarks/run_composer_bench.sh tta --duration 240ba        # time to a reduced accuracy target
#   benchmarks/run_composer_bench.sh --profile --configs none    # op-level profile (benchmarks/profile_composer.py)
#   benchmarks/run_composer_bench.sh --check-schedule 60ba 2560  # same work in both? (check_composer_schedule.py)
#   benchmarks/run_composer_bench.sh --check-optimizers          # Composer's DecoupledSGDW/AdamW updates? (check_composer_optimizers.py)
#
# 1. scripts/install-peers.sh: Composer in its own venv on the project's torch 2.15 venv (idempotent);
# 2. Tessera built against the same torch (`make build TORCH=pypi`, build/pypi) and its wheel (`pip wheel`, as
#    scripts/test-python.sh does), unpacked into build/bench-composer/site (not into the peers venv);
# 3. benchmarks/bench_composer.py with the peers venv's Python; extra arguments go to it.
# Set TESSERA_BENCH_SKIP_BUILD=1 to reuse the wheel already unpacked.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
peers=$(bash scripts/install-peers.sh | tail -n 1)
site=$root/build/bench-composer/site
if [ "${TESSERA_BENCH_SKIP_BUILD:-0}" != 1 ] || [ ! -d "$site/tessera" ]; then
  bash benchmarks/pypi_site.sh "$site" "$peers/bin/python"
fi
script=benchmarks/bench_composer.py
if [ "${1:-}" = --profile ]; then script=benchmarks/profile_composer.py; shift; fi
if [ "${1:-}" = --check-schedule ]; then script=benchmarks/check_composer_schedule.py; shift; fi
if [ "${1:-}" = --check-optimizers ]; then script=benchmarks/check_composer_optimizers.py; shift; fi
PYTHONPATH=$site:$root/benchmarks exec "$peers/bin/python" "$script" "$@"
