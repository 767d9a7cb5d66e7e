"""``train validate``: the selection rule, the slice choice and the teacher pseudo-references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hrmedsegsam.errors import InputError

torch = pytest.importorskip("torch")


def test_selection_rule() -> None:
    from hrmedsegsam.training.validate import selection_rule

    earlier = {"box": 0.84, "point": 0.81}
    assert selection_rule(earlier, {"box": 0.835, "point": 0.805})  # within the tolerance
    assert selection_rule(earlier, {"box": 0.90, "point": 0.90})
    assert not selection_rule(earlier, {"box": 0.82, "point": 0.85})  # box more than 0.01 below
    assert not selection_rule(earlier, {"box": 0.86, "point": 0.79})  # point more than 0.01 below


def test_validation_never_touches_the_heldout_slices() -> None:
    from hrmedsegsam.training.validate import AGREEMENT_SLICES, FIRST_HELDOUT_SLICE, LABELLED_SLICES

    assert max(LABELLED_SLICES) < FIRST_HELDOUT_SLICE
    assert max(AGREEMENT_SLICES) < FIRST_HELDOUT_SLICE


def test_evaluate_rejects_slices_outside_the_volume(shared_data: Path) -> None:
    from hrmedsegsam.training.evaluate import evaluate

    folder = shared_data / "ct_body_3mm"
    with pytest.raises(InputError, match="slice indices"):
        evaluate(folder / "image.nii.gz", folder / "labels_spine.nii.gz", models=("hrmedsegsam",),
                 slices=[0, 500], progress=False)


def test_agreement_objects_are_teacher_masks_inside_their_boxes(shared_data: Path) -> None:
    from hrmedsegsam.io import read_volume
    from hrmedsegsam.training.validate import agreement_objects

    torch.set_num_threads(1)
    vol = read_volume(shared_data / "ct_body_3mm" / "image.nii.gz").array
    objs = agreement_objects(vol, [60], seed=0)
    assert objs, "LiteMedSAM should accept some region boxes on an abdominal slice"
    for z, (x0, y0, x1, y1), m in objs:
        assert z == 60 and m.shape == vol.shape[1:] and m.dtype == bool
        assert 40 <= m.sum() <= 0.6 * m.size
        ys, xs = np.nonzero(m)
        # SAM-family answers to a box stay (nearly) inside it.
        inside = ((xs >= x0 - 2) & (xs <= x1 + 2) & (ys >= y0 - 2) & (ys <= y1 + 2)).mean()
        assert inside > 0.95
    again = agreement_objects(vol, [60], seed=0)
    assert [o[1] for o in again] == [o[1] for o in objs]  # seeded: the same boxes every run


def test_validate_cli_rejects_missing_weights(tmp_path: Path) -> None:
    from hrmedsegsam.cli import main

    assert main(["train", "validate", "--models", str(tmp_path / "nope.pt")]) != 0
