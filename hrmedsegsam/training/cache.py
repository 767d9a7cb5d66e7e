"""On-disk cache of training samples and their (teacher or student) image embeddings.

Layout of a cache folder::

    samples/00000.npz     image (float16, [0,1]), packed masks, source   (see data.save_sample)
    teacher/00000.npy     LiteMedSAM embedding (256, 64, 64) float16
    student/00000.npy     our encoder's embedding after distillation, float16

    plan.json             the frame plan the samples were made from (data.frame_plan)

Building is resumable: existing files are kept, and samples are made and teacher-embedded
one at a time in plan order, so a distillation run can start on the first ones while the
cache grows. A cache made from another plan is refused (its indices would mean other frames).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hrmedsegsam.errors import InputError
from hrmedsegsam.training.data import (
    FrameSpec,
    Sample,
    VolumeCache,
    load_sample,
    make_sample,
    save_sample,
    to_frame,
)

if TYPE_CHECKING:
    from hrmedsegsam.model.base import PromptableModel
    from hrmedsegsam.training.distributed import Ranks

log = logging.getLogger("hrmedsegsam.training")


def sample_paths(cache: Path) -> list[Path]:
    return sorted((Path(cache) / "samples").glob("*.npz"))


def write_plan(cache: Path, specs: list[FrameSpec]) -> None:
    """Record ``specs`` in ``cache/plan.json``; refuse a cache that was made from another plan."""
    import dataclasses
    import json

    path = Path(cache) / "plan.json"
    text = json.dumps([dataclasses.asdict(s) for s in specs])
    if path.is_file():
        if path.read_text(encoding="utf-8") != text:
            raise InputError(
                f"{cache} was built from another frame plan (other data or seed): use a new --cache folder"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("plan.json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def build_cache(
    cache: Path,
    specs: list[FrameSpec],
    volumes: VolumeCache,
    teacher: PromptableModel | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> int:
    """Make each planned sample that is missing and, with a ``teacher``, its embedding, one
    index at a time (so the cache is usable while it grows); ``limit``: first N only.
    Returns the number of teacher embeddings present.
    """
    import torch
    from tqdm import tqdm

    write_plan(cache, specs)
    sd, td = Path(cache) / "samples", Path(cache) / "teacher"
    sd.mkdir(parents=True, exist_ok=True)
    td.mkdir(parents=True, exist_ok=True)
    if teacher is not None:
        teacher.eval()
    done = 0
    for i, spec in enumerate(tqdm(specs[:limit], desc="cache", disable=not progress)):
        sp, tp = sd / f"{i:05d}.npz", td / f"{i:05d}.npy"
        sample = None
        if not sp.exists():
            sample = make_sample(spec, volumes)
            tmp = sd / f"{i:05d}.tmp.npz"
            save_sample(tmp, sample)
            tmp.replace(sp)
        if teacher is not None and not tp.exists():
            sample = sample if sample is not None else load_sample(sp)
            frame, _ = to_frame(sample.image, teacher.image_size)
            with torch.inference_mode():
                emb = teacher.encode(frame.contiguous())[0].float().cpu().numpy().astype(np.float16)
            tmp = td / f"{i:05d}.tmp.npy"
            np.save(tmp, emb)
            tmp.replace(tp)
        done += int(tp.exists())
    return done


def write_samples(cache: Path, samples: list[Sample]) -> int:
    """Write samples (keeps existing ones with the same index)."""
    d = Path(cache) / "samples"
    d.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(samples):
        p = d / f"{i:05d}.npz"
        if not p.exists():
            save_sample(p, s)
    return len(samples)


def embed_cache(
    cache: Path,
    model: PromptableModel,
    kind: str,
    limit: int | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    out: Path | None = None,
    labelled_only: bool = False,
    ranks: Ranks | None = None,
) -> int:
    """Compute embeddings (into ``out``, default ``cache/kind``) of every cached sample
    that lacks one; ``labelled_only``: only samples with object masks; ``ranks``: only this
    training rank's shard (:mod:`.distributed`).
    """
    import torch
    from tqdm import tqdm

    out = Path(out) if out is not None else Path(cache) / kind
    out.mkdir(parents=True, exist_ok=True)
    paths = sample_paths(cache)[:limit]
    if ranks is not None:
        paths = [p for p in paths if ranks.owns(p)]
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
