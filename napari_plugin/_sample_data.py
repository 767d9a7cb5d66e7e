"""Offline sample data, made procedurally (no download, deterministic).

* :func:`make_ct_volume`: a CT-like abdomen in Hounsfield units (air, fat, muscle, liver,
  spleen, kidneys, aorta, spine, bowel gas) on an anisotropic grid (0.8 x 0.8 x 2.5 mm),
  with the reference label map of its organs;
* :func:`make_radiograph`: a high-resolution (2048 x 2048) chest-radiograph-like 2D image
  with fine detail (ribs, vessels), 0.15 mm pixels.

Both return :class:`hrmedsegsam.io.Volume` objects; the napari sample-data hooks turn them
into layers exactly as the reader does (millimetre placement, geometry in metadata).
"""

from __future__ import annotations

import numpy as np

#: organ ids of :func:`make_ct_volume`'s reference labels
CT_ORGANS = {
    1: "liver",
    2: "spleen",
    3: "right kidney",
    4: "left kidney",
    5: "aorta",
    6: "vertebra",
}


def _ellipsoid(zz, yy, xx, c, r):
    return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1.0


def make_ct_volume(shape: tuple[int, int, int] = (40, 192, 192), seed: int = 0):
    """A synthetic abdominal CT: returns ``(volume, labels)``.

    ``volume.array`` is int16 HU ``(z, y, x)``, ``labels`` uint8 with the ids of
    :data:`CT_ORGANS`. Geometry: spacing (0.8, 0.8, 2.5) mm (x, y, z), identity direction,
    origin centring the grid; modality "CT".
    """
    from hrmedsegsam.io import Volume

    nz, ny, nx = (int(n) for n in shape)
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(
        np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij"
    )
    hu = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    # body: fat ring around muscle / soft tissue; slightly flattened front-to-back
    body = (yy / 0.72) ** 2 + (xx / 0.92) ** 2 <= 1.0
    inner = (yy / 0.64) ** 2 + (xx / 0.84) ** 2 <= 1.0
    hu[body] = -100.0
    hu[inner] = 40.0
    # organs (image left = patient right, as in radiological display)
    organs = [
        (1, 60.0, (0.05, -0.05, -0.38), (0.75, 0.42, 0.36)),  # liver
        (2, 50.0, (-0.05, 0.05, 0.55), (0.45, 0.22, 0.16)),  # spleen
        (3, 150.0, (-0.25, 0.32, -0.38), (0.4, 0.14, 0.12)),  # right kidney
        (4, 150.0, (-0.2, 0.32, 0.38), (0.4, 0.14, 0.12)),  # left kidney
    ]
    for lab, value, c, r in organs:
        m = _ellipsoid(zz, yy, xx, c, r) & inner
        hu[m] = value
        labels[m] = lab
    # liver vessels: a few darker tubes inside the liver
    for cy, cx in ((-0.1, -0.45), (0.05, -0.3), (-0.2, -0.25)):
        tube = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 0.03**2) & (labels == 1)
        hu[tube] = 25.0
    # aorta (runs the whole length) and a vertebra behind it
    aorta = (yy - 0.22) ** 2 + (xx - 0.06) ** 2 <= 0.075**2
    hu[aorta] = 200.0
    labels[aorta] = 5
    vert = (yy - 0.48) ** 2 + xx**2 <= 0.14**2
    cortex = vert & ~((yy - 0.48) ** 2 + xx**2 <= 0.1**2)
    hu[vert] = 250.0
    hu[cortex] = 700.0
    labels[vert] = 6
    # bowel gas pockets in the soft tissue
    for _ in range(6):
        c = (rng.uniform(-0.8, 0.8), rng.uniform(-0.5, -0.2), rng.uniform(-0.1, 0.4))
        r = (0.12, rng.uniform(0.03, 0.06), rng.uniform(0.03, 0.06))
        gas = _ellipsoid(zz, yy, xx, c, r) & inner & (labels == 0)
        hu[gas] = -900.0
    hu += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    spacing = (0.8, 0.8, 2.5)
    origin = tuple(-0.5 * n * s for n, s in zip((nx, ny, nz), spacing, strict=True))
    vol = Volume(
        array=np.clip(np.round(hu), -1024, 3071).astype(np.int16),
        spacing=spacing,
        origin=origin,
        path=None,
        modality="CT",
        series_description="HRMedSegSAM synthetic abdomen CT",
    )
    return vol, labels


def make_radiograph(size: int = 2048, seed: int = 1):
    """A synthetic chest radiograph ``(1, size, size)`` uint16, 0.15 mm pixels."""
    from hrmedsegsam.io import Volume

    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    img = np.full((size, size), 300.0, dtype=np.float32)
    thorax = (yy / 0.9) ** 2 + (xx / 0.8) ** 2 <= 1.0
    img[thorax] = 1400.0
    for side in (-1, 1):  # lungs: darker, with branching vessels
        lung = ((yy + 0.05) / 0.62) ** 2 + ((xx - side * 0.36) / 0.28) ** 2 <= 1.0
        img[lung] = 650.0
        for _ in range(14):
            angle = rng.uniform(-np.pi, np.pi)
            length = rng.uniform(0.15, 0.45)
            x0, y0 = side * 0.18, rng.uniform(-0.3, 0.1)
            t = np.linspace(0, 1, 400)
            px = x0 + side * np.abs(np.cos(angle)) * length * t
            py = y0 + np.sin(angle) * length * t
            cols = np.clip(((px + 1) / 2 * (size - 1)).astype(int), 0, size - 1)
            rows = np.clip(((py + 1) / 2 * (size - 1)).astype(int), 0, size - 1)
            for d in range(-2, 3):
                img[np.clip(rows + d, 0, size - 1), cols] += 120.0
    heart = ((yy - 0.25) / 0.32) ** 2 + ((xx + 0.08) / 0.3) ** 2 <= 1.0
    img[heart] = 1300.0
    spine = np.abs(xx) <= 0.06
    img[spine & thorax] = 1900.0
    for k in range(9):  # ribs: bright arcs
        cy = -0.6 + 0.14 * k
        for side in (-1, 1):
            arc = np.abs(yy - (cy + 0.25 * (xx * side) ** 2)) <= 0.018
            arc &= (side * xx > 0.05) & (side * xx < 0.78) & thorax
            img[arc] += 500.0
    img += rng.normal(0.0, 25.0, size=img.shape).astype(np.float32)
    arr = np.clip(img, 0, 4095).astype(np.uint16)[np.newaxis]
    return Volume(
        array=arr,
        spacing=(0.15, 0.15, 1.0),
        origin=(0.0, 0.0, 0.0),
        modality="",
        series_description="HRMedSegSAM synthetic chest radiograph",
    )


def ct_sample() -> list[tuple]:
    """Sample data for napari: the synthetic abdominal CT (an Image layer in mm)."""
    from napari_plugin._reader import image_layer_data

    vol, _ = make_ct_volume()
    return [image_layer_data(vol, name="synthetic CT")]


def radiograph_sample() -> list[tuple]:
    """Sample data for napari: the 2048 x 2048 synthetic chest radiograph."""
    from napari_plugin._reader import image_layer_data

    return [image_layer_data(make_radiograph(), name="synthetic radiograph")]
