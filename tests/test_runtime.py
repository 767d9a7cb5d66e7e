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


def test_one_torch_thread_runs_with_one_thread_and_restores_the_setting() -> None:
    torch = pytest.importorskip("torch")
    from hrmedsegsam.runtime import one_torch_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert one_torch_thread(torch.get_num_threads) == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(ZeroDivisionError):
            one_torch_thread(lambda: 1 / 0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
