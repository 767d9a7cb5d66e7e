"""Reading medical volumes and writing label maps, with their geometry (SimpleITK).

Conventions used throughout this module (and by everything built on it):

* Arrays are indexed ``(z, y, x)``, exactly as :func:`SimpleITK.GetArrayFromImage` returns
  them: ``array[z]`` is one slice, ``array[z, y, x]`` one voxel (``y`` = row, ``x`` = column).
  A 2D image is a one-slice volume of shape ``(1, H, W)``.
* Geometry is kept in SimpleITK order ``(x, y, z)``: ``spacing`` in mm per voxel, ``origin``
  the physical position (mm) of voxel ``(x, y, z) = (0, 0, 0)``, ``direction`` the 3x3
  direction cosine matrix, row-major, whose column ``j`` is the physical direction of index
  axis ``j``. Physical space is DICOM/ITK LPS (x to the patient's Left, y to Posterior, z to
  Superior). ``physical_xyz = origin + direction @ (spacing * index_xyz)``.
* The ``*_zyx`` helpers give the same quantities reversed, to match array axes.

Importing this module needs only numpy and SimpleITK (never torch or napari).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import SimpleITK as sitk

from hrmedsegsam.errors import InputError, OutputExistsError

__all__ = [
    "Volume",
    "DicomSeries",
    "list_dicom_series",
    "read_volume",
    "read_image",
    "write_labels",
    "check_label_output",
    "resample_labels_to",
    "describe",
]

PathLike = Union[str, "os.PathLike[str]"]

#: DICOM tags read for :class:`Volume` metadata (SimpleITK "group|element" keys).
TAG_MODALITY = "0008|0060"
TAG_SERIES_UID = "0020|000e"
TAG_SERIES_DESCRIPTION = "0008|103e"
TAG_NUMBER_OF_FRAMES = "0028|0008"
TAG_IMAGE_POSITION = "0020|0032"

_ORIENTATION_TOL = 1e-4
_GEOMETRY_ATOL = 1e-4  # mm / direction cosine: grids closer than this are "the same grid"
_LABEL_SUFFIXES = (".nii.gz", ".nii")
_IMAGE_SUFFIXES = (
    ".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg",
    ".tif", ".tiff", ".bmp",
)  # only used to give a hint when a folder holds no DICOM series


# --------------------------------------------------------------------------- Volume


@dataclass(eq=False)  # compared by identity: "==" on arrays has no single truth value
class Volume:
    """A scalar 3D image with its physical geometry.

    Attributes:
        array: voxels, shape ``(z, y, x)``, the file's own dtype (e.g. int16 for CT). A 2D
            image has shape ``(1, H, W)``.
        spacing: voxel size in mm, ``(x, y, z)`` order (SimpleITK's).
        origin: physical position in mm (LPS) of voxel index ``(0, 0, 0)``, ``(x, y, z)``.
        direction: 9 direction cosines, row-major 3x3 as ``sitk.Image.GetDirection()``;
            column ``j`` is the physical direction of index axis ``j`` (x, y, z). Oblique
            directions are kept as they are.
        path: where the volume was read from, if anywhere.
        modality: DICOM Modality (0008,0060) such as ``"CT"`` or ``"MR"``, else ``""``.
        series_uid: DICOM SeriesInstanceUID (0020,000E) when read from DICOM.
        series_description: DICOM SeriesDescription (0008,103E), else ``""``.
        notes: human-readable remarks made while reading (series chosen, colour converted...).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    path: str | None = None
    modality: str = ""
    series_uid: str | None = None
    series_description: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim == 2:
            array = array[np.newaxis]
        if array.ndim != 3:
            raise InputError(
                f"A Volume needs a (z, y, x) array but got one with shape {array.shape}."
            )
        self.array = array
        self.spacing = _float_tuple(self.spacing, 3, "spacing")
        self.origin = _float_tuple(self.origin, 3, "origin")
        self.direction = _float_tuple(self.direction, 9, "direction")
        if any(s <= 0 for s in self.spacing):
            raise InputError(f"A Volume needs positive spacing but got {self.spacing}.")

    # -- geometry helpers ------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(z, y, x)``."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Grid size in SimpleITK order ``(x, y, z)``."""
        z, y, x = self.shape
        return (x, y, z)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel size in mm, ``(sz, sy, sx)`` to match array axes."""
        return self.spacing[::-1]  # type: ignore[return-value]

    @property
    def origin_zyx(self) -> tuple[float, float, float]:
        """Origin in mm with components reversed: ``(oz, oy, ox)``."""
        return self.origin[::-1]  # type: ignore[return-value]

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as a (3, 3) float64 matrix, ``xyz`` order (column = index axis)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def orientation(self) -> str:
        """Three-letter axis code (ITK/DICOM convention), e.g. ``"LPS"`` for the identity.

        Each letter says towards which patient side index axis x, y, z increases (L/R,
        P/A, S/I); for oblique directions it is the closest code.
        """
        return str(sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.direction))

    @property
    def is_oblique(self) -> bool:
        """True when the direction is not a signed permutation (tolerance 1e-4)."""
        return _is_oblique(self.direction)

    def reference_image(self) -> sitk.Image:
        """An image with this volume's grid (size, spacing, origin, direction).

        Useful as the reference of ``sitk.Resample``. Its voxels are uint8 zeros: it
        allocates one byte per voxel.
        """
        image = sitk.Image([int(n) for n in self.size_xyz], sitk.sitkUInt8)
        self._set_geometry(image)
        return image

    def to_sitk(self) -> sitk.Image:
        """The array as a 3D ``sitk.Image`` (a copy) carrying this volume's geometry."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array), isVector=False)
        self._set_geometry(image)
        return image

    def affine_zyx(self) -> np.ndarray:
        """4x4 matrix mapping a homogeneous voxel index ``(z, y, x, 1)`` to physical mm.

        The physical point is LPS with its components in the same reversed order,
        ``(pz, py, px)`` = (Superior, Posterior, Left): pass it as ``affine=`` of napari
        layers whose data are ``array`` so that images and labels on different grids overlay
        in millimetres. It equals ``P @ D @ diag(spacing) @ P`` (``P`` reverses 3 axes) with
        translation ``P @ origin``.
        """
        reverse = np.eye(3)[::-1]
        linear = reverse @ self.direction_matrix @ np.diag(self.spacing) @ reverse
        affine = np.eye(4)
        affine[:3, :3] = linear
        affine[:3, 3] = reverse @ np.asarray(self.origin, dtype=np.float64)
        return affine

    def index_to_physical(self, index_zyx: Any) -> np.ndarray:
        """Physical LPS position(s) in mm, ``(x, y, z)`` order, of voxel index(es) ``(z, y, x)``.

        ``index_zyx`` has shape ``(3,)`` or ``(N, 3)``; fractional indices are allowed.
        """
        idx = np.asarray(index_zyx, dtype=np.float64)
        xyz_index = idx[..., ::-1]
        linear = self.direction_matrix @ np.diag(self.spacing)
        return xyz_index @ linear.T + np.asarray(self.origin)

    def _set_geometry(self, image: sitk.Image) -> None:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)


def _float_tuple(values: Any, n: int, name: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel())
    if len(out) != n:
        raise InputError(f"A Volume's {name} needs {n} values but got {len(out)}.")
    return out


def _is_oblique(direction: tuple[float, ...] | np.ndarray, tol: float = _ORIENTATION_TOL) -> bool:
    matrix = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3))
    near_one = np.abs(matrix - 1.0) <= tol
    near_zero = matrix <= tol
    if not np.all(near_one | near_zero):
        return True
    return not (np.all(near_one.sum(axis=0) == 1) and np.all(near_one.sum(axis=1) == 1))


# --------------------------------------------------------------------------- errors


def _sitk_reason(exc: BaseException) -> str:
    """One short line from a SimpleITK/ITK exception message (they span several lines)."""
    text = str(exc)
    for marker in ("sitk::ERROR:", "ITK ERROR:"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    text = " ".join(text.split())
    # "GDCMImageIO(0x55...): message" -> "message"
    head, sep, tail = text.partition("): ")
    if sep and "(0x" in head and " " not in head:
        text = tail
    if text.startswith("Unable to determine ImageIO reader"):
        return "no image reader recognises this file format"
    text = text.rstrip(".")
    return text[:240] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK's C++ warnings (printed straight to stderr) for the duration."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _check_path(path: PathLike) -> Path:
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise InputError(f"{p} does not exist.")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p} cannot be read (permission denied).")
    return p


# --------------------------------------------------------------------------- DICOM


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
        with _quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError:
        return {}
    out = {}
    for key in (TAG_MODALITY, TAG_SERIES_UID, TAG_SERIES_DESCRIPTION, TAG_NUMBER_OF_FRAMES):
        if reader.HasMetaDataKey(key):
            out[key] = reader.GetMetaData(key).strip()
    return out


def list_dicom_series(directory: PathLike) -> list[DicomSeries]:
    """All DICOM series directly inside ``directory`` (not its subfolders).

    Returns them sorted by number of slices, most first; ``[]`` when there are none.

    Raises:
        InputError: ``directory`` does not exist or is not a folder.
    """
    folder = _check_path(directory)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder.")
    series: list[DicomSeries] = []
    with _quiet_itk():
        try:
            uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError as exc:  # pragma: no cover - GDCM scanning failures are rare
            raise InputError(f"{folder} could not be scanned for DICOM ({_sitk_reason(exc)}).")
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


def _read_dicom_dir(
    folder: Path, series_uid: str | None
) -> tuple[sitk.Image, dict[str, Any]]:
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
    try:
        with _quiet_itk():
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
            f"DICOM series {chosen.uid} in {folder} could not be read ({_sitk_reason(exc)})."
        ) from None
    meta = {
        "modality": chosen.modality,
        "series_uid": chosen.uid,
        "series_description": chosen.description,
        "notes": notes,
    }
    return image, meta


# --------------------------------------------------------------------------- reading


_COMPONENT_NAMES = {2: "2 components per voxel (grey + alpha)", 3: "3 components per voxel (RGB)",
                    4: "4 components per voxel (RGBA)"}


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
    as the components; grey + alpha keeps the grey; alpha is ignored."""
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


def _nifti_data_end(header: bytes) -> int | None:
    """Byte offset where a NIfTI-1/2 file's voxel data end (from its header), or None."""
    for order in ("<", ">"):
        (sizeof_hdr,) = struct.unpack(order + "i", header[:4])
        if sizeof_hdr == 348 and len(header) >= 348:
            dims = struct.unpack(order + "8h", header[40:56])
            (bitpix,) = struct.unpack(order + "h", header[72:74])
            (vox_offset,) = struct.unpack(order + "f", header[108:112])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            (bitpix,) = struct.unpack(order + "h", header[14:16])
            dims = struct.unpack(order + "8q", header[16:80])
            (vox_offset,) = struct.unpack(order + "q", header[168:176])
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        return None
    n_voxels = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
    return int(vox_offset) + n_voxels * (bitpix // 8)


def _nifti_truncation(path: Path) -> str | None:
    """Why a NIfTI file is shorter than its header says, or None if it looks complete.

    ITK reads truncated NIfTI files without complaint (the missing voxels are garbage), so
    a cut-off download would otherwise load silently. Cheap: compares sizes; a .nii.gz is
    only decompressed when its gzip trailer disagrees with the header.
    """
    name = path.name.lower()
    try:
        if name.endswith(".nii"):
            with open(path, "rb") as f:
                end = _nifti_data_end(f.read(540))
            size = path.stat().st_size
            if end is not None and size < end:
                return f"the header describes {end} bytes but the file has {size}"
        elif name.endswith(".nii.gz"):
            with gzip.open(path, "rb") as f:
                end = _nifti_data_end(f.read(540))
            if end is None:
                return None
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                (isize,) = struct.unpack("<I", f.read(4))
            if isize == end % 2**32:
                return None
            total = 0  # trailer disagrees (or multi-member gzip): count the real bytes
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    total += len(chunk)
            if total < end:
                return f"the header describes {end} bytes but the data hold {total}"
    except EOFError:
        return "the compressed data end early"
    except (OSError, struct.error, zlib.error):
        return None
    return None


def _read_file(path: Path) -> tuple[sitk.Image, dict[str, Any]]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path} is not a readable image ({_sitk_reason(exc)}).") from None
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
    truncated = _nifti_truncation(path)
    if truncated:
        raise InputError(f"{path} is truncated or corrupt ({truncated}).")
    try:
        with _quiet_itk():
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path} is not a readable image ({_sitk_reason(exc)}).") from None
    return image, meta


def _read_any(
    path: PathLike, series_uid: str | None = None, colour_ok: bool = True
) -> tuple[sitk.Image, dict[str, Any]]:
    p = _check_path(path)
    if p.is_dir():
        image, meta = _read_dicom_dir(p, series_uid)
    else:
        image, meta = _read_file(p)
        if series_uid is not None and meta.get("series_uid") not in (None, series_uid):
            raise InputError(
                f"{p} belongs to DICOM series {meta['series_uid']}, not {series_uid}."
            )
    notes: list[str] = meta.setdefault("notes", [])
    image = _as_3d_scalar(image, str(p), notes, colour_ok=colour_ok)
    if not p.is_dir() and meta.get("series_uid") and image.GetSize()[2] == 1:
        note = _one_slice_of_series_note(p, meta["series_uid"])
        if note:
            notes.append(note)
    return image, meta


def _one_slice_of_series_note(path: Path, series_uid: str) -> str | None:
    """A hint when a single-slice DICOM file is one of several files of its series."""
    try:
        with _quiet_itk():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path.parent), series_uid)
    except RuntimeError:  # pragma: no cover - scanning problems only lose the hint
        return None
    if len(files) <= 1:
        return None
    return (
        f"{path.name} is one slice of DICOM series {series_uid}, which has {len(files)} "
        f"files in {path.parent}; open the folder to load the whole volume"
    )


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


# --------------------------------------------------------------------------- labels


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
        with _quiet_itk():
            sitk.WriteImage(image, str(tmp), useCompression=suffix == ".nii.gz")
        if overwrite:
            os.replace(tmp, out)
        else:
            _move_no_clobber(tmp, out)
    except RuntimeError as exc:
        raise InputError(f"could not write {out} ({_sitk_reason(exc)}).") from None
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


def _same_grid(image: sitk.Image, volume: Volume) -> bool:
    return (
        tuple(image.GetSize()) == volume.size_xyz
        and np.allclose(image.GetSpacing(), volume.spacing, atol=_GEOMETRY_ATOL, rtol=0)
        and np.allclose(image.GetOrigin(), volume.origin, atol=_GEOMETRY_ATOL, rtol=0)
        and np.allclose(image.GetDirection(), volume.direction, atol=_GEOMETRY_ATOL, rtol=0)
    )


def resample_labels_to(
    labels: PathLike | sitk.Image | Volume, volume: Volume
) -> np.ndarray:
    """Bring a label map onto ``volume``'s grid by physical position.

    Each voxel of ``volume`` takes the label at its physical (LPS mm) position in
    ``labels`` (nearest neighbour), whatever the two grids' directions, spacings and
    extents; voxels outside the label map get 0. Never matches raw array indices.

    Args:
        labels: a label file path, a ``sitk.Image`` or a :class:`Volume`.
        volume: the target grid.

    Returns:
        Integer array of shape ``volume.shape`` ``(z, y, x)``: the label file's integer
        dtype, or the smallest of uint8/uint16/int32 for bool or whole-valued float labels.

    Raises:
        InputError: unreadable, 4D or colour/vector labels, or labels that are not whole
            numbers.
    """
    if isinstance(labels, Volume):
        image = labels.to_sitk()
        source = labels.path or "the labels"
    elif isinstance(labels, sitk.Image):
        image = _as_3d_scalar(labels, "the label image", colour_ok=False)
        source = "the label image"
    else:
        source = str(labels)
        image = _read_any(labels, colour_ok=False)[0]
    if not _same_grid(image, volume):
        resampler = sitk.ResampleImageFilter()
        resampler.SetSize([int(n) for n in volume.size_xyz])
        resampler.SetOutputSpacing(volume.spacing)
        resampler.SetOutputOrigin(volume.origin)
        resampler.SetOutputDirection(volume.direction)
        resampler.SetInterpolator(sitk.sitkNearestNeighbor)
        resampler.SetDefaultPixelValue(0)
        resampler.SetOutputPixelType(image.GetPixelID())
        resampler.SetTransform(sitk.Transform())
        image = resampler.Execute(image)
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind in "iu":
        return array
    return array.astype(_label_dtype(array, str(source)), copy=False)


# --------------------------------------------------------------------------- info


def describe(volume: Volume) -> dict[str, Any]:
    """JSON-ready summary of a volume for ``hrmedsegsam info``.

    Keys: ``path``, ``size_xyz``, ``shape_zyx``, ``spacing_xyz`` (mm), ``origin_xyz`` (mm,
    LPS), ``direction`` (9 values), ``orientation`` (e.g. ``"LPS"``), ``oblique``,
    ``modality``, ``series_uid``, ``series_description``, ``dtype``, ``value_range``
    ([min, max]), ``notes``.
    """
    array = volume.array
    if array.size:
        lo, hi = np.nanmin(array), np.nanmax(array)
        value_range = [lo.item(), hi.item()]
    else:
        value_range = [None, None]
    return {
        "path": volume.path,
        "size_xyz": list(volume.size_xyz),
        "shape_zyx": list(volume.shape),
        "spacing_xyz": [round(s, 6) for s in volume.spacing],
        "origin_xyz": [round(o, 6) for o in volume.origin],
        "direction": [round(d, 6) for d in volume.direction],
        "orientation": volume.orientation,
        "oblique": volume.is_oblique,
        "modality": volume.modality,
        "series_uid": volume.series_uid,
        "series_description": volume.series_description,
        "dtype": str(array.dtype),
        "value_range": value_range,
        "notes": list(volume.notes),
    }
