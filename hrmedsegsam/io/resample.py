"""Bringing a label map onto an image's grid by physical position (never by array index)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from hrmedsegsam.io._itk import PathLike
from hrmedsegsam.io.labels import _label_dtype
from hrmedsegsam.io.read import _as_3d_scalar, _read_any
from hrmedsegsam.io.volume import Volume

_GEOMETRY_ATOL = 1e-4  # mm / direction cosine: grids closer than this are "the same grid"


def _same_grid(image: sitk.Image, volume: Volume) -> bool:
    return (
        tuple(image.GetSize()) == volume.size_xyz
        and np.allclose(image.GetSpacing(), volume.spacing, atol=_GEOMETRY_ATOL, rtol=0)
        and np.allclose(image.GetOrigin(), volume.origin, atol=_GEOMETRY_ATOL, rtol=0)
        and np.allclose(image.GetDirection(), volume.direction, atol=_GEOMETRY_ATOL, rtol=0)
    )


def resample_labels_to(labels: PathLike | sitk.Image | Volume, volume: Volume) -> np.ndarray:
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
