"""Make the README screenshots of the napari widget from a real run.

Opens the synthetic CT sample (or ``--image PATH``) in napari with the HRMedSegSAM widget,
then does what a user does: a box around the liver -> preview -> Propagate; a point on a
kidney -> Accept. Saves three screenshots of the whole window (canvas, layer list, widget).

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

    # 1. a box around the liver on the middle slice -> the preview
    z = reference.shape[0] // 2
    model.set_current_z(z)
    x0, y0, x1, y1 = bbox_xyxy(reference[z] == 1)
    corners = [[y0 - 2, x0 - 2], [y0 - 2, x1 + 2], [y1 + 2, x1 + 2], [y1 + 2, x0 - 2]]
    model.box_layer.add_rectangles(np.array([[z] + c for c in corners], dtype=float))
    _wait(app, model)
    _save(viewer, app, args.out / "napari_box_prompt.png")

    # 2. propagate the liver through the volume
    model.propagate()
    _wait(app, model)
    _save(viewer, app, args.out / "napari_propagated.png")

    # 3. a box and a positive point on the right kidney -> Accept -> two objects in the list
    zk = int(np.argmax((reference == 3).reshape(reference.shape[0], -1).sum(axis=1)))
    model.set_current_z(zk)
    x0, y0, x1, y1 = bbox_xyxy(reference[zk] == 3)
    corners = [[y0 - 2, x0 - 2], [y0 - 2, x1 + 2], [y1 + 2, x1 + 2], [y1 + 2, x0 - 2]]
    model.box_layer.add_rectangles(np.array([[zk] + c for c in corners], dtype=float))
    px, py = interior_point(reference[zk] == 3)
    model.points_layer.add([[zk, py, px]])
    _wait(app, model)
    model.rename(1, "liver")
    model.accept()
    model.rename(2, "right kidney")
    _wait(app, model)
    _save(viewer, app, args.out / "napari_objects.png")
    print(model.status)
    for o in model.objects():
        print(f"  {o.id} {o.name}: slices {o.z_min}-{o.z_max}, {o.volume_ml:.1f} mL")
    model.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
