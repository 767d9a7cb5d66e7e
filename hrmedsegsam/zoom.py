"""Zoom for small structures: a small box, or a click whose answer is small, is segmented on
an embedded crop of the slice.

The encoder sees a slice through a 64 x 64 grid of tokens; on a 512 x 512 slice a kidney
vessel or an adrenal gland of 20-30 pixels covers one to three tokens. When the box is
small, the Predictor embeds a square crop around it (side ``ZOOM_FACTOR`` times the box's
longer side, at least ``ZOOM_MIN_SIDE`` pixels; only for boxes of at most
``ZOOM_MAX_BOX_AREA`` pixels whose crop is at most ``ZOOM_MAX_SHARE`` of the slice's longer
side) so that the structure covers several times
as many tokens, decodes there and pastes the answer back into the slice. The crop is
embedded once per box position and kept with the slice's embedding, so corrective clicks on
the same box cost no more encoder runs. Clicks alone say nothing of the structure's size:
they are decoded on the whole slice first, and when that answer has fewer than
``ZOOM_POINT_AREA`` pixels and fits a crop by the same rule, again on the crop with the first
answer as the mask prompt. Low-res logits always leave :meth:`Predictor.predict` in the
whole slice's frame (and ``mask_input`` is taken in it), so a zoomed answer can be fed back
anywhere. Propagation and fill-between never zoom.

The rules were chosen on the validation data (``ct_body_3mm`` slices 100-111 resampled to
0.8 mm, 379 x 458, and the 2D validation slices; 359 objects; ``runs``-style scripts in the
model card):

- box, small objects (< 1000 px): 0.773 on the whole slice, 0.812 with this rule; large
  objects unchanged (0.785). A tighter crop (3x, at least 160 px) cost medium objects 0.03,
  a looser one (8x, 256 px) gained less (0.798). Without the box-area cap, objects of
  2,000-4,000 px lost 0.0014 here, and on a held-out 512 slice the kidneys (boxes of about
  55 x 60 px) lost 0.09 and one kidney's propagation stopped at its start slice; with the
  cap they keep their whole-slice answer and nothing else changes (all objects 0.8036 vs
  0.8035; a cap on the box's longer side, 48 px, cost small objects 0.003).
- one click: 0.736 -> 0.746 (small 0.725 -> 0.742). Gates at 2,000 or 4,000 px gave the
  same or less; the crop without the first answer as mask prompt 0.683.
- propagation from a box with zoom on every slice: 3D Dice over six organs 0.767 -> 0.722
  (the stomach 0.751 -> 0.455), hence never there.

Coordinates: ``(r0, c0, h, w)`` is the crop's top-left row/column and size in native pixels;
boxes ``(x0, y0, x1, y1)`` and points ``(x, y)`` are native pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hrmedsegsam.model.decoder import sample_frame

ZOOM_FACTOR = 4.0
ZOOM_MIN_SIDE = 192
#: Zoom only when the crop is at most this share of the slice's longer side (a smaller
#: magnification is not worth an encoder run).
ZOOM_MAX_SHARE = 0.6
#: ... and the box covers at most this many native pixels: a kidney of 50-60 px on a 512
#: slice already spans several tokens, and zooming it made its masks worse.
ZOOM_MAX_BOX_AREA = 2500
#: Clicks alone: the whole-slice answer is decoded again on a crop when it has fewer pixels.
ZOOM_POINT_AREA = 1000
#: Logit for "surely outside" (the value ``Predictor.mask_to_logits`` uses).
OUTSIDE = -10.0

Crop = tuple[int, int, int, int]


def zoom_crop(
    box: Sequence[float],
    hw: tuple[int, int],
    points: np.ndarray | None = None,
    factor: float = ZOOM_FACTOR,
    min_side: int = ZOOM_MIN_SIDE,
    max_share: float = ZOOM_MAX_SHARE,
    max_area: float = ZOOM_MAX_BOX_AREA,
) -> Crop | None:
    """The crop ``(r0, c0, h, w)`` to segment ``box`` (native ``x0, y0, x1, y1``, sorted) on,
    or None when the box is not small enough for zooming (more than ``max_area`` pixels, or a
    crop over ``max_share`` of the slice) or a point lies outside the crop.

    The crop is a square of side ``max(factor * longer box side, min_side)`` centred on the
    box and moved inside the slice ``hw = (H, W)`` (cut to the slice where it is smaller).
    """
    H, W = hw
    x0, y0, x1, y1 = (float(v) for v in box)
    if (x1 - x0 + 1.0) * (y1 - y0 + 1.0) > max_area:
        return None
    long_side = max(x1 - x0 + 1.0, y1 - y0 + 1.0)
    side = int(round(max(factor * long_side, float(min_side))))
    if side > max_share * max(H, W):
        return None
    h, w = min(side, H), min(side, W)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    r0 = int(np.clip(round(cy - h / 2.0), 0, H - h))
    c0 = int(np.clip(round(cx - w / 2.0), 0, W - w))
    # The box itself must lie in the crop (a long thin box on a narrow slice may not).
    if x0 < c0 or y0 < r0 or x1 > c0 + w - 1 or y1 > r0 + h - 1:
        return None
    if points is not None and len(points):
        p = np.asarray(points, float)
        if (
            (p[:, 0] < c0).any()
            or (p[:, 0] > c0 + w - 1).any()
            or (p[:, 1] < r0).any()
            or (p[:, 1] > r0 + h - 1).any()
        ):
            return None
    return r0, c0, h, w


def lowres_to_crop(
    lowres: torch.Tensor,
    valid_hw: tuple[int, int],
    native_hw: tuple[int, int],
    crop: Crop,
    crop_valid_hw: tuple[int, int],
) -> torch.Tensor:
    """Low-res logits ``(B, 1, L, L)`` of the whole slice (valid part ``valid_hw``) as the
    crop's low-res logits ``(B, 1, L, L)`` (valid part ``crop_valid_hw``, padding
    :data:`OUTSIDE`), through the native grid ``native_hw``.
    """
    r0, c0, h, w = crop
    L = lowres.shape[-1]
    part = sample_frame(lowres, valid_hw, native_hw, (r0, c0, r0 + h, c0 + w))
    out = torch.full((*lowres.shape[:2], L, L), OUTSIDE, dtype=lowres.dtype, device=lowres.device)
    ch, cw = crop_valid_hw
    out[..., :ch, :cw] = F.interpolate(part, size=(ch, cw), mode="area")
    return out


def crop_logits_to_lowres(
    logits: torch.Tensor,
    native_hw: tuple[int, int],
    crop: Crop,
    valid_hw: tuple[int, int],
    size: int,
) -> torch.Tensor:
    """Native logits of the crop ``(B, M, h, w)`` as low-res logits ``(B, M, size, size)`` of
    the whole slice (valid part ``valid_hw``; outside the crop and in the padding
    :data:`OUTSIDE`).
    """
    canvas = paste(logits, native_hw, crop)
    out = torch.full(
        (*logits.shape[:2], size, size), OUTSIDE, dtype=logits.dtype, device=logits.device
    )
    vh, vw = valid_hw
    out[..., :vh, :vw] = F.interpolate(canvas, size=(vh, vw), mode="area")
    return out


def paste(logits: torch.Tensor, native_hw: tuple[int, int], crop: Crop) -> torch.Tensor:
    """Native logits of the crop ``(B, M, h, w)`` placed on the whole slice ``(B, M, H, W)``
    (:data:`OUTSIDE` elsewhere).
    """
    r0, c0, h, w = crop
    out = torch.full(
        (*logits.shape[:2], *native_hw), OUTSIDE, dtype=logits.dtype, device=logits.device
    )
    out[..., r0 : r0 + h, c0 : c0 + w] = logits
    return out
