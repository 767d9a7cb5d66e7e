"""Fixtures for the hostile-input tests: each test builds its malformed input itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """Run ``hrmedsegsam ARGS`` in this process; returns ``(exit status, stderr)``.

    Asserts the promise made for bad input: a non-zero status is given with exactly one
    line on stderr and no traceback.
    """
    from hrmedsegsam.cli import main

    def run(*args: object) -> tuple[int, str]:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        err = capsys.readouterr().err
        if rc != 0:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert len(lines) == 1 and "Traceback" not in err, err
        return rc, err

    return run


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real weights file of a randomly initialised model (what save_weights writes)."""
    import torch

    from hrmedsegsam.model.build import build_model, save_weights

    torch.manual_seed(0)
    return save_weights(build_model(), tmp_path_factory.mktemp("weights") / "random.pt")


@pytest.fixture(scope="session")
def small_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 x 32 x 40 CT-like NIfTI written by SimpleITK, a bright disc on every slice."""
    import numpy as np
    import SimpleITK as sitk

    yy, xx = np.mgrid[:32, :40]
    arr = np.full((6, 32, 40), -1000, np.int16)
    arr[:, (yy - 16) ** 2 + (xx - 20) ** 2 <= 64] = 200
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.7, 3.0))
    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    sitk.WriteImage(img, str(path))
    return path
