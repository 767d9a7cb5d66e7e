"""The process-wide malloc setting: applied once on glibc Linux, switchable off."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "from hrmedsegsam.runtime import keep_freed_memory as k; print(k(), k())"


def _run(env_value: str) -> str:
    env = {**os.environ, "HRMEDSEGSAM_MALLOC_TUNING": env_value}
    out = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt tuning applies to glibc Linux only",
)
def test_applied_once_on_glibc() -> None:
    assert _run("1") == "True True"


def test_switched_off_by_environment() -> None:
    assert _run("0") == "False False"
