"""The model frame: the one owner of "longest side to ``size``, pad, map prompts in".

A native slice of ``(H, W)`` pixels is resized (bilinear, antialiased when shrinking) so
that its longest side is ``size`` pixels, giving ``input_hw = (h, w)``, and zero-padded
bottom/right to a ``size x size`` square. Prompts reach a model in pixels of that frame:
a native pixel position ``(x, y)`` (x = column, y = row) becomes ``(x * w / W, y * h / H)``.
Masks leave the frame through the decoder (:func:`hrmedsegsam.model.decoder.sample_frame`
samples the padded low-res map at native pixel centres, using the valid part that
:meth:`PromptableModel.lowres_valid_hw` computes from ``input_hw``).

The Predictor, training and evaluation all go through these functions, so the model sees
the same geometry everywhere (segment-anything's ``ResizeLongestSide`` plays this role).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def resized_hw(native_hw: tuple[int, int], size: int) -> tuple[int, int]:
    """``(h, w)`` of a ``(H, W)`` slice in a frame of ``size``: longest side ``size``, rounded."""
    H, W = native_hw
    scale = size / max(H, W)
    return max(1, int(H * scale + 0.5)), max(1, int(W * scale + 0.5))


def prompt_scale(native_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[float, float]:
    """``(sx, sy)``: frame pixels per native pixel along x (columns) and y (rows)."""
    return input_hw[1] / native_hw[1], input_hw[0] / native_hw[0]


def to_frame(image01: np.ndarray | torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """A native image in [0, 1] as the model's input frame.

    Args:
        image01: ``(H, W)`` or ``(B, 1|3, H, W)`` (numpy or torch; only the first channel is
            used, the frame replicates it to 3 channels). Stays on its device.
        size: the frame's side (the model's ``image_size``).

    Returns:
        The frame ``(B, 3, size, size)`` float32 (an expanded view: call ``.contiguous()``
        before writing to it) and ``input_hw``, the resized image's ``(h, w)`` inside it.
    """
    x = torch.as_tensor(image01, dtype=torch.float32)
    if x.ndim == 2:
        x = x[None, None]
    H, W = x.shape[-2:]
    h, w = resized_hw((H, W), size)
    shrink = size < max(H, W)
    resized = F.interpolate(
        x[:, :1], size=(h, w), mode="bilinear", align_corners=False, antialias=shrink
    )
    frame = F.pad(resized, (0, size - w, 0, size - h))
    return frame.expand(-1, 3, -1, -1), (h, w)


def points_to_frame(
    points_xy: np.ndarray | Sequence[Sequence[float]],
    native_hw: tuple[int, int],
    input_hw: tuple[int, int],
) -> np.ndarray:
    """Native pixel positions ``(..., 2)`` as ``(x, y)`` -> frame pixels, float32 ``(..., 2)``."""
    sx, sy = prompt_scale(native_hw, input_hw)
    return (np.asarray(points_xy, dtype=np.float64)[..., :2] * [sx, sy]).astype(np.float32)


def boxes_to_frame(
    boxes_xyxy: np.ndarray | Sequence[Sequence[float]],
    native_hw: tuple[int, int],
    input_hw: tuple[int, int],
) -> np.ndarray:
    """Native boxes ``(..., 4)`` as ``(x0, y0, x1, y1)`` -> frame pixels, float32 ``(..., 4)``."""
    sx, sy = prompt_scale(native_hw, input_hw)
    return (np.asarray(boxes_xyxy, dtype=np.float64) * [sx, sy, sx, sy]).astype(np.float32)


def mask_to_lowres(
    mask: np.ndarray, valid_hw: tuple[int, int], size: int, strength: float = 10.0
) -> np.ndarray:
    """A native bool mask ``(H, W)`` as low-res logits ``(size, size)`` float32 (the
    decoder's ``mask_input``): area-resampled onto the frame's valid part ``valid_hw``, inside
    ``+strength``, outside and padding ``-strength``, fractional pixels in between.
    """
    frac = F.interpolate(
        torch.from_numpy(np.asarray(mask, np.float32))[None, None], size=valid_hw, mode="area"
    )
    out = np.full((size, size), -strength, np.float32)
    vh, vw = valid_hw
    out[:vh, :vw] = ((frac[0, 0].numpy() * 2.0 - 1.0) * strength).astype(np.float32)
    return out
