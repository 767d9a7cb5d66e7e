"""hrmedsegsam.intensity: window presets, percentile windows and windowing."""

from __future__ import annotations

import numpy as np
import pytest

from hrmedsegsam.errors import InputError
from hrmedsegsam.intensity import (
    PERCENTILE_RANGE,
    PRESETS,
    apply_window,
    percentile_window,
    preset_names,
    resolve_window,
)


def test_presets():
    assert PRESETS["abdomen"] == (-160, 240)
    assert PRESETS["lung"] == (-1000, 200)
    assert PRESETS["bone"] == (-500, 1300)
    assert PRESETS["brain"] == (0, 80)
    assert PERCENTILE_RANGE == (0.5, 99.5)
    assert {"abdomen", "ct", "lung", "bone", "brain", "mr", "percentile", "auto"} <= set(
        preset_names()
    )


def test_percentile_window_matches_numpy():
    array = np.random.default_rng(0).normal(300.0, 50.0, size=(20, 30, 40)).astype(np.float32)
    lo, hi = percentile_window(array)
    expected = np.percentile(array, [0.5, 99.5])
    assert (lo, hi) == pytest.approx(tuple(expected))
    assert isinstance(lo, float) and isinstance(hi, float)


def test_percentile_window_subsamples_big_volumes_deterministically():
    array = np.random.default_rng(1).integers(0, 1000, size=(40, 256, 256), dtype=np.int16)
    first = percentile_window(array)
    assert first == percentile_window(array)
    exact = np.percentile(array, [0.5, 99.5])
    assert first == pytest.approx(tuple(exact), abs=3)


@pytest.mark.parametrize(
    "array",
    [
        np.full((4, 5), 7, np.int16),  # constant
        np.zeros((3, 4, 5), bool),
        np.full((2, 2), 1e20, np.float64),
        np.array([[np.nan, np.nan]]),
        np.zeros((0, 3)),
    ],
)
def test_percentile_window_is_never_empty(array):
    lo, hi = percentile_window(array)
    assert hi > lo and np.isfinite([lo, hi]).all()


def test_percentile_window_sparse_mask_uses_full_range():
    mask = np.zeros((100, 100), np.uint8)
    mask[0, 0] = 1  # 99.5th percentile is 0: falls back to min..max
    assert percentile_window(mask) == (0.0, 1.0)


def test_percentile_window_ignores_nan():
    array = np.arange(1000, dtype=np.float32)
    array[::10] = np.nan
    lo, hi = percentile_window(array, 0, 100)
    assert (lo, hi) == (1.0, 999.0)


def test_percentile_window_bad_percentiles():
    with pytest.raises(InputError):
        percentile_window(np.zeros(3), 50, 10)
    with pytest.raises(InputError):
        percentile_window(np.zeros(3), -1, 10)


def test_resolve_window_precedence():
    array = np.random.default_rng(2).normal(100.0, 10.0, size=(10, 10))
    pct = percentile_window(array)
    # explicit window beats preset and modality
    assert resolve_window(array, window=(1, 2), preset="lung", modality="CT") == (1.0, 2.0)
    # preset beats modality; names are case-insensitive
    assert resolve_window(array, preset="Lung", modality="CT") == (-1000, 200)
    assert resolve_window(array, preset="ct") == PRESETS["abdomen"]
    assert resolve_window(array, preset="bone") == PRESETS["bone"]
    assert resolve_window(array, preset="brain") == PRESETS["brain"]
    for name in ("mr", "percentile", "auto"):
        assert resolve_window(array, preset=name, modality="CT") == pct
    # defaults: CT -> abdomen, anything else -> percentile of the array
    assert resolve_window(array, modality="CT") == PRESETS["abdomen"]
    assert resolve_window(array, modality="ct") == PRESETS["abdomen"]
    assert resolve_window(array, modality="MR") == pct
    assert resolve_window(array) == pct
    # the array is only needed for percentile windows
    assert resolve_window(None, preset="lung") == PRESETS["lung"]
    with pytest.raises(InputError):
        resolve_window(None)


def test_resolve_window_errors():
    array = np.zeros((2, 2))
    with pytest.raises(InputError) as exc:
        resolve_window(array, preset="liver")
    message = str(exc.value)
    assert "'liver'" in message and "\n" not in message
    for name in ("abdomen", "lung", "bone", "brain", "mr", "percentile"):
        assert name in message
    with pytest.raises(InputError, match="low value must be below"):
        resolve_window(array, window=(240, -160))
    with pytest.raises(InputError):
        resolve_window(array, window=(10, 10))
    with pytest.raises(InputError):
        resolve_window(array, window=(0, float("nan")))
    with pytest.raises(InputError):
        resolve_window(array, window=(1, 2, 3))


def test_apply_window():
    hu = np.array([[-2000, -160, 40], [240, 3000, 140]], np.int16)
    out = apply_window(hu, (-160, 240))
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_allclose(out, [[0, 0, 0.5], [1, 1, 0.75]], atol=1e-6)
    floats = np.array([np.nan, 0.25, -1.0, 2.0])
    np.testing.assert_allclose(apply_window(floats, (0, 1)), [0, 0.25, 0, 1])
    with pytest.raises(InputError):
        apply_window(hu, (5, 5))


def test_unknown_modality_with_hounsfield_values_gets_the_ct_window() -> None:
    rng = np.random.default_rng(0)
    ct = np.concatenate(
        [np.full(5000, -1000), rng.normal(40, 30, 20000), rng.normal(700, 200, 2000)]
    )
    assert resolve_window(ct.astype(np.int16).reshape(-1, 1, 1)) == (-160.0, 240.0)
    mr = rng.gamma(2.0, 150.0, size=(4, 32, 32))
    lo, hi = resolve_window(mr)
    assert (lo, hi) != (-160.0, 240.0) and lo >= 0
