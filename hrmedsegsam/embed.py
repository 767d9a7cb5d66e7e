"""Precompute the embeddings of many volumes on Dask into an embedding store
(``hrmedsegsam embed PATHS... --store DIR.zarr``).

The work is embarrassingly parallel (DESIGN §7): one task per volume reads its header
facts (content id, depth, the modality's default window), then one task per run of
``slices_per_task`` slices reads the volume, embeds those slices and writes them into the
store (one chunk per slice, so tasks never write the same file). Workers need the volume
files, the store folder and the weights at the same paths as the client (a shared file
system on a real cluster). Each worker process loads the model once. The client checks that
every worker's model has the weights fingerprint of its own before marking an entry
complete, so a cluster with other weights cannot fill the store with wrong embeddings.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrmedsegsam.embedding_store import EmbeddingStore, ModelIdentity, volume_id

if TYPE_CHECKING:
    from hrmedsegsam.predictor import Predictor

Window = tuple[float, float]


@dataclass(frozen=True)
class VolumeFacts:
    """What the client needs to plan one volume: its path, content id, depth and windows."""

    path: str
    vid: str
    depth: int
    windows: tuple[Window, ...]


@dataclass(frozen=True)
class EmbedSummary:
    """Per volume and window: ``"computed"`` or ``"present"`` (already in the store)."""

    path: str
    window: Window
    slices: int
    status: str


@functools.lru_cache(maxsize=2)
def _worker_predictor(model: str | None, backend: str | None, threads: int | None) -> Predictor:
    """One model per worker process (loading it per task would dominate small tasks)."""
    import torch

    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.predictor import Predictor

    if threads:
        torch.set_num_threads(threads)
    return Predictor(load_model(model, "cpu"), cache_bytes=0, backend=backend)  # no reuse: keep one


def _read(path: str, series: str | None = None) -> Any:
    from hrmedsegsam.io import read_volume

    return read_volume(path, series_uid=series)


def describe_volume(
    path: str, windows: Sequence[Window] | None, preset: str | None = None
) -> VolumeFacts:
    """A volume's content id, depth and windows (given, else the modality's default)."""
    from hrmedsegsam.intensity import resolve_window

    vol = _read(path)
    if windows:
        wins = tuple((float(lo), float(hi)) for lo, hi in windows)
    else:
        wins = (resolve_window(vol.array, None, preset, vol.modality),)
    return VolumeFacts(path, volume_id(vol.array), int(vol.array.shape[0]), wins)


def embed_slices(
    facts: VolumeFacts,
    window: Window,
    z0: int,
    z1: int,
    store_path: str,
    model: str | None,
    backend: str | None = None,
    threads: int | None = None,
) -> str:
    """Embed slices ``z0 .. z1 - 1`` of one volume under ``window`` into the store.

    Returns the worker model's weights fingerprint (the client compares it with its own).
    """
    pred = _worker_predictor(model, backend, threads)
    vol = _read(facts.path)
    if volume_id(vol.array) != facts.vid:
        raise RuntimeError(f"{facts.path} changed while its embeddings were computed")
    keys = [("embed", facts.vid, z) for z in range(z0, z1)]
    feats = np.concatenate(
        [emb.features.cpu().numpy() for _, emb in pred.embed_all(vol.array[z0:z1], window, keys)]
    )
    EmbeddingStore(store_path).write(facts.vid, window, z0, feats)
    return ModelIdentity.of(pred.model).weights


def embed_volumes(
    client: Any,
    paths: Sequence[str | Path],
    store_path: str | Path,
    model: str | None = None,
    windows: Sequence[Window] | None = None,
    preset: str | None = None,
    backend: str | None = None,
    threads: int | None = None,
    slices_per_task: int = 8,
    log: Callable[[str], None] | None = None,
) -> list[EmbedSummary]:
    """Fill the store at ``store_path`` with the embeddings of ``paths`` on a Dask ``client``.

    Entries already present for this model's weights are kept; stale ones (other weights)
    and incomplete ones are recomputed. ``threads``: encoder threads per task (default:
    the worker's torch default).

    Raises:
        RuntimeError: a worker's model differs from the client's (other weights files).
    """
    import torch

    from hrmedsegsam.encoder_backend import make_encoder
    from hrmedsegsam.model.build import load_model

    store_path = str(Path(store_path).resolve())
    loaded = load_model(model, "cpu")
    ident = ModelIdentity.of(loaded)
    # An ONNX export made here lands in the cache that local workers read, so they do not
    # each export it again.
    make_encoder(loaded, torch.device("cpu"), backend)
    store = EmbeddingStore(store_path)
    facts_list: list[VolumeFacts] = client.gather(
        [
            client.submit(describe_volume, str(Path(p).resolve()), windows, preset, pure=False)
            for p in paths
        ]
    )
    summaries: list[EmbedSummary] = []
    jobs: list[tuple[VolumeFacts, Window, list[Any]]] = []
    for facts in facts_list:
        for window in facts.windows:
            state = store.status(facts.vid, window, ident)
            if state == "ok":
                summaries.append(EmbedSummary(facts.path, window, facts.depth, "present"))
                continue
            if log is not None and state == "stale":
                prev = store.describe(facts.vid, window) or {}
                log(
                    f"{facts.path}: replacing embeddings made by {prev.get('model')} "
                    f"(weights {str(prev.get('weights'))[:12]}) with {ident.name} (weights {ident.weights[:12]})"
                )
            store.create(facts.vid, window, ident, facts.depth, source=facts.path)
            futures = [
                client.submit(
                    embed_slices,
                    facts,
                    window,
                    z0,
                    min(z0 + slices_per_task, facts.depth),
                    store_path,
                    model,
                    backend,
                    threads,
                    pure=False,
                )
                for z0 in range(0, facts.depth, slices_per_task)
            ]
            jobs.append((facts, window, futures))
    for facts, window, futures in jobs:
        prints = set(client.gather(futures))
        if prints != {ident.weights}:
            raise RuntimeError(
                f"workers embedded {facts.path} with other weights than this client's ({ident.weights[:12]}): "
                f"{sorted(p[:12] for p in prints)}; give every worker the same weights file"
            )
        store.mark_complete(facts.vid, window)
        summaries.append(EmbedSummary(facts.path, window, facts.depth, "computed"))
        if log is not None:
            log(f"{facts.path}: {facts.depth} slices embedded, window {window[0]:g}..{window[1]:g}")
    return summaries


def local_client(workers: int | None = None, processes: bool = True) -> Any:
    """A ``dask.distributed`` client on a new ``LocalCluster`` of ``workers`` single-threaded
    workers (default: the machine's cores). Close it (and its cluster) when done.
    """
    from dask.distributed import Client, LocalCluster

    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=None
    )
    return Client(cluster)


__all__ = [
    "EmbedSummary",
    "VolumeFacts",
    "describe_volume",
    "embed_slices",
    "embed_volumes",
    "local_client",
]
