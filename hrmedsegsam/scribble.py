"""Scribble and lasso prompts: strokes drawn on a slice, and what the model sees of them.

A stroke is a list of vertices ``(x, y)`` in pixels of one slice of ``(H, W)`` pixels
(``x`` = column, ``y`` = row, pixel centres at integers: the convention of
:mod:`hrmedsegsam.prompts`). A *scribble* is an open polyline drawn over the object
(positive) or over what is not the object (negative); a *lasso* is a closed polygon drawn
around the object (positive) or around a part to leave out (negative).

The model takes points, a box and a low-res mask, so strokes are translated
(:func:`stroke_prompts`):

* a scribble becomes points at equal arc length along it, at least :data:`SCRIBBLE_SPACING`
  pixels apart and at most :data:`SCRIBBLE_POINTS` of them, with the scribble's polarity;
* a positive lasso becomes the box around the pixels it encloses (:func:`polygon_mask`,
  even-odd rule on pixel centres; unless a box was drawn on the slice), and the model's
  mask is then limited to the lasso (:attr:`StrokePrompts.include`): a lasso drawn around
  an object says the object is inside it;
* a negative lasso removes the pixels it encloses from the model's mask
  (:attr:`StrokePrompts.exclude`); it gives the model no prompt.

Why these, measured with the shipped weights on 56 objects of the training volumes
``ct_body_3mm`` and ``ct_thorax_small`` (never the held-out cases; ``scripts/stroke_prompts.py``),
mean Dice against the reference:

===================================  ===========  ===========
positive lasso drawn around by       2 px         5 px
===================================  ===========  ===========
the lasso's own pixels               0.80         0.61
box                                  0.80         0.74
box, limited to the lasso (chosen)   0.84         0.77
box + mask prompt, limited           0.85         0.67
box + inner point, limited           0.84         0.76
===================================  ===========  ===========

The dense mask prompt helps a tight lasso a little and a loose one a lot less than
nothing (the decoder learned ``mask_input`` from its own earlier answers, not from a hand
drawn outline), so it is not used. A negative lasso over a leak (Dice 0.66 before): three
negative points inside it 0.66, subtraction 0.71, both 0.66; so subtraction alone. A
scribble across the object: 1 / 3 / 6 / 10 points along it 0.78 / 0.79 / 0.77 / 0.67 (with
the object's box 0.81 / 0.82 / 0.81 / 0.77): a few spread-out points, not many (the
decoder was trained with a handful of clicks, and its cost grows with the square of the
number of prompt tokens).

Bounds: a stroke may run off the slice (users draw near the edge): only its part on the
slice counts (scribble samples are taken along the part on the slice; a lasso keeps the
pixels of the slice it encloses). A stroke with nothing on the slice is refused with one
:class:`~hrmedsegsam.errors.PromptError` (:func:`check_stroke`), by the same rule as points
(:func:`hrmedsegsam.prompts.inside_slice`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hrmedsegsam.errors import PromptError
from hrmedsegsam.prompts import MAX_POINTS, inside_slice_xy

#: most points one scribble becomes
SCRIBBLE_POINTS = 3
#: least distance in pixels between two points sampled along a scribble
SCRIBBLE_SPACING = 8.0
#: most vertices a stroke may have (a freehand stroke at screen rate has a few hundred)
MAX_VERTICES = 10_000


@dataclass(frozen=True)
class StrokePrompts:
    """What the strokes of one slice give the model (pixels, ``x`` column, ``y`` row).

    ``points`` ``(N, 2)`` float and ``labels`` ``(N,)`` (1 positive, 0 negative), from the
    scribbles; ``box`` ``[x0, y0, x1, y1]`` around the positive lassos, or None;
    ``include`` bool ``(H, W)``: the union of the positive lassos (where the mask may be),
    or None; ``exclude`` bool ``(H, W)``: the union of the negative lassos (removed from the
    mask), or None.
    """

    points: np.ndarray
    labels: np.ndarray
    box: list[float] | None
    include: np.ndarray | None
    exclude: np.ndarray | None

    def restrict(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` ``(H, W)`` limited to :attr:`include` and without :attr:`exclude`."""
        out = np.asarray(mask, dtype=bool)
        if self.include is not None:
            out = out & self.include
        if self.exclude is not None:
            out = out & ~self.exclude
        return out


def as_vertices(vertices: Sequence[Sequence[float]] | np.ndarray, what: str) -> np.ndarray:
    """``vertices`` as a float ``(N, 2)`` array of ``(x, y)``; PromptError if not finite
    pairs or more than :data:`MAX_VERTICES`.
    """
    try:
        v = np.asarray(vertices, dtype=float)
    except (TypeError, ValueError):
        raise PromptError(f"{what} must be a list of [x, y] pixel positions") from None
    if v.ndim != 2 or v.shape[1] != 2 or len(v) == 0:
        raise PromptError(f"{what} must be a list of [x, y] pixel positions, got shape {v.shape}")
    if len(v) > MAX_VERTICES:
        raise PromptError(f"{what} has {len(v)} vertices; at most {MAX_VERTICES} are allowed")
    if not np.isfinite(v).all():
        raise PromptError(f"{what} has a vertex that is not a finite number")
    return v


def check_stroke(
    vertices: Sequence[Sequence[float]] | np.ndarray, hw: tuple[int, int], closed: bool
) -> np.ndarray:
    """Check a stroke against a slice of ``hw = (H, W)``; returns its ``(N, 2)`` vertices.

    A scribble (``closed`` False) needs at least one vertex and some part on the slice; a
    lasso (``closed`` True) needs three vertices and must enclose at least one pixel centre
    of the slice. Parts off the slice are allowed (they are clipped).

    Raises:
        PromptError: otherwise, in one sentence.
    """
    what = "a lasso" if closed else "a scribble"
    v = as_vertices(vertices, what)
    H, W = hw
    if closed:
        if len(v) < 3:
            raise PromptError(f"{what} needs at least 3 vertices, got {len(v)}")
        if not polygon_mask(v, hw).any():
            raise PromptError(f"{what} encloses no pixel of the {W}x{H} slice")
    elif not len(_inside_samples(v, hw)):
        raise PromptError(
            f"{what} lies entirely outside the {W}x{H} slice: x must be in 0..{W - 1} and "
            f"y in 0..{H - 1}"
        )
    return v


def polygon_mask(vertices: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bool ``(H, W)``: the pixels whose centre lies inside the closed polygon ``vertices``
    ``(N, 2)`` of ``(x, y)`` (even-odd rule; the polygon is closed from the last vertex back
    to the first; parts off the slice are simply not there).
    """
    H, W = hw
    out = np.zeros((H, W), dtype=bool)
    v = np.asarray(vertices, dtype=float)
    if len(v) < 3:
        return out
    x0, y0 = v[:, 0], v[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows = np.arange(max(0, int(np.ceil(y0.min()))), min(H - 1, int(np.floor(y0.max()))) + 1)
    if rows.size == 0:
        return out
    ys = rows[:, None].astype(float)  # (R, 1) against edges (1, E)
    # an edge crosses row y when y lies in [min, max) of its end points (half-open: a vertex
    # on the row is counted once)
    crosses = (y0[None] <= ys) != (y1[None] <= ys)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (ys - y0[None]) / (y1 - y0)[None]
    xs = np.where(crosses, x0[None] + t * (x1 - x0)[None], np.inf)
    xs.sort(axis=1)
    cols = np.arange(W, dtype=float)
    for r, row in zip(rows, xs, strict=True):
        cuts = row[np.isfinite(row)]
        for a, b in zip(cuts[0::2], cuts[1::2], strict=False):
            out[r, (cols >= a) & (cols < b)] = True
    return out


def sample_scribble(
    vertices: np.ndarray,
    hw: tuple[int, int],
    max_points: int = SCRIBBLE_POINTS,
    spacing: float = SCRIBBLE_SPACING,
) -> np.ndarray:
    """Points ``(K, 2)`` of ``(x, y)`` along the part of the polyline ``vertices`` that lies
    on a slice of ``hw``: ``K = clip(floor(length / spacing), 1, max_points)`` points at the
    middles of ``K`` equal pieces of that length (so they are spread out and never on the
    very ends). Empty when no part is on the slice.
    """
    dense = _inside_samples(np.asarray(vertices, dtype=float), hw)
    if len(dense) == 0:
        return np.zeros((0, 2))
    if len(dense) == 1:
        return dense.copy()
    step = np.linalg.norm(np.diff(dense, axis=0), axis=1)
    # pieces that jump across a stretch off the slice do not count as length
    step[step > 1.0] = 0.0
    arc = np.concatenate([[0.0], np.cumsum(step)])
    length = float(arc[-1])
    k = int(np.clip(length // max(spacing, 1e-6), 1, max(1, max_points)))
    targets = (np.arange(k) + 0.5) * length / k
    idx = np.searchsorted(arc, targets).clip(0, len(dense) - 1)
    return dense[idx]


def stroke_prompts(
    strokes: Sequence[tuple[np.ndarray, bool, bool]],
    hw: tuple[int, int],
    has_box: bool = False,
) -> StrokePrompts:
    """Translate the strokes of one slice of ``hw = (H, W)`` into model prompts.

    Args:
        strokes: ``(vertices (N, 2) of (x, y), positive, closed)`` each, in drawing order.
        hw: the slice's ``(H, W)``.
        has_box: a box was drawn on the slice (it is kept; the lassos give none).

    Returns:
        A :class:`StrokePrompts` (see the module docstring for the rules).
    """
    H, W = hw
    points: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    include = np.zeros((H, W), dtype=bool)
    exclude = np.zeros((H, W), dtype=bool)
    any_include = any_exclude = False
    for vertices, positive, closed in strokes:
        if not closed:
            pts = sample_scribble(vertices, hw)
            points.append(pts)
            labels.append(np.full(len(pts), int(positive)))
        elif positive:
            include |= polygon_mask(vertices, hw)
            any_include = True
        else:
            exclude |= polygon_mask(vertices, hw)
            any_exclude = True
    box = None
    if any_include and not has_box:
        region = include & ~exclude
        if region.any():
            rows = np.flatnonzero(region.any(axis=1))
            cols = np.flatnonzero(region.any(axis=0))
            box = [
                float(max(cols[0] - 1, 0)),
                float(max(rows[0] - 1, 0)),
                float(min(cols[-1] + 1, W - 1)),
                float(min(rows[-1] + 1, H - 1)),
            ]
    pts_all = np.concatenate(points) if points else np.zeros((0, 2))
    lab_all = np.concatenate(labels) if labels else np.zeros(0, int)
    if len(pts_all) > MAX_POINTS:
        raise PromptError(
            f"the strokes on this slice give {len(pts_all)} points; at most {MAX_POINTS} are "
            "allowed: remove some"
        )
    return StrokePrompts(
        pts_all.reshape(-1, 2),
        lab_all.astype(int),
        box,
        include if any_include else None,
        exclude if any_exclude else None,
    )


def _inside_samples(vertices: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The polyline ``vertices`` ``(N, 2)`` resampled every half pixel or less, keeping only
    samples on the slice (:func:`~hrmedsegsam.prompts.inside_slice`'s rule).
    """
    if len(vertices) == 1:
        dense = vertices
    else:
        parts = []
        for a, b in zip(vertices[:-1], vertices[1:], strict=True):
            n = max(1, int(np.ceil(np.linalg.norm(b - a) / 0.5)))
            t = np.arange(n)[:, None] / n
            parts.append(a + t * (b - a))
        parts.append(vertices[-1:])
        dense = np.concatenate(parts)
    return dense[inside_slice_xy(dense, hw)]
