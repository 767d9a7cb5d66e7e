"""Prompt-supported components and corrective-click merging: alone, and through the Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrmedsegsam.errors import PromptError
from hrmedsegsam.predictor import Predictor
from hrmedsegsam.prompt_support import accept_click, supported_mask


def _discs(hw: tuple[int, int] = (120, 160)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two disjoint discs A (centre x=40, y=60) and B (centre x=120, y=60), radius 15."""
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    a = (xx - 40) ** 2 + (yy - 60) ** 2 <= 15**2
    b = (xx - 120) ** 2 + (yy - 60) ** 2 <= 15**2
    return a, b, a | b


def test_a_positive_point_keeps_only_its_component() -> None:
    a, b, both = _discs()
    assert np.array_equal(supported_mask(both, points=[[40, 60]]), a)
    assert np.array_equal(supported_mask(both, points=[[120, 60]], labels=[1]), b)
    assert np.array_equal(supported_mask(both, points=[[40, 60], [120, 60]]), both)


def test_a_box_drops_components_outside_it_only() -> None:
    a, b, both = _discs()
    assert np.array_equal(supported_mask(both, box=[20, 40, 60, 80]), a)
    # A component partly inside the box stays whole.
    assert np.array_equal(supported_mask(both, box=[20, 40, 110, 80]), both)


def test_a_negative_point_drops_an_unsupported_island_but_never_the_object() -> None:
    a, b, both = _discs()
    # Box on A (the box's main component), negative click on the island B inside the box.
    box = [20, 40, 140, 80]
    assert np.array_equal(supported_mask(both, box=box, points=[[120, 60]], labels=[0]), a)
    # Negative click on the main component itself: the decoder's answer stands.
    assert np.array_equal(supported_mask(both, box=box, points=[[40, 60]], labels=[0]), both)
    # Positive and negative on the same component: kept.
    kept = supported_mask(both, points=[[40, 60], [45, 60], [120, 60]], labels=[1, 0, 0])
    assert np.array_equal(kept, a)


def test_the_filter_never_empties_a_mask() -> None:
    a, _, both = _discs()
    # The click misses every component: nothing supports a choice, so nothing is removed.
    assert np.array_equal(supported_mask(both, points=[[80, 10]]), both)
    assert np.array_equal(supported_mask(a, points=[[40, 60]], labels=[0]), a)
    assert not supported_mask(np.zeros((5, 5), bool), points=[[2, 2]]).any()


def test_predictor_drops_the_unclicked_disc_and_its_feedback_logits(box_threshold_model) -> None:
    """The box-threshold model answers a point with every bright pixel: both discs."""
    a, b, both = _discs()
    img = both.astype(np.float32)
    raw = Predictor(box_threshold_model, torch.device("cpu"), keep_supported=False)
    sup = Predictor(box_threshold_model, torch.device("cpu"))
    raw.set_image(img, window=(0, 1))
    sup.set_image(img, window=(0, 1))
    r = raw.predict(points=[[40, 60]], labels=[1])
    s = sup.predict(points=[[40, 60]], labels=[1])
    assert np.array_equal(r.mask, both)
    assert np.array_equal(s.mask, a)
    assert s.mask.shape == a.shape and s.masks.shape == (1, *a.shape)
    # Feedback logits: B's pixels (native centre (120, 60)) are now surely outside; A's stay.
    fb_a = sup.mask_to_logits(a)
    L = s.logits.shape[0]
    scale = L / 1024 * (1024 / max(a.shape))
    bx, by = int(120 * scale), int(60 * scale)
    ax, ay = int(40 * scale), int(60 * scale)
    assert r.logits[by, bx] > 0 and s.logits[by, bx] < 0
    assert s.logits[ay, ax] > 0 and fb_a[ay, ax] > 0


def test_accept_click_is_monotone() -> None:
    a, b, both = _discs()
    assert np.array_equal(accept_click(a, b, positive=True), both)
    assert np.array_equal(accept_click(both, a, positive=False), a)
    # A negative click never adds, a positive one never removes.
    assert np.array_equal(accept_click(a, both, positive=False), a)
    assert np.array_equal(accept_click(both, a, positive=True), both)


def test_predictor_refine_merges_the_click_with_the_previous_mask(box_threshold_model) -> None:
    """The box-threshold model answers with the bright pixels in the box (disc A); the
    previous mask held disc B too. A negative click keeps only what both agree on; a positive
    one keeps both; the returned logits describe the merged mask.
    """
    a, b, both = _discs()
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    pred.set_image(both.astype(np.float32), window=(0, 1))
    box = [20, 40, 60, 80]
    prev = pred.predict(box=[20, 40, 140, 80])
    assert np.array_equal(prev.mask, both)
    neg = pred.refine(prev, [[120, 60]], [0], box=box)
    assert np.array_equal(neg.mask, a)
    pos = pred.refine(prev, [[40, 60]], [1], box=box)
    assert np.array_equal(pos.mask, both) and np.array_equal(pos.masks[0], both)
    np.testing.assert_array_equal(pos.logits, pred.mask_to_logits(both))
    with pytest.raises(PromptError):
        pred.refine(prev, [], [], box=box)
