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
NEW_ENCODER: dict[str, Any] = {
    "encoder_stem": "conv",
    "encoder_mid_dim": 128,
    "encoder_heads": (6, 8, 24),
}


# Ranges a config may take: wide around the shipped one, narrow enough that no config read
# from a file can make the constructor allocate more than a few hundred MB.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "image_size": (64, 2048),
    "encoder_dim": (4, 512),
    "decoder_mlp_dim": (1, 4096),
}
_STAGES = 3
_MAX_BLOCKS = 32


def check_config(config: object) -> dict[str, Any]:
    """The full config (defaults filled in) if ``config`` is a valid HRMedSegSAM config.

    Checks key names, types and ranges before anything is built; raises ValueError naming
    the first problem. ``None`` means the defaults.
    """
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ValueError(f"the config is a {type(config).__name__}, not a mapping")
    unknown = sorted(str(k) for k in config if k not in DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"the config has unknown keys {unknown[:3]}")
    cfg = {**DEFAULT_CONFIG, **config}

    def integer(value: object, what: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(
                f"config {what} must be an integer in {lo}..{hi}, got {str(value)[:40]!r}"
            )
        return value

    for key, (lo, hi) in _INT_RANGES.items():
        integer(cfg[key], key, lo, hi)
    if cfg["image_size"] % 16:
        raise ValueError(f"config image_size must be a multiple of 16, got {cfg['image_size']}")
    stages = []
    for key in ("encoder_depths", "encoder_heads"):
        seq = cfg[key]
        if not isinstance(seq, (list, tuple)) or len(seq) != _STAGES:
            raise ValueError(
                f"config {key} must be a list of {_STAGES} integers, got {str(seq)[:40]!r}"
            )
        stages.append(
            [
                integer(v, f"{key} entry", 0 if key == "encoder_depths" else 1, _MAX_BLOCKS)
                for v in seq
            ]
        )
    depths, heads = stages
    if sum(depths) > _MAX_BLOCKS:
        raise ValueError(
            f"config encoder_depths add up to {sum(depths)} blocks; at most {_MAX_BLOCKS}"
        )
    if cfg["encoder_stem"] not in ("patch", "conv"):
        raise ValueError(
            f"config encoder_stem must be 'patch' or 'conv', got {str(cfg['encoder_stem'])[:40]!r}"
        )
    dim, mid = cfg["encoder_dim"], cfg["encoder_mid_dim"]
    if mid is not None:
        integer(mid, "encoder_mid_dim", *_INT_RANGES["encoder_dim"])
    for d, h in zip((dim, mid or dim, dim), heads, strict=True):
        if d % h or (d // h) % 4:
            raise ValueError(
                f"config: {d} encoder channels do not split into {h} heads of a multiple of 4"
            )
    return cfg


class HRMedSegSAM(PromptableModel):
    """The whole promptable model; see :class:`PromptableModel` for the frame conventions."""

    name = "hrmedsegsam"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        cfg = check_config(config)
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
        cache: dict[str, torch.Tensor] | None = None,
        refine: bool = True,
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
