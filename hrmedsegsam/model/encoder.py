"""LGViT: the lightweight gated linear-attention ViT image encoder (DESIGN §2).

Input ``(B, 3, 1024, 1024)`` float in [0, 1] (a windowed slice, longest side resized to 1024
and zero-padded bottom/right). Output ``(B, 256, 64, 64)``: a SAM-compatible image
embedding on a 64x64 token grid (one token per 16x16 input pixels). Cost is linear in the
number of tokens: attention is computed as ``phi(q) (phi(k)^T v)`` and never forms an
N x N matrix.

Two layouts share this module (the weights file's config says which):

- ``stem="patch"``, ``mid_dim=None`` (the first design, DESIGN §2): one 16x16 patch
  convolution, two MBConv blocks, 2 + 6 + 2 gated linear-attention blocks all at 64x64
  tokens and 96 channels, neck;
- ``stem="conv"``, ``mid_dim=128`` (hierarchical, second design): a convolutional stem
  (4x4 patchify to 1/4, then two 3x3 stride-2 convolutions to 1/16, so each token sees
  its neighbourhood through real convolutions instead of one linear projection of its own
  patch), the first 2 blocks at 64x64 x 96, the middle 6 blocks at 32x32 x ``mid_dim``
  (a quarter of the tokens: more channels for global context at less memory traffic), then
  back to 64x64 (upsampled and added to the 64x64 features) for the last 2 blocks and the
  neck. Measured in the model card: faster than the first design and a better student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, H, W)`` tensor."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused layer norm over a channels-last view; the result is channels-last.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MBConv(nn.Module):
    """Inverted residual block on ``(B, C, H, W)``: 1x1 expand, depthwise 3x3, 1x1 project."""

    def __init__(self, dim: int, expand: int = 2) -> None:
        super().__init__()
        hidden = dim * expand
        self.expand = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.GELU()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
        )
        self.project = nn.Sequential(nn.Conv2d(hidden, dim, 1, bias=False), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.depthwise(self.expand(x)))


class Rope2D(nn.Module):
    """2D rotary position embedding for per-head features of tokens on an ``H x W`` grid.

    The first half of each head's channels is rotated by the token's row, the second half
    by its column. Tables are cached per grid size, device, dtype and inference mode (a
    table made under ``torch.inference_mode`` cannot take part in a training step's graph).
    """

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"head_dim must be a multiple of 4 for 2D RoPE, got {head_dim}")
        quarter = head_dim // 4
        freqs = base ** (-torch.arange(quarter, dtype=torch.float32) / max(quarter, 1))
        self.register_buffer("freqs", freqs, persistent=False)
        self._cache: dict[
            tuple[int, int, str, torch.dtype, bool], tuple[torch.Tensor, torch.Tensor]
        ] = {}

    def _tables(
        self, h: int, w: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (h, w, str(device), dtype, torch.is_inference_mode_enabled())
        if key not in self._cache:
            rows = torch.arange(h, device=device, dtype=torch.float32)
            cols = torch.arange(w, device=device, dtype=torch.float32)
            freqs = self.freqs.to(device)
            ang_r = rows[:, None, None] * freqs[None, None, :]  # (h, 1, q)
            ang_c = cols[None, :, None] * freqs[None, None, :]  # (1, w, q)
            ang = torch.cat([ang_r.expand(h, w, -1), ang_c.expand(h, w, -1)], dim=-1).reshape(
                h * w, -1
            )
            ang = torch.cat([ang, ang], dim=-1)  # pairs (i, i + d/2) share an angle
            self._cache[key] = (ang.cos().to(dtype), ang.sin().to(dtype))
        return self._cache[key]

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Rotate ``x`` of shape ``(B, heads, N = h * w, head_dim)``."""
        cos, sin = self._tables(hw[0], hw[1], x.device, x.dtype)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin


class GatedLinearAttention(nn.Module):
    """Linear attention with ELU+1 feature map, 2D RoPE, low-rank values and LePE.

    ``forward`` takes tokens ``(B, N, C)`` laid out row-major on an ``hw`` grid and returns
    ``(B, N, C)`` (before the output gate, which lives in :class:`LGViTBlock`).
    """

    def __init__(self, dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.eps = eps
        self.qk = nn.Linear(dim, 2 * dim)
        self.v = nn.Sequential(nn.Linear(dim, dim // 4), nn.SiLU(), nn.Linear(dim // 4, dim))
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.rope = Rope2D(self.head_dim)

    def forward(self, y: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = y.shape
        q, k = (F.elu(self.qk(y)) + 1.0).chunk(2, dim=-1)
        v = self.v(y)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, vh = heads(q), heads(k), heads(v)
        # The normaliser uses the un-rotated (positive) features so it cannot change sign.
        z = 1.0 / (q @ k.mean(dim=2, keepdim=True).transpose(-2, -1) + self.eps)  # (B, h, N, 1)
        q_rot, k_rot = self.rope(q, hw), self.rope(k, hw)
        kv = (k_rot.transpose(-2, -1) @ vh) / n  # (B, h, d, d)
        out = (q_rot @ kv) * z
        out = out.transpose(1, 2).reshape(b, n, c)
        # (B, N, C) tokens are already a channels-last image: no copy for the depthwise conv.
        v_img = v.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)
        return out + self.lepe(v_img).flatten(2).transpose(1, 2)


class LGViTBlock(nn.Module):
    """``x = x + W_o(Attn(LN x) * SiLU(W_g LN x)); x = x + MLP(LN x)`` on ``(B, N, C)`` tokens."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GatedLinearAttention(dim, heads)
        self.gate = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.proj(self.attn(y, hw) * F.silu(self.gate(y)))
        return x + self.mlp(self.norm2(x))


class ConvStem(nn.Module):
    """``(B, 3, S, S)`` -> ``(B, dim, S/16, S/16)``: 4x4 patchify conv to S/4 (the slices are
    grey and at most 512 px native, so the 1024 frame holds no finer detail), then two 3x3
    stride-2 convolutions with BatchNorm and GELU.
    """

    def __init__(self, dim: int, widths: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        a, b = widths
        self.layers = nn.Sequential(
            nn.Conv2d(3, a, 4, stride=4),
            nn.BatchNorm2d(a),
            nn.GELU(),
            nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(b),
            nn.GELU(),
            nn.Conv2d(b, dim, 3, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LGViT(nn.Module):
    """Image encoder: ``(B, 3, S, S)`` in [0, 1] -> ``(B, out_chans, S/16, S/16)``.

    S = 1024 gives the 64x64 grid the prompt encoder and decoder expect. ``depths`` are the
    block counts of the three attention stages; with ``mid_dim`` the middle stage runs at
    half the token grid with ``mid_dim`` channels (see the module docstring).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        dim: int = 96,
        mbconv_depth: int = 2,
        depths: tuple[int, ...] = (2, 6, 2),
        heads: tuple[int, ...] = (6, 12, 24),
        mlp_ratio: float = 2.0,
        out_chans: int = 256,
        stem: str = "patch",
        mid_dim: int | None = None,
    ) -> None:
        super().__init__()
        if stem not in ("patch", "conv"):
            raise ValueError(f"stem must be 'patch' or 'conv', got {stem!r}")
        if len(depths) != 3 or len(heads) != 3:
            raise ValueError("depths and heads need three stages")
        self.img_size = img_size
        self.patch_embed = (
            nn.Conv2d(3, dim, patch_size, stride=patch_size) if stem == "patch" else ConvStem(dim)
        )
        self.mbconv = nn.Sequential(*[MBConv(dim) for _ in range(mbconv_depth)])
        self.mid_dim = mid_dim
        stage_dims = (dim, mid_dim or dim, dim)
        self.stage_sizes = tuple(depths)
        self.blocks = nn.ModuleList(
            LGViTBlock(d, h, mlp_ratio)
            for depth, h, d in zip(depths, heads, stage_dims, strict=True)
            for _ in range(depth)
        )
        if mid_dim is not None:
            self.down = nn.Sequential(nn.Conv2d(dim, mid_dim, 2, stride=2), LayerNorm2d(mid_dim))
            self.up = nn.Conv2d(mid_dim, dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.neck = nn.Sequential(
            nn.Conv2d(dim, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mbconv(self.patch_embed(x))
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, N, C), row-major on the h x w grid
        if self.mid_dim is None:
            for block in self.blocks:
                t = block(t, (h, w))
        else:
            n1, n2, _ = self.stage_sizes
            for block in self.blocks[:n1]:
                t = block(t, (h, w))
            fine = t.reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, h, w) channels-last view
            coarse = self.down(fine)  # (B, mid, h/2, w/2)
            h2, w2 = coarse.shape[-2:]
            u = coarse.flatten(2).transpose(1, 2)
            for block in self.blocks[n1 : n1 + n2]:
                u = block(u, (h2, w2))
            u = self.up(u.reshape(b, h2, w2, -1).permute(0, 3, 1, 2))
            fine = fine + F.interpolate(u, size=(h, w), mode="bilinear", align_corners=False)
            t = fine.permute(0, 2, 3, 1).reshape(b, h * w, c)
            for block in self.blocks[n1 + n2 :]:
                t = block(t, (h, w))
        t = self.norm(t)
        # Tokens (B, N, C) viewed as a channels-last image; the neck's 1x1 conv and layer
        # norms work on that layout directly. The embedding is returned contiguous.
        return self.neck(t.reshape(b, h, w, c).permute(0, 3, 1, 2)).contiguous()


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "LGViT",
    "ConvStem",
    "LGViTBlock",
    "GatedLinearAttention",
    "Rope2D",
    "MBConv",
    "LayerNorm2d",
    "count_parameters",
]
