#!/usr/bin/env bash
# Installs what is missing and builds the release binary. Idempotent: a second run only checks.
#   scripts/setup.sh            # deps + release build
#   scripts/setup.sh --no-build # deps only
#   SVIB_FULL_TORCH=1 scripts/setup.sh  # full torch install with every CUDA dependency (GPU hosts)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/versions.sh
build=1
[ "${1:-}" = "--no-build" ] && build=0

say() { printf '[setup] %s\n' "$*" >&2; }

# 1. From Debian: Fashion-MNIST (the real data set for demos and checks), and Gloo's headers
#    (the torch wheel ships c10d's but not Gloo's, which the distributed shim src/shim/dist.cpp
#    needs to compile; every Gloo symbol comes from libtorch itself).
missing=""
for pkg in dataset-fashion-mnist libgloo-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  say "installing Debian package(s)$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq $missing >/dev/null
fi

# 2. libtorch from the PyPI wheel, in a project-local venv.
py=.venv/bin/python
if [ ! -x "$py" ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
have=$(sed -n "s/^__version__ = '\([^']*\)'.*/\1/p" "$site/torch/version.py" 2>/dev/null | cut -d+ -f1 || true)
if [ "$have" != "$TORCH_VERSION" ]; then
  say "installing torch==$TORCH_VERSION into .venv (once; about 1.4 GB)"
  "$py" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  if [ "${SVIB_FULL_TORCH:-0}" = 1 ]; then
    "$py" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION"
  else
    "$py" -m pip install -q --disable-pip-version-check --no-deps "torch==$TORCH_VERSION"
  fi
fi
have_cuda_rt() { ls "$site"/nvidia/cu13/lib/libcudart.so* "$site"/nvidia/cu13/lib/libcupti.so* "$site"/nvidia/cu13/include/crt/host_config.h "$site"/nvidia/cu13/include/nv/target >/dev/null 2>&1; }
if ! have_cuda_rt; then
  say "installing $CUDA_TOOLKIT_SPEC into .venv"
  # pip's resolver complains that torch's other dependencies are absent: intended (lean CPU
  # install), so its log is shown only when the install itself fails.
  "$py" -m pip install --disable-pip-version-check "$CUDA_TOOLKIT_SPEC" >.venv/pip-cuda.log 2>&1 || { cat .venv/pip-cuda.log >&2; exit 1; }
fi
have_cuda_rt || { say "libcudart/libcupti (lib) or crt/cccl (include) still missing under $site/nvidia/cu13"; exit 1; }
# NCCL's headers (not its library) for the GPU ranks' shim: taken out of the wheel, once.
if [ ! -f "$site/nvidia/nccl/include/nccl.h" ]; then
  say "adding the headers of $NCCL_SPEC to .venv"
  tmp=$(mktemp -d)
  # best effort: without them svib builds and trains everywhere but on several GPUs
  if "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$NCCL_SPEC"; then
    "$py" - "$tmp" "$site" <<'PY'
import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
wheel.extractall(sys.argv[2], [n for n in wheel.namelist() if n.startswith("nvidia/nccl/include/")])
PY
  else
    say "could not download $NCCL_SPEC: svib builds without NCCL (GPU ranks of a multi-GPU run will be refused)"
  fi
  rm -rf "$tmp"
fi
# Stable paths for .cargo/config.toml and the rpath baked in by build.rs.
ln -sfn "$site/torch" .libtorch
ln -sfn "$site/nvidia/cu13/lib" .cudalibs

# 3. The release binary.
if [ "$build" = 1 ]; then
  say "building target/release/svib"
  cargo build --release --quiet
  say "ready: target/release/svib"
fi
