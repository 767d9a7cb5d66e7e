"""Model selection on validation data, and encoder fidelity (``train validate``).

The held-out cases (:data:`data.HOLDOUT`) never choose between training rounds. Rounds are
compared on data carved from the training patients that no stage trains on:

- **slab**: the axial slices :data:`data.VALIDATION_SLICES` of ``ct_body_3mm`` with its
  TotalSegmentator labels (liver, spleen, kidneys, stomach, pancreas, vessels, muscles,
  bones), resampled in-plane to :data:`SPACING` mm so the slices have clinical pixel counts
  and in-frame object sizes (its 366 mm field of view is a clinical one); box and
  single-point Dice as :func:`evaluate.evaluate` computes them, window -160..240;
- **2D**: the clinical-size, already windowed slices of ``png_slices_sammed2d`` (other
  patients, AMOS and TotalSegmentator CT/MR) and their structure masks (components of at
  least 100 px), box and single-point Dice.

The selection rule (:func:`selection_rule`) reads the object-weighted means of both parts.

**Fidelity** (DESIGN §3.1): the share of the teacher's image-dependent variance that the
student's embedding explains, ``R^2 = 1 - mean((s - t)^2) / mean((t - mean_frames(t))^2)``
over all positions and channels of the ``(256, 64, 64)`` embeddings, on the validation
frames and, reported only (it chooses nothing), on the held-out frames (every axial slice
of the held-out cases, window -160..240). The mean over the scored frames themselves is a
strict baseline when they are few and alike (12 adjacent slab slices; 24 held-out slices
of three patients): it already knows what those frames share. With a training cache
(``--cache``), R^2 is also reported against the per-position mean of the teacher's
embeddings over the training frames (:func:`teacher_mean`): the best guess that looks at no
image, so this R^2 is the share of the teacher's deviation from its average embedding that
the student reproduces.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrmedsegsam.errors import InputError
from hrmedsegsam.masks import dice

if TYPE_CHECKING:
    from hrmedsegsam.model.base import PromptableModel

SPACING = 0.8  # mm, in-plane pixel size of the validation slab
WINDOW = (-160.0, 240.0)
MIN_OBJECT_PX = 100


def clinical_copy(
    image: Path, labels: Path, out_dir: Path, spacing: float = SPACING
) -> tuple[Path, Path]:
    """``image`` and ``labels`` resampled in-plane to ``spacing`` mm (linear / nearest; same
    origin, direction and slices), written to ``out_dir``; returns the two new paths.
    """
    import SimpleITK as sitk

    img = sitk.ReadImage(str(image))
    sx, sy, sz = img.GetSpacing()
    nx, ny, nz = img.GetSize()
    size = [int(round(nx * sx / spacing)), int(round(ny * sy / spacing)), nz]
    # Keep the physical extent: the first pixel's centre moves by half the change of pixel size.
    shift = [(spacing - sx) / 2, (spacing - sy) / 2, 0.0]
    d = np.array(img.GetDirection()).reshape(3, 3)
    origin = tuple(float(v) for v in np.array(img.GetOrigin()) + d @ np.array(shift))
    out = []
    for src, interp, name in (
        (img, sitk.sitkLinear, "image.nii.gz"),
        (sitk.ReadImage(str(labels)), sitk.sitkNearestNeighbor, "labels.nii.gz"),
    ):
        res = sitk.Resample(
            src,
            size,
            sitk.Transform(),
            interp,
            origin,
            (spacing, spacing, sz),
            img.GetDirection(),
            -1024.0 if interp == sitk.sitkLinear else 0,
            src.GetPixelID(),
        )
        path = Path(out_dir) / name
        sitk.WriteImage(res, str(path))
        out.append(path)
    return out[0], out[1]


def png_cases(folder: Path) -> list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]]:
    """``(image name, image (H, W) in [0, 1], [(structure, mask (H, W) bool), ...])`` for each
    slice of ``png_slices_sammed2d`` (grey = mean of the RGB channels).
    """
    from PIL import Image

    from hrmedsegsam.training.data import components

    out = []
    for img_path in sorted((Path(folder) / "images").glob("*.png")):
        img = np.asarray(Image.open(img_path), dtype=np.float32)
        img = (img[..., :3].mean(-1) if img.ndim == 3 else img) / 255.0
        objs = []
        for mp in sorted((Path(folder) / "masks").glob(img_path.stem + "_*.png")):
            m = np.asarray(Image.open(mp))
            m = (m[..., 0] if m.ndim == 3 else m) > 0
            if m.shape != img.shape:
                continue
            name = mp.stem[len(img_path.stem) + 1 :].rsplit("_", 1)[0]
            objs += [(name, c) for c in components(m, MIN_OBJECT_PX)]
        out.append((img_path.stem, img, objs))
    return out


def heldout_frames(data: Path) -> list[np.ndarray]:
    """Every axial slice of the held-out cases, windowed -160..240, ``(H, W)`` in [0, 1]."""
    from hrmedsegsam.intensity import apply_window
    from hrmedsegsam.io import read_volume

    frames = []
    for f in sorted(Path(data).glob("ct_abdomen_amos/*/image.nii.gz")) + [
        Path(data) / "ct_liver_3slice" / "image.nii.gz"
    ]:
        if f.is_file():
            frames += [apply_window(s, WINDOW) for s in read_volume(f).array]
    return frames


def embeddings(model: PromptableModel, frames: list[np.ndarray]) -> np.ndarray:
    """``(N, 256, 64, 64)`` float32 embeddings of windowed ``(H, W)`` frames in [0, 1]."""
    import torch

    from hrmedsegsam.training.data import to_frame

    out = []
    model.eval()
    with torch.inference_mode():
        for f in frames:
            out.append(
                model.encode(to_frame(f, model.image_size)[0].contiguous())[0].float().numpy()
            )
    return np.stack(out)


def r_squared(student: np.ndarray, teacher: np.ndarray, mean: np.ndarray | None = None) -> float:
    """Share of the teacher's variance (per position and channel) explained by the student:
    ``1 - mean((s - t)^2) / mean((t - m)^2)`` for ``(N, C, H, W)`` arrays, where the
    baseline ``m`` is ``mean`` ``(C, H, W)`` when given, else ``t``'s own mean over frames.
    """
    resid = float(np.mean((student - teacher) ** 2))
    base = teacher.mean(0, keepdims=True) if mean is None else mean[None]
    var = float(np.mean((teacher - base) ** 2))
    return 1.0 - resid / var if var > 0 else float("nan")


def teacher_mean(cache: Path, limit: int = 300, seed: int = 0) -> np.ndarray:
    """Per-position mean ``(256, 64, 64)`` float32 of the teacher embeddings in
    ``cache/teacher`` (a random ``limit`` of them, fixed by ``seed``).

    Raises:
        InputError: the cache holds no teacher embeddings.
    """
    files = sorted((Path(cache) / "teacher").glob("*.npy"))
    if not files:
        raise InputError(f"no teacher embeddings in {Path(cache) / 'teacher'} (run `train cache`)")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(files), min(limit, len(files)), replace=False)
    total = np.load(files[int(pick[0])]).astype(np.float32)
    for i in pick[1:]:
        total += np.load(files[int(i)]).astype(np.float32)
    return total / len(pick)


def validate(
    models: list[str],
    data: Path,
    progress: bool = True,
    fidelity: bool = True,
    segmentation: bool = True,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Box/point Dice on both validation parts for each model in ``models`` (names or weights
    files) and, for HRMedSegSAM models, the encoder's fidelity; a JSON-able dict.
    ``segmentation`` False: fidelity only (an encoder whose decoder is not trained yet).
    ``cache``: a training cache; fidelity is then also reported against its teacher mean.
    """
    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.training.data import VALIDATION_2D, VALIDATION_SLICES, VALIDATION_VOLUME
    from hrmedsegsam.training.evaluate import evaluate

    folder = Path(data) / VALIDATION_VOLUME
    image, labels = folder / "image.nii.gz", folder / "labels_totalseg_fast.nii.gz"
    for f in (image, labels, Path(data) / VALIDATION_2D / "images"):
        if not f.exists():
            raise InputError(f"validation data not found: {f}")
    # Before the minutes of segmentation: a wrong --cache fails at once.
    pop = teacher_mean(cache) if fidelity and cache is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        img_c, lab_c = clinical_copy(image, labels, Path(tmp))
        slab = evaluate(
            img_c,
            lab_c,
            models=models if segmentation else [],
            prompts=("box", "point"),
            window=WINDOW,
            slices=list(VALIDATION_SLICES),
            device="cpu",
            progress=progress,
            min_size=MIN_OBJECT_PX,
        )
        from hrmedsegsam.intensity import apply_window
        from hrmedsegsam.io import read_volume

        slab_frames = [apply_window(read_volume(img_c).array[z], WINDOW) for z in VALIDATION_SLICES]
    cases = png_cases(Path(data) / VALIDATION_2D)
    result: dict[str, Any] = {
        "slab": f"{image} slices {VALIDATION_SLICES.start}..{VALIDATION_SLICES.stop - 1}",
        "slab_objects": slab["objects"],
        "png_objects": sum(len(c[2]) for c in cases),
        "models": {},
    }
    val_frames = slab_frames + [c[1] for c in cases]
    teacher_val = teacher_held = held = None
    if fidelity and any(m != "litemedsam" for m in models):
        teacher = load_model("litemedsam", device="cpu")
        held = heldout_frames(Path(data))
        teacher_val, teacher_held = embeddings(teacher, val_frames), embeddings(teacher, held)
        del teacher
    for name in models:
        model = load_model(name, device="cpu")
        r: dict[str, Any] = {}
        if segmentation:
            r.update(_segmentation_scores(model, cases, slab["models"][name]))
        if teacher_val is not None and name != "litemedsam":
            s_val = embeddings(model, val_frames)
            s_held = embeddings(model, held) if held else None
            r["r2_validation"] = round(r_squared(s_val, teacher_val), 4)
            r["r2_heldout"] = (
                round(r_squared(s_held, teacher_held), 4) if s_held is not None else None
            )
            if pop is not None:
                r["r2_validation_pop"] = round(r_squared(s_val, teacher_val, pop), 4)
                r["r2_heldout_pop"] = (
                    round(r_squared(s_held, teacher_held, pop), 4) if s_held is not None else None
                )
        result["models"][name] = r
        del model
    return result


def _segmentation_scores(
    model: PromptableModel,
    cases: list[tuple[str, np.ndarray, list[np.ndarray]]],
    slab: dict[str, Any],
) -> dict[str, Any]:
    """Pooled box/point Dice of ``model`` on the 2D ``cases`` and its ``slab`` summary."""
    from hrmedsegsam.predictor import Predictor
    from hrmedsegsam.training.prompts import farthest_from_border, tight_box

    pred = Predictor(model)
    box_d, point_d = [], []
    for stem, img, objs in cases:
        pred.set_image(img, window=(0.0, 1.0), key=("validate-2d", stem))
        for _, m in objs:
            x0, y0, x1, y1 = tight_box(m)
            box_d.append(dice(pred.predict(box=[x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)]).mask, m))
            x, y = farthest_from_border(m)
            point_d.append(dice(pred.predict(points=[[x, y]], labels=[1]).mask, m))
    n_slab = slab["box"]["n"]
    return {
        "box": _pooled(slab["box"]["dice"] or 0.0, n_slab, box_d),
        "point": _pooled(slab["point"]["dice"] or 0.0, n_slab, point_d),
        "slab_box": slab["box"]["dice"],
        "slab_box_small": slab["box"]["dice_small"],
        "slab_box_large": slab["box"]["dice_large"],
        "slab_point": slab["point"]["dice"],
        "png_box": round(float(np.mean(box_d)), 4) if box_d else None,
        "png_point": round(float(np.mean(point_d)), 4) if point_d else None,
    }


def _pooled(mean_a: float, n_a: int, values_b: list[float]) -> float:
    """Object-weighted mean of a part with mean ``mean_a`` over ``n_a`` objects and ``values_b``."""
    return round((mean_a * n_a + float(np.sum(values_b))) / max(1, n_a + len(values_b)), 4)


def format_validation(result: dict[str, Any]) -> str:
    """Plain-text table of :func:`validate`'s result."""
    lines = [
        f"{result['slab_objects']} slab objects ({result['slab']}), {result['png_objects']} objects on the "
        "clinical 2D slices",
        f"{'model':<28} {'box':>7} {'point':>7} {'slabbox':>7} {'small':>7} {'large':>7} {'2Dbox':>7} "
        f"{'2Dpoint':>7} {'R2 val':>7} {'R2 held':>7} {'R2v pop':>7} {'R2h pop':>7}",
    ]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    keys = (
        "box",
        "point",
        "slab_box",
        "slab_box_small",
        "slab_box_large",
        "png_box",
        "png_point",
        "r2_validation",
        "r2_heldout",
        "r2_validation_pop",
        "r2_heldout_pop",
    )
    for name, r in result["models"].items():
        lines.append(f"{name:<28} " + " ".join(f"{fmt(r.get(k)):>7}" for k in keys))
    return "\n".join(lines)


def selection_rule(earlier: dict[str, Any], later: dict[str, Any], tolerance: float = 0.01) -> bool:
    """The rule fixed before any held-out run: ship the later round unless its box or
    point Dice is more than ``tolerance`` below the earlier round's.
    """
    return (
        later["box"] >= earlier["box"] - tolerance
        and later["point"] >= earlier["point"] - tolerance
    )


__all__ = [
    "validate",
    "format_validation",
    "selection_rule",
    "r_squared",
    "teacher_mean",
    "clinical_copy",
    "png_cases",
    "heldout_frames",
    "embeddings",
    "SPACING",
]
