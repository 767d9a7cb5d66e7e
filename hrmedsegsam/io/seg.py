"""DICOM SEG out and in, with highdicom, for volumes read from a DICOM series.

A label map ``(z, y, x)`` on a volume read from a DICOM series becomes one DICOM
Segmentation (binary, one segment per label id, named, coloured) that references the
source series instance by instance: frame ``z`` of the labels lies on the source instance
that is slice ``z`` of the volume (the order SimpleITK/GDCM sorted the series in, along the
slice normal), so oblique series come out right without any geometry of our own. Reading
goes the same way back: each segment's frames are placed on the source instances they
reference. highdicom does the encoding (a well-kept library made for exactly this; DICOM
SEG by hand is error-prone).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrmedsegsam.atomic import write_verified
from hrmedsegsam.errors import InputError, OutputExistsError
from hrmedsegsam.io._itk import PathLike
from hrmedsegsam.io.volume import Volume

SEG_SUFFIXES = (".dcm",)


@dataclass(frozen=True)
class Segment:
    """One object of a label map: its ``label_id`` (> 0), ``name`` and ``color`` (RGB 0..255)."""

    label_id: int
    name: str
    color: tuple[int, int, int] | None = None


def source_files(volume: Volume) -> list[str]:
    """The files of the DICOM series ``volume`` was read from, in its slice order.

    Raises:
        InputError: the volume was not read from a DICOM series, or the series changed.
    """
    from hrmedsegsam.io.dicom import list_dicom_series

    if not volume.series_uid or not volume.path:
        raise InputError(
            f"DICOM SEG needs an image read from a DICOM series; {volume.path or 'this image'} is not one."
        )
    path = Path(volume.path)
    folder = path if path.is_dir() else path.parent
    series = next((s for s in list_dicom_series(folder) if s.uid == volume.series_uid), None)
    if series is None or series.n_slices != volume.shape[0]:
        raise InputError(
            f"the DICOM series {volume.series_uid} in {folder} is gone or changed since it was read."
        )
    return list(series.files)


def _cielab(color: tuple[int, int, int]) -> Any:
    import highdicom as hd

    rgb = np.clip(np.asarray(color, dtype=float) / 255.0, 0, 1)
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = m @ lin / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = (116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2]))
    return hd.color.CIELabColor(
        float(np.clip(lab[0], 0, 100)),
        float(np.clip(lab[1], -128, 127)),
        float(np.clip(lab[2], -128, 127)),
    )


def _rgb_from_dicom_lab(values: Sequence[int]) -> tuple[int, int, int]:
    """RGB 0..255 of a DICOM-encoded CIELab triple (the inverse of :func:`_cielab`)."""
    v = [float(x) / 65535.0 for x in values]
    L, a, b = v[0] * 100.0, v[1] * 255.0 - 128.0, v[2] * 255.0 - 128.0
    fy = (L + 16) / 116
    f = np.array([fy + a / 500, fy, fy - b / 200])
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * np.array(
        [0.95047, 1.0, 1.08883]
    )
    m = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    lin = np.clip(m @ xyz, 0, 1)
    rgb = np.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    r, g, b = (int(round(c)) for c in np.clip(rgb * 255, 0, 255))
    return r, g, b


def check_seg_output(path: PathLike, overwrite: bool = False) -> Path:
    """Check that a DICOM SEG can be written to ``path`` before any slow work; returns it.

    Raises:
        InputError: not a ``.dcm`` name, or a missing folder.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    out = Path(os.fspath(path)).expanduser()
    if not out.name.lower().endswith(SEG_SUFFIXES):
        raise InputError(f"{out}: a DICOM SEG file name must end in .dcm.")
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: the folder {out.parent} does not exist.")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass overwrite (--overwrite) to replace it.")
    return out


def write_seg(
    path: PathLike,
    labels_zyx: np.ndarray,
    like: Volume,
    segments: Sequence[Segment] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``labels_zyx`` (integer ids, shape of ``like.array``) as a DICOM SEG referencing
    the series ``like`` was read from; one binary segment per id present (named by
    ``segments``, else ``object <id>``). Written beside ``path``, read back, then renamed
    (:func:`hrmedsegsam.atomic.write_verified`): no half-written file under ``path``.

    Raises:
        InputError: no DICOM source, wrong shape, bad suffix or folder.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    out = check_seg_output(path, overwrite)
    labels = np.asarray(labels_zyx)
    if labels.shape != like.array.shape:
        raise InputError(
            f"{out}: labels of shape {labels.shape} do not match the image's {like.array.shape}."
        )
    ids = [int(v) for v in np.unique(labels) if v > 0]
    if not ids:
        raise InputError(f"{out}: there are no labelled voxels to write.")
    files = source_files(like)
    sources = [pydicom.dcmread(f) for f in files]
    named = {s.label_id: s for s in segments or ()}
    algo = hd.AlgorithmIdentificationSequence(
        name="HRMedSegSAM", version="1", family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = []
    for n, i in enumerate(ids, start=1):
        s = named.get(i, Segment(i, f"object {i}"))
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=s.name[:64] or f"object {i}",
                segmented_property_category=codes.cid7150.Tissue,
                segmented_property_type=codes.cid7166.ConnectiveTissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
                algorithm_identification=algo,
                tracking_id=f"label {i}",
                tracking_uid=hd.UID(),
                display_color=_cielab(s.color) if s.color is not None else None,
            )
        )
    # (frames, rows, columns, segments) bool: frame z belongs to source instance z.
    masks = np.stack([labels == i for i in ids], axis=-1)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=masks,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=999,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="HRMedSegSAM",
            manufacturer_model_name="HRMedSegSAM",
            software_versions="1",
            device_serial_number="0",
            series_description="HRMedSegSAM segmentation",
            content_label="HRMEDSEGSAM",
        )
    except ValueError as exc:  # highdicom's own check of the source series, e.g. missing tags
        raise InputError(
            f"{out}: the source series cannot be referenced by a DICOM SEG: {exc}"
        ) from None
    expected = np.where(np.isin(labels, ids), labels, 0)

    def verify(tmp: Path) -> str | None:
        try:
            back, _ = _decode(tmp, files)
        except Exception as exc:  # noqa: BLE001 - whatever pydicom/highdicom raise: it does not read back
            return f"it does not read back ({type(exc).__name__})"
        return None if np.array_equal(back, expected) else "it does not read back as the labels"

    return write_verified(
        out, lambda tmp: seg.save_as(tmp), verify, overwrite=overwrite, suffix=".dcm"
    )


def _decode(path: Path, files: Sequence[str]) -> tuple[np.ndarray, list[Segment]]:
    import highdicom as hd
    import pydicom

    seg = hd.seg.segread(str(path))
    uids = [
        str(
            pydicom.dcmread(
                f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
            ).SOPInstanceUID
        )
        for f in files
    ]
    referenced = {str(u[2]) for u in seg.get_source_image_uids()}
    if not referenced <= set(uids):
        theirs = sorted({str(u[1]) for u in seg.get_source_image_uids()})
        mine = pydicom.dcmread(
            files[0], stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]
        ).SeriesInstanceUID
        raise InputError(
            f"{Path(path).name} is a segmentation of another DICOM series "
            f"({', '.join(theirs) or 'unknown'}), not of this image's series ({mine})."
        )
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    labels = np.zeros((len(files), int(first.Rows), int(first.Columns)), dtype=np.uint16)
    segments = []
    for number in seg.get_segment_numbers():
        desc = seg.get_segment_description(number)
        tracking = str(getattr(desc, "TrackingID", "") or "")
        label_id = (
            int(tracking.split()[-1])
            if tracking.startswith("label ") and tracking.split()[-1].isdigit()
            else number
        )
        px = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            segment_numbers=[number],
            ignore_spatial_locations=True,
            assert_missing_frames_are_empty=True,
        )
        labels[px[..., 0] > 0] = label_id
        lab = getattr(desc, "RecommendedDisplayCIELabValue", None)
        segments.append(
            Segment(label_id, str(desc.SegmentLabel), _rgb_from_dicom_lab(lab) if lab else None)
        )
    return labels, segments


def read_seg(path: PathLike, like: Volume) -> tuple[np.ndarray, list[Segment]]:
    """The label map ``(z, y, x)`` (uint16, ``like``'s grid) and the segments of the DICOM SEG
    at ``path``, placed on the series ``like`` was read from.

    Raises:
        InputError: not a DICOM SEG, or it references images outside that series.
    """
    import highdicom as hd  # noqa: F401 - fail early with the import error if missing

    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise InputError(f"{p}: no such file.")
    files = source_files(like)
    try:
        labels, segments = _decode(p, files)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - highdicom/pydicom raise many kinds for a bad file
        raise InputError(f"{p} is not a readable DICOM SEG ({type(exc).__name__}).") from None
    if labels.shape != like.array.shape:
        raise InputError(
            f"{p}: the segmentation's grid {labels.shape} is not the image's {like.array.shape}."
        )
    return labels, segments


__all__ = ["Segment", "check_seg_output", "write_seg", "read_seg", "source_files", "SEG_SUFFIXES"]
