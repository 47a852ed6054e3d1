#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine: system packages, the Python
# venv with libtorch (PyPI torch), and the release build. Skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
APT_PACKAGES=(libopencv-dev clang libclang-dev opencv-data ffmpeg xvfb fonts-dejavu-core pkg-config parallel)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "setup: creating .venv with torch==$TORCH_VERSION (large download, once)"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==$TORCH_VERSION"
fi

# tch finds libtorch through the venv's python (LIBTORCH_USE_PYTORCH=1).
export LIBTORCH_USE_PYTORCH=1
export PATH="$PWD/.venv/bin:$PATH"
cargo build --release --locked -q
