"""Small operations on 2D boolean masks ``(H, W)`` (numpy, and SimpleITK for components; no scipy).

Coordinates returned are pixels: ``x`` = column, ``y`` = row.
"""

from __future__ import annotations

import numpy as np


def bbox_xyxy(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box ``(x0, y0, x1, y1)`` (inclusive pixel indices) of a 2D mask, None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def erode(mask: np.ndarray) -> np.ndarray:
    """One step of binary erosion with a 4-neighbour cross; the image border counts as outside."""
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[0, :] = out[-1, :] = False
    out[:, 0] = out[:, -1] = False
    return out


def interior_point(mask: np.ndarray) -> tuple[int, int] | None:
    """A pixel ``(x, y)`` deep inside the mask (approximately farthest from its border).

    Erodes until the next step would empty the mask, then takes the remaining pixel nearest
    to the remaining pixels' centroid. None for an empty mask.
    """
    current = mask.astype(bool)
    if not current.any():
        return None
    while True:
        nxt = erode(current)
        if not nxt.any():
            break
        current = nxt
    ys, xs = np.nonzero(current)
    cy, cx = ys.mean(), xs.mean()
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(xs[i]), int(ys[i])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean arrays of any equal shape; 1.0 when both are empty."""
    a, b = a.astype(bool), b.astype(bool)
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a bool mask, 2D ``(H, W)`` (8-connected) or 3D ``(z, y, x)``
    (26-connected): an int32 label image of the same shape (0 outside, 1..n inside) and ``n``.
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    cc = sitk.ConnectedComponentImageFilter()
    cc.FullyConnectedOn()  # 8-neighbours in 2D
    if mask.ndim == 2:
        # A slice is labelled in under a millisecond; starting threads costs as much again.
        cc.SetNumberOfThreads(1)
    lab = cc.Execute(img)
    arr = sitk.GetArrayFromImage(lab).astype(np.int32)
    return arr, int(arr.max())


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a 2D or 3D bool mask (see :func:`components`),
    as a bool array of the same shape; islands are dropped. An empty mask stays empty.
    """
    lab, n = components(mask)
    if n <= 1:
        return lab > 0
    return lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
