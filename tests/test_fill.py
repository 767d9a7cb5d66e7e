"""Fill between key slices: hrmedsegsam.fill and InteractiveAnnotation.fill_between.

Headless: the box-threshold model of conftest (known masks) for the bookkeeping, and the
shipped weights on a real CT volume for the quality (skipped without the data).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_interactive import WINDOW, two_objects

from hrmedsegsam.errors import PromptError
from hrmedsegsam.fill import interpolate
from hrmedsegsam.interactive import InteractiveAnnotation
from hrmedsegsam.masks import dice
from hrmedsegsam.predictor import Predictor


def test_interpolation_morphs_one_key_mask_into_the_other() -> None:
    yy, xx = np.mgrid[:40, :40]
    small = (yy - 20) ** 2 + (xx - 20) ** 2 <= 5**2
    large = (yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2
    assert np.array_equal(interpolate(small, large, 0.0), small)
    assert np.array_equal(interpolate(small, large, 1.0), large)
    middle = interpolate(small, large, 0.5)
    assert small.sum() < middle.sum() < large.sum() and (middle >= small).all()
    assert abs(middle.sum() - np.pi * 10**2) < 0.1 * np.pi * 10**2  # radius half-way


def test_fill_between_the_prompted_slices_of_the_current_object(box_threshold_model) -> None:
    vol, a, b = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, Predictor(box_threshold_model, torch.device("cpu")))
    for z in (4, 11):  # the top and bottom of A
        ann.set_box(z, 5, 7, 22, 20)
        ann.predict(z)
    run = ann.fill_between()
    zs = [step.z for step in run]
    assert zs == [5, 10, 6, 9, 7, 8] and run.finished and run.done == run.total == 6
    label = ann.commit_propagation(run)
    assert np.array_equal(ann.labels == label, a)
    assert run.describe() == "8 slice(s) (4..11)"


def test_fill_never_changes_the_accepted_key_slices(box_threshold_model) -> None:
    vol, a, b = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, Predictor(box_threshold_model, torch.device("cpu")))
    keys = np.zeros_like(a)
    keys[[4, 8, 11]] = a[[4, 8, 11]]
    keys[4, 8:11, 6:10] = False  # the user trimmed a corner on slice 4 by hand
    label = ann.commit_volume(keys, name="A")
    before = ann.labels.copy()
    run = ann.fill_between(label)
    assert sorted(step.z for step in run) == [5, 6, 7, 9, 10]  # both gaps
    ann.commit_propagation(run, label_id=label)
    for z in (4, 8, 11):
        assert np.array_equal(ann.labels[z], before[z])
    assert np.array_equal((ann.labels == label)[5:8], a[5:8])
    with pytest.raises(PromptError, match="two slices with slices between them"):
        ann.next_object()
        ann.set_box(2, 33, 21, 47, 35)
        ann.predict(2)
        ann.fill_between()
    with pytest.raises(PromptError, match="no object with id 9"):
        ann.fill_between(9)


def test_fill_target_and_title_say_which_object_and_slices(box_threshold_model) -> None:
    vol, a, b = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, Predictor(box_threshold_model, torch.device("cpu")))
    keys = np.zeros_like(a)
    keys[[4, 8, 11]] = a[[4, 8, 11]]
    label = ann.commit_volume(keys, name="A")
    with pytest.raises(PromptError, match="prompt the object on two slices"):
        ann.fill_target(None)  # nothing prompted, nothing selected
    assert ann.fill_target(label) == label  # the selected object's gaps
    assert ann.fill_between(label).title("A") == "Filling A between key slices 4, 8 and 11"
    for z in (4, 11):
        ann.set_box(z, 5, 7, 22, 20)
        ann.predict(z)
    assert ann.fill_target(label) is None  # the object being edited comes first
    assert ann.fill_between().title() == "Filling the object between slices 4 and 11"
    assert ann.propagate(4).title("A") == "Propagating A from slice 4"


@pytest.mark.parametrize(
    ("label", "z0", "z1", "least"),
    [
        # round 14 weights; round 13 gave 0.925 and 0.890, round 12 0.872 and 0.883, round 11
        # 0.907 and 0.868, round 10 0.793 and 0.912, round 5 0.885 and 0.913 (the blend alone:
        # 0.888, 0.914). These 8x-magnified 3 mm crops are no longer in the training frames
        # (weights/MODEL_CARD.md).
        (5, 10, 18, 0.85),  # liver, 24 mm apart: measured 0.899
        (1, 12, 20, 0.85),  # spleen, 24 mm apart: measured 0.900
    ],
)
def test_fill_between_on_a_real_ct_with_the_shipped_weights(
    shared_data, repo_root, label, z0, z1, least
) -> None:
    """Two organs of ct_thorax_small (training data, not a held-out case) between key slices
    8 apart: Dice over the 7 filled slices at least the measured value less 0.05, and the
    key slices exactly as accepted.
    """
    import SimpleITK as sitk

    if not (repo_root / "weights" / "hrmedsegsam.pt").is_file():
        pytest.skip("the shipped weights are not here")
    from hrmedsegsam import load_model

    case = shared_data / "ct_thorax_small"
    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "image.nii.gz")))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "labels.nii.gz"))) == label
    ann = InteractiveAnnotation(vol, WINDOW, Predictor(load_model("hrmedsegsam")))
    keys = np.zeros_like(ref)
    keys[[z0, z1]] = ref[[z0, z1]]
    got_id = ann.commit_volume(keys)
    run = ann.fill_between(got_id)
    assert [step.z for step in run][:2] == [z0 + 1, z1 - 1]  # from both ends inwards
    ann.commit_propagation(run, label_id=got_id)
    got = ann.labels[z0 + 1 : z1] == got_id
    assert dice(got, ref[z0 + 1 : z1]) >= least
    assert np.array_equal(ann.labels[[z0, z1]] == got_id, ref[[z0, z1]])
