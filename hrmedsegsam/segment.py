"""Segment a volume from a list of object prompts (what ``hrmedsegsam segment`` runs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hrmedsegsam.prompts import ObjectPrompt


@dataclass
class ObjectResult:
    """What one prompt produced: its label, voxel count, slices covered and predicted IoU."""

    label: int
    voxels: int
    slices: tuple[int, int]
    score: float


def segment_volume(
    predictor: Predictor,  # noqa: F821
    volume_zyx: np.ndarray,
    prompts: Sequence[ObjectPrompt],
    window: tuple[float, float] | None,
    propagate_3d: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, list[ObjectResult]]:
    """Labels ``(z, y, x)`` (uint16) with each prompt's object painted with its label.

    Objects are painted in the given order; where two overlap, the later one wins. With
    ``propagate_3d`` each object is followed through the volume from its slice.
    """
    from hrmedsegsam.volume import propagate

    vol = np.asarray(volume_zyx)
    for p in prompts:
        p.check_against(vol.shape)
    labels = np.zeros(vol.shape, dtype=np.uint16)
    results: list[ObjectResult] = []
    for p in prompts:
        predictor.set_image(vol[p.slice], window, key=("segment", p.slice))
        pred = predictor.predict(
            box=p.box, points=list(p.points) or None, labels=list(p.point_labels) or None
        )
        mask3d = np.zeros(vol.shape, dtype=bool)
        if pred.mask.any():
            if propagate_3d:
                mask3d = propagate(predictor, vol, p.slice, pred.mask, window, start_logits=pred.logits,
                                   key_prefix="segment")
            else:
                mask3d[p.slice] = pred.mask
        labels[mask3d] = p.label
        zs = np.flatnonzero(mask3d.any(axis=(1, 2)))
        res = ObjectResult(p.label, int(mask3d.sum()), (int(zs[0]), int(zs[-1])) if zs.size else (p.slice, p.slice),
                           pred.score)
        results.append(res)
        if log is not None:
            log(f"label {p.label}: {res.voxels} voxels on slices {res.slices[0]}..{res.slices[1]} "
                f"(predicted IoU {res.score:.2f})")
    return labels, results
