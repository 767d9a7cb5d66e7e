"""Writing label maps as NIfTI on a volume's grid: atomic, never clobbering by default."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hrmedsegsam.atomic import check_name_length, utf8_path, write_verified
from hrmedsegsam.errors import InputError, OutputExistsError
from hrmedsegsam.io._itk import PathLike, c_stderr_to, quiet_itk, sitk_reason
from hrmedsegsam.io.integrity import data_problem
from hrmedsegsam.io.volume import Volume

_LABEL_SUFFIXES = (".nii.gz", ".nii")


def _label_dtype(labels: np.ndarray, target: str) -> np.dtype:
    """Smallest of uint8 / uint16 / int32 that holds the labels exactly."""
    if labels.size == 0:
        return np.dtype(np.uint8)
    if labels.dtype == np.bool_:
        return np.dtype(np.uint8)
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels)
        if not finite.all():
            raise InputError(f"{target}: the labels contain NaN or infinite values.")
        if not np.array_equal(labels, np.round(labels)):
            bad = labels[labels != np.round(labels)].ravel()[0]
            raise InputError(
                f"{target}: the labels must be whole numbers but contain {float(bad):g}."
            )
    elif labels.dtype.kind not in "iu":
        raise InputError(f"{target}: labels of dtype {labels.dtype} are not integers.")
    lo, hi = labels.min(), labels.max()
    if lo >= 0 and hi <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if lo >= 0 and hi <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    info = np.iinfo(np.int32)
    if lo >= info.min and hi <= info.max:
        return np.dtype(np.int32)
    raise InputError(f"{target}: label values {lo}..{hi} do not fit in 32-bit integers.")


def check_label_output(path: PathLike, overwrite: bool = False) -> tuple[Path, str]:
    """Check that labels can be written to ``path`` (see :func:`write_labels`) before any
    slow work; returns the path and its suffix (``.nii`` or ``.nii.gz``).

    Raises:
        InputError: wrong suffix, missing folder, or a folder at ``path``.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    out = utf8_path(Path(os.fspath(path)).expanduser(), "output path")
    name = out.name
    suffix = next((s for s in _LABEL_SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None:
        found = "".join(out.suffixes[-2:]) or "no suffix"
        raise InputError(
            f"{out} must end in .nii or .nii.gz (found {found}); labels are written as NIfTI."
        )
    check_name_length(out)
    parent = out.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {out}: the folder {parent} does not exist.")
    if out.is_dir():
        raise InputError(f"cannot write {out}: it is a folder.")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass overwrite (--overwrite) to replace it.")

    return out, suffix


def write_labels(
    path: PathLike, labels_zyx: np.ndarray, like: Volume, overwrite: bool = False
) -> Path:
    """Write a label map as NIfTI on exactly the grid of ``like``.

    Args:
        path: output file ending in ``.nii`` or ``.nii.gz``; its folder must exist.
        labels_zyx: integer (or bool, or whole-valued float) array of shape ``like.shape``
            ``(z, y, x)``; ``(H, W)`` is accepted for a one-slice volume.
        like: the volume whose size, spacing, origin and direction the file gets.
        overwrite: replace an existing file; otherwise refuse.

    The voxels are stored as uint8 when the values fit, else uint16, else int32. The file
    is written to a temporary name in the same folder, read back (header, size, gzip CRC)
    and only then renamed into place (:func:`hrmedsegsam.atomic.write_verified`): a full
    disk or a killed process never leaves a truncated file under ``path``, and the file
    that was there before survives any failure.

    Returns:
        The path written.

    Raises:
        InputError: wrong suffix, missing folder, shape mismatch, non-integer labels.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    out, suffix = check_label_output(path, overwrite)

    labels = np.asarray(labels_zyx)
    if labels.ndim == 2 and like.shape[0] == 1:
        labels = labels[np.newaxis]
    if labels.shape != like.shape:
        raise InputError(
            f"cannot write {out}: the labels have shape {tuple(labels.shape)} but the image "
            f"grid is (z, y, x) = {like.shape}."
        )
    dtype = _label_dtype(labels, f"cannot write {out}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(dtype, copy=False)))
    like._set_geometry(image)

    said: list[str] = []

    def write(tmp: Path) -> None:
        try:
            with quiet_itk(), c_stderr_to(said):
                sitk.WriteImage(image, str(tmp), useCompression=suffix == ".nii.gz")
        except RuntimeError as exc:
            raise InputError(f"could not write {out} ({sitk_reason(exc)}).") from None

    def verify(tmp: Path) -> str | None:
        damaged = data_problem(tmp)
        if damaged:  # the NIfTI library reports a short write on stderr, not as an error
            return "; ".join([damaged, *said[:1]])
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(tmp))
        try:
            with quiet_itk():
                reader.ReadImageInformation()
        except RuntimeError as exc:
            return f"its header cannot be read back: {sitk_reason(exc)}"
        if reader.GetSize() != image.GetSize() or reader.GetPixelID() != image.GetPixelID():
            return "its header does not describe the labels written"
        return None

    return write_verified(out, write, verify, overwrite=overwrite, suffix=suffix)
