"""Teacher initialisation: start our prompt encoder and coarse decoder from LiteMedSAM's.

* prompt encoder: copied as is. Prompts are normalised by the frame size inside SAM's
  prompt encoder, so weights learned in LiteMedSAM's 256 frame are valid in our 1024 frame.
* coarse mask decoder: every tensor has the same shape except the two-way transformer's
  MLPs (LiteMedSAM: 256 -> 2048 -> 256; ours: 256 -> 256 -> 256). For each MLP we keep the
  hidden units with the largest ``||W1 row|| * ||W2 column||`` (with their biases); the
  dropped units' mean contribution can be folded into the output bias when sample inputs
  are given.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from hrmedsegsam.model.hrmedsegsam import HRMedSegSAM
    from hrmedsegsam.model.litemedsam import LiteMedSAM

log = logging.getLogger("hrmedsegsam.training")


def _prune_mlp(src: nn.Module, dst: nn.Module, mean_hidden: torch.Tensor | None = None) -> None:
    w1, b1 = src.lin1.weight.data, src.lin1.bias.data  # (H, C), (H,)
    w2, b2 = src.lin2.weight.data, src.lin2.bias.data  # (C, H), (C,)
    k = dst.lin1.weight.shape[0]
    score = w1.norm(dim=1) * w2.norm(dim=0)
    if mean_hidden is not None:
        score = score * (mean_hidden.abs() + 1e-6)
    keep = torch.topk(score, k).indices.sort().values
    dst.lin1.weight.data.copy_(w1[keep])
    dst.lin1.bias.data.copy_(b1[keep])
    dst.lin2.weight.data.copy_(w2[:, keep])
    bias = b2.clone()
    if mean_hidden is not None:
        drop = torch.ones(w1.shape[0], dtype=torch.bool)
        drop[keep] = False
        bias += w2[:, drop] @ mean_hidden[drop]
    dst.lin2.bias.data.copy_(bias)


def init_from_teacher(
    model: HRMedSegSAM,
    teacher: LiteMedSAM,
    sample_inputs: dict[str, torch.Tensor] | None = None,
) -> dict[str, int]:
    """Copy LiteMedSAM's prompt encoder and mask decoder into ``model`` (in place).

    sample_inputs: optional ``{"embedding", "sparse", "dense"}`` teacher tensors used to
    measure each MLP's mean hidden activation (better unit choice and bias folding).
    Returns counts of copied / pruned tensors.
    """
    model.prompt_encoder.load_state_dict(teacher.prompt_encoder.state_dict(), strict=True)
    src = teacher.mask_decoder.state_dict()
    dst = model.mask_decoder.coarse.state_dict()
    copied = 0
    for k, v in dst.items():
        if k in src and src[k].shape == v.shape:
            dst[k] = src[k].clone()
            copied += 1
    model.mask_decoder.coarse.load_state_dict(dst, strict=True)
    means: dict[str, torch.Tensor] = {}
    if sample_inputs is not None:
        hooks = []
        tmlps = {
            n: m for n, m in teacher.mask_decoder.transformer.named_modules() if n.endswith("mlp")
        }
        for n, m in tmlps.items():

            def hook(
                mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, n: str = n
            ) -> None:
                h = (
                    torch.relu(mod.lin1(inp[0]))
                    if not hasattr(mod, "act")
                    else mod.act(mod.lin1(inp[0]))
                )
                means[n] = h.reshape(-1, h.shape[-1]).mean(0).detach()

            hooks.append(m.register_forward_hook(hook))
        with torch.no_grad():
            teacher.mask_decoder(
                image_embeddings=sample_inputs["embedding"],
                image_pe=teacher.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sample_inputs["sparse"],
                dense_prompt_embeddings=sample_inputs["dense"],
                multimask_output=False,
            )
        for h in hooks:
            h.remove()
    pruned = 0
    smods = dict(teacher.mask_decoder.transformer.named_modules())
    for n, m in model.mask_decoder.coarse.transformer.named_modules():
        if n.endswith("mlp"):
            _prune_mlp(smods[n], m, means.get(n))
            pruned += 1
    log.info(
        "teacher init: %d decoder tensors copied, %d MLPs pruned to %d units",
        copied,
        pruned,
        model.mask_decoder.coarse.transformer.layers[0].mlp.lin1.weight.shape[0],
    )
    return {"copied": copied, "pruned": pruned}
