#!/usr/bin/env bash
# The GPU path in one command, on any machine with a CUDA GPU and this checkout set up with a
# CUDA build of torch (README, GPU note): the tests marked `cuda` (skipped elsewhere), then
# the benchmark on the GPU. Writes gpu_check/{tests.txt,benchmark.json,benchmark.txt}
# (or under $OUT when set) and exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=${OUT:-gpu_check}
mkdir -p "$DEST"
"$PY" - <<'PYEOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (install a CUDA build of torch, see README)")
print(f"gpu_check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PYEOF
status=0
"$PY" -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$DEST/tests.txt" || status=1
"$PY" -m hrmedsegsam benchmark --device cuda --backends torch --json > "$DEST/benchmark.json" || status=1
"$PY" - "$DEST/benchmark.json" <<'PYEOF' | tee "$DEST/benchmark.txt"
import json, sys
from hrmedsegsam.benchmark import format_report
print(format_report(json.load(open(sys.argv[1]))))
PYEOF
exit $status
