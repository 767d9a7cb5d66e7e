"""Scribble and lasso prompts in the widget: the strokes layer, its modes and polarity.

A real viewer under Xvfb and a real (randomly initialised) model: the tests check which
prompts the layer edits become, that the preview obeys the lassos, and the keys; mask
quality is the library's business (tests/test_interactive.py, hrmedsegsam.scribble).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("torch")

from hrmedsegsam.scribble import polygon_mask  # noqa: E402


def _drag(layer, zyx_points) -> None:
    """Draw a stroke with the mouse in the layer's current mode: press, moves, release
    (napari's own mouse callbacks, data coordinates turned into world ones).
    """
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    def event(kind, i, p):
        world = layer.data_to_world(np.asarray(p, float))
        return read_only_mouse_event(
            type=kind,
            is_dragging=kind != "mouse_press",
            position=world,
            pos=np.array([20.0 * i, 0.0]),  # screen pixels: far enough apart for a vertex
            view_direction=None,
            dims_displayed=[1, 2],
        )

    mouse_press_callbacks(layer, event("mouse_press", 0, zyx_points[0]))
    for i, p in enumerate(zyx_points[1:], start=1):
        mouse_move_callbacks(layer, event("mouse_move", i, p))
    mouse_release_callbacks(layer, event("mouse_release", len(zyx_points), zyx_points[-1]))


def test_lasso_and_scribble_drawn_with_the_mouse_become_prompts(annotator, qtbot, wait_idle):
    viewer, widget, image, vol = annotator
    m = widget.model
    m.set_current_z(3)
    names = [lay.name for lay in viewer.layers]
    assert names[-3:] == ["prompts: box", "prompts: strokes", "prompts: points"]

    # lasso mode (Alt+4): a freehand polygon around the middle of slice 3
    widget.lasso_btn.click()
    assert viewer.layers.selection.active is m.strokes_layer
    assert m.strokes_layer.mode == "add_polygon_lasso"
    ring = [[3, 32 + 14 * np.sin(t), 32 + 16 * np.cos(t)] for t in np.linspace(0, 6.0, 14)]
    _drag(m.strokes_layer, ring)
    strokes = m.session.state.strokes
    assert [(s.z, s.kind, s.positive) for s in strokes] == [(3, "lasso", True)]
    wait_idle(m)
    inside = polygon_mask(strokes[0].as_array(), vol.shape[1:])
    assert not (m.preview_layer.data[3].astype(bool) & ~inside).any()  # never outside it
    assert not np.delete(m.preview_layer.data, 3, axis=0).any()

    # N, then scribble mode (Alt+3): a negative scribble; the lasso stays positive
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    viewer.layers.selection.active = image
    handler.press_key("N")
    handler.release_key("N")
    handler.press_key("Alt-3")
    handler.release_key("Alt-3")
    assert viewer.layers.selection.active is m.strokes_layer
    assert m.strokes_layer.mode == "add_path"
    _drag(m.strokes_layer, [[3, 10, 10 + 4 * i] for i in range(8)])
    assert [(s.kind, s.positive) for s in m.session.state.strokes] == [
        ("lasso", True),
        ("scribble", False),
    ]
    colors = np.asarray(m.strokes_layer.edge_color)
    assert colors[0, 1] > 0.9 and colors[1, 0] > 0.9  # green lasso, red scribble
    wait_idle(m)

    # undo / redo go through the annotation history and the layer follows
    widget.undo_btn.click()
    assert len(m.strokes_layer.data) == 1 and len(m.session.state.strokes) == 1
    widget.redo_btn.click()
    assert list(m.strokes_layer.shape_type) == ["polygon", "path"]
    wait_idle(m)

    # a stroke with nothing on the slice is dropped, with a word in the status line
    widget.negative_check.setChecked(False)
    m.strokes_layer.add(
        [np.array([[3, -50, -50], [3, -40, -30], [3, -20, -45]], float)], shape_type="polygon"
    )
    assert len(m.session.state.strokes) == 2 and len(m.strokes_layer.data) == 2
    assert "1 prompt(s) outside the image were ignored" in widget.status.text()

    # Next object clears the strokes (the model's random weights may give an empty mask,
    # so Accept is tested with the box and points in test_napari_widget.py)
    wait_idle(m)
    widget.next_btn.click()
    assert len(m.strokes_layer.data) == 0 and m.session.state.strokes == ()
    widget.undo_btn.click()
    assert len(m.strokes_layer.data) == 2


def test_scribble_and_lasso_keys_are_in_the_tooltips_and_readme(annotator, repo_root):
    from napari_plugin._widget import SHORTCUTS, _key_text

    viewer, widget, image, vol = annotator
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    for btn, action in ((widget.scribble_btn, "scribble"), (widget.lasso_btn, "lasso")):
        assert _key_text(SHORTCUTS[action]) in btn.toolTip()
        assert _key_text(SHORTCUTS[action]) in readme
    handler = viewer.window._qt_viewer.canvas._key_map_handler
    viewer.layers.selection.active = image
    handler.press_key("Alt-4")
    handler.release_key("Alt-4")
    assert widget.model.strokes_layer.mode == "add_polygon_lasso"
