"""Which labels layer the widget annotates into when images change."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("torch")


def test_a_second_image_of_the_same_shape_gets_its_own_labels(
    make_napari_viewer, ct_file, predictor, wait_idle, make_rect
):
    """Switching to another image of the same shape must not annotate into the first
    image's labels (its accepted objects would be overwritten)."""
    from napari_plugin._widget import AnnotatorWidget

    path, vol, _ = ct_file
    viewer = make_napari_viewer()
    first = viewer.open(str(path), plugin="hrmedsegsam")[0]
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    m = widget.model
    try:
        m.set_current_z(2)
        m.box_layer.add_rectangles(make_rect(2, 12, 10, 44, 40))
        wait_idle(m)
        m.accept()
        first_labels = m.labels_layer
        saved = first_labels.data.copy()
        assert saved.any()

        second = viewer.add_image(np.asarray(first.data).copy(), name="second")
        m.set_image_layer(second)
        assert m.labels_layer is not first_labels
        assert m.labels_layer.name == "second labels" and not m.labels_layer.data.any()
        np.testing.assert_array_equal(first_labels.data, saved)

        m.set_image_layer(first)  # back to the first image: its own labels again
        assert m.labels_layer is first_labels
    finally:
        m.close()


def test_brush_strokes_are_undo_steps_of_the_annotation(annotator, wait_idle, make_rect):
    """With Ctrl+Z bound to the annotation history on the labels layer, a brush stroke
    must be undoable there too: painted voxels go back, redo paints them again, and the
    accepted object before it is untouched until its own undo."""
    m = annotator[1].model
    m.set_current_z(2)
    m.box_layer.add_rectangles(make_rect(2, 12, 10, 44, 40))
    wait_idle(m)
    m.accept()
    labels = m.labels_layer
    accepted = labels.data.copy()

    labels.brush_size = 5
    labels.paint((2, 5, 5), 7)  # two brush dabs in a corner, label 7: two strokes
    one = labels.data.copy()
    labels.paint((2, 5, 9), 7)
    two = labels.data.copy()
    assert (one == 7).sum() < (two == 7).sum() and not np.array_equal(one, accepted)

    m.undo()
    np.testing.assert_array_equal(labels.data, one)
    m.undo()
    np.testing.assert_array_equal(labels.data, accepted)  # both strokes gone
    m.redo()
    m.redo()
    np.testing.assert_array_equal(labels.data, two)
    m.undo()
    m.undo()
    m.undo()  # then the accept itself
    assert not labels.data.any()
