"""The napari layers the annotator adds next to an image, and their prompt <-> layer mapping.

All of them share the image layer's transforms, so their *data* coordinates are the
image's voxel indices ``(z, row, col)`` (``(row, col)`` for a 2D image) while they are drawn
in millimetres. A napari point at data ``(z, row, col)`` is the prompt ``x = col, y = row``
on slice ``z`` (DESIGN §5). The strokes layer holds scribbles (napari ``path`` shapes) and
lassos (``polygon`` shapes), each with a ``positive`` feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hrmedsegsam.errors import PromptError
from hrmedsegsam.prompts import inside_slice
from hrmedsegsam.scribble import check_stroke
from hrmedsegsam.session import Box, Point, PromptState, Stroke
from napari_plugin._geometry import same_transform_kwargs

ROLE_KEY = "hrmedsegsam_role"
POSITIVE_COLOR = "#39ff14"
NEGATIVE_COLOR = "#ff2d55"
BOX_COLOR = "#ffb000"
PREVIEW_COLOR = "#00e5ff"


def role(layer: Any) -> str | None:
    """``"preview"``, ``"points"``, ``"box"``, ``"strokes"`` for the annotator's helper
    layers, else None.
    """
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


def make_strokes_layer(viewer: Any, image_layer: Any, name: str = "prompts: strokes") -> Any:
    """A Shapes layer for scribbles (``add_path``) and lassos (``add_polygon_lasso``)."""
    ndim = np.asarray(image_layer.data).ndim
    layer = viewer.add_shapes(
        ndim=ndim,
        name=name,
        features={"positive": np.zeros(0, dtype=bool)},
        edge_color=POSITIVE_COLOR,
        face_color="transparent",
        edge_width=max(1.0, point_size(image_layer) / 4.0),
        metadata={ROLE_KEY: "strokes"},
        **same_transform_kwargs(image_layer),
    )
    layer.feature_defaults["positive"] = True
    return layer


def set_stroke_polarity(strokes_layer: Any, negative: bool) -> None:
    """New strokes are negative (``True``) or positive, drawn in that colour; strokes
    already drawn keep theirs (the selection is dropped first, as for points).
    """
    strokes_layer.selected_data = set()
    strokes_layer.feature_defaults["positive"] = not negative
    strokes_layer.current_edge_color = NEGATIVE_COLOR if negative else POSITIVE_COLOR


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
    points_layer: Any,
    box_layer: Any,
    shape_zyx: tuple[int, int, int],
    object_id: int | None,
    strokes_layer: Any = None,
) -> tuple[PromptState, int]:
    """The prompts the layers show; also how many were outside the image (dropped).

    Strokes partly off the slice are kept (the library clips them); a stroke with nothing
    on the slice is dropped, as is one on a slice outside the volume.
    """
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
    strokes, lost = strokes_from_layer(strokes_layer, shape_zyx)
    return PromptState(tuple(points), kept, object_id, strokes), dropped + lost


def strokes_from_layer(
    layer: Any, shape_zyx: tuple[int, int, int]
) -> tuple[tuple[Stroke, ...], int]:
    """The scribbles (paths) and lassos (polygons) of the strokes layer, and how many
    were dropped (nothing on the slice: :func:`hrmedsegsam.scribble.check_stroke`).
    """
    if layer is None or not len(layer.data):
        return (), 0
    nz, h, w = shape_zyx
    positive = np.asarray(layer.features["positive"], dtype=bool)
    strokes: list[Stroke] = []
    dropped = 0
    for verts, kind, pos in zip(layer.data, layer.shape_type, positive, strict=True):
        verts = np.asarray(verts, dtype=float)
        if kind not in ("path", "polygon") or verts.size == 0:
            continue
        z = int(round(verts[0, 0])) if verts.shape[1] == 3 else 0
        xy = verts[:, [-1, -2]]
        try:
            if not 0 <= z < nz:
                raise PromptError(f"slice {z} is outside the volume")
            check_stroke(xy, (h, w), closed=kind == "polygon")
        except PromptError:
            dropped += 1
            continue
        strokes.append(Stroke(z, tuple(map(tuple, xy.tolist())), bool(pos), kind == "polygon"))
    return tuple(strokes), dropped


def show_state(
    points_layer: Any, box_layer: Any, state: PromptState, ndim: int, strokes_layer: Any = None
) -> None:
    """Makes the layers show ``state``'s points, boxes and strokes (callers guard against
    re-entry).
    """
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
    if strokes_layer is not None:
        show_strokes(strokes_layer, state.strokes, ndim)


def show_strokes(layer: Any, strokes: tuple[Stroke, ...], ndim: int) -> None:
    """Makes the strokes layer show ``strokes`` in their polarity's colour."""
    default = bool(layer.feature_defaults["positive"].iloc[0])
    color = layer.current_edge_color
    layer.selected_data = set()
    layer.data = []
    if strokes:
        data = [
            np.array([([s.z] if ndim == 3 else []) + [y, x] for x, y in s.vertices], dtype=float)
            for s in strokes
        ]
        layer.add(
            data,
            shape_type=["polygon" if s.closed else "path" for s in strokes],
            edge_color=[POSITIVE_COLOR if s.positive else NEGATIVE_COLOR for s in strokes],
            face_color="transparent",
        )
        layer.features = {"positive": np.array([s.positive for s in strokes], dtype=bool)}
    layer.feature_defaults["positive"] = default
    layer.current_edge_color = color
