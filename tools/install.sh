#!/usr/bin/env bash
# One-step set-up on a fresh Debian machine (Python >= 3.10, root or sudo, CPU or GPU).
#   bash tools/install.sh          # system packages, torch, this package
#   bash tools/install.sh --test   # the same plus the test extras
# Order matters: torch==2.13.0 (the CPU wheel) is installed before anything else,
# since a bare `torch` requirement would pull several GB of CUDA packages.  A torch
# that is already installed (a CUDA build, say) is kept.  The other packages are pinned by
# tools/constraints.txt to the versions the benchmarks were measured with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
APT_PKGS="libusb-1.0-0 libgomp1 libgl1 libegl1 ffmpeg libvulkan1 mesa-vulkan-drivers"
if command -v apt-get >/dev/null 2>&1; then
  missing=$(for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "[install] apt packages: $missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
else
  echo "[install] no apt-get: install libusb-1.0, libgl1, libegl1 and ffmpeg with your package manager" >&2
fi

if $PY -c "import torch" >/dev/null 2>&1; then
  echo "[install] keeping torch $($PY -c 'import torch; print(torch.__version__)')"
else
  echo "[install] torch==2.13.0"
  $PY -m pip install -q "torch==2.13.0"
fi
echo "[install] slam$extras"
$PY -m pip install -q -c tools/constraints.txt -e ".$extras"
echo "[install] done: $(command -v slam)"
