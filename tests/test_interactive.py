"""hrmedsegsam.interactive: the headless annotation core, driven without any display.

The model is the deterministic box-threshold model of conftest (the real PromptableModel
interface: everything bright inside the prompt box is the object), so every mask below is
known exactly; encoder calls are counted on the model itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hrmedsegsam.errors import PromptError
from hrmedsegsam.interactive import InteractiveAnnotation, PredictionRequest
from hrmedsegsam.io import Volume, read_volume
from hrmedsegsam.predictor import Predictor

WINDOW = (-160.0, 240.0)
Counted = tuple[Predictor, list[int]]  # a Predictor and the batch sizes its encoder was called with


def two_objects(Z: int = 16, H: int = 40, W: int = 56) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright box-shaped object A (slices 4..11) and a bright disk B (every slice)."""
    vol = np.full((Z, H, W), -500, np.int16)
    a = np.zeros((Z, H, W), bool)
    a[4:12, 8:20, 6:22] = True
    yy, xx = np.mgrid[:H, :W]
    b = np.broadcast_to((yy - 28) ** 2 + (xx - 40) ** 2 <= 36, (Z, H, W)).copy()
    vol[a | b] = 200
    return vol, a, b


@pytest.fixture
def counted(box_threshold_model: torch.nn.Module) -> Counted:
    """A Predictor over the box-threshold model, and the list of encoder batch sizes."""
    calls: list[int] = []
    encode = box_threshold_model.encode

    def counting(images: torch.Tensor) -> torch.Tensor:
        calls.append(int(images.shape[0]))
        return encode(images)

    box_threshold_model.encode = counting
    return Predictor(box_threshold_model, torch.device("cpu")), calls


def test_prompt_preview_accept_undo_redo_export(counted: Counted, tmp_path: Path) -> None:
    predictor, _ = counted
    vol, a, b = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    assert ann.set_box(8, 5, 7, 22, 20) == [8]
    pred = ann.predict(8)
    assert pred is not None and np.array_equal(ann.preview3d[8].astype(bool), a[8])
    first = ann.accept()
    assert first == 1 and np.array_equal(ann.labels[8] == 1, a[8]) and not ann.preview.any()

    # second object: a point then a box on another slice
    ann.add_point(2, 40, 28)
    ann.set_box(2, 33, 21, 47, 35)
    ann.predict(2)
    second = ann.accept()
    assert second == 2 and np.array_equal(ann.labels[2] == 2, b[2])
    assert [o.id for o in ann.session.objects()] == [1, 2]

    entry, _ = ann.undo()
    assert entry is not None and not (ann.labels == 2).any() and (ann.labels == 1).any()
    entry, _ = ann.redo()
    assert entry is not None and np.array_equal(ann.labels[2] == 2, b[2])

    like = Volume(vol, spacing=(0.8, 0.8, 2.5))
    out = ann.export(tmp_path / "labels.nii.gz", like)
    back = read_volume(out)
    assert np.array_equal(back.array, ann.labels) and back.spacing == pytest.approx((0.8, 0.8, 2.5))


def test_points_refine_with_the_previous_logits_and_cached_predictions(counted: Counted) -> None:
    predictor, _ = counted
    vol, a, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    ann.set_box(6, 5, 7, 22, 20)
    first = ann.predict(6)
    ann.add_point(6, 12, 12)
    req = ann.request(6)
    assert isinstance(req, PredictionRequest) and first is not None
    np.testing.assert_array_equal(req.kwargs["mask_input"], first.logits)
    assert req.previous is first  # one click on a shown prediction: Predictor.refine
    ann.show(req, ann.compute(req))
    # Two clicks before any prediction: the logits still feed back, but no click is "the new
    # one" to merge.
    ann.add_point(6, 14, 12)
    ann.add_point(6, 16, 12, positive=False)
    req2 = ann.request(6)
    assert isinstance(req2, PredictionRequest) and req2.previous is None
    assert "mask_input" in req2.kwargs
    ann.undo()
    ann.undo()
    ann.undo()  # back to the box alone: its prediction is kept, nothing is computed
    assert ann.request(6) is first


def test_a_stale_result_is_kept_but_not_shown(counted: Counted) -> None:
    predictor, _ = counted
    vol, _, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    ann.set_box(6, 5, 7, 22, 20)
    req = ann.request(6)
    assert isinstance(req, PredictionRequest)
    pred = ann.compute(req)  # meanwhile the user moves the box
    ann.set_box(6, 0, 0, 3, 3)
    assert not ann.show(req, pred) and not ann.preview.any()


def test_propagation_after_prefetch_encodes_no_prefetched_slice(counted: Counted) -> None:
    predictor, calls = counted
    vol, a, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    todo = ann.prefetch_requests(8, radius=16)
    assert todo[:3] == [8, 9, 7] and sorted(todo) == list(range(16))
    for z in todo:
        ann.embed(z)
    assert len(calls) == 16 and ann.prefetch_requests(8, radius=16) == []

    ann.set_box(8, 5, 7, 22, 20)
    ann.predict(8)
    steps = list(ann.propagate(8))
    assert len(calls) == 16, "propagation re-encoded prefetched slices"
    assert sorted(s.z for s in steps) == [4, 5, 6, 7, 9, 10, 11]
    assert all(np.array_equal(s.mask, a[s.z]) for s in steps)
    assert steps[-1].done <= steps[-1].total == 15

    mask3d = np.zeros(vol.shape, bool)
    mask3d[8] = ann.preview3d[8].astype(bool)
    for s in steps:
        mask3d[s.z] = s.mask
    label = ann.commit_volume(mask3d)
    assert np.array_equal(ann.labels == label, a)
    ann.undo()
    assert not ann.labels.any()


def test_propagation_is_cancelled_by_not_iterating(counted: Counted) -> None:
    predictor, calls = counted
    vol, _, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    ann.set_box(8, 5, 7, 22, 20)
    ann.predict(8)
    steps = ann.propagate(8)
    first = next(steps)
    steps.close()
    assert first.z == 9 and len(calls) == 2  # slice 8 and slice 9, nothing further


def test_reopen_refines_the_committed_object(counted: Counted) -> None:
    predictor, _ = counted
    vol, a, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    ann.set_box(8, 5, 7, 22, 20)
    ann.predict(8)
    label = ann.accept()
    assert ann.reopen(label) == [] and np.array_equal(ann.preview3d[8].astype(bool), a[8])
    ann.add_point(8, 10, 10)
    req = ann.request(8)
    assert isinstance(req, PredictionRequest) and req.kwargs["box"] == [5, 7, 22, 20]
    assert req.seed is not None and np.array_equal(req.seed, a[8])


def test_prompts_outside_the_image_and_empty_accepts_are_refused(counted: Counted) -> None:
    predictor, _ = counted
    ann = InteractiveAnnotation(np.zeros((30, 40), np.int16), WINDOW, predictor)
    with pytest.raises(PromptError, match="outside"):
        ann.add_point(0, 45, 5)
    with pytest.raises(PromptError, match="Nothing to accept"):
        ann.accept()
    with pytest.raises(PromptError, match="Nothing to propagate"):
        ann.propagate(0)


def test_without_a_window_each_slice_gets_its_own_percentile_window(counted: Counted) -> None:
    from hrmedsegsam.intensity import percentile_window

    predictor, calls = counted
    vol, a, _ = two_objects()
    vol[4:] += 1000  # the upper slices are brighter: their own window differs
    ann = InteractiveAnnotation(vol, None, predictor)
    assert ann.slice_window(8) == percentile_window(vol[8]) != ann.slice_window(2)
    ann.set_box(8, 5, 7, 22, 20)
    req = ann.request(8)
    assert isinstance(req, PredictionRequest) and req.window == percentile_window(vol[8])
    ann.show(req, ann.compute(req))
    assert np.array_equal(ann.preview3d[8].astype(bool), a[8]) and ann.is_embedded(8)
    run = ann.propagate(8)
    steps = list(run)
    assert sorted(s.z for s in steps) == [4, 5, 6, 7, 9, 10, 11] and run.finished
    assert len(calls) == 1 + 4 + 5  # slice 8 once (propagation reuses it), then 9..12 and 7..3


def test_new_labels_keep_the_embeddings(counted: Counted) -> None:
    predictor, calls = counted
    vol, _, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    for z in (2, 3):
        ann.embed(z)
    ann.add_point(2, 40, 28)
    ann.predict(2)
    loaded = np.zeros(vol.shape, np.uint8)
    loaded[5, 1:4, 1:4] = 7
    ann.set_labels(loaded, (2.0, 1.0, 1.0))
    assert ann.session.labels is loaded and [o.id for o in ann.session.objects()] == [7]
    assert ann.state.is_empty() and not ann.preview.any()
    assert ann.is_embedded(2) and ann.is_embedded(3) and ann.prefetch_requests(2, 1) == [1]
    ann.add_point(3, 40, 28)
    ann.predict(3)
    assert len(calls) == 2 and ann.accept() == 8  # nothing re-encoded; next free id


def test_changing_the_window_repredicts_the_prompted_slices(counted: Counted) -> None:
    predictor, _ = counted
    vol, _, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    ann.set_box(8, 5, 7, 22, 20)
    ann.add_point(3, 40, 28)
    assert ann.set_window(WINDOW) == [] and ann.set_window((-1000, 1000)) == [3, 8]
    assert not ann.is_embedded(8)
    assert ann.preset_window("bone") == (-500.0, 1300.0)
    lo, hi = ann.preset_window("percentile")
    assert lo == -500.0 and hi == 200.0


def test_propagation_reports_where_and_why_it_stopped(counted: Counted) -> None:
    predictor, _ = counted
    vol, a, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    ann.set_box(8, 5, 7, 22, 20)
    ann.predict(8)
    run = ann.propagate(8)
    for _ in run:
        pass
    assert [(s.direction, s.z) for s in run.stops] == [(1, 12), (-1, 3)]
    assert all(s.reason == "predicted IoU 0.05 < 0.5" for s in run.stops)  # the object ended
    assert run.describe() == (
        "8 slice(s) (4..11); stopped up: slice 12, predicted IoU 0.05 < 0.5; down: slice 3, predicted IoU 0.05 < 0.5"
    )
    label = ann.commit_propagation(run, name="spleen", color=(1, 2, 3))
    assert np.array_equal(ann.labels == label, a)
    assert ann.session.name_of(label) == "spleen" and ann.session.info_of(label).color == (1, 2, 3)

    ann.set_box(2, 33, 21, 47, 35)  # disk B is on every slice: both edges are reached
    ann.predict(2)
    run = ann.propagate(2)
    next(run)
    run.close()
    assert not run.finished and run.describe() == "2 slice(s) (2..3); cancelled"


def test_a_low_confidence_prediction_is_flagged(counted: Counted) -> None:
    from hrmedsegsam.predictor import Prediction

    predictor, _ = counted
    vol, _, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    ann.set_box(8, 5, 7, 22, 20)
    good = ann.predict(8)
    assert good is not None and "low confidence" not in ann.describe(8, good)
    mask = np.zeros(vol.shape[1:], bool)
    mask[:30, :40] = True  # a click in air: a big mask at a low predicted IoU
    weak = Prediction(mask, 0.31, good.logits, mask[None], np.array([0.31]))
    text = ann.describe(8, weak)
    assert "IoU 0.31" in text and "low confidence" in text and "1200 px" in text
    assert "nothing" in ann.describe(
        8, Prediction(~mask & False, 0.9, good.logits, mask[None], np.array([0.9]))
    )


def test_a_new_object_keeps_accepted_voxels_unless_told_to_overwrite(counted: Counted) -> None:
    predictor, _ = counted
    vol, a, _ = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    ann.set_box(8, 5, 7, 22, 20)
    ann.predict(8)
    first = ann.accept()
    ann.set_box(8, 0, 0, 55, 39)  # a leaky object over the whole slice, A included
    ann.predict(8)
    second = ann.accept()
    assert np.array_equal(ann.labels[8] == first, a[8]) and ann.kept == a[8].sum()
    assert f"{a[8].sum()} voxel(s) of other objects were kept" in ann.kept_note()
    ann.undo()
    ann.set_box(8, 0, 0, 55, 39)
    ann.predict(8)
    assert ann.accept(label_id=second, overwrite=True) == second
    assert not (ann.labels == first).any() and ann.kept == 0 and ann.kept_note() == ""


def test_keep_largest_removes_islands_of_the_preview_and_of_an_object(counted: Counted) -> None:
    predictor, _ = counted
    vol, a, b = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    ann.set_box(8, 0, 0, 55, 39)  # A and B on slice 8: two components, A is larger
    ann.predict(8)
    assert np.array_equal(ann.preview3d[8].astype(bool), a[8] | b[8])
    assert ann.keep_largest() == [] and np.array_equal(ann.preview3d[8].astype(bool), a[8])
    ann.next_object()
    both = np.zeros(vol.shape, bool)
    both[4:12] = (a | b)[4:12]
    label = ann.commit_volume(both)
    assert ann.keep_largest(label) == list(range(4, 12))
    assert np.array_equal(ann.labels == label, a)  # B's disk on those slices was the island
    ann.undo()
    assert np.array_equal(ann.labels == label, both)


def test_lasso_and_scribble_prompts_mix_with_points_undo_redo_and_propagate(
    counted: Counted,
) -> None:
    from hrmedsegsam.scribble import SCRIBBLE_POINTS

    predictor, _ = counted
    vol, a, b = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    # a lasso drawn loosely around A (rows 8..19, columns 6..21) on slice 8: A exactly
    around = [[3, 4], [25, 3], [26, 23], [2, 24]]
    assert ann.add_lasso(8, around) == [8]
    req = ann.request(8)
    assert isinstance(req, PredictionRequest) and list(req.kwargs) == ["box"]
    x0, y0, x1, y1 = req.kwargs["box"]  # the box of the lasso's pixels, one pixel wider
    assert (1 <= x0 < 6 and 2 <= y0 < 8) and (21 < x1 <= 27 and 19 < y1 <= 25)
    ann.show(req, ann.compute(req))
    assert np.array_equal(ann.preview3d[8].astype(bool), a[8])
    # a negative lasso over A's left part (columns < 12) takes it out of the mask
    ann.add_lasso(8, [[0, 0], [11.6, 0], [11.6, 39], [0, 39]], positive=False)
    ann.predict(8)
    expected = a[8].copy()
    expected[:, :12] = False
    assert np.array_equal(ann.preview3d[8].astype(bool), expected)
    # undo brings back the lasso alone (its prediction is kept), redo the cut
    entry, slices = ann.undo()
    assert entry is not None and entry.description == "lasso" and slices == [8]
    assert ann.predict(8) is not None and np.array_equal(ann.preview3d[8].astype(bool), a[8])
    ann.redo()
    ann.predict(8)
    assert np.array_equal(ann.preview3d[8].astype(bool), expected)
    ann.undo()
    ann.predict(8)
    # propagation follows what the lasso gave, through A's slices
    run = ann.propagate(8)
    list(run)
    assert run.slices().tolist() == list(range(4, 12))
    label = ann.commit_propagation(run)
    assert np.array_equal(ann.labels == label, a)

    # a new object: a positive scribble across B on slice 2, then a point too
    ann.add_scribble(2, [[34, 28], [46, 28]])
    req = ann.request(2)
    assert isinstance(req, PredictionRequest)
    pts = np.array(req.kwargs["points"])
    assert 1 <= len(pts) <= SCRIBBLE_POINTS and req.kwargs["labels"] == [1] * len(pts)
    assert (pts[:, 0] > 34).all() and (pts[:, 0] < 46).all() and (pts[:, 1] == 28).all()
    ann.add_point(2, 40, 30)
    ann.set_box(2, 33, 21, 47, 35)
    req = ann.request(2)
    assert isinstance(req, PredictionRequest)
    assert req.kwargs["points"][0] == [40.0, 30.0] and len(req.kwargs["points"]) == len(pts) + 1
    assert req.kwargs["box"] == [33, 21, 47, 35]
    ann.show(req, ann.compute(req))
    assert np.array_equal(ann.preview3d[2].astype(bool), b[2])
    second = ann.accept()
    assert np.array_equal(ann.labels[2] == second, b[2])
    kinds = [s.kind for s in ann.session.info_of(second).prompts.strokes]
    assert kinds == ["scribble"]  # kept with the object, for reopening and sessions


def test_strokes_off_the_slice_are_clipped_or_refused_in_one_error(counted: Counted) -> None:
    predictor, _ = counted
    vol, a, b = two_objects()
    ann = InteractiveAnnotation(vol, WINDOW, predictor)
    with pytest.raises(PromptError, match="entirely outside the 56x40 slice"):
        ann.add_scribble(2, [[-30, 5], [-10, 50]])
    with pytest.raises(PromptError, match="encloses no pixel of the 56x40 slice"):
        ann.add_lasso(2, [[60, 0], [90, 0], [90, 30]])
    with pytest.raises(PromptError, match="outside the volume"):
        ann.add_scribble(16, [[3, 3], [9, 9]])
    assert ann.state.is_empty() and not ann.session.can_undo  # nothing was recorded
    # a scribble leaving the slice on the right: only its part on the slice gives points
    ann.add_scribble(2, [[36, 28], [200, 28]])
    req = ann.request(2)
    assert isinstance(req, PredictionRequest)
    assert all(0 <= x <= 55.5 for x, _ in req.kwargs["points"])
    # a lasso running off the top left: its pixels on the slice frame the object
    ann.next_object()
    ann.add_lasso(8, [[-20, -20], [25, -20], [25, 22], [-20, 22]])
    ann.predict(8)
    assert np.array_equal(ann.preview3d[8].astype(bool), a[8])
