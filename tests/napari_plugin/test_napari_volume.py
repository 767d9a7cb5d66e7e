"""The widget's volume tools with a real viewer: fill between key slices, propagate all.

A real (randomly initialised) model: the tests check where labels go, what is kept, the
progress and the keys; the fill's quality is measured headless (tests/test_fill.py).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("torch")


def _select(widget, qtbot, label_id):
    qtbot.waitUntil(lambda: widget.table.rowCount() > 0)
    for row in range(widget.table.rowCount()):
        if widget.table.item(row, 0).text() == str(label_id):
            widget.table.selectRow(row)
            return
    raise AssertionError(f"no row for {label_id}")


def test_fill_between_the_key_slices_of_the_selected_object(annotator, qtbot, wait_idle):
    viewer, widget, image, vol = annotator
    m = widget.model
    keys = np.zeros(vol.shape, bool)
    keys[1, 20:40, 18:44] = True
    keys[4, 24:36, 22:40] = True
    label = m.core.commit_volume(keys, name="kidney")
    m._sync()
    before = m.labels_layer.data[[1, 4]].copy()
    _select(widget, qtbot, label)
    seen, shown = [], []
    m.events.progress.connect(lambda e: seen.append(tuple(e.value)))
    m.events.progress.connect(lambda e: shown.append(widget.progress.text()))
    widget.volume.fill_btn.click()
    # the bar says what runs (not "Propagating"), while it runs and after
    assert widget.progress.isVisibleTo(widget)
    assert widget.progress.format() == "Filling kidney between slices 1 and 4: %v of %m slices"
    qtbot.waitUntil(lambda: not widget.progress.isVisibleTo(widget), timeout=120_000)
    wait_idle(m)
    assert shown[-1] == "Filling kidney between slices 1 and 4: 2 of 2 slices"
    assert widget.progress.text() == shown[-1]
    labels = m.labels_layer.data
    assert (labels[2] == label).any() and (labels[3] == label).any()  # the gap is filled
    np.testing.assert_array_equal(labels[[1, 4]], before)  # the key slices are not touched
    assert seen[-1] == (2, 2) and "Filled kidney" in widget.status.text()
    widget.undo_btn.click()  # one undo step
    assert not (labels[2:4] == label).any()


def test_propagate_all_runs_every_object_with_progress_and_keys(
    annotator, qtbot, wait_idle, repo_root
):
    from napari_plugin._volume_panel import VOLUME_SHORTCUTS
    from napari_plugin._widget import _key_text

    viewer, widget, image, vol = annotator
    m = widget.model
    for z, box, name in ((2, (10, 30, 10, 30), "a"), (3, (35, 55, 35, 55), "b")):
        mask = np.zeros(vol.shape, bool)
        y0, y1, x0, x1 = box
        mask[z, y0:y1, x0:x1] = True
        m.core.commit_volume(mask, name=name)
    m._sync()
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    viewer.layers.selection.active = image
    handler.press_key("Alt-F")  # nothing to fill: one clear message, nothing runs
    handler.release_key("Alt-F")
    assert "Fill between: prompt the object on two slices" in widget.status.text()
    handler.press_key("Alt-O")
    handler.release_key("Alt-O")
    assert widget.progress.isVisibleTo(widget) and not widget.volume.all_btn.isEnabled()
    assert widget.progress.format().startswith("Propagating 2 object(s): ")
    qtbot.waitUntil(lambda: not widget.progress.isVisibleTo(widget), timeout=300_000)
    wait_idle(m)
    text = widget.status.text()
    assert "Propagate all:" in text and "a: slices" in text and "b: slices" in text
    assert widget.volume.all_btn.isEnabled()
    # 'selected only' without a selection is one clear message, and nothing runs
    widget.volume.selected_check.setChecked(True)
    widget.volume.all_btn.click()
    assert "Select an object" in widget.status.text() and not widget.progress.isVisibleTo(widget)
    # the keys are in the tooltips and in README
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    for btn, action in ((widget.volume.fill_btn, "fill"), (widget.volume.all_btn, "propagate_all")):
        assert _key_text(VOLUME_SHORTCUTS[action]) in btn.toolTip()
        assert _key_text(VOLUME_SHORTCUTS[action]) in readme
