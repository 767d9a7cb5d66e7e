"""The interface every promptable model offers the Predictor (ours and LiteMedSAM).

Coordinate frame (:mod:`hrmedsegsam.model.frame` owns it): a slice of native size
``(H, W)`` is resized so its longest side is ``image_size`` (giving ``input_hw``) and
zero-padded bottom/right to ``image_size`` square. Prompts reach a model in pixels of that
frame, ``x`` = column, ``y`` = row. Low-resolution logits are ``(B, M, 256, 256)`` over the
padded frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# (row0, col0, row1, col1), half-open, in native pixels.
Roi = tuple[int, int, int, int]


@dataclass
class DecoderOutput:
    """Native-resolution logits ``(B, M, H, W)``, IoU predictions ``(B, M)``, low-res logits
    ``(B, M, 256, 256)`` in the padded model frame, and the refined ROI ``(r0, c0, r1, c1)``.
    """

    logits: torch.Tensor
    iou: torch.Tensor
    lowres: torch.Tensor
    roi: Roi | None


class PromptableModel(nn.Module):
    """Base class: ``encode`` an image once, ``decode`` many prompts against it."""

    name: str = ""
    image_size: int = 1024
    lowres_size: int = 256
    prompt_encoder: nn.Module

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, image_size, image_size)`` in [0, 1] -> ``(B, 256, 64, 64)``."""
        raise NotImplementedError

    def lowres_valid_hw(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Rows/cols of the low-res frame covered by an image of ``input_hw`` frame pixels."""
        f = self.lowres_size / self.image_size
        return math.ceil(input_hw[0] * f), math.ceil(input_hw[1] * f)

    def embed_prompts(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse ``(B, T, 256)`` and dense ``(B, 256, 64, 64)`` prompt embeddings.

        coords ``(B, N, 2)`` frame pixels (x, y); labels ``(B, N)`` 1 positive / 0 negative
        (-1 padding); boxes ``(B, 4)`` frame pixels x0, y0, x1, y1; mask_input
        ``(B, 1, 256, 256)`` low-res logits.
        """
        points = (coords, labels) if coords is not None else None
        return self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)

    def decode(
        self,
        embedding: torch.Tensor,
        image: torch.Tensor,
        input_hw: tuple[int, int],
        coords: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = False,
        box_native: tuple[float, float, float, float] | None = None,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> DecoderOutput:
        """Masks for prompts on an embedded image.

        embedding ``(B, 256, 64, 64)``; image: the native slice ``(B, 3, H, W)`` in [0, 1];
        input_hw: the resized image's size in the frame; box_native: the prompt box in native
        pixels (x0, y0, x1, y1), used to place the refinement region; cache: a dict kept
        with the embedding where a model may keep prompt-independent work (inference only).
        """
        raise NotImplementedError
