"""Scale-faithful slices: resample a slice to another pixel size and place it in a canvas.

The model sees every slice as a 1024 frame (longest side resized to 1024), so what it
learns is an object's size *relative to the slice's field of view*, at the slice's pixel
density. A 3 mm volume or a 180 mm crop magnifies its structures into the frame far more
than a clinical 512x512 slice at 0.6-1 mm over a 300-450 mm field of view does (DESIGN
§3.3). These helpers turn training slices into clinical-looking ones:

- :func:`resample_slice` changes the pixel size (e.g. 3 mm -> 0.8 mm: the native grid,
  where the decoder refines, gets clinical pixel counts);
- :func:`place_in_canvas` pads (or crops) the slice to a field of view in mm, filled with
  air, at a random offset (zoom-out: objects get the in-frame size a full clinical slice
  gives them).

Arrays are ``(H, W)`` (rows = y, columns = x); masks ``(K, H, W)`` bool on the same grid;
spacings are ``(row, column)`` in mm.
"""

from __future__ import annotations

import numpy as np


def resample_slice(
    image: np.ndarray, masks: np.ndarray, spacing_rc: tuple[float, float], new_spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``image`` ``(H, W)`` (bilinear, antialiased when shrinking) and ``masks``
    ``(K, H, W)`` (nearest) from ``spacing_rc`` mm to isotropic ``new_spacing`` mm pixels.
    Returns the new image (float32) and masks (bool) on the same new grid.
    """
    import torch
    import torch.nn.functional as F

    h, w = image.shape
    nh = max(1, int(round(h * spacing_rc[0] / new_spacing)))
    nw = max(1, int(round(w * spacing_rc[1] / new_spacing)))
    if (nh, nw) == (h, w):
        return image.astype(np.float32), masks
    shrink = nh < h or nw < w
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    img = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=shrink)[
        0, 0
    ].numpy()
    if masks.shape[0]:
        m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8))[None].float()
        out = F.interpolate(m, size=(nh, nw), mode="nearest")[0].numpy() > 0.5
    else:
        out = np.zeros((0, nh, nw), bool)
    return img, out


def place_in_canvas(
    image: np.ndarray,
    masks: np.ndarray,
    canvas_hw: tuple[int, int],
    rng: np.random.Generator,
    fill: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Put ``image`` ``(H, W)`` and ``masks`` ``(K, H, W)`` at a random offset into a canvas of
    ``canvas_hw`` pixels filled with ``fill`` (masks: False); a side longer than the canvas is
    cropped at a random offset instead. Masks left empty by a crop are dropped.
    """
    h, w = image.shape
    ch, cw = canvas_hw
    # crop what does not fit
    r0 = int(rng.integers(h - ch + 1)) if h > ch else 0
    c0 = int(rng.integers(w - cw + 1)) if w > cw else 0
    image = image[r0 : r0 + ch, c0 : c0 + cw]
    masks = masks[:, r0 : r0 + ch, c0 : c0 + cw]
    h, w = image.shape
    out = np.full((ch, cw), fill, dtype=np.float32)
    om = np.zeros((masks.shape[0], ch, cw), bool)
    r = int(rng.integers(ch - h + 1))
    c = int(rng.integers(cw - w + 1))
    out[r : r + h, c : c + w] = image
    om[:, r : r + h, c : c + w] = masks
    keep = om.reshape(om.shape[0], -1).any(1) if om.shape[0] else np.zeros(0, bool)
    return out, om[keep]


__all__ = ["resample_slice", "place_in_canvas"]
