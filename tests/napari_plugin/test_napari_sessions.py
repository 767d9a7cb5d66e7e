"""The widget's files panel in a real napari viewer: names at accept, exports with names
(label table, DICOM SEG), sessions saved and reopened, autosave and recovery on reopening
the image, DICOM SEG out and back in (button and reader). Dialogs are answered through the
panel's ``ask_path`` / ``ask_yes_no`` hooks; everything else is the real thing."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("torch")
sitk = pytest.importorskip("SimpleITK")

from hrmedsegsam.anatomy import color_for  # noqa: E402
from hrmedsegsam.errors import OutputExistsError  # noqa: E402
from hrmedsegsam.io import read_label_table, read_volume  # noqa: E402


def open_widget(make_napari_viewer, path, predictor):
    from napari_plugin._widget import AnnotatorWidget

    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="hrmedsegsam")
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def accept_box(widget, wait_idle, make_rect, z, name, box=(12, 10, 44, 40)):
    """Prompt a box on slice ``z``, type ``name``, accept; returns the id."""
    m = widget.model
    m.set_current_z(z)
    widget.files.name_edit.setText(name)
    m.box_layer.add_rectangles(make_rect(z, *box))
    wait_idle(m)
    y0, x0, y1, x1 = box
    m.preview_layer.data[z, y0:y1, x0:x1] = 1  # random weights: make the mask certain
    label_id = m.accept()
    assert widget.files.name_edit.text() == ""  # the name went to this object only
    return label_id


def test_names_exports_and_sessions(
    make_napari_viewer, ct_file, predictor, wait_idle, make_rect, tmp_path, qtbot
):
    path, vol, _ = ct_file
    viewer, widget = open_widget(make_napari_viewer, path, predictor)
    m, files = widget.model, widget.files
    completer = files.name_edit.completer()
    assert completer.model().rowCount() > 100  # the anatomical names
    completer.setCompletionPrefix("kidney")
    assert completer.currentCompletion() == "kidney_cyst_left"
    assert accept_box(widget, wait_idle, make_rect, 2, "liver") == 1
    assert accept_box(widget, wait_idle, make_rect, 4, "spleen", box=(5, 45, 20, 60)) == 2
    assert [(o.id, o.name, o.color) for o in m.objects()] == [
        (1, "liver", color_for("liver")),
        (2, "spleen", color_for("spleen")),
    ]
    qtbot.waitUntil(lambda: widget.table.rowCount() == 2)
    assert widget.table.item(0, 1).text() == "liver"
    # the viewer shows the colours the exports write
    shown = m.labels_layer.colormap.map(np.array([1]))[0][:3]
    np.testing.assert_allclose(shown * 255, color_for("liver"), atol=1)
    labels = m.labels_layer.data.copy()
    # napari's own File > Save of the labels layer writes the names too
    viewer.layers.selection.active = m.labels_layer
    viewer.layers.save(str(tmp_path / "by_napari.nii.gz"), selected=True, plugin="hrmedsegsam")
    table = read_label_table(tmp_path / "by_napari.labels.tsv")
    assert [(s.label_id, s.name) for s in table] == [(1, "liver"), (2, "spleen")]

    # export NIfTI through the dialog: the label table beside it; no SEG for a NIfTI image
    out = tmp_path / "out.nii.gz"
    asked = []
    files.ask_path = lambda *a: asked.append(a) or (str(tmp_path / "out"), "")
    files.export_dialog()
    assert "DICOM SEG" not in asked[0][3]
    table = read_label_table(tmp_path / "out.labels.tsv")
    assert [(s.label_id, s.name, s.color) for s in table] == [
        (1, "liver", color_for("liver")),
        (2, "spleen", color_for("spleen")),
    ]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), labels)
    with pytest.raises(OutputExistsError):
        files.export_dialog()  # "out" + a suffix is not the name the dialog confirmed
    files.ask_path = lambda *a: (str(out), "")
    files.export_dialog()  # the dialog confirmed replacing out.nii.gz itself

    # save the session, lose the work, open it again (asked first: it replaces objects)
    folder = tmp_path / "session"
    files.ask_path = lambda *a: (str(folder), "")
    files.save_dialog()
    meta = json.loads((folder / "session.json").read_text())
    assert [o["name"] for o in meta["objects"]] == ["liver", "spleen"]
    # the library (and so the CLI) reads it for the same file: one fingerprint for both
    from hrmedsegsam.session_file import load_session

    np.testing.assert_array_equal(load_session(folder, read_volume(path)).labels, labels)
    assert meta["objects"][0]["prompts"]["boxes"] == [[2, 10.0, 12.0, 40.0, 44.0]]
    m.delete_object(1)
    m.rename(2, "renamed")
    questions = []
    files.ask_yes_no = lambda title, text: questions.append(text) or False
    files.open_dialog()  # declined: nothing changes
    assert "replaces the 1 object(s) shown" in questions[-1]
    assert [o.name for o in m.objects()] == ["renamed"]
    files.ask_yes_no = lambda title, text: True
    files.open_dialog()
    np.testing.assert_array_equal(m.labels_layer.data, labels)
    assert [(o.id, o.name) for o in m.objects()] == [(1, "liver"), (2, "spleen")]
    assert m.session.labels is m.labels_layer.data  # still the layer's array
    # saving into an existing session asks; "no" leaves it as it was
    m.delete_object(2)
    files.ask_yes_no = lambda title, text: questions.append(text) or False
    files.save_dialog()
    assert "holds a session saved" in questions[-1]
    assert json.loads((folder / "session.json").read_text()) == meta

    # a session of another image is refused with one line in the status, nothing changes
    other = vol.array.copy()
    other[0, 0, 0] += 1
    image2 = viewer.add_image(other, name="other", metadata=dict(m.image_layer.metadata))
    m.set_image_layer(image2, viewer.add_labels(np.zeros(vol.shape, np.int32)))
    files.ask_yes_no = lambda title, text: True
    files.open_btn.click()
    assert "belongs to another image" in widget.status.text()
    assert "\n" not in widget.status.text().strip() and "Traceback" not in widget.status.text()
    assert not m.labels_layer.data.any()
    # a corrupt session file: one line too
    (folder / "session.json").write_text("{broken")
    files.open_btn.click()
    assert "is corrupt" in widget.status.text() and "\n" not in widget.status.text().strip()


def test_autosave_and_recovery_in_a_fresh_widget(
    make_napari_viewer, ct_file, predictor, wait_idle, make_rect, qtbot
):
    from napari_plugin._widget import AnnotatorWidget

    path, vol, _ = ct_file
    viewer, widget = open_widget(make_napari_viewer, path, predictor)
    accept_box(widget, wait_idle, make_rect, 2, "liver")
    accept_box(widget, wait_idle, make_rect, 3, "kidney_left", box=(5, 45, 20, 60))
    labels = widget.model.labels_layer.data.copy()
    assert widget.files.keeper.autosaver.wait(60)
    assert widget.files.keeper.autosaver.saves == 2  # every commit written (in the background)
    widget.model.close()
    viewer.close()  # gone without saving

    # a fresh viewer and widget on the same image: recovery is offered and accepted
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="hrmedsegsam")
    asked = []
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    widget.files.ask_yes_no = lambda title, text: asked.append(text) or True
    qtbot.waitUntil(lambda: bool(asked))
    assert "2 object(s): liver, kidney_left" in asked[0]
    qtbot.waitUntil(lambda: len(widget.model.objects()) == 2)
    np.testing.assert_array_equal(widget.model.labels_layer.data, labels)  # voxel for voxel
    assert [o.name for o in widget.model.objects()] == ["liver", "kidney_left"]
    assert "Recovered 2 object(s)" in widget.status.text()

    # brush strokes: saved once the interval has passed since the last save, else by a flush
    keeper = widget.files.keeper
    assert keeper.autosaver.wait(60)
    assert keeper.autosaver.saves == 1  # the recovered session was saved again at once
    layer = widget.model.labels_layer
    layer.paint((5, 30, 30), 7)  # within 30 s of that save: remembered, not written
    assert keeper.autosaver.wait(60)
    assert keeper.autosaver.saves == 1 and keeper.autosaver.dirty
    keeper.autosaver.interval_s = 0.0
    layer.paint((5, 50, 50), 7)
    assert keeper.autosaver.wait(60)
    assert keeper.autosaver.saves == 2 and not keeper.autosaver.dirty
    keeper.autosaver.interval_s = 30.0
    layer.paint((5, 10, 50), 8)
    assert keeper.flush() and not keeper.flush()
    assert keeper.autosaver.wait(60)
    saved = keeper.autosaver.path
    meta = json.loads((saved / "session.json").read_text())
    np.testing.assert_array_equal(read_volume(saved / meta["labels"]).array, layer.data)
    widget.model.close()
    viewer.close()

    # declining drops the autosave: the next start offers nothing and writes nothing over it
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="hrmedsegsam")
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    widget.files.ask_yes_no = lambda title, text: asked.append(text) or False
    qtbot.waitUntil(lambda: len(asked) == 2)
    keeper = widget.files.keeper
    assert keeper.pending_recovery is None and not keeper.autosaver.path.exists()
    assert not widget.model.labels_layer.data.any()
    widget.model.close()
    viewer.close()
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="hrmedsegsam")
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    qtbot.wait(100)
    assert widget.files.keeper.pending_recovery is None and len(asked) == 2
    widget.model.close()


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
def test_dicom_seg_export_button_and_reader(
    make_napari_viewer, predictor, wait_idle, make_rect, tmp_path, oblique
):
    pytest.importorskip("highdicom")
    import pydicom
    from test_io import OBLIQUE, make_image, write_dicom_series

    from hrmedsegsam.io import read_seg
    from napari_plugin._session_panel import SEG_FILTER

    arr = np.full((6, 64, 64), -800, np.int16)
    arr[1:5, 10:40, 10:50] = 120
    image = make_image(arr, (0.7, 0.7, 2.0), (5.0, -3.0, 11.0), OBLIQUE if oblique else None)
    write_dicom_series(tmp_path / "ct", image, "1.2.826.0.1.3680043.2.1125.9." + str(int(oblique)))
    write_dicom_series(tmp_path / "b", image, "1.2.826.0.1.3680043.2.1125.8.1", prefix="other")
    viewer, widget = open_widget(make_napari_viewer, tmp_path / "ct", predictor)
    m, files = widget.model, widget.files
    accept_box(widget, wait_idle, make_rect, 2, "pancreas")
    accept_box(widget, wait_idle, make_rect, 4, "aorta", box=(50, 50, 60, 58))
    labels = m.labels_layer.data.copy()

    asked = []
    files.ask_path = lambda *a: asked.append(a) or (str(tmp_path / "seg"), SEG_FILTER)
    files.export_btn.click()
    assert SEG_FILTER in asked[0][3]  # offered for a DICOM image
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert ds.Modality == "SEG" and [s.SegmentLabel for s in ds.SegmentSequence] == [
        "pancreas",
        "aorta",
    ]
    back, segments = read_seg(tmp_path / "seg.dcm", read_volume(tmp_path / "ct"))
    np.testing.assert_array_equal(back, labels)

    # Open DICOM SEG: back onto the series with names and colours
    m.delete_object(1)
    m.delete_object(2)
    files.ask_path = lambda *a: (str(tmp_path / "seg.dcm"), "")
    files.seg_btn.click()
    np.testing.assert_array_equal(m.labels_layer.data, labels)
    assert [(o.id, o.name) for o in m.objects()] == [(1, "pancreas"), (2, "aorta")]
    assert np.abs(np.subtract(m.objects()[1].color, color_for("aorta"))).max() <= 2

    # the reader opens the SEG onto its series as a labels layer the widget adopts
    m.delete_object(1)
    layer = viewer.open(str(tmp_path / "seg.dcm"), plugin="hrmedsegsam")[0]
    assert m.labels_layer is layer
    np.testing.assert_array_equal(layer.data, labels)
    assert [(o.id, o.name) for o in m.objects()] == [(1, "pancreas"), (2, "aorta")]

    # a SEG of another series: one clear line, labels untouched (button and reader)
    other = viewer.open(str(tmp_path / "b"), plugin="hrmedsegsam")[0]
    m.set_image_layer(other, viewer.add_labels(np.zeros(arr.shape, np.int32)))
    files.seg_btn.click()
    status = widget.status.text()
    assert "is a segmentation of another DICOM series" in status and "\n" not in status
    assert not m.labels_layer.data.any()
    from napari_plugin._reader import read_path

    assert read_path(str(tmp_path / "seg.dcm")) is None  # after a notification with that line
    widget.model.close()


def test_reader_opens_a_session_folder_onto_its_image(
    make_napari_viewer, ct_file, predictor, wait_idle, make_rect, tmp_path
):
    path, vol, _ = ct_file
    viewer, widget = open_widget(make_napari_viewer, path, predictor)
    m = widget.model
    accept_box(widget, wait_idle, make_rect, 2, "liver")
    labels = m.labels_layer.data.copy()
    widget.files.keeper.save_session(tmp_path / "session")
    m.delete_object(1)
    layer = viewer.open(str(tmp_path / "session"), plugin="hrmedsegsam")[0]
    assert m.labels_layer is layer and layer.name == "session"
    np.testing.assert_array_equal(layer.data, labels)
    assert [(o.id, o.name) for o in m.objects()] == [(1, "liver")]
    widget.model.close()


def test_reader_declines_a_seg_without_its_series_open(tmp_path):
    """No image open to put a SEG on: the reader says so (a notification) and returns None."""
    pytest.importorskip("highdicom")
    from test_io import make_image, ramp, write_dicom_series

    from hrmedsegsam.io.seg import write_seg
    from napari_plugin._reader import napari_get_reader, read_path

    write_dicom_series(
        tmp_path / "ct", make_image(ramp((3, 8, 8))), "1.2.826.0.1.3680043.2.1125.8.9"
    )
    vol = read_volume(tmp_path / "ct")
    labels = np.zeros(vol.shape, np.uint8)
    labels[1, 2:5, 2:5] = 1
    seg = write_seg(tmp_path / "seg.dcm", labels, vol)
    assert napari_get_reader(str(seg)) is read_path  # a DICOM file: claimed
    assert read_path(str(seg)) is None  # but nothing to place it on
