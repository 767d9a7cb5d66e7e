"""napari reader: DICOM folders/files, NIfTI, NRRD and MetaImage through ``hrmedsegsam.io``.

Images become Image layers placed in millimetres (see :mod:`napari_plugin._geometry`),
with their source geometry in ``layer.metadata["hrmedsegsam"]``. A file that looks like a
label map (integers, no DICOM modality, few distinct values) becomes a Labels layer; when
an image read by this plugin is already open, the labels are resampled onto that image's
grid by physical position, so they can be corrected there and exported with its geometry.
A DICOM SEG file, or an annotation session folder, opens onto the image already open (the
series the SEG references; the image the session was made on) as a Labels layer that
keeps the objects' names and colours in ``metadata["segments"]``; the annotation widget
adopts it. A SEG of another series, or a session of another image, is refused with one
line.

:func:`napari_get_reader` returns ``None`` for paths this plugin cannot read; the returned
reader also returns ``None`` (after a notification saying why) for a file that turns out
to be unreadable, rather than raising.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_plugin._geometry import (
    SEGMENTS_KEY,
    has_geometry,
    layer_array,
    layer_kwargs,
    same_transform_kwargs,
)

SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".dicom", ".ima")
_MAX_LABEL_VALUES = 64  # a file with at most this many distinct non-negative integers is labels
_DICOM_SNIFF_FILES = 20

LayerData = tuple  # (data, kwargs, layer_type)


def _is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' at byte 128."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def can_read(path: str | os.PathLike) -> bool:
    """Cheap check (no voxel read): a supported suffix, a DICOM file, or a DICOM folder."""
    p = Path(os.fspath(path))
    if p.is_dir():
        try:
            files = [c for c in sorted(p.iterdir()) if c.is_file()][:_DICOM_SNIFF_FILES]
        except OSError:
            return False
        return any(c.name.lower().endswith(SUFFIXES) or _is_dicom_file(c) for c in files)
    if not p.is_file():
        return False
    return p.name.lower().endswith(SUFFIXES) or _is_dicom_file(p)


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData] | None] | None:
    """The npe2 ``get_reader`` hook: a reader function, or ``None`` if we cannot read it."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)) or not can_read(path):
        return None
    return read_path


def read_path(path: str | list[str]) -> list[LayerData] | None:
    """Read ``path`` into layer data; ``None`` (and a notification) if it is unreadable."""
    from hrmedsegsam.errors import HRMedSegSAMError
    from hrmedsegsam.io import read_volume

    if isinstance(path, (list, tuple)):
        path = path[0]
    try:
        if _is_seg_file(Path(path)):
            return [seg_layer_data(path, _open_image_layer())]
        from hrmedsegsam.session_file import is_session

        if is_session(path):
            return [session_layer_data(path, _open_image_layer())]
        vol = read_volume(path)
        if looks_like_labels(vol):
            return [labels_layer_data(vol, onto=_open_image_layer())]
        return [image_layer_data(vol)]
    except HRMedSegSAMError as exc:
        _notify(str(exc))
        return None


def display_name(path: str | None, default: str = "image") -> str:
    if not path:
        return default
    name = Path(path.rstrip("/\\")).name
    for suffix in (".nii.gz",) + SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or default
    return name or default


def image_layer_data(vol: Any, name: str | None = None) -> LayerData:
    """Image layer data for a Volume: mm placement, geometry metadata, a sensible window."""
    from hrmedsegsam.intensity import resolve_window

    kwargs = layer_kwargs(vol, name or display_name(vol.path))
    try:
        lo, hi = resolve_window(vol.array, modality=vol.modality)
        kwargs["contrast_limits"] = (float(lo), float(hi))
    except Exception:  # noqa: BLE001 - the window is a nicety; napari picks one otherwise
        pass
    kwargs["colormap"] = "gray"
    return (layer_array(vol), kwargs, "image")


def labels_layer_data(vol: Any, onto: Any = None, name: str | None = None) -> LayerData:
    """Labels layer data for a label map; resampled onto the image layer ``onto`` if given.

    The result is an int32 array (what the annotation session edits in place).
    """
    name = name or display_name(vol.path, "labels")
    if onto is None:
        data = np.asarray(layer_array(vol)).astype(np.int32, copy=False)
        return (data, layer_kwargs(vol, name), "labels")
    from hrmedsegsam.io import resample_labels_to
    from napari_plugin._geometry import volume_from_layer

    target = volume_from_layer(onto, _as_3d(onto.data))
    data = resample_labels_to(vol, target).astype(np.int32, copy=False)
    if np.asarray(onto.data).ndim == 2:
        data = data[0]
    kwargs = same_transform_kwargs(onto)
    kwargs["name"] = name
    kwargs["metadata"] = {k: v for k, v in onto.metadata.items()}
    kwargs["metadata"]["resampled_from"] = vol.path
    return (data, kwargs, "labels")


def seg_layer_data(path: str | os.PathLike, onto: Any) -> LayerData:
    """Labels layer data for the DICOM SEG at ``path`` placed on the image layer ``onto``
    (read from the series the SEG references; a SEG of another series is refused).
    """
    from hrmedsegsam.io import read_seg

    labels, segments = read_seg(path, _source_volume(onto, path, "the DICOM series it segments"))
    rows = [
        {"id": s.label_id, "name": s.name, "color": list(s.color) if s.color else None}
        for s in segments
    ]
    return _labels_on(onto, labels, rows, path)


def session_layer_data(path: str | os.PathLike, onto: Any) -> LayerData:
    """Labels layer data for the session folder at ``path`` on the image layer ``onto``
    (the image it was made on; another image's session is refused).
    """
    from hrmedsegsam.session_file import load_session

    saved = load_session(path, _source_volume(onto, path, "the image it was made on"))
    rows = [
        {"id": i, "name": o.name, "color": list(o.display_color)} for i, o in saved.objects.items()
    ]
    return _labels_on(onto, saved.labels, rows, path)


def _source_volume(onto: Any, path: str | os.PathLike, what: str) -> Any:
    from hrmedsegsam.errors import InputError
    from napari_plugin._geometry import volume_from_layer

    if onto is None:
        raise InputError(f"{Path(os.fspath(path)).name}: open {what} first, then this file.")
    return volume_from_layer(onto, _as_3d(onto.data))


def _labels_on(
    onto: Any, labels: np.ndarray, segments: list[dict], path: str | os.PathLike
) -> LayerData:
    """``labels`` ``(z, y, x)`` on ``onto``'s grid as Labels layer data (2D for a 2D image)."""
    data = np.asarray(labels).astype(np.int32)
    if np.asarray(onto.data).ndim == 2:
        data = data[0]
    kwargs = same_transform_kwargs(onto)
    kwargs["name"] = display_name(os.fspath(path), "labels")
    kwargs["metadata"] = {
        **onto.metadata,
        "resampled_from": os.fspath(path),
        SEGMENTS_KEY: segments,
    }
    return (data, kwargs, "labels")


def _is_seg_file(path: Path) -> bool:
    """A DICOM file whose Modality is SEG (header only)."""
    if not path.is_file() or not _is_dicom_file(path):
        return False
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # noqa: BLE001 - an unreadable header: not a SEG we can open
        return False
    return str(getattr(ds, "Modality", "")) == "SEG"


def looks_like_labels(vol: Any) -> bool:
    """Integers >= 0 with few distinct values and no DICOM modality: a label map."""
    arr = np.asarray(vol.array)
    if vol.modality or arr.dtype.kind not in "iub" or arr.size == 0:
        return False
    step = max(1, int(round((arr.size / 2_000_000) ** (1 / 3))))
    sample = arr[::step, ::step, ::step] if arr.ndim == 3 else arr
    if sample.min() < 0:
        return False
    values = np.unique(sample)
    return values.size <= _MAX_LABEL_VALUES and arr.min() >= 0


def _as_3d(data: Any) -> np.ndarray:
    arr = np.asarray(data)
    return arr[np.newaxis] if arr.ndim == 2 else arr


def _open_image_layer() -> Any:
    """The image layer (read by this plugin) of the current viewer to put labels on, if any."""
    try:
        import napari
    except ImportError:  # pragma: no cover - the reader is only used inside napari
        return None
    viewer = napari.current_viewer()
    if viewer is None:
        return None
    from napari.layers import Image

    active = viewer.layers.selection.active
    if isinstance(active, Image) and has_geometry(active):
        return active
    images = [lay for lay in viewer.layers if isinstance(lay, Image) and has_geometry(lay)]
    return images[-1] if images else None


def _notify(message: str) -> None:
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except Exception:  # noqa: BLE001 - outside napari: nothing to show it in
        pass
