#!/usr/bin/env bash
# Compiles every CUDA kernel file (algorithms/*/*.cu, src/ops/*.cu) with nvcc for sm_90, compile only, into a
# temporary folder: fails when one does not compile, exits 77 (ctest: skipped) when there is no nvcc.
#   bash tests/gpu/compile_cuda_kernels.sh <project root> [nvcc]
set -uo pipefail
root=${1:?project root}
nvcc=${2:-}
if [ -z "$nvcc" ] || [ ! -x "$nvcc" ]; then nvcc=/usr/local/cuda/bin/nvcc; fi
if [ ! -x "$nvcc" ]; then nvcc=$(command -v nvcc || true); fi
if [ -z "$nvcc" ] || [ ! -x "$nvcc" ]; then
  echo "no nvcc found: skipping the CUDA compile check"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
shopt -s nullglob
files=("$root"/algorithms/*/*.cu "$root"/src/ops/*.cu)
if [ ${#files[@]} -eq 0 ]; then
  echo "no .cu files under $root"
  exit 1
fi
failed=0
for f in "${files[@]}"; do
  rel=${f#"$root"/}
  if "$nvcc" -c -arch=sm_90 -std=c++17 -Werror all-warnings "$f" -o "$tmp/$(echo "$rel" | tr / _).o"; then
    echo "ok      $rel"
  else
    echo "FAILED  $rel"
    failed=1
  fi
done
exit $failed
