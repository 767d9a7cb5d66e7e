"""How much of the gap to LiteMedSAM is the encoder's? (model card, "What limits the weights")

Diagnostic only: it chooses nothing. Box prompts on the same objects, decoded by our
decoder on our encoder's embedding, by our decoder on LiteMedSAM's embedding of the same
slice (both are ``(1, 256, 64, 64)`` over the same padded frame), and by LiteMedSAM:

- the held-out volume's reference objects (``ct_thorax_small``, DESIGN §6 objects);
- the validation agreement objects of ``train validate`` (LiteMedSAM pseudo-references).

With ``--cache``, also the student's embedding MSE to the teacher's on 40 cached samples,
against the MSE of the per-position mean teacher embedding.

    .venv/bin/python scripts/encoder_gap.py --weights weights/hrmedsegsam.pt [--cache cache/main]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hrmedsegsam.io import read_volume
from hrmedsegsam.masks import dice
from hrmedsegsam.model.build import load_model
from hrmedsegsam.predictor import Embedding, Predictor
from hrmedsegsam.training.evaluate import SMALL_PX, collect_objects, load_reference
from hrmedsegsam.training.prompts import tight_box
from hrmedsegsam.training.validate import AGREEMENT_SLICES, WINDOW, agreement_objects

Box = tuple[float, float, float, float]


def three_ways(
    ours: Predictor,
    lite: Predictor,
    vol: np.ndarray,
    objs: Sequence[tuple[int, Box, np.ndarray]],
    tag: str,
) -> np.ndarray:
    """Rows ``(size, own, swapped, litemedsam)`` Dice per object ``(z, box, mask)``."""
    rows: list[tuple[int, float, float, float]] = []
    for z, box, ref in objs:
        own = ours.embed(vol[z], WINDOW, key=(tag, "own", z))
        teacher = lite.embed(vol[z], WINDOW, key=(tag, "teacher", z))
        ours.set_embedding(own)
        a = dice(ours.predict(box=list(box)).mask, ref)
        ours.set_embedding(Embedding(teacher.features, own.image, own.input_hw, own.window))
        b = dice(ours.predict(box=list(box)).mask, ref)
        lite.set_embedding(teacher)
        c = dice(lite.predict(box=list(box)).mask, ref)
        rows.append((int(ref.sum()), a, b, c))
    return np.asarray(rows, float)


def report(name: str, rows: np.ndarray) -> None:
    for part, sel in (("small", rows[:, 0] < SMALL_PX), ("large", rows[:, 0] >= SMALL_PX)):
        if sel.any():
            own, swap, lite = rows[sel, 1:].mean(0)
            print(
                f"{name:<11} {part:<5} n={int(sel.sum()):<4} own {own:.4f}  teacher embedding {swap:.4f}  "
                f"LiteMedSAM {lite:.4f}"
            )


def embedding_fit(cache: Path, model: torch.nn.Module, n: int = 40) -> None:
    from hrmedsegsam.training.cache import sample_paths
    from hrmedsegsam.training.data import load_sample, to_frame

    paths = [p for p in sample_paths(cache) if (cache / "teacher" / (p.stem + ".npy")).exists()]
    t = np.stack([np.load(cache / "teacher" / (p.stem + ".npy")).astype(np.float32) for p in paths])
    mean = t.mean(0)
    own, base = [], []
    for i in np.random.default_rng(0).choice(len(paths), min(n, len(paths)), replace=False):
        frame, _ = to_frame(load_sample(paths[i]).image, model.image_size)
        with torch.inference_mode():
            e = model.encode(frame.contiguous())[0].numpy()
        own.append(((e - t[i]) ** 2).mean())
        base.append(((mean - t[i]) ** 2).mean())
    print(
        f"embedding MSE to the teacher: student {np.mean(own):.5f}, per-position mean of {len(paths)} "
        f"teacher embeddings {np.mean(base):.5f} (explained: {1 - np.mean(own) / np.mean(base):.0%})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="hrmedsegsam")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.weights, device="cpu")
    if args.cache is not None:
        embedding_fit(args.cache, model)
    ours, lite = Predictor(model), Predictor(load_model("litemedsam", device="cpu"))
    held = args.data / "ct_thorax_small"
    vol = read_volume(held / "image.nii.gz")
    ref = load_reference(held / "labels.nii.gz", vol)
    objs = []
    for o in collect_objects(ref, range(vol.array.shape[0])):
        x0, y0, x1, y1 = tight_box(o.mask)
        objs.append(
            (o.z, (float(x0), float(y0), float(max(x1, x0 + 1)), float(max(y1, y0 + 1))), o.mask)
        )
    report("held-out", three_ways(ours, lite, vol.array, objs, "held-out"))
    val = read_volume(args.data / "ct_body_3mm" / "image.nii.gz").array
    report(
        "validation",
        three_ways(ours, lite, val, agreement_objects(val, AGREEMENT_SLICES), "validation"),
    )


if __name__ == "__main__":
    main()
