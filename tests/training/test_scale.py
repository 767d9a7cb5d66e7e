"""Scale-faithful training frames: resampling and the canvas keep masks on their pixels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")


def test_resample_slice_scales_image_and_masks_together() -> None:
    from hrmedsegsam.training.scale import resample_slice

    img = np.zeros((40, 60), np.float32)
    img[10:20, 30:50] = 100.0
    masks = (img > 0)[None]
    out, m = resample_slice(img, masks, (3.0, 3.0), 1.0)
    assert out.shape == (120, 180) and m.shape == (1, 120, 180)
    ys, xs = np.nonzero(m[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (30, 59, 90, 149)
    assert out[45, 120] == pytest.approx(100.0) and out[5, 5] == 0.0


def test_place_in_canvas_pads_with_air_and_crops_what_does_not_fit() -> None:
    from hrmedsegsam.training.scale import place_in_canvas

    rng = np.random.default_rng(0)
    img = np.full((50, 80), 40.0, np.float32)
    masks = np.zeros((2, 50, 80), bool)
    masks[0, 10:20, 10:20] = True
    masks[1, 40:50, 70:80] = True
    out, m = place_in_canvas(img, masks, (100, 100), rng, fill=-1024.0)
    assert (
        out.shape == (100, 100)
        and (out == 40.0).sum() == 50 * 80
        and (out == -1024.0).sum() == 100 * 100 - 4000
    )
    assert m.shape[0] == 2 and all(np.all(out[k] == 40.0) for k in m)
    small, ms = place_in_canvas(img, masks, (30, 30), rng, fill=-1024.0)
    assert small.shape == (30, 30) and np.all(small == 40.0)
    assert ms.shape[0] <= 2 and all(k.any() for k in ms)  # masks cut away by the crop are dropped
