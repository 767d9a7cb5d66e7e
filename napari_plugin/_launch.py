"""``hrmedsegsam napari [PATH]``: napari with the annotation widget docked and an image open.

The plugin offers this command to the library's CLI through the ``hrmedsegsam.commands``
entry point (:func:`register_command`), so the CLI never imports this package.

The image is ``PATH`` (read by this plugin's reader) or, without a path, the synthetic CT
sample. Returns a process exit code: 0 after the viewer is closed, 2 when ``PATH`` cannot
be read (the message is printed, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def open_viewer(
    path: str | None = None,
    show: bool = True,
    predictor: Any = None,
    prefetch_radius: int = 2,
    model_name: str = "custom",
) -> tuple[Any, Any]:
    """Creates the viewer, opens ``path`` (or the CT sample), docks the widget.

    Without ``predictor`` the widget loads the default model itself (in its compute thread);
    with one (scripts, tests), ``model_name`` is what the widget shows for it.

    Returns ``(viewer, widget)``. Raises ``HRMedSegSAMError`` if ``path`` is unreadable.
    """
    import napari

    from hrmedsegsam.errors import InputError
    from hrmedsegsam.io import read_volume
    from napari_plugin._reader import image_layer_data, looks_like_labels
    from napari_plugin._sample_data import ct_sample
    from napari_plugin._widget import AnnotatorWidget

    if path is not None:
        vol = read_volume(path)  # raises InputError with a one-line message
        if looks_like_labels(vol):
            raise InputError(f"{path} looks like a label map; open the image it belongs to first.")
        layers = [image_layer_data(vol)]
    else:
        layers = ct_sample()
    viewer = napari.Viewer(show=show, title="HRMedSegSAM")
    for data, kwargs, _ in layers:
        viewer.add_image(data, **kwargs)
    widget = AnnotatorWidget(viewer, predictor, prefetch_radius, model_name)
    viewer.window.add_dock_widget(widget, name="HRMedSegSAM", area="right")
    if viewer.dims.ndim == 3:  # start in the middle of the volume
        viewer.dims.axis_labels = ("z", "y", "x")
        viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)
    return viewer, widget


def launch(path: str | None = None) -> int:
    """Opens napari as described in the module docstring and runs it until closed."""
    from hrmedsegsam.errors import HRMedSegSAMError

    try:
        import napari
    except ImportError as exc:  # pragma: no cover - depends on the installation
        print(
            f"napari is not installed ({exc}); pip install 'hrmedsegsam[napari]'", file=sys.stderr
        )
        return 2
    try:
        open_viewer(path)
    except HRMedSegSAMError as exc:
        print(f"hrmedsegsam napari: {exc}", file=sys.stderr)
        return 2
    napari.run()
    return 0


def register_command(sub: argparse._SubParsersAction) -> None:
    """Adds ``napari [PATH]`` to the ``hrmedsegsam`` command line (entry point target)."""
    p = sub.add_parser(
        "napari", help="open napari with the annotation widget (and PATH, or the CT sample)"
    )
    p.add_argument("path", nargs="?", default=None)
    p.set_defaults(func=lambda args: launch(args.path))
