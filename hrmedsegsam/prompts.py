"""Prompts: the one bounds check every prompt goes through, and prompt files.

Prompts are pixel positions on a slice of ``(H, W)`` pixels, ``x`` = column, ``y`` = row,
continuous with pixel centres at integers: a position is on the slice when it lies in
``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` (:func:`inside_slice`). The Predictor, the annotation
session, the interactive core and the napari layers all check prompts with these functions.

Prompt files for ``hrmedsegsam segment``:

A prompts file is a JSON list of objects::

    [{"label": 1, "slice": 12, "box": [x0, y0, x1, y1], "points": [[x, y, 1], [x, y, 0]],
      "strokes": [{"scribble": [[x, y], [x, y], ...]},
                  {"lasso": [[x, y], [x, y], [x, y], ...], "negative": true}],
      "name": "liver"}]

``slice`` indexes axis 0 of the ``(z, y, x)`` array of :func:`hrmedsegsam.read_volume`;
``x`` is the pixel column and ``y`` the pixel row of that slice. ``box``, ``points`` and
``strokes`` are each optional, but the object needs a positive prompt: a box, a positive
point, or a positive scribble or lasso. A point's third value is 1 (positive, the default
when omitted) or 0 (negative). A stroke is a *scribble* (an open polyline of ``[x, y]``
vertices drawn over the object, or over what is not the object when ``"negative": true``)
or a *lasso* (a closed polygon of at least 3 vertices around the object, or around a part
to leave out when negative); ``negative`` is false when omitted. Strokes go through the
same translation as the widget's (:mod:`hrmedsegsam.scribble`): a stroke may run off the
slice (its part on the slice counts) but must have a part on it. ``name`` (optional) names
the object in sessions and exports. A file holds at most :data:`MAX_OBJECTS` objects, an
object at most :data:`MAX_POINTS` points (each scribble counts as the
:data:`~hrmedsegsam.scribble.SCRIBBLE_POINTS` points it may become) and
:data:`MAX_STROKES` strokes, a stroke at most :data:`~hrmedsegsam.scribble.MAX_VERTICES`
vertices, and the file at most :data:`MAX_FILE_BYTES`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrmedsegsam.errors import InputError, PromptError

if TYPE_CHECKING:
    from hrmedsegsam.session import Stroke

MAX_POINTS = 256
"""Most points one prediction takes: the decoder's attention over prompt tokens grows with
the square of their number (10,000 points asked for 25.6 GB)."""
MAX_OBJECTS = 1024
MAX_STROKES = 64
"""Most scribbles and lassos one object of a prompts file may have."""
MAX_FILE_BYTES = 16 << 20


def inside_slice(x: float, y: float, hw: tuple[int, int]) -> bool:
    """Whether pixel position ``(x, y)`` lies on a slice of ``hw = (H, W)``; NaN never does."""
    return bool(inside_slice_xy(np.array([[x, y]], dtype=float), hw)[0])


def inside_slice_xy(xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """:func:`inside_slice` for many positions: bool ``(N,)`` for ``xy`` ``(N, 2)`` of ``(x, y)``."""
    H, W = hw
    x, y = xy[:, 0], xy[:, 1]
    return (-0.5 <= x) & (x <= W - 0.5) & (-0.5 <= y) & (y <= H - 0.5)


def check_point(x: float, y: float, hw: tuple[int, int], what: str = "point") -> None:
    """Raise PromptError unless ``(x, y)`` (pixels) lies on a slice of ``hw = (H, W)``."""
    if not inside_slice(x, y, hw):
        H, W = hw
        raise PromptError(
            f"{what} ({x:g}, {y:g}) is outside the {W}x{H} slice: x must be in 0..{W - 1} and "
            f"y in 0..{H - 1}"
        )


def check_box(
    box: Sequence[float] | np.ndarray, hw: tuple[int, int], what: str = "box"
) -> tuple[float, float, float, float]:
    """A box ``[x0, y0, x1, y1]`` (pixels, corners in any order) checked against a slice of
    ``hw = (H, W)``; returns it with sorted corners ``(x0, y0, x1, y1)``, ``x0 < x1``.

    Raises:
        PromptError: not 4 numbers, a corner off the slice, or less than one pixel wide or
            high.
    """
    values = [float(v) for v in np.asarray(box, dtype=float).reshape(-1)]
    if len(values) != 4:
        raise PromptError(f"{what} needs 4 numbers [x0, y0, x1, y1], got {len(values)}")
    x0, x1 = sorted((values[0], values[2]))
    y0, y1 = sorted((values[1], values[3]))
    label = f"{what} [{', '.join(f'{v:g}' for v in values)}]"
    check_point(x0, y0, hw, f"{label}: corner")
    check_point(x1, y1, hw, f"{label}: corner")
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise PromptError(f"{label} is empty (less than one pixel wide or high)")
    return x0, y0, x1, y1


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's prompt on one slice (pixel coordinates, x = column, y = row).

    ``strokes``: its scribbles and lassos, each a :class:`~hrmedsegsam.session.Stroke` on
    slice ``slice`` with ``(x, y)`` vertices, in the file's order.
    """

    label: int
    slice: int
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()
    name: str | None = None
    strokes: tuple[Stroke, ...] = ()

    def check_against(self, shape_zyx: Sequence[int]) -> None:
        """Raise PromptError if the slice index or any coordinate lies outside the volume."""
        Z, H, W = shape_zyx
        where = f"object with label {self.label}"
        if not 0 <= self.slice < Z:
            raise PromptError(
                f"{where}: slice {self.slice} is out of range (the volume has slices 0..{Z - 1})"
            )

        if self.box is not None:
            check_box(self.box, (H, W), f"{where}: box")
        for x, y in self.points:
            check_point(x, y, (H, W), f"{where}: point")
        if self.strokes:
            from hrmedsegsam.scribble import check_stroke

            for i, stroke in enumerate(self.strokes):
                try:
                    check_stroke(stroke.vertices, (H, W), stroke.closed)
                except PromptError as exc:
                    raise PromptError(f"{where}: stroke #{i}: {exc}") from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PromptError(f"{what} must be a finite number, got {_short(value)}")
    return float(value)


def _integer(value: Any, what: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise PromptError(f"{what} must be an integer, got {_short(value)}")
    return int(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_prompts(data: Any, source: str = "prompts") -> list[ObjectPrompt]:
    """Validate decoded JSON ``data`` (see module docstring) into ObjectPrompts."""
    from hrmedsegsam.scribble import SCRIBBLE_POINTS

    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise PromptError(f"{source}: expected a non-empty JSON list of prompt objects")
    if len(data) > MAX_OBJECTS:
        raise PromptError(
            f"{source}: {len(data)} objects; at most {MAX_OBJECTS} are allowed in one file"
        )
    out: list[ObjectPrompt] = []
    for i, item in enumerate(data):
        where = f"{source}: object #{i}"
        if not isinstance(item, dict):
            raise PromptError(f"{where} is not a JSON object")
        unknown = set(item) - {"label", "slice", "box", "points", "strokes", "name"}
        if unknown:
            raise PromptError(f"{where} has unknown fields {sorted(unknown)}")
        for field in ("label", "slice"):
            if field not in item:
                raise PromptError(f"{where} is missing the field '{field}'")
        label = _integer(item["label"], f"{where} 'label'")
        if not 1 <= label <= 65535:
            raise PromptError(f"{where} 'label' must be between 1 and 65535, got {label}")
        z = _integer(item["slice"], f"{where} 'slice'")
        box: tuple[float, float, float, float] | None = None
        if item.get("box") is not None:
            b = item["box"]
            if not isinstance(b, list) or len(b) != 4:
                raise PromptError(f"{where} 'box' must be [x0, y0, x1, y1], got {_short(b)}")
            x0, y0, x1, y1 = (_number(v, f"{where} box value") for v in b)
            box = (x0, y0, x1, y1)
        pts: list[tuple[float, float]] = []
        plabels: list[int] = []
        points = item.get("points")
        if points is None:
            points = []
        if not isinstance(points, list):
            raise PromptError(
                f"{where} 'points' must be a list of [x, y] or [x, y, 1|0], got {_short(points)}"
            )
        if len(points) > MAX_POINTS:
            raise PromptError(
                f"{where} has {len(points)} points; at most {MAX_POINTS} are allowed per object"
            )
        for p in points:
            if not isinstance(p, list) or len(p) not in (2, 3):
                raise PromptError(
                    f"{where}: each point must be [x, y] or [x, y, 1|0], got {_short(p)}"
                )
            pts.append((_number(p[0], f"{where} point x"), _number(p[1], f"{where} point y")))
            lab = _integer(p[2], f"{where} point label") if len(p) == 3 else 1
            if lab not in (0, 1):
                raise PromptError(
                    f"{where}: a point's label must be 1 (positive) or 0 (negative), got {lab}"
                )
            plabels.append(lab)
        strokes = _strokes(item.get("strokes"), z, where)
        scribbles = sum(not s.closed for s in strokes)
        if len(pts) + SCRIBBLE_POINTS * scribbles > MAX_POINTS:
            raise PromptError(
                f"{where}: its {len(pts)} points and {scribbles} scribbles give up to "
                f"{len(pts) + SCRIBBLE_POINTS * scribbles} points; at most {MAX_POINTS} are "
                "allowed per object"
            )
        if box is None and not pts and not strokes:
            raise PromptError(f"{where} needs a 'box', 'points' or 'strokes'")
        if box is None and 1 not in plabels and not any(s.positive for s in strokes):
            raise PromptError(
                f"{where} has only negative prompts; add a box, a positive point or a "
                "positive stroke"
            )
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 256):
            raise PromptError(
                f"{where} 'name' must be a non-empty string of at most 256 characters"
            )
        out.append(ObjectPrompt(label, z, box, tuple(pts), tuple(plabels), name, strokes))
    return out


def _strokes(data: Any, z: int, where: str) -> tuple[Stroke, ...]:
    """An object's ``"strokes"`` (see the module docstring) as Strokes on slice ``z``;
    their geometry (a lasso's 3 vertices, a part on the slice) is checked against the slice
    later, by :func:`hrmedsegsam.scribble.check_stroke` (:meth:`ObjectPrompt.check_against`).
    """
    from hrmedsegsam.scribble import MAX_VERTICES
    from hrmedsegsam.session import Stroke

    if data is None:
        return ()
    shape = '{"scribble": [[x, y], ...]} or {"lasso": [[x, y], ...]}'
    if not isinstance(data, list):
        raise PromptError(f"{where} 'strokes' must be a list of {shape}, got {_short(data)}")
    if len(data) > MAX_STROKES:
        raise PromptError(
            f"{where} has {len(data)} strokes; at most {MAX_STROKES} are allowed per object"
        )
    out: list[Stroke] = []
    for i, item in enumerate(data):
        what = f"{where} stroke #{i}"
        if not isinstance(item, dict):
            raise PromptError(f"{what} must be {shape}, got {_short(item)}")
        kinds = [k for k in ("scribble", "lasso") if k in item]
        unknown = set(item) - {"scribble", "lasso", "negative"}
        if unknown:
            raise PromptError(f"{what} has unknown fields {sorted(unknown)}")
        if len(kinds) != 1:
            raise PromptError(f"{what} needs exactly one of 'scribble' or 'lasso'")
        kind = kinds[0]
        negative = item.get("negative", False)
        if not isinstance(negative, bool):
            raise PromptError(f"{what} 'negative' must be true or false, got {_short(negative)}")
        vertices = item[kind]
        if not isinstance(vertices, list) or not vertices:
            raise PromptError(
                f"{what} '{kind}' must be a non-empty list of [x, y], got {_short(vertices)}"
            )
        if len(vertices) > MAX_VERTICES:
            raise PromptError(
                f"{what} has {len(vertices)} vertices; at most {MAX_VERTICES} are allowed"
            )
        xy: list[tuple[float, float]] = []
        for v in vertices:
            if not isinstance(v, list) or len(v) != 2:
                raise PromptError(f"{what}: each vertex must be [x, y], got {_short(v)}")
            xy.append((_number(v[0], f"{what} vertex x"), _number(v[1], f"{what} vertex y")))
        out.append(Stroke(z, tuple(xy), not negative, kind == "lasso"))
    return tuple(out)


def load_prompts(path: str | Path) -> list[ObjectPrompt]:
    """Read and validate a prompts JSON file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"prompts file {p} does not exist")
    if not p.is_file():
        raise InputError(f"prompts file {p} is not a regular file")
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise PromptError(f"prompts file {p} is larger than {MAX_FILE_BYTES >> 20} MB")
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"prompts file {p} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise PromptError(f"prompts file {p} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptError(f"prompts file {p} is not valid JSON ({exc})") from None
    except (
        ValueError,
        RecursionError,
    ) as exc:  # e.g. a 5000-digit number, arrays nested 100,000 deep
        raise PromptError(
            f"prompts file {p} is not usable JSON ({str(exc).splitlines()[0][:80]})"
        ) from None
    return parse_prompts(data, str(p))
