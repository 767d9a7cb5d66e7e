"""Annotation sessions on disk: a folder an outsider can read (NIfTI + JSON).

A session folder holds two files::

    session/
      session.json          what the labels are and where they belong (below)
      labels-<n>.nii.gz     the label map on the source image's grid (``.nii`` for autosaves)

``session.json`` (UTF-8)::

    {
      "format": "hrmedsegsam-session", "version": 1, "saved": "2026-12-01T22:30:00+00:00",
      "labels": "labels-3.nii.gz", "labels_sha256": "<hex of that file>",
      "window": [-160.0, 240.0],
      "source": {"path": "/data/ct", "fingerprint": "sha256:<hex>", "shape_zyx": [Z, Y, X],
                 "spacing": [x, y, z], "origin": [x, y, z], "direction": [9 cosines]},
      "objects": [{"id": 1, "name": "liver", "color": [230, 57, 57],
                   "prompts": {"points": [[z, x, y, 1], ...], "boxes": [[z, x0, y0, x1, y1], ...],
                               "strokes": [{"z": z, "kind": "scribble" | "lasso",
                                            "positive": true, "xy": [[x, y], ...]}, ...]}}]
    }

Prompts are pixels on slice ``z`` of the ``(z, y, x)`` array (``x`` column, ``y`` row; a
point's last value 1 positive, 0 negative; a stroke's ``xy`` its vertices, see
:mod:`hrmedsegsam.scribble`): the prompts of each object's last commit, so it can be
reopened and refined from them. ``strokes`` is left out when an object has none, and
sessions saved before scribbles and lassos existed open as they were. The geometry is SimpleITK's (``(x, y, z)`` mm, LPS).
The fingerprint is a SHA-256 over the source's voxels (dtype, shape, bytes) and geometry:
a session never opens onto another image.

Saving is atomic: the labels go to a new ``labels-<n>`` file, then ``session.json`` is
replaced in one rename (the commit point), then older labels files are removed. A reader
(or a crash at any moment) sees either the previous session or the new one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrmedsegsam.errors import InputError
from hrmedsegsam.session import Box, ObjectInfo, Point, PromptState, Stroke

FORMAT = "hrmedsegsam-session"
VERSION = 1
SESSION_JSON = "session.json"
_LABELS_PREFIX = "labels-"

PathLike = str | os.PathLike


def fingerprint(vol: Any) -> str:
    """``"sha256:<hex>"`` of a :class:`~hrmedsegsam.io.Volume`'s voxels and geometry.

    Geometry is rounded (1 µm, 1e-6 in the cosines) so that the same image read twice, or
    rebuilt from a napari layer's metadata, gets the same fingerprint.
    """
    array = np.ascontiguousarray(vol.array)
    h = hashlib.sha256()
    head = {
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "spacing": [round(float(v), 3) for v in vol.spacing],
        "origin": [round(float(v), 3) for v in vol.origin],
        "direction": [round(float(v), 6) + 0.0 for v in vol.direction],
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(memoryview(array).cast("B"))
    return "sha256:" + h.hexdigest()


@dataclass
class SavedSession:
    """A session read from disk (see the module docstring for the format).

    Attributes:
        path: the session folder.
        labels: the label map ``(z, y, x)`` on the source grid.
        objects: id -> name, colour and prompts, for the ids present in ``labels``.
        window: the intensity window ``(lo, hi)`` in use when it was saved, if any.
        source_path: where the source image was read from, if known.
        fingerprint: the source image's :func:`fingerprint`.
        saved: when it was saved (ISO 8601, UTC).
    """

    path: Path
    labels: np.ndarray
    objects: dict[int, ObjectInfo]
    window: tuple[float, float] | None
    source_path: str | None
    fingerprint: str
    saved: str


def is_session(path: PathLike) -> bool:
    """A folder with a ``session.json`` (not checked further)."""
    return (Path(os.fspath(path)).expanduser() / SESSION_JSON).is_file()


def check_session_folder(path: PathLike) -> Path:
    """Check, before any slow work, that a session can be saved at ``path``: an existing
    session, an empty folder, or a new folder whose parent exists. Returns the folder.

    Raises:
        InputError: otherwise (a file, a folder with other things in it, no parent).
    """
    folder = Path(os.fspath(path)).expanduser()
    if folder.is_dir():
        if not is_session(folder) and any(folder.iterdir()):
            raise InputError(
                f"{folder} is a folder that is not an annotation session; choose an empty or new one."
            )
    elif folder.exists():
        raise InputError(f"{folder} is a file; a session is saved into a folder.")
    elif not folder.parent.is_dir():
        raise InputError(
            f"cannot save the session {folder}: the folder {folder.parent} does not exist."
        )
    return folder


def save_session(
    path: PathLike,
    labels_zyx: np.ndarray,
    objects: Mapping[int, ObjectInfo],
    like: Any,
    window: tuple[float, float] | None = None,
    *,
    image_fingerprint: str | None = None,
    compress: bool = True,
) -> Path:
    """Save a session into folder ``path`` (made if missing; its parent must exist).

    Args:
        path: the session folder; an existing one must be a session of the same image.
        labels_zyx: integer labels, shape ``like.shape``.
        objects: id -> :class:`~hrmedsegsam.session.ObjectInfo`; ids absent from the
            labels are left out.
        like: the source :class:`~hrmedsegsam.io.Volume` (grid, path, fingerprint).
        window: the intensity window ``(lo, hi)``, kept for reopening.
        image_fingerprint: ``fingerprint(like)`` when the caller has it (it costs a pass
            over the voxels).
        compress: ``.nii.gz`` (True) or ``.nii`` (faster; autosaves).

    Returns:
        The folder.

    Raises:
        InputError: the folder is not a session, or a session of another image, or a
            write failed (the previous session is then intact).
    """
    from hrmedsegsam.atomic import write_text
    from hrmedsegsam.io.labels import write_labels

    folder = check_session_folder(path)
    fp = image_fingerprint or fingerprint(like)
    generation = 1
    if is_session(folder):
        meta = _read_meta(folder)
        _check_source(folder, meta, fp, like)
        generation = _generation(meta["labels"]) + 1
    folder.mkdir(exist_ok=True)

    labels = np.asarray(labels_zyx)
    labels3d = labels[np.newaxis] if labels.ndim == 2 else labels
    name = f"{_LABELS_PREFIX}{generation}{'.nii.gz' if compress else '.nii'}"
    while (folder / name).exists():  # left by a crash between writing labels and the JSON
        generation += 1
        name = f"{_LABELS_PREFIX}{generation}{'.nii.gz' if compress else '.nii'}"
    labels_file = write_labels(folder / name, labels3d, like=like)
    present = _present_ids(labels3d)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "labels": name,
        "labels_sha256": _sha256_file(labels_file),
        "window": [float(window[0]), float(window[1])] if window is not None else None,
        "source": {
            "path": like.path,
            "fingerprint": fp,
            "shape_zyx": [int(n) for n in like.shape],
            "spacing": [float(v) for v in like.spacing],
            "origin": [float(v) for v in like.origin],
            "direction": [float(v) for v in like.direction],
        },
        "objects": [_object_json(i, objects.get(i) or ObjectInfo(f"object {i}")) for i in present],
    }
    try:
        write_text(folder / SESSION_JSON, json.dumps(meta, indent=1) + "\n", overwrite=True)
    except InputError:
        labels_file.unlink(missing_ok=True)
        raise
    for old in folder.glob(f"{_LABELS_PREFIX}*.nii*"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return folder


def read_session_info(path: PathLike) -> dict:
    """``session.json`` of the session at ``path``, checked (no voxels read).

    Raises:
        InputError: not a session folder, or a corrupt ``session.json``.
    """
    folder = Path(os.fspath(path)).expanduser()
    if not is_session(folder):
        raise InputError(f"{folder} is not an annotation session (no {SESSION_JSON} in it).")
    return _read_meta(folder)


def load_session(
    path: PathLike, like: Any, *, image_fingerprint: str | None = None
) -> SavedSession:
    """Read the session at ``path`` for the image ``like`` (a :class:`~hrmedsegsam.io.Volume`).

    Raises:
        InputError: not a session, a corrupt one (JSON, labels file, checksum), or a
            session of another image.
    """
    import SimpleITK as sitk

    folder = Path(os.fspath(path)).expanduser()
    meta = read_session_info(folder)
    _check_source(folder, meta, image_fingerprint or fingerprint(like), like)
    labels_file = folder / meta["labels"]
    if not labels_file.is_file():
        raise InputError(
            f"the session {folder} is corrupt: its labels file {meta['labels']} is missing."
        )
    if _sha256_file(labels_file) != meta["labels_sha256"]:
        raise InputError(
            f"the session {folder} is corrupt: {meta['labels']} does not match its checksum."
        )
    try:
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_file)))
    except RuntimeError:
        raise InputError(
            f"the session {folder} is corrupt: {meta['labels']} is not a readable NIfTI."
        ) from None
    if labels.shape != tuple(like.shape):
        raise InputError(
            f"the session {folder} is corrupt: its labels are {labels.shape}, the image {like.shape}."
        )
    objects = {o["id"]: o["info"] for o in meta["objects"]}
    window = tuple(meta["window"]) if meta["window"] is not None else None
    return SavedSession(
        folder,
        labels,
        objects,
        window,
        None if meta["source"].get("path") is None else str(meta["source"]["path"]),
        meta["source"]["fingerprint"],
        meta["saved"],
    )


# ---------------------------------------------------------------------------- internals
def _object_json(label_id: int, info: ObjectInfo) -> dict:
    p = info.prompts
    prompts: dict[str, list] = {
        "points": [[q.z, q.x, q.y, int(q.positive)] for q in p.points],
        "boxes": [[b.z, b.x0, b.y0, b.x1, b.y1] for b in p.boxes],
    }
    if p.strokes:  # absent without strokes: such files read as before
        prompts["strokes"] = [
            {"z": s.z, "kind": s.kind, "positive": s.positive, "xy": [list(v) for v in s.vertices]}
            for s in p.strokes
        ]
    return {
        "id": int(label_id),
        "name": info.name,
        "color": list(info.display_color),
        "prompts": prompts,
    }


def _read_meta(folder: Path) -> dict:
    """Parse and check ``session.json``; objects come back as ``{"id", "info"}``."""
    where = folder / SESSION_JSON
    try:
        meta = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where} is corrupt (not readable JSON: {exc}).") from None
    try:
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, not {FORMAT!r}")
        if int(meta.get("version", 0)) > VERSION:
            raise ValueError(
                f"version {meta['version']} is newer than this HRMedSegSAM reads ({VERSION})"
            )
        name = str(meta["labels"])
        if Path(name).name != name or not name.startswith(_LABELS_PREFIX):
            raise ValueError(f"labels file {name!r}")
        _generation(name)
        str(meta["labels_sha256"])
        if meta.get("window") is not None:
            lo, hi = (float(v) for v in meta["window"])
            meta["window"] = [lo, hi]
        else:
            meta["window"] = None
        source = meta["source"]
        if not str(source["fingerprint"]).startswith("sha256:"):
            raise ValueError("source fingerprint")
        source["shape_zyx"] = [int(n) for n in source["shape_zyx"]]
        objects = []
        for o in meta["objects"]:
            prompts = o.get("prompts") or {}
            state = PromptState(
                points=tuple(
                    Point(int(z), float(x), float(y), bool(pos))
                    for z, x, y, pos in prompts.get("points", [])
                ),
                boxes=tuple(
                    Box(int(z), float(a), float(b), float(c), float(d))
                    for z, a, b, c, d in prompts.get("boxes", [])
                ),
                strokes=tuple(_stroke(s) for s in prompts.get("strokes", [])),
            )
            color = o.get("color")
            rgb = None
            if color is not None:
                values = [int(c) for c in color]
                if len(values) != 3 or not all(0 <= c <= 255 for c in values):
                    raise ValueError(f"colour {color!r}")
                rgb = (values[0], values[1], values[2])
            objects.append({"id": int(o["id"]), "info": ObjectInfo(str(o["name"]), rgb, state)})
        meta["objects"] = objects
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InputError(f"{where} is corrupt ({what}).") from None
    return meta


def _stroke(item: dict) -> Stroke:
    kind = item["kind"]
    if kind not in ("scribble", "lasso"):
        raise ValueError(f"stroke kind {kind!r}")
    xy = tuple((float(x), float(y)) for x, y in item["xy"])
    if not xy:
        raise ValueError("a stroke without vertices")
    return Stroke(int(item["z"]), xy, bool(item.get("positive", True)), kind == "lasso")


def _check_source(folder: Path, meta: dict, fp: str, like: Any) -> None:
    source = meta["source"]
    if source["fingerprint"] != fp:
        theirs = source.get("path") or "an unknown image"
        mine = like.path or "this image"
        raise InputError(f"the session {folder} belongs to another image ({theirs}), not {mine}.")


def _generation(name: str) -> int:
    stem = name[len(_LABELS_PREFIX) :].split(".", 1)[0]
    if not stem.isdigit():
        raise ValueError(f"labels file {name!r}")
    return int(stem)


def _present_ids(labels3d: np.ndarray) -> list[int]:
    """The ids > 0 in the labels, sorted (counted over the labelled voxels only: objects
    are usually a small part of a volume).
    """
    labelled = labels3d[labels3d > 0]
    if labelled.size == 0:
        return []
    top = int(labelled.max())
    if top < 1_000_000:
        counts = np.bincount(labelled, minlength=top + 1)
        return [int(i) for i in np.flatnonzero(counts[1:]) + 1]
    return [int(i) for i in np.unique(labelled)]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


__all__ = [
    "FORMAT",
    "VERSION",
    "SESSION_JSON",
    "SavedSession",
    "fingerprint",
    "is_session",
    "check_session_folder",
    "save_session",
    "read_session_info",
    "load_session",
]
