"""The GPU path (CUDA with float16 autocast). Marked `cuda`: skipped without a CUDA device;
scripts/gpu_check.sh runs them on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrmedsegsam.model.build import default_weights_path, load_model
from hrmedsegsam.predictor import Predictor

pytestmark = pytest.mark.cuda


def _ct_slice() -> np.ndarray:
    yy, xx = np.mgrid[:512, :512]
    img = np.full((512, 512), -1000, np.int16)
    img[(yy - 256) ** 2 / 0.16 + (xx - 256) ** 2 / 0.2 < 256**2] = 40
    img[(yy - 230) ** 2 + (xx - 282) ** 2 < 50**2] = 180
    return img


@pytest.fixture(scope="module")
def models():
    if not default_weights_path().is_file():
        pytest.skip("no bundled weights")
    return load_model("hrmedsegsam", "cpu"), load_model("hrmedsegsam", "cuda")


def test_cuda_predictor_matches_cpu(models) -> None:
    cpu, gpu = models
    on_cpu, on_gpu = Predictor(cpu, backend="torch"), Predictor(gpu)
    assert on_gpu.device.type == "cuda" and on_gpu.encoder()[0] == "torch"
    img = _ct_slice()
    a = on_cpu.embed(img, (-160, 240)).features
    b = on_gpu.embed(img, (-160, 240)).features.cpu()
    assert b.dtype == torch.float32
    assert float((a - b).norm() / a.norm()) < 2e-2  # float16 autocast
    on_cpu.set_image(img, (-160, 240))
    on_gpu.set_image(img, (-160, 240))
    box = [230, 180, 335, 285]
    ma, mb = on_cpu.predict(box=box).mask, on_gpu.predict(box=box).mask
    assert ma.any()
    assert (ma & mb).sum() / (ma | mb).sum() > 0.95


def test_cuda_propagation_runs(models) -> None:
    from hrmedsegsam.volume import propagate

    _, gpu = models
    pred = Predictor(gpu)
    vol = np.stack([_ct_slice()] * 5)
    pred.set_image(vol[2], (-160, 240))
    start = pred.predict(box=[230, 180, 335, 285]).mask
    out = propagate(pred, vol, 2, start, (-160, 240))
    assert out.shape == vol.shape and out[2].any() and out.sum() >= start.sum()
