"""3D propagation of a 2D segmentation through a volume, slice by slice.

Volumes are ``(z, y, x)`` arrays as :func:`hrmedsegsam.read_volume` gives them; slices are
``volume[z]`` of shape ``(H, W) = (y, x)``; prompts are pixels (x = column, y = row).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

import numpy as np

from hrmedsegsam.errors import InputError, PromptError
from hrmedsegsam.intensity import apply_window, percentile_window
from hrmedsegsam.masks import bbox_xyxy, components, interior_point

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class StopRule:
    """When propagation stops in one direction (the object has ended or the model lost it).

    min_score: predicted IoU below this ends it; min_area_px / min_area_ratio: a mask
    smaller than this (pixels / fraction of the start mask) ends it; max_growth: a mask more
    than this many times the previous one is a leak and ends it; min_overlap: the new mask
    must cover at least this fraction of itself with the previous mask (continuity);
    max_intensity_jump: the mean windowed intensity (0..1) inside the new mask may differ
    from its mean over the last ``intensity_history`` accepted slices by at most this
    (None: no intensity rule). The intensity rule catches a mask that slid onto the next
    structure of similar shape (a vertebra's mask crossing the disc into the next
    vertebra), which the shape rules above cannot see.
    """

    min_score: float = 0.5
    min_area_px: int = 10
    min_area_ratio: float = 0.02
    max_growth: float = 2.5
    min_overlap: float = 0.7
    max_intensity_jump: float | None = 0.2
    intensity_history: int = 3

    def shape_reason(
        self, score: float, area: int, prev_area: int, overlap: int, start_area: int
    ) -> str | None:
        """Why a slice's mask ends the propagation by its score and shape, or None.

        ``area``/``prev_area``/``start_area`` are the pixel counts of this slice's, the
        previous slice's and the start mask; ``overlap`` the pixels shared with the previous.
        """
        if score < self.min_score:
            return f"predicted IoU {score:.2f} < {self.min_score:g}"
        floor = max(self.min_area_px, self.min_area_ratio * start_area)
        if area < floor:
            return f"mask of {area} px < {floor:g} px (the object ended)"
        if area > self.max_growth * prev_area:
            return f"mask grew {area / max(prev_area, 1):.1f}x > {self.max_growth:g}x (a leak)"
        if overlap < self.min_overlap * area:
            return f"overlap with the previous slice {overlap / max(area, 1):.2f} < {self.min_overlap:g}"
        return None


@dataclass(frozen=True)
class PropagationStop:
    """Where and why one direction of a propagation ended.

    ``direction`` +1 (up, towards higher z) or -1 (down); ``z`` the first slice not
    accepted (-1 or the slice count when the volume's edge was reached); ``reason`` in words.
    """

    direction: int
    z: int
    reason: str

    def describe(self) -> str:
        """E.g. ``"up: slice 12, predicted IoU 0.31 < 0.5"``."""
        where = "the volume's edge" if self.reason == EDGE else f"slice {self.z}, {self.reason}"
        return f"{'up' if self.direction > 0 else 'down'}: {where}"


EDGE = "the volume's edge"


def _prompt_from(mask: np.ndarray, margin: float = 0.0) -> tuple[list[int], list[list[int]]]:
    """Box ``[x0, y0, x1, y1]`` around ``mask`` ``(H, W)`` widened on each side by ``margin``
    times its width / height (at least 1 pixel, clipped to the slice), and one interior
    point ``[[x, y]]``.
    """
    H, W = mask.shape
    bb = bbox_xyxy(mask)
    assert bb is not None
    x0, y0, x1, y1 = bb
    mx = max(1, int(round(margin * (x1 - x0 + 1))))
    my = max(1, int(round(margin * (y1 - y0 + 1))))
    box = [max(0, x0 - mx), max(0, y0 - my), min(W - 1, x1 + mx), min(H - 1, y1 + my)]
    if box[2] - box[0] < 1:
        box[0], box[2] = max(0, box[0] - 1), min(W - 1, box[2] + 1)
    if box[3] - box[1] < 1:
        box[1], box[3] = max(0, box[1] - 1), min(H - 1, box[3] + 1)
    pt = interior_point(mask)
    assert pt is not None
    return box, [[pt[0], pt[1]]]


PROMPTS = ("box", "box+point", "box+point+mask")
#: Default widening of the next slice's box, per side, as a fraction of the previous mask's
#: box (at least 1 pixel). A wider box lets an organ that grows between slices grow, but
#: with the shipped weights it let propagation leak: on validation organs, 10 % took the
#: mean 3D Dice from 0.77 to 0.39 (weights/MODEL_CARD.md), so the default stays at 1 pixel.
BOX_MARGIN = 0.0


def connected_to(mask: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The parts of ``mask`` (8-connected components, ``(H, W)`` bool) that touch
    ``previous``; all of ``mask`` when none does (the continuity rule then decides). A wider
    box may take in a neighbouring structure as a separate island; this drops it.
    """
    lab, n = components(mask)
    if n <= 1:
        return mask
    touching = np.unique(lab[previous & mask])
    touching = touching[touching > 0]
    return np.isin(lab, touching) if touching.size else mask


@dataclass(frozen=True)
class PropagationStep:
    """One slice that propagation accepted: bool ``mask`` ``(H, W)`` on slice ``z``, its
    predicted IoU ``score``, its low-res ``logits`` ``(256, 256)``, and progress: ``done``
    of ``total`` slices visited (slices past where a direction stopped count as done).
    """

    z: int
    mask: np.ndarray
    score: float
    logits: np.ndarray
    done: int
    total: int


def _checked(
    volume_zyx: np.ndarray, start_z: int, start_mask: np.ndarray, direction: str, prompt: str
) -> tuple[np.ndarray, np.ndarray]:
    vol = np.asarray(volume_zyx)
    if vol.ndim != 3:
        raise InputError(f"propagation needs a (z, y, x) volume, got shape {vol.shape}")
    Z = vol.shape[0]
    if not 0 <= start_z < Z:
        raise PromptError(f"slice {start_z} is out of range: the volume has slices 0..{Z - 1}")
    start = np.asarray(start_mask, dtype=bool)
    if start.shape != vol.shape[1:]:
        raise PromptError(
            f"start mask shape {start.shape} does not match the slice shape {vol.shape[1:]}"
        )
    if not start.any():
        raise PromptError("the start mask is empty: nothing to propagate")
    if direction not in ("both", "up", "down"):
        raise ValueError(f"direction must be 'both', 'up' or 'down', not {direction!r}")
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {', '.join(PROMPTS)}, not {prompt!r}")
    return vol, start


def propagate_steps(
    predictor: Predictor,  # noqa: F821 - imported lazily to keep this module light
    volume_zyx: np.ndarray,
    start_z: int,
    start_mask: np.ndarray,
    window: tuple[float, float] | None,
    *,
    start_logits: np.ndarray | None = None,
    key: Callable[[int], Hashable] | None = None,
    direction: str = "both",
    rule: StopRule = StopRule(),
    prompt: str = "box+point",
    box_margin: float = BOX_MARGIN,
    stops: list[PropagationStop] | None = None,
) -> Iterator[PropagationStep]:
    """Propagation as a generator: one :class:`PropagationStep` per accepted slice.

    Arguments as :func:`propagate`, except ``key``: ``key(z)`` names the embedding cache
    entry of slice ``z`` (None: the slice's content hash), and ``stops``: a list that gets
    one :class:`PropagationStop` per direction when that direction ends. The caller gets
    progress from each step and cancels by no longer iterating (the next slice is only
    computed when it asks for it). Each slice's box is the previous mask's, widened by
    ``box_margin`` of its size per side; of the new mask, only the parts touching the
    previous mask are kept (:func:`connected_to`).
    """
    vol, start = _checked(volume_zyx, start_z, start_mask, direction, prompt)
    Z = vol.shape[0]
    steps = [s for s, name in ((1, "up"), (-1, "down")) if direction in (name, "both")]
    total = sum((Z - 1 - start_z) if s > 0 else start_z for s in steps)
    done = 0
    start_area = int(start.sum())
    # A fixed window for the intensity rule: with window None the predictor windows each
    # slice by its own percentiles, which would hide real changes between slices.
    iwin = tuple(window) if window is not None else percentile_window(vol)

    def mean_intensity(z: int, m: np.ndarray) -> float:
        return float(apply_window(vol[z][m], iwin).mean())

    for i, step in enumerate(steps):
        prev, prev_logits = start, start_logits
        means = [mean_intensity(start_z, start)]
        z = start_z + step
        while 0 <= z < Z:
            box, points = _prompt_from(prev, box_margin)
            predictor.set_image(vol[z], window, key=key(z) if key is not None else None)
            if prompt == "box":
                pred = predictor.predict(box=box, zoom=False)
            elif prompt == "box+point":
                pred = predictor.predict(box=box, points=points, labels=[1], zoom=False)
            else:
                pred = predictor.predict(
                    box=box, points=points, labels=[1], mask_input=prev_logits, zoom=False
                )
            mask = connected_to(pred.mask, prev)
            area = int(mask.sum())
            prev_area = int(prev.sum())
            done += 1
            reason = rule.shape_reason(
                pred.score, area, prev_area, int(np.logical_and(mask, prev).sum()), start_area
            )
            if reason is None and rule.max_intensity_jump is not None and area > 0:
                mean = mean_intensity(z, mask)
                recent = float(np.mean(means[-max(1, rule.intensity_history) :]))
                if abs(mean - recent) > rule.max_intensity_jump:
                    reason = f"mean intensity moved {abs(mean - recent):.2f} > {rule.max_intensity_jump:g}"
                means.append(mean)
            if reason is not None:
                break
            yield PropagationStep(z, mask, pred.score, pred.logits, done, total)
            prev, prev_logits = mask, pred.logits
            z += step
        else:
            reason = EDGE
        if stops is not None:
            stops.append(PropagationStop(step, z, reason))
        # Slices not visited in this direction count as done.
        done = sum((Z - 1 - start_z) if s > 0 else start_z for s in steps[: i + 1])


def propagate(
    predictor: Predictor,  # noqa: F821 - imported lazily to keep this module light
    volume_zyx: np.ndarray,
    start_z: int,
    start_mask: np.ndarray,
    window: tuple[float, float] | None,
    *,
    start_logits: np.ndarray | None = None,
    key_prefix: Hashable | None = None,
    direction: str = "both",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    rule: StopRule = StopRule(),
    prompt: str = "box+point",
    box_margin: float = BOX_MARGIN,
) -> np.ndarray:
    """Segment the object of ``start_mask`` (on slice ``start_z``) through the volume.

    Each next slice is prompted with the previous slice's mask: ``prompt`` "box" (its box
    widened by ``box_margin`` of its size per side, at least 1 pixel), "box+point" (and one interior point) or "box+point+mask" (and
    its low-res logits as ``mask_input``, starting from ``start_logits``). The default,
    box and point without the logits, was chosen on validation structures (not the
    held-out volume; weights/MODEL_CARD.md): the previous slice's logits made propagation
    drift (the decoder learns ``mask_input`` from the same slice's earlier answer, not a
    neighbour's). Goes up (+z) and/or down (-z) per
    ``direction`` ("both", "up", "down") until :class:`StopRule` says the object ended.
    ``key_prefix``: embeddings are cached under ``(key_prefix, z)`` (e.g. a volume id);
    ``progress(done, total)`` is called after each slice; ``cancel()`` returning True stops
    early. Returns a bool ``(z, y, x)`` mask, with what was found so far when cancelled.
    :func:`propagate_steps` is the same as a generator.
    """
    vol, start = _checked(volume_zyx, start_z, start_mask, direction, prompt)
    out = np.zeros(vol.shape, dtype=bool)
    out[start_z] = start
    steps = propagate_steps(
        predictor,
        vol,
        start_z,
        start,
        window,
        start_logits=start_logits,
        key=(lambda z: (key_prefix, z)) if key_prefix is not None else None,
        direction=direction,
        rule=rule,
        prompt=prompt,
        box_margin=box_margin,
    )
    while True:
        if cancel is not None and cancel():
            return out
        step = next(steps, None)
        if step is None:
            break
        out[step.z] = step.mask
        if progress is not None:
            progress(step.done, step.total)
    if progress is not None:
        Z = vol.shape[0]
        total = sum(
            (Z - 1 - start_z) if s > 0 else start_z
            for s, name in ((1, "up"), (-1, "down"))
            if direction in (name, "both")
        )
        progress(total, total)
    return out
