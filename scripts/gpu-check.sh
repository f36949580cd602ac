#!/usr/bin/env bash
# The one-command GPU check (README, docs/kernels.md). Two steps:
#
#   scripts/gpu-check.sh prepare      on a CPU machine of the project, from the repository root: gathers what the GPU
#                                     machine lacks (Debian's yaml-cpp, fmt, GoogleTest, Google Benchmark, CLI11,
#                                     nlohmann-json, xxhash, zstd, zlib headers and Fashion-MNIST) into .device/,
#                                     which git ignores locally, and copies this script there
#   bash .device/gpu-check.sh         on the GPU machine (the device tool's run, with carry [".device"]): unpacks them
#                                     into a private prefix, configures against the machine's PyPI torch with the
#                                     CUDA kernels on, builds, runs ctest -L gpu, compute-sanitizer (memcheck and
#                                     racecheck) on the kernel tests, the kernel benchmarks (stock torch against the
#                                     fused ops, achieved GB/s against the device's peak) and one epoch of the
#                                     flagship recipe on CUDA; prints a markdown table for docs/kernels.md and writes
#                                     the logs under $OUT (or ./gpu-check-out).
#
# Settings (environment): ARCH (compute capability x 10 of the GPU, default: read from nvidia-smi), PEAK_GBS (the
# card's copy bandwidth, default 4300 for an H200, 3000 otherwise), QUICK=1 (short benchmarks), CMAKE_EXTRA (more
# cmake arguments, e.g. -DCMAKE_CUDA_COMPILER=<an nvcc of torch's CUDA major version>).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "${1:-}" = prepare ]; then
  set -e
  cd "$(git rev-parse --show-toplevel)"
  grep -qxF '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  mkdir -p .device/debs
  cp scripts/gpu-check.sh .device/gpu-check.sh
  pkgs=(libyaml-cpp-dev libyaml-cpp0.7 libfmt-dev libfmt9 libgtest-dev libgmock-dev googletest
        libbenchmark-dev libbenchmark1debian nlohmann-json3-dev libcli11-dev libxxhash-dev libxxhash0
        libzstd-dev libzstd1 zlib1g-dev)
  [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock | head -1)" ] || apt-get update -qq
  (cd .device/debs && rm -f ./*.deb && apt-get download -qq "${pkgs[@]}")
  mkdir -p .device/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .device/fashion-mnist/
  du -sh .device | cut -f1 | xargs echo "gpu-check: .device ready:"
  echo 'gpu-check: next: the device tool run with carry [".device"] and command "bash .device/gpu-check.sh"'
  exit 0
fi

# ---- on the GPU machine ----------------------------------------------------------------------------------------
cd "$(dirname "${BASH_SOURCE[0]}")/.."   # .device/.. = the repository root
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
prefix=/tmp/tessera-devroot
if [ ! -d "$prefix/usr" ]; then
  for f in .device/debs/*.deb; do dpkg -x "$f" "$prefix"; done
fi
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
python=${PYTHON:-python3}
torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader | tee "$out/gpu.txt"
"$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' | tee -a "$out/gpu.txt"
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
arch=${ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')}
peak=${PEAK_GBS:-$([[ $gpu_name == *H200* ]] && echo 4300 || echo 3000)}
build=${BUILD_DIR:-/tmp/tessera-gpu-build}

declare -A status
step() {  # step NAME COMMAND...: runs it, logs to $out/NAME.log, records ok/FAILED
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$out/$name.log" 2>&1; then status[$name]="ok ($((SECONDS - t0)) s)"; else status[$name]="FAILED ($((SECONDS - t0)) s, see $name.log)"; fi
  echo "gpu-check: $name: ${status[$name]}"
}

step configure cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON \
  -DTESSERA_CUDA_ARCHITECTURES="$arch" \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr;$prefix/usr/lib/x86_64-linux-gnu/cmake" ${CMAKE_EXTRA:-}
step build cmake --build "$build" -j "$(nproc)" --target tessera tessera-run tessera_tests tessera_gpu_tests bench_kernels
step gpu_tests ctest --test-dir "$build" -L gpu --output-on-failure
step registration ctest --test-dir "$build" -R 'OpsRegistration|cuda_architectures' --output-on-failure
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
# Not under the sanitizer: the 64-bit index case (too slow there) and the deliberate device-side assertion of an
# out-of-range gather index (the sanitizer would report it).
kernel_tests='KernelsGpu.*:-*SixtyFourBitIndex*:*StopsOnADeviceIndexOutOfRange*'
step memcheck "$sanitizer" --tool memcheck --error-exitcode 1 "$build/tests/tessera_gpu_tests" --gtest_filter="$kernel_tests"
step racecheck "$sanitizer" --tool racecheck --error-exitcode 1 "$build/tests/tessera_gpu_tests" --gtest_filter="$kernel_tests"
bench_args=(--gpu-only --peak-gbs "$peak")
[ "${QUICK:-0}" = 1 ] && bench_args+=(--quick)
step bench_kernels "$build/benchmarks/bench_kernels" "${bench_args[@]}"
step flagship "$build/tessera-run" examples/recipes/fashion_mnist.yaml device=cuda max_duration=1ep \
  data.train.dataset.fashion_mnist.folder="$PWD/.device/fashion-mnist" \
  data.eval.dataset.fashion_mnist.folder="$PWD/.device/fashion-mnist" \
  run_dir="$out/flagship" checkpoint.folder="$out/flagship/checkpoints"

{
  echo "## GPU check: $gpu_name (sm_$arch), $(date -u +%Y-%m-%d)"
  echo
  echo "| step | result |"
  echo "|---|---|"
  for s in configure build gpu_tests registration memcheck racecheck bench_kernels flagship; do
    echo "| $s | ${status[$s]:-not run} |"
  done
  echo
  grep -E '^\|' "$out/bench_kernels.log" 2>/dev/null
  echo
  grep -iE 'accuracy|wall|time' "$out/flagship.log" 2>/dev/null | tail -5 | sed 's/^/    /'
} | tee "$out/summary.md"
for s in "${status[@]}"; do [[ $s == ok* ]] || exit 1; done
