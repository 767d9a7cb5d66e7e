"""hrmedsegsam.scribble: strokes on a slice and the model prompts they become."""

from __future__ import annotations

import numpy as np
import pytest

from hrmedsegsam.errors import PromptError
from hrmedsegsam.scribble import (
    SCRIBBLE_POINTS,
    SCRIBBLE_SPACING,
    check_stroke,
    polygon_mask,
    sample_scribble,
    stroke_prompts,
)


def test_polygon_mask_takes_the_pixel_centres_inside() -> None:
    square = np.array([[2.5, 3.5], [7.5, 3.5], [7.5, 8.5], [2.5, 8.5]])  # (x, y)
    mask = polygon_mask(square, (12, 10))
    expected = np.zeros((12, 10), bool)
    expected[4:9, 3:8] = True  # rows 4..8, columns 3..7
    np.testing.assert_array_equal(mask, expected)
    # a triangle: about half its box; the same polygon drawn backwards gives the same mask
    tri = np.array([[0.0, 0.0], [40.0, 0.0], [0.0, 40.0]])
    area = polygon_mask(tri, (50, 50)).sum()
    assert 0.9 * 800 < area < 1.1 * 800
    np.testing.assert_array_equal(polygon_mask(tri, (50, 50)), polygon_mask(tri[::-1], (50, 50)))
    # partly off the slice: only the slice's pixels; wholly off: nothing
    assert polygon_mask(square - 5, (12, 10)).sum() == 3 * 4
    assert not polygon_mask(square + 100, (12, 10)).any()


def test_a_scribble_becomes_a_few_spread_out_points_on_the_slice() -> None:
    line = np.array([[10.0, 20.0], [110.0, 20.0]])
    pts = sample_scribble(line, (64, 128))
    assert len(pts) == SCRIBBLE_POINTS
    gaps = np.diff(pts[:, 0])
    assert gaps.min() >= SCRIBBLE_SPACING and np.allclose(gaps, gaps[0], atol=0.6)
    assert pts[0, 0] > 10 and pts[-1, 0] < 110  # never on the very ends
    # a short scribble: fewer points; a dot: one
    assert len(sample_scribble(np.array([[10.0, 20.0], [22.0, 20.0]]), (64, 128))) == 1
    assert len(sample_scribble(np.array([[5.0, 5.0]]), (64, 128))) == 1
    # running off the slice: every point is on it
    off = np.array([[-40.0, 10.0], [60.0, 10.0], [60.0, 200.0]])
    pts = sample_scribble(off, (64, 128))
    assert len(pts) and (pts >= -0.5).all() and (pts[:, 1] <= 63.5).all()


def test_strokes_with_nothing_on_the_slice_are_one_clear_error() -> None:
    with pytest.raises(PromptError, match="entirely outside the 128x64 slice"):
        check_stroke([[-10, -10], [-5, -20]], (64, 128), closed=False)
    with pytest.raises(PromptError, match="encloses no pixel of the 128x64 slice"):
        check_stroke([[200, 10], [300, 10], [250, 40]], (64, 128), closed=True)
    with pytest.raises(PromptError, match="at least 3 vertices"):
        check_stroke([[1, 1], [5, 5]], (64, 128), closed=True)
    with pytest.raises(PromptError, match="finite"):
        check_stroke([[1, 1], [np.nan, 5]], (64, 128), closed=False)
    with pytest.raises(PromptError, match=r"\[x, y\]"):
        check_stroke([[1, 1, 1]], (64, 128), closed=False)
    v = check_stroke([[-10, 10], [20, 10]], (64, 128), closed=False)  # partly on: kept as drawn
    assert v.shape == (2, 2) and v[0, 0] == -10


def test_lassos_give_a_box_a_point_and_limits() -> None:
    hw = (60, 80)
    around = np.array([[10.0, 10.0], [40.0, 10.0], [40.0, 30.0], [10.0, 30.0]])
    cut = np.array([[30.0, 0.0], [79.0, 0.0], [79.0, 59.0], [30.0, 59.0]])
    sp = stroke_prompts([(around, True, True), (cut, False, True)], hw)
    assert sp.include is not None and sp.exclude is not None
    # the box frames the lasso's pixels that the negative lasso leaves
    assert sp.box == [9.0, 9.0, 30.0, 30.0]  # pixels 10..29 (centres on the far edges are out)
    assert len(sp.points) == 0  # lassos give the model no points
    full = np.ones(hw, bool)
    kept = sp.restrict(full)
    assert kept.sum() == (sp.include & ~sp.exclude).sum() and not kept[:, 30:].any()
    # with a drawn box the lassos give none; scribbles add points of their polarity
    sp = stroke_prompts(
        [(around, True, True), (np.array([[50.0, 50.0], [70.0, 50.0]]), False, False)],
        hw,
        has_box=True,
    )
    assert sp.box is None and sp.labels.tolist() == [0, 0]
