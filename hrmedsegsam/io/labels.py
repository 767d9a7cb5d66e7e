"""Writing label maps as NIfTI on a volume's grid: atomic, never clobbering by default."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hrmedsegsam.errors import InputError, OutputExistsError
from hrmedsegsam.io._itk import PathLike, quiet_itk, sitk_reason
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
    out = Path(os.fspath(path)).expanduser()
    name = out.name
    suffix = next((s for s in _LABEL_SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None:
        found = "".join(out.suffixes[-2:]) or "no suffix"
        raise InputError(
            f"{out} must end in .nii or .nii.gz (found {found}); labels are written as NIfTI."
        )
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
    is written to a temporary name in the same folder and then renamed into place, so a
    reader never sees a half-written file and a failure leaves nothing behind.

    Returns:
        The path written.

    Raises:
        InputError: wrong suffix, missing folder, shape mismatch, non-integer labels.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    out, suffix = check_label_output(path, overwrite)
    name, parent = out.name, out.parent

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

    tmp = parent / f".{name[: -len(suffix)]}.{secrets.token_hex(6)}.tmp{suffix}"
    try:
        with quiet_itk():
            sitk.WriteImage(image, str(tmp), useCompression=suffix == ".nii.gz")
        if overwrite:
            os.replace(tmp, out)
        else:
            _move_no_clobber(tmp, out)
    except RuntimeError as exc:
        raise InputError(f"could not write {out} ({sitk_reason(exc)}).") from None
    except OutputExistsError:
        raise
    except OSError as exc:
        raise InputError(f"could not write {out} ({exc.strerror or exc}).") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return out


def _move_no_clobber(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` appeared meanwhile (atomic where links work)."""
    try:
        os.link(src, dst)  # fails if dst exists: no race with another writer
    except FileExistsError:
        raise OutputExistsError(
            f"{dst} exists; pass overwrite (--overwrite) to replace it."
        ) from None
    except OSError:  # file system without hard links
        if dst.exists():
            raise OutputExistsError(
                f"{dst} exists; pass overwrite (--overwrite) to replace it."
            ) from None
        os.replace(src, dst)
    # with the link in place, the finally clause of write_labels removes src
