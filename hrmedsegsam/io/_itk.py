"""SimpleITK plumbing shared by the ``hrmedsegsam.io`` modules: short error reasons,
silenced ITK warnings, and the existence/permission check every reader starts with.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import SimpleITK as sitk

from hrmedsegsam.errors import InputError

PathLike = Union[str, "os.PathLike[str]"]


def sitk_reason(exc: BaseException) -> str:
    """One short line from a SimpleITK/ITK exception message (they span several lines)."""
    text = str(exc)
    for marker in ("sitk::ERROR:", "ITK ERROR:"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    text = " ".join(text.split())
    # "GDCMImageIO(0x55...): message" -> "message"
    head, sep, tail = text.partition("): ")
    if sep and "(0x" in head and " " not in head:
        text = tail
    if text.startswith("Unable to determine ImageIO reader"):
        return "no image reader recognises this file format"
    text = text.rstrip(".")
    return text[:240] if text else type(exc).__name__


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's C++ warnings (printed straight to stderr) for the duration."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def check_path(path: PathLike) -> Path:
    """``path`` as a ``Path`` (``~`` expanded); InputError if missing or unreadable."""
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise InputError(f"{p} does not exist.")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p} cannot be read (permission denied).")
    return p
