#!/usr/bin/env bash
# Tessera's data-parallel training against PyTorch's Python DDP, same model, same machine, one after the other.
#   benchmarks/bench_ddp.sh [build dir] [steps]
set -euo pipefail
build=${1:-build/release}
steps=${2:-40}
"$build/benchmarks/bench_ddp" "$steps"
/usr/bin/python3 "$(dirname "$0")/bench_ddp_torch.py" "$steps"
