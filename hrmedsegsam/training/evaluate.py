"""The evaluation protocol of DESIGN §6, for one or more models in the same run.

For each evaluated slice (every ``every``-th axial slice) and each reference label, each
connected component (8-connectivity) of at least ``min_size`` (100) pixels is one object.
Box prompt: its tight bounding box (inclusive pixel indices). Point prompt: one positive
point at the component's pixel farthest from its border (Euclidean distance transform,
the image edge counting as border). Window: CT -160..240 unless given. Dice of the
predicted mask against the component; mean over objects, overall and by size (< 1000 px
"small", >= 1000 px "large"). All models see exactly the same objects.

Interactive refinement (``clicks`` > 0): from the box (and from the single point), up to
``clicks`` corrective clicks, each at the pixel farthest from the border of the largest
error region (positive in a missed region, negative in a false one; the box stays), each
applied as the annotator applies a click (:meth:`Predictor.refine`: the previous low-res
logits fed back as ``mask_input``, a positive click only adding, a negative one only taking
away); Dice after 0, 1, 3 and 5 clicks
(an object without error keeps its Dice for the remaining clicks).

Per structure: mean Dice of each prompt type per reference label name (label names from
``label_names.json`` next to the labels, or TotalSegmentator's names file).

3D: for each large organ (liver, spleen, kidneys by default), a box on its middle slice
(the middle of its z extent; the nearest slice that contains it), the predicted mask
propagated through the volume with :func:`hrmedsegsam.volume.propagate`, and the 3D Dice
against the organ's reference mask.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrmedsegsam.errors import InputError
from hrmedsegsam.masks import dice
from hrmedsegsam.training.prompts import correction_point, farthest_from_border, tight_box

if TYPE_CHECKING:
    from hrmedsegsam.io.volume import Volume
    from hrmedsegsam.predictor import Predictor

SMALL_PX = 1000
REPORTED_CLICKS = (0, 1, 3, 5)
DEFAULT_ORGANS = ("liver", "spleen", "kidney_left", "kidney_right")


@dataclass
class Obj:
    z: int
    label: str
    mask: np.ndarray

    @property
    def size(self) -> int:
        return int(self.mask.sum())


@dataclass
class Reference:
    """Reference labels on the image grid: name -> (z, y, x) bool."""

    masks: dict[str, np.ndarray] = field(default_factory=dict)


def _find_label_names(labels_path: Path) -> dict[int, str]:
    for d in [labels_path.parent, labels_path.parent.parent]:
        f = d / "label_names.json"
        if f.is_file():
            try:
                return {
                    int(k): str(v) for k, v in json.loads(f.read_text(encoding="utf-8")).items()
                }
            except (ValueError, TypeError, AttributeError):
                return {}
    for d in [labels_path.parent, labels_path.parent.parent, labels_path.parent.parent.parent]:
        f = d / "totalsegmentator_label_names.json"
        if f.is_file():
            try:
                return {
                    int(k): v for k, v in json.loads(f.read_text(encoding="utf-8"))["total"].items()
                }
            except (ValueError, KeyError, TypeError):
                return {}
    return {}


def load_reference(labels: Path, volume: Volume, names: dict[int, str] | None = None) -> Reference:
    """A label map file (each non-zero value one label, named through ``names`` or the
    TotalSegmentator names file found next to it), or a folder of binary masks (one label
    per file); resampled onto ``volume``'s grid by physical space.
    """
    from hrmedsegsam.io import resample_labels_to

    labels = Path(labels)
    ref = Reference()
    if labels.is_dir():
        files = sorted(
            list(labels.glob("*.nii.gz"))
            + list(labels.glob("*.nii"))
            + list(labels.glob("*.nrrd"))
            + list(labels.glob("*.mha"))
        )
        if not files:
            raise InputError(f"no label files (.nii.gz, .nii, .nrrd, .mha) in the folder {labels}")
        for f in files:
            m = resample_labels_to(f, volume) > 0
            if m.any():
                ref.masks[f.name.split(".")[0]] = m
        return ref
    if not labels.exists():
        raise InputError(f"labels not found: {labels}")
    lab = resample_labels_to(labels, volume)
    names = names if names is not None else _find_label_names(labels)
    for v in np.unique(lab):
        if v:
            ref.masks[names.get(int(v), str(int(v)))] = lab == v
    return ref


def collect_objects(ref: Reference, slices: Sequence[int], min_size: int = 100) -> list[Obj]:
    from hrmedsegsam.training.data import components

    out: list[Obj] = []
    for z in slices:
        for name, m in ref.masks.items():
            for c in components(m[z], min_size):
                out.append(Obj(z, name, c))
    return out


def _summary(d: Sequence[float], sizes: Sequence[int]) -> dict[str, Any]:
    d_arr, s_arr = np.asarray(d, float), np.asarray(sizes)
    small, large = d_arr[s_arr < SMALL_PX], d_arr[s_arr >= SMALL_PX]

    def f(a: np.ndarray) -> float | None:
        return round(float(a.mean()), 4) if a.size else None

    return {
        "dice": f(d_arr),
        "dice_small": f(small),
        "dice_large": f(large),
        "n": int(d_arr.size),
        "n_small": int(small.size),
        "n_large": int(large.size),
    }


def evaluate(
    image: Path,
    labels: Path,
    models: Sequence[str] = ("hrmedsegsam", "litemedsam"),
    prompts: Sequence[str] = ("box", "point"),
    every: int = 1,
    window: tuple[float, float] = (-160.0, 240.0),
    propagate3d: bool = False,
    organs: Sequence[str] = DEFAULT_ORGANS,
    min_size: int = 100,
    device: str | None = None,
    progress: bool = True,
    slices: Sequence[int] | None = None,
    clicks: int = 0,
    box_margin: float | None = None,
) -> dict[str, Any]:
    """Run the protocol; returns a JSON-able dict with per-model, per-prompt summaries.

    ``slices``: axial slice indices to evaluate instead of every ``every``-th one;
    ``clicks``: corrective clicks of the interactive protocol after each prompt (0: none);
    ``box_margin``: propagation's box widening (None: :data:`volume.BOX_MARGIN`).
    """
    import torch
    from tqdm import tqdm

    from hrmedsegsam.io import read_volume
    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.predictor import Predictor

    for p in prompts:
        if p not in ("box", "point"):
            raise InputError(f"unknown prompt type {p!r}: use box and/or point")
    if every < 1:
        raise InputError("--every must be at least 1")
    if not 0 <= clicks <= 20:
        raise InputError("--clicks must be between 0 and 20")
    vol = read_volume(image)
    ref = load_reference(Path(labels), vol)
    if not ref.masks:
        raise InputError(f"the labels {labels} contain no labelled voxel on the image grid")
    depth = vol.array.shape[0]
    if slices is None:
        slices = list(range(0, depth, every))
    elif any(not 0 <= z < depth for z in slices):
        raise InputError(f"slice indices must lie in 0..{depth - 1}")
    slices = list(slices)
    objs = collect_objects(ref, slices, min_size)
    result: dict[str, Any] = {
        "image": str(image),
        "labels": str(labels),
        "window": list(window),
        "every": every,
        "slices": len(slices),
        "objects": len(objs),
        "min_size": min_size,
        "small_px": SMALL_PX,
        "objects_small": int(sum(o.size < SMALL_PX for o in objs)),
        "models": {},
    }
    by_z: dict[int, list[int]] = {}
    for i, o in enumerate(objs):
        by_z.setdefault(o.z, []).append(i)
    for name in models:
        model = load_model(name, device=device)
        pred = Predictor(model)
        res: dict[str, Any] = {}
        dices: dict[str, list[float]] = {p: [] for p in prompts}
        chains: dict[str, list[list[float]]] = {p: [] for p in prompts}
        t_enc = 0.0
        for z in tqdm(sorted(by_z), desc=f"{name} slices", disable=not progress):
            t0 = time.perf_counter()
            pred.set_image(vol.array[z], window=window, key=("eval", z))
            t_enc += time.perf_counter() - t0
            for i in by_z[z]:
                m = objs[i].mask
                if "box" in dices:
                    x0, y0, x1, y1 = tight_box(m)
                    if (
                        x1 - x0 < 1 or y1 - y0 < 1
                    ):  # a 1-pixel-wide box: widen to the Predictor's minimum
                        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
                    chain = refine_with_clicks(pred, m, clicks, box=[x0, y0, x1, y1])
                    dices["box"].append(chain[0])
                    chains["box"].append(chain)
                if "point" in dices:
                    x, y = farthest_from_border(m)
                    chain = refine_with_clicks(pred, m, clicks, points=[[x, y]], labels=[1])
                    dices["point"].append(chain[0])
                    chains["point"].append(chain)
        sizes = [o.size for o in objs]
        for p in prompts:
            res[p] = _summary(dices[p], sizes)
            res[p]["per_object"] = [round(v, 4) for v in dices[p]]
            res[p]["per_structure"] = _per_structure(dices[p], [o.label for o in objs])
            if clicks:
                res[p]["clicks"] = {
                    str(k): _summary([c[k] for c in chains[p]], sizes)
                    for k in REPORTED_CLICKS
                    if k <= clicks
                }
                res[p]["per_object_clicks"] = [[round(v, 4) for v in c] for c in chains[p]]
        res["encode_seconds_per_slice"] = round(t_enc / max(1, len(by_z)), 3)
        if propagate3d:
            res["propagate"] = _propagate(pred, vol, ref, organs, window, box_margin)
        result["models"][name] = res
        del pred, model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["object_list"] = [{"z": o.z, "label": o.label, "size": o.size} for o in objs]
    return result


def refine_with_clicks(
    pred: Predictor,
    mask: np.ndarray,
    clicks: int,
    box: list[float] | None = None,
    points: list[list[float]] | None = None,
    labels: list[int] | None = None,
    refine: bool = True,
) -> list[float]:
    """Dice of ``pred`` (a Predictor with the slice set) against ``mask`` ``(H, W)`` for the
    first prompt (``box`` native ``(x0, y0, x1, y1)`` and/or ``points`` ``[[x, y], ...]``) and
    after each of ``clicks`` corrective clicks (:func:`correction_point`, applied with
    :meth:`Predictor.refine` as the annotator applies a click; ``refine`` False: the decoder's
    answer with the previous logits as ``mask_input``, unmerged). Returns ``clicks + 1`` values.
    """
    pts = [list(map(float, p)) for p in (points or [])]
    labs = list(labels or [])
    out = pred.predict(box=box, points=pts or None, labels=labs or None)
    chain = [dice(out.mask, mask)]
    for _ in range(clicks):
        nxt = correction_point(out.mask, mask)
        if nxt is None:
            chain.append(chain[-1])
            continue
        (x, y), lab = nxt
        pts.append([float(x), float(y)])
        labs.append(lab)
        if refine:
            out = pred.refine(out, pts, labs, box=box)
        else:
            out = pred.predict(box=box, points=pts, labels=labs, mask_input=out.logits)
        chain.append(dice(out.mask, mask))
    return chain


def _per_structure(values: Sequence[float], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names)):
        v = [d for d, n in zip(values, names, strict=True) if n == name]
        out[name] = {"dice": round(float(np.mean(v)), 4), "n": len(v)}
    return out


def _propagate(
    pred: Predictor,
    vol: Volume,
    ref: Reference,
    organs: Sequence[str],
    window: tuple[float, float],
    box_margin: float | None = None,
) -> dict[str, Any]:
    from hrmedsegsam.volume import BOX_MARGIN, propagate

    out: dict[str, Any] = {}
    for organ in organs:
        m3 = ref.masks.get(organ)
        if m3 is None or not m3.any():
            out[organ] = None
            continue
        zs = np.flatnonzero(m3.any(axis=(1, 2)))
        mid = (int(zs[0]) + int(zs[-1])) // 2
        z = int(zs[np.argmin(np.abs(zs - mid))])
        x0, y0, x1, y1 = tight_box(m3[z])
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        pred.set_image(vol.array[z], window=window, key=("eval", z))
        p = pred.predict(box=[x0, y0, x1, y1])
        seg = propagate(
            pred,
            vol.array,
            z,
            p.mask,
            window,
            start_logits=p.logits,
            key_prefix="eval",
            box_margin=BOX_MARGIN if box_margin is None else box_margin,
        )
        out[organ] = {
            "start_z": z,
            "slices_ref": int(zs.size),
            "slices_pred": int(seg.any(axis=(1, 2)).sum()),
            "dice_start_slice": round(dice(p.mask, m3[z]), 4),
            "dice3d": round(dice(seg, m3), 4),
        }
    vals = [v["dice3d"] for v in out.values() if v]
    out["mean_dice3d"] = round(float(np.mean(vals)), 4) if vals else None
    return out


def format_table(result: dict[str, Any]) -> str:
    """Plain-text summary of :func:`evaluate`'s result."""
    lines = [
        f"{result['objects']} objects ({result['objects_small']} small < {SMALL_PX} px) on "
        f"{result['slices']} slices, window {result['window'][0]:g}..{result['window'][1]:g}"
    ]
    clicks = [k for k in REPORTED_CLICKS if k > 0]
    lines.append(
        f"{'model':<12} {'prompt':<6} {'dice':>7} {'small':>7} {'large':>7}"
        + "".join(f" {'+' + str(k) + ' clk':>7}" for k in clicks)
    )

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    for name, res in result["models"].items():
        for p in ("box", "point"):
            if p in res:
                r = res[p]
                ck = r.get("clicks", {})
                lines.append(
                    f"{name:<12} {p:<6} {fmt(r['dice']):>7} {fmt(r['dice_small']):>7} {fmt(r['dice_large']):>7}"
                    + "".join(
                        f" {fmt(ck[str(k)]['dice']) if str(k) in ck else '-':>7}" for k in clicks
                    )
                )
        if "propagate" in res:
            pr = res["propagate"]
            organs = ", ".join(
                f"{k} {v['dice3d']:.4f}" for k, v in pr.items() if isinstance(v, dict)
            )
            lines.append(f"{name:<12} 3D     {fmt(pr.get('mean_dice3d')):>7}  ({organs})")
    models = list(result["models"])
    prompts = [p for p in ("box", "point") if models and p in result["models"][models[0]]]
    structures = sorted(
        {
            s
            for m in models
            for p in prompts
            for s in result["models"][m][p].get("per_structure", {})
        }
    )
    if structures:
        lines.append(
            "per structure (mean Dice, objects): "
            + ", ".join(f"{m} {p}" for m in models for p in prompts)
        )
        for st in structures:
            cells = []
            for m in models:
                for p in prompts:
                    v = result["models"][m][p].get("per_structure", {}).get(st)
                    cells.append("-" if v is None else f"{v['dice']:.3f}")
            n = next(
                result["models"][m][p]["per_structure"][st]["n"]
                for m in models
                for p in prompts
                if st in result["models"][m][p].get("per_structure", {})
            )
            lines.append(f"  {st:<28} {n:>4}  " + " ".join(f"{c:>6}" for c in cells))
    return "\n".join(lines)
