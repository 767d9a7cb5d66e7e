"""Autosave and crash recovery: every commit is on disk before the user can lose it.

An :class:`Autosaver` writes the annotation of one image as a session
(:mod:`hrmedsegsam.session_file`) into that image's recovery folder after every commit
(:meth:`Autosaver.committed`), and at most every ``interval_s`` seconds during edits that
are not commits (:meth:`Autosaver.edited`, e.g. brush strokes; :meth:`Autosaver.flush`
writes what is left). Each save is atomic, so a process killed at any moment leaves the
previous save or the new one. Reopening the same image finds it with :func:`find_recovery`.

Recovery folders live under ``$HRMEDSEGSAM_RECOVERY_DIR`` if set, else
``$XDG_CACHE_HOME/hrmedsegsam/recovery`` (``~/.cache/...``), one folder per image named by
its fingerprint, so two images never share one.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hrmedsegsam.errors import InputError
from hrmedsegsam.session import ObjectInfo
from hrmedsegsam.session_file import fingerprint, is_session, read_session_info, save_session

ENV = "HRMEDSEGSAM_RECOVERY_DIR"


def recovery_root() -> Path:
    """Where recovery folders live (see the module docstring)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "hrmedsegsam" / "recovery"


def recovery_path(image_fingerprint: str, root: Path | None = None) -> Path:
    """The recovery folder of the image with this fingerprint."""
    return (root or recovery_root()) / image_fingerprint.split(":", 1)[-1][:32]


def find_recovery(
    like: Any, *, image_fingerprint: str | None = None, root: Path | None = None
) -> dict | None:
    """The recovered session's ``session.json`` for image ``like``, with its folder under
    ``"path"``; None when there is nothing (or nothing readable) to recover.
    """
    folder = recovery_path(image_fingerprint or fingerprint(like), root)
    if not is_session(folder):
        return None
    try:
        info = read_session_info(folder)
    except InputError:
        return None
    return {**info, "path": folder}


def discard_recovery(
    like: Any, *, image_fingerprint: str | None = None, root: Path | None = None
) -> None:
    """Remove the recovery folder of image ``like`` (the user declined or saved elsewhere)."""
    shutil.rmtree(recovery_path(image_fingerprint or fingerprint(like), root), ignore_errors=True)


class Autosaver:
    """Writes one image's annotation to its recovery folder.

    Args:
        like: the source :class:`~hrmedsegsam.io.Volume` (grid and fingerprint).
        labels: ``() -> (z, y, x)`` labels to save (called at each save).
        objects: ``() -> {id: ObjectInfo}``.
        window: ``() -> (lo, hi)`` or None.
        interval_s: the least time between two saves caused by :meth:`edited`.
        root: the recovery root (default :func:`recovery_root`).
        clock: seconds, monotonic (tests pass a fake one).
        image_fingerprint: ``fingerprint(like)`` when the caller has it (it costs a pass
            over the voxels).
    """

    def __init__(
        self,
        like: Any,
        labels: Callable[[], np.ndarray],
        objects: Callable[[], Mapping[int, ObjectInfo]],
        window: Callable[[], tuple[float, float] | None] = lambda: None,
        *,
        interval_s: float = 30.0,
        root: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        image_fingerprint: str | None = None,
    ) -> None:
        self.like = like
        self.fingerprint = image_fingerprint or fingerprint(like)
        self.path = recovery_path(self.fingerprint, root)
        self.interval_s = float(interval_s)
        self.saves = 0
        self._labels, self._objects, self._window = labels, objects, window
        self._clock = clock
        self._last = -float("inf")
        self._dirty = False

    @property
    def dirty(self) -> bool:
        """Edits were made since the last save."""
        return self._dirty

    def committed(self) -> Path:
        """A commit happened: save now."""
        return self.save()

    def edited(self) -> bool:
        """An edit that is not a commit happened: save if ``interval_s`` passed since the
        last save (returns whether it saved), else remember it for :meth:`flush`.
        """
        self._dirty = True
        if self._clock() - self._last >= self.interval_s:
            self.save()
            return True
        return False

    def flush(self) -> bool:
        """Save if there are unsaved edits; returns whether it saved."""
        if self._dirty:
            self.save()
            return True
        return False

    def save(self) -> Path:
        """Write the session to :attr:`path` now (atomic)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_session(
            self.path,
            self._labels(),
            self._objects(),
            self.like,
            self._window(),
            image_fingerprint=self.fingerprint,
            compress=False,
        )
        self._last = self._clock()
        self._dirty = False
        self.saves += 1
        return self.path

    def discard(self) -> None:
        """Remove the recovery folder (nothing left to recover)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._dirty = False


__all__ = [
    "ENV",
    "Autosaver",
    "recovery_root",
    "recovery_path",
    "find_recovery",
    "discard_recovery",
]
