"""scripts/torch_index.sh: which torch build set-up installs (CPU index, CUDA, fallback).

A GPU cannot be conjured on a CPU machine, so the NVIDIA case puts an ``nvidia-smi`` that
lists one on PATH; the CPU index is a real HTTP server on localhost.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "torch_index.sh"


def choose(env: dict[str, str]) -> tuple[str, str]:
    """Run the script; (stdout = pip arguments, stderr = the reason)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HRMEDSEGSAM_TORCH")}
    r = subprocess.run(
        ["bash", str(SCRIPT), sys.executable],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return r.stdout.strip(), r.stderr.strip()


@pytest.fixture
def local_index(tmp_path: Path) -> Iterator[str]:
    """A reachable 'CPU index' on localhost with a ``torch/`` page."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<html></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, directory=str(tmp_path), **k)

        def log_message(self, *a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def no_gpu_path() -> str:
    """PATH without any nvidia-smi (this machine has none; keep it so if one appears)."""
    dirs = [d for d in os.environ["PATH"].split(":") if not (Path(d) / "nvidia-smi").exists()]
    return ":".join(dirs)


def fake_nvidia_smi(tmp_path: Path, body: str) -> Path:
    """A folder with an ``nvidia-smi`` that runs the shell line ``body``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{body}\n")
    smi.chmod(0o755)
    return bindir


def test_cpu_machine_takes_the_cpu_index_when_it_answers(tmp_path: Path, local_index: str) -> None:
    out, why = choose({"PATH": no_gpu_path(), "HRMEDSEGSAM_TORCH_CPU_INDEX": local_index})
    assert out == f"--index-url {local_index}"
    assert "CPU build" in why


def test_cpu_machine_falls_back_to_the_default_index_when_the_cpu_index_is_unreachable(
    tmp_path: Path,
) -> None:
    # A port nothing listens on: connection refused at once.
    out, why = choose({"PATH": no_gpu_path(), "HRMEDSEGSAM_TORCH_CPU_INDEX": "http://127.0.0.1:9"})
    assert out == ""
    assert "unreachable" in why


def test_nvidia_gpu_takes_the_default_index_and_its_cuda_build(
    tmp_path: Path, local_index: str
) -> None:
    bindir = fake_nvidia_smi(tmp_path, "echo 'GPU 0: NVIDIA H200 (UUID: GPU-0)'")
    out, why = choose(
        {"PATH": f"{bindir}:{no_gpu_path()}", "HRMEDSEGSAM_TORCH_CPU_INDEX": local_index}
    )
    assert out == ""
    assert "CUDA build" in why


def test_an_nvidia_smi_without_a_gpu_counts_as_a_cpu_machine(
    tmp_path: Path, local_index: str
) -> None:
    bindir = fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    out, _ = choose(
        {"PATH": f"{bindir}:{no_gpu_path()}", "HRMEDSEGSAM_TORCH_CPU_INDEX": local_index}
    )
    assert out == f"--index-url {local_index}"


def test_an_explicit_index_wins(tmp_path: Path) -> None:
    out, _ = choose({"HRMEDSEGSAM_TORCH_INDEX": "https://example.invalid/whl/cu128"})
    assert out == "--index-url https://example.invalid/whl/cu128"
