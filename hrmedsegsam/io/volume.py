"""The :class:`Volume`: a scalar 3D image with its physical geometry, and its summary.

Conventions (used by every ``hrmedsegsam.io`` module and everything built on them):

* Arrays are indexed ``(z, y, x)``, exactly as :func:`SimpleITK.GetArrayFromImage` returns
  them: ``array[z]`` is one slice, ``array[z, y, x]`` one voxel (``y`` = row, ``x`` = column).
  A 2D image is a one-slice volume of shape ``(1, H, W)``.
* Geometry is kept in SimpleITK order ``(x, y, z)``: ``spacing`` in mm per voxel, ``origin``
  the physical position (mm) of voxel ``(x, y, z) = (0, 0, 0)``, ``direction`` the 3x3
  direction cosine matrix, row-major, whose column ``j`` is the physical direction of index
  axis ``j``. Physical space is DICOM/ITK LPS (x to the patient's Left, y to Posterior, z to
  Superior). ``physical_xyz = origin + direction @ (spacing * index_xyz)``.
* The ``*_zyx`` helpers give the same quantities reversed, to match array axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from hrmedsegsam.errors import InputError

_ORIENTATION_TOL = 1e-4
# How far D^T D may be from the identity. DICOM stores direction cosines as decimal strings
# (often 6 digits), so a real orthonormal matrix is off by ~1e-6; a shear or a 0.1 % scale
# is not a rounding error.
_ORTHONORMAL_TOL = 1e-3


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
        self.spacing = _float3(self.spacing, "spacing")
        self.origin = _float3(self.origin, "origin")
        self.direction = _float_tuple(self.direction, 9, "direction")
        where = self.path or "A Volume"
        for name in ("spacing", "origin", "direction"):
            if not all(np.isfinite(getattr(self, name))):
                raise InputError(f"{where}: its {name} {getattr(self, name)} is not finite.")
        if any(s <= 0 for s in self.spacing):
            raise InputError(f"{where}: the spacing must be positive but is {self.spacing}.")
        _check_orthonormal(self.direction, where)

    # -- geometry helpers ------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(z, y, x)``."""
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Grid size in SimpleITK order ``(x, y, z)``."""
        z, y, x = self.shape
        return (x, y, z)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel size in mm, ``(sz, sy, sx)`` to match array axes."""
        x, y, z = self.spacing
        return z, y, x

    @property
    def origin_zyx(self) -> tuple[float, float, float]:
        """Origin in mm with components reversed: ``(oz, oy, ox)``."""
        x, y, z = self.origin
        return z, y, x

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


def _float3(values: Any, name: str) -> tuple[float, float, float]:
    x, y, z = _float_tuple(values, 3, name)
    return x, y, z


def _check_orthonormal(direction: tuple[float, ...], where: str) -> None:
    """InputError unless the direction's columns are unit length and perpendicular.

    A sheared or scaled direction cannot be carried into NIfTI (its qform/sform keep a
    rotation and the spacing), so labels written for such an image would not overlay it.
    """
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    gram = matrix.T @ matrix
    error = float(np.abs(gram - np.eye(3)).max())
    if error > _ORTHONORMAL_TOL:
        lengths = ", ".join(f"{v:.4g}" for v in np.sqrt(np.diag(gram)))
        raise InputError(
            f"{where}: its direction matrix is not orthonormal (sheared or scaled: axis lengths "
            f"{lengths}); labels written for it could not overlay it. Resample it onto an "
            "orthonormal grid first."
        )


def _is_oblique(direction: tuple[float, ...] | np.ndarray, tol: float = _ORIENTATION_TOL) -> bool:
    matrix = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3))
    near_one = np.abs(matrix - 1.0) <= tol
    near_zero = matrix <= tol
    if not np.all(near_one | near_zero):
        return True
    return not (np.all(near_one.sum(axis=0) == 1) and np.all(near_one.sum(axis=1) == 1))


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
