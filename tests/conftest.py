"""Shared pytest fixtures (generic ones only; feature-specific fixtures live in their tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Where the development data live: ``$HRMEDSEGSAM_DATA`` or ``../shared/data``."""
    env = os.environ.get("HRMEDSEGSAM_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The project's root folder."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The development data folder (see ../shared/data/README.md); skips when absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"development data not found at {path}")
    return path
