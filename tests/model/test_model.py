"""Shapes, parameter budget and native-resolution output of the randomly initialised model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrmedsegsam.model.build import build_model
from hrmedsegsam.model.decoder import sample_frame
from hrmedsegsam.model.encoder import LGViT, count_parameters


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("hrmedsegsam")


def test_parameter_budget(model) -> None:
    total = count_parameters(model)
    assert total <= 4_500_000
    assert 1_400_000 <= count_parameters(model.image_encoder) <= 1_800_000


def test_hierarchical_encoder_within_the_budget() -> None:
    from hrmedsegsam.model.hrmedsegsam import NEW_ENCODER

    model = build_model("hrmedsegsam", NEW_ENCODER)
    assert count_parameters(model) <= 4_500_000
    enc = model.image_encoder
    assert (
        enc.mid_dim == 128
        and [b.norm1.normalized_shape[0] for b in enc.blocks] == [96] * 2 + [128] * 6 + [96] * 2
    )


@pytest.mark.parametrize("layout", [{}, {"stem": "conv", "mid_dim": 128, "heads": (6, 8, 24)}])
def test_encoder_output_shape(layout) -> None:
    enc = LGViT(**layout).eval()
    with torch.inference_mode():
        out = enc(torch.rand(1, 3, 1024, 1024))
    assert out.shape == (1, 256, 64, 64)
    assert torch.isfinite(out).all()


def test_hierarchical_encoder_learns_through_both_scales() -> None:
    enc = LGViT(img_size=256, stem="conv", mid_dim=128, heads=(6, 8, 24))
    enc(torch.rand(1, 3, 256, 256)).pow(2).mean().backward()
    for part in (enc.patch_embed, enc.blocks[0], enc.down, enc.blocks[4], enc.up, enc.blocks[-1]):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_encoder_is_position_aware() -> None:
    """RoPE + LePE: moving content moves the embedding (not a bag of tokens)."""
    enc = LGViT(img_size=256).eval()
    x = torch.zeros(1, 3, 256, 256)
    x[..., 32:64, 32:64] = 1.0
    y = torch.roll(x, shifts=(128, 128), dims=(-2, -1))
    with torch.inference_mode():
        a, b = enc(x), enc(y)
    assert a.shape == (1, 256, 16, 16)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("native_hw", [(512, 512), (300, 700), (37, 23)])
def test_decoder_returns_native_resolution(model, native_hw) -> None:
    H, W = native_hw
    scale = 1024 / max(H, W)
    input_hw = (round(H * scale), round(W * scale))
    emb = torch.randn(1, 256, 64, 64)
    image = torch.rand(1, 3, H, W)
    box = torch.tensor([[100.0, 100.0, 400.0, 300.0]])
    with torch.inference_mode():
        out = model.decode(emb, image, input_hw, boxes=box, multimask=True)
    assert out.logits.shape == (1, 3, H, W)
    assert out.iou.shape == (1, 3)
    assert out.lowres.shape == (1, 3, 256, 256)
    with torch.inference_mode():
        single = model.decode(emb, image, input_hw, boxes=box, multimask=False)
    assert single.logits.shape == (1, 1, H, W)


def test_refinement_is_limited_to_roi_and_starts_as_bilinear(model) -> None:
    """The untrained refiner's residual heads are zero: output equals upsampled coarse
    logits, and the ROI follows the coarse mask, not the whole image."""
    dec = model.mask_decoder
    lowres = torch.full((1, 1, 256, 256), -5.0)
    lowres[..., 100:120, 60:90] = 5.0
    roi = dec.roi_for(lowres, (256, 256), (2048, 2048))
    assert roi is not None
    r0, c0, r1, c1 = roi
    assert (r1 - r0) * (c1 - c0) < 0.05 * 2048 * 2048
    assert r0 <= 100 * 8 and r1 >= 120 * 8 and c0 <= 60 * 8 and c1 >= 90 * 8
    assert (r1 - r0) % 4 == 0 and (c1 - c0) % 4 == 0


def test_refiner_channels_last_equals_plain_layout(monkeypatch) -> None:
    """The refiner's channels-last inputs (for speed) give the output of the plain layout,
    with and without gradients, for a crop of a replicated grey slice as the predictor
    passes it."""
    import hrmedsegsam.model.decoder as decoder

    torch.manual_seed(7)
    refiner = decoder.CrossScaleRefiner().eval()
    with torch.no_grad():
        for head in (refiner.hyper4, refiner.hyper2, refiner.hyper1):
            head.weight.normal_(0.0, 0.2)
    image = torch.rand(1, 1, 200, 240).expand(1, 3, -1, -1)[..., 20:156, 40:200]
    args = (image, torch.randn(1, 2, 136, 160), torch.randn(1, 2, 32), torch.randn(1, 32, 34, 40))
    parts = [torch.randn(1, 3, 34, 40), args[3], torch.randn(1, 1, 34, 40)]
    cat = decoder._cat_nhwc(parts)
    assert torch.equal(cat, torch.cat(parts, 1))
    assert cat.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = refiner(*args)
    fast_grad = refiner(*args)
    monkeypatch.setattr(decoder, "_nhwc", lambda x: x)
    monkeypatch.setattr(decoder, "_cat_nhwc", lambda ts: torch.cat(ts, 1))
    with torch.inference_mode():
        plain = refiner(*args)
    assert torch.allclose(fast, plain, atol=1e-5)
    assert torch.allclose(fast_grad.detach(), plain, atol=1e-5)
    fast_grad.sum().backward()
    assert refiner.hyper1.weight.grad is not None


def test_sample_frame_maps_valid_region_to_native() -> None:
    """A low-res map whose left half is positive gives a native mask whose left half is
    positive, whatever the padding of the frame."""
    lowres = torch.full((1, 1, 256, 256), -1.0)
    lowres[..., :128, :64] = 1.0  # valid region 128 x 128 (rows x cols), image left half
    out = sample_frame(lowres, (128, 128), (50, 50), (0, 0, 50, 50))
    pos = out[0, 0] > 0
    assert pos[:, :24].all() and not pos[:, 26:].any()


@pytest.fixture(scope="module")
def perturbed_model():
    """A random model whose layer norms are not the identity, so the factored decoder's
    handling of norm weights and biases is exercised."""
    torch.manual_seed(3)
    m = build_model("hrmedsegsam").eval()
    with torch.no_grad():
        for mod in m.mask_decoder.modules():
            if hasattr(mod, "weight") and type(mod).__name__ in ("LayerNorm", "LayerNorm2d"):
                mod.weight.normal_(1.0, 0.3)
                mod.bias.normal_(0.0, 0.3)
    return m


@pytest.mark.parametrize("with_points", [False, True])
def test_factored_decoder_matches_sam_forward(perturbed_model, with_points) -> None:
    """The per-image factored path gives segment_anything's own MaskDecoder output, on the
    call that fills the cache and on later calls; the cache holds only per-image tensors."""
    model = perturbed_model
    coarse = model.mask_decoder.coarse
    emb = torch.randn(1, 256, 64, 64)
    pts = (
        (torch.tensor([[[300.0, 200.0], [120.0, 610.0]]]), torch.tensor([[1, 0]]))
        if with_points
        else None
    )
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(
            points=pts, boxes=torch.tensor([[250.0, 150.0, 420.0, 330.0]]), masks=None
        )
        pe = model.prompt_encoder.get_dense_pe()
        ref_masks, ref_iou = coarse.predict_masks(emb, pe, sparse, dense)
        plain_masks, _, _, plain_up = coarse.predict_all(emb, pe, sparse, dense, None)
        cache: dict = {}
        for _ in range(2):
            masks, iou, _, up = coarse.predict_all(emb, pe, sparse, dense, cache)
            assert torch.allclose(masks, ref_masks, atol=1e-4)
            assert torch.allclose(iou, ref_iou, atol=1e-5)
        assert torch.allclose(plain_masks, ref_masks, atol=1e-4)
        keys = set(cache)
        other = model.prompt_encoder(
            points=None, boxes=torch.tensor([[10.0, 10.0, 900.0, 700.0]]), masks=None
        )
        coarse.predict_all(emb, pe, other[0], other[1], cache)
        assert set(cache) == keys  # nothing prompt-specific is kept


@pytest.mark.parametrize("native_hw", [(512, 512), (300, 700), (37, 23)])
def test_cached_decode_equals_plain_decode(perturbed_model, native_hw) -> None:
    """With the refiner active (non-zero heads), the cached path's native-resolution logits
    equal the plain path's, including the refiner's region sampled from a crop."""
    model = perturbed_model
    torch.manual_seed(4)
    with torch.no_grad():
        for head in (
            model.mask_decoder.refiner.hyper4,
            model.mask_decoder.refiner.hyper2,
            model.mask_decoder.refiner.hyper1,
        ):
            head.weight.normal_(0.0, 0.2)
    H, W = native_hw
    s = 1024 / max(H, W)
    input_hw = (round(H * s), round(W * s))
    emb = torch.randn(1, 256, 64, 64)
    image = torch.rand(1, 3, H, W)
    box = torch.tensor(
        [[0.3 * input_hw[1], 0.2 * input_hw[0], 0.6 * input_hw[1], 0.7 * input_hw[0]]]
    )
    native_box = (0.3 * W, 0.2 * H, 0.6 * W, 0.7 * H)
    with torch.inference_mode():
        for multimask in (False, True):
            a = model.decode(
                emb,
                image,
                input_hw,
                boxes=box,
                multimask=multimask,
                box_native=native_box,
                cache={},
            )
            b = model.decode(
                emb,
                image,
                input_hw,
                boxes=box,
                multimask=multimask,
                box_native=native_box,
                cache=None,
            )
            assert a.roi == b.roi
            assert torch.allclose(a.logits, b.logits, atol=1e-3)
            assert torch.allclose(a.iou, b.iou, atol=1e-5)


def test_scrambled_features_sample_like_grid_sample(perturbed_model) -> None:
    """Sampling the factored path's features directly equals grid_sample on the plain
    path's upscaled map, inside, across and beyond the border of the valid region."""
    model = perturbed_model
    coarse = model.mask_decoder.coarse
    emb = torch.randn(1, 256, 64, 64)
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(
            points=None, boxes=torch.tensor([[250.0, 150.0, 420.0, 330.0]]), masks=None
        )
        pe = model.prompt_encoder.get_dense_pe()
        _, _, _, plain_up = coarse.predict_all(emb, pe, sparse, dense, None)
        _, _, _, up = coarse.predict_all(emb, pe, sparse, dense, {})
        for valid, native, roi, out_hw in [
            ((256, 180), (700, 490), (100, 40, 360, 300), (65, 65)),
            ((200, 256), (300, 384), (0, 0, 300, 384), None),
            ((256, 256), (512, 512), (480, 480, 516, 520), (9, 10)),
        ]:
            whole = sample_frame(plain_up, valid, native, roi, out_hw)
            direct = sample_frame(up, valid, native, roi, out_hw)
            assert torch.allclose(whole, direct, atol=1e-4)


def test_factored_cache_filled_by_one_prompt_kind_serves_others(perturbed_model) -> None:
    """The per-image cache holds nothing that depends on the number of prompt tokens: filled
    by points and a box, it gives segment_anything's output for a box alone, points alone and
    multimask outputs."""
    model = perturbed_model
    coarse = model.mask_decoder.coarse
    torch.manual_seed(5)
    emb = torch.randn(1, 256, 64, 64)
    box = torch.tensor([[250.0, 150.0, 420.0, 330.0]])
    pts = (
        torch.tensor([[[300.0, 200.0], [120.0, 610.0], [700.0, 40.0]]]),
        torch.tensor([[1, 0, 1]]),
    )
    cache: dict = {}
    with torch.inference_mode():
        pe = model.prompt_encoder.get_dense_pe()
        for points, boxes in [(pts, box), (None, box), (pts, None), (pts[0][:, :1], None)]:
            if isinstance(points, torch.Tensor):
                points = (points, torch.ones(1, 1, dtype=torch.int64))
            sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
            ref_masks, ref_iou = coarse.predict_masks(emb, pe, sparse, dense)
            masks, iou, _, _ = coarse.predict_all(emb, pe, sparse, dense, cache)
            assert torch.allclose(masks, ref_masks, atol=1e-4)
            assert torch.allclose(iou, ref_iou, atol=1e-5)


@pytest.mark.parametrize("native_hw", [(512, 512), (700, 700), (37, 37), (256, 256)])
def test_sample_frame_whole_square_map_equals_grid_sample(native_hw) -> None:
    """Sampling the whole low-res map of a square slice onto the whole slice (the
    interpolate shortcut) gives grid_sample's values with border clamping."""
    torch.manual_seed(6)
    lowres = torch.randn(1, 3, 256, 256) * 10
    H, W = native_hw
    out = sample_frame(lowres, (256, 256), native_hw, (0, 0, H, W))

    def coords(n: int) -> torch.Tensor:
        p = (torch.arange(n, dtype=torch.float32) + 0.5) * (256 / n) - 0.5
        return (2 * p + 1) / 256 - 1

    grid = torch.stack(torch.meshgrid(coords(H), coords(W), indexing="ij")[::-1], dim=-1)
    ref = F.grid_sample(
        lowres, grid[None], mode="bilinear", padding_mode="border", align_corners=False
    )
    assert out.shape == ref.shape
    # Both compute the sample positions in float32, differently (grid_sample through
    # normalised coordinates): ~1e-5 of a pixel apart, on logits of magnitude ~30 here.
    assert torch.allclose(out, ref, rtol=1e-5, atol=5e-4)


def test_cached_decode_runs_under_autocast(perturbed_model) -> None:
    """On CUDA the Predictor decodes under float16 autocast, which leaves in-place and out=
    products alone: the cached path must keep their operands' dtypes consistent (checked
    here with CPU bfloat16 autocast) and stay close to the float32 result."""
    model = perturbed_model
    torch.manual_seed(7)
    emb = torch.randn(1, 256, 64, 64)
    image = torch.rand(1, 3, 512, 512)
    box = torch.tensor([[300.0, 200.0, 620.0, 700.0]])
    native_box = (150.0, 100.0, 310.0, 350.0)
    with torch.inference_mode():
        ref = model.decode(emb, image, (1024, 1024), boxes=box, box_native=native_box, cache={})
        cache: dict = {}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for _ in range(2):  # fills the cache, then reads it
                out = model.decode(
                    emb, image, (1024, 1024), boxes=box, box_native=native_box, cache=cache
                )
    assert out.logits.shape == ref.logits.shape
    assert torch.isfinite(out.logits.float()).all()
    agree = ((out.logits.float() > 0) == (ref.logits > 0)).float().mean()
    assert agree > 0.98
