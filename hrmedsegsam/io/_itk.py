"""SimpleITK plumbing shared by the ``hrmedsegsam.io`` modules: short error reasons,
silenced ITK warnings, the path check every reader starts with (exists, readable, a
regular file or folder, UTF-8) and the memory check made before any voxel is read.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import SimpleITK as sitk

from hrmedsegsam.atomic import utf8_path
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


_stderr_lock = threading.Lock()


@contextlib.contextmanager
def c_stderr_to(lines: list[str]) -> Iterator[None]:
    """Collect what C code prints on file descriptor 2 meanwhile into ``lines``.

    The NIfTI library prints its write errors ("wrote only 0 of N bytes") instead of
    raising; they belong in the one error line, not above it.
    """
    with _stderr_lock, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            lines.extend(
                " ".join(ln.replace("** ERROR:", "").split())
                for ln in text.splitlines()
                if ln.strip()
            )


def check_path(path: PathLike) -> Path:
    """``path`` as a ``Path`` (``~`` expanded) that a reader may open.

    Raises:
        InputError: missing, unreadable, not valid UTF-8 (SimpleITK would abort the
            process), or neither a regular file nor a folder (a FIFO or device would block
            or never end).
    """
    p = utf8_path(Path(os.fspath(path)).expanduser())
    if not p.exists():
        raise InputError(f"{p} does not exist.")
    if not (p.is_file() or p.is_dir()):
        raise InputError(
            f"{p} is not a regular file or folder (a pipe, socket or device); "
            "copy the data to a file first."
        )
    if not os.access(p, os.R_OK):
        raise InputError(f"{p} cannot be read (permission denied).")
    return p


_ITEM_BYTES = {
    sitk.sitkUInt8: 1,
    sitk.sitkInt8: 1,
    sitk.sitkUInt16: 2,
    sitk.sitkInt16: 2,
    sitk.sitkUInt32: 4,
    sitk.sitkInt32: 4,
    sitk.sitkUInt64: 8,
    sitk.sitkInt64: 8,
    sitk.sitkFloat32: 4,
    sitk.sitkFloat64: 8,
    sitk.sitkComplexFloat32: 8,
    sitk.sitkComplexFloat64: 16,
}


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes this process can still allocate: the least of the system's available memory,
    the cgroup's limit minus its use, and the address-space limit minus what is mapped
    (None when none of them is known).
    """
    limits: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            limits.append(max(0, limit - usage))
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limits.append(max(0, soft - mapped))
    except (ImportError, OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_memory(
    source: str, size: tuple[int, ...], pixel_id: int, components: int, copies: int = 2
) -> None:
    """InputError if an image of ``size`` voxels would not fit in memory ``copies`` times
    (SimpleITK's buffer and the NumPy array made from it), checked before reading voxels.

    Sizes are multiplied as Python integers, so a declared size that would wrap around
    2**32 or 2**64 in C does not slip through.
    """
    n_voxels = 1
    for n in size:
        n_voxels *= int(n)
    needed = n_voxels * max(1, int(components)) * _ITEM_BYTES.get(pixel_id, 8) * copies
    available = available_memory()
    if available is not None and needed > available:
        dims = " x ".join(str(int(n)) for n in size)
        raise InputError(
            f"{source} declares {dims} voxels, which need {needed / 2**30:.1f} GB to load; "
            f"only {available / 2**30:.1f} GB of memory is available."
        )
