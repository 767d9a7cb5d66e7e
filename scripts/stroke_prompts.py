"""Measure how scribble and lasso strokes are best given to the model (hrmedsegsam.scribble).

On training volumes (never the held-out cases), for every object of at least 200 pixels on
a few slices: simulate what a user draws and compare translations by Dice against the
reference:

* positive lasso: the reference dilated by 2 / 5 pixels (drawn around the object), given as
  its box, box + dense mask, box + inner point, box + point + mask, each with and without
  limiting the result to the lasso;
* negative lasso: a box 30 % too large leaks; the largest leak, widened by 2 pixels, is
  lassoed: negative points inside it, subtraction, or both;
* positive scribble: a stroke along the object's row through its inner point, as 1..10
  points, with and without the object's box.

``python scripts/stroke_prompts.py [--data ../shared/data] [--model hrmedsegsam]``
prints one table (mean Dice, objects).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {  # folder, labels file, slices
    "ct_body_3mm": ("labels_totalseg_fast.nii.gz", (72, 80, 88, 96, 104)),
    "ct_thorax_small": ("labels.nii.gz", (5, 12, 19, 26)),
}


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` grown by ``r`` pixels (4-neighbour steps; nothing grows in from the border)."""
    out = mask.copy()
    for _ in range(r):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def spread_points(region: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` pixels ``(K, 2)`` of ``(x, y)`` inside ``region``, spread out: the first
    deep inside, each next one the region's pixel farthest from those chosen.
    """
    from hrmedsegsam.masks import interior_point

    ys, xs = np.nonzero(region)
    cand = np.stack([xs, ys], axis=1).astype(float)
    chosen = [np.array(interior_point(region), dtype=float)]
    dist = np.linalg.norm(cand - chosen[0], axis=1)
    while len(chosen) < count and dist.max() > 0:
        chosen.append(cand[int(np.argmax(dist))])
        dist = np.minimum(dist, np.linalg.norm(cand - chosen[-1], axis=1))
    return np.array(chosen)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", default="hrmedsegsam")
    args = ap.parse_args(argv)

    import SimpleITK as sitk

    from hrmedsegsam import Predictor, load_model
    from hrmedsegsam.masks import bbox_xyxy, components, dice, interior_point
    from hrmedsegsam.scribble import sample_scribble

    pred = Predictor(load_model(args.model))
    scores: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        scores.setdefault(name, []).append(value)

    for case, (labels_name, zs) in CASES.items():
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(args.data / case / "image.nii.gz")))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(args.data / case / labels_name)))
        assert img.shape == lab.shape, (img.shape, lab.shape)
        for z in zs:
            pred.set_image(img[z], (-160.0, 240.0))
            H, W = img.shape[1:]
            for lid in np.unique(lab[z]):
                if lid == 0:
                    continue
                comp, n = components(lab[z] == lid)
                for c in range(1, n + 1):
                    ref = comp == c
                    if ref.sum() < 200:
                        continue
                    x0, y0, x1, y1 = bbox_xyxy(ref)
                    # positive lasso
                    for r in (2, 5):
                        region = dilate(ref, r)
                        add(f"lasso r{r}: the lasso itself", dice(region, ref))
                        bx0, by0, bx1, by1 = bbox_xyxy(region)
                        box = [bx0, by0, bx1, by1]
                        pt = [list(interior_point(region))]
                        logits = pred.mask_to_logits(region)
                        for name, kw in (
                            ("box", dict(box=box)),
                            ("box+mask", dict(box=box, mask_input=logits)),
                            ("box+point", dict(box=box, points=pt, labels=[1])),
                            (
                                "box+point+mask",
                                dict(box=box, points=pt, labels=[1], mask_input=logits),
                            ),
                        ):
                            m = pred.predict(**kw).mask
                            add(f"lasso r{r}: {name}", dice(m, ref))
                            add(f"lasso r{r}: {name}, within the lasso", dice(m & region, ref))
                    # negative lasso on a leak
                    mx, my = int(0.3 * (x1 - x0 + 1)), int(0.3 * (y1 - y0 + 1))
                    big = [
                        max(0, x0 - mx),
                        max(0, y0 - my),
                        min(W - 1, x1 + mx),
                        min(H - 1, y1 + my),
                    ]
                    leak_pred = pred.predict(box=big)
                    fp = leak_pred.mask & ~ref
                    fl, fn = components(fp)
                    if fn:
                        sizes = np.bincount(fl.ravel())[1:]
                        leak = fl == int(np.argmax(sizes)) + 1
                        if leak.sum() >= 30:
                            region = dilate(leak, 2)
                            negs = spread_points(region, 3)
                            base = dice(leak_pred.mask, ref)
                            add("negative lasso: before", base)
                            kw = dict(box=big, mask_input=leak_pred.logits)
                            m_pts = pred.predict(points=negs, labels=[0] * len(negs), **kw).mask
                            add("negative lasso: negative points", dice(m_pts, ref))
                            add(
                                "negative lasso: subtraction",
                                dice(leak_pred.mask & ~region, ref),
                            )
                            add("negative lasso: points + subtraction", dice(m_pts & ~region, ref))
                    # positive scribble along the row of the inner point
                    px, py = interior_point(ref)
                    inner = ref.copy()
                    row = np.flatnonzero(inner[py])
                    run = row[(row >= px - 200) & (row <= px + 200)]
                    stroke = np.array([[run.min() + 1, py], [run.max() - 1, py]], float)
                    for k in (1, 3, 6, 10):
                        pts = sample_scribble(stroke, (H, W), max_points=k, spacing=1.0)
                        m = pred.predict(points=pts, labels=[1] * len(pts)).mask
                        add(f"scribble: {k} point(s)", dice(m, ref))
                        m = pred.predict(
                            box=[x0, y0, x1, y1], points=pts, labels=[1] * len(pts)
                        ).mask
                        add(f"scribble: {k} point(s) + box", dice(m, ref))
    width = max(len(k) for k in scores)
    for name, vals in scores.items():
        print(f"{name:<{width}}  {np.mean(vals):.3f}  (n={len(vals)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
