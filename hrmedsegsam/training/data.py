"""Training data: slices with object masks, intensity windows, augmentation, model frames.

A :class:`Sample` is one 2D image already windowed to [0, 1] (``image``, ``(H, W)`` float32,
the *native* slice the Predictor would see after windowing) plus zero or more binary object
masks ``(K, H, W)`` on the same grid. Both the student (1024 frame) and the teacher (256
frame) get their input from the same native image through :func:`to_frame`, which does
exactly what :meth:`hrmedsegsam.predictor.Predictor.preprocess` does, so training and
inference agree.

Sources (DESIGN §3): the CT/MR volumes of the development data folder (labels brought onto
the image grid by physical space with :func:`hrmedsegsam.io.resample_labels_to`) and
unlabeled 2D images (pydicom-data, scikit-image). The split is by patient: see
:data:`HOLDOUT` (never trained on), :data:`DUPLICATES` and :data:`VALIDATION_SLICES` (round
selection, carved from a training patient).

Training frames are *scale-faithful* (DESIGN §3.3, :mod:`hrmedsegsam.training.scale`):
low-resolution volumes and crops are resampled to clinical pixel sizes and placed in a
clinical field of view, so objects take the sizes in the 1024 frame that full-size clinical
slices give them. :func:`frame_plan` lists every frame as a small :class:`FrameSpec`
(cheap, deterministic for a seed); :func:`make_sample` materialises one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrmedsegsam.errors import InputError
from hrmedsegsam.intensity import PRESETS, apply_window, percentile_window
from hrmedsegsam.model.frame import to_frame

DATA_ENV = "HRMEDSEGSAM_DATA"

# Held out for the model card (never trained on, not even for distillation): manual labels
# at clinical resolution, patients seen nowhere else.
HOLDOUT = ("ct_abdomen_amos", "ct_liver_3slice")
# Volumes that repeat another one: ct_thorax_small is slices 82..111 of ct_body_3mm
# (pixel-identical), so only ct_body_3mm is used.
DUPLICATES = {"ct_thorax_small": "ct_body_3mm"}
# Round selection (``train validate``): a slab of a training patient that no stage trains
# on (liver, spleen, kidneys, stomach, pancreas in TotalSegmentator's labels), plus the
# clinical-size 2D slices of png_slices_sammed2d (other patients, not trained on either).
VALIDATION_VOLUME = "ct_body_3mm"
VALIDATION_SLICES = range(100, 112)
VALIDATION_MARGIN = 2  # 3 mm neighbours of the slab are nearly the same image: not trained on
VALIDATION_2D = "png_slices_sammed2d"
# Kept for readers of older model cards; nothing is excluded any more.
EXCLUDED: tuple[str, ...] = ()

CT_WINDOWS: tuple[tuple[float, float], ...] = (
    PRESETS["abdomen"],
    PRESETS["lung"],
    PRESETS["bone"],
    (-1000.0, 1000.0),
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


def default_data_dir() -> Path | None:
    """``$HRMEDSEGSAM_DATA`` or ``../shared/data`` next to this checkout, if it exists."""
    env = os.environ.get(DATA_ENV)
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parents[2]
    candidates += [root.parent / "shared" / "data", root / ".." / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


# --------------------------------------------------------------------------- objects


def components(mask: np.ndarray, min_size: int = 1) -> list[np.ndarray]:
    """Connected components (8-connectivity) of a 2D mask with at least ``min_size`` pixels."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3), int))
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel())
    return [lab == i for i in range(1, n + 1) if sizes[i] >= min_size]


def ct_intensity_objects(hu: np.ndarray, min_size: int = 30) -> list[np.ndarray]:
    """Objects derived from Hounsfield units alone (no reference labels): the body, the
    lungs (air inside the body) and bone components. Used to widen the decoder's range of
    object types; all are structures a user may prompt.
    """
    from scipy import ndimage

    out: list[np.ndarray] = []
    body = ndimage.binary_fill_holes(ndimage.binary_opening(hu > -400, iterations=1))
    body_cc = components(body, min_size)
    if body_cc:
        body = max(body_cc, key=lambda m: m.sum())
        out.append(body)
        inner = ndimage.binary_erosion(body, iterations=2)
        out += components(inner & (hu < -500), min_size)
        out += components(ndimage.binary_closing(hu > 200) & body, min_size)
    return out


def region_objects(
    image01: np.ndarray, rng: np.random.Generator, max_objects: int = 6, min_size: int = 60
) -> list[np.ndarray]:
    """Label-free objects: connected regions of homogeneous intensity (Felzenszwalb graph
    segmentation at a random scale) that are neither background air nor most of the image.
    They teach the decoder that a click selects the coherent region around it, for
    structure types that have no reference labels in the training volumes.
    """
    from skimage.segmentation import felzenszwalb

    seg = felzenszwalb(
        image01.astype(np.float64), scale=float(rng.uniform(50, 250)), sigma=0.5, min_size=min_size
    )
    n = int(seg.max()) + 1
    sizes = np.bincount(seg.ravel(), minlength=n)
    means = np.bincount(seg.ravel(), weights=image01.ravel(), minlength=n) / np.maximum(sizes, 1)
    ok = [i for i in range(n) if min_size <= sizes[i] <= 0.4 * image01.size and means[i] > 0.03]
    rng.shuffle(ok)
    out: list[np.ndarray] = []
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
    masks: dict[str, np.ndarray]  # name -> (z, y, x) bool, on the image grid
    kind: str  # "ct" or "mr"
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm


def load_volume(data_dir: Path, name: str) -> LabelledVolume:
    """One development volume with its reference masks on the image grid (physical space)."""
    from hrmedsegsam.io import read_volume, resample_labels_to

    d = Path(data_dir) / name
    masks: dict[str, np.ndarray] = {}
    if name.startswith("mr_"):
        vol = read_volume(d / "t1.nii.gz")
        for tissue in ("gm", "wm"):
            p = d / f"{tissue}_probability.nii.gz"
            if p.is_file():
                masks[tissue] = resample_labels_to(p, vol) > 127
        return LabelledVolume(name, vol.array, masks, "mr", vol.spacing_zyx)
    vol = read_volume(d / "image.nii.gz")
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
    return LabelledVolume(name, vol.array, masks, "ct", vol.spacing_zyx)


def training_volume_names(data_dir: Path) -> list[str]:
    """Development volumes used for training: every volume folder (with ``image.nii.gz`` or
    ``t1.nii.gz``) but :data:`HOLDOUT` and :data:`DUPLICATES`.
    """
    names = sorted(
        p.name
        for p in Path(data_dir).iterdir()
        if p.is_dir() and ((p / "image.nii.gz").is_file() or (p / "t1.nii.gz").is_file())
    )
    return [n for n in names if n not in HOLDOUT and n not in DUPLICATES and n not in EXCLUDED]


def training_slices(vol: LabelledVolume, axis: int) -> range:
    """Indices along ``axis`` that may be trained on; axial slices of the validation slab
    (and its margin) are not. For reformats (axis 1, 2) see :func:`make_sample` (the slab's
    rows are cut off).
    """
    n = vol.array.shape[axis]
    if vol.name == VALIDATION_VOLUME and axis == 0:
        return range(0, min(n, VALIDATION_SLICES.start - VALIDATION_MARGIN))
    return range(0, n)


def slice_sample(
    vol: LabelledVolume,
    z: int,
    window: tuple[float, float] | None = None,
    axis: int = 0,
    pseudo: bool = True,
    min_size: int = 30,
) -> Sample:
    """One slice (``axis`` 0 axial, 1 coronal, 2 sagittal) windowed, with its objects
    (reference-mask components of at least ``min_size`` px, plus HU-derived objects for CT).
    """
    arr = np.take(vol.array, z, axis=axis)
    if window is None:
        window = PRESETS["abdomen"] if vol.kind == "ct" else percentile_window(arr)
    objs: list[np.ndarray] = []
    for m in vol.masks.values():
        objs += components(np.take(m, z, axis=axis), min_size)
    if pseudo and vol.kind == "ct":
        objs += ct_intensity_objects(arr, min_size)
    masks = np.stack(objs) if objs else np.zeros((0,) + arr.shape, bool)
    return Sample(
        apply_window(arr, window), masks, f"{vol.name}:{axis}:{z}:{window[0]:g},{window[1]:g}"
    )


# --------------------------------------------------------------------------- 2D images


def unlabeled_images(max_side: int = 1024) -> Iterator[Sample]:
    """Unlabeled 2D images: pydicom-data's radiographs, MR, US, CT and scikit-image's
    retina and others, each percentile-windowed (colour -> grey), longest side at most
    ``max_side`` (both model frames are at most 1024, so nothing is lost).
    """
    import importlib.util

    from hrmedsegsam.io import read_volume

    spec = importlib.util.find_spec("data_store")
    files: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0]) / "data"
        for n in (
            "693_UNCR",
            "MR2_UNCR",
            "RG1_UNCR",
            "RG3_UNCR",
            "US1_UNCR",
            "OBXXXX1A",
            "gdcm-US-ALOKA-16",
            "eCT_Supplemental",
            "MR-SIEMENS-DICOM-WithOverlays",
            "emri_small",
            "JPEG2000_UNC",
        ):
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
            yield Sample(
                _shrink(apply_window(arr, percentile_window(arr)), max_side), source=f"{f.stem}:{z}"
            )
    try:
        from skimage import data as skdata
    except ImportError:
        return
    for n in (
        "retina",
        "camera",
        "cell",
        "microaneurysms",
    ):  # shipped with scikit-image (no download)
        try:
            img = np.asarray(getattr(skdata, n)(), dtype=np.float32)
        except Exception:  # noqa: BLE001
            continue
        if img.ndim == 3 and img.shape[-1] in (3, 4):
            img = img[..., :3].mean(-1)
        imgs = img if img.ndim == 3 else img[None]
        for k in range(0, imgs.shape[0], max(1, imgs.shape[0] // 2)):
            yield Sample(
                _shrink(apply_window(imgs[k], percentile_window(imgs[k])), max_side),
                source=f"skimage:{n}:{k}",
            )


def _shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    H, W = img.shape
    if max(H, W) <= max_side:
        return img.astype(np.float32)
    import torch
    import torch.nn.functional as F

    s = max_side / max(H, W)
    t = torch.from_numpy(img.astype(np.float32))[None, None]
    out = F.interpolate(
        t,
        size=(max(1, round(H * s)), max(1, round(W * s))),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return out[0, 0].numpy()


# --------------------------------------------------------------------------- augmentation


def augment(
    sample: Sample,
    rng: np.random.Generator,
    geometric: bool = True,
    intensity: bool = True,
    zoom: tuple[float, float] = (0.6, 1.0),
) -> Sample:
    """Random flips, 90-degree rotation, zoom (crop a window of ``zoom`` of each side,
    which the frame resize then enlarges) and intensity changes (gamma, contrast, noise).
    """
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
            h, w = (
                max(16, int(H * f)),
                max(16, int(W * rng.uniform(max(zoom[0], f - 0.1), min(zoom[1], f + 0.1)))),
            )
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


@dataclass(frozen=True)
class FrameSpec:
    """One training frame, before it is made: ``volume`` (a development volume's folder name,
    or ``"2d"`` for :func:`unlabeled_images`), ``axis`` (0 axial, 1 coronal, 2 sagittal),
    slice ``index`` along it, CT ``window`` (None: abdomen for CT, percentile for MR),
    ``spacing`` (mm: resample to it; None: native), ``canvas_mm`` (field of view to place the
    slice in; None: none), ``augment`` and the ``seed`` of its random choices.
    """

    volume: str
    axis: int
    index: int
    window: tuple[float, float] | None = None
    spacing: float | None = None
    canvas_mm: float | None = None
    augment: bool = False
    seed: int = 0


WIDE = (-1000.0, 1000.0)
BRAIN = PRESETS["brain"]


def frame_plan(data_dir: Path | None, seed: int = 0) -> list[FrameSpec]:
    """Every training frame (over 2,000), shuffled so any prefix mixes all sources.

    - ``ct_thorax_512`` (clinical 512 slices): every axial slice under the abdomen, lung,
      bone and wide windows; coronal and sagittal reformats (every 4th, resampled to
      isotropic pixels) under abdomen and lung windows;
    - ``ct_body_3mm`` (3 mm, a whole body section): axial slices outside the validation slab,
      three copies each, resampled to 0.6-1.0 mm in a 360-480 mm field of view; reformats;
    - ``ct_aorta_1p5mm``, ``ct_pulmonary_1p5mm`` (180 mm crops): resampled to 0.6-1.0 mm and
      placed in a 300-450 mm field of view (air around), so vessels and the heart take
      clinical in-frame sizes; reformats;
    - ``ct_head_atlas``: brain and bone windows at 0.45-0.6 mm; ``mr_brain_mni152``: native
      1 mm, three orientations; the unlabeled 2D images at their own size.
    """
    rng = np.random.default_rng(seed)
    plan: list[FrameSpec] = []

    def add(
        volume: str,
        axis: int,
        index: int,
        window: tuple[float, float] | None = None,
        spacing: tuple[float, float] | None = None,
        canvas: tuple[float, float] | None = None,
        augment: float = 0.3,
    ) -> None:
        plan.append(
            FrameSpec(
                volume,
                axis,
                index,
                window,
                None if spacing is None else round(float(rng.uniform(*spacing)), 3),
                None if canvas is None else round(float(rng.uniform(*canvas)), 1),
                bool(rng.random() < augment),
                int(rng.integers(2**31)),
            )
        )

    if data_dir is not None:
        names = set(training_volume_names(data_dir))
        shapes = {n: _volume_shape(Path(data_dir), n) for n in names}
        if "ct_thorax_512" in names:
            z, y, x = shapes["ct_thorax_512"]
            for i in range(z):
                for w in CT_WINDOWS:
                    add("ct_thorax_512", 0, i, w)
            for axis, n in ((1, y), (2, x)):
                for i in range(n // 12, n - n // 12, 4):
                    for w in (PRESETS["abdomen"], PRESETS["lung"]):
                        add("ct_thorax_512", axis, i, w, spacing=(0.9, 1.0))
        if "ct_body_3mm" in names:
            z, y, x = shapes["ct_body_3mm"]
            for i in range(0, VALIDATION_SLICES.start - VALIDATION_MARGIN):
                for w in (
                    PRESETS["abdomen"],
                    PRESETS["abdomen"],
                    CT_WINDOWS[int(rng.integers(1, 4))],
                ):
                    add("ct_body_3mm", 0, i, w, spacing=(0.6, 1.0), canvas=(360, 480))
            for axis, n in ((1, y), (2, x)):
                for i in range(n // 8, n - n // 8, 4):
                    add(
                        "ct_body_3mm",
                        axis,
                        i,
                        PRESETS["abdomen"],
                        spacing=(0.6, 1.0),
                        canvas=(360, 480),
                    )
        for crop, every in (("ct_aorta_1p5mm", 1), ("ct_pulmonary_1p5mm", 1)):
            if crop not in names:
                continue
            z, y, x = shapes[crop]
            for i in range(0, z, every):
                add(crop, 0, i, PRESETS["abdomen"], spacing=(0.6, 1.0), canvas=(300, 450))
                if i % 2 == 0:
                    add(
                        crop,
                        0,
                        i,
                        CT_WINDOWS[int(rng.integers(1, 4))],
                        spacing=(0.6, 1.0),
                        canvas=(300, 450),
                    )
            for axis, n in ((1, y), (2, x)):
                for i in range(n // 8, n - n // 8, 8):
                    add(crop, axis, i, PRESETS["abdomen"], spacing=(0.6, 1.0), canvas=(300, 450))
        if "ct_head_atlas" in names:
            z, _, _ = shapes["ct_head_atlas"]
            for i in range(z // 10, z - z // 10):
                add("ct_head_atlas", 0, i, BRAIN, spacing=(0.45, 0.6))
                if i % 4 == 0:
                    add("ct_head_atlas", 0, i, PRESETS["bone"], spacing=(0.45, 0.6))
        if "mr_brain_mni152" in names:
            for axis, n in enumerate(shapes["mr_brain_mni152"]):
                for i in range(n // 8, n - n // 8, 4):
                    add("mr_brain_mni152", axis, i, augment=0.5)
    for k in range(len(_unlabeled_cache())):
        add("2d", 0, k, augment=0.5)
    return [plan[i] for i in rng.permutation(len(plan))]


def _volume_shape(data_dir: Path, name: str) -> tuple[int, int, int]:
    import SimpleITK as sitk

    d = data_dir / name
    f = d / "image.nii.gz" if (d / "image.nii.gz").is_file() else d / "t1.nii.gz"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(f))
    reader.ReadImageInformation()
    x, y, z = reader.GetSize()
    return z, y, x


_UNLABELED: list[Sample] = []


def _unlabeled_cache() -> list[Sample]:
    if not _UNLABELED:
        _UNLABELED.extend(unlabeled_images())
    return _UNLABELED


class VolumeCache:
    """Development volumes loaded once (with their masks on the image grid)."""

    def __init__(self, data_dir: Path | None) -> None:
        self.data_dir = data_dir
        self._vols: dict[str, LabelledVolume] = {}

    def get(self, name: str) -> LabelledVolume:
        if name not in self._vols:
            if self.data_dir is None:
                raise InputError(f"no development data folder for volume {name}")
            self._vols[name] = load_volume(self.data_dir, name)
        return self._vols[name]


def make_sample(spec: FrameSpec, volumes: VolumeCache) -> Sample:
    """Materialise ``spec``: the slice with its objects, resampled, placed in its canvas,
    windowed and (if asked) augmented without zoom (zoom would undo the scale).
    """
    from hrmedsegsam.training.scale import place_in_canvas, resample_slice

    rng = np.random.default_rng(spec.seed)
    if spec.volume == "2d":
        s = _unlabeled_cache()[spec.index]
        return augment(s, rng, zoom=(0.6, 1.0)) if spec.augment else s
    vol = volumes.get(spec.volume)
    arr = np.take(vol.array, spec.index, axis=spec.axis).astype(np.float32)
    objs: list[np.ndarray] = []
    for m in vol.masks.values():
        objs += components(np.take(m, spec.index, axis=spec.axis), 1)
    if vol.kind == "ct":
        objs += ct_intensity_objects(arr, 30)
    masks = np.stack(objs) if objs else np.zeros((0,) + arr.shape, bool)
    sz, sy, sx = vol.spacing_zyx
    spacing_rc = {0: (sy, sx), 1: (sz, sx), 2: (sz, sy)}[spec.axis]
    if spec.axis and vol.name == VALIDATION_VOLUME:
        # Reformats of the validation patient lose the validation slab's rows.
        keep = VALIDATION_SLICES.start - VALIDATION_MARGIN
        arr, masks = arr[:keep], masks[:, :keep]
    if spec.spacing is not None:
        arr, masks = resample_slice(arr, masks, spacing_rc, spec.spacing)
        spacing_rc = (spec.spacing, spec.spacing)
    if spec.canvas_mm is not None:
        side = int(round(spec.canvas_mm / spacing_rc[0]))
        fill = float(arr.min()) if vol.kind != "ct" else -1024.0
        arr, masks = place_in_canvas(arr, masks, (side, side), rng, fill)
    window = spec.window
    if window is None:
        window = PRESETS["abdomen"] if vol.kind == "ct" else percentile_window(arr)
    # Components of at least 30 px at the final pixel size (a resampled 3 mm object grows).
    sizes = masks.reshape(masks.shape[0], -1).sum(1) if masks.shape[0] else np.zeros(0)
    masks = masks[sizes >= 30]
    sample = Sample(
        apply_window(arr, window),
        masks,
        f"{spec.volume}:{spec.axis}:{spec.index}:{window[0]:g},{window[1]:g}:"
        f"{spec.spacing or 0:g}mm:{spec.canvas_mm or 0:g}",
    )
    if spec.augment:
        sample = augment(sample, rng, zoom=(1.0, 1.0))
    return sample


def distillation_samples(data_dir: Path | None, seed: int = 0) -> Iterator[Sample]:
    """Every sample of :func:`frame_plan`, in plan order (made one at a time)."""
    volumes = VolumeCache(data_dir)
    for spec in frame_plan(data_dir, seed):
        yield make_sample(spec, volumes)


def save_sample(path: Path, sample: Sample) -> None:
    np.savez_compressed(
        path,
        image=sample.image.astype(np.float16),
        masks=np.packbits(sample.masks, axis=-1),
        shape=np.array(sample.masks.shape),
        source=np.array(sample.source),
    )


def load_sample(path: Path) -> Sample:
    with np.load(path) as z:
        shape = tuple(int(v) for v in z["shape"])
        masks = np.unpackbits(z["masks"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
        return Sample(z["image"].astype(np.float32), masks, str(z["source"]))


def require_data_dir(path: str | None) -> Path:
    d = Path(path) if path else default_data_dir()
    if d is None or not Path(d).is_dir():
        raise InputError(
            f"development data folder not found: {path or '../shared/data'} (set --data or {DATA_ENV})"
        )
    return Path(d)


__all__: Sequence[str] = [
    "Sample",
    "HOLDOUT",
    "DUPLICATES",
    "VALIDATION_VOLUME",
    "VALIDATION_SLICES",
    "VALIDATION_2D",
    "to_frame",
    "components",
    "augment",
    "distillation_samples",
    "frame_plan",
    "FrameSpec",
    "make_sample",
    "VolumeCache",
    "load_volume",
    "slice_sample",
    "unlabeled_images",
    "save_sample",
    "load_sample",
    "default_data_dir",
]
