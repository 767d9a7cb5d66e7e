"""Exact, cheaper evaluation of the coarse decoder for one prompt set on a fixed image.

Why this works: inside SAM's two-way transformer the 4096 image tokens never attend to each
other. Block ``i`` changes them only by ``X_{i+1} = LayerNorm(X_i + A_i M_i + b_i)``, where
``A_i`` ``(N, H*T)`` are the image-to-token attention weights (``H`` heads, ``T`` prompt
tokens, 8 x 7 = 56 for a box) and ``M_i`` ``(H*T, C)`` are the tokens' values already
pushed through the output projection. A layer norm is a per-row affine map, so every later
linear map ``X_i W`` of the image tokens splits into

    r_i * (X_{i-1} (g_i W) + A_{i-1} (M_{i-1} g_i W) + b_{i-1} g_i W - mu_i * sum(g_i W)) + beta_i W

with ``mu_i, r_i`` the row mean and inverse std of ``X_{i-1} + A M + b`` and ``g_i, beta_i``
the norm's weight and bias. Unrolled down to ``X_0`` (the image embedding plus the constant
no-mask dense prompt), the products ``X_0 (...)`` do not depend on the prompts and are
computed once per image; per prompt only ``(N, 58)`` by ``(58, d)`` products remain instead
of ``(N, 256)`` by ``(256, d)`` ones. The first transposed convolution of the upscaling is
such a linear map too (kernel 2, stride 2: one 256 -> 4 x 64 matrix per token), so it joins
the final attention's key/value projections.

Head splits of ``(N, ...)`` tensors are strided views fed to batched matmuls, never copies,
and the upscaled features are not reordered into image layout (on a small CPU those copies
cost more than the arithmetic).

The result equals the plain forward up to float rounding (tested against
``segment_anything``'s own ``MaskDecoder``). It assumes no mask prompt (with a mask input the
dense prompt, and so ``X_0``, changes per prompt) and one prompt set; callers use the plain
path otherwise.

Shapes: image tokens ``(N, C)`` with ``N = 64*64`` in row-major (y, x) order; prompt
tokens ``(T, C)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import nn


def _t(linear: nn.Linear) -> torch.Tensor:
    """``(in, out)`` weight so that ``x @ W + b`` equals ``linear(x)``."""
    return linear.weight.t()


def _heads_t(x: torch.Tensor, h: int) -> torch.Tensor:
    """``(N, h*d)`` -> strided view ``(h, d, N)``."""
    n, c = x.shape
    return x.view(n, h, c // h).permute(1, 2, 0)


@dataclass
class Projected:
    """``X_level @ W + offset`` ``(N, d)`` kept as ``rho * base + left.T @ right + const``.

    base ``(N, d)``: the cached per-image product (at level 0 it is the whole value and the
    other parts are None); rho ``(N, 1)``; left ``(K, N)``; right ``(K, d)``; const ``(d,)``
    or ``(N, d)``. Attention reads it without forming the ``(N, d)`` sum.
    """

    base: torch.Tensor
    rho: torch.Tensor | None = None
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    const: torch.Tensor | None = None

    def dense(self) -> torch.Tensor:
        if self.rho is None:
            return self.base
        assert self.left is not None and self.right is not None and self.const is not None
        return torch.addmm(self.const, self.left.t(), self.right).addcmul_(self.rho, self.base)

    def scores(self, q: torch.Tensor) -> torch.Tensor:
        """Per-head dot products ``(H, T, N)`` of ``q (H, T, d_h)`` with this ``(N, H*d_h)``."""
        h = q.shape[0]
        out = torch.bmm(q, _heads_t(self.base, h))
        if self.rho is None:
            return out
        assert self.left is not None and self.right is not None and self.const is not None
        out.mul_(self.rho.t())
        t = q.shape[1]
        out += (torch.bmm(q, _heads_t(self.right, h)).reshape(h * t, -1) @ self.left).view(h, t, -1)
        if self.const.dim() == 2:
            out += torch.bmm(q, _heads_t(self.const, h))
        else:
            out += torch.bmm(q, self.const.view(h, -1, 1))
        return out

    def weighted(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-head ``probs_h @ value_h`` ``(H, T, d_h)`` for attention weights ``probs
        (H, T, N)`` whose rows sum to one.
        """
        h, t, n = probs.shape
        if self.rho is None:
            return torch.bmm(probs, _heads_t(self.base, h).transpose(1, 2))
        assert self.left is not None and self.right is not None and self.const is not None
        out = torch.bmm(probs * self.rho.t(), _heads_t(self.base, h).transpose(1, 2))
        pl = (probs.reshape(h * t, n) @ self.left.t()).view(h, t, -1)  # (H, T, K)
        out += torch.bmm(pl, self.right.view(self.right.shape[0], h, -1).transpose(0, 1))
        if self.const.dim() == 2:
            out += torch.bmm(probs, _heads_t(self.const, h).transpose(1, 2))
        else:
            out += self.const.view(h, 1, -1)
        return out


def _tokens_to_image(
    mod: nn.Module, queries: torch.Tensor, kp: Projected, vp: Projected
) -> torch.Tensor:
    """SAM ``Attention`` of prompt tokens ``(1, T, C)`` (the query input, before ``q_proj``)
    over image keys/values already projected, ``(N, C_int)`` each. Returns ``(1, T, C)``.
    """
    h = mod.num_heads
    qp = mod.q_proj(queries[0])
    t, c = qp.shape
    d = c // h
    probs = torch.softmax(
        kp.scores(qp.view(t, h, d).transpose(0, 1)) * (1.0 / math.sqrt(d)), dim=-1
    )
    out = vp.weighted(probs)  # (H, T, d)
    return mod.out_proj(out.transpose(0, 1).reshape(t, c))[None]


Offset: TypeAlias = "torch.Tensor | Callable[[], torch.Tensor] | None"


class _ImageStream:
    """The image tokens after each block, kept in factored form (see the module docstring).

    Level ``i`` is the input of block ``i`` (level ``depth`` is the transformer's output).
    """

    def __init__(
        self, x0: torch.Tensor, cache: dict[str, torch.Tensor], norms: list[nn.LayerNorm]
    ) -> None:
        self.x0 = x0
        self.cache = cache
        self.norms = norms  # norms[i] turns level i into level i+1
        self.L: list[torch.Tensor] = []  # (H*T + 2, N): rows A^T, ones, -mu
        self.M: list[torch.Tensor] = []  # (H*T, C)
        self.b: list[torch.Tensor] = []  # (C,) bias of the update
        self.r: list[torch.Tensor] = []  # (N, 1) inverse std of the pre-norm sum
        self._lefts: dict[int, torch.Tensor] = {}
        self.x = x0  # the latest level, materialised (needed for the next level's statistics)

    def _rho(self, k: int, level: int) -> torch.Tensor:
        """``r_k * ... * r_level`` ``(N, 1)``: how level ``k-1`` terms scale into ``level``."""
        out = self.r[k - 1]
        for i in range(k + 1, level + 1):
            out = out * self.r[i - 1]
        return out

    def _left(self, level: int) -> torch.Tensor:
        """Transposed left factor ``(K, N)`` of all prompt-dependent terms of level ``level``
        (see :meth:`project`), built once per prompt and level.
        """
        hit = self._lefts.get(level)
        if hit is None:
            rows = []
            for k in range(1, level + 1):
                rows.append(self.L[k - 1] * self._rho(k, level).t())
                if k < level:
                    rows.append(self._rho(k + 1, level).t())
            hit = self._lefts[level] = torch.cat(rows)
        return hit

    def project(self, level: int, W: torch.Tensor, key: str, offset: Offset = None) -> Projected:
        """``X_level @ W + offset`` ``(N, d)`` for ``W (C, d)``, as :class:`Projected`.

        Unrolled to level 0 (``W_k = g_{k+1} * W_{k+1}``, ``W_level = W``):
        ``X_level W = rho_1 * X_0 W_0 + sum_k rho_k * (L_{k-1}^T R_{k-1}(W_{k-1}))
        + sum_k rho_{k+1} * beta_k W_k``, ``rho_k = r_k ... r_level``: one matrix product
        with a ``(N, ~58*level)`` left factor plus a row-scaled copy of the cached
        ``X_0 W_0``.

        ``offset``: None, a ``(d,)`` vector, or a callable giving an ``(N, d)`` per-image
        tensor (called only when not cached yet). Per-image tensors are cached under
        ``key`` and names derived from it.
        """
        if level == 0:
            hit = self.cache.get(key)
            if hit is None:
                off = offset() if callable(offset) else offset
                hit = (
                    self.x0 @ W
                    if off is None
                    else torch.addmm(off.expand(self.x0.shape[0], -1), self.x0, W)
                )
                self.cache[key] = hit
            return Projected(hit)
        Ws = [W]
        for k in range(level, 0, -1):
            Ws.insert(0, self.norms[k - 1].weight[:, None] * Ws[0])
        rights = []
        for k in range(1, level + 1):
            G = Ws[k - 1]
            rights += [self.M[k - 1] @ G, (self.b[k - 1] @ G)[None], G.sum(0, keepdim=True)]
            if k < level:
                rights.append((self.norms[k - 1].bias @ Ws[k])[None])
        base = self.norms[level - 1].bias @ W
        if callable(offset):
            const = self.cache.get(key + "#offset")
            if const is None:
                const = self.cache[key + "#offset"] = offset() + base
        else:
            const = base if offset is None else offset + base
        return Projected(
            self.project(0, Ws[0], key + "/g" * level).base,
            self._rho(1, level),
            self._left(level),
            torch.cat(rights),
            const,
        )

    def advance(self, A_t: torch.Tensor, M: torch.Tensor, b: torch.Tensor) -> None:
        """Record block ``len(self.L)``'s update ``A @ M + b`` (``A_t`` = ``A`` transposed,
        ``(H*T, N)``) and the statistics of its layer norm; materialise the next level.
        """
        norm = self.norms[len(self.L)]
        ones = A_t.new_ones(1, A_t.shape[1])
        y = torch.addmm(self.x, torch.cat([A_t, ones]).t(), torch.cat([M, b[None]]))
        x, mu, r = torch.native_layer_norm(y, (y.shape[-1],), norm.weight, norm.bias, norm.eps)
        self.L.append(torch.cat([A_t, ones, -mu.t()]))
        self.M.append(M)
        self.b.append(b)
        self.r.append(r)
        self.x = x


def _image_to_tokens(
    mod: nn.Module, q_img: Projected, queries: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of SAM ``Attention(q=image, k=queries + tokens, v=queries)``: returns
    ``A_t (H*T, N)`` (the softmax weights, transposed; row ``h*T + t``) and ``M (H*T, C)``
    with ``A_t.T @ M + out_proj.bias`` equal to the attention's output ``(N, C)``.
    q_img: the projected image queries ``(N, C_int)``; queries, tokens ``(1, T, C)``.
    """
    h = mod.num_heads
    kp = mod.k_proj((queries + tokens)[0])
    vp = mod.v_proj(queries[0])
    t, ci = kp.shape
    d = ci // h
    scores = q_img.scores(kp.view(t, h, d).transpose(0, 1))  # (H, T, N)
    A_t = torch.softmax(scores * (1.0 / math.sqrt(d)), dim=1).reshape(h * t, -1)
    M = torch.bmm(vp.view(t, h, d).transpose(0, 1), _t(mod.out_proj).reshape(h, d, -1))  # (H, T, C)
    return A_t, M.reshape(h * t, -1)


def factored_coarse(
    transformer: nn.Module,
    upscaling: nn.Sequential,
    keys: torch.Tensor,
    key_pe: torch.Tensor,
    tokens: torch.Tensor,
    cache: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, ScrambledFeatures]:
    """SAM's ``TwoWayTransformer`` followed by the decoder's ``output_upscaling``, for one
    prompt set.

    keys ``(N, C)``: image embedding + no-mask dense prompt, flattened; key_pe ``(N, C)``;
    tokens ``(1, T, C)`` (output tokens then prompt tokens); cache: per-image dict (filled on
    first use). Returns the prompt tokens after the transformer ``(1, T, C)`` and the upscaled
    image features ``(1, C/8, 4*64, 4*64)`` as :class:`ScrambledFeatures`.
    """
    layers = list(transformer.layers)
    stream = _ImageStream(keys, cache, [layer.norm4 for layer in layers])

    def pe_offset(lin: nn.Linear) -> Callable[[], torch.Tensor]:
        # Positional term plus bias of a key/query projection of the image tokens.
        return lambda: torch.addmm(lin.bias, key_pe, _t(lin))

    queries = tokens
    for i, layer in enumerate(layers):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        kp = stream.project(i, _t(t2i.k_proj), f"x0@L{i}.k", pe_offset(t2i.k_proj))
        vp = stream.project(i, _t(t2i.v_proj), f"x0@L{i}.v", t2i.v_proj.bias)
        qp = stream.project(i, _t(i2t.q_proj), f"x0@L{i}.q", pe_offset(i2t.q_proj))
        queries = layer.norm2(queries + _tokens_to_image(t2i, queries + tokens, kp, vp))
        queries = layer.norm3(queries + layer.mlp(queries))
        A_t, M = _image_to_tokens(i2t, qp, queries, tokens)
        stream.advance(A_t, M, i2t.out_proj.bias)

    final = transformer.final_attn_token_to_image
    depth = len(layers)
    kp = stream.project(depth, _t(final.k_proj), "x0@final.k", pe_offset(final.k_proj))
    vp = stream.project(depth, _t(final.v_proj), "x0@final.v", final.v_proj.bias)
    queries = transformer.norm_final_attn(
        queries + _tokens_to_image(final, queries + tokens, kp, vp)
    )

    up1 = upscaling[0]
    # ConvTranspose2d(k=2, s=2) as one matrix: column (a*2 + b)*c1 + co is output channel co
    # at sub-pixel (a, b) of each token.
    W_up = up1.weight.permute(0, 2, 3, 1).reshape(up1.in_channels, 4 * up1.out_channels)
    u = stream.project(depth, W_up, "x0@final.up", up1.bias.repeat(4)).dense()
    return queries, ScrambledFeatures(u, upscaling, 4 * int(round(math.sqrt(keys.shape[0]))))


def _gelu_(x: torch.Tensor, act: nn.Module) -> torch.Tensor:
    return torch.ops.aten.gelu_(x, approximate=act.approximate)


class ScrambledFeatures:
    """The upscaled decoder features ``(1, C, S, S)``, computed on first use and left in the
    layout the factored path produces (reordering all ``C * S * S`` values costs more than
    the mask product; only the masks and the refiner's region are reordered).

    Built from ``u`` ``(S*S/16, 4*c1)``, the first transposed convolution's output per token
    (column ``ab*c1 + co``), and the decoder's ``output_upscaling`` modules.

    data: ``(S*S, C)``: pixel ``(Y, X)``, channel ``c`` is ``data[i, c]`` with
    ``i = _pixel_order(S // 4)[Y * S + X]`` (the second transposed convolution's columns
    are ordered sub-pixel major, so each pixel's channels are one contiguous row and the
    mask product is one ``(S*S, C) @ (C, M)`` matrix product).
    """

    def __init__(self, u: torch.Tensor, upscaling: nn.Sequential, size: int) -> None:
        self.u = u
        self.upscaling = upscaling
        self.size = size
        self.channels = upscaling[3].out_channels
        self.data: torch.Tensor | None = None

    def _order(self) -> torch.Tensor:
        return _pixel_order(self.size // 4, self.u.device).view(self.size, self.size)

    def computed(self) -> torch.Tensor:
        """``data``, computed first if it is not yet."""
        if self.data is None:
            _, ln, act1, up2, act2 = self.upscaling
            c1, c2 = up2.in_channels, up2.out_channels
            h = _gelu_(
                F.layer_norm(self.u.reshape(-1, c1), (c1,), ln.weight, ln.bias, ln.eps), act1
            )
            # Second ConvTranspose2d: row token*4 + ab, column a'b'*c2 + c.
            w = up2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
            data = _gelu_(torch.addmm(up2.bias.repeat(4), h, w), act2)
            self.data = data.view(-1, c2)
        return self.data

    def dot(self, hyper: torch.Tensor) -> torch.Tensor:
        """Mask logits ``(1, M, S, S)`` for hypernetwork vectors ``hyper (1, M, C)``."""
        m = hyper.shape[1]
        flat = (self.computed() @ hyper[0].t()).t()  # (M, S*S) in data's row order
        return flat.index_select(1, self._order().reshape(-1)).reshape(1, m, self.size, self.size)

    def sample(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Bilinear samples ``(1, C, len(ys), len(xs))`` at map coordinates ``ys``, ``xs``
        (pixel units, pixel centres at integers), clamped to the border: the values
        ``grid_sample(..., align_corners=False, padding_mode="border")`` gives, reading only
        the pixels it needs.
        """
        data = self.computed()
        S = self.size

        def axis(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            p = p.clamp(0, S - 1)
            i0 = p.floor().long()
            return i0, (i0 + 1).clamp(max=S - 1), (p - i0).to(data.dtype)

        y0, y1, wy = axis(ys)
        x0, x1, wx = axis(xs)
        order = self._order()

        def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
            idx = order[yi[:, None], xi[None, :]].reshape(-1)
            return data.index_select(0, idx).t().reshape(self.channels, len(yi), len(xi))

        wy, wx = wy[:, None], wx[None, :]
        out = (
            at(y0, x0) * ((1 - wy) * (1 - wx))
            + at(y0, x1) * ((1 - wy) * wx)
            + at(y1, x0) * (wy * (1 - wx))
            + at(y1, x1) * (wy * wx)
        )
        return out[None]


_ORDER: dict[tuple[int, str], torch.Tensor] = {}


def _pixel_order(side: int, device: torch.device) -> torch.Tensor:
    """For each pixel (Y, X) of the ``4*side`` square upscaled map, row-major, its index
    ``(token*4 + ab)*4 + a'b'`` in :class:`ScrambledFeatures`' layout, where
    ``Y = 4y + 2a + a'`` and ``X = 4x + 2b + b'`` for token ``(y, x)``.
    """
    key = (side, str(device))
    hit = _ORDER.get(key)
    if hit is None:
        Y = torch.arange(4 * side, device=device)[:, None]
        X = torch.arange(4 * side, device=device)[None, :]
        tok = (Y // 4) * side + X // 4
        ab = ((Y // 2) % 2) * 2 + (X // 2) % 2
        sub = (Y % 2) * 2 + X % 2
        hit = _ORDER[key] = ((tok * 4 + ab) * 4 + sub).reshape(-1)
    return hit


def supports_factored(transformer: nn.Module, upscaling: nn.Module) -> bool:
    """Whether the modules have the shapes :func:`factored_coarse` assumes."""
    if not isinstance(upscaling, nn.Sequential) or len(upscaling) != 5:
        return False

    def k2s2(m: nn.Module) -> bool:
        return (
            isinstance(m, nn.ConvTranspose2d)
            and m.kernel_size == (2, 2)
            and m.stride == (2, 2)
            and m.padding == (0, 0)
            and m.bias is not None
        )

    return (
        k2s2(upscaling[0])
        and k2s2(upscaling[3])
        and isinstance(upscaling[2], nn.GELU)
        and isinstance(upscaling[4], nn.GELU)
        and all(isinstance(layer.norm4, nn.LayerNorm) for layer in transformer.layers)
    )


__all__: list[str] = ["ScrambledFeatures", "factored_coarse", "supports_factored"]
