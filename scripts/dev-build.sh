#!/usr/bin/env bash
# Incremental developer build into ./build, serialised with a lock so several shells can call it.
#   scripts/dev-build.sh                 # configure if needed, build everything (keeps going past errors)
#   scripts/dev-build.sh tessera_tests   # build one target
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
exec 9>/tmp/tessera-dev-build.lock
flock 9
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 1
fi
cmake --build build -j 2 -- -k 0 "$@"
