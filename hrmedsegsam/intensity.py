"""Intensity windows: which value range of a slice maps to black..white (0..1) for the model.

A window is a pair ``(lo, hi)`` of raw voxel values with ``lo < hi`` (Hounsfield units for
CT). Values at or below ``lo`` map to 0, at or above ``hi`` to 1, linearly in between.

Importing this module needs only numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hrmedsegsam.errors import InputError

__all__ = [
    "PRESETS",
    "PRESET_ALIASES",
    "PERCENTILE_RANGE",
    "preset_names",
    "percentile_window",
    "resolve_window",
    "apply_window",
]

#: Named CT windows in Hounsfield units, ``(lo, hi)``.
PRESETS: dict[str, tuple[float, float]] = {
    "abdomen": (-160.0, 240.0),  # soft tissue (level 40, width 400); LiteMedSAM's CT window
    "lung": (-1000.0, 200.0),
    "bone": (-500.0, 1300.0),
    "brain": (0.0, 80.0),
}

#: Other accepted preset names: a preset key, or ``"percentile"`` for the image's own range.
PRESET_ALIASES: dict[str, str] = {
    "ct": "abdomen",
    "mr": "percentile",
    "auto": "percentile",
    "percentile": "percentile",
}

#: Percentiles (of the voxel values) used for MR and other non-CT images.
PERCENTILE_RANGE: tuple[float, float] = (0.5, 99.5)

_MAX_SAMPLES = 1_000_000  # percentile estimate from at most this many voxels


def preset_names() -> list[str]:
    """All names accepted by :func:`resolve_window`'s ``preset``, sorted."""
    return sorted(set(PRESETS) | set(PRESET_ALIASES))


def _sample(array: np.ndarray, max_samples: int = _MAX_SAMPLES) -> np.ndarray:
    """The finite values of ``array`` (flattened), a fixed random subset of them if large."""
    flat = np.asarray(array).reshape(-1)
    if flat.size > max_samples:
        # Fixed seed: the same volume always gets the same window.
        idx = np.random.default_rng(0).integers(0, flat.size, size=max_samples)
        flat = flat[idx]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    elif flat.dtype.kind == "b":
        flat = flat.astype(np.uint8)
    return flat


def percentile_window(
    array: np.ndarray,
    lo_pct: float = PERCENTILE_RANGE[0],
    hi_pct: float = PERCENTILE_RANGE[1],
) -> tuple[float, float]:
    """Window from the ``lo_pct`` and ``hi_pct`` percentiles of the voxel values.

    Works on any shape (a slice ``(H, W)`` or a volume ``(z, y, x)``). Volumes over a
    million voxels are estimated from a fixed random sample of a million (deterministic).
    NaN/inf are ignored. The result always has ``hi > lo``: when the percentiles coincide
    (e.g. a mostly empty mask) the full min..max is used, and a constant image gets a
    window of width 1 centred on its value.

    Raises:
        InputError: percentiles outside 0..100 or ``lo_pct >= hi_pct``.
    """
    if not (0.0 <= lo_pct < hi_pct <= 100.0):
        raise InputError(
            f"percentiles ({lo_pct}, {hi_pct}) are invalid; need 0 <= low < high <= 100."
        )
    values = _sample(array)
    if values.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(values, [lo_pct, hi_pct]))
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        half = max(0.5, abs(lo) * 1e-6)
        lo, hi = lo - half, lo + half
    return (lo, hi)


def _check_window(window: Sequence[float], what: str = "window") -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"{what} {window!r} must be two numbers (low, high).") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{what} ({lo:g}, {hi:g}) must be two finite numbers.")
    if lo >= hi:
        raise InputError(
            f"{what} ({lo:g}, {hi:g}) is empty: its low value must be below its high value."
        )
    return (lo, hi)


def looks_like_ct(array: np.ndarray) -> bool:
    """Whether voxel values look like CT Hounsfield units: signed values whose low
    percentile is air (about -1000) and whose high percentile stays below dense bone/metal.
    Used only when no modality is known (NIfTI, NRRD, MHA files).
    """
    arr = np.asarray(array)
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        return False
    sample = _sample(arr)
    lo, hi = np.percentile(sample, [1.0, 99.0])
    return bool(-1100.0 <= lo <= -500.0 and hi <= 4000.0)


def resolve_window(
    array: np.ndarray | None,
    window: Sequence[float] | None = None,
    preset: str | None = None,
    modality: str = "",
) -> tuple[float, float]:
    """Decide the window for an image: explicit window > named preset > default.

    Args:
        array: the voxels (any shape); only read when a percentile window is needed, so it
            may be None when ``window`` or a fixed preset is given.
        window: explicit ``(lo, hi)``.
        preset: ``"abdomen"`` (alias ``"ct"``), ``"lung"``, ``"bone"``, ``"brain"``, or
            ``"percentile"`` (aliases ``"mr"``, ``"auto"``); case-insensitive.
        modality: DICOM modality of the image; the default is the abdomen window for
            ``"CT"`` (or, when the modality is unknown as in NIfTI files, for voxels that
            look like Hounsfield units, see :func:`looks_like_ct`), and the percentile
            window of ``array`` otherwise.

    Returns:
        ``(lo, hi)`` as floats with ``lo < hi``.

    Raises:
        InputError: unknown preset (the message lists valid names), or ``lo >= hi``.
    """
    if window is not None:
        return _check_window(window)
    if preset is not None:
        key = str(preset).strip().lower().replace("-", "_")
        key = PRESET_ALIASES.get(key, key)
        if key in PRESETS:
            return PRESETS[key]
        if key != "percentile":
            raise InputError(
                f"unknown window preset {preset!r}; valid names: {', '.join(preset_names())}."
            )
    elif str(modality).strip().upper() == "CT":
        return PRESETS["abdomen"]
    elif not str(modality).strip() and array is not None and looks_like_ct(array):
        return PRESETS["abdomen"]
    if array is None:
        raise InputError("a percentile window needs the image's voxels, but none were given.")
    return percentile_window(array, *PERCENTILE_RANGE)


def apply_window(array: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Map ``array`` (any shape) through ``window`` to float32 in [0, 1], clipped.

    NaN voxels become 0. The result has the same shape as ``array``.

    Raises:
        InputError: ``window`` is not two finite numbers with ``lo < hi``.
    """
    lo, hi = _check_window(window)
    out = np.asarray(array, dtype=np.float32) - np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    np.nan_to_num(out, copy=False, nan=0.0)
    return out
