"""HRMedSegSAM: LGViT encoder + SAM prompt encoder + ECM decoder (DESIGN §2)."""

from __future__ import annotations

from typing import Any

import torch

from hrmedsegsam.model.base import PromptableModel
from hrmedsegsam.model.decoder import DecoderOutput, ECMDecoder
from hrmedsegsam.model.encoder import LGViT
from hrmedsegsam.model.prompt import build_prompt_encoder

DEFAULT_CONFIG: dict[str, Any] = {
    "image_size": 1024,
    "encoder_dim": 96,
    "encoder_depths": (2, 6, 2),
    "encoder_heads": (6, 12, 24),
    "decoder_mlp_dim": 256,
    # First design (the defaults, so older weights files load): 16x16 patch stem, all
    # stages at 64x64. New training runs use NEW_ENCODER (model card, "encoder").
    "encoder_stem": "patch",
    "encoder_mid_dim": None,
}

#: The hierarchical encoder with a convolutional stem (see :mod:`hrmedsegsam.model.encoder`).
NEW_ENCODER: dict[str, Any] = {"encoder_stem": "conv", "encoder_mid_dim": 128, "encoder_heads": (6, 8, 24)}


class HRMedSegSAM(PromptableModel):
    """The whole promptable model; see :class:`PromptableModel` for the frame conventions."""

    name = "hrmedsegsam"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **(config or {})}
        self.config = cfg
        self.image_size = int(cfg["image_size"])
        self.image_encoder = LGViT(
            img_size=self.image_size,
            dim=int(cfg["encoder_dim"]),
            depths=tuple(cfg["encoder_depths"]),
            heads=tuple(cfg["encoder_heads"]),
            stem=str(cfg["encoder_stem"]),
            mid_dim=None if cfg["encoder_mid_dim"] is None else int(cfg["encoder_mid_dim"]),
        )
        grid = self.image_size // 16
        self.prompt_encoder = build_prompt_encoder(self.image_size, (grid, grid))
        self.mask_decoder = ECMDecoder(mlp_dim=int(cfg["decoder_mlp_dim"]))
        self.lowres_size = 4 * grid

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(images)

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
        refine: bool = True,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> DecoderOutput:
        sparse, dense = self.embed_prompts(coords, labels, boxes, mask_input)
        if mask_input is not None:
            cache = None  # the cached first-block work assumes the constant no-mask embedding
        if cache is not None:
            if "dense_pe" not in cache:
                cache["dense_pe"] = self.prompt_encoder.get_dense_pe()
            pe = cache["dense_pe"]
        else:
            pe = self.prompt_encoder.get_dense_pe()
        return self.mask_decoder(
            embedding,
            pe,
            sparse,
            dense,
            image=image,
            valid_hw=self.lowres_valid_hw(input_hw),
            multimask=multimask,
            box=box_native,
            refine=refine,
            cache=cache,
        )
