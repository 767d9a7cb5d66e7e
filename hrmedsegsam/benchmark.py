"""Speed and memory of the models on this machine (``hrmedsegsam benchmark``).

Each model is measured in its own child process so that its peak memory is its own.
Timings are medians over repeats after a warm-up. Speed targets live here, not in tests.
"""

from __future__ import annotations

import multiprocessing as mp
import platform
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hrmedsegsam.runtime import keep_freed_memory


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _synthetic_slice(size: int) -> np.ndarray:
    """A CT-like slice (HU) with a bright round object, ``(size, size)`` int16."""
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size), -1000, np.int16)
    img[(yy - size / 2) ** 2 / 0.16 + (xx - size / 2) ** 2 / 0.2 < (size / 2) ** 2] = 40
    r = size / 10
    img[(yy - 0.45 * size) ** 2 + (xx - 0.55 * size) ** 2 < r**2] = 180
    return img


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_model(name: str, repeats: int = 5, device: str | None = None) -> dict[str, Any]:
    """Measurements of one model: parameters, encoder s/slice, s/prompt, peak memory."""
    import torch

    from hrmedsegsam.model.build import (
        build_model,
        default_weights_path,
        load_model,
        resolve_device,
    )
    from hrmedsegsam.predictor import Predictor

    dev = resolve_device(device)
    tuned = keep_freed_memory()
    base_rss = _peak_rss_mb()
    weights = "trained"
    if name == "hrmedsegsam" and not default_weights_path().is_file():
        model = build_model(name).to(dev)
        weights = "random (no weights file; timings only)"
    else:
        model = load_model(name, dev)
    enc = sum(p.numel() for p in model.image_encoder.parameters())
    total = sum(p.numel() for p in model.parameters())
    S = model.image_size
    frame = torch.rand(1, 3, S, S, device=dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        def encode() -> None:
            model.encode(frame)
            sync()

        enc_s = _median_seconds(encode, repeats)
    pred = Predictor(model, dev)
    img = _synthetic_slice(512)
    pred.set_image(img, (-160, 240))
    box = [230, 180, 335, 285]

    def prompt_box() -> None:
        pred.predict(box=box)
        sync()

    def prompt_point() -> None:
        pred.predict(points=[[282, 230]], labels=[1])
        sync()

    box_s = _median_seconds(prompt_box, repeats * 2)
    point_s = _median_seconds(prompt_point, repeats * 2)
    big = _synthetic_slice(2048)
    pred.set_image(big, (-160, 240))
    big_s = _median_seconds(lambda: pred.predict(box=[4 * v for v in box]), max(2, repeats // 2))
    out: dict[str, Any] = {
        "model": name,
        "weights": weights,
        "device": str(dev),
        "input_size": S,
        "malloc_tuning": tuned,
        "params_total": total,
        "params_image_encoder": enc,
        "params_rest": total - enc,
        "encoder_s_per_slice": enc_s,
        "prompt_box_s_512": box_s,
        "prompt_point_s_512": point_s,
        "prompt_box_s_2048": big_s,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_increase_mb": _peak_rss_mb() - base_rss,
    }
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _child(name: str, repeats: int, device: str | None, queue: mp.Queue[Any]) -> None:
    try:
        queue.put(measure_model(name, repeats, device))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a result
        queue.put({"model": name, "error": f"{type(exc).__name__}: {exc}"})


def run_benchmark(models: list[str], repeats: int = 5, device: str | None = None,
                  threads: int | None = None) -> dict[str, Any]:
    """Measure each model in a child process; add ratios against LiteMedSAM when present."""
    import torch

    ctx = mp.get_context("spawn")
    results = []
    for name in models:
        queue: mp.Queue[Any] = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, repeats, device, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        },
        "models": results,
    }
    by = {r["model"]: r for r in results if "error" not in r}
    if "hrmedsegsam" in by and "litemedsam" in by:
        a, b = by["hrmedsegsam"], by["litemedsam"]
        report["ratios_litemedsam_over_hrmedsegsam"] = {
            "encoder_time": b["encoder_s_per_slice"] / a["encoder_s_per_slice"],
            "prompt_box_time_512": b["prompt_box_s_512"] / a["prompt_box_s_512"],
            "params_total": b["params_total"] / a["params_total"],
            "peak_rss_increase": b["peak_rss_increase_mb"] / max(a["peak_rss_increase_mb"], 1e-6),
        }
    return report


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table of :func:`run_benchmark`'s result."""
    rows = [
        ("weights", "weights", "{}"),
        ("input size", "input_size", "{}"),
        ("malloc keeps freed memory", "malloc_tuning", "{}"),
        ("parameters (total)", "params_total", "{:,}"),
        ("parameters (image encoder)", "params_image_encoder", "{:,}"),
        ("encoder s / slice", "encoder_s_per_slice", "{:.3f}"),
        ("box prompt s, 512x512 slice", "prompt_box_s_512", "{:.4f}"),
        ("point prompt s, 512x512 slice", "prompt_point_s_512", "{:.4f}"),
        ("box prompt s, 2048x2048 slice", "prompt_box_s_2048", "{:.4f}"),
        ("peak RSS MB (process)", "peak_rss_mb", "{:.0f}"),
        ("peak RSS increase MB (model)", "peak_rss_increase_mb", "{:.0f}"),
    ]
    models = report["models"]
    m = report["machine"]
    lines = [f"machine: {m['platform']}, torch {m['torch']}, {m['torch_threads']} threads, cuda={m['cuda']}"]
    width = max(len(r[0]) for r in rows)
    lines.append(" " * width + "  " + "  ".join(f"{r['model']:>14}" for r in models))
    for title, key, fmt in rows:
        cells = []
        for r in models:
            cells.append(f"{'error' if 'error' in r else fmt.format(r.get(key)):>14}")
        lines.append(f"{title:<{width}}  " + "  ".join(cells))
    for r in models:
        if "error" in r:
            lines.append(f"{r['model']}: {r['error']}")
    for k, v in report.get("ratios_litemedsam_over_hrmedsegsam", {}).items():
        lines.append(f"ratio LiteMedSAM / HRMedSegSAM, {k}: {v:.2f}x")
    return "\n".join(lines)
