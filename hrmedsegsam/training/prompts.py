"""Prompt simulation from reference masks (native pixel coordinates, x = column, y = row).

Also the evaluation prompts of DESIGN §6: the tight box and the pixel farthest from the
component's border.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hrmedsegsam.masks import bbox_xyxy


@dataclass
class Prompt:
    """Native-pixel prompt: ``box`` (x0, y0, x1, y1) inclusive and/or points ``(N, 2)`` with
    ``labels`` (1 positive, 0 negative).
    """

    box: tuple[float, float, float, float] | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    kind: str = ""

    def add_point(self, xy: tuple[float, float], label: int) -> Prompt:
        pts = np.array([xy], dtype=np.float32)
        lab = np.array([label], dtype=np.int64)
        if self.points is not None:
            pts = np.concatenate([self.points, pts])
            lab = np.concatenate([self.labels, lab])
        return Prompt(self.box, pts, lab, self.kind + "+c")


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight ``(x0, y0, x1, y1)`` box of a non-empty mask (inclusive pixel indices)."""
    box = bbox_xyxy(mask)
    if box is None:
        raise ValueError("tight_box needs a non-empty mask")
    return box


def farthest_from_border(mask: np.ndarray) -> tuple[int, int]:
    """The mask pixel ``(x, y)`` farthest from the mask's border (Euclidean distance
    transform; pixels outside the image count as background). First in row-major order on
    ties.
    """
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(mask.astype(bool), 1))[1:-1, 1:-1]
    idx = int(np.argmax(dist))
    y, x = divmod(idx, mask.shape[1])
    return x, y


def jitter_box(
    box: tuple[int, int, int, int],
    shape: tuple[int, int],
    rng: np.random.Generator,
    frac: float = 0.1,
    px: float = 2.0,
) -> tuple[float, float, float, float]:
    H, W = shape
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    d = (
        rng.normal(0, 1, 4)
        * np.array([frac * w + px, frac * h + px, frac * w + px, frac * h + px])
        / 2
    )
    nx0, ny0 = np.clip(x0 + d[0], 0, W - 1), np.clip(y0 + d[1], 0, H - 1)
    nx1, ny1 = np.clip(x1 + d[2], 0, W - 1), np.clip(y1 + d[3], 0, H - 1)
    if nx1 - nx0 < 1:
        nx0, nx1 = x0, x1
    if ny1 - ny0 < 1:
        ny0, ny1 = y0, y1
    return float(nx0), float(ny0), float(nx1), float(ny1)


def random_pixel(
    mask: np.ndarray, rng: np.random.Generator, interior_bias: float = 0.5
) -> tuple[int, int]:
    """A random mask pixel; with ``interior_bias`` probability weighted by distance to the border."""
    ys, xs = np.nonzero(mask)
    if rng.random() < interior_bias:
        from scipy import ndimage

        d = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1][ys, xs]
        p = d / d.sum()
        i = int(rng.choice(len(ys), p=p))
    else:
        i = int(rng.integers(len(ys)))
    return int(xs[i]), int(ys[i])


def simulate(
    mask: np.ndarray, rng: np.random.Generator, weights: Sequence[float] = (0.4, 0.3, 0.3)
) -> Prompt:
    """A random training prompt for one object: a (jittered) box, a single positive point
    (the farthest-from-border pixel or a random interior one), or a positive+negative set.
    """
    mask = mask.astype(bool)
    kind = rng.choice(3, p=np.asarray(weights) / np.sum(weights))
    if kind == 0:
        box = tight_box(mask)
        b = (
            jitter_box(box, mask.shape, rng)
            if rng.random() < 0.5
            else (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        )
        if rng.random() < 0.25:  # box + interior point, as slice propagation prompts
            xy = farthest_from_border(mask)
            return Prompt(
                box=b, points=np.array([xy], np.float32), labels=np.array([1]), kind="box+point"
            )
        return Prompt(box=b, kind="box")
    if kind == 1:
        xy = farthest_from_border(mask) if rng.random() < 0.5 else random_pixel(mask, rng)
        return Prompt(points=np.array([xy], np.float32), labels=np.array([1]), kind="point")
    npos, nneg = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    pts = [random_pixel(mask, rng) for _ in range(npos)]
    lab = [1] * npos
    x0, y0, x1, y1 = tight_box(mask)
    H, W = mask.shape
    mx, my = max(3, (x1 - x0) // 3), max(3, (y1 - y0) // 3)
    ring = np.zeros_like(mask)
    ring[max(0, y0 - my) : y1 + my + 1, max(0, x0 - mx) : x1 + mx + 1] = True
    ring &= ~mask
    if ring.any():
        for _ in range(nneg):
            pts.append(random_pixel(ring, rng, 0.0))
            lab.append(0)
    return Prompt(points=np.array(pts, np.float32), labels=np.array(lab), kind="points")


def correction_point(pred: np.ndarray, mask: np.ndarray) -> tuple[tuple[int, int], int] | None:
    """Next click: the pixel farthest from the border of the largest error region; label 1
    where the object was missed, 0 where the prediction leaks. None if there is no error.
    """
    from scipy import ndimage

    err = pred.astype(bool) ^ mask.astype(bool)
    if not err.any():
        return None
    lab, n = ndimage.label(err)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    region = lab == int(np.argmax(sizes))
    x, y = farthest_from_border(region)
    return (x, y), int(mask[y, x])


def objects(masks: np.ndarray, min_size: int = 40) -> list[np.ndarray]:
    """Every object mask with at least ``min_size`` pixels (masks are components already)."""
    return [m for m in masks if m.sum() >= min_size]
