#!/usr/bin/env bash
# Set up (first time), lint (ruff, configured in pyproject.toml), then run the whole test
# suite; napari tests run on a virtual X display (Xvfb), since vispy needs a real OpenGL
# context.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "$@"
