"""Where a tight box on a large organ goes wrong: missed organ or other tissue taken along.

Training data only (``ct_body_3mm`` and its TotalSegmentator labels, never a held-out case):
each axial slice whose organ covers at least ``--min-px`` pixels at 3 mm is magnified
``--zoom`` times (nearest neighbour, so 3 mm pixels become 0.75 mm ones at zoom 4, the
pixel size of a clinical 512 slice) and prompted with the tight box of that organ's label.
Prints, per model and organ, the mean Dice, the missed share (false negatives / organ
area) and the share taken along (false positives / organ area), and the same for the
coarse mask alone (``refine=False``: the low-resolution decoder output, upsampled).

    python scripts/box_errors.py --models hrmedsegsam,litemedsam
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import numpy as np

ORGANS = {5: "liver", 1: "spleen"}  # the large organs of the case (TotalSegmentator ids)


def organ_slices(labels: np.ndarray, organ: int, min_px: int, every: int) -> list[int]:
    """Axial indices ``z`` (zyx volume) where ``organ`` covers at least ``min_px`` pixels."""
    zs = [z for z in range(labels.shape[0]) if int((labels[z] == organ).sum()) >= min_px]
    return zs[::every]


def box_errors(
    model_name: str, image: np.ndarray, labels: np.ndarray, zoom: int, min_px: int, every: int
) -> dict[str, dict[str, np.ndarray]]:
    """``{"refined"|"coarse": {organ: (n, 3) array of Dice, missed, taken along}}``.

    ``image``, ``labels``: ``(Z, Y, X)`` HU and label ids; boxes are pixel ``[x0, y0, x1, y1]``
    of the magnified slice.
    """
    import torch

    from hrmedsegsam.masks import dice
    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.predictor import Predictor

    torch.set_num_threads(1)
    out: dict[str, dict[str, np.ndarray]] = {}
    for mode, refine in (("refined", True), ("coarse", False)):
        model = load_model(model_name, "cpu")
        if not refine and model_name == "litemedsam":
            continue  # no native-resolution refiner to switch off
        if not refine:
            setattr(model, "decode", functools.partial(model.decode, refine=False))  # noqa: B010
        pred = Predictor(model, backend="torch")
        rows: dict[str, list[tuple[float, float, float]]] = {}
        block = np.ones((zoom, zoom), np.float32)
        chosen = {o: set(organ_slices(labels, o, min_px, every)) for o in ORGANS}
        for z in sorted(set().union(*chosen.values())):
            pred.set_image(np.kron(image[z], block), (-160.0, 240.0), key=("box-errors", z))
            lab = np.kron(labels[z], block.astype(labels.dtype))
            for organ, name in ORGANS.items():
                if z not in chosen[organ]:
                    continue
                ref = lab == organ
                ys, xs = np.nonzero(ref)
                got = pred.predict(box=[xs.min(), ys.min(), xs.max(), ys.max()]).mask
                area = float(ref.sum())
                rows.setdefault(name, []).append(
                    (
                        dice(got, ref),
                        float((ref & ~got).sum()) / area,
                        float((got & ~ref).sum()) / area,
                    )
                )
        out[mode] = {k: np.asarray(v) for k, v in rows.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="hrmedsegsam,litemedsam")
    parser.add_argument("--data", default=os.environ.get("HRMEDSEGSAM_DATA", "../shared/data"))
    parser.add_argument("--zoom", type=int, default=4)
    parser.add_argument("--min-px", type=int, default=300, help="organ pixels at 3 mm")
    parser.add_argument("--every", type=int, default=4, help="every N-th qualifying slice")
    args = parser.parse_args(argv)
    import SimpleITK as sitk

    case = Path(args.data) / "ct_body_3mm"
    if not (case / "image.nii.gz").is_file():
        print(f"error: {case / 'image.nii.gz'} not found", file=sys.stderr)
        return 1
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "image.nii.gz"))).astype(np.float32)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "labels_totalseg_fast.nii.gz")))
    print(
        f"{'model':<24} {'mask':<8} {'organ':<13} {'n':>3} {'dice':>6} {'missed':>7} {'taken':>7}"
    )
    for name in args.models.split(","):
        for mode, organs in box_errors(
            name, image, labels, args.zoom, args.min_px, args.every
        ).items():
            for organ, a in organs.items():
                d, fn, fp = a.mean(0)
                print(f"{name:<24} {mode:<8} {organ:<13} {len(a):>3} {d:6.3f} {fn:7.3f} {fp:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
