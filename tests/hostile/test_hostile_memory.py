"""Class 5 of issue 16 (memory): the embedding cache is bounded in bytes, whatever the slice size."""

from __future__ import annotations

import numpy as np
import torch


def test_embedding_cache_is_bounded_in_bytes(box_threshold_model) -> None:
    from hrmedsegsam.predictor import Predictor

    budget = 48 << 20
    pred = Predictor(box_threshold_model, torch.device("cpu"), cache_bytes=budget)
    for z in range(6):  # 4 MB features + 1 MB slice each: all six fit
        pred.embed(np.full((512, 512), z, np.float32), (0, 10), key=("small", z))
    assert all(pred.is_cached(("small", z), (0, 10)) for z in range(6))
    assert pred.cached_bytes == 6 * (4 << 20) + 6 * (1 << 20)
    for z in range(4):  # 4 MB + 16 MB each: the budget holds two, the oldest go first
        pred.embed(np.full((2048, 2048), z, np.float32), (0, 10), key=("big", z))
        assert pred.cached_bytes <= budget
    assert [pred.is_cached(("big", z), (0, 10)) for z in range(4)] == [False, False, True, True]
    assert not any(pred.is_cached(("small", z), (0, 10)) for z in range(6))


def test_one_slice_larger_than_the_cache_still_works(box_threshold_model) -> None:
    from hrmedsegsam.predictor import Predictor

    pred = Predictor(box_threshold_model, torch.device("cpu"), cache_bytes=1 << 20)
    img = np.zeros((1024, 1024), np.float32)
    img[100:300, 100:300] = 1
    pred.set_image(img, (0, 1), key="only")
    assert pred.is_cached("only", (0, 1)) and pred.predict(box=[90, 90, 310, 310]).mask[200, 200]
