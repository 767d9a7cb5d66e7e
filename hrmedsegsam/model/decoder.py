"""ECM: the efficient cross-multiscale mask decoder (DESIGN §2).

Two paths:

* coarse: SAM's two-way transformer over the 64x64 image embedding and the prompt tokens,
  mask tokens (1 single + 3 multimask) and an IoU head; 256x256 low-resolution logits in
  the padded model frame;
* cross-scale refinement at the slice's native resolution: a light conv stem over the
  native slice gives 1/4 and 1/2 scale detail features; each mask's hypernetwork token is
  projected to every scale and adds a residual to the (bilinearly upsampled) logits, 1/4
  -> 1/2 -> full. It runs only inside a region of interest around the coarse mask (plus a
  margin), so its cost and memory follow the object, not the image, and within a pixel
  budget (160 x 160 by default): a larger region is refined on a proportionally coarser
  grid whose correction is upsampled onto the native-resolution logits, so one prompt
  costs about the same for any object. The residual heads start at zero, so an untrained
  refiner reproduces plain bilinear upsampling.

For prompts on a cached image (no mask input) the coarse path runs in the exact factored
form of :mod:`hrmedsegsam.model.factored`.
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from hrmedsegsam.model._sam import sam_modeling
from hrmedsegsam.model.base import DecoderOutput, Roi
from hrmedsegsam.model.factored import ScrambledFeatures, factored_coarse, supports_factored

Upscaled: TypeAlias = "torch.Tensor | ScrambledFeatures"


def _attend(mod: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM ``Attention`` ``mod`` on ``(B, N, C)`` inputs, via scaled_dot_product_attention."""
    h = mod.num_heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.reshape(b, n, h, c // h).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        heads(mod.q_proj(q)), heads(mod.k_proj(k)), heads(mod.v_proj(v))
    )
    b, _, n, d = out.shape
    return mod.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


def _two_way(
    transformer: nn.Module, keys: torch.Tensor, key_pe: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's ``TwoWayTransformer.forward`` on flattened ``(B, N, C)`` image tokens (the
    plain path, used in training and with mask prompts; see :mod:`factored` for the per-image
    cached one).
    """
    queries = tokens
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = _attend(layer.self_attn, queries, queries, queries)
        else:
            q = queries + tokens
            queries = queries + _attend(layer.self_attn, q, q, queries)
        queries = layer.norm1(queries)
        k = keys + key_pe
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        queries = layer.norm2(queries + _attend(t2i, queries + tokens, k, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(keys + _attend(i2t, k, queries + tokens, queries))
    attn = _attend(transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys)
    return transformer.norm_final_attn(queries + attn), keys


def _coarse_decoder_class() -> type:
    # Found at run time (segment_anything.modeling, no stubs): a base of type Any.
    base: Any = sam_modeling().MaskDecoder

    class CoarseMaskDecoder(base):
        """SAM's mask decoder, also returning the per-mask hypernetwork vectors and the
        upscaled embedding the refiner needs.
        """

        def predict_all(
            self,
            image_embeddings: torch.Tensor,
            image_pe: torch.Tensor,
            sparse_prompt_embeddings: torch.Tensor,
            dense_prompt_embeddings: torch.Tensor,
            cache: dict[str, torch.Tensor] | None = None,
            select: slice = slice(None),
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Upscaled]:
            """Return ``masks (B, m, 256, 256)``, ``iou (B, m)``, ``hyper (B, m, C/8)`` for
            the output masks ``select`` picks (default all 4: single, then 3 multimask), and
            the upscaled image features ``(B, C/8, 256, 256)`` (a tensor, or
            :class:`ScrambledFeatures` from the cached path), one image embedding per prompt set.

            cache: per-image dict for prompt-independent work (the factored path); only
            valid while the dense prompt is the constant no-mask embedding and all prompt
            sets share one image (the caller passes None otherwise).
            """
            output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
            output_tokens = output_tokens.unsqueeze(0).expand(
                sparse_prompt_embeddings.size(0), -1, -1
            )
            tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
            b, c, h, w = image_embeddings.shape
            upscaled: Upscaled
            factored = (
                cache is not None
                and b == 1
                and tokens.shape[0] == 1
                and not torch.is_grad_enabled()
                and supports_factored(self.transformer, self.output_upscaling)
            )
            if factored:
                assert cache is not None
                if "keys" not in cache:
                    cache["keys"] = (
                        (image_embeddings[0] + dense_prompt_embeddings[0])
                        .flatten(1)
                        .t()
                        .contiguous()
                    )
                    cache["key_pe"] = image_pe[0].flatten(1).t().contiguous()
                hs, upscaled = factored_coarse(
                    self.transformer,
                    self.output_upscaling,
                    cache["keys"],
                    cache["key_pe"],
                    tokens,
                    cache,
                )
            else:
                keys = (image_embeddings + dense_prompt_embeddings).flatten(2).transpose(1, 2)
                key_pe = image_pe.flatten(2).transpose(1, 2).expand(b, -1, -1)
                hs, src = _two_way(self.transformer, keys, key_pe, tokens)
                upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
            iou = self.iou_prediction_head(hs[:, 0, :])[:, select]
            mask_tokens_out = hs[:, 1 : (1 + self.num_mask_tokens), :]
            idx = range(self.num_mask_tokens)[select]
            hyper = torch.stack(
                [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in idx], dim=1
            )
            if isinstance(upscaled, ScrambledFeatures):
                masks = upscaled.dot(hyper)
            else:
                bu, cu, hu, wu = upscaled.shape
                masks = (hyper @ upscaled.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
            return masks, iou, hyper, upscaled

    return CoarseMaskDecoder


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` in channels-last memory order (same values): the refiner's
    3x3 convolutions over few channels ran ~1.4x faster on the CPU that way (oneDNN's
    native layout; the plain order is reordered inside each convolution).
    """
    return x.contiguous(memory_format=torch.channels_last)


def _cat_nhwc(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``_nhwc(torch.cat(tensors, 1))`` for ``(B, C_i, H, W)`` tensors, built in channels-last
    order directly (a concatenation of their NHWC views): ``torch.cat`` returns the plain
    order whenever the inputs' layouts differ (a one-channel map never counts as
    channels-last), and concatenating then reordering took 3.5x as long at 140 x 140 on the
    CPU.
    """
    return torch.cat([t.permute(0, 2, 3, 1) for t in tensors], -1).permute(0, 3, 1, 2)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(1, cout), nn.GELU()
    )


class CrossScaleRefiner(nn.Module):
    """Refines low-resolution mask logits to native resolution inside a region of interest.

    ``forward(image, coarse, hyper, upscaled_roi)``:
      image: ``(B, 3, h, w)`` native pixels of the ROI in [0, 1], h and w multiples of 4;
      coarse: ``(B, M, h, w)`` coarse logits bilinearly sampled at the ROI's native pixels;
      hyper: ``(B, M, token_dim)`` the masks' hypernetwork vectors;
      upscaled_roi: ``(B, token_dim, h/4, w/4)`` decoder features sampled over the ROI.
    Returns refined logits ``(B, M, h, w)``.
    """

    def __init__(self, token_dim: int = 32, c2: int = 16, c4: int = 32, c1: int = 8) -> None:
        super().__init__()
        self.stem2 = _conv(3, c2, stride=2)
        self.stem4 = _conv(c2, c4, stride=2)
        self.fuse4 = nn.Sequential(_conv(c4 + token_dim + 1, c4), nn.Conv2d(c4, c4, 3, padding=1))
        self.fuse2 = nn.Sequential(_conv(c2 + c4 + 1, c2), nn.Conv2d(c2, c2, 3, padding=1))
        self.fuse1 = nn.Sequential(_conv(3 + c2 + 1, c1), nn.Conv2d(c1, c1, 3, padding=1))
        self.hyper4 = nn.Linear(token_dim, c4)
        self.hyper2 = nn.Linear(token_dim, c2)
        self.hyper1 = nn.Linear(token_dim, c1)
        for head in (self.hyper4, self.hyper2, self.hyper1):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @staticmethod
    def _hyper_dot(hyper: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bmc,bchw->bmhw", hyper, feats)

    def forward(
        self,
        image: torch.Tensor,
        coarse: torch.Tensor,
        hyper: torch.Tensor,
        upscaled_roi: torch.Tensor,
    ) -> torch.Tensor:
        h, w = image.shape[-2:]
        # Channels-last from the start: the convolutions keep their input's layout, so every
        # feature map below is channels-last too.
        image = _nhwc(image)
        d2 = self.stem2(image)
        d4 = self.stem4(d2)
        # Residuals are accumulated coarse-to-fine and added to the coarse logits once, so a
        # refiner with zero heads returns the coarse logits unchanged.
        coarse4 = F.interpolate(coarse, size=d4.shape[-2:], mode="bilinear", align_corners=False)
        f4 = self.fuse4(_cat_nhwc([d4, upscaled_roi, coarse4.mean(1, keepdim=True)]))
        delta = self._hyper_dot(self.hyper4(hyper), f4)

        delta = F.interpolate(delta, size=d2.shape[-2:], mode="bilinear", align_corners=False)
        prior2 = (
            F.interpolate(coarse, size=d2.shape[-2:], mode="bilinear", align_corners=False) + delta
        )
        f4_up = F.interpolate(f4, size=d2.shape[-2:], mode="bilinear", align_corners=False)
        f2 = self.fuse2(_cat_nhwc([d2, f4_up, prior2.mean(1, keepdim=True)]))
        delta = delta + self._hyper_dot(self.hyper2(hyper), f2)

        delta = F.interpolate(delta, size=(h, w), mode="bilinear", align_corners=False)
        f2_up = F.interpolate(f2, size=(h, w), mode="bilinear", align_corners=False)
        f1 = self.fuse1(_cat_nhwc([image, f2_up, (coarse + delta).mean(1, keepdim=True)]))
        return coarse + delta + self._hyper_dot(self.hyper1(hyper), f1)


def _sample_rows(
    start: int, stop: int, count: int, native: int, valid: int, dev: torch.device, dt: torch.dtype
) -> torch.Tensor:
    """Low-res map coordinates (pixel units, pixel centres at integers) of ``count`` evenly
    spaced native pixel centres spanning ``[start, stop)`` along one axis.
    """
    xs = start + (torch.arange(count, device=dev, dtype=dt) + 0.5) * ((stop - start) / count)
    return xs * (valid / native) - 0.5


def sample_frame(
    lowres: torch.Tensor | ScrambledFeatures,
    valid_hw: tuple[int, int],
    native_hw: tuple[int, int],
    roi: Roi,
    out_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Bilinearly sample a padded-frame map at native pixel centres of ``roi``.

    lowres: ``(B, C, S, S)`` map over the padded model frame (or the factored path's
    :class:`ScrambledFeatures`); valid_hw: the part of it ``(rows, cols)`` covered by the
    image (the rest is padding); native_hw: the slice's ``(H, W)``; roi: ``(r0, c0, r1, c1)``
    native pixels, may extend past the image (padding rows/cols are sampled by clamping).
    out_hw: sample at this grid instead of one sample per native pixel (still spanning the
    roi). Returns ``(B, C, rows, cols)``.
    """
    r0, c0, r1, c1 = roi
    H, W = native_hw
    vh, vw = valid_hw
    oh, ow = out_hw if out_hw is not None else (r1 - r0, c1 - c0)
    if isinstance(lowres, ScrambledFeatures):
        data = lowres.computed()
        dev, dt = data.device, data.dtype
        return lowres.sample(
            _sample_rows(r0, r1, oh, H, vh, dev, dt), _sample_rows(c0, c1, ow, W, vw, dev, dt)
        )
    S_h, S_w = lowres.shape[-2:]
    if (vh, vw) == (S_h, S_w) and roi == (0, 0, H, W) and (oh, ow) == (H, W):
        # The whole map onto the whole slice: the same samples (border clamping included)
        # as the grid below, without building a grid (half the time for 256 -> 512).
        return F.interpolate(lowres, size=(H, W), mode="bilinear", align_corners=False)
    dev, dt = lowres.device, lowres.dtype
    # Native pixel centre -> map pixel coordinate -> normalised [-1, 1] over the map,
    # align_corners=False convention.
    gy = (2 * _sample_rows(r0, r1, oh, H, vh, dev, dt) + 1) / S_h - 1
    gx = (2 * _sample_rows(c0, c1, ow, W, vw, dev, dt) + 1) / S_w - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    grid = grid.unsqueeze(0).expand(lowres.shape[0], -1, -1, -1)
    return F.grid_sample(lowres, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ECMDecoder(nn.Module):
    """Coarse two-way-transformer decoder plus the native-resolution cross-scale refiner."""

    def __init__(
        self,
        transformer_dim: int = 256,
        mlp_dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        num_multimask_outputs: int = 3,
        roi_margin: float = 0.15,
        roi_min_margin: int = 8,
        refine_budget: int | None = 160 * 160,
    ) -> None:
        super().__init__()
        modeling = sam_modeling()
        self.coarse = _coarse_decoder_class()(
            transformer_dim=transformer_dim,
            transformer=modeling.TwoWayTransformer(
                depth=depth, embedding_dim=transformer_dim, mlp_dim=mlp_dim, num_heads=num_heads
            ),
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        self.refiner = CrossScaleRefiner(token_dim=transformer_dim // 8)
        self.roi_margin = roi_margin
        self.roi_min_margin = roi_min_margin
        self.refine_budget = refine_budget  # refiner pixels per prompt; None: always native

    def roi_for(
        self,
        lowres: torch.Tensor,
        valid_hw: tuple[int, int],
        native_hw: tuple[int, int],
        box: tuple[float, float, float, float] | None = None,
    ) -> Roi | None:
        """Native-pixel ROI around all positive low-res logits (and the prompt box, native
        x0, y0, x1, y1), grown by the margin and rounded out to multiples of 4; None if
        nothing is positive.
        """
        H, W = native_hw
        vh, vw = valid_hw
        pos = (lowres[..., :vh, :vw] > 0).flatten(0, -3).any(0)
        rows = torch.nonzero(pos.any(1)).flatten()
        cols = torch.nonzero(pos.any(0)).flatten()
        if rows.numel() == 0 and box is None:
            return None
        fy, fx = H / vh, W / vw
        # Native extent (float rows y, columns x), then the ROI's integer rows r and columns c.
        y0, y1, x0, x1 = float(H), 0.0, float(W), 0.0
        if rows.numel():
            y0, y1 = float(rows[0]) * fy, float(rows[-1] + 1) * fy
            x0, x1 = float(cols[0]) * fx, float(cols[-1] + 1) * fx
        if box is not None:
            x0, y0 = min(x0, box[0]), min(y0, box[1])
            x1, y1 = max(x1, box[2] + 1), max(y1, box[3] + 1)
        mr = max(self.roi_min_margin, self.roi_margin * (y1 - y0))
        mc = max(self.roi_min_margin, self.roi_margin * (x1 - x0))
        r0, r1 = max(0, int(y0 - mr)), min(H, int(y1 + mr + 1))
        c0, c1 = max(0, int(x0 - mc)), min(W, int(x1 + mc + 1))
        # Grow to multiples of 4 (the refiner works at 1/4 and 1/2 scale); may pass the edge.
        r1 = r0 + 4 * -(-(r1 - r0) // 4)
        c1 = c0 + 4 * -(-(c1 - c0) // 4)
        return r0, c0, r1, c1

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        image: torch.Tensor,
        valid_hw: tuple[int, int],
        multimask: bool = False,
        roi: Roi | None = None,
        box: tuple[float, float, float, float] | None = None,
        refine: bool = True,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> DecoderOutput:
        """Decode masks.

        image_embeddings ``(B, 256, 64, 64)``; image_pe ``(1, 256, 64, 64)``; sparse
        ``(B, T, 256)`` and dense ``(B, 256, 64, 64)`` prompt embeddings; image: the native
        slice ``(B, 3, H, W)`` in [0, 1]; valid_hw: rows/cols of the 256x256 low-res frame
        covered by the image. roi: native ``(r0, c0, r1, c1)`` to refine (None: derived from
        the coarse mask and ``box``, native x0, y0, x1, y1). ``refine=False`` returns the
        bilinear upsampling of the coarse logits. cache: per-image dict for work that does
        not depend on the prompts (pass it only when there is no mask input).
        """
        sel = slice(1, None) if multimask else slice(0, 1)
        masks, iou, hyper, upscaled = self.coarse.predict_all(
            image_embeddings, image_pe, sparse, dense, cache, sel
        )
        H, W = image.shape[-2:]
        full = sample_frame(masks, valid_hw, (H, W), (0, 0, H, W))
        if not refine:
            return DecoderOutput(full, iou, masks, None)
        if roi is None:
            roi = self.roi_for(masks, valid_hw, (H, W), box)
            if roi is None:
                return DecoderOutput(full, iou, masks, None)
        r0, c0, r1, c1 = roi
        h, w = r1 - r0, c1 - c0
        hh, ww = min(r1, H) - r0, min(c1, W) - c0  # the part inside the image
        crop = image[..., r0:r1, c0:c1]
        if crop.shape[-2:] != (h, w):
            crop = F.pad(crop, (0, w - crop.shape[-1], 0, h - crop.shape[-2]), mode="replicate")
        rh, rw = h, w
        if self.refine_budget and h * w > self.refine_budget:
            # Over the budget the refiner runs on a proportionally coarser grid over the same
            # region and only its correction is upsampled, so a prompt costs about the same
            # for any object size.
            f = math.sqrt(self.refine_budget / (h * w))
            rh, rw = max(4, 4 * round(h * f / 4)), max(4, 4 * round(w * f / 4))
            crop = F.interpolate(
                crop, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True
            )
        coarse_ref = sample_frame(masks, valid_hw, (H, W), roi, (rh, rw))
        up_hw = (rh // 4, rw // 4)
        up_roi = sample_frame(upscaled, valid_hw, (H, W), roi, up_hw)
        refined = self.refiner(crop, coarse_ref, hyper, up_roi)
        logits = full
        if (rh, rw) == (h, w):
            logits[..., r0 : r0 + hh, c0 : c0 + ww] = refined[..., :hh, :ww]
        else:
            delta = F.interpolate(
                refined - coarse_ref, size=(h, w), mode="bilinear", align_corners=False
            )
            logits[..., r0 : r0 + hh, c0 : c0 + ww] += delta[..., :hh, :ww]
        return DecoderOutput(logits, iou, masks, roi)


__all__: list[str] = ["ECMDecoder", "CrossScaleRefiner", "DecoderOutput", "sample_frame"]
