#!/usr/bin/env bash
# Builds the Python package into a fresh temporary venv (Debian's /usr/bin/python3, which sees python3-torch)
# and runs the Python tests with pytest. Offline: nothing is downloaded (--no-build-isolation, --no-deps).
#
#   scripts/test-python.sh                 # all Python tests
#   scripts/test-python.sh -k functional   # extra arguments go to pytest
#
# The CMake build folder (build/python, or $TESSERA_PYTHON_BUILD_DIR) is kept between runs, so only the first
# run compiles libtessera and the bindings; later runs recompile only what changed. With
# TESSERA_LIBRARY_BUILD_DIR=<build folder> (e.g. the one `make` just built) the package links the libtessera
# built there instead of compiling the library a second time. Runs are serialised with a lock (the in-tree pip
# build and the CMake folder are shared).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=/usr/bin/python3  # not the first python3 on PATH: only Debian's sees python3-torch

if ! "$python" -c 'import torch, pytest, setuptools, wheel' 2>/dev/null; then
  echo "test-python: $python lacks torch, pytest, setuptools or wheel; run scripts/install-deps.sh" >&2
  exit 1
fi

if [ -n "${TESSERA_LIBRARY_BUILD_DIR:-}" ]; then
  TESSERA_LIBRARY_BUILD_DIR=$(cd "$TESSERA_LIBRARY_BUILD_DIR" && pwd)
  export TESSERA_LIBRARY_BUILD_DIR
fi
for var in TESSERA_PYTHON_BUILD_DIR; do
  if [ -n "${!var:-}" ]; then mkdir -p "${!var}"; export "$var=$(cd "${!var}" && pwd)"; fi
done

mkdir -p "$root/build"
exec 8>"$root/build/.test-python.lock"
flock 8

venv=$(mktemp -d "${TMPDIR:-/tmp}/tessera-venv.XXXXXX")
cleanup() { rm -rf "$venv"; }
trap cleanup EXIT

# --without-pip: the venv uses Debian's pip through --system-site-packages (no ensurepip, faster).
"$python" -m venv --system-site-packages --without-pip "$venv"
start=$(date +%s)
"$venv/bin/python" -m pip install --no-build-isolation --no-deps --no-index --disable-pip-version-check \
  --no-cache-dir -q "$root/python"
echo "test-python: package built and installed in $(( $(date +%s) - start )) s"

# Run from the tests folder so that `import tessera` finds the installed package, not python/tessera.
cd "$root/python/tests"
TESSERA_REPO_ROOT="$root" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
