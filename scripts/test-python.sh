#!/usr/bin/env bash
# Builds the Python package and runs the Python tests with pytest, against one of the two supported torches:
#
#   TESSERA_TORCH=debian (default)  Debian's /usr/bin/python3 and python3-torch 1.13: the package is installed
#                                   into a fresh temporary venv made with --system-site-packages
#   TESSERA_TORCH=pypi              PyPI's torch in the project's venv (scripts/install-torch-pypi.sh): `pip wheel`
#                                   makes a wheel, which is installed into a fresh plain venv (no system site
#                                   packages) that sees only that torch (through a .pth file naming the project
#                                   venv's site-packages, so that 3 GB of torch are not unpacked on every run)
#
#   scripts/test-python.sh                 # all Python tests
#   scripts/test-python.sh -k functional   # extra arguments go to pytest
#
# Offline: nothing is downloaded here (--no-build-isolation, --no-deps, --no-index). The CMake build folder
# (build/python or build/python-pypi, or $TESSERA_PYTHON_BUILD_DIR) is kept between runs, so only the first run
# compiles the bindings. With TESSERA_LIBRARY_BUILD_DIR=<build folder> (e.g. the one `make` just built, for the same
# torch) the package links the libtessera built there instead of compiling the library a second time. Runs are
# serialised with a lock (the in-tree pip build and the CMake folder are shared).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
torch_route=${TESSERA_TORCH:-debian}
case "$torch_route" in
  debian)
    python=/usr/bin/python3  # not the first python3 on PATH: only Debian's sees python3-torch
    : "${TESSERA_PYTHON_BUILD_DIR:=$root/build/python}"
    ;;
  pypi)
    python="$(bash "$root/scripts/install-torch-pypi.sh" | tail -n 1)/bin/python"
    : "${TESSERA_PYTHON_BUILD_DIR:=$root/build/python-pypi}"
    ;;
  *) echo "test-python: TESSERA_TORCH must be debian or pypi, got '$torch_route'" >&2; exit 2 ;;
esac
export TESSERA_PYTHON_BUILD_DIR

if ! "$python" -c 'import torch, pytest, setuptools, wheel' 2>/dev/null; then
  echo "test-python: $python lacks torch, pytest, setuptools or wheel; run scripts/install-deps.sh" \
       "(TESSERA_TORCH=debian) or scripts/install-torch-pypi.sh (pypi)" >&2
  exit 1
fi

if [ -n "${TESSERA_LIBRARY_BUILD_DIR:-}" ]; then
  TESSERA_LIBRARY_BUILD_DIR=$(cd "$TESSERA_LIBRARY_BUILD_DIR" && pwd)
  export TESSERA_LIBRARY_BUILD_DIR
fi
mkdir -p "$TESSERA_PYTHON_BUILD_DIR"
TESSERA_PYTHON_BUILD_DIR=$(cd "$TESSERA_PYTHON_BUILD_DIR" && pwd)

mkdir -p "$root/build"
exec 8>"$root/build/.test-python.lock"
flock 8

venv=$(mktemp -d "${TMPDIR:-/tmp}/tessera-venv.XXXXXX")
cleanup() { rm -rf "$venv"; }
trap cleanup EXIT

start=$(date +%s)
if [ "$torch_route" = debian ]; then
  # --without-pip: the venv uses Debian's pip through --system-site-packages (no ensurepip, faster).
  "$python" -m venv --system-site-packages --without-pip "$venv"
  "$venv/bin/python" -m pip install --no-build-isolation --no-deps --no-index --disable-pip-version-check \
    --no-cache-dir -q "$root/python"
else
  "$python" -m pip wheel --no-build-isolation --no-deps --no-index --disable-pip-version-check -q \
    -w "$venv/wheels" "$root/python"
  "$python" -m venv "$venv/env"
  site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
  site_of "$python" > "$(site_of "$venv/env/bin/python")/project-torch.pth"
  "$venv/env/bin/python" -m pip install --no-deps --no-index --disable-pip-version-check -q "$venv"/wheels/tessera-*.whl
  venv=$venv/env
fi
echo "test-python: package built and installed ($torch_route torch) in $(( $(date +%s) - start )) s"

# Run from the tests folder so that `import tessera` finds the installed package, not python/tessera.
cd "$root/python/tests"
TESSERA_REPO_ROOT="$root" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
