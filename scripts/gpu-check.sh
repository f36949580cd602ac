#!/usr/bin/env bash
# The GPU check (README, docs/kernels.md): build here, run there. On a CPU machine of the project, from the
# repository root, one of:
#
#   scripts/gpu-check.sh prebuild     (preferred) installs PyPI's torch of the GPU machine's version (DEVICE_TORCH,
#                                     default 2.11.0: its wheel is the cu130 build that machine has) into a venv of
#                                     its own, builds the library, runner, GPU tests and two benchmarks with the CUDA
#                                     kernels for sm_90 in build/gpu-prebuilt (about 15 minutes on 2 cores), then
#                                     runs `prepare build/gpu-prebuilt`
#   scripts/gpu-check.sh prepare [BUILD]   gathers into .device/ (which git ignores locally) Fashion-MNIST, this
#                                     script, and either BUILD's binaries with the shared libraries they need beyond
#                                     glibc, torch and CUDA (.device/prebuilt), or without BUILD the Debian packages
#                                     a build on the GPU machine needs (.device/debs); either way under the device
#                                     tool's 64 MiB
#
# then on the GPU machine (the device tool's run, with carry [".device"]): `bash .device/gpu-check.sh`. It takes the
# prebuilt binaries when they load against that machine's torch (and stops at once, naming what is missing, when
# they do not), else unpacks the packages and builds there (several of the device's minutes); then, within BUDGET
# seconds, in this order: mixed precision on the ResNet recipe (benchmarks/bench_precision_gpu.sh), the GPU tests,
# data-parallel on the one GPU against Python DDP (bench_ddp, bench_ddp_torch.py), `--nproc` with more ranks than
# GPUs (refused, exit 2), one epoch of the flagship recipe, the kernel benchmarks (stock torch against the fused
# ops, GB/s against the card's peak), compute-sanitizer memcheck and racecheck on the kernel tests. It prints a
# markdown summary and leaves two files under $OUT (or ./gpu-check-out): summary.md and logs.tgz (every step's log,
# refreshed after each step, so a call cut short still returns what ran).
#
# Settings (environment): ARCH (compute capability x 10 of the GPU, default: read from nvidia-smi; 90 for prebuild),
# PEAK_GBS (the card's copy bandwidth, default 4300 for an H200, 3000 otherwise), QUICK=1 (short kernel benchmarks),
# BUDGET (seconds for the whole check, default 520: a step that would not finish inside it is cut short or
# skipped), CMAKE_EXTRA (more cmake arguments).
set -uo pipefail

if [ "${1:-}" = prebuild ]; then
  set -e
  cd "$(git rev-parse --show-toplevel)"
  venv=$(TESSERA_TORCH_VERSION="${DEVICE_TORCH:-2.11.0}" bash scripts/install-torch-pypi.sh | tail -n 1)
  b=${BUILD_DIR:-build/gpu-prebuilt}
  if [ ! -f "$b/build.ninja" ]; then
    cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON -DTESSERA_CUDA_ARCHITECTURES="${ARCH:-90}" \
      -DCMAKE_PREFIX_PATH="$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')" ${CMAKE_EXTRA:-}
  fi
  cmake --build "$b" -j "${JOBS:-$(nproc)}" --target tessera tessera-run tessera_gpu_tests bench_kernels bench_ddp
  exec bash scripts/gpu-check.sh prepare "$b"
fi

if [ "${1:-}" = prepare ]; then
  set -e
  cd "$(git rev-parse --show-toplevel)"
  grep -qxF '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  rm -rf .device/debs .device/prebuilt
  mkdir -p .device/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .device/fashion-mnist/
  cp scripts/gpu-check.sh .device/gpu-check.sh
  if [ -z "${2:-}" ]; then  # what a build on the GPU machine needs
    mkdir -p .device/debs
    pkgs=(libyaml-cpp-dev libyaml-cpp0.7 libfmt-dev libfmt9 libgtest-dev libgmock-dev googletest
          libbenchmark-dev libbenchmark1debian nlohmann-json3-dev libcli11-dev libxxhash-dev libxxhash0
          libzstd-dev libzstd1 zlib1g-dev libpng-dev libpng16-16 libjpeg62-turbo-dev libjpeg62-turbo
          libcurl4-openssl-dev libcurl4)
    [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock | head -1)" ] || apt-get update -qq
    (cd .device/debs && apt-get download -qq "${pkgs[@]}")
  else
    b=$2
    mkdir -p .device/prebuilt/tests .device/prebuilt/benchmarks
    cp -L "$b/libtessera.so.0" .device/prebuilt/   # the soname the binaries load; no links (they travel as links)
    cp "$b/tessera-run" .device/prebuilt/
    cp "$b/tests/tessera_gpu_tests" .device/prebuilt/tests/
    for x in bench_kernels bench_ddp; do [ -f "$b/benchmarks/$x" ] && cp "$b/benchmarks/$x" .device/prebuilt/benchmarks/; done
    # The shared libraries they need beyond glibc, libstdc++, torch and CUDA (yaml-cpp, libpng, libjpeg, zstd, xxHash,
    # libcurl and its own), from this machine: the GPU machine's image has not all of them.
    mkdir -p .device/prebuilt/lib
    ldd "$b/libtessera.so.0" | awk '/=> \//{print $3}' |
      grep -vE '/(libc|libm|libdl|libpthread|librt|libresolv|libutil|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so|/torch/|/nvidia/|/cuda' |
      xargs -r cp -L -t .device/prebuilt/lib
    find .device/prebuilt -type f -name '*' ! -name '*.txt' -exec strip --strip-unneeded {} +
    grep -E '^CMAKE_PREFIX_PATH' "$b/CMakeCache.txt" > .device/prebuilt/built-against.txt || true
  fi
  du -sh .device | cut -f1 | xargs echo "gpu-check: .device ready:"
  echo 'gpu-check: next: the device tool run with carry [".device"] and command "bash .device/gpu-check.sh"'
  exit 0
fi

# ---- on the GPU machine ----------------------------------------------------------------------------------------
cd "$(dirname "${BASH_SOURCE[0]}")/.."   # .device/.. = the repository root
root=$PWD
out=${OUT:-$PWD/gpu-check-out}
logs=/tmp/gpu-check-logs
mkdir -p "$out" "$logs"
budget=${BUDGET:-520}
start=$SECONDS
prefix=/tmp/tessera-devroot
if [ ! -d "$prefix/usr" ]; then
  for f in .device/debs/*.deb; do dpkg -x "$f" "$prefix"; done
fi
python=${PYTHON:-python3}
torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
torch_lib=$(cd "$torch_prefix/../../lib" && pwd)
nvidia_libs=$(ls -d "$torch_lib"/../../nvidia/*/lib "$torch_lib"/../../nvidia/*/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$torch_lib:$nvidia_libs$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TESSERA_SOURCE_DIR=$root TESSERA_FASHION_MNIST=$root/.device/fashion-mnist
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader | tee "$logs/gpu.txt"
"$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' | tee -a "$logs/gpu.txt"
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
arch=${ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')}
peak=${PEAK_GBS:-$([[ $gpu_name == *H200* ]] && echo 4300 || echo 3000)}

declare -A status
order=()
step() {  # step NAME SECONDS COMMAND...: runs it under a timeout, logs to NAME.log, records ok/FAILED/skipped
  local name=$1 limit=$2; shift 2
  order+=("$name")
  local left=$((budget - (SECONDS - start)))
  if [ "$left" -lt 20 ]; then status[$name]="skipped (budget spent)"; echo "gpu-check: $name: ${status[$name]}"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  if [ $rc = 0 ]; then status[$name]="ok ($((SECONDS - t0)) s)"
  elif [ $rc = 124 ] || [ $rc = 137 ]; then status[$name]="TIMED OUT after ${limit} s (see $name.log)"
  else status[$name]="FAILED, exit $rc ($((SECONDS - t0)) s, see $name.log)"; fi
  echo "gpu-check: $name: ${status[$name]}"
  tail -3 "$logs/$name.log" | sed 's/^/    /'
  tar czf "$out/logs.tgz" -C "$logs" . 2>/dev/null
}

build=/tmp/tessera-gpu-build
prebuilt_loads() {
  [ -x .device/prebuilt/tessera-run ] || return 1
  local path="$root/.device/prebuilt:$root/.device/prebuilt/lib:$LD_LIBRARY_PATH"
  LD_LIBRARY_PATH=$path ldd .device/prebuilt/tessera-run .device/prebuilt/tests/tessera_gpu_tests > "$logs/ldd.log" 2>&1
  ! grep -q 'not found' "$logs/ldd.log" && LD_LIBRARY_PATH=$path .device/prebuilt/tessera-run --help > /dev/null 2>&1
}
if prebuilt_loads; then
  build=$root/.device/prebuilt
  export LD_LIBRARY_PATH="$build:$build/lib:$LD_LIBRARY_PATH"
  echo "gpu-check: the prebuilt binaries load against this torch; no build here ($(cat "$build/built-against.txt" | tr '\n' ' '))"
elif [ -x .device/prebuilt/tessera-run ]; then
  echo "gpu-check: the prebuilt binaries do not load against this machine's torch (ldd.log); run"
  echo "  'DEVICE_TORCH=<its version> scripts/gpu-check.sh prebuild' there, or 'scripts/gpu-check.sh prepare' to build here"
  sed -n '/not found/p' "$logs/ldd.log" | sort -u | head
  tar czf "$out/logs.tgz" -C "$logs" .
  exit 1
else
  echo "gpu-check: no prebuilt binaries: building here"
  step configure 120 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON \
    -DTESSERA_CUDA_ARCHITECTURES="$arch" \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr;$prefix/usr/lib/x86_64-linux-gnu/cmake" ${CMAKE_EXTRA:-}
  step build 400 cmake --build "$build" -j "$(nproc)" --target tessera tessera-run tessera_gpu_tests bench_kernels bench_ddp
fi

fm=$root/.device/fashion-mnist
step precision 200 bash benchmarks/bench_precision_gpu.sh "$build" "$fm" /tmp/gpu-check-precision
step gpu_tests 240 "$build/tests/tessera_gpu_tests"
step ddp_tessera 90 bash -c "'$build/benchmarks/bench_ddp' 40 --device cuda --backend gloo --nproc 2; \
  '$build/benchmarks/bench_ddp' 40 --device cuda --backend nccl --nproc 2"
step ddp_pytorch 90 bash -c "'$python' benchmarks/bench_ddp_torch.py 40 --device cuda --backend gloo --nproc 2; \
  '$python' benchmarks/bench_ddp_torch.py 40 --device cuda --backend nccl --nproc 2"
# Two ranks on fewer GPUs than ranks: refused before training with exit 2 (the check passes when it is).
step nproc_refused 60 bash -c "'$build/tessera-run' --nproc $(( $(nvidia-smi -L | wc -l) + 1 )) \
  examples/recipes/fashion_mnist.yaml device=cuda data.train.dataset.fashion_mnist.folder='$fm' \
  data.eval.dataset.fashion_mnist.folder='$fm' run_dir=/tmp/gpu-check-nproc; rc=\$?; echo exit \$rc; [ \$rc = 2 ]"
step flagship 120 "$build/tessera-run" examples/recipes/fashion_mnist.yaml device=cuda max_duration=1ep \
  data.train.dataset.fashion_mnist.folder="$fm" data.eval.dataset.fashion_mnist.folder="$fm" \
  run_dir=/tmp/gpu-check-flagship checkpoint.folder=/tmp/gpu-check-flagship/checkpoints
bench_args=(--gpu-only --peak-gbs "$peak")
[ "${QUICK:-0}" = 1 ] && bench_args+=(--quick)
step bench_kernels 150 "$build/benchmarks/bench_kernels" "${bench_args[@]}"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
# Not under the sanitizer: the 64-bit index case (too slow there) and the deliberate device-side assertion of an
# out-of-range gather index (the sanitizer would report it).
kernel_tests='KernelsGpu.*:-*SixtyFourBitIndex*:*StopsOnADeviceIndexOutOfRange*'
step memcheck 120 "$sanitizer" --tool memcheck --error-exitcode 1 "$build/tests/tessera_gpu_tests" --gtest_filter="$kernel_tests"
step racecheck 120 "$sanitizer" --tool racecheck --error-exitcode 1 "$build/tests/tessera_gpu_tests" --gtest_filter="$kernel_tests"

{
  echo "## GPU check: $gpu_name (sm_$arch), $(date -u +%Y-%m-%d), $(tail -1 "$logs/gpu.txt")"
  echo
  echo "| step | result |"
  echo "|---|---|"
  for s in "${order[@]}"; do echo "| $s | ${status[$s]} |"; done
  echo
  grep -E '^\[  (PASSED|FAILED|  SKIPPED) |tests? ran|^accuracy' "$logs/gpu_tests.log" 2>/dev/null
  echo
  grep -E '^\|' "$logs/precision.log" 2>/dev/null
  echo
  cat "$logs/ddp_tessera.log" "$logs/ddp_pytorch.log" 2>/dev/null | grep -E '^(tessera|pytorch)|rror' | head -20
  echo
  grep -iE 'rror|refused|exit' "$logs/nproc_refused.log" 2>/dev/null | head -5
  echo
  grep -E '^\|' "$logs/bench_kernels.log" 2>/dev/null
  echo
  grep -iE 'accuracy|wall|time' "$logs/flagship.log" 2>/dev/null | tail -5 | sed 's/^/    /'
} > "$out/summary.md"
cat "$out/summary.md"
tar czf "$out/logs.tgz" -C "$logs" . 2>/dev/null
for s in "${status[@]}"; do [[ $s == ok* ]] || exit 1; done
