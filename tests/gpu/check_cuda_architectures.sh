#!/usr/bin/env bash
# Checks that libtessera carries device code for every architecture of TORCH_CUDA_ARCH_LIST it was configured with
# (real code per "X.Y", PTX for "X.Y+PTX") and for no other: the architecture choice took effect.
#   bash tests/gpu/check_cuda_architectures.sh <libtessera.so> <cuobjdump> "8.0;9.0+PTX"
set -euo pipefail
lib=${1:?library} cuobjdump=${2:-} list=${3:?arch list}
if [ -z "$cuobjdump" ] || [ ! -x "$cuobjdump" ]; then
  echo "no cuobjdump found (CUDA toolkit or PyPI's nvidia-cuda-cuobjdump): skipping the architecture check"
  exit 77
fi
elf=$("$cuobjdump" --list-elf "$lib" | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')
ptx=$("$cuobjdump" --list-ptx "$lib" | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')
want_elf="" want_ptx=""
IFS=';' read -ra archs <<< "$list"
for a in "${archs[@]}"; do
  num=${a%+PTX}; num=sm_${num/./}
  want_elf+="$num "
  [[ $a == *+PTX ]] && want_ptx+="$num "
done
want_elf=$(tr ' ' '\n' <<< "$want_elf" | grep . | sort -u | tr '\n' ' ')
want_ptx=$(tr ' ' '\n' <<< "$want_ptx" | grep . | sort -u | tr '\n' ' ')
echo "device code (cubin): ${elf:-none}; expected: $want_elf"
echo "PTX:                 ${ptx:-none}; expected: ${want_ptx:-none}"
[ "$elf" = "$want_elf" ] && [ "$ptx" = "$want_ptx" ]
