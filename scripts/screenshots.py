"""Make the README screenshots of the napari widget from a real run.

Opens the synthetic CT sample (or ``--image PATH``) in napari with the HRMedSegSAM widget,
then does what a user does: a lasso around the liver -> preview -> Accept; a scribble on a
kidney -> Accept; Propagate all. Saves four screenshots of the whole window (canvas, layer
list, widget): the lasso, the scribble, Propagate all running and its result.

Run under a display (``xvfb-run -a python scripts/screenshots.py``); it needs the model
weights (``weights/hrmedsegsam.pt``) unless ``--random-weights`` is given, which is only
for checking that the script works (the masks are then meaningless: do not publish them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _wait(app, model, timeout: float = 1800.0) -> None:
    t0 = time.time()
    while model.busy and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)


def _save(viewer, app, path: Path) -> None:
    from PIL import Image

    for _ in range(10):
        app.processEvents()
        time.sleep(0.02)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(shot).save(path)
    print(f"wrote {path} ({shot.shape[1]}x{shot.shape[0]})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNG files")
    ap.add_argument("--model", default="hrmedsegsam", help="model name or weights path")
    ap.add_argument(
        "--random-weights", action="store_true", help="smoke test only: untrained model"
    )
    ap.add_argument("--size", type=int, nargs=2, default=(1500, 950), help="window width height")
    args = ap.parse_args(argv)

    import os
    import tempfile

    from hrmedsegsam.recovery import ENV

    # A recovery folder of its own: the user's autosaves would make the widget ask whether
    # to recover the sample (a dialog nobody answers here), and the run's must not stay.
    recovery = tempfile.TemporaryDirectory(prefix="hrmedsegsam-screenshots-")
    os.environ[ENV] = recovery.name

    from qtpy.QtWidgets import QApplication

    from hrmedsegsam.masks import bbox_xyxy, interior_point
    from hrmedsegsam.predictor import Predictor
    from napari_plugin._launch import open_viewer
    from napari_plugin._sample_data import make_ct_volume

    if args.random_weights:
        from hrmedsegsam.model.build import build_model

        predictor = Predictor(build_model("hrmedsegsam"))
    else:
        from hrmedsegsam.model.build import load_model

        predictor = Predictor(load_model(args.model))
    _, reference = make_ct_volume()  # the sample's organ map: where to put the prompts

    name = "hrmedsegsam (random weights)" if args.random_weights else args.model
    viewer, widget = open_viewer(None, show=True, predictor=predictor, model_name=name)
    app = QApplication.instance()
    viewer.window._qt_window.resize(*args.size)
    for _ in range(10):
        app.processEvents()
        time.sleep(0.02)
    viewer.reset_view()
    model = widget.model
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. a lasso drawn around the liver on the middle slice and a positive scribble on a
    #    kidney's slice: the preview of the liver
    z = reference.shape[0] // 2
    model.set_current_z(z)
    model.use_tool("lasso")
    liver = reference[z] == 1
    x0, y0, x1, y1 = bbox_xyxy(liver)
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2 + 4, (x1 - x0) / 2 + 4
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    ring = np.stack([np.full_like(t, z), cy + ry * np.sin(t), cx + rx * np.cos(t)], axis=1)
    model.strokes_layer.add([ring], shape_type="polygon")
    _wait(app, model)
    _save(viewer, app, args.out / "napari_lasso_prompt.png")
    model.rename(model.accept(), "liver")

    # 2. a scribble along the right kidney on its largest slice -> Accept
    zk = int(np.argmax((reference == 3).reshape(reference.shape[0], -1).sum(axis=1)))
    model.set_current_z(zk)
    model.use_tool("scribble")
    kidney = reference[zk] == 3
    px, py = interior_point(kidney)
    rows = np.flatnonzero(kidney[:, px])
    path = np.array([[zk, r, px] for r in np.linspace(rows.min() + 2, rows.max() - 2, 12)])
    model.strokes_layer.add([path], shape_type="path")
    _wait(app, model)
    _save(viewer, app, args.out / "napari_scribble_prompt.png")
    model.rename(model.accept(), "right kidney")
    _wait(app, model)

    # 3. Propagate all: both objects up and down the volume; a screenshot while it runs
    #    (progress bar, which object and slice) and one when it is done
    model.set_current_z(z)
    widget.volume.all_btn.click()
    t0 = time.time()
    shot = False
    while model.busy and time.time() - t0 < 3600:
        app.processEvents()
        time.sleep(0.02)
        bar = widget.progress
        if not shot and bar.isVisible() and bar.value() >= bar.maximum() // 3:
            _save(viewer, app, args.out / "napari_propagating.png")
            shot = True
    _wait(app, model)
    _save(viewer, app, args.out / "napari_propagated.png")
    print(model.status)
    for o in model.objects():
        print(f"  {o.id} {o.name}: slices {o.z_min}-{o.z_max}, {o.volume_ml:.1f} mL")
    model.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
