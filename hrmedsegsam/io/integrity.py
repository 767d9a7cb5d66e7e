"""Is a file's voxel data complete and intact? One check for reading and for writing.

ITK reads a truncated NIfTI without complaint (the missing voxels are garbage) and does not
verify the CRC of a gzip stream, so a cut-off download or a damaged ``.nii.gz`` would load
as a volume with garbage in it. :func:`data_problem` streams every gzip file through
Python's ``gzip`` (which checks the CRC and the length in the trailer) and compares the
bytes found with the size the NIfTI header declares; it runs before a file is read and
after a file is written (before it is renamed into place).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 22


def nifti_data_end(header: bytes) -> int | None:
    """Byte offset where a NIfTI-1/2 file's voxel data end (from its header), or None.

    Computed with Python integers: a declared size of 2**32 bytes or more does not wrap.
    """
    for order in ("<", ">"):
        if len(header) < 4:
            return None
        (sizeof_hdr,) = struct.unpack(order + "i", header[:4])
        if sizeof_hdr == 348 and len(header) >= 348:
            dims = struct.unpack(order + "8h", header[40:56])
            (bitpix,) = struct.unpack(order + "h", header[72:74])
            (vox_offset,) = struct.unpack(order + "f", header[108:112])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            (bitpix,) = struct.unpack(order + "h", header[14:16])
            dims = struct.unpack(order + "8q", header[16:80])
            (vox_offset,) = struct.unpack(order + "q", header[168:176])
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8 or not vox_offset >= 0:
        return None
    n_voxels = 1
    for d in dims[1 : ndim + 1]:
        n_voxels *= max(int(d), 1)
    return int(vox_offset) + n_voxels * (bitpix // 8)


def _is_nifti_name(name: str) -> bool:
    return name.endswith((".nii", ".nii.gz"))


def data_problem(path: Path) -> str | None:
    """Why the data of ``path`` are incomplete or damaged, or None if they look intact.

    Gzip files (any name) are decompressed in full, streaming: a CRC or length mismatch, a
    damaged deflate stream or a premature end is a problem. For NIfTI (``.nii``,
    ``.nii.gz``) the data must also be as long as the header says.
    """
    name = path.name.lower()
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
        if gzipped:
            total = 0
            head = b""
            with gzip.open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    if len(head) < 540:
                        head += chunk[: 540 - len(head)]
                    total += len(chunk)
        else:
            if not name.endswith(".nii"):
                return None
            with open(path, "rb") as f:
                head = f.read(540)
            total = path.stat().st_size
    except EOFError:
        return "the compressed data end early"
    except gzip.BadGzipFile as exc:
        return f"the gzip data are damaged: {exc}"
    except zlib.error as exc:
        return f"the gzip data are damaged: {exc}"
    except OSError as exc:
        return f"it cannot be read back: {exc.strerror or exc}"
    if not _is_nifti_name(name):
        return None
    end = nifti_data_end(head)
    if end is not None and total < end:
        return f"the header describes {end} bytes but the {'data hold' if gzipped else 'file has'} {total}"
    return None
