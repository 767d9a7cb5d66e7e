"""The napari layers the annotator adds next to an image, and their prompt <-> layer mapping.

All of them share the image layer's transforms, so their *data* coordinates are the
image's voxel indices ``(z, row, col)`` (``(row, col)`` for a 2D image) while they are drawn
in millimetres. A napari point at data ``(z, row, col)`` is the prompt ``x = col, y = row``
on slice ``z`` (DESIGN §5).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hrmedsegsam.prompts import inside_slice
from hrmedsegsam.session import Box, Point, PromptState
from napari_plugin._geometry import same_transform_kwargs

ROLE_KEY = "hrmedsegsam_role"
POSITIVE_COLOR = "#39ff14"
NEGATIVE_COLOR = "#ff2d55"
BOX_COLOR = "#ffb000"
PREVIEW_COLOR = "#00e5ff"


def role(layer: Any) -> str | None:
    """``"preview"``, ``"points"``, ``"box"`` for the annotator's helper layers, else None."""
    meta = getattr(layer, "metadata", None)
    return meta.get(ROLE_KEY) if isinstance(meta, dict) else None


def point_size(image_layer: Any) -> float:
    """A point diameter (in data pixels) visible at any zoom: about 1/60 of the slice."""
    h, w = np.asarray(image_layer.data).shape[-2:]
    return float(max(3.0, max(h, w) / 60.0))


def make_preview_layer(viewer: Any, image_layer: Any, name: str = "current object") -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    shape = np.asarray(image_layer.data).shape
    return viewer.add_labels(
        np.zeros(shape, dtype=np.uint8),
        name=name,
        opacity=0.55,
        colormap=DirectLabelColormap(
            color_dict={None: "transparent", 0: "transparent", 1: PREVIEW_COLOR}
        ),
        metadata={ROLE_KEY: "preview"},
        **same_transform_kwargs(image_layer),
    )


def make_points_layer(viewer: Any, image_layer: Any, name: str = "prompts: points") -> Any:
    ndim = np.asarray(image_layer.data).ndim
    layer = viewer.add_points(
        np.zeros((0, ndim)),
        ndim=ndim,
        name=name,
        features={"positive": np.zeros(0, dtype=bool)},
        size=point_size(image_layer),
        face_color=POSITIVE_COLOR,
        border_color="black",
        metadata={ROLE_KEY: "points"},
        **same_transform_kwargs(image_layer),
    )
    layer.feature_defaults["positive"] = True
    layer.mode = "add"
    return layer


def make_box_layer(viewer: Any, image_layer: Any, name: str = "prompts: box") -> Any:
    ndim = np.asarray(image_layer.data).ndim
    layer = viewer.add_shapes(
        ndim=ndim,
        name=name,
        edge_color=BOX_COLOR,
        face_color="transparent",
        edge_width=max(1.0, point_size(image_layer) / 4.0),
        metadata={ROLE_KEY: "box"},
        **same_transform_kwargs(image_layer),
    )
    layer.mode = "add_rectangle"
    return layer


def set_negative_mode(points_layer: Any, negative: bool) -> None:
    """New points are negative (``True``) or positive, and are drawn in that colour.

    Placed points keep their polarity and colour: napari applies ``current_face_color``
    to the selected points, so the selection is dropped first.
    """
    points_layer.selected_data = set()
    points_layer.feature_defaults["positive"] = not negative
    points_layer.current_face_color = NEGATIVE_COLOR if negative else POSITIVE_COLOR


def recolor_points(points_layer: Any) -> None:
    positive = np.asarray(points_layer.features["positive"], dtype=bool)
    if positive.size:
        colors = np.where(positive[:, None], _rgba(POSITIVE_COLOR), _rgba(NEGATIVE_COLOR))
        points_layer.face_color = colors


def _rgba(color: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(color)[0]


def state_from_layers(
    points_layer: Any, box_layer: Any, shape_zyx: tuple[int, int, int], object_id: int | None
) -> tuple[PromptState, int]:
    """The prompts the layers show; also how many were outside the image (dropped)."""
    nz, h, w = shape_zyx
    dropped = 0
    points: list[Point] = []
    data = np.asarray(points_layer.data, dtype=float)
    positive = np.asarray(points_layer.features["positive"], dtype=bool) if len(data) else []
    for row, pos in zip(data, positive, strict=True):
        z = int(round(row[0])) if data.shape[1] == 3 else 0
        y, x = float(row[-2]), float(row[-1])
        if not (0 <= z < nz and inside_slice(x, y, (h, w))):
            dropped += 1
            continue
        points.append(Point(z, x, y, bool(pos)))
    boxes: list[Box] = []
    for verts, kind in zip(box_layer.data, box_layer.shape_type, strict=True):
        verts = np.asarray(verts, dtype=float)
        if kind != "rectangle" or verts.size == 0:
            continue
        z = int(round(verts[0, 0])) if verts.shape[1] == 3 else 0
        ys = np.clip(verts[:, -2], -0.5, h - 0.5)
        xs = np.clip(verts[:, -1], -0.5, w - 0.5)
        if not 0 <= z < nz or xs.max() - xs.min() < 1 or ys.max() - ys.min() < 1:
            dropped += 1
            continue
        boxes.append(
            Box.from_corners(z, float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
        )
    # one box per slice: the last one drawn
    last: dict[int, Box] = {}
    for b in boxes:
        last[b.z] = b
    kept = tuple(b for b in boxes if last[b.z] is b)
    return PromptState(tuple(points), kept, object_id), dropped


def show_state(points_layer: Any, box_layer: Any, state: PromptState, ndim: int) -> None:
    """Makes the layers show ``state``'s points and boxes (callers guard against re-entry)."""
    if state.points:
        rows = [([p.z] if ndim == 3 else []) + [p.y, p.x] for p in state.points]
        positive = np.array([p.positive for p in state.points], dtype=bool)
    else:
        rows, positive = np.zeros((0, ndim)), np.zeros(0, dtype=bool)
    default = points_layer.feature_defaults["positive"].iloc[0]
    points_layer.selected_data = set()  # a selection left on removed points breaks napari
    points_layer.data = np.asarray(rows, dtype=float).reshape(-1, ndim)
    points_layer.features = {"positive": positive}
    points_layer.feature_defaults["positive"] = bool(default)
    recolor_points(points_layer)
    rects = []
    for b in state.boxes:
        corners = [(b.y0, b.x0), (b.y0, b.x1), (b.y1, b.x1), (b.y1, b.x0)]
        rects.append(
            np.array([([b.z] if ndim == 3 else []) + [y, x] for y, x in corners], dtype=float)
        )
    box_layer.data = []
    if rects:
        box_layer.add_rectangles(rects, edge_color=BOX_COLOR, face_color="transparent")
