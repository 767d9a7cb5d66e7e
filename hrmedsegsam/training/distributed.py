"""Data-parallel training across processes: the training commands under ``torchrun``.

``torchrun --nproc_per_node N -m hrmedsegsam train distill|decoder ...`` starts N copies of
the command; each reads the environment torchrun sets (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, the rendezvous address), joins one process group (gloo on CPU, NCCL on
CUDA, one GPU per local rank), trains on its own shard of the cache (sample ``i`` belongs
to rank ``i % N``) and averages gradients with :class:`torch.nn.parallel.DistributedDataParallel`.
Rank 0 alone logs and writes checkpoints; every rank stops at the same step (the time
budget is agreed on each step) and, at the end, the ranks compare digests of their weights.
A plain run (no torchrun) is one rank and nothing here costs anything.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (``world`` 1: a plain run)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process logs and writes checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.world > 1

    def owns(self, path: Path) -> bool:
        """Whether the cached sample ``NNNNN.npz`` / ``.npy`` at ``path`` is in this rank's
        shard (index modulo world size; any file of one index lands on the same rank).
        """
        return int(Path(path).stem.split(".")[0]) % self.world == self.rank


class StepRunner(torch.nn.Module):
    """Runs a whole training step as this module's forward pass: ``runner(fn, *args)`` is
    ``fn(model, *args)``. Wrapped in DistributedDataParallel (:func:`wrap`), every forward
    pass of a step with several (correction rounds, crops) joins one gradient exchange.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.model, *args, **kwargs)


def init_ranks(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join torchrun's process group (once per process) and return this process's
    :class:`Ranks` and the device it trains on (``cuda:LOCAL_RANK`` on CUDA). Without
    torchrun's environment (``WORLD_SIZE`` unset or 1): ``Ranks()`` and ``device``.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local), device


def wrap(module: torch.nn.Module, ranks: Ranks, device: torch.device, partial: bool = False) -> Any:
    """``module`` in DistributedDataParallel when there are other ranks, else itself.
    ``partial``: a step may leave some parameters unused (decoder steps of different kinds
    use different parts of the model, the refiner only in full steps, and ranks may take
    different kinds in one step); DDP then looks for them on every step.
    """
    if not ranks.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=partial)


def broadcast_weights(module: torch.nn.Module, ranks: Ranks) -> None:
    """Give every rank rank 0's weights and buffers, the whole model (DDP itself syncs only
    the module it wraps, and parts that are not trained, e.g. the decoder while distilling,
    would otherwise keep each rank's own random initialisation).
    """
    if not ranks.active:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. a time budget that ran out on
    one rank first: all must stop at the same step or the next gradient exchange hangs).
    """
    if not ranks.active:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """``value`` of every rank, in rank order (``[value]`` for a plain run)."""
    if not ranks.active:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of every parameter's float32 bytes, in name order.
    Buffers are left out: BatchNorm running statistics are each rank's own after the last
    forward pass (DDP hands rank 0's to all ranks at the start of the next one, and rank 0's
    are the ones checkpoints hold).
    """
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def check_in_sync(module: torch.nn.Module, ranks: Ranks) -> list[str]:
    """Digests of ``module``'s weights on every rank; raises RuntimeError when they differ
    (a rank that drifted would have trained a different model than the checkpoint holds).
    """
    digests = gather(weights_digest(module), ranks)
    if len(set(digests)) > 1:
        raise RuntimeError(f"training ranks disagree on the weights: {digests}")
    return digests


def close(ranks: Ranks) -> None:
    """Leave the process group (after the last collective call)."""
    if ranks.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
