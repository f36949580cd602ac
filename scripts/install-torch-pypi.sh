#!/usr/bin/env bash
# Installs PyPI's torch (the CUDA build; it also runs on CPU) and what the Tessera build needs from PyPI into a
# virtual environment the project owns, outside the source tree, reused between runs. Idempotent: when the
# venv already holds the pinned versions it only checks them (about a second) and prints the venv's path.
#
#   scripts/install-torch-pypi.sh            # prints the venv folder on its last line
#   TESSERA_PYPI_VENV=/some/dir scripts/install-torch-pypi.sh
#
# The versions are pinned here and only here (the Makefile and CI call this script).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/venv-pins.sh"
TORCH_VERSION=${TESSERA_TORCH_VERSION:-2.15.0}  # another only for scripts/gpu-check.sh prebuild (the GPU machine's)
CUOBJDUMP_VERSION=13.4.92  # the CUDA build's test reads the architectures of libtessera with it
PYBIND11_VERSION=3.1.0  # the version bundled in torch's include folder, so that the two agree
venv=${TESSERA_PYPI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/venv-torch-$TORCH_VERSION}

# A python3 with venv support that is not Debian's /usr/bin/python3 (which sees python3-torch 1.13) is preferred,
# but any python3 >= 3.9 works: the venv is plain (no --system-site-packages), so it sees only what is installed
# into it.
python=${TESSERA_PYPI_PYTHON:-python3}

want="torch==$TORCH_VERSION pybind11==$PYBIND11_VERSION nvidia-cuda-cuobjdump==$CUOBJDUMP_VERSION"
if venv_ready "$venv" "$want" "torch, pybind11, pytest, setuptools, wheel"; then
  echo "$venv"
  exit 0
fi

echo "install-torch-pypi: installing $want into $venv (the first time downloads about 3 GB; pip's cache keeps it)" >&2
venv_create "$python" "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  $want pytest setuptools wheel numpy >&2
echo "$want" > "$venv/.tessera-pins"
echo "install-torch-pypi: done: $("$venv/bin/python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')" >&2
echo "$venv"
