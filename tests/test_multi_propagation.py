"""Propagating every (or the selected) accepted object in one run (InteractiveAnnotation).

The box-threshold model of conftest (the real PromptableModel interface: everything
bright inside the prompt box) makes every mask known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_interactive import WINDOW, two_objects

from hrmedsegsam.errors import PromptError
from hrmedsegsam.interactive import InteractiveAnnotation
from hrmedsegsam.predictor import Predictor


@pytest.fixture
def ann(box_threshold_model: torch.nn.Module) -> InteractiveAnnotation:
    """A (slices 4..11) accepted on slice 8 only, B (every slice) on slices 2..3 only."""
    vol, a, b = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, Predictor(box_threshold_model, torch.device("cpu")))
    ann.set_box(8, 5, 7, 22, 20)
    ann.predict(8)
    assert ann.accept(name="A") == 1
    part = np.zeros_like(b)
    part[2:4] = b[2:4]
    assert ann.commit_volume(part, name="B") == 2
    return ann


def test_all_objects_are_extended_in_one_run_with_progress(ann: InteractiveAnnotation) -> None:
    vol, a, b = two_objects()
    ann.add_point(0, 10, 10)  # an object being edited meanwhile is left alone
    run = ann.propagate_objects()
    steps = list(run)
    seen = [(s.label_id, s.step.z, s.done, s.total) for s in steps]
    assert steps[0].title("A") == "Propagating A (1 of 2)"
    assert steps[-1].title("B") == "Propagating B (2 of 2)"
    assert run.finished and run.done == run.total == 7 + 8 + 12 + 2
    assert [d for _, _, d, _ in seen] == sorted(d for _, _, d, _ in seen)  # progress only grows
    assert {z for lid, z, _, _ in seen if lid == 1} == set(range(4, 12)) - {8}
    assert {z for lid, z, _, _ in seen if lid == 2} == set(range(16)) - {2, 3}
    assert "A: slices 4..11 (up: slice 12" in run.describe(ann.session.name_of)
    assert ann.commit_objects(run) == [1, 2]
    assert np.array_equal(ann.labels == 1, a) and np.array_equal(ann.labels == 2, b)
    assert len(ann.state.points) == 1  # the prompts of the object being edited survive
    entry, _ = ann.undo()  # one undo step per object
    assert entry is not None and entry.description == "propagate B"
    assert np.array_equal(ann.labels == 2, np.isin(np.arange(16), [2, 3])[:, None, None] & b)
    assert np.array_equal(ann.labels == 1, a)


def test_selected_objects_only_and_a_cancel_keeps_what_was_found(
    ann: InteractiveAnnotation,
) -> None:
    vol, a, b = two_objects()
    run = ann.propagate_objects([2])
    first = [next(run).step.z for _ in range(3)]  # up from slice 3: 4, 5, 6
    run.close()
    assert first == [4, 5, 6] and not run.finished and "cancelled" in run.describe()
    assert ann.commit_objects(run) == [2]
    assert sorted(np.flatnonzero((ann.labels == 2).any(axis=(1, 2)))) == [2, 3, 4, 5, 6]
    assert (ann.labels == 1).sum() == a[8].sum()  # A was not selected
    with pytest.raises(PromptError, match="no object with id 7"):
        ann.propagate_objects([7])
    ann.session.delete_object(1)
    ann.session.delete_object(2)
    with pytest.raises(PromptError, match="no accepted object"):
        ann.propagate_objects()
