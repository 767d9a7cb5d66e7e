"""Propagating several accepted objects in one run.

:class:`MultiPropagation` extends each object beyond the slices it already has: upward
from its highest slice and downward from its lowest, by
:func:`hrmedsegsam.volume.propagate_steps` (the same prompts and stop rules as a single
propagation); the slices it has are kept as they are. It is an iterator of
:class:`ObjectStep` (one per accepted slice of one object, computed when asked for), so a
front end shows progress per object and slice and cancels by no longer iterating;
:meth:`~hrmedsegsam.interactive.InteractiveAnnotation.commit_objects` commits what was
found, one undo step per object.

Masks are ``(z, y, x)`` bool arrays shaped like the volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from hrmedsegsam.volume import PropagationStep, PropagationStop


@dataclass(frozen=True)
class ObjectStep:
    """One slice one object's propagation accepted.

    ``label_id``: the object; ``index`` / ``objects``: which of how many objects (0-based);
    ``step``: the slice (``step.z``, ``step.mask``, ...); ``done`` / ``total``: slices
    visited / to visit over all objects, for progress.
    """

    label_id: int
    index: int
    objects: int
    step: PropagationStep
    done: int
    total: int

    def title(self, name: str) -> str:
        """What runs, for progress: ``"Propagating liver (1 of 3)"`` (``name``: the object's)."""
        return f"Propagating {name} ({self.index + 1} of {self.objects})"


StepsFactory = Callable[
    [int, int, np.ndarray, str, list[PropagationStop]], Iterator[PropagationStep]
]
"""``factory(label_id, start_z, start_mask, direction, stops)`` -> the steps of one direction."""


class MultiPropagation:
    """Extend each object of ``masks`` (id -> bool ``(z, y, x)``, its voxels now) up and down.

    Attributes:
        masks: id -> bool ``(z, y, x)``: the object's voxels and every slice accepted so far.
        stops: id -> the :class:`~hrmedsegsam.volume.PropagationStop` s of its directions.
        done, total: slices visited / to visit over all objects.
        finished: every object ran to its end (False: cancelled or still running).
    """

    def __init__(self, masks: dict[int, np.ndarray], factory: StepsFactory) -> None:
        self.masks = {int(k): np.array(v, dtype=bool) for k, v in masks.items()}
        self.stops: dict[int, list[PropagationStop]] = {k: [] for k in self.masks}
        self._factory = factory
        self.done = 0
        self.finished = False
        self._plan: list[tuple[int, int, int, str]] = []  # (id, index, start_z, direction)
        Z = next(iter(self.masks.values())).shape[0] if self.masks else 0
        for i, (lid, m) in enumerate(self.masks.items()):
            zs = np.flatnonzero(m.reshape(Z, -1).any(axis=1))
            if zs.size == 0:
                continue
            self._plan += [(lid, i, int(zs[-1]), "up"), (lid, i, int(zs[0]), "down")]
        self.total = sum(Z - 1 - z if d == "up" else z for _, _, z, d in self._plan)
        self._steps = self._run()

    def _run(self) -> Iterator[ObjectStep]:
        before = 0  # slices of the directions already finished
        for lid, index, z, direction in self._plan:
            mask = self.masks[lid]
            steps = self._factory(lid, z, mask[z], direction, self.stops[lid])
            try:
                for step in steps:
                    mask[step.z] = step.mask
                    self.done = before + step.done
                    yield ObjectStep(lid, index, len(self.masks), step, self.done, self.total)
            finally:
                if hasattr(steps, "close"):
                    steps.close()
            before += (mask.shape[0] - 1 - z) if direction == "up" else z
            self.done = before

    def __iter__(self) -> MultiPropagation:
        return self

    def __next__(self) -> ObjectStep:
        try:
            return next(self._steps)
        except StopIteration:
            self.finished = True
            self.done = self.total
            raise

    def close(self) -> None:
        """Stop here (a cancel); what was found so far stays in :attr:`masks`."""
        self._steps.close()

    def describe(self, names: Callable[[int], str] = str) -> str:
        """One line per object: its slices now and where it stopped, e.g.
        ``"liver: slices 3..19 (up: slice 20, ...; down: the volume's edge)"``.
        """
        lines = []
        for lid, m in self.masks.items():
            zs = np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1))
            why = "; ".join(s.describe() for s in self.stops[lid]) or "cancelled"
            lines.append(f"{names(lid)}: slices {int(zs.min())}..{int(zs.max())} ({why})")
        return "\n".join(lines) + ("" if self.finished else "\ncancelled")
