#!/usr/bin/env bash
# Installs the peers Tessera is benchmarked against (MosaicML Composer, PyPI `mosaicml`) into a venv of their own,
# outside the source tree, on top of the project's PyPI torch venv (scripts/install-torch-pypi.sh), so that Composer
# and Tessera's Python package run on the very same torch 2.15.0. Idempotent: when the venv already holds the pinned
# versions it only checks them (about a second) and prints the venv's path. Benchmarks only, never a runtime
# dependency of Tessera.
#
#   scripts/install-peers.sh            # Composer; prints the venv folder on its last line
#   TESSERA_PEERS_VENV=/some/dir scripts/install-peers.sh
#   scripts/install-peers.sh streaming  # MosaicML Streaming (the MDS interop tests); TESSERA_STREAMING_VENV=/dir
#
# How: a plain venv whose site-packages holds a .pth file naming the torch venv's site-packages (torch is not
# copied: 3 GB), plus Composer and its dependencies. Composer 0.32.1 pins `torch<2.7.1`, `torchvision<0.22.1` and
# `numpy<2.3`; PyPI's torch 2.15 is outside that pin, so Composer is installed with --no-deps and its dependencies
# are installed explicitly (pinned below): numpy 2.2.6 in this venv shadows the torch venv's numpy 2.4, and
# torchvision is the release built for torch 2.14+ (0.29.2), installed with --no-deps so that pip does not replace
# torch. `mosaicml-cli` (which `import composer` imports, for its platform logger) does not depend on torch: it
# is installed with its own dependencies resolved by pip.
# Composer runs on torch 2.15 this way (see docs/results.md, "Against Composer").
#
# `streaming`: PyPI `mosaicml-streaming` in a venv of its own made the same way (tests/core/mds_interop_test.cpp
# writes and reads MDS shards with it). It pins numpy<2.2 (Composer's venv has 2.2.6, hence a separate venv) and
# wants cloud SDKs (boto3, azure, oci, google-cloud-storage, paramiko, matplotlib) that `import streaming` never
# imports: everything is installed with --no-deps, only the modules `import streaming` needs (pinned below;
# transformers because streaming's dataloader module imports it). The same venv holds the tokenizer interop tests'
# peers (tests/core/tokenizer_interop_test.cpp): tokenizers, and sentencepiece + protobuf for SentencePiece's models
# and transformers' conversion of them; and the TensorBoard logger's (tests/core/tensorboard_interop_test.cpp):
# tensorboard, whose event-file reader needs only absl-py, numpy and protobuf besides itself.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/scripts/venv-pins.sh"
what=${1:-composer}
torch_venv=$(bash "$root/scripts/install-torch-pypi.sh" | tail -n 1)
pip_in() { "$1/bin/python" -m pip install -q --disable-pip-version-check "${@:2}"; }

# new_venv_on_torch VENV: a fresh venv whose site-packages sees the torch venv's (a .pth file; torch is not copied).
new_venv_on_torch() {
  venv_create "$torch_venv/bin/python" "$1"
  site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
  site_of "$torch_venv/bin/python" > "$(site_of "$1/bin/python")/project-torch.pth"
}

# reuse_or_start VENV WANT MODULES LABEL: prints VENV and exits when it holds exactly WANT; else starts a new one.
reuse_or_start() {
  if venv_ready "$1" "$2" "$3"; then
    echo "$1"
    exit 0
  fi
  echo "install-peers: installing $4 into $1 (on $torch_venv's torch)" >&2
  new_venv_on_torch "$1"
}
# mark_done VENV WANT MODULE: records the pins and reports torch's version and MODULE's.
mark_done() {
  echo "$2" > "$1/.tessera-pins"
  echo "install-peers: done: $("$1/bin/python" -c "import torch, $3; print('torch', torch.__version__, '$3', $3.__version__)" 2>/dev/null)" >&2
}

case "$what" in
composer)
  COMPOSER_VERSION=0.32.1
  venv=${TESSERA_PEERS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/venv-peers-composer-$COMPOSER_VERSION}
  # Composer's own dependencies at versions inside its pins (mosaicml 0.32.1's METADATA), except torch/torchvision.
  deps="numpy==2.2.6 pyyaml==6.0.2 tqdm==4.67.1 torchmetrics==1.7.4 lightning-utilities==0.14.3 \
torch-optimizer==0.3.0 pytorch-ranger==0.1.1 requests==2.32.4 psutil==7.0.0 coolname==2.2.0 tabulate==0.9.0 \
py-cpuinfo==9.0.0 packaging==25.0 importlib-metadata==8.7.0 zipp==3.23.0 pillow==11.3.0 urllib3==2.5.0 idna==3.10 \
charset-normalizer==3.4.2 certifi==2025.6.15"
  nodeps="mosaicml==$COMPOSER_VERSION torchvision==0.29.2"
  withdeps="mosaicml-cli==0.7.5"
  want="$nodeps $withdeps $deps torch-venv=$torch_venv"
  reuse_or_start "$venv" "$want" "torch, composer, torchvision" "Composer $COMPOSER_VERSION"
  # --no-deps everywhere: pip must not resolve Composer's torch pin (it would download torch 2.7 next to 2.15).
  pip_in "$venv" --no-deps $deps >&2
  pip_in "$venv" --no-deps $nodeps >&2
  pip_in "$venv" $withdeps 2>&1 | grep -v "mosaicml 0.32.1 requires\|dependency resolver does not" >&2 || true
  "$venv/bin/python" -c 'import torch, composer, composer.algorithms' >&2
  mark_done "$venv" "$want" composer
  ;;
streaming)
  STREAMING_VERSION=0.13.0
  venv=${TESSERA_STREAMING_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/venv-peers-streaming-$STREAMING_VERSION}
  pins="mosaicml-streaming==$STREAMING_VERSION numpy==2.1.3 xxhash==3.5.0 zstd==1.5.7.2 tqdm==4.67.1 \
brotli==1.2.1 python-snappy==0.7.3 cramjam==2.14.0 catalogue==2.0.10 pillow==11.3.0 torchvision==0.29.2 \
transformers==4.57.6 huggingface-hub==0.36.2 tokenizers==0.22.2 safetensors==0.8.0 regex==2026.11.19 \
sentencepiece==0.2.3 protobuf==7.36.2 tensorboard==2.21.0 absl-py==2.5.1 \
pyyaml==6.0.4 requests==2.34.2 urllib3==2.8.0 idna==3.20 charset-normalizer==3.5.3 certifi==2026.10.19.post1"
  want="$pins torch-venv=$torch_venv"
  reuse_or_start "$venv" "$want" "torch, streaming" "mosaicml-streaming $STREAMING_VERSION"
  pip_in "$venv" --no-deps $pins >&2
  "$venv/bin/python" -c 'from streaming import MDSWriter, StreamingDataset
from tensorboard.backend.event_processing import event_accumulator' >&2
  mark_done "$venv" "$want" streaming
  ;;
*)
  echo "install-peers: unknown peer '$what' (expected composer or streaming)" >&2
  exit 2
  ;;
esac
echo "$venv"
