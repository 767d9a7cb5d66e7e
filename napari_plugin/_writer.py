"""napari writer: a Labels layer to NIfTI with its source image's exact geometry, and its
label table ``<name>.labels.tsv`` beside it (:mod:`hrmedsegsam.io.label_table`: id, name,
colour; names from ``metadata["segments"]``, which the annotation widget keeps current,
else ``object <id>``).

The geometry comes from ``metadata["hrmedsegsam"]`` (set by this plugin's reader, sample
data and annotation widget); a layer without it is written with the grid its scale and
translate describe. An existing file is never replaced: the writer raises
:class:`hrmedsegsam.errors.OutputExistsError` (napari shows its message) unless the caller
passes ``overwrite=True`` after the user confirmed it (the widget's Export does that).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from napari_plugin._geometry import META_KEY, SEGMENTS_KEY

SUFFIXES = (".nii.gz", ".nii")


class _LayerLike:
    """The bits of a layer that :func:`volume_from_layer` reads, from a writer's ``meta``."""

    def __init__(self, data: Any, meta: dict) -> None:
        self.data = data
        self.metadata = dict(meta.get("metadata") or {})
        ndim = np.asarray(data).ndim
        self.scale = tuple(meta.get("scale") or (1.0,) * ndim)
        self.translate = tuple(meta.get("translate") or (0.0,) * ndim)


def nifti_path(path: str | os.PathLike) -> str:
    """``path`` with ``.nii.gz`` appended unless it already ends in .nii or .nii.gz."""
    p = os.fspath(path)
    return p if p.lower().endswith(SUFFIXES) else p + ".nii.gz"


def write_labels(path: str, data: Any, meta: dict, overwrite: bool = False) -> list[str]:
    """The npe2 single-layer writer: returns ``[labels file, label table]``.

    Raises ``OutputExistsError`` if either file exists and ``overwrite`` is false (nothing
    is written then), and ``InputError`` for a wrong suffix, a missing folder or labels that
    do not fit the grid.
    """
    from hrmedsegsam.io.export import export_labels
    from hrmedsegsam.io.seg import Segment
    from napari_plugin._geometry import volume_from_layer

    labels = np.asarray(data)
    if labels.ndim == 2:
        labels3d = labels[np.newaxis]
    else:
        labels3d = labels
    like = volume_from_layer(_LayerLike(labels, meta), labels3d)
    geometry = (meta.get("metadata") or {}).get(META_KEY)
    if geometry is not None and tuple(geometry.get("shape_zyx", labels3d.shape)) != labels3d.shape:
        from hrmedsegsam.errors import InputError

        raise InputError(
            f"cannot write {path}: the labels have shape {labels3d.shape} but their source "
            f"image is {tuple(geometry['shape_zyx'])}."
        )
    segments = [
        Segment(int(r["id"]), str(r["name"]), tuple(r["color"]) if r.get("color") else None)
        for r in (meta.get("metadata") or {}).get(SEGMENTS_KEY) or ()
    ]
    written = export_labels(
        nifti_path(path), labels3d, like, segments, overwrite=overwrite, fmt="nifti"
    )
    return [str(f) for f in written]


def write_layer(path: str, layer: Any, overwrite: bool = False) -> str:
    """Writes a napari Labels layer through :func:`write_labels`; returns the labels file."""
    meta = {
        "metadata": layer.metadata,
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "name": layer.name,
    }
    return write_labels(path, layer.data, meta, overwrite=overwrite)[0]
