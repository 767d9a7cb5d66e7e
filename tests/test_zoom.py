"""Zoom for small boxes: crop geometry, logits between frames, and the Predictor's zoomed path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrmedsegsam.masks import dice
from hrmedsegsam.predictor import Predictor
from hrmedsegsam.zoom import crop_logits_to_lowres, lowres_to_crop, zoom_crop


def test_zoom_crop_is_a_square_around_small_boxes_only() -> None:
    crop = zoom_crop((300, 200, 319, 209), (512, 512))
    assert crop is not None
    r0, c0, h, w = crop
    assert h == w == 192 and r0 <= 200 and r0 + h > 209 and c0 <= 300 and c0 + w > 319
    # Side 4x the longer box side once that exceeds the minimum; centred on the box.
    r0, c0, h, w = zoom_crop((200, 200, 259, 239), (512, 512))
    assert h == w == 240 and abs((c0 + w / 2) - 230) <= 1 and abs((r0 + h / 2) - 220) <= 1
    # Moved inside the slice at its border.
    assert zoom_crop((0, 0, 9, 9), (512, 512))[:2] == (0, 0)
    assert zoom_crop((500, 500, 511, 511), (512, 512))[:2] == (320, 320)
    # Not small enough (the crop would be most of the slice), or a click outside the crop.
    assert zoom_crop((100, 100, 200, 200), (512, 512)) is None
    # A kidney-sized box (61 x 51 px) stays on the whole slice even on a large slice.
    assert zoom_crop((100, 100, 160, 150), (1024, 1024)) is None
    assert zoom_crop((100, 100, 148, 148), (1024, 1024)) is not None
    assert zoom_crop((300, 200, 319, 209), (200, 200)) is None
    assert zoom_crop((300, 200, 319, 209), (512, 512), np.array([[10.0, 10.0]])) is None


def test_low_res_logits_map_between_the_slice_and_the_crop() -> None:
    H, W, L = 600, 500, 256
    crop = (100, 150, 160, 160)
    yy, xx = np.mgrid[:H, :W]
    disc = torch.from_numpy(((yy - 180) ** 2 + (xx - 230) ** 2 <= 30**2).astype(np.float32))
    native_crop = (disc[100:260, 150:310] * 20 - 10)[None, None]
    valid = (L * H // max(H, W), L * W // max(H, W))
    low = crop_logits_to_lowres(native_crop, (H, W), crop, valid, L)
    assert low.shape == (1, 1, L, L) and (low[..., valid[0] :, :] == -10).all()
    back = lowres_to_crop(low, valid, (H, W), crop, (L, L))
    # The disc (radius 30 native px) comes back inside the crop's frame, centred where it was.
    up = torch.nn.functional.interpolate(back, size=(160, 160), mode="bilinear")[0, 0] > 0
    assert dice(up.numpy(), native_crop[0, 0].numpy() > 0) > 0.9


@pytest.fixture
def counted(box_threshold_model):
    calls: list[tuple[int, ...]] = []
    encode = box_threshold_model.encode

    def counting(images: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(images.shape))
        return encode(images)

    box_threshold_model.encode = counting
    return Predictor(box_threshold_model, torch.device("cpu")), calls


def test_a_small_box_is_decoded_on_a_crop_and_pasted_back_in_place(counted) -> None:
    """The box-threshold model answers with the bright pixels inside the box, so the zoomed
    answer must be exactly the small bright square, wherever the crop lies."""
    pred, calls = counted
    H, W = 600, 700
    img = np.zeros((H, W), np.float32)
    img[400:420, 620:645] = 1.0  # the small structure, near a corner
    img[100:300, 100:300] = 1.0  # a large bright neighbour far away
    pred.set_image(img, window=(0, 1))
    assert len(calls) == 1
    box = [615, 395, 650, 425]
    out = pred.predict(box=box)
    assert len(calls) == 2  # the crop's embedding
    expected = np.zeros((H, W), bool)
    expected[400:420, 620:645] = True
    assert np.array_equal(out.mask, expected)
    # The low-res logits are in the whole slice's frame: the same as the mask's own.
    ref = pred.mask_to_logits(expected)
    assert ((out.logits > 0) == (ref > 0)).mean() > 0.999
    # A click on the same box reuses the crop; the whole-slice path for a large box.
    again = pred.refine(out, [[630, 410]], [1], box=box)
    assert len(calls) == 2 and np.array_equal(again.mask, expected)
    large = pred.predict(box=[90, 90, 310, 310])
    assert len(calls) == 2 and large.mask[100:300, 100:300].all()
    # Without zoom the answer is the same here (the model is exact at any scale).
    pred.zoom = False
    assert np.array_equal(pred.predict(box=box).mask, expected)


def test_propagation_and_fill_never_zoom(counted) -> None:
    """Boxes made from the previous slice's mask stay on the whole slice (zoom there lowered
    3D Dice; model card): one encoder run per slice, none for crops."""
    from hrmedsegsam.volume import propagate

    pred, calls = counted
    vol = np.zeros((6, 400, 400), np.float32)
    vol[:, 200:215, 180:200] = 1.0  # a small structure through every slice
    vol[:, 0, 0] = np.arange(6) * 0.01  # slices differ (the embedding cache keys by content)
    start = np.zeros((400, 400), bool)
    start[200:215, 180:200] = True
    seg = propagate(pred, vol, 2, start, (0, 1))
    assert seg[:, 200:215, 180:200].all() and seg.sum() == 6 * 15 * 20
    assert len(calls) == 5  # the five other slices; a zoomed box would add a crop each


def test_a_click_on_a_small_answer_is_decoded_again_on_a_crop(counted) -> None:
    pred, calls = counted
    H, W = 600, 700
    img = np.zeros((H, W), np.float32)
    img[400:420, 620:645] = 1.0
    img[100:300, 100:300] = 1.0
    pred.set_image(img, window=(0, 1))
    expected = np.zeros((H, W), bool)
    expected[400:420, 620:645] = True
    out = pred.predict(points=[[630, 410]], labels=[1])
    assert np.array_equal(out.mask, expected) and len(calls) == 2  # the crop's embedding
    assert ((out.logits > 0) == (pred.mask_to_logits(expected) > 0)).mean() > 0.999
    big = pred.predict(points=[[200, 200]], labels=[1])
    assert big.mask[100:300, 100:300].all() and len(calls) == 2  # 40,000 px: no zoom
    assert np.array_equal(pred.predict(points=[[630, 410]], labels=[1], zoom=False).mask, expected)
