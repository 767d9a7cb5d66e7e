"""CPU settings for fast repeated inference: malloc (process-wide) and torch threads.

Encoding a slice and decoding a prompt allocate and free buffers of 1-60 MB. With glibc's
default malloc settings such buffers are returned to the operating system when freed and
page-faulted in again on the next call. On the 2-core machines we measured, keeping them
(blocks under 64 MB from malloc's heap, up to 256 MB of free heap kept) made the encoder
about 10 % and a prompt about 5 % faster, with less system time. It is the effect PyTorch's
CPU performance guides get by preloading jemalloc or tcmalloc; the cost is that the
process keeps that memory mapped.

Set ``HRMEDSEGSAM_MALLOC_TUNING=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "HRMEDSEGSAM_MALLOC_TUNING"
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h> parameter numbers
_M_MMAP_THRESHOLD = -3
_MMAP_BYTES = 64 << 20
_TRIM_BYTES = 256 << 20

_lock = threading.Lock()
_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Apply the malloc settings above, once per process (Linux with glibc only).

    Returns True if they are in effect; False where not applicable or switched off.
    """
    with _lock:
        if "applied" not in _state:
            _state["applied"] = _apply()
        return _state["applied"]


def _apply() -> bool:
    if not sys.platform.startswith("linux") or os.environ.get(ENV, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no libc found, or a libc without mallopt (musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success.
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES) == 1
        and mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES) == 1
    )


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with torch's intra-op parallelism at ``n`` threads, then restore the
    calling thread's setting (``n`` None: leave it alone).

    With PyTorch's OpenMP backend (its CPU builds) the setting belongs to the calling
    thread once that thread has run torch: other such threads (e.g. one running the
    encoder) keep theirs. A thread that starts using torch while the body runs copies
    ``n`` and keeps it.
    """
    import torch

    if n is None:
        yield
        return
    threads = torch.get_num_threads()
    if threads == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_torch_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with torch's intra-op parallelism at one thread meanwhile (see
    :func:`torch_threads`). A prompt's decode is ~900 small operations; with a second
    thread and a busy second core, each waits at an OpenMP barrier and the decode took
    8-30x longer on the 2-core machines we measured.
    """
    with torch_threads(1):
        return fn(*args)


__all__ = ["ENV", "keep_freed_memory", "one_torch_thread", "torch_threads"]
