"""Training under torchrun: two CPU processes (gloo) train on their shards of one cache,
average gradients with DistributedDataParallel and end with the same weights."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hrmedsegsam.training.data import Sample

N_SAMPLES = 6


def _disk(rng: np.random.Generator, size: int = 64) -> Sample:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(20, size - 20, 2)
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(8, 14)) ** 2
    img = np.clip(0.2 + 0.6 * disk + rng.normal(0, 0.03, disk.shape), 0, 1).astype(np.float32)
    return Sample(img, disk[None], "synthetic")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Samples, synthetic teacher targets of the full model's (256, 64, 64) grid, no more."""
    from hrmedsegsam.training.cache import write_samples

    root = tmp_path_factory.mktemp("ddp") / "cache"
    rng = np.random.default_rng(3)
    write_samples(root, [_disk(rng) for _ in range(N_SAMPLES)])
    (root / "teacher").mkdir()
    for i in range(N_SAMPLES):
        t = 0.1 * rng.standard_normal((256, 64, 64))
        np.save(root / "teacher" / f"{i:05d}.npy", t.astype(np.float16))
    return root


def torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        # "--" ends torchrun's options: its parser would take "--run" for "--run-path".
        [*cmd, "-m", "hrmedsegsam", "--", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def logged_digests(log: str) -> list[str]:
    m = re.findall(r"weights digest per rank: (\[.*\])", log)
    assert m, log
    return ast.literal_eval(m[-1])


def checkpoint_digest(path: Path) -> str:
    from hrmedsegsam.model.build import build_model
    from hrmedsegsam.training.distributed import weights_digest
    from hrmedsegsam.training.loop import load_checkpoint

    ck = load_checkpoint(path)
    model = build_model("hrmedsegsam", ck["config"])
    model.load_state_dict(ck["model"])
    return weights_digest(model)


def test_distillation_on_two_cpu_ranks_keeps_the_ranks_in_step(cache: Path, tmp_path: Path) -> None:
    from hrmedsegsam.training.loop import load_checkpoint

    run = tmp_path / "distill"
    r = torchrun(
        "train", "distill", "--cache", str(cache), "--run", str(run), "--steps", "4",
        "--batch", "1", "--crop", "128", "--full-frame-prob", "0", "--threads", "1",
        "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    log = (run / "train.log").read_text(encoding="utf-8")
    # each rank read its own shard: sample i belongs to rank i % 2
    assert "2 ranks; samples per rank: [3, 3]" in log
    digests = logged_digests(log)
    assert len(digests) == 2 and digests[0] == digests[1]
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["step"] == 4
    # the weights the ranks agree on are the ones in the checkpoint, and they were trained
    assert checkpoint_digest(run / "checkpoint.pt") == digests[0]
    from hrmedsegsam.model.build import build_model
    from hrmedsegsam.training.distributed import weights_digest

    torch.manual_seed(0)
    assert weights_digest(build_model("hrmedsegsam", ck["config"])) != digests[0]


def test_decoder_training_on_two_cpu_ranks_keeps_the_ranks_in_step(
    cache: Path, tmp_path: Path
) -> None:
    """Full steps (refiner) and cropped steps (coarse decoder only) mix across the ranks,
    so parameters unused on one rank in a step still get the other rank's gradient."""
    from hrmedsegsam.training.loop import load_checkpoint

    run = tmp_path / "decoder"
    r = torchrun(
        "train", "decoder", "--cache", str(cache), "--run", str(run), "--steps", "6",
        "--full-prob", "0.5", "--region-prob", "0", "--rounds", "1", "--batch", "1",
        "--threads", "1", "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "2 ranks; samples per rank: [3, 3]" in log
    # each rank embedded only its own shard, and together all samples
    assert sorted(p.name for p in (run / "embeddings").glob("*.npy")) == [
        f"{i:05d}.npy" for i in range(N_SAMPLES)
    ]
    digests = logged_digests(log)
    assert len(digests) == 2 and digests[0] == digests[1]
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6
    assert checkpoint_digest(run / "checkpoint.pt") == digests[0]
