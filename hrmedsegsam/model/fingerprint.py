"""A model's identity for caches: what it is and what its weights are.

Exported encoders and stored embeddings are only valid for the exact weights that made
them; both are keyed by :func:`model_fingerprint`, so a retrained or different model never
reads a stale entry.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn


def model_fingerprint(model: nn.Module) -> str:
    """Hex digest (32 characters) of ``model``'s class, name, config and every tensor of its
    state dict (names, dtypes, shapes and values). Cost: one pass over the weights (a few
    ms for HRMedSegSAM's 8 MB, tens of ms for LiteMedSAM).
    """
    h = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    head = {"class": type(model).__qualname__, "name": getattr(model, "name", ""), "config": config}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


__all__ = ["model_fingerprint"]
