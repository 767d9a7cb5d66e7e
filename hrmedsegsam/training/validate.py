"""Model selection on data that is neither trained on nor held out (``train validate``).

The held-out volume (``ct_thorax_small``) must never choose between training rounds, so
rounds are compared here instead, on ``ct_body_3mm``, which no stage trains on. Its slices
82..111 are the held-out slices (same patient and scan), so only slices ``0..81`` are used:

- **labelled part**: the vertebrae of ``labels_spine.nii.gz`` on slices ``30..81`` (every
  second slice), box and single-point Dice exactly as :func:`evaluate.evaluate` computes
  them (same prompts, window -160..240);
- **agreement part**: boxes around label-free homogeneous regions
  (:func:`data.region_objects`, seeded) on every third slice of ``0..81``; LiteMedSAM's
  answer to the box is the pseudo-reference where its own predicted IoU is at least 0.75
  and it covers 40 px .. 60 % of the slice. This reaches soft tissue (muscle, organs, fat)
  that has no labels here, at the price of measuring agreement with the teacher, not truth.

All models see the same objects and prompts in one run. Boxes are native pixel
``(x0, y0, x1, y1)`` inclusive indices; masks are ``(H, W)`` bool on the axial slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from hrmedsegsam.errors import InputError
from hrmedsegsam.masks import dice

VOLUME = "ct_body_3mm"
FIRST_HELDOUT_SLICE = 82  # ct_body_3mm slices 82.. are ct_thorax_small's slices 0..
LABELLED_SLICES = range(30, FIRST_HELDOUT_SLICE, 2)
AGREEMENT_SLICES = range(0, FIRST_HELDOUT_SLICE, 3)
WINDOW = (-160.0, 240.0)
MIN_TEACHER_IOU = 0.75


def agreement_objects(volume: np.ndarray, slices: Sequence[int], seed: int = 0,
                      per_slice: int = 4) -> List[Tuple[int, Tuple[float, float, float, float], np.ndarray]]:
    """``(z, box, pseudo_reference)`` triples from LiteMedSAM's answers to boxes around
    label-free regions of ``volume`` ``(z, y, x)``; see the module docstring."""
    from hrmedsegsam.intensity import apply_window
    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.predictor import Predictor
    from hrmedsegsam.training.data import region_objects
    from hrmedsegsam.training.prompts import tight_box

    rng = np.random.default_rng(seed)
    teacher = Predictor(load_model("litemedsam", device="cpu"))
    out: List[Tuple[int, Tuple[float, float, float, float], np.ndarray]] = []
    for z in slices:
        img01 = apply_window(volume[z], WINDOW)
        regions = region_objects(img01, rng, max_objects=per_slice)
        if not regions:
            continue
        teacher.set_image(volume[z], window=WINDOW, key=("validate", z))
        for m in regions:
            x0, y0, x1, y1 = tight_box(m)
            box = (float(x0), float(y0), float(max(x1, x0 + 1)), float(max(y1, y0 + 1)))
            p = teacher.predict(box=list(box))
            area = int(p.mask.sum())
            if p.score >= MIN_TEACHER_IOU and 40 <= area <= 0.6 * p.mask.size:
                out.append((int(z), box, p.mask))
    return out


def validate(models: Sequence[str], data: Path, seed: int = 0, progress: bool = True) -> Dict[str, Any]:
    """Box/point Dice on the labelled part and box agreement with LiteMedSAM for each model
    in ``models`` (names or weights files); a JSON-able dict."""
    from hrmedsegsam.io import read_volume
    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.predictor import Predictor
    from hrmedsegsam.training.evaluate import SMALL_PX, evaluate

    folder = Path(data) / VOLUME
    image, labels = folder / "image.nii.gz", folder / "labels_spine.nii.gz"
    for f in (image, labels):
        if not f.is_file():
            raise InputError(f"validation data not found: {f}")
    labelled = evaluate(image, labels, models=models, prompts=("box", "point"), window=WINDOW,
                        slices=list(LABELLED_SLICES), device="cpu", progress=progress)
    vol = read_volume(image).array
    pseudo = agreement_objects(vol, AGREEMENT_SLICES, seed)
    sizes = np.array([int(m.sum()) for _, _, m in pseudo])
    result: Dict[str, Any] = {"volume": str(image), "labelled_objects": labelled["objects"],
                              "agreement_objects": len(pseudo), "agreement_small": int((sizes < SMALL_PX).sum()),
                              "models": {}}
    for name in models:
        pred = Predictor(load_model(name, device="cpu"))
        d: List[float] = []
        for z, box, ref in pseudo:
            pred.set_image(vol[z], window=WINDOW, key=("validate", z))
            d.append(dice(pred.predict(box=list(box)).mask, ref))
        arr = np.asarray(d)
        lab = labelled["models"][name]
        result["models"][name] = {
            "box": lab["box"]["dice"], "point": lab["point"]["dice"],
            "agreement": round(float(arr.mean()), 4) if arr.size else None,
            "agreement_small": round(float(arr[sizes < SMALL_PX].mean()), 4) if (sizes < SMALL_PX).any() else None,
            "agreement_large": round(float(arr[sizes >= SMALL_PX].mean()), 4) if (sizes >= SMALL_PX).any() else None,
        }
    return result


def format_validation(result: Dict[str, Any]) -> str:
    """Plain-text table of :func:`validate`'s result."""
    lines = [f"{result['labelled_objects']} labelled objects (vertebrae), {result['agreement_objects']} "
             f"agreement objects ({result['agreement_small']} small)",
             f"{'model':<28} {'box':>7} {'point':>7} {'agree':>7} {'small':>7} {'large':>7}"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for name, r in result["models"].items():
        lines.append(f"{name:<28} {fmt(r['box']):>7} {fmt(r['point']):>7} {fmt(r['agreement']):>7} "
                     f"{fmt(r['agreement_small']):>7} {fmt(r['agreement_large']):>7}")
    return "\n".join(lines)


def selection_rule(earlier: Dict[str, Any], later: Dict[str, Any], tolerance: float = 0.01) -> bool:
    """The rule fixed before any held-out run: ship the later round unless its box or
    point Dice is more than ``tolerance`` below the earlier round's."""
    return later["box"] >= earlier["box"] - tolerance and later["point"] >= earlier["point"] - tolerance


__all__ = ["validate", "format_validation", "selection_rule", "agreement_objects", "VOLUME",
           "FIRST_HELDOUT_SLICE"]
