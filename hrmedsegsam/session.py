"""Multi-object annotation session over one labels volume (no napari, no Qt, no torch).

An :class:`AnnotationSession` is the state that an interactive front end (the napari
widget, a notebook) edits while a user segments several objects in one image:

* ``labels``: the labels array, ``(z, y, x)`` integers (a 2D ``(y, x)`` array is treated
  as one slice). The session keeps a *reference* to the caller's array and edits it in
  place, so a viewer that shows the same array sees every commit, and edits the user
  makes directly in it (brush, eraser, fill) are part of the state too;
* each object's record (id -> :class:`ObjectInfo`: name, colour, and the prompts of its
  last commit, so a reopened or reloaded object can be refined from them), the current prompts (:class:`PromptState`) and the
  object being edited (a new one, or an accepted one that was reopened);
* an undo/redo history of prompt changes and label commits.

Commits only touch the pixels they need: the committed object's own pixels inside the
committed slices, and the mask's pixels (subject to the overwrite / keep-existing
policy). Each commit records the changed voxels as a sparse diff (flat indices, value
before, value after), so memory follows the size of the edit, not the volume, and the
history as a whole is capped in bytes and in entries (oldest dropped first). Undo puts a
voxel back only where it still holds the committed value, and redo re-applies it only
where it still holds the old value: brush/eraser edits made after a commit are never
overwritten by undo or redo.

Prompt coordinates follow the library convention (DESIGN §5): pixels of a slice,
``x`` = column, ``y`` = row; every prompt also carries its slice index ``z``.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hrmedsegsam.errors import HRMedSegSAMError, PromptError
from hrmedsegsam.prompts import check_point

__all__ = [
    "AnnotationSession",
    "PromptState",
    "Point",
    "Box",
    "Stroke",
    "ObjectSummary",
    "ObjectInfo",
    "LabelsDiff",
    "HistoryEntry",
]

#: default cap on the bytes the undo history may hold (diffs and prompt states)
DEFAULT_HISTORY_BYTES = 256 * 1024 * 1024
#: default cap on the number of undo steps
DEFAULT_HISTORY_STEPS = 200


@dataclass(frozen=True)
class Point:
    """One point prompt on slice ``z``: ``x`` = column, ``y`` = row, ``positive`` or not."""

    z: int
    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class Box:
    """One box prompt on slice ``z``: ``x0 <= x1`` columns, ``y0 <= y1`` rows (pixels)."""

    z: int
    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def from_corners(cls, z: int, xa: float, ya: float, xb: float, yb: float) -> Box:
        """A box from any two opposite corners."""
        return cls(int(z), min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))

    def as_list(self) -> list[float]:
        """``[x0, y0, x1, y1]``, the form ``Predictor.predict(box=...)`` takes."""
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class Stroke:
    """One scribble (``closed`` False: an open polyline) or lasso (``closed`` True: a
    polygon) on slice ``z``; ``vertices`` are ``(x, y)`` pixels (x = column, y = row), as
    drawn (parts off the slice are clipped when the stroke is used; see
    :mod:`hrmedsegsam.scribble`).
    """

    z: int
    vertices: tuple[tuple[float, float], ...]
    positive: bool = True
    closed: bool = False

    @property
    def kind(self) -> str:
        """``"lasso"`` or ``"scribble"``."""
        return "lasso" if self.closed else "scribble"

    def as_array(self) -> np.ndarray:
        """The vertices as a float ``(N, 2)`` array of ``(x, y)``."""
        return np.asarray(self.vertices, dtype=float).reshape(-1, 2)


@dataclass(frozen=True)
class PromptState:
    """What the user has prompted for the object being edited.

    ``object_id`` is ``None`` for a new object, or the id of an accepted object that was
    reopened (its committed mask is then the starting point on every slice). Points,
    boxes and strokes (scribbles, lassos) may lie on several slices; a prediction for slice
    ``z`` uses the ones on ``z`` (the last box drawn on a slice wins).
    """

    points: tuple[Point, ...] = ()
    boxes: tuple[Box, ...] = ()
    object_id: int | None = None
    strokes: tuple[Stroke, ...] = ()

    def is_empty(self) -> bool:
        """No points, no boxes, no strokes and no reopened object."""
        return not self.points and not self.boxes and not self.strokes and self.object_id is None

    def slices(self) -> list[int]:
        """Sorted slice indices that carry at least one prompt."""
        return sorted(
            {p.z for p in self.points} | {b.z for b in self.boxes} | {s.z for s in self.strokes}
        )

    def strokes_on(self, z: int) -> list[Stroke]:
        """The strokes on slice ``z``, in drawing order."""
        return [s for s in self.strokes if s.z == z]

    def on_slice(self, z: int) -> tuple[list[Point], Box | None]:
        """The points on slice ``z`` and the box there (the last one drawn), if any."""
        points = [p for p in self.points if p.z == z]
        boxes = [b for b in self.boxes if b.z == z]
        return points, (boxes[-1] if boxes else None)

    def predict_kwargs(self, z: int) -> dict:
        """Keyword arguments for ``Predictor.predict`` from the prompts on slice ``z``.

        Returns ``{}`` when slice ``z`` has no point or box; otherwise ``box`` and/or
        ``points`` + ``labels`` (1 positive, 0 negative) in pixel coordinates. Strokes
        are not in it: they need the slice's size (see
        :meth:`hrmedsegsam.interactive.InteractiveAnnotation.request`).
        """
        points, box = self.on_slice(z)
        kwargs: dict = {}
        if box is not None:
            kwargs["box"] = box.as_list()
        if points:
            kwargs["points"] = [[p.x, p.y] for p in points]
            kwargs["labels"] = [1 if p.positive else 0 for p in points]
        return kwargs

    def slice_key(self, z: int) -> tuple:
        """A hashable summary of the prompts on slice ``z`` (to tell which slices changed)."""
        points, box = self.on_slice(z)
        return (tuple(points), box, self.object_id, tuple(self.strokes_on(z)))

    def with_point(self, point: Point) -> PromptState:
        return dataclasses.replace(self, points=self.points + (point,))

    def with_stroke(self, stroke: Stroke) -> PromptState:
        return dataclasses.replace(self, strokes=self.strokes + (stroke,))

    def with_box(self, box: Box) -> PromptState:
        """Adds ``box``, replacing any earlier box on the same slice."""
        kept = tuple(b for b in self.boxes if b.z != box.z)
        return dataclasses.replace(self, boxes=kept + (box,))

    def nbytes(self) -> int:
        """A rough size, for the history's memory budget."""
        vertices = sum(len(s.vertices) for s in self.strokes)
        return 64 + 48 * (len(self.points) + len(self.boxes) + len(self.strokes)) + 40 * vertices


@dataclass(frozen=True)
class ObjectSummary:
    """One object in the labels: id, name, extent along z, size and display colour (RGB 0..255)."""

    id: int
    name: str
    voxels: int
    z_min: int
    z_max: int
    slices: int  # number of slices that contain the object
    volume_ml: float
    color: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True)
class ObjectInfo:
    """What a session knows about one object besides its voxels.

    ``name``: free text (completion from :data:`hrmedsegsam.anatomy.NAMES` in the front
    ends); ``color``: RGB 0..255, or None for the name's stable colour
    (:func:`hrmedsegsam.anatomy.color_for`); ``prompts``: the points, boxes and strokes of the
    object's last commit (``object_id`` None), empty for objects that came from elsewhere.
    """

    name: str
    color: tuple[int, int, int] | None = None
    prompts: PromptState = PromptState()

    @property
    def display_color(self) -> tuple[int, int, int]:
        """``color``, or the name's stable colour."""
        from hrmedsegsam.anatomy import color_for

        return self.color if self.color is not None else color_for(self.name)


@dataclass
class LabelsDiff:
    """A sparse change of the labels: flat indices into the 3D labels, values before/after."""

    index: np.ndarray
    before: np.ndarray
    after: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.index.nbytes + self.before.nbytes + self.after.nbytes)

    def __len__(self) -> int:
        return int(self.index.size)


@dataclass
class HistoryEntry:
    """One undoable step: a prompt change, a labels change, or both (an Accept)."""

    description: str
    state_before: PromptState
    state_after: PromptState
    diff: LabelsDiff | None = None
    #: the records of the objects the step changes, before and after (absent: no record)
    info_before: dict[int, ObjectInfo] = field(default_factory=dict)
    info_after: dict[int, ObjectInfo] = field(default_factory=dict)
    #: the slices (z) whose labels the step changes
    slices: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        n = self.state_before.nbytes() + self.state_after.nbytes() + 256
        return n + (self.diff.nbytes if self.diff is not None else 0)


class AnnotationSession:
    """Objects, prompts and undo history over one labels array edited in place.

    Args:
        labels: Integer array ``(z, y, x)`` or ``(y, x)``. It is *not* copied: the session edits
            it in place (give it the array a viewer shows, so both stay one).
        spacing_zyx: Voxel size in millimetres, ``(z, y, x)`` order (or ``(y, x)`` for a 2D
            array; the slice thickness is then taken as 1 mm). Used for volumes in mL.
        names: Optional initial names, id -> name.
        max_history_bytes, max_history_steps: Caps on the undo history; the oldest steps are
            dropped first (the newest step is always kept, even when it alone is over the byte
            cap).
    """

    def __init__(
        self,
        labels: np.ndarray,
        spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
        *,
        names: dict[int, str] | None = None,
        max_history_bytes: int = DEFAULT_HISTORY_BYTES,
        max_history_steps: int = DEFAULT_HISTORY_STEPS,
    ) -> None:
        labels = labels if isinstance(labels, np.ndarray) else np.asarray(labels)
        if labels.ndim not in (2, 3):
            raise HRMedSegSAMError(
                f"Labels must be a 2D (y, x) or 3D (z, y, x) array, got shape {labels.shape}."
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise HRMedSegSAMError(f"Labels must hold integers, got dtype {labels.dtype}.")
        self._labels = labels
        # a view, never a copy: edits through it land in the caller's array
        self._labels3d = labels[np.newaxis] if labels.ndim == 2 else labels
        spacing = tuple(float(s) for s in spacing_zyx)
        if len(spacing) == 2:
            spacing = (1.0,) + spacing
        if len(spacing) != 3 or min(spacing) <= 0:
            raise HRMedSegSAMError(f"Spacing must be 3 positive numbers, got {spacing_zyx}.")
        self.spacing_zyx: tuple[float, float, float] = (spacing[0], spacing[1], spacing[2])
        self._info: dict[int, ObjectInfo] = {
            int(k): ObjectInfo(str(v)) for k, v in (names or {}).items()
        }
        self._state = PromptState()
        self._undo: deque[HistoryEntry] = deque()
        self._redo: list[HistoryEntry] = []
        self.max_history_bytes = int(max_history_bytes)
        self.max_history_steps = int(max_history_steps)
        self._index_dtype = np.uint32 if self._labels3d.size < 2**32 else np.int64

    # ------------------------------------------------------------------ basic state
    @property
    def labels(self) -> np.ndarray:
        """The labels array, as given (2D or 3D); edited in place by the session."""
        return self._labels

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        z, y, x = self._labels3d.shape
        return int(z), int(y), int(x)

    @property
    def state(self) -> PromptState:
        """The current prompts and the object being edited."""
        return self._state

    @property
    def current_id(self) -> int | None:
        """Id of the reopened object being refined, or ``None`` for a new object."""
        return self._state.object_id

    def name_of(self, label_id: int) -> str:
        return self.info_of(label_id).name

    def info_of(self, label_id: int) -> ObjectInfo:
        """The record of object ``label_id`` (a default one named ``object <id>`` if none)."""
        label_id = int(label_id)
        return self._info.get(label_id) or ObjectInfo(f"object {label_id}")

    def rename(self, label_id: int, name: str, color: tuple[int, int, int] | None = None) -> None:
        """Sets an object's name, and its colour if given (not an undo step)."""
        info = self.info_of(label_id)
        color = info.color if color is None else _rgb(color)
        self._info[int(label_id)] = dataclasses.replace(info, name=str(name), color=color)

    def set_info(self, infos: dict[int, ObjectInfo]) -> None:
        """Replaces every object record (a reloaded session); not an undo step."""
        self._info = {int(k): v for k, v in infos.items()}

    def infos(self) -> dict[int, ObjectInfo]:
        """Every object record, id -> :class:`ObjectInfo` (a copy)."""
        return dict(self._info)

    def next_free_id(self) -> int:
        """One more than the largest id in the labels (1 for empty labels)."""
        top = int(self._labels3d.max()) if self._labels3d.size else 0
        return max(top, 0) + 1

    def slice_mask(self, label_id: int, z: int) -> np.ndarray:
        """Bool ``(y, x)`` mask of object ``label_id`` on slice ``z``."""
        return self._labels3d[self._check_z(z)] == int(label_id)

    def object_mask(self, label_id: int) -> np.ndarray:
        """Bool mask of object ``label_id``, shaped like :attr:`labels`."""
        return self._labels == int(label_id)

    # ------------------------------------------------------------------ objects
    def objects(self) -> list[ObjectSummary]:
        """Every object present in the labels (id > 0), sorted by id.

        Computed from the array itself, so brush and eraser edits are counted.
        """
        lab = self._labels3d
        voxel_ml = float(np.prod(self.spacing_zyx)) / 1000.0
        top = int(lab.max()) if lab.size else 0
        if top <= 0:
            return []
        if lab.min() >= 0 and top < 1_000_000:
            # one pass: per-slice histogram (z, id) -> counts
            counts = np.zeros((lab.shape[0], top + 1), dtype=np.int64)
            for z in range(lab.shape[0]):
                counts[z] = np.bincount(lab[z].ravel(), minlength=top + 1)
            ids = np.nonzero(counts[:, 1:].sum(axis=0))[0] + 1
            per_slice = {int(i): counts[:, i] for i in ids}
        else:
            per_slice = {}
            for z in range(lab.shape[0]):
                u, c = np.unique(lab[z], return_counts=True)
                for i, n in zip(u.tolist(), c.tolist(), strict=True):
                    if i > 0:
                        per_slice.setdefault(i, np.zeros(lab.shape[0], np.int64))[z] = n
        out = []
        for i in sorted(per_slice):
            col = per_slice[i]
            zs = np.nonzero(col)[0]
            n = int(col.sum())
            out.append(
                ObjectSummary(
                    id=int(i),
                    name=self.name_of(i),
                    voxels=n,
                    z_min=int(zs[0]),
                    z_max=int(zs[-1]),
                    slices=int(zs.size),
                    volume_ml=n * voxel_ml,
                    color=self.info_of(i).display_color,
                )
            )
        return out

    # ------------------------------------------------------------------ prompts
    def set_prompts(self, state: PromptState, description: str = "prompt") -> bool:
        """Makes ``state`` the current prompts, as one undo step. False if nothing changed."""
        if state == self._state:
            return False
        self._push(HistoryEntry(description, self._state, state))
        self._state = state
        return True

    def add_point(self, z: int, x: float, y: float, positive: bool = True) -> PromptState:
        self._check_point(z, x, y)
        self.set_prompts(
            self._state.with_point(Point(int(z), float(x), float(y), bool(positive))), "point"
        )
        return self._state

    def set_box(self, z: int, x0: float, y0: float, x1: float, y1: float) -> PromptState:
        box = Box.from_corners(int(z), float(x0), float(y0), float(x1), float(y1))
        self._check_point(box.z, box.x0, box.y0)
        self._check_point(box.z, box.x1, box.y1)
        self.set_prompts(self._state.with_box(box), "box")
        return self._state

    def add_stroke(
        self,
        z: int,
        vertices: Sequence[Sequence[float]] | np.ndarray,
        positive: bool = True,
        closed: bool = False,
    ) -> PromptState:
        """Adds a scribble (``closed`` False) or lasso (``closed`` True) on slice ``z``;
        ``vertices`` ``(N, 2)`` are ``(x, y)`` pixels, checked by
        :func:`hrmedsegsam.scribble.check_stroke` (parts off the slice are allowed).
        """
        from hrmedsegsam.scribble import check_stroke

        z = self._check_z(z)
        v = check_stroke(vertices, self._labels3d.shape[1:], bool(closed))
        stroke = Stroke(z, tuple((float(x), float(y)) for x, y in v), bool(positive), bool(closed))
        self.set_prompts(self._state.with_stroke(stroke), stroke.kind)
        return self._state

    def clear_prompts(self) -> bool:
        """Next object: drops every prompt and stops editing a reopened object."""
        return self.set_prompts(PromptState(), "next object")

    def reopen(self, label_id: int, with_prompts: bool = False) -> PromptState:
        """Makes an accepted object the current one; its committed mask is the prompt.

        ``with_prompts``: also bring back the points, boxes and strokes of its last commit (kept in
        its :class:`ObjectInfo`, and in saved sessions), to refine from them.
        """
        label_id = int(label_id)
        if not np.any(self._labels3d == label_id):
            raise PromptError(f"There is no object with id {label_id} to reopen.")
        kept = self.info_of(label_id).prompts if with_prompts else PromptState()
        state = dataclasses.replace(kept, object_id=label_id)
        self.set_prompts(state, f"reopen {self.name_of(label_id)}")
        return self._state

    # ------------------------------------------------------------------ commits
    def commit(
        self,
        mask: np.ndarray,
        z: int | None = None,
        *,
        label_id: int | None = None,
        name: str | None = None,
        color: tuple[int, int, int] | None = None,
        overwrite: bool = True,
        slices: Iterable[int] | None = None,
        next_state: PromptState | None = PromptState(),
        description: str | None = None,
    ) -> int:
        """Writes ``mask`` into the labels as one object; returns its id.

        Args:
            mask: Bool ``(y, x)`` mask of slice ``z``, or bool mask shaped like the 3D labels.
            z: The slice of a 2D mask (ignored for 3D masks).
            label_id: Target id. Default: the reopened object (:attr:`current_id`), else
                :meth:`next_free_id`.
            name: Name for the object (default: the one it has, or ``"object <id>"``).
            color: RGB 0..255 (default: the one it has, or the name's stable colour).
            overwrite: ``True``: the mask's pixels take the id even where another object is.
                ``False`` (keep existing): only background pixels (and the object's own) change.
            slices: For a 3D mask, the slices the commit replaces the object on (default: the
                slices where ``mask`` has pixels). Inside them, pixels of this object outside
                ``mask`` go back to background; elsewhere the object is untouched.
            next_state: The prompts after the commit (default: empty, i.e. go on to the next
                object); ``None`` keeps the current prompts.
            description: The undo step's name (default ``"accept <name>"``).

        Only the voxels that change are touched, so edits made directly in the labels
        array elsewhere survive. The commit (and the prompt change) is one undo step.
        """
        mask = np.asarray(mask, dtype=bool)
        if label_id is None:
            label_id = self.current_id if self.current_id is not None else self.next_free_id()
        label_id = int(label_id)
        if label_id <= 0:
            raise PromptError(f"Label ids must be positive, got {label_id}.")
        if label_id > np.iinfo(self._labels3d.dtype).max:
            raise PromptError(
                f"Label id {label_id} does not fit the labels' type {self._labels3d.dtype}."
            )
        zz = self._commit_slices(mask, z, slices)
        mask3d = mask[np.newaxis] if mask.ndim == 2 else mask
        if mask.ndim == 2:
            sub_mask = mask3d
        else:
            sub_mask = mask3d[zz]
        if not sub_mask.any() and not np.any(self._labels3d[zz] == label_id):
            raise PromptError("Nothing to accept: the mask is empty.")

        diff, changed = self._apply(label_id, sub_mask, zz, overwrite)
        info_before = {label_id: self._info[label_id]} if label_id in self._info else {}
        old = self.info_of(label_id)
        prompts = dataclasses.replace(self._state, object_id=None)
        new = ObjectInfo(
            name if name is not None else old.name,
            _rgb(color) if color is not None else old.color,
            prompts if prompts.slices() else old.prompts,
        )
        self._info[label_id] = new
        state_after = self._state if next_state is None else next_state
        verb = description or f"accept {new.name}"
        self._push(
            HistoryEntry(
                verb, self._state, state_after, diff, info_before, {label_id: new}, tuple(changed)
            )
        )
        self._state = state_after
        return label_id

    def delete_object(self, label_id: int) -> None:
        """Removes an object from the labels (sets its voxels to 0), as one undo step."""
        label_id = int(label_id)
        lab = self._labels3d
        where = np.flatnonzero(lab == label_id)
        if where.size == 0:
            raise PromptError(f"There is no object with id {label_id} to delete.")
        index = where.astype(self._index_dtype)
        before = np.full(where.size, label_id, dtype=lab.dtype)
        after = np.zeros(where.size, dtype=lab.dtype)
        lab[np.unravel_index(index, lab.shape)] = 0
        state_after = PromptState() if self.current_id == label_id else self._state
        slices = tuple(np.unique(where // (lab.shape[1] * lab.shape[2])).tolist())
        entry = HistoryEntry(
            f"delete {self.name_of(label_id)}",
            self._state,
            state_after,
            LabelsDiff(index, before, after),
            slices=slices,
        )
        self._push(entry)
        self._state = state_after

    def record_edit(
        self,
        index_zyx: tuple[np.ndarray, ...],
        before: np.ndarray,
        after: np.ndarray,
        description: str = "brush edit",
    ) -> None:
        """Makes an edit of the labels array made outside the session (a brush or eraser
        stroke, a fill) one undo step. ``index_zyx``: the voxels as index arrays into the
        ``(z, y, x)`` labels (``(y, x)`` for a 2D session), in the order they were changed;
        ``before``/``after``: their values before and after each change (a voxel changed
        twice keeps its first ``before`` and last ``after``). Unchanged voxels are dropped.
        """
        lab = self._labels3d
        idx = tuple(np.asarray(i, dtype=np.int64).ravel() for i in index_zyx)
        if len(idx) == 2:
            idx = (np.zeros_like(idx[0]),) + idx
        if len(idx) != 3 or idx[0].size == 0:
            return
        flat = np.ravel_multi_index(idx, lab.shape)
        old = np.broadcast_to(np.asarray(before), flat.shape).astype(lab.dtype)
        new = np.broadcast_to(np.asarray(after), flat.shape).astype(lab.dtype)
        uniq, first = np.unique(flat, return_index=True)
        _, last_rev = np.unique(flat[::-1], return_index=True)
        old, new = old[first], new[flat.size - 1 - last_rev]
        changed = old != new
        if not changed.any():
            return
        uniq = uniq[changed]
        slices = tuple(np.unique(uniq // (lab.shape[1] * lab.shape[2])).tolist())
        diff = LabelsDiff(uniq.astype(self._index_dtype), old[changed], new[changed])
        self._push(HistoryEntry(description, self._state, self._state, diff, slices=slices))

    def restore(self, labels: np.ndarray, infos: dict[int, ObjectInfo]) -> None:
        """Replaces the labels (written into the session's array in place) and the object
        records with saved ones; the prompts and the undo history start afresh.

        Raises:
            HRMedSegSAMError: ``labels`` has another shape, or ids that the array's dtype
                cannot hold.
        """
        labels = np.asarray(labels)
        labels3d = labels[np.newaxis] if labels.ndim == 2 else labels
        if labels3d.shape != self._labels3d.shape:
            raise HRMedSegSAMError(
                f"The saved labels are {labels3d.shape}, these are {self._labels3d.shape}."
            )
        info = np.iinfo(self._labels3d.dtype)
        if labels3d.size and (labels3d.min() < info.min or labels3d.max() > info.max):
            raise HRMedSegSAMError(
                f"The saved label ids do not fit the labels' type {self._labels3d.dtype}."
            )
        self._labels3d[...] = labels3d
        self.set_info(infos)
        self._state = PromptState()
        self._undo.clear()
        self._redo.clear()

    # ------------------------------------------------------------------ history
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def history_nbytes(self) -> int:
        return sum(e.nbytes for e in self._undo) + sum(e.nbytes for e in self._redo)

    def undo(self) -> HistoryEntry | None:
        """Reverts the last step (prompts and/or labels); returns it, or None if none.

        Labels go back only where they still hold what the step wrote.
        """
        if not self._undo:
            return None
        entry = self._undo.pop()
        if entry.diff is not None:
            self._revert(entry.diff, forward=False)
        for k in entry.info_after:
            self._info.pop(k, None)
        self._info.update(entry.info_before)
        self._state = entry.state_before
        self._redo.append(entry)
        return entry

    def redo(self) -> HistoryEntry | None:
        """Re-applies the last undone step; returns it, or None if none."""
        if not self._redo:
            return None
        entry = self._redo.pop()
        if entry.diff is not None:
            self._revert(entry.diff, forward=True)
        self._info.update(entry.info_after)
        self._state = entry.state_after
        self._undo.append(entry)
        return entry

    # ------------------------------------------------------------------ internals
    def _check_z(self, z: int) -> int:
        z = int(z)
        if not 0 <= z < self._labels3d.shape[0]:
            raise PromptError(
                f"Slice {z} is outside the volume (0..{self._labels3d.shape[0] - 1})."
            )
        return z

    def _check_point(self, z: int, x: float, y: float) -> None:
        self._check_z(z)
        check_point(x, y, self._labels3d.shape[1:], "the prompt")

    def _commit_slices(self, mask: np.ndarray, z: int | None, slices) -> np.ndarray:
        nz = self._labels3d.shape[0]
        if mask.ndim == 2:
            if mask.shape != self._labels3d.shape[1:]:
                raise PromptError(
                    f"The mask is {mask.shape}, the slices are {self._labels3d.shape[1:]}."
                )
            if z is None:
                if nz != 1:
                    raise PromptError("A 2D mask needs the slice index z it belongs to.")
                z = 0
            return np.array([self._check_z(z)])
        if mask.shape != self._labels3d.shape:
            raise PromptError(f"The mask is {mask.shape}, the labels are {self._labels3d.shape}.")
        if slices is None:
            return np.nonzero(mask.reshape(nz, -1).any(axis=1))[0]
        return np.array(sorted({self._check_z(s) for s in slices}), dtype=int)

    def _apply(
        self, label_id: int, sub_mask: np.ndarray, zz: np.ndarray, overwrite: bool
    ) -> tuple[LabelsDiff, list[int]]:
        """Writes the object on slices ``zz``; returns the sparse diff and changed slices."""
        lab = self._labels3d
        dtype = lab.dtype
        idx_parts, before_parts, after_parts, changed_z = [], [], [], []
        plane = lab.shape[1] * lab.shape[2]
        for k, z in enumerate(zz.tolist()):
            cur = lab[z]
            m = sub_mask[k]
            own = cur == label_id
            # the object's pixels that the new mask drops go back to background
            clear = own & ~m
            if overwrite:
                set_ = m & ~own
            else:
                set_ = m & (cur == 0)
            if not clear.any() and not set_.any():
                continue
            changed = clear | set_
            flat = np.flatnonzero(changed)
            before = cur.ravel()[flat].copy()
            after = np.where(set_.ravel()[flat], label_id, 0).astype(dtype)
            cur[clear] = 0
            cur[set_] = label_id
            idx_parts.append(flat.astype(np.int64) + z * plane)
            before_parts.append(before)
            after_parts.append(after)
            changed_z.append(z)
        if idx_parts:
            index = np.concatenate(idx_parts).astype(self._index_dtype)
            diff = LabelsDiff(index, np.concatenate(before_parts), np.concatenate(after_parts))
        else:
            empty = np.zeros(0, dtype)
            diff = LabelsDiff(np.zeros(0, self._index_dtype), empty, empty.copy())
        return diff, changed_z

    def _revert(self, diff: LabelsDiff, forward: bool) -> None:
        """Applies a diff backward (undo) or forward (redo), sparing later user edits."""
        if len(diff) == 0:
            return
        lab = self._labels3d
        expect, value = (diff.before, diff.after) if forward else (diff.after, diff.before)
        coords = np.unravel_index(diff.index, lab.shape)
        ok = lab[coords] == expect
        lab[tuple(c[ok] for c in coords)] = value[ok]

    def _push(self, entry: HistoryEntry) -> None:
        self._undo.append(entry)
        self._redo.clear()
        total = sum(e.nbytes for e in self._undo)
        while len(self._undo) > 1 and (
            len(self._undo) > self.max_history_steps or total > self.max_history_bytes
        ):
            total -= self._undo.popleft().nbytes


def _rgb(color: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(c) for c in color)
    if len(values) != 3 or not all(0 <= c <= 255 for c in values):
        raise HRMedSegSAMError(f"A colour is three numbers 0..255 (R, G, B), got {tuple(color)}.")
    return values[0], values[1], values[2]
