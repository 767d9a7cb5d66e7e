"""Loading a model in the widget (a real viewer under Xvfb, the bundled weights)."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("torch")


def test_first_use_export_is_announced_in_the_widget(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    """Loading the bundled model with a CPU runtime and no cached export: the status line
    says that the encoder is being prepared (tens of seconds) instead of looking frozen;
    the second load, with the export cached, goes straight to 'ready'."""
    import importlib.util

    from napari_plugin._widget import AnnotatorWidget

    runtime = next(
        (
            r
            for r, m in (("openvino", "openvino"), ("onnx", "onnxruntime"))
            if importlib.util.find_spec(m)
        ),
        None,
    )
    if runtime is None:
        pytest.skip("no CPU runtime installed")
    monkeypatch.setenv("HRMEDSEGSAM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HRMEDSEGSAM_ENCODER_BACKEND", runtime)
    viewer = make_napari_viewer()
    widget = AnnotatorWidget(viewer)  # no injected predictor: loads the model
    seen: list[str] = []
    widget.model.events.status.connect(lambda e: seen.append(widget.model.status))
    try:
        qtbot.waitUntil(lambda: widget.model.predictor is not None, timeout=600_000)
        assert any("Preparing the fast CPU encoder" in s for s in seen), seen
        assert list((tmp_path / "onnx").glob("*.onnx"))
        assert widget.model.predictor.encoder()[0] == runtime
        seen.clear()
        widget.model.load_model("hrmedsegsam")
        qtbot.waitUntil(lambda: any("ready" in s for s in seen), timeout=120_000)
        assert not any("Preparing" in s for s in seen)
    finally:
        widget.model.close()
