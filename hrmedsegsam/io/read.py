"""Reading any supported file or folder into a 3D scalar image (dispatch by format, checks).

Refuses what cannot be segmented slice by slice (4D, vector volumes, complex voxels,
truncated NIfTI) with a one-sentence :class:`~hrmedsegsam.errors.InputError`; converts what
can (2D images become one-slice volumes, colour photos grey luminance) and says so in
``Volume.notes``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from hrmedsegsam.errors import InputError
from hrmedsegsam.io._itk import PathLike, check_memory, check_path, quiet_itk, sitk_reason
from hrmedsegsam.io.dicom import (
    TAG_MODALITY,
    TAG_SERIES_DESCRIPTION,
    TAG_SERIES_UID,
    _one_slice_of_series_note,
    _read_dicom_dir,
)
from hrmedsegsam.io.integrity import data_problem
from hrmedsegsam.io.volume import Volume

_COMPONENT_NAMES = {
    2: "2 components per voxel (grey + alpha)",
    3: "3 components per voxel (RGB)",
    4: "4 components per voxel (RGBA)",
}


def _components_text(n: int) -> str:
    return _COMPONENT_NAMES.get(n, f"{n} components per voxel (a vector image)")


def _shape_problem(source: str, dim: int, size: tuple[int, ...], ncomp: int) -> str | None:
    """The sentence explaining why an image of this shape is refused, or None if usable.

    Usable: 2D or 3D, scalar or (only 2D / one-slice) colour; a 4D image with one time point.
    """
    if dim == 4 and size[3] > 1:
        return (
            f"{source} has 4 dimensions (x={size[0]}, y={size[1]}, z={size[2]}, t={size[3]}); "
            "a 3D scalar volume is needed."
        )
    if dim not in (2, 3, 4):
        axes = ", ".join(str(n) for n in size)
        return f"{source} has {dim} dimensions (size {axes}); a 2D or 3D image is needed."
    if ncomp > 1 and dim >= 3 and size[2] > 1:
        return (
            f"{source} is a {size[0]}x{size[1]}x{size[2]} (x, y, z) volume with "
            f"{_components_text(ncomp)}; a scalar volume is needed."
        )
    return None


def _to_grayscale(image: sitk.Image) -> sitk.Image:
    """Luminance (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B) of a colour image, same pixel type
    as the components; grey + alpha keeps the grey; alpha is ignored.
    """
    n = image.GetNumberOfComponentsPerPixel()
    channels = [sitk.VectorIndexSelectionCast(image, i, sitk.sitkFloat32) for i in range(n)]
    if n >= 3:
        grey = channels[0] * 0.299 + channels[1] * 0.587 + channels[2] * 0.114
    else:
        grey = channels[0]
    component_type = sitk.VectorIndexSelectionCast(image, 0).GetPixelID()
    if component_type not in (sitk.sitkFloat32, sitk.sitkFloat64):
        grey = sitk.Round(grey)
    return sitk.Cast(grey, component_type)


def _as_3d_scalar(
    image: sitk.Image, source: str, notes: list[str] | None = None, colour_ok: bool = True
) -> sitk.Image:
    """Bring a read image to 3D scalar form, or raise InputError saying what was found.

    2D (and 3D one-slice) colour photos become grey luminance (with a note) when
    ``colour_ok``, else are refused; 2D images get a z axis of spacing 1 mm; a 4D image with
    a single time point loses that axis.
    """
    dim = image.GetDimension()
    size = image.GetSize()
    ncomp = image.GetNumberOfComponentsPerPixel()
    if dim == 4 and size[3] == 1:
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
        dim, size = 3, image.GetSize()
    problem = _shape_problem(source, dim, size, ncomp)
    if problem:
        raise InputError(problem)
    if ncomp > 1 and not colour_ok:
        raise InputError(
            f"{source} has {_components_text(ncomp)}; a label map needs one integer per voxel."
        )
    if ncomp > 1:
        image = _to_grayscale(image)
        if notes is not None:
            kind = "colour (RGB)" if ncomp in (3, 4) else _components_text(ncomp)
            notes.append(f"{source} is a {kind} image; converted to grey luminance")
    pixel = image.GetPixelID()
    if pixel in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"{source} has complex-valued voxels; a real scalar image is needed.")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries([image])  # z axis: spacing 1, origin 0
    return image


def _read_file(path: Path) -> tuple[sitk.Image, dict[str, Any]]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path} is not a readable image ({sitk_reason(exc)}).") from None
    meta: dict[str, Any] = {"notes": []}
    keys = set(reader.GetMetaDataKeys())
    if TAG_MODALITY in keys or TAG_SERIES_UID in keys:  # a DICOM file
        meta["modality"] = reader.GetMetaData(TAG_MODALITY).strip() if TAG_MODALITY in keys else ""
        meta["series_uid"] = (
            reader.GetMetaData(TAG_SERIES_UID).strip() if TAG_SERIES_UID in keys else None
        )
        if TAG_SERIES_DESCRIPTION in keys:
            meta["series_description"] = reader.GetMetaData(TAG_SERIES_DESCRIPTION).strip()
    # Refuse 4D / vector volumes from the header alone, before reading the voxels.
    problem = _shape_problem(
        str(path), reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents()
    )
    if problem:
        raise InputError(problem)
    check_memory(str(path), reader.GetSize(), reader.GetPixelID(), reader.GetNumberOfComponents())
    damaged = data_problem(path)
    if damaged:
        raise InputError(f"{path} is truncated or corrupt ({damaged}).")
    try:
        with quiet_itk():
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path} is not a readable image ({sitk_reason(exc)}).") from None
    return image, meta


def _read_any(
    path: PathLike, series_uid: str | None = None, colour_ok: bool = True
) -> tuple[sitk.Image, dict[str, Any]]:
    p = check_path(path)
    if p.is_dir():
        image, meta = _read_dicom_dir(p, series_uid)
    else:
        image, meta = _read_file(p)
        if series_uid is not None and meta.get("series_uid") not in (None, series_uid):
            raise InputError(f"{p} belongs to DICOM series {meta['series_uid']}, not {series_uid}.")
    notes: list[str] = meta.setdefault("notes", [])
    image = _as_3d_scalar(image, str(p), notes, colour_ok=colour_ok)
    if not p.is_dir() and meta.get("series_uid") and image.GetSize()[2] == 1:
        note = _one_slice_of_series_note(p, meta["series_uid"])
        if note:
            notes.append(note)
    return image, meta


def read_image(path: PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read any supported image as a 3D scalar ``sitk.Image`` (geometry included).

    Supported: a DICOM series folder (the series with most slices unless ``series_uid``
    is given), a single DICOM file (multi-frame too), NIfTI (.nii/.nii.gz), NRRD, MetaImage
    (.mha/.mhd), and 2D PNG/JPEG/TIFF/BMP. 2D images become one-slice volumes (z spacing
    1 mm); colour 2D images become grey luminance.

    Raises:
        InputError: the path is missing or unreadable, or holds a 4D or multi-component
            (RGB/vector) volume.
    """
    return _read_any(path, series_uid)[0]


def read_volume(path: PathLike, series_uid: str | None = None) -> Volume:
    """Read a medical image into a :class:`Volume` (array ``(z, y, x)`` + geometry).

    Args:
        path: a DICOM series folder, a DICOM file, .nii/.nii.gz, .nrrd, .mha/.mhd, or a 2D
            PNG/JPEG/TIFF image.
        series_uid: for a folder with several DICOM series, the SeriesInstanceUID to load;
            by default the series with most slices is used and a note says so.

    The voxels keep the file's dtype (int16 CT stays int16) and the full direction matrix
    is kept, oblique included. See :func:`read_image` for the conversions of 2D and colour
    images; every conversion is recorded in ``Volume.notes``.

    Raises:
        InputError: with a one-sentence message naming the path and the problem.
    """
    image, meta = _read_any(path, series_uid)
    return _volume_from_image(image, str(Path(os.fspath(path)).expanduser()), meta)


def _volume_from_image(image: sitk.Image, path: str | None, meta: dict[str, Any]) -> Volume:
    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=image.GetDirection(),
        path=path,
        modality=str(meta.get("modality", "") or ""),
        series_uid=meta.get("series_uid") or None,
        series_description=str(meta.get("series_description", "") or ""),
        notes=list(meta.get("notes", [])),
    )
