"""The label table: the sidecar that names and colours the ids of a labels NIfTI.

``out.nii.gz`` gets ``out.labels.tsv`` beside it, tab-separated, UTF-8, one object a row::

    # HRMedSegSAM label table for out.nii.gz: id, name, colour (R G B, 0..255)
    id	name	r	g	b
    1	liver	230	57	57

Lines starting with ``#`` are comments. Names are free text without tabs or line breaks
(those are replaced by spaces when written).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hrmedsegsam.atomic import write_text
from hrmedsegsam.errors import InputError
from hrmedsegsam.io._itk import PathLike
from hrmedsegsam.io.seg import Segment

HEADER = ("id", "name", "r", "g", "b")


def label_table_path(labels_path: PathLike) -> Path:
    """The sidecar of a labels file: ``x.nii.gz`` or ``x.nii`` -> ``x.labels.tsv``."""
    p = Path(os.fspath(labels_path)).expanduser()
    name = p.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(f"{name}.labels.tsv")


def format_label_table(segments: Sequence[Segment], labels_name: str = "") -> str:
    """The table's text for ``segments`` (sorted by id; a segment without colour gets 0 0 0)."""
    target = f" for {labels_name}" if labels_name else ""
    lines = [
        f"# HRMedSegSAM label table{target}: id, name, colour (R G B, 0..255)",
        "\t".join(HEADER),
    ]
    for s in sorted(segments, key=lambda s: s.label_id):
        name = " ".join(str(s.name).split()) or f"object {s.label_id}"
        r, g, b = s.color if s.color is not None else (0, 0, 0)
        lines.append(f"{int(s.label_id)}\t{name}\t{int(r)}\t{int(g)}\t{int(b)}")
    return "\n".join(lines) + "\n"


def write_label_table(
    path: PathLike, segments: Sequence[Segment], labels_name: str = "", overwrite: bool = False
) -> Path:
    """Write the table to ``path`` (atomic, never over an existing file unless ``overwrite``)."""
    return write_text(path, format_label_table(segments, labels_name), overwrite=overwrite)


def read_label_table(path: PathLike) -> list[Segment]:
    """The segments of a label table written by :func:`write_label_table`.

    Raises:
        InputError: missing file, or a row that is not ``id name r g b``.
    """
    p = Path(os.fspath(path)).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the label table {p} ({exc}).") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#") or tuple(line.split("\t")) == HEADER:
            continue
        cells = line.split("\t")
        try:
            label_id, name, r, g, b = cells
            color = (int(r), int(g), int(b))
            out.append(Segment(int(label_id), name, color))
        except ValueError:
            raise InputError(
                f"{p}, line {n}: expected id, name, r, g, b separated by tabs."
            ) from None
    return out


__all__ = ["label_table_path", "format_label_table", "write_label_table", "read_label_table"]
