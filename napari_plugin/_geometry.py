"""Glue between :class:`hrmedsegsam.io.Volume` geometry and napari layer transforms.

napari places a layer's data point ``v`` (array index order, here ``(z, y, x)``) in world
coordinates as ``affine @ (rotate @ (scale * v) + translate)``. For a volume whose direction
is the identity, ``scale`` = spacing and ``translate`` = origin (both ``(z, y, x)``) place
voxels in millimetres; any other direction (flips, permutations, oblique) adds an ``affine``
with the direction cosines and the origin, so that ``world = Volume.affine_zyx() @ v``.
World coordinates are therefore physical LPS millimetres with components reversed
``(S, P, L)``, for every layer this plugin makes, so files on different grids overlay.

The source geometry travels in ``layer.metadata["hrmedsegsam"]`` (plain Python values),
from which :func:`volume_from_layer` rebuilds a :class:`Volume` for writing and resampling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

META_KEY = "hrmedsegsam"
#: labels layer metadata: ``[{"id", "name", "color"}]`` of a DICOM SEG or session the
#: reader opened (the annotation widget names the objects from it)
SEGMENTS_KEY = "segments"
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def geometry_metadata(vol: Any) -> dict:
    """The geometry of ``vol`` (a Volume) as plain values, for ``layer.metadata``."""
    return {
        "spacing": tuple(float(s) for s in vol.spacing),
        "origin": tuple(float(o) for o in vol.origin),
        "direction": tuple(float(d) for d in vol.direction),
        "shape_zyx": tuple(int(n) for n in vol.shape),
        "path": vol.path,
        "modality": vol.modality,
        "series_uid": vol.series_uid,
        "series_description": getattr(vol, "series_description", ""),
        "notes": list(getattr(vol, "notes", []) or []),
        "orientation": vol.orientation,
        "oblique": bool(vol.is_oblique),
    }


def is_single_slice(vol: Any) -> bool:
    """A one-slice volume (a 2D image): shown as a 2D ``(y, x)`` layer."""
    return int(vol.shape[0]) == 1


def layer_array(vol: Any) -> np.ndarray:
    """The array a layer shows: ``(z, y, x)``, or ``(y, x)`` for a one-slice volume (a view)."""
    return vol.array[0] if is_single_slice(vol) else vol.array


def transform_kwargs(vol: Any) -> dict:
    """``scale`` / ``translate`` (and ``affine`` unless the direction is the identity).

    For a one-slice volume the 2D ``(y, x)`` part, matching :func:`layer_array`.
    """
    spacing_zyx = np.asarray(vol.spacing_zyx, dtype=float)
    origin_zyx = np.asarray(vol.origin_zyx, dtype=float)
    keep = slice(1, 3) if is_single_slice(vol) else slice(0, 3)
    n = 2 if is_single_slice(vol) else 3
    if np.allclose(vol.direction, _IDENTITY, atol=1e-6):
        return {
            "scale": tuple(float(s) for s in spacing_zyx[keep]),
            "translate": tuple(float(o) for o in origin_zyx[keep]),
        }
    full = np.asarray(vol.affine_zyx(), dtype=float)  # [R @ diag(spacing) | origin]
    rot = full[:3, :3] / spacing_zyx[np.newaxis, :]
    affine = np.eye(n + 1)
    affine[:n, :n] = rot[keep, keep]
    affine[:n, n] = full[:3, 3][keep]
    return {
        "scale": tuple(float(s) for s in spacing_zyx[keep]),
        "translate": (0.0,) * n,
        "affine": affine,
    }


def layer_kwargs(vol: Any, name: str | None = None) -> dict:
    """Keyword arguments for an Image or Labels layer showing :func:`layer_array` of ``vol``."""
    kwargs = transform_kwargs(vol)
    kwargs["metadata"] = {META_KEY: geometry_metadata(vol)}
    if name is not None:
        kwargs["name"] = name
    return kwargs


def same_transform_kwargs(layer: Any) -> dict:
    """``scale``/``translate``/``rotate``/``affine`` copied from ``layer`` (for overlays)."""
    return {
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "affine": np.asarray(layer.affine.affine_matrix),
    }


def has_geometry(layer: Any) -> bool:
    return isinstance(getattr(layer, "metadata", None), dict) and META_KEY in layer.metadata


def volume_from_layer(layer: Any, array: np.ndarray | None = None) -> Any:
    """A :class:`Volume` with ``layer``'s source geometry (from its metadata).

    A layer without that metadata (e.g. opened by another reader) gets the geometry its
    scale and translate describe, with an identity direction. ``array`` defaults to the
    layer's data (not copied).
    """
    from hrmedsegsam.io import Volume

    data = np.asarray(layer.data if array is None else array)
    meta = layer.metadata.get(META_KEY) if has_geometry(layer) else None
    if meta is not None:
        return Volume(
            array=data,
            spacing=meta["spacing"],
            origin=meta["origin"],
            direction=meta["direction"],
            path=meta.get("path"),
            modality=meta.get("modality", "") or "",
            series_uid=meta.get("series_uid"),
        )
    scale = [float(s) for s in layer.scale][-3:]
    translate = [float(t) for t in layer.translate][-3:]
    if len(scale) == 2:  # a 2D layer: one slice, 1 mm thick
        scale = [1.0] + scale
        translate = [0.0] + translate
    return Volume(array=data, spacing=tuple(scale[::-1]), origin=tuple(translate[::-1]))
