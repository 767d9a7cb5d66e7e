"""hrmedsegsam.prompts: the one bounds rule every prompt goes through."""

from __future__ import annotations

import math

import pytest

from hrmedsegsam.errors import PromptError
from hrmedsegsam.prompts import check_box, check_point, inside_slice


def test_a_slice_spans_half_a_pixel_past_the_outer_centres() -> None:
    hw = (10, 20)  # H rows, W columns
    assert inside_slice(-0.5, -0.5, hw) and inside_slice(19.5, 9.5, hw)
    assert not inside_slice(19.6, 5, hw) and not inside_slice(5, 9.6, hw)
    assert not inside_slice(math.nan, 1, hw)
    with pytest.raises(PromptError, match=r"outside the 20x10 slice"):
        check_point(25, 1, hw)


def test_box_corners_are_sorted_checked_and_non_empty() -> None:
    assert check_box([8, 9, 2, 1], (10, 20)) == (2.0, 1.0, 8.0, 9.0)
    with pytest.raises(PromptError, match="outside"):
        check_box([0, 0, 25, 5], (10, 20))
    with pytest.raises(PromptError, match="empty"):
        check_box([3, 3, 3.5, 8], (10, 20))
    with pytest.raises(PromptError, match="4 numbers"):
        check_box([1, 2, 3], (10, 20))
