"""What a napari brush, eraser or fill stroke changed, for the annotation's undo history.

napari reports a stroke as its ``paint`` event's ``value``: a list of history atoms. napari
0.5-0.8 uses ``(index, old_values, new_value)`` tuples (a NumPy multi-index into the
layer's data); napari 0.9 adds mask atoms with ``slice_key`` (the bounding box, slices),
``mask`` (changed pixels in it, or None: all of it) and ``old_values``. Both become one
``(index tuple, values before, values after)`` triple in the data's own axes, ``(z, y,
x)`` for a volume. napari emits the event before it writes the stroke into the data, so
the values after come from the atoms, never from the array.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def stroke_changes(
    atoms: Any,
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray] | None:
    """``(index arrays, values before, values after)`` of every voxel the atoms touched,
    in order (a voxel hit twice appears twice), or None for atoms of a form this module
    does not know.
    """
    parts: list[tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]] = []
    for atom in atoms or ():
        if hasattr(atom, "slice_key"):
            box = atom.slice_key
            starts = [s.start or 0 for s in box]
            shape = [s.stop - (s.start or 0) for s in box]
            if atom.mask is None:
                local = np.indices(shape).reshape(len(shape), -1)
            else:
                local = np.asarray(np.nonzero(atom.mask))
            index = tuple(local[d] + starts[d] for d in range(len(shape)))
            before = np.asarray(atom.old_values).ravel()
            parts.append((index, before, np.full(before.shape, atom.new_value)))
        elif isinstance(atom, tuple) and len(atom) == 3:
            index = tuple(np.asarray(i).ravel() for i in atom[0])
            before = np.broadcast_to(np.asarray(atom[1]), index[0].shape).ravel()
            after = np.broadcast_to(np.asarray(atom[2]), index[0].shape).ravel()
            parts.append((index, before, after))
        else:
            return None
    if not parts:
        return None
    ndim = len(parts[0][0])
    index = tuple(np.concatenate([p[0][d] for p in parts]) for d in range(ndim))
    return index, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
