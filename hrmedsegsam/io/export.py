"""Export a label map in the format its file name (or the caller) asks for.

NIfTI (``.nii.gz`` / ``.nii``) goes out with its label table sidecar
(:mod:`~hrmedsegsam.io.label_table`); DICOM SEG (``.dcm``, or ``fmt="seg"``) with
:mod:`~hrmedsegsam.io.seg`. Every file is written atomically and never replaces an existing
one unless ``overwrite``; a failed write leaves the previous files as they were.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hrmedsegsam.errors import InputError, OutputExistsError
from hrmedsegsam.io._itk import PathLike
from hrmedsegsam.io.label_table import label_table_path, write_label_table
from hrmedsegsam.io.labels import check_label_output, write_labels
from hrmedsegsam.io.seg import SEG_SUFFIXES, Segment, check_seg_output, write_seg
from hrmedsegsam.io.volume import Volume

FORMATS = ("nifti", "seg")


def export_format(path: PathLike, fmt: str | None = None) -> str:
    """``"seg"`` for ``fmt="seg"`` or a ``.dcm`` name, ``"nifti"`` otherwise."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose nifti or seg.")
    if fmt is None:
        fmt = "seg" if os.fspath(path).lower().endswith(SEG_SUFFIXES) else "nifti"
    return fmt


def check_export_output(
    path: PathLike, overwrite: bool = False, fmt: str | None = None
) -> list[Path]:
    """Check that an export to ``path`` can be written, before any slow work; returns the
    files it will write (the labels file first).

    Raises:
        InputError: a suffix that does not fit the format, or a missing folder.
        OutputExistsError: one of the files exists and ``overwrite`` is false.
    """
    out = Path(os.fspath(path)).expanduser()
    if export_format(out, fmt) == "seg":
        return [check_seg_output(out, overwrite)]
    out, _ = check_label_output(out, overwrite)
    table = label_table_path(out)
    if table.exists() and not overwrite:
        raise OutputExistsError(f"{table} exists; pass overwrite (--overwrite) to replace it.")
    return [out, table]


def export_labels(
    path: PathLike,
    labels_zyx: np.ndarray,
    like: Volume,
    segments: Sequence[Segment] = (),
    overwrite: bool = False,
    fmt: str | None = None,
) -> list[Path]:
    """Write ``labels_zyx`` (ids, ``like``'s grid ``(z, y, x)``) with names and colours.

    Args:
        path: ``.nii.gz`` / ``.nii`` (NIfTI + ``.labels.tsv`` table) or ``.dcm`` (DICOM SEG,
            for volumes read from a DICOM series).
        labels_zyx: integer label map, shape ``like.shape``.
        like: the source volume (its grid; its DICOM series for SEG).
        segments: names and colours by id; ids without one are ``object <id>``.
        overwrite: replace existing files; otherwise refuse before writing anything.
        fmt: ``"nifti"`` or ``"seg"`` (default: from the suffix).

    Returns:
        The files written, the labels file first.
    """
    files = check_export_output(path, overwrite, fmt)
    if export_format(path, fmt) == "seg":
        return [write_seg(files[0], labels_zyx, like, segments, overwrite=overwrite)]
    ids = sorted(int(i) for i in np.unique(np.asarray(labels_zyx)) if i > 0)
    named = {s.label_id: s for s in segments}
    rows = [named.get(i, Segment(i, f"object {i}")) for i in ids]
    written = write_labels(files[0], labels_zyx, like=like, overwrite=overwrite)
    write_label_table(files[1], rows, written.name, overwrite=overwrite)
    return [written, files[1]]


__all__ = ["FORMATS", "export_format", "check_export_output", "export_labels"]
