#!/usr/bin/env bash
# Creates the PyTorch reference's own venv (bench/reference/.venv): the full torch install with
# torchvision, as a user of DINO's scripts would have it. Only `svib bench` needs it; the main
# job and the tests do not. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
. ../../scripts/versions.sh
py=.venv/bin/python
[ -x "$py" ] || python3 -m venv .venv
if ! "$py" -c "import torch, torchvision; assert torch.__version__.startswith('$TORCH_VERSION') and torchvision.__version__.startswith('$TORCHVISION_VERSION')" 2>/dev/null; then
  echo "[bench] installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION into bench/reference/.venv (once; about 5 GB)" >&2
  "$py" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" numpy psutil
fi
echo "[bench] reference ready: $("$py" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)')" >&2
