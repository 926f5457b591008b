#!/usr/bin/env bash
# Creates the peer's own venv (bench/peer/.venv) with the Python library lightly (pinned in
# scripts/versions.sh). torch and torchvision are the PyTorch reference's (bench/reference/.venv,
# made by its setup.sh): a .pth file puts that venv's site-packages on the peer's path, so the
# two share one torch install. lightly is installed with --no-deps: its declared dependencies
# (pytorch_lightning, hydra-core, ...) are not needed by what bench/peer uses (lightly.loss,
# lightly.models, lightly.transforms, lightly.utils.scheduler) and could pull another torch; the
# one module those imports need besides torch/torchvision/numpy/Pillow is lightning-utilities.
# Neither the main job nor `scripts/test.sh` needs this venv. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
. ../../scripts/versions.sh
bash ../reference/setup.sh
py=.venv/bin/python
[ -x "$py" ] || python3 -m venv .venv
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
purelib ../reference/.venv/bin/python > "$(purelib "$py")/svib-reference-torch.pth"
if ! "$py" -c "import lightly, lightning_utilities; assert lightly.__version__ == '$LIGHTLY_VERSION'" 2>/dev/null; then
  echo "[peer] installing lightly==$LIGHTLY_VERSION (--no-deps) and lightning-utilities" >&2
  "$py" -m pip install -q --disable-pip-version-check --no-deps "lightly==$LIGHTLY_VERSION"
  "$py" -m pip install -q --disable-pip-version-check lightning-utilities
fi
"$py" -c "
from lightly.loss import DINOLoss, NTXentLoss
from lightly.models.modules import DINOProjectionHead
from lightly.transforms.dino_transform import DINOTransform
"
echo "[peer] ready: $("$py" -c 'import torch, torchvision, lightly; print("torch", torch.__version__, "torchvision", torchvision.__version__, "lightly", lightly.__version__)')" >&2
