"""Prompt files for ``hrmedsegsam segment``: parsing and validation.

A prompts file is a JSON list of objects::

    [{"label": 1, "slice": 12, "box": [x0, y0, x1, y1], "points": [[x, y, 1], [x, y, 0]]}]

``slice`` indexes axis 0 of the ``(z, y, x)`` array of :func:`hrmedsegsam.read_volume`;
``x`` is the pixel column and ``y`` the pixel row of that slice. ``box`` and ``points`` are
each optional but at least one is needed; a point's third value is 1 (positive, the
default when omitted) or 0 (negative).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrmedsegsam.errors import InputError, PromptError


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's prompt on one slice (pixel coordinates, x = column, y = row)."""

    label: int
    slice: int
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()

    def check_against(self, shape_zyx: Sequence[int]) -> None:
        """Raise PromptError if the slice index or any coordinate lies outside the volume."""
        Z, H, W = shape_zyx
        where = f"object with label {self.label}"
        if not 0 <= self.slice < Z:
            raise PromptError(f"{where}: slice {self.slice} is out of range (the volume has slices 0..{Z - 1})")

        def inside(x: float, y: float) -> bool:
            return -0.5 <= x <= W - 0.5 and -0.5 <= y <= H - 0.5

        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (inside(x0, y0) and inside(x1, y1)):
                raise PromptError(
                    f"{where}: box {list(self.box)} is outside the slice (x in 0..{W - 1}, y in 0..{H - 1})"
                )
            if abs(x1 - x0) < 1 or abs(y1 - y0) < 1:
                raise PromptError(f"{where}: box {list(self.box)} is empty")
        for x, y in self.points:
            if not inside(x, y):
                raise PromptError(
                    f"{where}: point [{x:g}, {y:g}] is outside the slice (x in 0..{W - 1}, y in 0..{H - 1})"
                )


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PromptError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise PromptError(f"{what} must be an integer, got {value!r}")
    return int(value)


def parse_prompts(data: Any, source: str = "prompts") -> list[ObjectPrompt]:
    """Validate decoded JSON ``data`` (see module docstring) into ObjectPrompts."""
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise PromptError(f"{source}: expected a non-empty JSON list of prompt objects")
    out: list[ObjectPrompt] = []
    for i, item in enumerate(data):
        where = f"{source}: object #{i}"
        if not isinstance(item, dict):
            raise PromptError(f"{where} is not a JSON object")
        unknown = set(item) - {"label", "slice", "box", "points", "name"}
        if unknown:
            raise PromptError(f"{where} has unknown fields {sorted(unknown)}")
        for field in ("label", "slice"):
            if field not in item:
                raise PromptError(f"{where} is missing the field '{field}'")
        label = _integer(item["label"], f"{where} 'label'")
        if not 1 <= label <= 65535:
            raise PromptError(f"{where} 'label' must be between 1 and 65535, got {label}")
        z = _integer(item["slice"], f"{where} 'slice'")
        box = None
        if item.get("box") is not None:
            b = item["box"]
            if not isinstance(b, list) or len(b) != 4:
                raise PromptError(f"{where} 'box' must be [x0, y0, x1, y1]")
            box = tuple(_number(v, f"{where} box value") for v in b)
        pts: list[tuple[float, float]] = []
        plabels: list[int] = []
        for p in item.get("points") or []:
            if not isinstance(p, list) or len(p) not in (2, 3):
                raise PromptError(f"{where}: each point must be [x, y] or [x, y, 1|0], got {p!r}")
            pts.append((_number(p[0], f"{where} point x"), _number(p[1], f"{where} point y")))
            lab = _integer(p[2], f"{where} point label") if len(p) == 3 else 1
            if lab not in (0, 1):
                raise PromptError(f"{where}: a point's label must be 1 (positive) or 0 (negative), got {lab}")
            plabels.append(lab)
        if box is None and not pts:
            raise PromptError(f"{where} needs a 'box' or 'points'")
        if box is None and 1 not in plabels:
            raise PromptError(f"{where} has only negative points; add a positive point or a box")
        out.append(ObjectPrompt(label, z, box, tuple(pts), tuple(plabels)))  # type: ignore[arg-type]
    return out


def load_prompts(path: str | Path) -> list[ObjectPrompt]:
    """Read and validate a prompts JSON file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"prompts file {p} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptError(f"prompts file {p} is not valid JSON ({exc})") from exc
    return parse_prompts(data, str(p))
