"""Measure fill between key slices (hrmedsegsam.fill) on a training volume.

For organs of ``ct_body_3mm`` (TotalSegmentator pseudo-labels; training data, never the
held-out cases), the reference masks on slices ``z0`` and ``z0 + gap`` are the key slices;
the slices between are filled by each way of prompting and scored by 3D Dice over them.

``python scripts/fill_between.py [--data ../shared/data] [--gaps 4 8]`` prints one line
per way (mean Dice, runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", default="hrmedsegsam")
    ap.add_argument("--gaps", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--only", nargs="*", help="run only the ways whose name has one of these")
    args = ap.parse_args(argv)

    import SimpleITK as sitk

    from hrmedsegsam import Predictor, load_model
    from hrmedsegsam.fill import fill_steps
    from hrmedsegsam.masks import dice

    case = args.data / "ct_body_3mm"
    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "image.nii.gz")))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "labels_totalseg_fast.nii.gz")))
    pred = Predictor(load_model(args.model))
    ways = {
        "interpolation": dict(prompt="interpolation"),
        "box+point, the prior where Dice(model, prior) < 0.5": dict(prompt="box+point"),
        "box+point, the prior where Dice(model, prior) < 0.7": dict(
            prompt="box+point", min_agreement=0.7
        ),
        "box+point, the prior where Dice(model, prior) < 0.8": dict(
            prompt="box+point", min_agreement=0.8
        ),
        "box+point+mask (the blend as dense prompt), the prior where Dice < 0.5": dict(
            prompt="box+point+mask"
        ),
        "box+point, model always": dict(prompt="box+point", min_score=0, min_agreement=0),
        "chain from the nearer end": dict(prompt="chain"),
    }
    if args.only:
        ways = {w: kw for w, kw in ways.items() if any(o in w for o in args.only)}
    scores: dict[str, list[float]] = {w: [] for w in ways}
    for lid, name in ORGANS.items():
        zs = np.flatnonzero((lab == lid).reshape(lab.shape[0], -1).any(axis=1))
        for gap in args.gaps:
            for z0 in (int(zs.min()) + 2, int((zs.min() + zs.max()) // 2)):
                z1 = z0 + gap
                if z1 > zs.max():
                    continue
                ref = lab[z0 + 1 : z1] == lid
                keys = {z0: lab[z0] == lid, z1: lab[z1] == lid}
                line = [f"{name} {z0}..{z1}"]
                for way, kw in ways.items():
                    out = np.zeros_like(ref)
                    for step in fill_steps(
                        pred, vol, keys, (-160.0, 240.0), key=lambda z: ("body", z), **kw
                    ):
                        out[step.z - z0 - 1] = step.mask
                    scores[way].append(dice(out, ref))
                    line.append(f"{scores[way][-1]:.3f}")
                print("  ".join(line), flush=True)
    width = max(len(w) for w in ways)
    for way, vals in scores.items():
        print(f"{way:<{width}}  {np.mean(vals):.3f}  (n={len(vals)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
