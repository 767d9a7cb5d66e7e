"""Segment a volume from a list of object prompts (what ``hrmedsegsam segment`` runs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hrmedsegsam.errors import PromptError
from hrmedsegsam.prompts import ObjectPrompt

if TYPE_CHECKING:
    from hrmedsegsam.embedding_store import EmbeddingStore
    from hrmedsegsam.interactive import InteractiveAnnotation
    from hrmedsegsam.predictor import Predictor


@dataclass
class ObjectResult:
    """What one prompt produced: its label, voxel count, slices covered and predicted IoU."""

    label: int
    voxels: int
    slices: tuple[int, int]
    score: float


def segment_volume(
    predictor: Predictor,
    volume_zyx: np.ndarray,
    prompts: Sequence[ObjectPrompt],
    window: tuple[float, float] | None,
    propagate_3d: bool = False,
    log: Callable[[str], None] | None = None,
    store: EmbeddingStore | None = None,
) -> tuple[np.ndarray, list[ObjectResult]]:
    """Labels ``(z, y, x)`` (uint16) with each prompt's object painted with its label.

    Drives the same :class:`~hrmedsegsam.interactive.InteractiveAnnotation` as the napari
    widget (see :func:`segment_into`). ``window`` None windows each slice by its own
    0.5-99.5 percentile range. ``store``: precomputed embeddings read before the
    encoder runs (``hrmedsegsam embed``).
    """
    from hrmedsegsam.interactive import InteractiveAnnotation

    vol = np.asarray(volume_zyx)
    for p in prompts:
        p.check_against(vol.shape)
    ann = InteractiveAnnotation(
        vol, window, predictor, labels=np.zeros(vol.shape, dtype=np.uint16), store=store
    )
    results = segment_into(ann, prompts, propagate_3d, log)
    if log is not None and ann.store_source is not None:
        log(
            f"store: {ann.store_source.hits} slice embeddings read from {ann.store_source.store.path}"
        )
    return ann.labels, results


def segment_into(
    ann: InteractiveAnnotation,
    prompts: Sequence[ObjectPrompt],
    propagate_3d: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[ObjectResult]:
    """Add each prompt's object to the annotation ``ann`` (its predictor must be set).

    Each prompt is set on its slice, predicted, and accepted (or propagated through the
    volume with ``propagate_3d``, then committed) under the prompt's ``label`` and
    ``name``. Objects are painted in the given order; where two overlap, the later one
    wins; a label that is already there (an earlier prompt, or an object of a reopened
    session) grows by the new mask.
    """
    vol = ann.image
    for p in prompts:
        p.check_against(vol.shape)
    results: list[ObjectResult] = []
    for p in prompts:
        ann.next_object()
        ann.forget_predictions()  # objects of a prompt file are independent: no feedback logits
        if p.box is not None:
            ann.set_box(p.slice, *p.box)
        for (x, y), positive in zip(p.points, p.point_labels, strict=True):
            ann.add_point(p.slice, x, y, bool(positive))
        for stroke in p.strokes:
            add = ann.add_lasso if stroke.closed else ann.add_scribble
            add(p.slice, stroke.vertices, stroke.positive)
        pred = ann.predict(p.slice)
        if pred is None:  # e.g. its negative lassos enclose all of its positive ones
            raise PromptError(
                f"label {p.label}: the prompts on slice {p.slice} leave the model nothing to "
                "segment (do negative lassos enclose the positive ones?)"
            )
        mask3d = np.zeros(vol.shape, dtype=bool)
        if pred.mask.any():
            mask3d[p.slice] = pred.mask
            if propagate_3d:
                for step in ann.propagate(p.slice):
                    mask3d[step.z] = step.mask
            # a repeated label adds up; later objects win where they overlap
            ann.commit_volume(
                mask3d | (ann.labels.reshape(vol.shape) == p.label),
                label_id=p.label,
                overwrite=True,
                name=p.name,
            )
        zs = np.flatnonzero(mask3d.any(axis=(1, 2)))
        res = ObjectResult(
            p.label,
            int(mask3d.sum()),
            (int(zs[0]), int(zs[-1])) if zs.size else (p.slice, p.slice),
            pred.score,
        )
        results.append(res)
        if log is not None:
            log(
                f"label {p.label}: {res.voxels} voxels on slices {res.slices[0]}..{res.slices[1]} "
                f"(predicted IoU {res.score:.2f})"
            )
    return results
