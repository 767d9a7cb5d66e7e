"""Sessions on disk: save and reopen (labels, names, colours, prompts, window), refusals,
atomic replacement; the label table and exports that never overwrite."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from hrmedsegsam.errors import InputError, OutputExistsError
from hrmedsegsam.interactive import InteractiveAnnotation
from hrmedsegsam.io import read_label_table, read_volume
from hrmedsegsam.session_file import fingerprint, load_session, save_session


@pytest.fixture
def ct(tmp_path):
    arr = np.random.default_rng(0).integers(-500, 500, (5, 24, 30)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.8, 2.5))
    img.SetOrigin((-20.0, 5.0, 100.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(img, str(path))
    return read_volume(path)


def annotated(vol) -> InteractiveAnnotation:
    """Two objects: 'liver' from a box and points on slice 2, 'spleen' (own colour) in 3D."""
    ann = InteractiveAnnotation(vol.array, (-160, 240), labels=np.zeros(vol.shape, np.int32))
    ann.set_box(2, 3, 4, 12, 15)
    ann.add_point(2, 6, 7, True)
    ann.add_point(2, 10, 13, False)
    ann.preview3d[2, 4:15, 3:12] = 1
    assert ann.accept(name="liver") == 1
    mask = np.zeros(vol.shape, bool)
    mask[1:4, 16:22, 18:28] = True
    assert ann.commit_volume(mask, name="spleen", color=(10, 200, 30)) == 2
    return ann


def test_save_and_reopen_everything(ct, tmp_path) -> None:
    ann = annotated(ct)
    folder = ann.save_session(tmp_path / "s", ct)
    meta = json.loads((folder / "session.json").read_text())
    assert meta["format"] == "hrmedsegsam-session" and meta["source"]["fingerprint"] == fingerprint(
        ct
    )
    assert [(o["id"], o["name"]) for o in meta["objects"]] == [(1, "liver"), (2, "spleen")]
    assert meta["objects"][0]["prompts"] == {
        "points": [[2, 6.0, 7.0, 1], [2, 10.0, 13.0, 0]],
        "boxes": [[2, 3.0, 4.0, 12.0, 15.0]],
    }
    # an outsider reads the labels with any NIfTI reader, on the source grid
    nifti = sitk.ReadImage(str(folder / meta["labels"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(nifti), ann.labels)
    assert nifti.GetSpacing() == pytest.approx(ct.spacing) and nifti.GetOrigin() == pytest.approx(
        ct.origin
    )

    fresh = InteractiveAnnotation(ct.array, (0, 1), labels=np.zeros(ct.shape, np.int32))
    fresh.open_session(folder, read_volume(ct.path))  # the same image read again
    np.testing.assert_array_equal(fresh.labels, ann.labels)
    assert fresh.window == (-160.0, 240.0)
    assert [(o.id, o.name, o.color) for o in fresh.session.objects()] == [
        (o.id, o.name, o.color) for o in ann.session.objects()
    ]
    assert fresh.session.objects()[1].color == (10, 200, 30)
    assert not fresh.session.can_undo
    # reopen from the saved prompts: refinement goes on where it stopped
    fresh.reopen(1, with_prompts=True)
    assert (
        fresh.state.object_id == 1
        and len(fresh.state.points) == 2
        and fresh.state.boxes[0].x1 == 12.0
    )
    assert fresh.preview3d[2].sum() == (ann.labels[2] == 1).sum()


def test_strokes_are_saved_and_reopened_and_files_without_them_still_open(ct, tmp_path) -> None:
    ann = InteractiveAnnotation(ct.array, (-160, 240), labels=np.zeros(ct.shape, np.int32))
    ann.add_lasso(2, [[2, 3], [14, 3], [14, 16], [2, 16]])
    ann.add_scribble(2, [[4, 20], [-5, 22]], positive=False)  # runs off the slice: kept as drawn
    ann.preview3d[2, 4:15, 3:12] = 1
    ann.accept(name="liver")
    folder = ann.save_session(tmp_path / "s", ct)
    meta = json.loads((folder / "session.json").read_text())
    assert meta["objects"][0]["prompts"]["strokes"] == [
        {"z": 2, "kind": "lasso", "positive": True, "xy": [[2, 3], [14, 3], [14, 16], [2, 16]]},
        {"z": 2, "kind": "scribble", "positive": False, "xy": [[4, 20], [-5, 22]]},
    ]
    fresh = InteractiveAnnotation(ct.array, (0, 1), labels=np.zeros(ct.shape, np.int32))
    fresh.open_session(folder, ct)
    fresh.reopen(1, with_prompts=True)
    assert fresh.state.strokes == ann.session.info_of(1).prompts.strokes
    assert [(s.kind, s.positive) for s in fresh.state.strokes] == [
        ("lasso", True),
        ("scribble", False),
    ]
    # a session written before strokes existed (no "strokes" key) opens with none
    del meta["objects"][0]["prompts"]["strokes"]
    (folder / "session.json").write_text(json.dumps(meta))
    old = InteractiveAnnotation(ct.array, (0, 1), labels=np.zeros(ct.shape, np.int32))
    old.open_session(folder, ct)
    assert (
        old.session.info_of(1).prompts.strokes == ()
        and len(old.session.info_of(1).prompts.boxes) == 0
    )
    # a stroke of an unknown kind is a corrupt file, said once
    meta["objects"][0]["prompts"]["strokes"] = [{"z": 2, "kind": "spline", "xy": [[1, 1]]}]
    (folder / "session.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="corrupt.*spline"):
        load_session(folder, ct)


def test_resave_replaces_atomically_and_keeps_one_labels_file(ct, tmp_path, monkeypatch) -> None:
    ann = annotated(ct)
    folder = ann.save_session(tmp_path / "s", ct)
    ann.session.delete_object(2)
    ann.save_session(folder, ct)
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["labels-2.nii.gz", "session.json"]
    assert load_session(folder, ct).labels.max() == 1

    # a write that fails (disk full at the commit point) leaves the saved session as it was
    before = (folder / "session.json").read_bytes()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr("hrmedsegsam.atomic.os.replace", disk_full)
        with pytest.raises(InputError, match="No space left"):
            ann.save_session(folder, ct)
    assert (folder / "session.json").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == files


def test_refusals_are_one_clear_error(ct, tmp_path) -> None:
    ann = annotated(ct)
    folder = ann.save_session(tmp_path / "s", ct)
    other = read_volume(ct.path)
    other.array = other.array.copy()
    other.array[0, 0, 0] += 1  # one voxel differs: another image
    with pytest.raises(InputError, match="belongs to another image"):
        load_session(folder, other)
    with pytest.raises(InputError, match="belongs to another image"):
        save_session(folder, ann.labels, {}, other)

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="not an annotation session"):
        ann.save_session(tmp_path / "notes", ct)
    with pytest.raises(InputError, match="not an annotation session"):
        load_session(tmp_path / "notes", ct)

    meta = json.loads((folder / "session.json").read_text())
    for broken, why in [
        ("{not json", "not readable JSON"),
        (json.dumps({**meta, "objects": [{"id": 1}]}), "missing"),
        (json.dumps({**meta, "format": "zarr"}), "format"),
        (json.dumps({**meta, "labels": "../ct.nii.gz"}), "labels file"),
    ]:
        (folder / "session.json").write_text(broken)
        with pytest.raises(InputError, match=why):
            load_session(folder, ct)
    (folder / "session.json").write_text(json.dumps(meta))
    labels_file = folder / meta["labels"]
    labels_file.write_bytes(labels_file.read_bytes()[:-20])
    with pytest.raises(InputError, match="checksum"):
        load_session(folder, ct)


def test_export_nifti_with_label_table_never_overwrites(ct, tmp_path) -> None:
    ann = annotated(ct)
    out = ann.export(tmp_path / "out.nii.gz", ct)
    table = read_label_table(tmp_path / "out.labels.tsv")
    assert [(s.label_id, s.name, s.color) for s in table] == [
        (o.id, o.name, o.color) for o in ann.session.objects()
    ]
    np.testing.assert_array_equal(read_volume(out).array, ann.labels)

    before = out.read_bytes(), (tmp_path / "out.labels.tsv").read_bytes()
    with pytest.raises(OutputExistsError):
        ann.export(out, ct)
    (tmp_path / "b.labels.tsv").write_text("someone else's")
    with pytest.raises(OutputExistsError, match="b.labels.tsv"):  # refused before writing anything
        ann.export(tmp_path / "b.nii.gz", ct)
    assert not (tmp_path / "b.nii.gz").exists()

    # a write that fails (labels that do not fit the grid) leaves the previous files intact
    ann.session.rename(1, "hepar")
    bad = InteractiveAnnotation(ct.array[:2], (0, 1), labels=np.ones((2,) + ct.shape[1:], np.int32))
    with pytest.raises(InputError):
        bad.export(out, ct, overwrite=True)
    assert (out.read_bytes(), (tmp_path / "out.labels.tsv").read_bytes()) == before
    ann.export(out, ct, overwrite=True)
    assert read_label_table(tmp_path / "out.labels.tsv")[0].name == "hepar"
