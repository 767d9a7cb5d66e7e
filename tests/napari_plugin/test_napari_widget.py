"""The annotation widget end to end: real files, a real (randomly initialised) model.

Each test drives the widget the way a user does, through layer edits and the widget's
callbacks, and waits for the compute thread with ``qtbot``. The model's masks are those of
random weights: the tests check where masks go (slice, shape, label ids, history, files),
not their quality.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("torch")
sitk = pytest.importorskip("SimpleITK")

from hrmedsegsam.errors import HRMedSegSAMError, OutputExistsError  # noqa: E402


def _show_slice(model, z):
    model.set_current_z(z)
    assert model.current_z() == z


def test_widget_sets_up_layers(annotator):
    viewer, widget, image, vol = annotator
    m = widget.model
    assert m.image_layer is image
    names = [lay.name for lay in viewer.layers]
    assert names == [
        "ct",
        "ct labels",
        "current object",
        "prompts: box",
        "prompts: strokes",
        "prompts: points",
    ]
    for layer in (m.labels_layer, m.preview_layer, m.points_layer, m.box_layer, m.strokes_layer):
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
    assert m.labels_layer.data.shape == vol.shape and m.labels_layer.data.dtype == np.int32
    assert m.session.labels is m.labels_layer.data  # one array: the session edits the layer's
    assert widget.image_combo.currentText() == "ct"
    assert widget.model_combo.currentText() == "custom"


def test_box_accept_second_object_undo_redo_brush_export(
    annotator, qtbot, wait_idle, make_rect, tmp_path
):
    viewer, widget, image, vol = annotator
    m = widget.model
    labels = m.labels_layer.data

    # a box on slice 2 -> a preview of the slice's shape on slice 2 only
    _show_slice(m, 2)
    m.box_layer.add_rectangles(make_rect(2, 12, 10, 44, 40))
    assert m.session.state.boxes[0].as_list() == [10.0, 12.0, 40.0, 44.0]
    wait_idle(m)
    preview = m.preview_layer.data
    assert preview.shape == vol.shape
    assert preview[2].any()
    assert not np.delete(preview, 2, axis=0).any()
    assert "Slice 2" in widget.status.text()

    # accept -> label 1 exactly where the preview was; prompts and preview cleared
    mask1 = preview[2].astype(bool).copy()
    widget.accept_btn.click()
    np.testing.assert_array_equal(labels[2] == 1, mask1)
    assert labels.max() == 1
    assert len(m.points_layer.data) == 0 and len(m.box_layer.data) == 0
    assert not m.preview_layer.data.any()
    qtbot.waitUntil(lambda: widget.table.rowCount() == 1)
    assert widget.table.item(0, 0).text() == "1"
    assert widget.table.item(0, 2).text() == "2-2 (1)"
    expected_ml = mask1.sum() * 0.7 * 0.7 * 3.0 / 1000
    assert float(widget.table.item(0, 3).text()) == pytest.approx(expected_ml, abs=0.01)

    # second object: a positive and a negative point on slice 3 -> label 2
    _show_slice(m, 3)
    m.points_layer.add([[3, 30, 30]])
    widget.negative_check.setChecked(True)
    m.points_layer.add([[3, 5, 5]])
    assert [p.positive for p in m.session.state.points] == [True, False]
    colors = np.asarray(m.points_layer.face_color)
    assert not np.allclose(colors[0], colors[1])  # negative points are drawn differently
    widget.negative_check.setChecked(False)
    wait_idle(m)
    assert m.preview_layer.data[3].any()
    mask2 = m.preview_layer.data[3].astype(bool).copy()
    widget.accept_btn.click()
    assert (labels[3] == 2).sum() == mask2.sum() and (labels == 1).sum() == mask1.sum()
    qtbot.waitUntil(lambda: widget.table.rowCount() == 2)

    # undo -> object 2 gone and its prompts are back; redo -> back
    widget.undo_btn.click()
    assert (labels == 2).sum() == 0 and (labels == 1).sum() == mask1.sum()
    assert len(m.points_layer.data) == 2
    widget.redo_btn.click()
    assert (labels[3] == 2).sum() == mask2.sum()
    assert len(m.points_layer.data) == 0

    # a brush edit in the labels layer survives the next commit (keep-existing policy too)
    m.labels_layer.brush_size = 3
    m.labels_layer.paint((5, 60, 60), 9, refresh=True)
    painted = labels == 9
    assert painted.sum() > 0
    widget.policy_combo.setCurrentText("keep existing")
    widget.id_spin.setValue(4)  # a chosen id
    _show_slice(m, 5)
    m.box_layer.add_rectangles(make_rect(5, 20, 20, 63, 63))
    wait_idle(m)
    widget.accept_btn.click()
    assert (labels[painted] == 9).all()
    assert (labels[5] == 4).any()
    assert set(np.unique(labels)) == {0, 1, 2, 4, 9}
    # undo of that commit keeps the brush edit too
    widget.undo_btn.click()
    assert (labels[painted] == 9).all() and not (labels == 4).any()
    widget.redo_btn.click()

    # export -> SimpleITK reads back the layer with the source geometry; no silent overwrite
    out = tmp_path / "annotated.nii.gz"
    assert widget.files.keeper.export(str(out)) == str(out)
    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    np.testing.assert_allclose(back.GetSpacing(), vol.spacing)
    np.testing.assert_allclose(back.GetOrigin(), vol.origin)
    np.testing.assert_allclose(back.GetDirection(), vol.direction)
    with pytest.raises(OutputExistsError):
        widget.files.keeper.export(str(out))
    widget.files.keeper.export(str(out), overwrite=True)  # only after the user confirmed


def test_keyboard_undo_redo(annotator, wait_idle):
    viewer, widget, image, vol = annotator
    m = widget.model
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    _show_slice(m, 1)
    m.points_layer.add([[1, 20, 20]])
    assert len(m.session.state.points) == 1
    viewer.layers.selection.active = image  # keys go to the viewer's keymap
    handler.press_key("Control-Z")
    handler.release_key("Control-Z")
    assert len(m.session.state.points) == 0 and len(m.points_layer.data) == 0
    handler.press_key("Control-Shift-Z")
    handler.release_key("Control-Shift-Z")
    assert len(m.session.state.points) == 1 and len(m.points_layer.data) == 1
    wait_idle(m)
    assert m.preview_layer.data[1].any()


def test_reopen_refines_an_accepted_object(annotator, wait_idle, make_rect):
    viewer, widget, image, vol = annotator
    m = widget.model
    labels = m.labels_layer.data
    labels[2, 20:40, 20:40] = 1  # an object made earlier (e.g. by hand)
    m.labels_layer.refresh()
    _show_slice(m, 0)
    m.reopen(1)
    assert m.current_z() == 2  # jumped to the object
    assert m.session.current_id == 1
    np.testing.assert_array_equal(m.preview_layer.data[2] == 1, labels[2] == 1)
    m.points_layer.add([[2, 30, 30]])
    wait_idle(m)
    refined = m.preview_layer.data[2].astype(bool).copy()
    assert m.accept() == 1  # into the reopened object's id
    np.testing.assert_array_equal(labels[2] == 1, refined)
    assert m.session.current_id is None
    m.undo()
    assert (labels[2, 20:40, 20:40] == 1).all() and m.session.current_id == 1


def test_propagate_labels_more_slices_and_cancel(annotator, qtbot, wait_idle, make_rect):
    from hrmedsegsam.volume import StopRule

    viewer, widget, image, vol = annotator
    m = widget.model
    labels = m.labels_layer.data
    # random weights score low: a permissive stop rule lets propagation run through
    m.propagate_rule = StopRule(
        min_score=-1e9,
        min_area_px=0,
        min_area_ratio=0.0,
        max_growth=1e9,
        min_overlap=0.0,
        max_intensity_jump=None,
    )
    with pytest.raises(HRMedSegSAMError):
        m.propagate()  # nothing prompted yet
    _show_slice(m, 3)
    m.box_layer.add_rectangles(make_rect(3, 10, 10, 50, 50))
    wait_idle(m)
    widget.files.name_edit.setText("aorta")  # the propagated object's name
    widget.propagate_btn.click()
    assert widget.cancel_btn.isEnabled() and not widget.accept_btn.isEnabled()
    assert widget.progress.isVisibleTo(widget)  # the progress bar in the widget
    assert widget.progress.format() == "Propagating aorta from slice 3: %v of %m slices"
    wait_idle(m)
    labelled = np.flatnonzero((labels == 1).reshape(labels.shape[0], -1).any(axis=1))
    assert len(labelled) > 1 and 3 in labelled
    assert not widget.cancel_btn.isEnabled() and not widget.progress.isVisibleTo(widget)
    assert widget.progress.value() == widget.progress.maximum() == vol.shape[0] - 1
    assert "Propagated aorta" in widget.status.text()
    assert m.session.name_of(1) == "aorta" and widget.files.name_edit.text() == ""
    # where it stopped, in both directions: here the volume's edges (a permissive rule)
    assert "stopped up: the volume's edge; down: the volume's edge" in widget.status.text()
    widget.undo_btn.click()
    assert labels.max() == 0

    # cancel right away: stops early, keeps what it had (at least the start slice)
    m.box_layer.data = []
    m.next_object()
    m.box_layer.add_rectangles(make_rect(3, 10, 10, 50, 50))
    wait_idle(m)
    m.propagate()
    widget.cancel_btn.click()
    wait_idle(m)
    assert "cancelled" in widget.status.text()
    assert (labels[3] > 0).any()


def test_2d_image(make_napari_viewer, predictor, wait_idle, make_rect):
    from napari_plugin._reader import image_layer_data
    from napari_plugin._sample_data import make_radiograph
    from napari_plugin._widget import AnnotatorWidget

    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer_data(make_radiograph(size=128), name="xr")
    viewer.add_image(data, **kwargs)
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    m = widget.model
    try:
        assert m.ndim == 2 and m.labels_layer.data.shape == (128, 128)
        m.box_layer.add_rectangles(make_rect(None, 30, 30, 90, 100))
        wait_idle(m)
        assert m.preview_layer.data.shape == (128, 128) and m.preview_layer.data.any()
        assert m.accept() == 1
        assert (m.labels_layer.data == 1).any()
        with pytest.raises(HRMedSegSAMError):
            m.propagate()
    finally:
        m.close()


def test_prefetch_embeds_neighbours_while_idle(make_napari_viewer, ct_file, predictor, qtbot):
    from napari_plugin._widget import AnnotatorWidget

    path, vol, _ = ct_file
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="hrmedsegsam")
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=1)
    m = widget.model
    try:
        _show_slice(m, 2)
        window = m.window()
        qtbot.waitUntil(
            lambda: all(predictor.is_cached(m.core.embedding_key(z), window) for z in (1, 2, 3)),
            timeout=300_000,
        )
        assert not predictor.is_cached(m.core.embedding_key(0), window)
    finally:
        m.close()


def test_screenshot_with_widget_and_mask(
    make_napari_viewer, ct_file, predictor, qtbot, wait_idle, make_rect, tmp_path
):
    from napari_plugin._widget import AnnotatorWidget

    path, vol, _ = ct_file
    viewer = make_napari_viewer(show=True)
    viewer.open(str(path), plugin="hrmedsegsam")
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    viewer.window.add_dock_widget(widget, name="HRMedSegSAM")
    m = widget.model
    try:
        _show_slice(m, 2)
        m.box_layer.add_rectangles(make_rect(2, 12, 10, 44, 40))
        wait_idle(m)
        m.accept()
        qtbot.waitUntil(lambda: widget.table.rowCount() == 1)
        shot = viewer.screenshot(canvas_only=False, flash=False)
        out = tmp_path / "viewer.png"
        from PIL import Image

        Image.fromarray(shot).save(out)
        assert out.stat().st_size > 10_000
        assert shot.ndim == 3 and shot.shape[0] > 200 and shot.shape[1] > 300
        assert shot[..., :3].std() > 10  # not blank
        canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
        # the label colour shows up on the canvas: some pixels are strongly coloured
        saturation = canvas.max(axis=-1) - canvas.min(axis=-1)
        assert (saturation > 60).sum() > 50
    finally:
        m.close()


def test_accept_waits_for_a_running_prediction(annotator, wait_idle, make_rect):
    viewer, widget, image, vol = annotator
    m = widget.model
    _show_slice(m, 4)
    m.box_layer.add_rectangles(make_rect(4, 5, 5, 30, 30))
    assert m.busy
    assert m.accept() is None  # deferred until the preview exists
    assert "waiting" in widget.status.text()
    wait_idle(m)
    assert (m.labels_layer.data[4] == 1).any()
    assert not m.preview_layer.data.any()


def test_removed_layers_are_handled(annotator):
    viewer, widget, image, vol = annotator
    m = widget.model
    m.session.commit(np.ones(vol.shape[1:], bool), z=1)
    labels = m.labels_layer
    viewer.layers.remove(m.points_layer)  # a helper deleted by the user: let go, cleanly
    assert m.image_layer is None and m.session is None
    assert [lay.name for lay in viewer.layers] == ["ct", "ct labels"]
    assert "removed" in widget.status.text()
    m.set_image_layer(image)  # choosing the image again goes on with the same labels
    assert m.labels_layer is labels and (labels.data[1] == 1).all()
    assert len(viewer.layers) == 6  # image, labels, preview, box, strokes, points
    viewer.layers.remove(image)
    assert m.image_layer is None and [lay.name for lay in viewer.layers] == ["ct labels"]


def test_labels_file_opened_onto_the_image_becomes_the_target(
    annotator, tmp_path, wait_idle, make_rect
):
    viewer, widget, image, vol = annotator
    m = widget.model
    ref = np.zeros(vol.shape, np.uint8)
    ref[1:4, 10:30, 10:30] = 3
    lab_image = sitk.GetImageFromArray(ref)
    lab_image.CopyInformation(vol.to_sitk())
    path = tmp_path / "ct_seg.nii.gz"
    sitk.WriteImage(lab_image, str(path))
    layer = viewer.open(str(path), plugin="hrmedsegsam")[0]
    assert m.labels_layer is layer and m.session.labels is layer.data
    names = [lay.name for lay in viewer.layers]
    assert names.index("ct_seg") < names.index("current object")
    assert [o.id for o in m.objects()] == [3]
    _show_slice(m, 5)
    m.box_layer.add_rectangles(make_rect(5, 30, 30, 60, 60))
    wait_idle(m)
    assert m.accept() == 4
    out = tmp_path / "corrected.nii.gz"
    widget.files.keeper.export(str(out))
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert (back[1:4, 10:30, 10:30] == 3).all() and (back[5] == 4).any()


def test_negative_toggle_after_accept_and_n_keeps_placed_points(
    annotator, qtbot, wait_idle, make_rect
):
    """Regression: N / the Negative box after Accept raised IndexError (a selection left
    on the emptied points layer), and N recoloured a placed point without changing it.
    """
    viewer, widget, image, vol = annotator
    m = widget.model
    _show_slice(m, 2)
    m.points_layer.add([[2, 30, 30]])
    m.points_layer.selected_data = {0}  # as after a click in napari's select mode
    wait_idle(m)
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    viewer.layers.selection.active = image
    handler.press_key("N")
    handler.release_key("N")
    assert widget.negative_check.isChecked()
    assert [p.positive for p in m.session.state.points] == [True]
    green = np.asarray(m.points_layer.face_color)[0]
    np.testing.assert_allclose(
        green[:3], [0x39 / 255, 1.0, 0x14 / 255], atol=0.01
    )  # still drawn positive
    widget.negative_check.setChecked(False)
    m.points_layer.selected_data = {0}
    widget.accept_btn.click()
    assert len(m.points_layer.data) == 0 and len(m.points_layer.selected_data) == 0
    widget.negative_check.setChecked(True)  # raised IndexError before the fix
    handler.press_key("N")
    handler.release_key("N")
    assert not widget.negative_check.isChecked()
    m.points_layer.add([[3, 5, 5]])
    assert [p.positive for p in m.session.state.points] == [True]


def test_reopen_and_delete_without_a_selected_row(annotator, qtbot):
    """Regression: Reopen / Delete with no row selected raised past the status line."""
    viewer, widget, image, vol = annotator
    m = widget.model
    m.session.commit(np.ones(vol.shape[1:], bool), z=1)
    m.events.objects()
    qtbot.waitUntil(lambda: widget.table.rowCount() == 1)
    assert not widget.reopen_btn.isEnabled() and not widget.delete_btn.isEnabled()
    widget._run(lambda: m.delete_object(widget._selected_id()))  # the buttons' own call
    assert "Select an object" in widget.status.text() and (m.labels_layer.data == 1).any()
    widget.table.selectRow(0)
    assert widget.reopen_btn.isEnabled() and widget.delete_btn.isEnabled()
    widget.delete_btn.click()
    assert not (m.labels_layer.data == 1).any()


def test_undo_keys_reach_the_annotation_history_from_the_labels_layer(
    annotator, wait_idle, make_rect
):
    """Regression: with the labels layer active, napari's paint undo took Ctrl+Z."""
    viewer, widget, image, vol = annotator
    m = widget.model
    _show_slice(m, 2)
    m.box_layer.add_rectangles(make_rect(2, 12, 10, 44, 40))
    wait_idle(m)
    assert m.accept() == 1 and (m.labels_layer.data == 1).any()
    viewer.layers.selection.active = m.labels_layer  # where README says to brush
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    handler.press_key("Control-Z")
    handler.release_key("Control-Z")
    assert not (m.labels_layer.data == 1).any() and len(m.box_layer.data) == 1
    handler.press_key("Control-Shift-Z")
    handler.release_key("Control-Shift-Z")
    assert (m.labels_layer.data == 1).any()


def test_shortcuts_are_in_the_tooltips_and_readme(annotator, repo_root):
    from napari_plugin._widget import SHORTCUTS, _key_text

    viewer, widget, image, vol = annotator
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    for btn, action in (
        (widget.accept_btn, "accept"),
        (widget.next_btn, "next"),
        (widget.propagate_btn, "propagate"),
        (widget.point_btn, "points"),
        (widget.box_btn, "box"),
    ):
        assert _key_text(SHORTCUTS[action]) in btn.toolTip()
        assert _key_text(SHORTCUTS[action]) in readme
    m = widget.model
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    viewer.layers.selection.active = image
    handler.press_key("Alt-2")
    handler.release_key("Alt-2")
    assert viewer.layers.selection.active is m.box_layer and m.box_layer.mode == "add_rectangle"


def test_keep_existing_by_default_and_remove_islands(annotator, qtbot, wait_idle, make_rect):
    viewer, widget, image, vol = annotator
    m = widget.model
    labels = m.labels_layer.data
    assert widget.policy_combo.currentText() == "keep existing" and m.overwrite is False
    labels[2, 20:30, 20:30] = 1  # an accepted object
    labels[2, 50:53, 50:53] = 1  # and an island of it
    m.labels_layer.refresh()
    _show_slice(m, 2)
    m.box_layer.add_rectangles(make_rect(2, 5, 5, 60, 60))
    wait_idle(m)
    m.preview_layer.data[2, 20:30, 20:30] = 1  # the new mask covers object 1
    covered = int(((m.preview_layer.data[2] > 0) & (labels[2] == 1)).sum())
    assert covered >= 100
    widget.accept_btn.click()
    assert (labels[2, 20:30, 20:30] == 1).all() and (labels == 1).sum() == 109
    assert f"{covered} voxel(s) of other objects were kept" in widget.status.text()
    widget.undo_btn.click()
    m.events.objects()
    qtbot.waitUntil(lambda: widget.table.rowCount() == 1)
    widget.table.selectRow(0)
    widget.islands_btn.click()
    assert (labels[2, 20:30, 20:30] == 1).all() and not (labels[2, 50:53, 50:53] == 1).any()
    assert "Removed islands of label 1 on 1 slice(s)" in widget.status.text()
    widget.undo_btn.click()
    assert (labels[2, 50:53, 50:53] == 1).all()


def test_a_preset_sets_the_contrast_and_a_contrast_drag_is_one_window_change(
    annotator, qtbot, wait_idle, make_rect
):
    viewer, widget, image, vol = annotator
    m = widget.model
    _show_slice(m, 2)
    m.box_layer.add_rectangles(make_rect(2, 12, 10, 44, 40))
    wait_idle(m)
    calls = []
    set_window = m.core.set_window
    m.core.set_window = lambda w: calls.append(tuple(w)) or set_window(w)
    for lo in range(-200, -100, 10):  # a drag: ten changes in quick succession
        image.contrast_limits = (float(lo), 300.0)
    assert calls == []  # nothing re-embedded while dragging
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=5000)
    qtbot.wait(500)
    assert calls == [(-110.0, 300.0)] and m.core.window == (-110.0, 300.0)
    wait_idle(m)
    widget.window_combo.setCurrentText("bone")
    assert tuple(image.contrast_limits) == (-500.0, 1300.0) == m.core.window


def test_a_box_on_an_embedded_slice_is_decoded_at_once_without_the_compute_thread(
    annotator, wait_idle, make_rect
):
    viewer, widget, image, vol = annotator
    m = widget.model
    wait_idle(m)
    jobs = []
    submit = m._jobs.compute.submit
    m._jobs.compute.submit = lambda job: jobs.append(job.label) or submit(job)
    _show_slice(m, 2)
    m.core.embed(2)
    m.box_layer.add_rectangles(make_rect(2, 12, 10, 44, 40))
    assert m.preview_layer.data[2].any() and not m.busy  # shown in the shapes event
    assert jobs == [] and "Slice 2" in widget.status.text()

    # a slice without an embedding still goes to the compute thread
    _show_slice(m, 4)
    m.box_layer.add_rectangles(make_rect(4, 12, 10, 44, 40))
    assert jobs == ["Computing the embedding of slice 4…"] and m.busy
    wait_idle(m)
    assert m.preview_layer.data[4].any()

    # an error takes the compute thread's path: one line on the status bar, nothing raised
    def fail(request):
        raise RuntimeError("decoder exploded")

    m.core.compute = fail
    m.box_layer.data = [m.box_layer.data[0], make_rect(4, 5, 5, 30, 30)]
    assert jobs == ["Computing the embedding of slice 4…"] and not m.busy
    assert widget.status.text() == "Error: RuntimeError: decoder exploded"
