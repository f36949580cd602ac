# Sourced by the scripts that install venvs of their own (install-torch-pypi.sh, install-peers.sh).

# venv_ready VENV WANT MODULES: VENV exists, was installed with exactly the pins WANT (its .tessera-pins file)
# and imports MODULES ("torch, pybind11").
venv_ready() {
  [ -x "$1/bin/python" ] && [ -f "$1/.tessera-pins" ] && [ "$(cat "$1/.tessera-pins")" = "$2" ] \
    && "$1/bin/python" -c "import $3" 2>/dev/null
}

# venv_create PYTHON VENV: a fresh venv at VENV made by PYTHON (its parent folder created).
venv_create() {
  mkdir -p "$(dirname "$2")"
  "$1" -m venv "$2"
}
