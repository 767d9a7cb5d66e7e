"""The widget's embeddings-store setting: a study with precomputed embeddings (a real zarr
store written by the library) shows its first mask from the store, without the encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("zarr")
torch = pytest.importorskip("torch")


def _write_store(
    path: Path, image: np.ndarray, window: tuple[float, float], model: torch.nn.Module
) -> None:
    """Embeddings of every slice of ``image`` (Z, Y, X) under ``window`` by ``model``."""
    from hrmedsegsam.embedding_store import EmbeddingStore, ModelIdentity, volume_id
    from hrmedsegsam.predictor import Predictor

    store, vid = EmbeddingStore(path), volume_id(image)
    store.create(vid, window, ModelIdentity.of(model), image.shape[0])
    pred = Predictor(model, backend="torch")
    for z in range(image.shape[0]):
        store.write(vid, window, z, pred.embed(image[z], window).features.numpy())
    store.mark_complete(vid, window)


def test_widget_reads_a_precomputed_store(
    make_napari_viewer, ct_file, predictor, wait_idle, make_rect, tmp_path
):
    from hrmedsegsam.model.build import build_model
    from napari_plugin._widget import NO_STORE, AnnotatorWidget

    path, vol, _ = ct_file
    viewer = make_napari_viewer()
    image = viewer.open(str(path), plugin="hrmedsegsam")[0]
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    m = widget.model
    try:
        window = m.window()
        data = np.asarray(image.data)
        store_path = tmp_path / "study.zarr"
        _write_store(store_path, data, window, predictor.model)

        # a folder that is no store: one line, nothing changed
        (tmp_path / "plain").mkdir()
        widget.files.ask_path = lambda *a: (str(tmp_path / "plain"), "")
        widget.choose_store()
        assert "not an HRMedSegSAM embedding store" in widget.status.text()
        assert m.store is None and widget.store_btn.text() == NO_STORE

        widget.files.ask_path = lambda *a: (str(store_path), "")
        widget.choose_store()
        assert widget.store_btn.text() == "study.zarr"
        assert "read from" in widget.status.text()

        m.set_current_z(3)
        m.box_layer.add_rectangles(make_rect(3, 12, 10, 44, 40))
        wait_idle(m)
        assert m.preview_layer.data[3].any()
        assert predictor.features_source is m.core.store_source
        assert predictor.features_source.hits == 1  # slice 3 came from the store

        # embeddings of other weights are refused (and said so), then computed
        torch.manual_seed(7)
        other = tmp_path / "other.zarr"
        _write_store(other, data, window, build_model("hrmedsegsam"))
        widget.files.ask_path = lambda *a: (str(other), "")
        widget.choose_store()
        assert "other weights" in widget.status.text()

        widget.store_clear_btn.click()
        assert m.store is None and widget.store_btn.text() == NO_STORE
        assert predictor.features_source is None
    finally:
        m.close()
