"""Prompt-to-preview latency through the napari widget, against the library on the same slice.

Opens a synthetic CT (``--size`` pixels square, ``--slices`` slices) in napari with the
HRMedSegSAM widget, embeds one slice, then draws ``--n`` box prompts on it the way a user
does (a mouse drag in the box layer's rectangle mode through napari's own mouse callbacks,
the canvas redrawn between moves) and times each from the mouse release, which emits the
shapes event, to the preview being written and refreshed. ``--add-rectangles`` adds each
box with ``Shapes.add_rectangles`` instead (no drag: napari then also draws the new shape
for the first time inside the timed interval). The same boxes go through
``Predictor.predict`` for the library's time. Prints medians and where the widget's time
goes: main-thread prompt handling, the model (its CPU time, and on Linux the time it was
runnable but waited for a CPU; run inside the shapes event on the UI thread when the
compute thread was idle, else in the compute thread), the hand-offs between threads,
drawing the preview.

Run under a display: ``xvfb-run -a python scripts/latency.py [--random-weights]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=6)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--random-weights", action="store_true", help="a randomly initialised model")
    ap.add_argument(
        "--add-rectangles",
        action="store_true",
        help="add each box with Shapes.add_rectangles instead of a simulated mouse drag",
    )
    args = ap.parse_args()

    import os
    import tempfile
    import threading

    from hrmedsegsam.recovery import ENV

    # Its own recovery folder: a user's autosave of this image would open a recovery dialog.
    recovery = tempfile.TemporaryDirectory(prefix="hrmedsegsam-latency-")
    os.environ[ENV] = recovery.name

    import napari
    import torch
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from hrmedsegsam import Predictor, load_model
    from hrmedsegsam.interactive import InteractiveAnnotation
    from hrmedsegsam.model.build import build_model
    from napari_plugin import _preview_sync
    from napari_plugin._reader import image_layer_data
    from napari_plugin._sample_data import make_ct_volume
    from napari_plugin._widget import AnnotatorWidget

    spent: dict[str, list[float]] = defaultdict(list)

    def timed(owner, name, label):
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label].append(time.perf_counter() - t)

        setattr(owner, name, wrapper)

    from napari_plugin import _prompt_layers

    timed(
        _preview_sync.PreviewSync,
        "predict",
        "  of which: request + submit (+ decode and refresh if inline)",
    )
    timed(_prompt_layers, "recolor_points", "  of which: recolour the points")
    timed(_prompt_layers, "state_from_layers", "  of which: read the prompts from the layers")
    torch.manual_seed(0)
    model = build_model("hrmedsegsam") if args.random_weights else load_model()
    predictor = Predictor(model, torch.device("cpu"))
    vol, _ = make_ct_volume((args.slices, args.size, args.size))
    viewer = napari.Viewer(show=True)
    data, kwargs, _ = image_layer_data(vol, name="ct")
    viewer.add_image(data, **kwargs)
    widget = AnnotatorWidget(viewer, predictor=predictor, prefetch_radius=0)
    viewer.window.add_dock_widget(widget)
    app = QApplication.instance()
    m = widget.model
    z = args.slices // 2
    m.set_current_z(z)
    m.core.embed(z)
    c = args.size // 2
    boxes = [
        [c - 120 + i, c - 90, c + 60 + i, c + 80] for i in range(args.n + 1)
    ]  # the first warms up

    timed(InteractiveAnnotation, "compute", "model (decode)")
    decode = InteractiveAnnotation.compute

    def compute_accounted(self, request):
        cpu, waited = time.thread_time(), _runqueue_wait_s()
        on_ui_thread.append(threading.current_thread() is threading.main_thread())
        try:
            return decode(self, request)
        finally:
            spent["  of which: on a CPU"].append(time.thread_time() - cpu)
            if waited is not None:
                spent["  of which: runnable, waiting for a CPU"].append(_runqueue_wait_s() - waited)

    on_ui_thread: list[bool] = []
    InteractiveAnnotation.compute = compute_accounted
    timed(_preview_sync.PreviewSync, "_on_shown", "main: preview refresh + status")
    shown: list[float] = []
    loop = QEventLoop()
    guard = QTimer(singleShot=True, interval=60_000)  # never wait forever
    guard.timeout.connect(loop.quit)
    on_shown = _preview_sync.PreviewSync._on_shown

    def record(self, zz, pred):
        on_shown(self, zz, pred)
        if pred is not None:
            shown.append(time.perf_counter())
            loop.quit()

    _preview_sync.PreviewSync._on_shown = record

    widget_ms = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m.next_object()
        for _ in range(5):
            app.processEvents()
        if args.add_rectangles:
            rect = np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float)
            t0 = time.perf_counter()
            m.box_layer.add_rectangles(rect)  # emits the shapes event; the prompt is handled in it
        else:
            t0 = _drag_box(m.box_layer, viewer, app, z, (x0, y0, x1, y1))
        queued = time.perf_counter()
        if len(shown) == i:  # not shown inside the shapes event: wait for the compute thread
            guard.start()
            loop.exec()  # the UI thread idles in its event loop, as in napari
        spent["main: the shapes event (napari + our handler)"].append(queued - t0)
        widget_ms.append((shown[-1] - t0) * 1000)
        if i == 0:
            spent.clear()  # the first one warms up the decoder cache
            widget_ms.clear()
            on_ui_thread.clear()

    predictor.set_image(vol.array[z], m.core.window, key=m.core.embedding_key(z))
    lib_ms = []
    for box in boxes:
        t = time.perf_counter()
        predictor.predict(box=box)
        lib_ms.append((time.perf_counter() - t) * 1000)

    med = statistics.median
    print(f"slice {args.size}x{args.size}, {len(widget_ms)} box prompts on an embedded slice")
    print(f"widget: shapes event -> preview shown, median {med(widget_ms):.1f} ms")
    print(f"library: Predictor.predict(box), median {med(lib_ms):.1f} ms")
    inline = sum(on_ui_thread) > len(on_ui_thread) / 2
    print(f"the decode ran on the UI thread for {sum(on_ui_thread)} of {len(on_ui_thread)} boxes")
    # inline, the decode and the refresh are part of the shapes event: indented under it
    sub = "  " if inline else ""
    order = [
        ("", "main: the shapes event (napari + our handler)"),
        ("", "  of which: read the prompts from the layers"),
        ("", "  of which: recolour the points"),
        ("", "  of which: request + submit (+ decode and refresh if inline)"),
        (sub, "model (decode)"),
        (sub, "  of which: on a CPU"),
        (sub, "  of which: runnable, waiting for a CPU"),
        (sub, "main: preview refresh + status"),
    ]
    accounted = 0.0
    for indent, label in order:
        if not spent[label]:
            continue
        ms = med(spent[label]) * 1000
        accounted += 0.0 if (indent + label).startswith("  ") else ms
        print(f"  {indent}{label}: median {ms:.1f} ms")
    print(f"  thread hand-offs and event loop (the rest): {med(widget_ms) - accounted:.1f} ms")
    m.close()
    viewer.close()


def _drag_box(layer, viewer, app, z: int, box: tuple[float, float, float, float]) -> float:
    """Drags box ``(x0, y0, x1, y1)`` (pixels of slice ``z``) in ``layer``'s rectangle mode
    with napari's mouse callbacks, letting the canvas redraw between moves as it does for a
    user; returns ``time.perf_counter()`` just before the release (the shapes event).
    """
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    viewer.layers.selection.active = layer
    layer.mode = "add_rectangle"
    x0, y0, x1, y1 = box

    def event(kind: str, i: int, f: float):
        zyx = np.array([z, y0 + (y1 - y0) * f, x0 + (x1 - x0) * f], float)
        return read_only_mouse_event(
            type=kind,
            is_dragging=kind != "mouse_press",
            position=layer.data_to_world(zyx),
            pos=np.array([20.0 * i, 0.0]),  # screen pixels
            view_direction=None,
            dims_displayed=[1, 2],
            modifiers=(),
        )

    mouse_press_callbacks(layer, event("mouse_press", 0, 0.0))
    for i in range(1, 6):
        mouse_move_callbacks(layer, event("mouse_move", i, i / 5))
        for _ in range(3):
            app.processEvents()
    t0 = time.perf_counter()
    mouse_release_callbacks(layer, event("mouse_release", 6, 1.0))
    return t0


def _runqueue_wait_s() -> float | None:
    """Seconds the calling thread has spent runnable but not running (Linux schedstat)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


if __name__ == "__main__":
    main()
