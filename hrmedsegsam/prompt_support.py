"""Keep the parts of a predicted mask that the prompts support.

The decoder sometimes answers a click on a small structure with that structure plus a
disconnected neighbour of similar intensity (the other kidney, a bowel loop, a vessel), or
keeps an island that a negative click was placed on. A user who clicked one structure
means that structure, so the connected components (8-connected) of the native-resolution
mask are filtered by the prompts:

- with positive points and no box, a component is kept only if it holds a positive point;
- with a box, a component is kept only if it has a pixel inside the box;
- a kept component that holds a negative point is dropped, unless it also holds a positive
  point or is the box's main component (the one with most pixels inside the box): a
  negative click on the object itself asks the decoder to shrink it, not to delete it.

When the prompts support no component (a click on a pixel the mask misses), the mask is
returned unchanged: the filter never turns a non-empty answer into an empty one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hrmedsegsam.masks import components


def _inside(x: float, y: float, hw: tuple[int, ...]) -> tuple[int, int] | None:
    col, row = int(round(x)), int(round(y))
    if 0 <= row < hw[0] and 0 <= col < hw[1]:
        return row, col
    return None


def supported_mask(
    mask: np.ndarray,
    box: Sequence[float] | None = None,
    points: np.ndarray | Sequence[Sequence[float]] | None = None,
    labels: Sequence[int] | None = None,
) -> np.ndarray:
    """``mask`` bool ``(H, W)`` with the components the prompts do not support removed.

    box: ``[x0, y0, x1, y1]`` native pixels (inclusive corners, x0 <= x1, y0 <= y1);
    points: ``(N, 2)`` ``[x, y]`` native pixels; labels: 1 positive / 0 negative per point
    (default all positive). Returns a new bool array of the same shape (or ``mask`` itself
    when nothing is removed).
    """
    m = np.asarray(mask, dtype=bool)
    pts = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=float).reshape(-1, 2)
    if (box is None and not len(pts)) or not m.any():
        return m
    labs = np.ones(len(pts), int) if labels is None else np.asarray(labels, int).reshape(-1)
    # Everything below works on the mask's bounding box (r0, c0 its corner): the same
    # components for a fraction of the work on a full slice.
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = m[r0:r1, c0:c1]
    hw = crop.shape
    pos = [(p[0] - c0, p[1] - r0) for p, lab in zip(pts, labs, strict=True) if lab == 1]
    neg = [(p[0] - c0, p[1] - r0) for p, lab in zip(pts, labs, strict=True) if lab == 0]
    inbox = None
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        inbox = np.zeros(hw, bool)
        inbox[max(0, y0 - r0) : max(0, y1 + 1 - r0), max(0, x0 - c0) : max(0, x1 + 1 - c0)] = True
        # The common case: the whole mask lies in the box and no click can remove anything.
        if not neg and inbox.all():
            return m
    lab_img, n = components(crop)
    if n <= 1 and not neg:
        return m
    keep = np.ones(n + 1, bool)
    keep[0] = False
    protected = np.zeros(n + 1, bool)
    for p in pos:
        rc = _inside(p[0], p[1], hw)
        if rc is not None:
            protected[lab_img[rc]] = True
    protected[0] = False
    if inbox is not None:
        counts = np.bincount(lab_img[inbox], minlength=n + 1)
        counts[0] = 0
        keep &= counts > 0
        if counts.any():
            protected[int(np.argmax(counts))] = True
    elif pos:
        if not protected.any():
            return m
        keep &= protected
    for p in neg:
        rc = _inside(p[0], p[1], hw)
        if rc is not None and lab_img[rc] and not protected[lab_img[rc]]:
            keep[lab_img[rc]] = False
    if keep[1:].all() or not keep.any():
        return m
    out = np.zeros_like(m)
    out[r0:r1, c0:c1] = keep[lab_img]
    return out


def accept_click(previous: np.ndarray, new: np.ndarray, positive: bool) -> np.ndarray:
    """The mask after a corrective click, bool ``(H, W)``: a positive click only adds to
    ``previous`` (``previous | new``), a negative click only takes away (``previous & new``).

    The decoder answers a click with a whole new mask, and now and then that answer loses
    parts the user had already accepted; a click says where the error is, not that the
    rest was wrong. On the validation data this rule raised the Dice after three clicks
    (box 0.7905 -> 0.7935, one point 0.8014 -> 0.8101; ``runs`` script in the model card).
    """
    prev, cur = np.asarray(previous, bool), np.asarray(new, bool)
    return (prev | cur) if positive else (prev & cur)
