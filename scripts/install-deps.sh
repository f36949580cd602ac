#!/usr/bin/env bash
# Installs every Debian package Tessera needs to build, test and run its demo (and, given as arguments, the extra
# packages of a make target such as make fuzz).
# Idempotent: when everything is present it only runs dpkg-query and exits (well under a second).
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libgloo-dev libopenblas0-openmp libyaml-cpp-dev libfmt-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libzstd-dev libxxhash-dev zlib1g-dev
  libpng-dev libjpeg62-turbo-dev  # MDS image columns (src/data/mds)
  libcurl4-openssl-dev  # http(s) remotes of streaming datasets (src/data/shard_cache.cpp)
  openssl  # the self-signed certificate of the https remote test (tests/core/shard_cache_test.cpp)
  python3-torch python3-pybind11 pybind11-dev python3-pytest python3-venv python3-pip
  python3-dev python3-setuptools python3-wheel
  python3-pil  # PIL images written by tessera.data.MdsWriter (python/tests/test_mds.py; Debian's torch only)
  dataset-fashion-mnist
  fortunes  # English text for the language-model recipes (the text dataset's default, src/data/text.cpp)
  chromium  # headless, for the report tests (python/tests/test_report.py render tessera-report's page)
)
# Extra packages for one target (make fuzz: clang libclang-rt-14-dev), given as arguments.
pkgs+=("$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
