"""Short speed probes for before/after comparisons on a busy machine (prints one JSON line).

``hrmedsegsam benchmark`` is the reference measurement; these probes time one thing each,
quickly, so two checkouts can be run in alternation (A B A B ...) while the machine's load
drifts, which is the only fair comparison on a shared CPU:

- ``encoder MODEL``: seconds per frame of each encoder backend, timed in interleaved
  rounds (the order rotates every round), median per backend;
- ``decode``: median ``Predictor.predict`` time of a box on an embedded 512 x 512 slice
  (the benchmark's synthetic slice, and a slice of ``ct_abdomen_amos/amos_0013``);
- ``volume``: embedding every slice of the benchmark's 512 x 512 x 141 CT with the
  ``"auto"`` backend (``Predictor.embed_all`` where the checkout has it, else ``embed``
  one slice after another; ``--sequential`` forces the latter).

The probe imports ``hrmedsegsam`` from ``PYTHONPATH``, so one copy of this script times
any checkout::

    for i in 1 2 3; do for d in /path/before /path/after; do
      (cd $d && PYTHONPATH=$d .venv/bin/python /path/after/scripts/speed_probe.py volume)
    done; done
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

DATA = Path(
    os.environ.get("HRMEDSEGSAM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def encoder(model_name: str, rounds: int, calls: int) -> dict[str, object]:
    import torch

    from hrmedsegsam.encoder_backend import make_encoder
    from hrmedsegsam.model.build import load_model

    model = load_model(model_name, "cpu")
    frame = torch.rand(1, 3, model.image_size, model.image_size)
    encoders = {}
    for backend in ("torch", "onnx", "openvino"):
        got, fn = make_encoder(model, torch.device("cpu"), backend)
        if got == backend:
            with torch.inference_mode():
                fn(frame)
            encoders[backend] = fn
    names = list(encoders)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                per_call = []
                for _ in range(calls):
                    t = time.perf_counter()
                    encoders[name](frame)
                    per_call.append(time.perf_counter() - t)
                times[name].append(statistics.median(per_call))
    return {
        "model": model_name,
        "threads": torch.get_num_threads(),
        "s_per_frame_per_round": times,
        "s_per_frame": {n: statistics.median(v) for n, v in times.items()},
    }


def decode(repeats: int) -> dict[str, object]:
    from hrmedsegsam.benchmark import WINDOW, _box_prompt, _synthetic_slice
    from hrmedsegsam.io import read_volume
    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.predictor import Predictor

    pred = Predictor(load_model("hrmedsegsam", "cpu"), backend="torch")
    cases = [("synthetic", _synthetic_slice(512), _box_prompt(512))]
    amos = DATA / "ct_abdomen_amos" / "amos_0013" / "image.nii.gz"
    if amos.is_file():
        cases.append(("amos_0013 z=4", read_volume(amos).array[4], [349, 170, 402, 242]))
    out: dict[str, object] = {}
    for name, img, box in cases:
        pred.set_image(img, WINDOW)
        pred.predict(box=box)  # fills the per-slice decoder cache
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            pred.predict(box=box)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return {"predict_box_s": out}


def volume(sequential: bool) -> dict[str, object]:
    from hrmedsegsam.benchmark import WINDOW, benchmark_volume
    from hrmedsegsam.model.build import load_model
    from hrmedsegsam.predictor import Predictor
    from hrmedsegsam.runtime import keep_freed_memory

    keep_freed_memory()
    vol, source = benchmark_volume(141)
    pred = Predictor(load_model("hrmedsegsam", "cpu"), cache_bytes=0)
    backend, _ = pred.encoder()
    pred.embed(vol[0], WINDOW, key="warm-up")
    keys = [("volume", z) for z in range(vol.shape[0])]
    parallel = hasattr(pred, "embed_all") and not sequential
    if parallel:
        list(pred.embed_all(vol[:2], WINDOW, [("warm-up", 0), ("warm-up", 1)]))
    t = time.perf_counter()
    if parallel:
        for _ in pred.embed_all(vol, WINDOW, keys):
            pass
    else:
        for z in range(vol.shape[0]):
            pred.embed(vol[z], WINDOW, key=keys[z])
    seconds = time.perf_counter() - t
    return {
        "volume": source,
        "backend": backend,
        "embed_all": parallel,
        "embed_volume_s": seconds,
        "embed_s_per_slice": seconds / vol.shape[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="probe", required=True)
    enc = sub.add_parser("encoder")
    enc.add_argument("model", nargs="?", default="hrmedsegsam")
    enc.add_argument("--rounds", type=int, default=5)
    enc.add_argument("--calls", type=int, default=3)
    dec = sub.add_parser("decode")
    dec.add_argument("--repeats", type=int, default=15)
    vol = sub.add_parser("volume")
    vol.add_argument("--sequential", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    if args.probe == "encoder":
        result = encoder(args.model, args.rounds, args.calls)
    elif args.probe == "decode":
        result = decode(args.repeats)
    else:
        result = volume(args.sequential)
    result["load_average_1min"] = [load, os.getloadavg()[0]]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
