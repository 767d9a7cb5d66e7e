"""Stage 1: feature distillation of the LGViT encoder from LiteMedSAM (DESIGN §3.1).

Student input: the sample at the 1024 frame; target: the teacher's cached ``(256, 64, 64)``
embedding of the same native image at its 256 frame. Loss: MSE. To fit a CPU, most steps
use a random ``crop``-pixel window of the 1024 frame (aligned to a 32-pixel grid)
against the matching window of the target (the encoder is isotropic and its position code
is relative, so crops train the same weights at a fraction of the cost); a share of steps
uses the whole frame so the global context is learnt too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from hrmedsegsam.training.cache import sample_paths
from hrmedsegsam.training.data import load_sample, to_frame
from hrmedsegsam.training.distributed import (
    Ranks,
    any_rank,
    broadcast_weights,
    check_in_sync,
    close,
    gather,
    init_ranks,
    wrap,
)
from hrmedsegsam.training.loop import (
    Budget,
    cosine_lr,
    load_checkpoint,
    save_checkpoint,
    setup_logging,
)

if TYPE_CHECKING:
    from torch import nn

    from hrmedsegsam.model.encoder import LGViT
    from hrmedsegsam.model.hrmedsegsam import HRMedSegSAM

log = logging.getLogger("hrmedsegsam.training")


@dataclass
class DistillConfig:
    cache: Path
    run_dir: Path
    steps: int = 1500
    batch: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 50
    crop: int = 512
    full_frame_prob: float = 0.15
    ckpt_every: int = 100
    max_minutes: float | None = None
    seed: int = 0
    threads: int = 2
    init: Path | None = None  # weights file or checkpoint to start the encoder from
    progress: bool = True
    config: dict[str, object] | None = None  # model config (e.g. model.hrmedsegsam.NEW_ENCODER)
    device: str | None = None  # None: CUDA when available (bfloat16 autocast), else CPU
    refresh_every: int = 200  # re-list the cache's teacher embeddings (it may still be growing)


def _pairs(cache: Path, ranks: Ranks | None = None) -> list[Path]:
    """Cached samples with a teacher embedding (this rank's shard of them, with ``ranks``)."""
    return [
        p
        for p in sample_paths(cache)
        if (ranks is None or ranks.owns(p))
        and (Path(cache) / "teacher" / (p.stem + ".npy")).exists()
    ]


def distill(cfg: DistillConfig, model: HRMedSegSAM | None = None) -> dict[str, float]:
    """Run (or resume) distillation; returns ``{"step", "loss", "seconds"}``.

    The checkpoint ``run_dir/checkpoint.pt`` holds the whole model, optimizer and step;
    rerunning the same command continues from it (the step count carries on). Under
    torchrun each rank distils on its shard of the cache (:mod:`.distributed`).
    """
    import torch
    from tqdm import tqdm

    from hrmedsegsam.model.build import build_model, resolve_device

    torch.set_num_threads(cfg.threads)
    ranks, dev = init_ranks(resolve_device(cfg.device))
    if ranks.main:
        setup_logging(cfg.run_dir)
    ckpt_path = cfg.run_dir / "checkpoint.pt"
    if model is None:
        model = cast("HRMedSegSAM", build_model("hrmedsegsam", cfg.config))
    enc = model.image_encoder
    step = 0
    ck = load_checkpoint(ckpt_path)
    if ck is not None:
        model.load_state_dict(ck["model"])
        step = int(ck["step"])
        log.info("resumed distillation at step %d", step)
    pairs = _pairs(cfg.cache, ranks)
    if not pairs:
        raise FileNotFoundError(f"no cached samples with teacher embeddings in {cfg.cache}")
    if ranks.active:
        log.info("%d ranks; samples per rank: %s", ranks.world, gather(len(pairs), ranks))
    if ck is None and cfg.init is not None:
        _load_init(model, cfg.init, partial=True)
    elif ck is None:
        calibrate_neck(enc, [Path(cfg.cache) / "teacher" / (p.stem + ".npy") for p in pairs[:32]])
    model.to(dev)
    broadcast_weights(model, ranks)
    # The optimizer is made after the move so its state lives on the model's device.
    opt = torch.optim.AdamW(enc.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
    log.info("distilling on %s", dev)
    forward = wrap(enc, ranks, dev)
    rng = np.random.default_rng(cfg.seed + step + 1_000_003 * ranks.rank)
    S = model.image_size
    enc.train()
    budget = Budget(cfg.max_minutes)
    t0 = time.time()
    losses: list[float] = []
    bar = tqdm(
        total=cfg.steps, initial=step, desc="distill", disable=not (cfg.progress and ranks.main)
    )
    stop = False
    while step < cfg.steps and not stop:
        if step % cfg.refresh_every == 0:
            pairs = _pairs(cfg.cache, ranks) or pairs
        full = rng.random() < cfg.full_frame_prob or cfg.crop >= S
        xs, ys = [], []
        for _ in range(cfg.batch if not full else 1):
            p = pairs[int(rng.integers(len(pairs)))]
            s = load_sample(p)
            frame, (h, w) = to_frame(s.image, S)
            target = torch.from_numpy(
                np.load(Path(cfg.cache) / "teacher" / (p.stem + ".npy")).astype(np.float32)
            )
            if not full:
                c = cfg.crop
                # Aligned to 32 px: the hierarchical encoder pairs tokens 2x2 as on the whole frame.
                r0 = int(rng.integers(0, max(0, h - c // 2) // 32 + 1)) * 32
                c0 = int(rng.integers(0, max(0, w - c // 2) // 32 + 1)) * 32
                r0, c0 = min(r0, S - c), min(c0, S - c)
                frame = frame[..., r0 : r0 + c, c0 : c0 + c]
                target = target[:, r0 // 16 : (r0 + c) // 16, c0 // 16 : (c0 + c) // 16]
            xs.append(frame[0])
            ys.append(target)
        x, y = torch.stack(xs).contiguous().to(dev), torch.stack(ys).to(dev)
        lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup, time_fraction=budget.fraction())
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            pred = forward(x)
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if step % 10 == 0:
            log.info(
                "distill step %d loss %.5f lr %.2e full %s (%.1f s/step)",
                step,
                np.mean(losses[-20:]),
                lr,
                full,
                (time.time() - t0) / max(1, len(losses)),
            )
        stop = any_rank(budget.over(), ranks)
        if ranks.main and (step % cfg.ckpt_every == 0 or step == cfg.steps or stop):
            save_checkpoint(
                ckpt_path,
                model=model.state_dict(),
                optimizer=opt.state_dict(),
                step=step,
                stage="distill",
                config=dict(model.config),
            )
    bar.close()
    if ranks.main and losses and step % cfg.ckpt_every:
        save_checkpoint(
            ckpt_path,
            model=model.state_dict(),
            optimizer=opt.state_dict(),
            step=step,
            stage="distill",
            config=dict(model.config),
        )
    enc.eval()
    out = {
        "step": step,
        "loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "seconds": time.time() - t0,
    }
    if ranks.active:
        log.info("weights digest per rank: %s", check_in_sync(model, ranks))
        close(ranks)
    log.info("distillation stopped at step %d: %s", step, out)
    return out


def calibrate_neck(enc: LGViT, target_files: list[Path]) -> None:
    """Set the final LayerNorm2d's affine parameters to the teacher embeddings' per-channel
    mean and spread, so a fresh student starts at the right output scale (LiteMedSAM's
    embeddings have a per-channel std of about 0.1, a fresh LayerNorm outputs 1).
    """
    import torch

    t = torch.stack([torch.from_numpy(np.load(f).astype(np.float32)) for f in target_files])
    mean = t.mean(dim=(0, 2, 3))
    std = t.std(dim=(0, 2, 3))
    ln = enc.neck[-1]
    with torch.no_grad():
        ln.bias.copy_(mean)
        ln.weight.copy_(std)
    log.info(
        "neck calibrated to the teacher: mean |bias| %.4f, mean weight %.4f",
        float(mean.abs().mean()),
        float(std.mean()),
    )


def init_config(path: Path | None) -> dict[str, object] | None:
    """The model config stored in a weights file or training checkpoint (None: none stored,
    i.e. the default layout, or no file).
    """
    from hrmedsegsam.model.build import load_plain

    if path is None or not Path(path).is_file():
        return None
    payload = load_plain(path, "--init file")
    cfg = payload.get("config") if isinstance(payload, dict) else None
    return dict(cfg) if isinstance(cfg, dict) else None


def _load_init(model: nn.Module, path: Path, partial: bool = False) -> None:
    """Load weights from a weights file or checkpoint; ``partial``: only the tensors whose
    name and shape match (a new encoder layout keeps what it shares with the old one).
    """
    from hrmedsegsam.errors import WeightsError
    from hrmedsegsam.model.build import FORMAT, load_plain

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"--init file not found: {path}")
    payload = load_plain(path, "--init file")
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        state = payload.get("state_dict")
    else:  # a training checkpoint
        state = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(
        hasattr(v, "is_floating_point") for v in state.values()
    ):
        raise WeightsError(
            f"--init file {path} is neither an HRMedSegSAM weights file nor a training checkpoint"
        )
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if partial:
        own = model.state_dict()
        keep = {
            k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)
        }
        model.load_state_dict(keep, strict=False)
        log.info("initialised %d of %d tensors from %s", len(keep), len(own), path)
        return
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(
            f"--init file {path} does not match the model ({str(exc).splitlines()[0]})"
        ) from None
    log.info("initialised from %s", path)
