#!/usr/bin/env bash
# The main job: set up (first time), then open napari with the HRMedSegSAM widget and
# PATH (a DICOM folder/file or NIfTI), or the CT sample when no PATH is given.
# Without a display (a server), napari runs on a virtual X display (Xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/hrmedsegsam napari "$@"
fi
exec .venv/bin/hrmedsegsam napari "$@"
