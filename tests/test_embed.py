"""Embedding precompute on a real Dask LocalCluster into a real zarr store, read back by segment."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytest.importorskip("zarr")
distributed = pytest.importorskip("dask.distributed")

from hrmedsegsam.embed import embed_volumes  # noqa: E402
from hrmedsegsam.embedding_store import EmbeddingStore, ModelIdentity, volume_id, window_name  # noqa: E402
from hrmedsegsam.model.build import load_model, save_weights  # noqa: E402
from hrmedsegsam.model.hrmedsegsam import HRMedSegSAM  # noqa: E402
from hrmedsegsam.predictor import Predictor  # noqa: E402
from hrmedsegsam.prompts import load_prompts  # noqa: E402
from hrmedsegsam.segment import segment_volume  # noqa: E402

SMALL = {"image_size": 256, "encoder_dim": 32, "encoder_heads": (2, 2, 4), "decoder_mlp_dim": 64}
WINDOW = (-160.0, 240.0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Two small models with different weights (real files, real loading)."""
    d = tmp_path_factory.mktemp("w")
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(save_weights(HRMedSegSAM(SMALL), d / f"small{seed}.pt", half=False))
    return out


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    zz, yy, xx = np.mgrid[:5, :40, :48]
    arr = np.full((5, 40, 48), -1000, np.int16)
    arr[((zz - 2) / 2.5) ** 2 + ((yy - 20) / 9) ** 2 + ((xx - 22) / 11) ** 2 <= 1] = 150
    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path, arr


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_window_names_are_exact() -> None:
    assert window_name((-160, 240)) == "w-160_240"
    assert window_name((-57.25, 310.5)) == "w-57.25_310.5"


def test_embed_on_local_cluster_then_read_by_the_same_model_only(
    client, weights, ct, tmp_path, monkeypatch
) -> None:
    path, arr = ct
    store_path = tmp_path / "emb.zarr"
    done = embed_volumes(
        client,
        [path],
        store_path,
        model=str(weights[0]),
        windows=[WINDOW],
        backend="torch",
        slices_per_task=2,
    )
    assert [(s.status, s.slices) for s in done] == [("computed", 5)]
    assert len(client.scheduler_info()["workers"]) == 2

    model_a, model_b = load_model(weights[0], "cpu"), load_model(weights[1], "cpu")
    ident_a, ident_b = ModelIdentity.of(model_a), ModelIdentity.of(model_b)
    store = EmbeddingStore(store_path, mode="r")
    vid = volume_id(arr)
    assert store.status(vid, WINDOW, ident_a) == "ok"
    assert store.status(vid, WINDOW, ident_b) == "stale"
    assert store.status(vid, (-1000.0, 1000.0), ident_a) == "missing"
    reference = Predictor(model_a, backend="torch")
    for z in range(5):
        stored = store.read(vid, WINDOW, z, ident_a)
        assert stored is not None and stored.shape == (1, 256, 16, 16)
        np.testing.assert_allclose(
            stored, reference.embed(arr[z], WINDOW).features.numpy(), atol=1e-5
        )
    assert store.read(vid, WINDOW, 0, ident_b) is None

    # A second run finds the entry and computes nothing.
    again = embed_volumes(
        client, [path], store_path, model=str(weights[0]), windows=[WINDOW], backend="torch"
    )
    assert [s.status for s in again] == ["present"]

    prompts = load_prompts_from(tmp_path, [{"label": 1, "slice": 2, "box": [10, 10, 36, 30]}])

    # The model that wrote the store segments (through the interactive core) without
    # running its encoder, propagation included.
    pred_a = Predictor(model_a, backend="torch")
    monkeypatch.setattr(model_a, "encode", _refuse)
    lines = []
    labels_a, _ = segment_volume(
        pred_a, arr, prompts, WINDOW, propagate_3d=True, store=store, log=lines.append
    )
    assert pred_a.features_source.hits >= 2 and labels_a.any()
    assert f"store: {pred_a.features_source.hits} slice embeddings read" in lines[-1]
    monkeypatch.undo()

    # Another model is refused by the store and computes its own embeddings.
    pred_b = Predictor(model_b, backend="torch")
    calls = []
    original = model_b.encode
    monkeypatch.setattr(model_b, "encode", lambda x: calls.append(1) or original(x))
    segment_volume(pred_b, arr, prompts, WINDOW, propagate_3d=True, store=store)
    assert pred_b.features_source.hits == 0 and len(calls) >= 1

    # Embedding with the other model replaces the entry; the first model's reads are refused.
    replaced = embed_volumes(
        client, [path], store_path, model=str(weights[1]), windows=[WINDOW], backend="torch"
    )
    assert [s.status for s in replaced] == ["computed"]
    store = EmbeddingStore(store_path, mode="r")
    assert (
        store.status(vid, WINDOW, ident_a) == "stale" and store.status(vid, WINDOW, ident_b) == "ok"
    )


def _refuse(images):
    raise AssertionError("the encoder ran although the store holds this slice")


def load_prompts_from(tmp_path, data):
    p = tmp_path / "prompts.json"
    p.write_text(json.dumps(data))
    return load_prompts(p)


def test_cli_embed_then_segment_reads_the_store(weights, ct, tmp_path) -> None:
    path, _ = ct
    store_path = tmp_path / "cli.zarr"
    cli = [sys.executable, "-m", "hrmedsegsam"]
    proc = subprocess.run(
        cli
        + [
            "embed",
            str(path),
            "--store",
            str(store_path),
            "--model",
            str(weights[0]),
            "--window",
            "-160",
            "240",
            "--workers",
            "1",
            "--backend",
            "torch",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 volume-window entries computed" in proc.stdout
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"label": 1, "slice": 2, "box": [10, 10, 36, 30]}]))
    for model, expect in (
        (weights[0], "store: 1 slice embeddings read"),
        (weights[1], "with other weights"),
    ):
        proc = subprocess.run(
            cli
            + [
                "segment",
                str(path),
                "--prompts",
                str(prompts),
                "-o",
                str(tmp_path / "o.nii.gz"),
                "--window",
                "-160",
                "240",
                "--model",
                str(model),
                "--store",
                str(store_path),
                "--overwrite",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert expect in proc.stdout, proc.stdout
