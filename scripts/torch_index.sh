#!/usr/bin/env bash
# Print the pip arguments that choose the torch build for this machine (nothing = pip's
# default index) and say why on stderr. Used by setup.sh; an unpinned torch, or one pulled in
# by another package, resolves to the CUDA build on Linux: several GB of NVIDIA packages.
#   - HRMEDSEGSAM_TORCH_INDEX=URL: that index (e.g. the CUDA index matching your driver);
#   - an NVIDIA GPU (nvidia-smi lists one): the default index, whose Linux build is CUDA;
#   - otherwise PyTorch's CPU wheel index ($HRMEDSEGSAM_TORCH_CPU_INDEX overrides its URL)
#     when it answers within a few seconds, else the default index (machines with a local
#     wheel or mirror, like the ones this project was built on).
set -euo pipefail
PY=${1:-python3}
cpu_index=${HRMEDSEGSAM_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
if [ -n "${HRMEDSEGSAM_TORCH_INDEX:-}" ]; then
  echo "setup: torch from $HRMEDSEGSAM_TORCH_INDEX" >&2
  echo "--index-url $HRMEDSEGSAM_TORCH_INDEX"
elif command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; then
  echo "setup: NVIDIA GPU found: torch's CUDA build from the default index" >&2
elif timeout 10 "$PY" - "$cpu_index/torch/" >/dev/null 2>&1 <<'PYEOF'; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5).read(1)
PYEOF
  echo "setup: no NVIDIA GPU: torch's CPU build from $cpu_index" >&2
  echo "--index-url $cpu_index"
else
  echo "setup: no NVIDIA GPU and $cpu_index unreachable: torch from the default index" >&2
fi
