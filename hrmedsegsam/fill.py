"""Fill between key slices: segment the slices between two annotated slices of one object.

The user annotates an object on slices ``z0`` and ``z1`` (its top and bottom, say); every
slice strictly between them is segmented, prompted from both ends: the two key masks are
blended by shape (:func:`interpolate`: the signed distance maps of the two masks, mixed
by the slice's position between them) into a prior for the slice, and the model is
prompted with that prior's box, one point inside it and the prior as the dense (mask)
prompt; the model's mask keeps only the parts that touch the prior. Where the model does
not agree with the prior (predicted IoU below ``min_score``, or a Dice with the prior
below ``min_agreement``) the prior itself is taken. The key slices are never changed.

Why, measured with the shipped weights on ``ct_body_3mm`` (TotalSegmentator pseudo-labels of
spleen, kidneys, liver and stomach; training data, never the held-out cases): key slices 4
and 8 slices (12 and 24 mm) apart at two places per organ, 20 runs, mean 3D Dice over the
filled slices (``scripts/fill_between.py``):

=====================================================  =====
the blended key masks alone (no model)                 0.83
the blend's box and point (the blend where the model   0.85
disagrees)
the blend's box, point and the blend as dense prompt   0.87
(the blend where the model disagrees): chosen
=====================================================  =====

An earlier run (with a blend one pixel too thin) also had: the model's mask always, 1.5
points below the same with the fallback; each slice prompted from the nearer slice done
(propagation from both ends), 2 points below; a stricter fallback (Dice < 0.7 / < 0.8), 1
and 6 points below. The blend alone wins on some liver runs, the model on the kidneys.

Volumes are ``(z, y, x)``; masks bool ``(H, W)`` slices; prompts pixels ``(x, y)``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping

import numpy as np

from hrmedsegsam.errors import PromptError
from hrmedsegsam.masks import bbox_xyxy, dice, interior_point
from hrmedsegsam.volume import PropagationStep, connected_to

#: how the slices between are prompted (see :func:`fill_steps`)
PROMPTS = ("interpolation", "box+point", "box+point+mask", "chain")


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Float ``(H, W)``: distance in pixels to the mask's border, negative inside (the
    mask's own border pixels are 0).
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    dist = sitk.SignedMaurerDistanceMap(
        img, insideIsPositive=False, squaredDistance=False, useImageSpacing=False
    )
    return sitk.GetArrayFromImage(dist).astype(np.float32)


def interpolate(mask0: np.ndarray, mask1: np.ndarray, t: float) -> np.ndarray:
    """Shape-based interpolation of two bool ``(H, W)`` masks: ``t`` = 0 gives ``mask0``,
    1 gives ``mask1``, between them the zero level of the blended signed distance maps
    (shapes that overlap morph into each other; shapes apart shrink towards their own end).
    """
    return _blend(signed_distance(mask0), signed_distance(mask1), t)


def _blend(d0: np.ndarray, d1: np.ndarray, t: float) -> np.ndarray:
    """The zero level set of two signed distance maps mixed at ``t`` (border pixels are 0)."""
    return ((1.0 - t) * d0 + t * d1) <= 0


def key_slices(mask3d: np.ndarray) -> list[int]:
    """Sorted slice indices where a bool ``(z, y, x)`` mask has pixels."""
    return [int(z) for z in np.flatnonzero(mask3d.reshape(mask3d.shape[0], -1).any(axis=1))]


def gaps(keys: list[int]) -> list[tuple[int, int]]:
    """The pairs of consecutive key slices with slices between them."""
    return [(a, b) for a, b in zip(keys[:-1], keys[1:], strict=True) if b - a > 1]


def fill_steps(
    predictor: Predictor,  # noqa: F821 - imported lazily to keep this module light
    volume_zyx: np.ndarray,
    keys: Mapping[int, np.ndarray],
    window: tuple[float, float] | None,
    *,
    key: Callable[[int], Hashable] | None = None,
    prompt: str = "box+point+mask",
    min_score: float = 0.5,
    min_agreement: float = 0.5,
) -> Iterator[PropagationStep]:
    """Fill every gap between consecutive key slices; one step per filled slice.

    Args:
        predictor: a :class:`~hrmedsegsam.predictor.Predictor`.
        volume_zyx: the ``(z, y, x)`` volume.
        keys: slice -> bool ``(H, W)`` mask of the object there (at least two slices with
            a gap between some of them).
        window: the intensity window, or None for each slice's percentile window.
        key: ``key(z)`` names slice ``z``'s embedding in the Predictor's cache.
        prompt: ``"box+point"`` (default): the interpolated prior's box and inner point,
            the model's mask kept where it agrees with the prior (see the module
            docstring); ``"interpolation"``: the prior alone, no model; ``"chain"``: each
            slice prompted from the nearer slice already done (propagation from both ends).
        min_score: a predicted IoU below this takes the prior instead of the model's mask
            (``"box+point"``; ``"chain"``: the nearer slice's mask).
        min_agreement: so does a Dice between the model's mask and the prior below this.

    Slices are done from both ends towards the middle. ``PropagationStep.score`` is the
    model's predicted IoU, or 0.0 where the prior was taken.

    Raises:
        PromptError: at once (not when iterating) when a key slice is outside the volume
            or empty, or no two key slices have a slice between them.
    """
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {', '.join(PROMPTS)}, not {prompt!r}")
    vol = np.asarray(volume_zyx)
    zs = sorted(int(z) for z in keys)
    for z in zs:
        if not 0 <= z < vol.shape[0]:
            raise PromptError(f"key slice {z} is outside the volume (0..{vol.shape[0] - 1})")
        if not np.asarray(keys[z]).any():
            raise PromptError(f"the object is empty on key slice {z}")
    todo = gaps(zs)
    if not todo:
        raise PromptError(
            "Fill between needs the object on two slices with slices between them "
            f"(it is on {', '.join(map(str, zs)) or 'no slice'})."
        )
    masks = {z: np.asarray(keys[z], bool) for z in zs}
    return _fill(predictor, vol, masks, todo, window, key, prompt, min_score, min_agreement)


def _fill(
    predictor: Predictor,  # noqa: F821
    vol: np.ndarray,
    keys: dict[int, np.ndarray],
    todo: list[tuple[int, int]],
    window: tuple[float, float] | None,
    key: Callable[[int], Hashable] | None,
    prompt: str,
    min_score: float,
    min_agreement: float,
) -> Iterator[PropagationStep]:
    total = sum(b - a - 1 for a, b in todo)
    done = 0
    for z0, z1 in todo:
        m0, m1 = keys[z0], keys[z1]
        d0, d1 = signed_distance(m0), signed_distance(m1)
        near = {z0: m0, z1: m1}  # the masks done so far, for "chain"
        lo, hi = z0 + 1, z1 - 1
        order = []
        while lo <= hi:
            order.append((lo, z0))
            if hi != lo:
                order.append((hi, z1))
            lo, hi = lo + 1, hi - 1
        for z, end in order:
            t = (z - z0) / (z1 - z0)
            prior = _blend(d0, d1, t)
            if not prior.any():  # shapes apart: the nearer end's shape
                prior = m0 if t <= 0.5 else m1
            mask, score, logits = prior, 0.0, np.zeros((256, 256), np.float32)
            if prompt != "interpolation":
                base = prior
                if prompt == "chain":
                    base = near[z - 1] if end == z0 else near[z + 1]
                box, point = _box_and_point(base)
                predictor.set_image(vol[z], window, key=key(z) if key is not None else None)
                dense = predictor.mask_to_logits(base) if prompt == "box+point+mask" else None
                pred = predictor.predict(
                    box=box, points=[point], labels=[1], mask_input=dense, zoom=False
                )
                found = connected_to(pred.mask, base)
                if pred.score >= min_score and dice(found, base) >= min_agreement:
                    mask, score, logits = found, float(pred.score), pred.logits
                elif prompt == "chain":
                    mask = base
            near[z] = mask
            done += 1
            yield PropagationStep(z, mask, score, logits, done, total)


def _box_and_point(mask: np.ndarray) -> tuple[list[int], list[int]]:
    """The box ``[x0, y0, x1, y1]`` of ``mask`` one pixel wider (on the slice) and a pixel
    ``[x, y]`` deep inside it.
    """
    H, W = mask.shape
    bb = bbox_xyxy(mask)
    assert bb is not None
    x0, y0, x1, y1 = bb
    box = [max(0, x0 - 1), max(0, y0 - 1), min(W - 1, x1 + 1), min(H - 1, y1 + 1)]
    pt = interior_point(mask)
    assert pt is not None
    return box, [pt[0], pt[1]]
