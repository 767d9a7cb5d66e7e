"""AnnotationSession: objects, commits, policies, undo/redo, user edits, memory cap."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hrmedsegsam.errors import HRMedSegSAMError, PromptError
from hrmedsegsam.session import AnnotationSession, Box, Point, PromptState


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture
def labels():
    return np.zeros((6, 32, 40), dtype=np.int32)


def test_no_heavy_imports():
    # the session is library code: it must not pull napari, Qt or torch
    import hrmedsegsam.session as s

    src = open(s.__file__, encoding="utf-8").read()
    for mod in ("napari", "qtpy", "PyQt", "torch", "magicgui"):
        assert f"import {mod}" not in src and f"from {mod}" not in src
    code = (
        "import sys, hrmedsegsam.session; "
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt6') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_commit_2d_uses_next_free_id_and_edits_in_place(labels):
    s = AnnotationSession(labels, spacing_zyx=(2.0, 0.5, 0.5))
    m = disk((32, 40), 10, 10, 4)
    assert s.commit(m, z=2) == 1
    assert s.labels is labels
    assert (labels[2] == 1).sum() == m.sum()
    assert labels[[0, 1, 3, 4, 5]].max() == 0
    assert s.commit(disk((32, 40), 20, 30, 3), z=2) == 2
    assert s.next_free_id() == 3
    objs = s.objects()
    assert [o.id for o in objs] == [1, 2]
    o1 = objs[0]
    assert o1.name == "object 1"
    assert (o1.z_min, o1.z_max, o1.slices) == (2, 2, 1)
    assert o1.voxels == m.sum()
    assert o1.volume_ml == pytest.approx(m.sum() * 2.0 * 0.5 * 0.5 / 1000.0)


def test_commit_clears_prompts_and_undo_restores_them(labels):
    s = AnnotationSession(labels)
    s.set_box(1, 2, 3, 10, 12)
    s.add_point(1, 5, 6, positive=False)
    before = s.state
    assert before.predict_kwargs(1) == {
        "box": [2.0, 3.0, 10.0, 12.0],
        "points": [[5.0, 6.0]],
        "labels": [0],
    }
    assert before.predict_kwargs(0) == {}
    s.commit(disk((32, 40), 8, 6, 3), z=1)
    assert s.state.is_empty()
    s.undo()
    assert s.state == before
    assert labels.max() == 0
    s.redo()
    assert s.state.is_empty()
    assert labels.max() == 1


def test_undo_redo_sequence(labels):
    s = AnnotationSession(labels)
    s.commit(disk((32, 40), 10, 10, 4), z=0)
    s.commit(disk((32, 40), 20, 30, 4), z=0)
    snap = labels.copy()
    s.undo()
    assert (labels == 2).sum() == 0 and (labels == 1).sum() > 0
    s.undo()
    assert labels.max() == 0
    assert s.undo() is None
    s.redo()
    s.redo()
    np.testing.assert_array_equal(labels, snap)
    assert s.redo() is None
    # a new step drops the redo stack
    s.undo()
    s.add_point(0, 3, 3)
    assert not s.can_redo


def test_keep_existing_vs_overwrite(labels):
    s = AnnotationSession(labels)
    a = disk((32, 40), 16, 14, 6)
    b = disk((32, 40), 16, 22, 6)
    s.commit(a, z=3)
    s.commit(b, z=3, overwrite=False)
    assert ((labels[3] == 1) == a).all()  # object 1 untouched
    assert ((labels[3] == 2) == (b & ~a)).all()
    s.undo()
    s.commit(b, z=3, overwrite=True)
    assert ((labels[3] == 2) == b).all()
    assert ((labels[3] == 1) == (a & ~b)).all()
    s.undo()
    assert ((labels[3] == 1) == a).all()


def test_chosen_id_and_name(labels):
    s = AnnotationSession(labels)
    assert s.commit(disk((32, 40), 10, 10, 3), z=0, label_id=7, name="liver") == 7
    assert s.objects()[0].name == "liver"
    assert s.next_free_id() == 8
    s.undo()
    assert s.name_of(7) == "object 7"
    with pytest.raises(PromptError):
        s.commit(disk((32, 40), 10, 10, 3), z=0, label_id=0)
    with pytest.raises(PromptError):
        s.commit(np.zeros((32, 40), bool), z=0)
    with pytest.raises(PromptError):
        s.commit(np.ones((31, 40), bool), z=0)


def test_brush_edits_survive_commits_and_undo(labels):
    s = AnnotationSession(labels)
    s.commit(disk((32, 40), 10, 10, 4), z=2)
    # the user paints object 1 bigger and paints a new object 5 by hand
    labels[2, 10, 15:18] = 1
    labels[4, 0:3, 0:3] = 5
    assert s.commit(disk((32, 40), 25, 30, 3), z=2) == 6  # next free id counts painted ones
    assert (labels[2, 10, 15:18] == 1).all()
    assert (labels[4, 0:3, 0:3] == 5).all()
    # erase part of object 6 by hand after its commit; undo must not resurrect, nor clobber
    labels[2, 25, 30] = 0
    labels[2, 24, 30] = 5  # painted over with another id
    s.undo()
    assert (labels == 6).sum() == 0
    assert labels[2, 24, 30] == 5  # user's later edit kept
    s.redo()
    assert labels[2, 24, 30] == 5
    assert labels[2, 25, 30] == 6  # redo re-applies where the value was still the old one
    assert (labels[2, 10, 15:18] == 1).all()


def test_reopen_and_refine_replaces_on_slice(labels):
    s = AnnotationSession(labels)
    big = disk((32, 40), 16, 20, 8)
    s.commit(big, z=1)
    s.commit(big, z=2, label_id=1)
    st = s.reopen(1)
    assert st.object_id == 1 and s.current_id == 1
    np.testing.assert_array_equal(s.slice_mask(1, 1), big)
    small = disk((32, 40), 16, 20, 4)
    assert s.commit(small, z=1) == 1  # default target: the reopened object
    assert ((labels[1] == 1) == small).all()
    assert ((labels[2] == 1) == big).all()  # other slice untouched
    assert s.current_id is None
    s.undo()
    assert s.current_id == 1
    assert ((labels[1] == 1) == big).all()
    with pytest.raises(PromptError):
        s.reopen(9)


def test_commit_3d_only_touches_covered_slices(labels):
    s = AnnotationSession(labels)
    s.commit(disk((32, 40), 16, 20, 5), z=0)  # object 1 on slice 0
    m3 = np.zeros(labels.shape, bool)
    m3[2:5] = disk((32, 40), 16, 20, 6)
    assert s.commit(m3, label_id=1) == 1
    assert (labels[0] == 1).sum() > 0  # slice 0 kept (not covered by the 3D mask)
    o = s.objects()[0]
    assert (o.z_min, o.z_max, o.slices) == (0, 4, 4)
    # explicit slices: clear the object on slice 4 by committing an empty mask there
    m3[4] = False
    s.commit(m3, label_id=1, slices=[2, 3, 4])
    assert (labels[4] == 1).sum() == 0
    s.undo()
    assert (labels[4] == 1).sum() > 0


def test_delete_object_is_undoable(labels):
    s = AnnotationSession(labels)
    s.commit(disk((32, 40), 16, 20, 5), z=0)
    s.delete_object(1)
    assert labels.max() == 0
    s.undo()
    assert (labels == 1).sum() > 0
    with pytest.raises(PromptError):
        s.delete_object(3)


def test_2d_labels_are_one_slice():
    lab = np.zeros((20, 30), np.uint16)
    s = AnnotationSession(lab, spacing_zyx=(0.2, 0.2))
    assert s.shape_zyx == (1, 20, 30)
    s.commit(disk((20, 30), 10, 10, 3))
    assert (lab == 1).sum() > 0
    o = s.objects()[0]
    assert o.slices == 1 and o.volume_ml == pytest.approx(o.voxels * 0.04 / 1000)
    s.undo()
    assert lab.max() == 0


def test_prompt_state_helpers():
    st = PromptState().with_box(Box.from_corners(3, 10, 12, 2, 4)).with_point(Point(3, 5, 6))
    st = st.with_box(Box.from_corners(3, 1, 1, 4, 4))  # replaces the box on slice 3
    assert len(st.boxes) == 1 and st.boxes[0].as_list() == [1, 1, 4, 4]
    assert st.slices() == [3]
    assert st.slice_key(3) != st.slice_key(2)
    assert not st.is_empty() and PromptState().is_empty()


def test_prompt_outside_image_raises(labels):
    s = AnnotationSession(labels)
    with pytest.raises(PromptError):
        s.add_point(0, 100, 3)
    with pytest.raises(PromptError):
        s.add_point(9, 3, 3)


def test_history_memory_is_bounded():
    lab = np.zeros((4, 64, 64), np.int32)
    s = AnnotationSession(lab, max_history_bytes=60_000, max_history_steps=1000)
    full = np.ones((64, 64), bool)
    for i in range(10):
        s.commit(full, z=i % 4, label_id=i + 1)  # 4096 voxels x 12 bytes each ~ 49 kB
    assert s.history_nbytes <= 60_000 + 60_000  # the newest entry is always kept
    assert s.can_undo
    n = 0
    while s.undo() is not None:
        n += 1
    assert n == 1
    s2 = AnnotationSession(np.zeros((2, 8, 8), np.int32), max_history_steps=3)
    for i in range(10):
        s2.add_point(0, i % 8, 1)
    assert sum(1 for _ in iter(s2.undo, None)) == 3


def test_bad_inputs():
    with pytest.raises(HRMedSegSAMError):
        AnnotationSession(np.zeros((2, 2, 2, 2), np.int32))
    with pytest.raises(HRMedSegSAMError):
        AnnotationSession(np.zeros((2, 2), np.float32))
    with pytest.raises(HRMedSegSAMError):
        AnnotationSession(np.zeros((2, 2, 2), np.int32), spacing_zyx=(0, 1, 1))
