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

Per prompt, head splits of ``(N, ...)`` tensors are strided views fed to batched matmuls,
never copies, and the upscaled features are not reordered into image layout (on a small CPU
those copies cost more than the arithmetic). The per-image products that only meet the
prompt keys/queries in per-head dot products are cached head-major instead, ``(H, d, N)``,
since a batched product over a transposed strided view was ~2.5x slower than over a
contiguous one. Weight-only factors (e.g. the output projection times a later projection,
so a prompt's ``(H*T, C) @ (C, d)`` product becomes ``(T, d/H) @ (d/H, d)`` per head) are
kept in the same per-image cache.

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


def _addmm_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``out += a @ b`` in place. Under autocast (CUDA) the factors may come from
    reduced-precision products while ``out`` does not, and in-place and ``out=`` products
    are not autocast: they get ``out``'s dtype (no-op in float32).
    """
    return out.addmm_(a.to(out.dtype), b.to(out.dtype))


@dataclass
class Projected:
    """``X_level @ W + offset`` ``(N, d)`` kept as ``rho * base + left.T @ right + const``.

    base: the cached per-image product, ``(N, d)``; or, for a projection read only by
    :meth:`scores` (``heads`` set), head-major ``(H, d/H, N)``, and at levels above 0
    ``(H, d/H, 2N)`` with the per-image ``const`` in its second half (one contiguous batched
    product instead of two strided ones). At level 0 base is the whole value and the other
    parts are None. rho ``(N, 1)``; left ``(K, N)``, its last row ones; right ``(K, d)``, its
    last row the projection's constant offset ``(d,)`` (zeros where the offset varies by
    token); const: that per-token offset ``(N, d)``, or None (a constant one is in the
    factors, or the offset lives in a head-major base). Attention reads it without forming
    the ``(N, d)`` sum.
    """

    base: torch.Tensor
    rho: torch.Tensor | None = None
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    const: torch.Tensor | None = None
    heads: int | None = None

    def dense(self) -> torch.Tensor:
        assert self.heads is None
        if self.rho is None:
            return self.base
        assert self.left is not None and self.right is not None
        if self.const is None:
            return _addmm_(torch.mul(self.base, self.rho), self.left.t(), self.right)
        return torch.addmm(self.const, self.left.t(), self.right).addcmul_(self.rho, self.base)

    def scores(self, q: torch.Tensor) -> torch.Tensor:
        """Per-head dot products ``(H, T, N)`` of ``q (H, T, d_h)`` with this ``(N, H*d_h)``."""
        h, t, _ = q.shape
        base = self.base if self.heads is not None else _heads_t(self.base, h)
        out = torch.bmm(q, base)
        if self.rho is None:
            return out
        assert self.left is not None and self.right is not None
        n = self.left.shape[1]
        if out.shape[-1] == 2 * n:  # base, then the per-image constant
            out = torch.addcmul(out[..., n:], out[..., :n], self.rho.t())
        else:
            out.mul_(self.rho.t())
        qr = torch.bmm(q, _heads_t(self.right, h)).view(h * t, -1)
        _addmm_(out.view(h * t, n), qr, self.left)
        if self.const is not None:
            out += torch.bmm(q, _heads_t(self.const, h))
        return out

    def weighted(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-head ``probs_h @ value_h`` ``(H, T, d_h)`` for attention weights ``probs
        (H, T, N)`` whose rows sum to one.
        """
        assert self.heads is None
        h, t, n = probs.shape
        if self.rho is None:
            return torch.bmm(probs, _heads_t(self.base, h).transpose(1, 2))
        assert self.left is not None and self.right is not None
        out = torch.bmm(probs * self.rho.t(), _heads_t(self.base, h).transpose(1, 2))
        pl = (probs.reshape(h * t, n) @ self.left.t()).view(h, t, -1)  # (H, T, K)
        out += torch.bmm(pl, self.right.view(self.right.shape[0], h, -1).transpose(0, 1))
        if self.const is not None:
            out += torch.bmm(probs, _heads_t(self.const, h).transpose(1, 2))
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
    # The softmax scale goes on the (H, T, d) queries, not on the (H, T, N) scores.
    probs = torch.softmax(kp.scores(qp.view(t, h, d).transpose(0, 1) * (1.0 / math.sqrt(d))), -1)
    out = vp.weighted(probs)  # (H, T, d)
    return mod.out_proj(out.transpose(0, 1).reshape(t, c))[None]


class _ImageStream:
    """The image tokens after each block, kept in factored form (see the module docstring).

    Level ``i`` is the input of block ``i`` (level ``depth`` is the transformer's output).
    """

    def __init__(
        self,
        x0: torch.Tensor,
        pe: torch.Tensor,
        cache: dict[str, torch.Tensor],
        norms: list[nn.LayerNorm],
    ) -> None:
        self.x0 = x0
        self.pe = pe  # (N, C) positional encoding of the image tokens
        self._x0_pe: torch.Tensor | None = None
        self.cache = cache
        self.norms = norms  # norms[i] turns level i into level i+1
        self.L: list[torch.Tensor] = []  # (H*T + 2, N): rows A^T, ones, -mu
        self.V: list[torch.Tensor] = []  # (H, T, d): the update's per-head token values
        self.Wo: list[torch.Tensor] = []  # (H, d, C): its per-head output projection
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
            rows.append(self.x0.new_ones(1, self.x0.shape[0]))  # pairs with the constant row
            hit = self._lefts[level] = torch.cat(rows)
        return hit

    def project(
        self,
        level: int,
        W: torch.Tensor,
        key: str,
        bias: torch.Tensor | None = None,
        with_pe: bool = False,
        heads: int | None = None,
    ) -> Projected:
        """``(X_level [+ pe]) @ W + bias`` ``(N, d)`` for ``W (C, d)``, ``bias (d,)``, as
        :class:`Projected` (``with_pe``: the positional encoding is added to the tokens
        first, as for SAM's attention keys and queries).

        Unrolled to level 0 (``W_k = g_{k+1} * W_{k+1}``, ``W_level = W``):
        ``X_level W = rho_1 * X_0 W_0 + sum_k rho_k * (L_{k-1}^T R_{k-1}(W_{k-1}))
        + sum_k rho_{k+1} * beta_k W_k``, ``rho_k = r_k ... r_level``: one matrix product
        with a ``(N, ~58*level)`` left factor plus a row-scaled copy of the cached
        ``X_0 W_0``. In ``R_{k-1}`` the prompt-dependent rows ``M_{k-1} W_{k-1}`` are
        ``V_h (Wo_h W_{k-1})`` per head, with ``Wo_h W_{k-1}`` cached.

        ``heads``: keep the per-image tensors head-major for :meth:`Projected.scores` (the
        only reader of such a projection). Everything that does not depend on the prompts
        (products with the image, and the weight-only factors) is cached under ``key`` and
        names derived from it.
        """
        if level == 0:
            hit = self.cache.get(key)
            if hit is None:
                x = self.x0
                if with_pe:
                    # Kept for this call only: the per-image cache holds products, not a
                    # second 4 MB copy of the tokens.
                    if self._x0_pe is None:
                        self._x0_pe = self.x0 + self.pe
                    x = self._x0_pe
                hit = self._image_product(x, W, bias, heads)
                self.cache[key] = hit
            return Projected(hit, heads=heads)
        if key + "#base" not in self.cache:
            self._fill(level, W, key, bias, with_pe, heads)
        rights = []
        for k in range(1, level + 1):
            rights.append(torch.bmm(self.V[k - 1], self.cache[f"{key}#WG{k}"]).flatten(0, 1))
            rights.append(self.cache[f"{key}#C{k}"])
        const = self.cache.get(key + "#const")
        if const is not None and const.dim() == 1:
            # A constant offset rides along in the low-rank product (the left factor ends
            # with a ones row) instead of costing a pass of its own over (N, d).
            rights.append(const[None])
            const = None
        else:
            rights.append(rights[-1].new_zeros(1, rights[-1].shape[1]))
        return Projected(
            self.cache[key + "#base"],
            self._rho(1, level),
            self._left(level),
            torch.cat(rights),
            const,
            heads,
        )

    @staticmethod
    def _image_product(
        x: torch.Tensor,
        W: torch.Tensor,
        bias: torch.Tensor | None,
        heads: int | None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x @ W + bias`` ``(N, d)``, or with ``heads`` its head-major ``(H, d/H, N)``,
        computed transposed by the matrix product itself (written into ``out`` ``(d, N)``
        if given): a transposing copy of the result cost more than the product.
        """
        if heads is None:
            if bias is None:
                return x @ W
            return torch.addmm(bias.expand(x.shape[0], -1), x, W)
        if out is None:
            out = x.new_empty(W.shape[1], x.shape[0])
        Wt, xt = W.t().to(out.dtype), x.t().to(out.dtype)  # see _addmm_
        if bias is None:
            torch.mm(Wt, xt, out=out)
        else:
            torch.addmm(bias[:, None].to(out.dtype), Wt, xt, out=out)
        return out.view(heads, -1, x.shape[0])

    def _fill(
        self,
        level: int,
        W: torch.Tensor,
        key: str,
        bias: torch.Tensor | None,
        with_pe: bool,
        heads: int | None,
    ) -> None:
        """Cache the prompt-independent parts of :meth:`project` at ``level`` (1 or more):
        per block ``k``, ``WG{k}`` ``Wo_{k-1} @ W_{k-1}`` ``(H, d, d_out)`` and ``C{k}``, the
        constant rows of ``R_{k-1}`` (``b @ W``, ``sum(W)``, and for ``k < level`` the
        norm bias term); ``base`` ``X_0 W_0``; ``const``: the bias plus the last norm's
        bias term, ``(d,)``, plus ``pe @ W`` ``(N, d)`` with ``with_pe`` (then folded into a
        head-major ``base``, see :class:`Projected`).
        """
        Ws = [W]
        for k in range(level, 0, -1):
            Ws.insert(0, self.norms[k - 1].weight[:, None] * Ws[0])
        for k in range(1, level + 1):
            G = Ws[k - 1]
            self.cache[f"{key}#WG{k}"] = torch.matmul(self.Wo[k - 1], G)
            rows = [(self.b[k - 1] @ G)[None], G.sum(0, keepdim=True)]
            if k < level:
                rows.append((self.norms[k - 1].bias @ Ws[k])[None])
            self.cache[f"{key}#C{k}"] = torch.cat(rows)
        const = self.norms[level - 1].bias @ W
        if bias is not None:
            const = const + bias
        n = self.x0.shape[0]
        if not with_pe:
            self.cache[key + "#const"] = const
            base = self._image_product(self.x0, Ws[0], None, heads)
        elif heads is None:
            self.cache[key + "#const"] = self._image_product(self.pe, W, const, None)
            base = self._image_product(self.x0, Ws[0], None, None)
        else:
            both = self.x0.new_empty(W.shape[1], 2 * n)
            self._image_product(self.x0, Ws[0], None, heads, both[:, :n])
            self._image_product(self.pe, W, const, heads, both[:, n:])
            base = both.view(heads, -1, 2 * n)
        self.cache[key + "#base"] = base

    def advance(
        self, A_t: torch.Tensor, V: torch.Tensor, Wo: torch.Tensor, b: torch.Tensor
    ) -> None:
        """Record block ``len(self.L)``'s update ``A @ M + b`` (``A_t`` = ``A`` transposed,
        ``(H*T, N)``; ``M = V_h @ Wo_h`` per head, ``V (H, T, d)``, ``Wo (H, d, C)``) and the
        statistics of its layer norm; materialise the next level.
        """
        norm = self.norms[len(self.L)]
        M = torch.bmm(V, Wo).flatten(0, 1)  # (H*T, C)
        ones = A_t.new_ones(1, A_t.shape[1])
        lhs, rhs = torch.cat([A_t, ones]).t(), torch.cat([M, b[None]])
        # Level 0 is the cached image embedding; a later level is this prompt's own tensor
        # and is not needed again, so the update goes into it instead of a 4 MB copy.
        y = torch.addmm(self.x, lhs, rhs) if not self.L else _addmm_(self.x, lhs, rhs)
        x, mu, r = torch.native_layer_norm(y, (y.shape[-1],), norm.weight, norm.bias, norm.eps)
        self.L.append(torch.cat([A_t, ones, -mu.t()]))
        self.V.append(V)
        self.Wo.append(Wo)
        self.b.append(b)
        self.r.append(r)
        self.x = x


def _image_to_tokens(
    mod: nn.Module, q_img: Projected, queries: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of SAM ``Attention(q=image, k=queries + tokens, v=queries)``: returns
    ``A_t (H*T, N)`` (the softmax weights, transposed; row ``h*T + t``) and the values per
    head ``V (H, T, d)``: with ``Wo (H, d, C)`` the output projection per head,
    ``A_t.T @ (V @ Wo).flatten(0, 1) + out_proj.bias`` is the attention's output ``(N, C)``.
    q_img: the projected image queries ``(N, C_int)``; queries, tokens ``(1, T, C)``.
    """
    h = mod.num_heads
    kp = mod.k_proj((queries + tokens)[0])
    vp = mod.v_proj(queries[0])
    t, ci = kp.shape
    d = ci // h
    scores = q_img.scores(kp.view(t, h, d).transpose(0, 1) * (1.0 / math.sqrt(d)))  # (H, T, N)
    A_t = torch.softmax(scores, dim=1).reshape(h * t, -1)
    return A_t, vp.view(t, h, d).transpose(0, 1).contiguous()


def _cached(
    cache: dict[str, torch.Tensor], key: str, make: Callable[[], torch.Tensor]
) -> torch.Tensor:
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = make()
    return hit


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
    stream = _ImageStream(keys, key_pe, cache, [layer.norm4 for layer in layers])

    queries = tokens
    for i, layer in enumerate(layers):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        kp = stream.project(i, _t(t2i.k_proj), f"x0@L{i}.k", t2i.k_proj.bias, True, t2i.num_heads)
        vp = stream.project(i, _t(t2i.v_proj), f"x0@L{i}.v", t2i.v_proj.bias)
        qp = stream.project(i, _t(i2t.q_proj), f"x0@L{i}.q", i2t.q_proj.bias, True, i2t.num_heads)
        queries = layer.norm2(queries + _tokens_to_image(t2i, queries + tokens, kp, vp))
        queries = layer.norm3(queries + layer.mlp(queries))
        A_t, V = _image_to_tokens(i2t, qp, queries, tokens)
        Wo = cache.get(f"L{i}.Wo")
        if Wo is None:
            Wo = cache[f"L{i}.Wo"] = _t(i2t.out_proj).reshape(V.shape[0], V.shape[2], -1)
        stream.advance(A_t, V, Wo, i2t.out_proj.bias)

    final = transformer.final_attn_token_to_image
    depth = len(layers)
    kp = stream.project(
        depth, _t(final.k_proj), "x0@final.k", final.k_proj.bias, True, final.num_heads
    )
    vp = stream.project(depth, _t(final.v_proj), "x0@final.v", final.v_proj.bias)
    queries = transformer.norm_final_attn(
        queries + _tokens_to_image(final, queries + tokens, kp, vp)
    )

    up1, up2 = upscaling[0], upscaling[3]
    wb1 = _cached(cache, "up1", lambda: _transposed_conv_matrix(up1))
    u = stream.project(depth, wb1[:-1], "x0@final.up", wb1[-1]).dense()
    wb2 = _cached(cache, "up2", lambda: _transposed_conv_matrix(up2))
    return queries, ScrambledFeatures(u, upscaling, 4 * int(round(math.sqrt(keys.shape[0]))), wb2)


def _transposed_conv_matrix(conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A ``ConvTranspose2d(k=2, s=2)`` as one matrix with its bias as an extra last row,
    ``(in + 1, 4 * out)``: column ``(a*2 + b)*out + co`` is output channel ``co`` at sub-pixel
    ``(a, b)`` of each input pixel.
    """
    assert conv.bias is not None
    w = conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, 4 * conv.out_channels)
    return torch.cat([w, conv.bias.repeat(4)[None]])


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

    def __init__(
        self,
        u: torch.Tensor,
        upscaling: nn.Sequential,
        size: int,
        second: torch.Tensor | None = None,
    ) -> None:
        self.u = u
        self.upscaling = upscaling
        # The second transposed convolution as a matrix plus bias row (see
        # _transposed_conv_matrix); the caller may pass it from its per-image cache.
        self.second = second if second is not None else _transposed_conv_matrix(upscaling[3])
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
            data = _gelu_(torch.addmm(self.second[-1], h, self.second[:-1]), act2)
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
