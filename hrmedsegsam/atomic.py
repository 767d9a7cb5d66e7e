"""Writing a user's file safely: to a temporary name, verified, then renamed into place.

Every file this project writes under a name the user chose goes through
:func:`write_verified`. The data go to a short hidden temporary name in the same folder;
the file is flushed to disk, then checked by the caller's ``verify`` (re-read its header,
compare sizes); only then is it renamed onto the user's name. So a full disk, a quota, a
writer that only warns (SimpleITK's NIfTI writer does on ENOSPC), or a crash leaves the
previous file at that name as it was and no truncated file under it. While a write is in
progress, SIGTERM and SIGHUP first remove the temporary file and then take their usual
course (SIGINT does the same through KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from hrmedsegsam.errors import InputError, OutputExistsError

_SIGNALS = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s
)
_lock = threading.Lock()
_pending: set[Path] = set()
_previous: dict[int, Any] = {}
_depth = 0


def utf8_path(path: Path, what: str = "path") -> Path:
    """``path`` if it can be passed to SimpleITK; InputError otherwise.

    A path that is not valid UTF-8 (Python holds its bytes as surrogate escapes) makes
    SimpleITK's C++ layer abort the whole process, so it never gets that far.
    """
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise InputError(f"the {what} {shown} is not valid UTF-8; rename it") from None
    return path


def check_name_length(path: Path) -> None:
    """InputError if the file name is longer than the folder's file system allows."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    length = len(os.fsencode(path.name))
    if length > limit:
        raise InputError(
            f"cannot write {path.name[:40]}...: the file name has {length} bytes; "
            f"this file system allows {limit}"
        )


def _cleanup(signum: int, frame: FrameType | None) -> None:
    for tmp in list(_pending):
        with contextlib.suppress(OSError):
            tmp.unlink()
    _pending.clear()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextlib.contextmanager
def _temporary(tmp: Path) -> Iterator[None]:
    """Register ``tmp`` for removal by SIGTERM/SIGHUP (handlers set from the main thread only)."""
    global _depth
    install = threading.current_thread() is threading.main_thread()
    with _lock:
        _pending.add(tmp)
        if install and _depth == 0:
            for sig in _SIGNALS:
                previous = signal.getsignal(sig)
                if previous is not signal.SIG_IGN:
                    _previous[sig] = previous
                    signal.signal(sig, _cleanup)
        _depth += install
    try:
        yield
    finally:
        with _lock:
            _pending.discard(tmp)
            _depth -= install
            if install and _depth == 0:
                for sig, previous in _previous.items():
                    signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
                _previous.clear()
        with contextlib.suppress(OSError):
            tmp.unlink()


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_verified(
    out: Path,
    write: Callable[[Path], None],
    verify: Callable[[Path], str | None],
    overwrite: bool = False,
    suffix: str = "",
) -> Path:
    """Write a file through ``write(temporary_path)``, check it, and rename it to ``out``.

    Args:
        out: the user's file name; its folder must exist.
        write: writes the whole file to the path it is given.
        verify: returns None when the written file is complete, else why it is not.
        overwrite: replace an existing ``out``; otherwise refuse (also when ``out``
            appears while writing).
        suffix: ending of the temporary name (writers such as SimpleITK's choose the
            format by it, e.g. ``.nii.gz``).

    Raises:
        InputError: the file could not be written or did not verify; ``out`` is untouched.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    out = utf8_path(Path(out), "output path")
    check_name_length(out)
    tmp = out.parent / f".hrmedsegsam-{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"
    with _temporary(tmp):
        try:
            write(tmp)
            _fsync(tmp)
            size = tmp.stat().st_size
            problem = "it is empty" if size == 0 else verify(tmp)
            if problem:
                raise InputError(
                    f"could not write {out}: the written file is incomplete ({problem}; "
                    f"is the disk full?); {'the previous file' if out.exists() else 'nothing'} "
                    "was left at that name"
                )
            if overwrite:
                os.replace(tmp, out)
            else:
                _link_no_clobber(tmp, out)
            with contextlib.suppress(OSError):
                _fsync(out.parent, directory=True)
        except OSError as exc:
            raise InputError(f"could not write {out} ({exc.strerror or exc})") from None
    return out


def write_text(out: Path, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``out`` through :func:`write_verified` (read back and
    compared before the rename).
    """

    def verify(tmp: Path) -> str | None:
        return (
            None if tmp.read_text(encoding="utf-8") == text else "it does not read back as written"
        )

    return write_verified(
        Path(out), lambda tmp: tmp.write_text(text, encoding="utf-8"), verify, overwrite=overwrite
    )


def _link_no_clobber(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` unless ``dst`` exists (atomic where hard links work)."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise OutputExistsError(
            f"{dst} exists; pass overwrite (--overwrite) to replace it."
        ) from None
    except OSError:  # a file system without hard links
        if dst.exists():
            raise OutputExistsError(
                f"{dst} exists; pass overwrite (--overwrite) to replace it."
            ) from None
        os.replace(src, dst)
