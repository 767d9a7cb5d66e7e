"""DICOM: finding the series in a folder and reading one of them (GDCM through SimpleITK)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from hrmedsegsam.errors import InputError
from hrmedsegsam.io._itk import PathLike, check_memory, check_path, quiet_itk, sitk_reason

#: DICOM tags read for :class:`Volume` metadata (SimpleITK "group|element" keys).
TAG_MODALITY = "0008|0060"
TAG_SERIES_UID = "0020|000e"
TAG_SERIES_DESCRIPTION = "0008|103e"
TAG_NUMBER_OF_FRAMES = "0028|0008"
TAG_IMAGE_POSITION = "0020|0032"

_IMAGE_SUFFIXES = (
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".dcm",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
)  # only used to give a hint when a folder holds no DICOM series


@dataclass
class DicomSeries:
    """One DICOM series found in a folder.

    Attributes:
        uid: SeriesInstanceUID.
        n_files: number of files of the series in the folder.
        files: those files, in the slice order GDCM sorts them (along the slice normal).
        description: SeriesDescription of the first file, or ``""``.
        modality: Modality of the first file (``"CT"``, ``"MR"``...), or ``""``.
        n_slices: number of slices: ``n_files``, or the frame count of a single multi-frame
            file.
    """

    uid: str
    n_files: int
    files: list[str]
    description: str = ""
    modality: str = ""
    n_slices: int = 0

    def __post_init__(self) -> None:
        if self.n_slices <= 0:
            self.n_slices = self.n_files

    def label(self) -> str:
        """Short human description, e.g. ``1.2.3 (120 slices, CT, 'Abdomen 3mm')``."""
        parts = [f"{self.n_slices} slice{'s' if self.n_slices != 1 else ''}"]
        if self.modality:
            parts.append(self.modality)
        if self.description:
            parts.append(repr(self.description))
        return f"{self.uid} ({', '.join(parts)})"


def _file_metadata(path: str) -> dict[str, str]:
    """The DICOM tags we use from one file's header ({} if it cannot be read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError:
        return {}
    out = {}
    for key in (TAG_MODALITY, TAG_SERIES_UID, TAG_SERIES_DESCRIPTION, TAG_NUMBER_OF_FRAMES):
        if reader.HasMetaDataKey(key):
            out[key] = reader.GetMetaData(key).strip()
    return out


def _non_utf8_name(folder: Path) -> str | None:
    """A file name in ``folder`` that is not valid UTF-8, shown with escapes, or None.

    GDCM's folder scan hands such a name to SimpleITK, which aborts the whole process.
    """
    try:
        names = os.listdir(os.fsencode(folder))
    except OSError:
        return None
    for name in names:
        try:
            name.decode("utf-8")
        except UnicodeDecodeError:
            return name.decode("utf-8", "backslashreplace")
    return None


def list_dicom_series(directory: PathLike) -> list[DicomSeries]:
    """All DICOM series directly inside ``directory`` (not its subfolders).

    Returns them sorted by number of slices, most first; ``[]`` when there are none.

    Raises:
        InputError: ``directory`` does not exist or is not a folder.
    """
    folder = check_path(directory)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder.")
    bad = _non_utf8_name(folder)
    if bad:
        raise InputError(
            f"{folder} holds a file whose name is not valid UTF-8 ({bad}); "
            "SimpleITK cannot scan it: rename it or move it out."
        )
    series: list[DicomSeries] = []
    with quiet_itk():
        try:
            uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError as exc:  # pragma: no cover - GDCM scanning failures are rare
            raise InputError(
                f"{folder} could not be scanned for DICOM ({sitk_reason(exc)})."
            ) from None
        for uid in uids:
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            if not files:
                continue
            meta = _file_metadata(files[0])
            n_slices = len(files)
            if len(files) == 1:
                with contextlib.suppress(ValueError):
                    n_slices = max(1, int(float(meta.get(TAG_NUMBER_OF_FRAMES, "1") or 1)))
            series.append(
                DicomSeries(
                    uid=uid,
                    n_files=len(files),
                    files=files,
                    description=meta.get(TAG_SERIES_DESCRIPTION, ""),
                    modality=meta.get(TAG_MODALITY, ""),
                    n_slices=n_slices,
                )
            )
    series.sort(key=lambda s: (-s.n_slices, -s.n_files, s.uid))
    return series


def _no_dicom_message(folder: Path) -> str:
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        entries = []
    files = [p for p in entries if p.is_file()]
    subdirs = [p for p in entries if p.is_dir()]
    images = [p.name for p in files if p.name.lower().endswith(_IMAGE_SUFFIXES)]
    if not files and not subdirs:
        return f"no DICOM series found in {folder} (the folder is empty)."
    detail = f"it holds {len(files)} file{'s' if len(files) != 1 else ''}"
    if subdirs:
        detail += f" and {len(subdirs)} subfolder{'s' if len(subdirs) != 1 else ''}"
    if images:
        detail += f"; to open an image file pass its path, e.g. {folder / images[0]}"
    elif subdirs:
        detail += "; pass the subfolder that holds the DICOM slices"
    return f"no DICOM series found in {folder} ({detail})."


def _slice_spacing_note(reader: sitk.ImageSeriesReader, image: sitk.Image) -> str | None:
    """A note when slice positions are not evenly spaced (gaps, varying thickness)."""
    n = image.GetSize()[2] if image.GetDimension() == 3 else 0
    if n < 3:
        return None
    normal = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    positions = []
    for i in range(n):
        try:
            value = reader.GetMetaData(i, TAG_IMAGE_POSITION)
            positions.append(np.asarray([float(v) for v in value.split("\\")], dtype=np.float64))
        except (RuntimeError, ValueError):
            return None
    if any(p.shape != (3,) for p in positions):
        return None
    depth = np.sort(np.asarray(positions) @ normal)
    gaps = np.diff(depth)
    if gaps.size == 0 or gaps.max() - gaps.min() <= 0.01 * max(abs(gaps.mean()), 1e-6):
        return None
    return (
        f"slice spacing is not uniform ({gaps.min():.3g} to {gaps.max():.3g} mm between "
        f"slices); the volume uses {image.GetSpacing()[2]:.3g} mm, so distances along z are "
        "approximate"
    )


def _check_series_memory(series: DicomSeries, folder: Path) -> None:
    """Memory check of a whole series from its first file's header (all slices alike)."""
    info = sitk.ImageFileReader()
    info.SetFileName(series.files[0])
    try:
        with quiet_itk():
            info.ReadImageInformation()
    except RuntimeError:
        return  # reading the series will say what is wrong
    size = info.GetSize()
    per_file = size[2] if len(size) > 2 else 1
    check_memory(
        f"DICOM series {series.uid} in {folder}",
        (size[0], size[1], per_file * len(series.files)),
        info.GetPixelID(),
        info.GetNumberOfComponents(),
    )


def _read_dicom_dir(folder: Path, series_uid: str | None) -> tuple[sitk.Image, dict[str, Any]]:
    series = list_dicom_series(folder)
    if not series:
        raise InputError(_no_dicom_message(folder))
    notes: list[str] = []
    if series_uid is not None:
        chosen = next((s for s in series if s.uid == series_uid), None)
        if chosen is None:
            available = "; ".join(s.label() for s in series)
            raise InputError(
                f"{folder} has no DICOM series with UID {series_uid}; "
                f"it has {len(series)}: {available}."
            )
    else:
        chosen = series[0]
        if len(series) > 1:
            others = ", ".join(s.label() for s in series[1:4])
            if len(series) > 4:
                others += f" and {len(series) - 4} more"
            notes.append(
                f"{len(series)} DICOM series in {folder}; using {chosen.label()}, the one "
                f"with most slices; pass series_uid (--series) to choose another: {others}"
            )
    _check_series_memory(chosen, folder)
    try:
        with quiet_itk():
            if len(chosen.files) == 1:
                image = sitk.ReadImage(chosen.files[0])
            else:
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames(chosen.files)
                reader.MetaDataDictionaryArrayUpdateOn()
                image = reader.Execute()
                note = _slice_spacing_note(reader, image)
                if note:
                    notes.append(note)
    except RuntimeError as exc:
        raise InputError(
            f"DICOM series {chosen.uid} in {folder} could not be read ({sitk_reason(exc)})."
        ) from None
    meta = {
        "modality": chosen.modality,
        "series_uid": chosen.uid,
        "series_description": chosen.description,
        "notes": notes,
    }
    return image, meta


def _one_slice_of_series_note(path: Path, series_uid: str) -> str | None:
    """A hint when a single-slice DICOM file is one of several files of its series."""
    if _non_utf8_name(path.parent):
        return None
    try:
        with quiet_itk():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path.parent), series_uid)
    except RuntimeError:  # pragma: no cover - scanning problems only lose the hint
        return None
    if len(files) <= 1:
        return None
    return (
        f"{path.name} is one slice of DICOM series {series_uid}, which has {len(files)} "
        f"files in {path.parent}; open the folder to load the whole volume"
    )
