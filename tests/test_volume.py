"""3D propagation: follows an object slice by slice and stops where it ends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrmedsegsam.errors import PromptError
from hrmedsegsam.predictor import Predictor
from hrmedsegsam.volume import propagate


def _blob_volume(z0: int = 6, z1: int = 15, Z: int = 24, H: int = 48, W: int = 64) -> tuple:
    """A bright ellipsoid on slices z0..z1 (inclusive), plus a second bright object far
    away on every slice that propagation must not jump to."""
    zz, yy, xx = np.mgrid[:Z, :H, :W]
    zc, r = (z0 + z1) / 2, (z1 - z0) / 2 + 0.5
    rr = np.sqrt(((zz - zc) / r) ** 2 + ((yy - 20) / 12) ** 2 + ((xx - 22) / 14) ** 2)
    obj = rr <= 1.0
    vol = np.zeros((Z, H, W), np.int16)
    vol[obj] = 200
    vol[:, 38:46, 52:62] = 200  # distractor
    return vol, obj


def test_propagation_stops_at_object_end(box_threshold_model) -> None:
    vol, obj = _blob_volume()
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    start = 10
    calls = []
    out = propagate(
        pred,
        vol,
        start,
        obj[start],
        (-160, 240),
        key_prefix="v",
        progress=lambda d, t: calls.append((d, t)),
    )
    zs = np.flatnonzero(out.any(axis=(1, 2)))
    ref = np.flatnonzero(obj.any(axis=(1, 2)))
    assert abs(zs[0] - ref[0]) <= 1 and abs(zs[-1] - ref[-1]) <= 1
    assert not out[:, 38:46, 52:62].any(), "propagation leaked to the distractor"
    inter = np.logical_and(out, obj).sum()
    assert 2 * inter / (out.sum() + obj.sum()) > 0.9
    assert calls and calls[-1] == (vol.shape[0] - 1, vol.shape[0] - 1)


def test_propagation_one_direction_and_cancel(box_threshold_model) -> None:
    vol, obj = _blob_volume()
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    up = propagate(pred, vol, 10, obj[10], (-160, 240), direction="up")
    assert not up[:10].any() and up[11:].any()
    out = propagate(pred, vol, 10, obj[10], (-160, 240), cancel=lambda: True)
    assert np.array_equal(np.flatnonzero(out.any(axis=(1, 2))), [10])


def test_propagation_rejects_bad_start(box_threshold_model) -> None:
    vol, obj = _blob_volume()
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    with pytest.raises(PromptError, match="out of range"):
        propagate(pred, vol, 99, obj[10], (-160, 240))
    with pytest.raises(PromptError, match="empty"):
        propagate(pred, vol, 10, np.zeros_like(obj[10]), (-160, 240))


@pytest.mark.parametrize("prompt", ["box", "box+point", "box+point+mask"])
def test_propagation_prompt_modes(box_threshold_model, prompt: str) -> None:
    vol, obj = _blob_volume()
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    out = propagate(pred, vol, 10, obj[10], (-160, 240), prompt=prompt)
    inter = np.logical_and(out, obj).sum()
    assert 2 * inter / (out.sum() + obj.sum()) > 0.9


def test_propagation_rejects_unknown_prompt(box_threshold_model) -> None:
    vol, obj = _blob_volume()
    with pytest.raises(ValueError, match="prompt must be one of"):
        propagate(
            Predictor(box_threshold_model, torch.device("cpu")),
            vol,
            10,
            obj[10],
            (-160, 240),
            prompt="mask",
        )


def test_propagation_stops_where_the_intensity_jumps(box_threshold_model) -> None:
    """A column that changes from 200 HU to 80 HU at z=12 looks the same to the shape rules
    (the threshold model segments both); the intensity rule stops there, and without it
    propagation runs on."""
    from hrmedsegsam.volume import StopRule

    vol = np.zeros((20, 40, 40), np.int16)
    vol[4:12, 10:30, 10:30] = 200
    vol[12:18, 10:30, 10:30] = 80  # windowed 0.9 -> 0.6 under -160..240
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    start = vol[8] > 0
    out = propagate(pred, vol, 8, start, (-160, 240))
    assert np.array_equal(np.flatnonzero(out.any(axis=(1, 2))), np.arange(4, 12))
    loose = propagate(pred, vol, 8, start, (-160, 240), rule=StopRule(max_intensity_jump=None))
    assert np.array_equal(np.flatnonzero(loose.any(axis=(1, 2))), np.arange(4, 18))
    # window None: a fixed percentile window of the volume, not each slice's own
    assert np.array_equal(
        np.flatnonzero(propagate(pred, vol, 8, start, None).any(axis=(1, 2))), np.arange(4, 12)
    )


def test_propagation_follows_a_growing_organ_and_drops_neighbours(box_threshold_model) -> None:
    """Issue 12: with a box margin the next slice's box does not clip an organ that grows
    from slice to slice (a 1-pixel margin cuts it with a straight edge), and a structure
    that the wider box takes in, but that does not touch the organ, is not swallowed."""
    Z, H, W = 6, 200, 200
    yy, xx = np.mgrid[:H, :W]
    vol = np.zeros((Z, H, W), np.int16)
    truth = np.zeros((Z, H, W), bool)
    for z in range(Z):
        r = 40 + 5 * z  # grows 5 px per side per slice
        truth[z] = (yy - 100) ** 2 + (xx - 100) ** 2 <= r * r
        vol[z][truth[z]] = 200
    vol[:, 98:102, 168:176] = (
        200  # a "vessel" beside the organ (edge at most x=165), never touching it
    )
    pred = Predictor(box_threshold_model, torch.device("cpu"))
    out = propagate(pred, vol, 0, truth[0], (-160, 240), direction="up", box_margin=0.1)
    assert out.any(axis=(1, 2)).all()
    assert np.array_equal(out, truth)  # neither clipped nor joined to the vessel
    clipped = propagate(pred, vol, 0, truth[0], (-160, 240), direction="up", box_margin=0.0)
    assert clipped[Z - 1].sum() < truth[Z - 1].sum()  # a 1-pixel margin cuts it


def test_mask_components_are_eight_connected() -> None:
    from hrmedsegsam.masks import components

    m = np.zeros((6, 6), bool)
    m[0, 0] = m[1, 1] = True  # diagonal neighbours: one component
    m[4:6, 4:6] = True
    lab, n = components(m)
    assert n == 2 and lab[0, 0] == lab[1, 1] != lab[5, 5] and lab[3, 3] == 0
