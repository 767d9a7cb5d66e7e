"""The shipped weights segment a bright synthetic disk from a box."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_shipped_weights_segment_disk() -> None:
    from hrmedsegsam.masks import dice
    from hrmedsegsam.model.build import default_weights_path, load_model
    from hrmedsegsam.predictor import Predictor

    if not default_weights_path().is_file():
        pytest.skip("weights/hrmedsegsam.pt is absent")
    torch.set_num_threads(1)
    pred = Predictor(load_model(device="cpu"))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    disk = (yy - 60) ** 2 + (xx - 70) ** 2 <= 18**2
    img = (-100 + 300 * disk + rng.normal(0, 10, disk.shape)).astype(np.float32)
    pred.set_image(img, window=(-160, 240))
    out = pred.predict(box=[50, 40, 90, 80])
    assert dice(out.mask, disk) > 0.9


def test_shipped_weights_at_clinical_scale() -> None:
    """A 20-pixel-wide disc on a 512x512 slice (the in-frame size of a small structure of a
    clinical CT slice): its box and one click on it both segment it."""
    from hrmedsegsam.masks import dice
    from hrmedsegsam.model.build import default_weights_path, load_model
    from hrmedsegsam.predictor import Predictor

    if not default_weights_path().is_file():
        pytest.skip("weights/hrmedsegsam.pt is absent")
    torch.set_num_threads(1)
    pred = Predictor(load_model(device="cpu"))
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:512, :512]
    body = (yy - 256) ** 2 / 220**2 + (xx - 256) ** 2 / 240**2 <= 1
    disk = (yy - 300) ** 2 + (xx - 200) ** 2 <= 10**2
    img = np.where(body, 40.0, -1000.0) + 160.0 * disk + rng.normal(0, 10, disk.shape)
    pred.set_image(img.astype(np.float32), window=(-160, 240))
    assert dice(pred.predict(box=[190, 290, 210, 310]).mask, disk) > 0.8
    assert dice(pred.predict(points=[[200, 300]], labels=[1]).mask, disk) > 0.8
