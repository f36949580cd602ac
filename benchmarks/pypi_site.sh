#!/usr/bin/env bash
# Builds Tessera's library against PyPI's torch (build/pypi, the library and tessera-run only) and its Python wheel
# (`pip wheel`, as scripts/test-python.sh does), and unpacks the wheel into SITE with PYTHON (a peers venv on the
# project's torch venv), for the benchmarks that run Tessera beside a peer in one process on the same torch.
#
#   benchmarks/pypi_site.sh SITE PYTHON
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
site=$1 python=$2
cd "$root"
torch_venv=$(bash scripts/install-torch-pypi.sh | tail -n 1)
make configure TORCH=pypi CMAKE_FLAGS=-DTESSERA_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/pypi --target tessera tessera-run -j "$(nproc)"
wheels=$(dirname "$site")/wheels
rm -rf "$wheels" "$site"
TESSERA_LIBRARY_BUILD_DIR=$root/build/pypi TESSERA_PYTHON_BUILD_DIR=$root/build/python-pypi \
  "$torch_venv/bin/python" -m pip wheel --no-build-isolation --no-deps --no-index --disable-pip-version-check -q \
  -w "$wheels" ./python
"$python" -m pip install --no-deps --no-index --disable-pip-version-check -q --target "$site" "$wheels"/tessera-*.whl
