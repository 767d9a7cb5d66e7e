"""ECM: the efficient cross-multiscale mask decoder (DESIGN §2).

Two paths:

* coarse: SAM's two-way transformer over the 64x64 image embedding and the prompt tokens,
  mask tokens (1 single + 3 multimask) and an IoU head; 256x256 low-resolution logits in
  the padded model frame;
* cross-scale refinement at the slice's native resolution: a light conv stem over the
  native slice gives 1/4 and 1/2 scale detail features; each mask's hypernetwork token is
  projected to every scale and adds a residual to the (bilinearly upsampled) logits, 1/4
  -> 1/2 -> full. It runs only inside a region of interest around the coarse mask (plus a
  margin), so its cost and memory follow the object, not the image. The residual heads
  start at zero, so an untrained refiner reproduces plain bilinear upsampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from hrmedsegsam.model._sam import sam_modeling

# (row0, col0, row1, col1), half-open, in native pixels.
Roi = Tuple[int, int, int, int]


def _attend(mod: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            qp: Optional[torch.Tensor] = None, kp: Optional[torch.Tensor] = None,
            vp: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SAM ``Attention`` ``mod`` on ``(B, N, C)`` inputs, optionally with ready projections
    (``qp``/``kp``/``vp``) so that image-only projections can be computed once per image."""
    qp = mod.q_proj(q) if qp is None else qp
    kp = mod.k_proj(k) if kp is None else kp
    vp = mod.v_proj(v) if vp is None else vp
    h = mod.num_heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.reshape(b, n, h, c // h).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(qp), heads(kp), heads(vp))
    b, _, n, d = out.shape
    return mod.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


def _two_way(transformer: nn.Module, keys: torch.Tensor, key_pe: torch.Tensor, tokens: torch.Tensor,
             cache: Optional[Dict[str, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """SAM's ``TwoWayTransformer.forward`` on flattened ``(B, N, C)`` image tokens, with the
    first block's image-only projections taken from / stored in ``cache`` when given.

    Those projections depend only on the image embedding (plus the constant no-mask dense
    embedding), so caching them per image saves about a third of the decoder's work for
    every further prompt on that image.
    """
    queries = tokens
    for i, layer in enumerate(transformer.layers):
        if layer.skip_first_layer_pe:
            queries = _attend(layer.self_attn, queries, queries, queries)
        else:
            q = queries + tokens
            queries = queries + _attend(layer.self_attn, q, q, queries)
        queries = layer.norm1(queries)
        k = keys + key_pe
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        if i == 0 and cache is not None:
            if "t2i_k" not in cache:
                cache["t2i_k"], cache["t2i_v"], cache["i2t_q"] = t2i.k_proj(k), t2i.v_proj(keys), i2t.q_proj(k)
            kp, vp, qp = cache["t2i_k"], cache["t2i_v"], cache["i2t_q"]
        else:
            kp = vp = qp = None
        queries = layer.norm2(queries + _attend(t2i, queries + tokens, k, keys, kp=kp, vp=vp))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(keys + _attend(i2t, k, queries + tokens, queries, qp=qp))
    attn = _attend(transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys)
    return transformer.norm_final_attn(queries + attn), keys


def _coarse_decoder_class() -> type:
    base = sam_modeling().MaskDecoder

    class CoarseMaskDecoder(base):  # type: ignore[misc, valid-type]
        """SAM's mask decoder, also returning the per-mask hypernetwork vectors and the
        upscaled embedding the refiner needs."""

        def predict_all(
            self,
            image_embeddings: torch.Tensor,
            image_pe: torch.Tensor,
            sparse_prompt_embeddings: torch.Tensor,
            dense_prompt_embeddings: torch.Tensor,
            cache: Optional[Dict[str, torch.Tensor]] = None,
        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            """Return ``masks (B, 4, 256, 256)``, ``iou (B, 4)``, ``hyper (B, 4, C/8)``,
            ``upscaled (B, C/8, 256, 256)`` for one image embedding per prompt set.

            cache: per-image dict for prompt-independent work; only valid while the dense
            prompt is the constant no-mask embedding (the caller passes None otherwise).
            """
            output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
            output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
            tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
            b, c, h, w = image_embeddings.shape
            if cache is not None and "keys" in cache:
                keys, key_pe = cache["keys"], cache["key_pe"]
            else:
                keys = (image_embeddings + dense_prompt_embeddings).flatten(2).transpose(1, 2)
                key_pe = image_pe.flatten(2).transpose(1, 2).expand(b, -1, -1)
                if cache is not None:
                    cache["keys"], cache["key_pe"] = keys, key_pe
            hs, src = _two_way(self.transformer, keys, key_pe, tokens, cache)
            iou_token_out = hs[:, 0, :]
            mask_tokens_out = hs[:, 1 : (1 + self.num_mask_tokens), :]
            upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
            hyper = torch.stack(
                [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
            )
            bu, cu, hu, wu = upscaled.shape
            masks = (hyper @ upscaled.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
            return masks, self.iou_prediction_head(iou_token_out), hyper, upscaled

    return CoarseMaskDecoder


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(1, cout), nn.GELU())


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
        self, image: torch.Tensor, coarse: torch.Tensor, hyper: torch.Tensor, upscaled_roi: torch.Tensor
    ) -> torch.Tensor:
        h, w = image.shape[-2:]
        d2 = self.stem2(image)
        d4 = self.stem4(d2)
        # Residuals are accumulated coarse-to-fine and added to the coarse logits once, so a
        # refiner with zero heads returns the coarse logits unchanged.
        coarse4 = F.interpolate(coarse, size=d4.shape[-2:], mode="bilinear", align_corners=False)
        f4 = self.fuse4(torch.cat([d4, upscaled_roi, coarse4.mean(1, keepdim=True)], dim=1))
        delta = self._hyper_dot(self.hyper4(hyper), f4)

        delta = F.interpolate(delta, size=d2.shape[-2:], mode="bilinear", align_corners=False)
        prior2 = F.interpolate(coarse, size=d2.shape[-2:], mode="bilinear", align_corners=False) + delta
        f4_up = F.interpolate(f4, size=d2.shape[-2:], mode="bilinear", align_corners=False)
        f2 = self.fuse2(torch.cat([d2, f4_up, prior2.mean(1, keepdim=True)], dim=1))
        delta = delta + self._hyper_dot(self.hyper2(hyper), f2)

        delta = F.interpolate(delta, size=(h, w), mode="bilinear", align_corners=False)
        f2_up = F.interpolate(f2, size=(h, w), mode="bilinear", align_corners=False)
        f1 = self.fuse1(torch.cat([image, f2_up, (coarse + delta).mean(1, keepdim=True)], dim=1))
        return coarse + delta + self._hyper_dot(self.hyper1(hyper), f1)


def sample_frame(lowres: torch.Tensor, valid_hw: Tuple[int, int], native_hw: Tuple[int, int], roi: Roi,
                 out_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Bilinearly sample a padded-frame map at native pixel centres of ``roi``.

    lowres: ``(B, C, S, S)`` map over the padded model frame; valid_hw: the part of it
    ``(rows, cols)`` covered by the image (the rest is padding); native_hw: the slice's
    ``(H, W)``; roi: ``(r0, c0, r1, c1)`` native pixels, may extend past the image (padding
    rows/cols are sampled by clamping). out_hw: sample at this grid instead of one sample
    per native pixel (still spanning the roi). Returns ``(B, C, rows, cols)``.
    """
    r0, c0, r1, c1 = roi
    H, W = native_hw
    vh, vw = valid_hw
    S_h, S_w = lowres.shape[-2:]
    oh, ow = out_hw if out_hw is not None else (r1 - r0, c1 - c0)
    dev, dt = lowres.device, lowres.dtype
    # Native pixel centre -> fraction of the image extent -> coordinate in the valid crop
    # -> normalised [-1, 1] over the whole padded map (align_corners=False convention).
    ys = r0 + (torch.arange(oh, device=dev, dtype=dt) + 0.5) * ((r1 - r0) / oh)
    xs = c0 + (torch.arange(ow, device=dev, dtype=dt) + 0.5) * ((c1 - c0) / ow)
    gy = (ys / H) * (vh / S_h) * 2 - 1
    gx = (xs / W) * (vw / S_w) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    grid = grid.unsqueeze(0).expand(lowres.shape[0], -1, -1, -1)
    return F.grid_sample(lowres, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass
class DecoderOutput:
    """Native-resolution logits ``(B, M, H, W)``, IoU predictions ``(B, M)``, low-res logits
    ``(B, M, 256, 256)`` in the padded model frame, and the refined ROI ``(r0, c0, r1, c1)``."""

    logits: torch.Tensor
    iou: torch.Tensor
    lowres: torch.Tensor
    roi: Optional[Roi]


class ECMDecoder(nn.Module):
    """Coarse two-way-transformer decoder plus the native-resolution cross-scale refiner."""

    def __init__(
        self, transformer_dim: int = 256, mlp_dim: int = 256, depth: int = 2, num_heads: int = 8,
        num_multimask_outputs: int = 3, roi_margin: float = 0.15, roi_min_margin: int = 8,
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

    def roi_for(self, lowres: torch.Tensor, valid_hw: Tuple[int, int], native_hw: Tuple[int, int],
                box: Optional[Tuple[float, float, float, float]] = None) -> Optional[Roi]:
        """Native-pixel ROI around all positive low-res logits (and the prompt box, native
        x0, y0, x1, y1), grown by the margin and rounded out to multiples of 4; None if
        nothing is positive."""
        H, W = native_hw
        vh, vw = valid_hw
        pos = (lowres[..., :vh, :vw] > 0).flatten(0, -3).any(0)
        rows = torch.nonzero(pos.any(1)).flatten()
        cols = torch.nonzero(pos.any(0)).flatten()
        if rows.numel() == 0 and box is None:
            return None
        fy, fx = H / vh, W / vw
        r0, r1, c0, c1 = H, 0.0, W, 0.0
        if rows.numel():
            r0, r1 = float(rows[0]) * fy, float(rows[-1] + 1) * fy
            c0, c1 = float(cols[0]) * fx, float(cols[-1] + 1) * fx
        if box is not None:
            c0, r0 = min(c0, box[0]), min(r0, box[1])
            c1, r1 = max(c1, box[2] + 1), max(r1, box[3] + 1)
        mr = max(self.roi_min_margin, self.roi_margin * (r1 - r0))
        mc = max(self.roi_min_margin, self.roi_margin * (c1 - c0))
        r0, r1 = max(0, int(r0 - mr)), min(H, int(r1 + mr + 1))
        c0, c1 = max(0, int(c0 - mc)), min(W, int(c1 + mc + 1))
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
        valid_hw: Tuple[int, int],
        multimask: bool = False,
        roi: Optional[Roi] = None,
        box: Optional[Tuple[float, float, float, float]] = None,
        refine: bool = True,
        cache: Optional[Dict[str, torch.Tensor]] = None,
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
        masks, iou, hyper, upscaled = self.coarse.predict_all(image_embeddings, image_pe, sparse, dense, cache)
        sel = slice(1, None) if multimask else slice(0, 1)
        masks, iou, hyper = masks[:, sel], iou[:, sel], hyper[:, sel]
        H, W = image.shape[-2:]
        full = sample_frame(masks, valid_hw, (H, W), (0, 0, H, W))
        if not refine:
            return DecoderOutput(full, iou, masks, None)
        if roi is None:
            roi = self.roi_for(masks, valid_hw, (H, W), box)
            if roi is None:
                return DecoderOutput(full, iou, masks, None)
        r0, c0, r1, c1 = roi
        crop = image[..., r0:r1, c0:c1]
        ph, pw = (r1 - r0) - crop.shape[-2], (c1 - c0) - crop.shape[-1]
        if ph or pw:
            crop = F.pad(crop, (0, pw, 0, ph), mode="replicate")
        coarse_roi = sample_frame(masks, valid_hw, (H, W), roi)
        up_roi = sample_frame(upscaled, valid_hw, (H, W), roi, out_hw=((r1 - r0) // 4, (c1 - c0) // 4))
        refined = self.refiner(crop, coarse_roi, hyper, up_roi)
        hh, ww = min(r1, H) - r0, min(c1, W) - c0
        logits = full.clone()
        logits[..., r0 : r0 + hh, c0 : c0 + ww] = refined[..., :hh, :ww]
        return DecoderOutput(logits, iou, masks, roi)


__all__: List[str] = ["ECMDecoder", "CrossScaleRefiner", "DecoderOutput", "sample_frame"]
