"""Shared pytest fixtures (generic ones only; feature-specific fixtures live in their tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Where the development data live: ``$HRMEDSEGSAM_DATA`` or ``../shared/data``."""
    env = os.environ.get("HRMEDSEGSAM_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items) -> None:
    """Skip the tests marked ``cuda`` where torch sees no CUDA device."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh)")
        for item in cuda_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The project's root folder."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The development data folder (see ../shared/data/README.md); skips when absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"development data not found at {path}")
    return path


# --------------------------------------------------------------------------- models
class BoxThresholdModel:
    """A deterministic promptable model for testing the code around models.

    It implements the real :class:`~hrmedsegsam.model.base.PromptableModel` interface:
    inside the prompt box (or, with points only, the whole image) the windowed native image
    above 0.5 is foreground. Its low-res logits are the resized native mask, so the
    Predictor's coordinate mapping in and out of the model frame is exercised for real.
    """

    @staticmethod
    def build(image_size: int = 1024):
        import torch
        import torch.nn.functional as F

        from hrmedsegsam.model.base import PromptableModel
        from hrmedsegsam.model.decoder import DecoderOutput
        from hrmedsegsam.model.prompt import build_prompt_encoder

        class _Model(PromptableModel):
            name = "box-threshold"

            def __init__(self) -> None:
                super().__init__()
                self.image_size = image_size
                self.prompt_encoder = build_prompt_encoder(image_size, (image_size // 16,) * 2)

            def encode(self, images: torch.Tensor) -> torch.Tensor:
                return torch.zeros(
                    images.shape[0], 256, self.image_size // 16, self.image_size // 16
                )

            def decode(
                self,
                embedding,
                image,
                input_hw,
                coords=None,
                labels=None,
                boxes=None,
                mask_input=None,
                multimask=False,
                box_native=None,
                cache=None,
            ):
                H, W = image.shape[-2:]
                sy, sx = input_hw[0] / H, input_hw[1] / W
                region = torch.zeros(H, W, dtype=torch.bool)
                if boxes is not None:
                    x0, y0, x1, y1 = (boxes[0] / torch.tensor([sx, sy, sx, sy])).tolist()
                    region[
                        int(round(y0)) : int(round(y1)) + 1, int(round(x0)) : int(round(x1)) + 1
                    ] = True
                else:
                    region[:] = True
                fg = (image[0, 0] > 0.5) & region
                logits = torch.where(fg, 10.0, -10.0)[None, None]
                # Low-res logits over the padded frame (what mask_input feeds back).
                vh, vw = self.lowres_valid_hw(input_hw)
                lowres = torch.full((1, 1, 256, 256), -10.0)
                lowres[..., :vh, :vw] = F.interpolate(logits, size=(vh, vw), mode="nearest")
                n = 3 if multimask else 1
                score = torch.tensor([[0.95 if fg.any() else 0.05]]).expand(1, n)
                return DecoderOutput(
                    logits.expand(1, n, H, W), score, lowres.expand(1, n, 256, 256), None
                )

        return _Model().eval()


@pytest.fixture
def box_threshold_model():
    """See :class:`BoxThresholdModel`."""
    return BoxThresholdModel.build()


# The whole suite runs the encoder in PyTorch (exporting every random test model to ONNX
# would take minutes); tests/test_encoder_backend.py tests the ONNX path explicitly. Set
# HRMEDSEGSAM_ENCODER_BACKEND=onnx to run everything on ONNX Runtime instead.
os.environ.setdefault("HRMEDSEGSAM_ENCODER_BACKEND", "torch")
