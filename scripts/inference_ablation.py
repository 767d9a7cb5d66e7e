"""What each of the Predictor's prompt-time rules buys, on validation data only.

The validation objects of ``train validate`` (``ct_body_3mm`` slices 100-111 resampled to
0.8 mm with their TotalSegmentator labels, and the 2D validation slices; never a held-out
case) are prompted with a tight box and with one point at the pixel farthest from the
border, then up to ``--clicks`` corrective clicks (DESIGN §6), under several Predictor
settings on the same embeddings:

- ``plain``: the decoder's answers, clicks fed back as ``mask_input`` (no rule);
- ``support``: only the mask components the prompts support (:mod:`hrmedsegsam.prompt_support`);
- ``refine``: ``support`` + clicks through :meth:`Predictor.refine` (monotone);
- ``zoom``: ``refine`` + zoom for small structures (:mod:`hrmedsegsam.zoom`): the shipped
  behaviour.

Prints mean Dice (all, small < 1000 px, large) after 0, 1 and 3 clicks, per setting.

    python scripts/inference_ablation.py --weights weights/hrmedsegsam.pt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

SETTINGS = ("plain", "support", "refine", "zoom")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="weights/hrmedsegsam.pt")
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import tempfile

    import torch

    from hrmedsegsam.io import read_volume
    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.predictor import Predictor
    from hrmedsegsam.training.data import VALIDATION_2D, VALIDATION_SLICES, VALIDATION_VOLUME
    from hrmedsegsam.training.evaluate import (
        collect_objects,
        load_reference,
        refine_with_clicks,
    )
    from hrmedsegsam.training.prompts import farthest_from_border, tight_box
    from hrmedsegsam.training.validate import MIN_OBJECT_PX, WINDOW, clinical_copy, png_cases

    torch.set_num_threads(args.threads)
    folder = args.data / VALIDATION_VOLUME
    if not folder.is_dir():
        print(f"inference_ablation: validation data not found: {folder}", file=sys.stderr)
        return 1
    model = load_model(args.weights, device="cpu")
    preds = {
        "plain": Predictor(model, keep_supported=False, zoom=False),
        "support": Predictor(model, zoom=False),
        "refine": Predictor(model, zoom=False),
        "zoom": Predictor(model),
    }
    # (slice, window, cache key, object masks) for every validation image
    images: list[tuple[np.ndarray, tuple[float, float], tuple, list[np.ndarray]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        img, lab = clinical_copy(
            folder / "image.nii.gz", folder / "labels_totalseg_fast.nii.gz", Path(tmp)
        )
        vol = read_volume(img)
        objs = collect_objects(load_reference(lab, vol), list(VALIDATION_SLICES), MIN_OBJECT_PX)
    for z in sorted({o.z for o in objs}):
        images.append((vol.array[z], WINDOW, ("slab", z), [o.mask for o in objs if o.z == z]))
    for stem, im, masks in png_cases(args.data / VALIDATION_2D):
        images.append((im, (0.0, 1.0), ("2d", stem), [m for _, m in masks]))
    res = {s: {"box": [], "point": []} for s in SETTINGS}
    sizes: list[int] = []
    for arr, win, key, masks in images:
        emb = preds["plain"].embed(arr, win, key=key)
        for p in preds.values():
            p.set_embedding(emb)
        for m in masks:
            sizes.append(int(m.sum()))
            x0, y0, x1, y1 = tight_box(m)
            box = [x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)]
            x, y = farthest_from_border(m)
            for s, p in preds.items():
                refine = s in ("refine", "zoom")
                res[s]["box"].append(refine_with_clicks(p, m, args.clicks, box, refine=refine))
                res[s]["point"].append(
                    refine_with_clicks(
                        p, m, args.clicks, points=[[x, y]], labels=[1], refine=refine
                    )
                )
    size = np.array(sizes)
    print(f"{len(sizes)} objects ({int((size < 1000).sum())} small), weights {args.weights}")
    print(
        f"{'setting':<8} {'prompt':<6} {'all':>7} {'small':>7} {'large':>7}"
        + "".join(f" {'+' + str(k):>7}" for k in (1, 3) if k <= args.clicks)
    )
    for s in SETTINGS:
        for prompt in ("box", "point"):
            a = np.array(res[s][prompt])
            cells = [a[:, 0].mean(), a[size < 1000, 0].mean(), a[size >= 1000, 0].mean()]
            cells += [a[:, k].mean() for k in (1, 3) if k <= args.clicks]
            print(f"{s:<8} {prompt:<6}" + "".join(f" {v:7.4f}" for v in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
