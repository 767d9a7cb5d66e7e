"""Training data: slices with object masks, intensity windows, augmentation, model frames.

A :class:`Sample` is one 2D image already windowed to [0, 1] (``image``, ``(H, W)`` float32,
the *native* slice the Predictor would see after windowing) plus zero or more binary object
masks ``(K, H, W)`` on the same grid. Both the student (1024 frame) and the teacher (256
frame) get their input from the same native image through :func:`to_frame`, which does
exactly what :meth:`hrmedsegsam.predictor.Predictor.preprocess` does, so training and
inference agree.

Sources (DESIGN §3): the CT/MR volumes of the development data folder (labels brought onto
the image grid by physical space with :func:`hrmedsegsam.io.resample_labels_to`) and
unlabeled 2D images (pydicom-data, scikit-image). The split is by whole volume: see
:data:`HOLDOUT` and :data:`EXCLUDED`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from hrmedsegsam.errors import InputError
from hrmedsegsam.intensity import PRESETS, apply_window, percentile_window

DATA_ENV = "HRMEDSEGSAM_DATA"

# Held out for the model card (never trained on, not even for distillation).
HOLDOUT = ("ct_thorax_small",)
# ct_body_3mm is the same patient and scan as ct_thorax_small: its slices 82..111 are
# pixel-identical to ct_thorax_small's 0..29 (checked when this split was made), so the
# whole volume is excluded from all training.
EXCLUDED = ("ct_body_3mm",)

CT_WINDOWS: Tuple[Tuple[float, float], ...] = (
    PRESETS["abdomen"], PRESETS["lung"], PRESETS["bone"], (-1000.0, 1000.0),
)


@dataclass
class Sample:
    """A windowed 2D image in [0, 1] ``(H, W)`` and its object masks ``(K, H, W)`` bool."""

    image: np.ndarray
    masks: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), bool))
    source: str = ""

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        m = np.asarray(self.masks, dtype=bool)
        if m.size == 0 or m.ndim != 3 or m.shape[1:] != self.image.shape:
            m = np.zeros((0,) + self.image.shape, dtype=bool)
        self.masks = m


def default_data_dir() -> Optional[Path]:
    """``$HRMEDSEGSAM_DATA`` or ``../shared/data`` next to this checkout, if it exists."""
    env = os.environ.get(DATA_ENV)
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parents[2]
    candidates += [root.parent / "shared" / "data", root / ".." / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


# --------------------------------------------------------------------------- frames


def to_frame(image01, size: int):  # type: ignore[no-untyped-def]
    """Native ``(H, W)`` or ``(B, 1|3, H, W)`` image in [0, 1] -> ``(B, 3, size, size)`` model
    input and the resized size ``(h, w)``: longest side resized to ``size`` (bilinear,
    antialiased when shrinking), zero padded bottom/right; as Predictor.preprocess."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(image01, dtype=torch.float32)
    if x.ndim == 2:
        x = x[None, None]
    H, W = x.shape[-2:]
    scale = size / max(H, W)
    h, w = max(1, int(H * scale + 0.5)), max(1, int(W * scale + 0.5))
    resized = F.interpolate(x[:, :1], size=(h, w), mode="bilinear", align_corners=False, antialias=scale < 1)
    frame = F.pad(resized, (0, size - w, 0, size - h))
    return frame.expand(-1, 3, -1, -1), (h, w)


# --------------------------------------------------------------------------- objects


def components(mask: np.ndarray, min_size: int = 1) -> List[np.ndarray]:
    """Connected components (8-connectivity) of a 2D mask with at least ``min_size`` pixels."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3), int))
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel())
    return [lab == i for i in range(1, n + 1) if sizes[i] >= min_size]


def ct_intensity_objects(hu: np.ndarray, min_size: int = 30) -> List[np.ndarray]:
    """Objects derived from Hounsfield units alone (no reference labels): the body, the
    lungs (air inside the body) and bone components. Used to widen the decoder's range of
    object types; all are structures a user may prompt."""
    from scipy import ndimage

    out: List[np.ndarray] = []
    body = ndimage.binary_fill_holes(ndimage.binary_opening(hu > -400, iterations=1))
    body_cc = components(body, min_size)
    if body_cc:
        body = max(body_cc, key=lambda m: m.sum())
        out.append(body)
        inner = ndimage.binary_erosion(body, iterations=2)
        out += components(inner & (hu < -500), min_size)
        out += components(ndimage.binary_closing(hu > 200) & body, min_size)
    return out


def region_objects(image01: np.ndarray, rng: np.random.Generator, max_objects: int = 6,
                   min_size: int = 60) -> List[np.ndarray]:
    """Label-free objects: connected regions of homogeneous intensity (Felzenszwalb graph
    segmentation at a random scale) that are neither background air nor most of the image.
    They teach the decoder that a click selects the coherent region around it, for
    structure types that have no reference labels in the training volumes."""
    from skimage.segmentation import felzenszwalb

    seg = felzenszwalb(image01.astype(np.float64), scale=float(rng.uniform(50, 250)), sigma=0.5, min_size=min_size)
    n = int(seg.max()) + 1
    sizes = np.bincount(seg.ravel(), minlength=n)
    means = np.bincount(seg.ravel(), weights=image01.ravel(), minlength=n) / np.maximum(sizes, 1)
    ok = [i for i in range(n) if min_size <= sizes[i] <= 0.4 * image01.size and means[i] > 0.03]
    rng.shuffle(ok)
    out: List[np.ndarray] = []
    for i in ok:
        cc = components(seg == i, min_size)
        if cc:
            out.append(max(cc, key=lambda m: m.sum()))
        if len(out) >= max_objects:
            break
    return out


# --------------------------------------------------------------------------- volumes


@dataclass
class LabelledVolume:
    name: str
    array: np.ndarray  # (z, y, x) raw intensities
    masks: Dict[str, np.ndarray]  # name -> (z, y, x) bool, on the image grid
    kind: str  # "ct" or "mr"


def load_volume(data_dir: Path, name: str) -> LabelledVolume:
    """One development volume with its reference masks on the image grid (physical space)."""
    from hrmedsegsam.io import read_volume, resample_labels_to

    d = Path(data_dir) / name
    if name.startswith("mr_"):
        vol = read_volume(d / "t1.nii.gz")
        masks = {}
        for tissue in ("gm", "wm"):
            p = d / f"{tissue}_probability.nii.gz"
            if p.is_file():
                masks[tissue] = resample_labels_to(p, vol) > 127
        return LabelledVolume(name, vol.array, masks, "mr")
    vol = read_volume(d / "image.nii.gz")
    masks: Dict[str, np.ndarray] = {}
    if (d / "masks").is_dir():
        for p in sorted((d / "masks").glob("*.nii.gz")):
            m = resample_labels_to(p, vol) > 0
            if m.any():
                masks[p.name[: -len(".nii.gz")]] = m
    for lp in sorted(d.glob("labels*.nii.gz")):
        lab = resample_labels_to(lp, vol)
        for v in np.unique(lab):
            if v:
                masks[f"{lp.name}:{int(v)}"] = lab == v
    return LabelledVolume(name, vol.array, masks, "ct")


def training_volume_names(data_dir: Path) -> List[str]:
    """Development volumes used for training: all but :data:`HOLDOUT` and :data:`EXCLUDED`."""
    names = sorted(p.name for p in Path(data_dir).iterdir() if p.is_dir())
    return [n for n in names if n not in HOLDOUT and n not in EXCLUDED]


def slice_sample(vol: LabelledVolume, z: int, window: Optional[Tuple[float, float]] = None,
                 axis: int = 0, pseudo: bool = True, min_size: int = 30) -> Sample:
    """One slice (``axis`` 0 axial, 1 coronal, 2 sagittal) windowed, with its objects
    (reference-mask components of at least ``min_size`` px, plus HU-derived objects for CT)."""
    arr = np.take(vol.array, z, axis=axis)
    if window is None:
        window = PRESETS["abdomen"] if vol.kind == "ct" else percentile_window(arr)
    objs: List[np.ndarray] = []
    for m in vol.masks.values():
        objs += components(np.take(m, z, axis=axis), min_size)
    if pseudo and vol.kind == "ct":
        objs += ct_intensity_objects(arr, min_size)
    masks = np.stack(objs) if objs else np.zeros((0,) + arr.shape, bool)
    return Sample(apply_window(arr, window), masks, f"{vol.name}:{axis}:{z}:{window[0]:g},{window[1]:g}")


# --------------------------------------------------------------------------- 2D images


def unlabeled_images(max_side: int = 1024) -> Iterator[Sample]:
    """Unlabeled 2D images: pydicom-data's radiographs, MR, US, CT and scikit-image's
    retina and others, each percentile-windowed (colour -> grey), longest side at most
    ``max_side`` (both model frames are at most 1024, so nothing is lost)."""
    import importlib.util

    from hrmedsegsam.io import read_volume

    spec = importlib.util.find_spec("data_store")
    files: List[Path] = []
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0]) / "data"
        for n in ("693_UNCR", "MR2_UNCR", "RG1_UNCR", "RG3_UNCR", "US1_UNCR", "OBXXXX1A", "gdcm-US-ALOKA-16",
                  "eCT_Supplemental", "MR-SIEMENS-DICOM-WithOverlays", "emri_small", "JPEG2000_UNC"):
            if (root / f"{n}.dcm").is_file():
                files.append(root / f"{n}.dcm")
    for f in files:
        try:
            vol = read_volume(f)
        except Exception:  # noqa: BLE001 - an unreadable sample is skipped
            continue
        for z in range(0, vol.array.shape[0], max(1, vol.array.shape[0] // 2)):
            arr = vol.array[z].astype(np.float32)
            if arr.std() == 0:
                continue
            yield Sample(_shrink(apply_window(arr, percentile_window(arr)), max_side), source=f"{f.stem}:{z}")
    try:
        from skimage import data as skdata
    except ImportError:
        return
    for n in ("retina", "camera", "cell", "microaneurysms"):  # shipped with scikit-image (no download)
        try:
            img = np.asarray(getattr(skdata, n)(), dtype=np.float32)
        except Exception:  # noqa: BLE001
            continue
        if img.ndim == 3 and img.shape[-1] in (3, 4):
            img = img[..., :3].mean(-1)
        imgs = img if img.ndim == 3 else img[None]
        for k in range(0, imgs.shape[0], max(1, imgs.shape[0] // 2)):
            yield Sample(_shrink(apply_window(imgs[k], percentile_window(imgs[k])), max_side), source=f"skimage:{n}:{k}")


def _shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    H, W = img.shape
    if max(H, W) <= max_side:
        return img.astype(np.float32)
    import torch
    import torch.nn.functional as F

    s = max_side / max(H, W)
    t = torch.from_numpy(img.astype(np.float32))[None, None]
    out = F.interpolate(t, size=(max(1, round(H * s)), max(1, round(W * s))), mode="bilinear",
                        align_corners=False, antialias=True)
    return out[0, 0].numpy()


# --------------------------------------------------------------------------- augmentation


def augment(sample: Sample, rng: np.random.Generator, geometric: bool = True, intensity: bool = True,
            zoom: Tuple[float, float] = (0.6, 1.0)) -> Sample:
    """Random flips, 90-degree rotation, zoom (crop a window of ``zoom`` of each side,
    which the frame resize then enlarges) and intensity changes (gamma, contrast, noise)."""
    img, masks = sample.image, sample.masks
    if geometric:
        if rng.random() < 0.5:
            img, masks = img[:, ::-1], masks[:, :, ::-1]
        if rng.random() < 0.3:
            img, masks = img[::-1], masks[:, ::-1]
        k = int(rng.integers(4)) if rng.random() < 0.4 else 0
        if k:
            img, masks = np.rot90(img, k), np.rot90(masks, k, axes=(1, 2))
        if rng.random() < 0.5:
            H, W = img.shape
            f = rng.uniform(*zoom)
            h, w = max(16, int(H * f)), max(16, int(W * rng.uniform(max(zoom[0], f - 0.1), min(zoom[1], f + 0.1))))
            h, w = min(h, H), min(w, W)
            r, c = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
            img, masks = img[r : r + h, c : c + w], masks[:, r : r + h, c : c + w]
    img = np.ascontiguousarray(img, dtype=np.float32)
    if intensity:
        if rng.random() < 0.5:
            img = img ** float(np.exp(rng.normal(0, 0.25)))
        if rng.random() < 0.5:
            a, b = rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
            img = np.clip(img * a + b, 0, 1)
        if rng.random() < 0.3:
            img = np.clip(img + rng.normal(0, rng.uniform(0.005, 0.03), img.shape), 0, 1)
    masks = np.ascontiguousarray(masks)
    keep = masks.reshape(masks.shape[0], -1).sum(1) >= 1 if masks.shape[0] else np.zeros(0, bool)
    return Sample(img.astype(np.float32), masks[keep], sample.source + ":aug")


# --------------------------------------------------------------------------- data sets


def distillation_samples(data_dir: Optional[Path], seed: int = 0, ct_every: int = 2, mr_every: int = 6,
                         aug_copies: int = 1) -> List[Sample]:
    """The distillation / decoder-training set in priority order (most useful first):
    axial CT slices under the abdomen window, then augmented copies under other CT windows,
    MR slices in three orientations, and the unlabeled 2D images."""
    rng = np.random.default_rng(seed)
    first: List[Sample] = []
    later: List[Sample] = []
    if data_dir is not None:
        for name in training_volume_names(data_dir):
            vol = load_volume(data_dir, name)
            if vol.kind == "ct":
                nz = vol.array.shape[0]
                for z in range(int(rng.integers(ct_every)), nz, ct_every):
                    first.append(slice_sample(vol, z))
                    for _ in range(aug_copies):
                        w = CT_WINDOWS[int(rng.integers(len(CT_WINDOWS)))]
                        zz = int(np.clip(z + rng.integers(-1, 2), 0, nz - 1))
                        later.append(augment(slice_sample(vol, zz, w), rng))
                for axis in (1, 2):
                    for z in range(vol.array.shape[axis] // 5, 4 * vol.array.shape[axis] // 5, 12):
                        later.append(augment(slice_sample(vol, z, PRESETS["abdomen"], axis=axis), rng))
            else:
                for axis in (0, 1, 2):
                    n = vol.array.shape[axis]
                    for z in range(n // 6, 5 * n // 6, mr_every * (1 + axis)):
                        s = slice_sample(vol, z, axis=axis)
                        later.append(augment(s, rng) if rng.random() < 0.5 else s)
    extra = list(unlabeled_images())
    for s in list(extra):
        extra.append(augment(s, rng, zoom=(0.3, 0.8)))
    order = rng.permutation(len(later))
    return first + [later[i] for i in order] + extra


def save_sample(path: Path, sample: Sample) -> None:
    np.savez_compressed(path, image=sample.image.astype(np.float16), masks=np.packbits(sample.masks, axis=-1),
                        shape=np.array(sample.masks.shape), source=np.array(sample.source))


def load_sample(path: Path) -> Sample:
    with np.load(path) as z:
        shape = tuple(int(v) for v in z["shape"])
        masks = np.unpackbits(z["masks"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
        return Sample(z["image"].astype(np.float32), masks, str(z["source"]))


def require_data_dir(path: Optional[str]) -> Path:
    d = Path(path) if path else default_data_dir()
    if d is None or not Path(d).is_dir():
        raise InputError(f"development data folder not found: {path or '../shared/data'} (set --data or {DATA_ENV})")
    return Path(d)


__all__: Sequence[str] = [
    "Sample", "HOLDOUT", "EXCLUDED", "to_frame", "components", "augment", "distillation_samples",
    "load_volume", "slice_sample", "unlabeled_images", "save_sample", "load_sample", "default_data_dir",
]
