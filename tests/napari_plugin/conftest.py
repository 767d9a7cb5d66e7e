"""Fixtures for the napari plugin tests (napari under Xvfb; skipped without napari).

Run: ``xvfb-run -a python -m pytest tests/napari_plugin``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _register_plugin():
    """Make npe2 know the plugin even when the package is not pip-installed."""
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager.instance()
    try:
        pm.get_manifest("hrmedsegsam")
    except KeyError:
        pm.register(PluginManifest.from_file(REPO / "napari_plugin" / "napari.yaml"))
    yield


@pytest.fixture(scope="session")
def predictor():
    """A Predictor over a randomly initialised HRMedSegSAM (real forward passes)."""
    torch = pytest.importorskip("torch")
    from hrmedsegsam.model.build import build_model
    from hrmedsegsam.predictor import Predictor

    torch.manual_seed(0)
    return Predictor(build_model("hrmedsegsam"), device=torch.device("cpu"))


def small_ct(shape=(6, 64, 64), seed=0):
    """A small synthetic CT Volume (anisotropic 0.7 x 0.7 x 3.0 mm, shifted origin)."""
    from hrmedsegsam.io import Volume
    from napari_plugin._sample_data import make_ct_volume

    vol, labels = make_ct_volume(shape, seed=seed)
    return Volume(
        array=vol.array, spacing=(0.7, 0.7, 3.0), origin=(-20.0, 15.0, 100.0), modality=""
    ), labels


@pytest.fixture
def ct_file(tmp_path):
    """The small CT written as NIfTI by SimpleITK; returns (path, Volume, reference labels)."""
    import SimpleITK as sitk

    vol, labels = small_ct()
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(vol.to_sitk(), str(path))
    return path, vol, labels


@pytest.fixture
def annotator(make_napari_viewer, ct_file, predictor):
    """(viewer, widget, image layer, Volume) with the CT file open and the widget docked."""
    from napari_plugin._widget import AnnotatorWidget

    path, vol, _ = ct_file
    viewer = make_napari_viewer()
    image = viewer.open(str(path), plugin="hrmedsegsam")[0]
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    viewer.window.add_dock_widget(widget)
    yield viewer, widget, image, vol
    widget.model.close()


@pytest.fixture
def make_small_ct():
    return small_ct


@pytest.fixture
def wait_idle(qtbot):
    """``wait_idle(model)``: processes Qt events until the model has no pending work."""

    def wait(model, timeout=300_000):
        qtbot.waitUntil(lambda: not model.busy, timeout=timeout)
        qtbot.wait(30)

    return wait


def rect(z, y0, x0, y1, x1):
    """Shapes-layer vertices of a rectangle on slice z (data coords); 2D without z."""
    corners = [[y0, x0], [y0, x1], [y1, x1], [y1, x0]]
    return np.array([([z] if z is not None else []) + c for c in corners], dtype=float)


@pytest.fixture
def make_rect():
    return rect


@pytest.fixture(autouse=True)
def _recovery_in_tmp(tmp_path, monkeypatch):
    """The widget's autosaves go to the test's own folder, never to the user's cache."""
    monkeypatch.setenv("HRMEDSEGSAM_RECOVERY_DIR", str(tmp_path / "recovery"))
