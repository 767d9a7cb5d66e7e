"""``hrmedsegsam napari [PATH]``: the launcher docks the widget and opens the file."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")


def test_open_viewer_with_file(ct_file, predictor, qtbot):
    from napari_plugin._launch import open_viewer

    path, vol, _ = ct_file
    viewer, widget = open_viewer(str(path), show=False, predictor=predictor, prefetch_radius=0)
    try:
        assert viewer.layers[0].name == "ct"
        np.testing.assert_allclose(viewer.layers[0].scale, vol.spacing_zyx)
        assert widget.model.image_layer is viewer.layers[0]
        assert "HRMedSegSAM" in viewer.window._dock_widgets
        assert widget.model.current_z() == vol.shape[0] // 2
    finally:
        widget.model.close()
        viewer.close()


def test_open_viewer_without_path_shows_the_ct_sample(predictor, qtbot):
    from napari_plugin._launch import open_viewer

    viewer, widget = open_viewer(None, show=False, predictor=predictor, prefetch_radius=0)
    try:
        assert viewer.layers[0].name == "synthetic CT" and viewer.layers[0].data.ndim == 3
    finally:
        widget.model.close()
        viewer.close()


def test_launch_reports_unreadable_path(tmp_path, capsys):
    from napari_plugin._launch import launch

    assert launch(str(tmp_path / "missing.nii.gz")) == 2
    err = capsys.readouterr().err
    assert "missing.nii.gz" in err and "Traceback" not in err
