"""Shared training-loop pieces: resumable checkpoints, cosine schedule, logging, time budget."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("hrmedsegsam.training")


def setup_logging(run_dir: Path) -> Path:
    """Log INFO lines to ``run_dir/train.log`` (appending, so resumed runs keep one log)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "train.log"
    for h in list(log.handlers):
        if isinstance(h, logging.FileHandler):
            log.removeHandler(h)
            h.close()
    fh = logging.FileHandler(path, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(fh)
    log.setLevel(logging.INFO)
    return path


def cosine_lr(
    step: int,
    total: int,
    base: float,
    warmup: int = 0,
    floor: float = 0.05,
    time_fraction: float = 0.0,
) -> float:
    """Linear warm-up then cosine decay to ``floor * base`` at ``total`` steps, or earlier
    when ``time_fraction`` (share of a wall-time budget used) is further along.
    """
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, max((step - warmup) / max(1, total - warmup), time_fraction))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def save_checkpoint(path: Path, **state: Any) -> None:
    """Atomically write a checkpoint dict (model/optimizer state dicts, step, ...)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint dict that :func:`save_checkpoint` wrote (None if there is no file).

    Loaded with ``weights_only=True`` (state dicts, numbers and strings only); a file that
    is not such a checkpoint is a WeightsError.
    """
    from hrmedsegsam.errors import WeightsError
    from hrmedsegsam.model.build import load_plain

    if not Path(path).is_file():
        return None
    ck = load_plain(path, "checkpoint")
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict):
        raise WeightsError(f"{path} is not a training checkpoint (no model state in it)")
    return ck


class Budget:
    """Stops a loop after ``minutes`` of wall time (None: never)."""

    def __init__(self, minutes: float | None) -> None:
        self.start = time.time()
        self.deadline = None if not minutes else self.start + 60.0 * minutes

    def fraction(self) -> float:
        """Share of the time budget used (0 without a budget)."""
        if self.deadline is None:
            return 0.0
        return min(1.0, 1.0 - (self.deadline - time.time()) / (self.deadline - self.start))

    def over(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline
