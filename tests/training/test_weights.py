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
    disk = (yy - 60) ** 2 + (xx - 70) ** 2 <= 18 ** 2
    img = (-100 + 300 * disk + rng.normal(0, 10, disk.shape)).astype(np.float32)
    pred.set_image(img, window=(-160, 240))
    out = pred.predict(box=[50, 40, 90, 80])
    assert dice(out.mask, disk) > 0.9
