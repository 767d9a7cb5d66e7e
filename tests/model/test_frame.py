"""hrmedsegsam.model.frame: the one owner of the model frame's geometry."""

from __future__ import annotations

import numpy as np
import torch

from hrmedsegsam.model.frame import boxes_to_frame, points_to_frame, resized_hw, to_frame


def test_longest_side_becomes_the_frame_side() -> None:
    assert resized_hw((512, 512), 1024) == (1024, 1024)
    assert resized_hw((100, 300), 1024) == (341, 1024)
    assert resized_hw((2048, 1000), 256) == (256, 125)
    assert resized_hw((1, 5000), 256) == (1, 256)  # never a zero-sized side


def test_to_frame_resizes_then_pads_bottom_right() -> None:
    image = np.ones((100, 300), np.float32)
    frame, hw = to_frame(image, 64)
    assert hw == (21, 64)
    assert frame.shape == (1, 3, 64, 64)
    torch.testing.assert_close(frame[0, :, :21, :], torch.ones(3, 21, 64))
    assert torch.all(frame[0, :, 21:, :] == 0.0)
    batch, hw2 = to_frame(torch.rand(2, 3, 40, 20), 32)
    assert batch.shape == (2, 3, 32, 32) and hw2 == (32, 16)


def test_prompts_scale_per_axis_into_the_resized_part() -> None:
    native, input_hw = (100, 300), resized_hw((100, 300), 1024)
    pts = points_to_frame([[299.0, 99.0], [0.0, 0.0]], native, input_hw)
    np.testing.assert_allclose(pts[0], [299 * 1024 / 300, 99 * 341 / 100], rtol=1e-6)
    assert pts.dtype == np.float32 and pts.shape == (2, 2)
    box = boxes_to_frame([[10.0, 20.0, 30.0, 40.0]], native, input_hw)
    np.testing.assert_allclose(
        box[0], [10 * 1024 / 300, 20 * 3.41, 30 * 1024 / 300, 40 * 3.41], rtol=1e-6
    )


def test_predictor_preprocess_is_the_frame(box_threshold_model: torch.nn.Module) -> None:
    from hrmedsegsam.predictor import Predictor

    predictor = Predictor(box_threshold_model)
    img = np.random.default_rng(0).uniform(0, 1, (37, 90)).astype(np.float32)
    frame, _, hw = predictor.preprocess(img, (0.0, 1.0))
    expected, hw2 = to_frame(img, box_threshold_model.image_size)
    assert hw == hw2
    torch.testing.assert_close(frame, expected)
