"""On-disk cache of training samples and their (teacher or student) image embeddings.

Layout of a cache folder::

    samples/00000.npz     image (float16, [0,1]), packed masks, source   (see data.save_sample)
    teacher/00000.npy     LiteMedSAM embedding (256, 64, 64) float16
    student/00000.npy     our encoder's embedding after distillation, float16

Building is resumable: existing files are kept.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from hrmedsegsam.training.data import Sample, load_sample, save_sample, to_frame

log = logging.getLogger("hrmedsegsam.training")


def sample_paths(cache: Path) -> List[Path]:
    return sorted((Path(cache) / "samples").glob("*.npz"))


def write_samples(cache: Path, samples: List[Sample]) -> int:
    """Write samples (keeps existing ones with the same index)."""
    d = Path(cache) / "samples"
    d.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(samples):
        p = d / f"{i:05d}.npz"
        if not p.exists():
            save_sample(p, s)
    return len(samples)


def embed_cache(cache: Path, model, kind: str, limit: Optional[int] = None,  # type: ignore[no-untyped-def]
                progress: bool = True, should_stop: Optional[Callable[[], bool]] = None,
                out: Optional[Path] = None, labelled_only: bool = False) -> int:
    """Compute embeddings (into ``out``, default ``cache/kind``) of every cached sample
    that lacks one; ``labelled_only``: only samples with object masks."""
    import torch
    from tqdm import tqdm

    out = Path(out) if out is not None else Path(cache) / kind
    out.mkdir(parents=True, exist_ok=True)
    paths = sample_paths(cache)[:limit]
    if labelled_only:
        paths = [p for p in paths if _has_masks(p)]
    todo = [p for p in paths if not (out / (p.stem + ".npy")).exists()]
    model.eval()
    t0 = time.time()
    for p in tqdm(todo, desc=f"{kind} embeddings", disable=not progress):
        s = load_sample(p)
        frame, _ = to_frame(s.image, model.image_size)
        with torch.inference_mode():
            emb = model.encode(frame.contiguous())[0].float().cpu().numpy().astype(np.float16)
        tmp = out / (p.stem + ".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(out / (p.stem + ".npy"))
        if should_stop is not None and should_stop():
            break
    log.info("%s embeddings: %d new in %.0f s", kind, len(todo), time.time() - t0)
    return len(todo)


def _has_masks(path: Path) -> bool:
    with np.load(path) as z:
        return int(z["shape"][0]) > 0
