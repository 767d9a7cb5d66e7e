"""Precomputed image embeddings on disk: a zarr store of one array per volume and window.

Layout of ``DIR.zarr`` (zarr format 3)::

    DIR.zarr/                       attrs: {"format": "hrmedsegsam-embeddings", "version": 1}
      <volume id>/<window name>     float32 (Z, 256, G, G), chunks (1, 256, G, G): slice z's
                                    encoder output (G = image_size / 16)
                                    attrs: model, weights (fingerprint), image_size, window,
                                    shape_zyx, source, complete

The volume id is a content hash of the voxels (:func:`volume_id`), so a moved or renamed
file still finds its embeddings and an edited one does not. An entry is used only when it is
complete and its ``weights`` equal the reading model's :func:`model_fingerprint`: a store
written by another model, or by other weights of the same model, is refused (the reader
computes instead) and overwritten by the next ``embed`` with this model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrmedsegsam.errors import InputError

if TYPE_CHECKING:
    import zarr

FORMAT = "hrmedsegsam-embeddings"
VERSION = 1
CHANNELS = 256

Window = tuple[float, float]


def volume_id(array: np.ndarray) -> str:
    """Content hash (32 hex characters) of a volume's voxels, shape and dtype."""
    arr = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}{arr.dtype}".encode())
    h.update(arr.data)
    return h.hexdigest()


def window_name(window: Window) -> str:
    """Array name of a window, e.g. ``w-160_240`` or ``w-57.25_310`` (exact floats)."""
    lo, hi = (repr(float(v)).removesuffix(".0") for v in window)
    return f"w{lo}_{hi}"


@dataclass(frozen=True)
class ModelIdentity:
    """What an entry must match to be used: the model's name, weights fingerprint and frame."""

    name: str
    weights: str
    image_size: int

    @classmethod
    def of(cls, model: Any) -> ModelIdentity:
        """The identity of a loaded :class:`~hrmedsegsam.model.base.PromptableModel`."""
        from hrmedsegsam.model.fingerprint import model_fingerprint

        return cls(str(model.name), model_fingerprint(model), int(model.image_size))


class EmbeddingStore:
    """A zarr store of embeddings at ``path`` (created on first write).

    ``mode``: ``"r"`` to read an existing store, ``"a"`` to read and write.
    """

    def __init__(self, path: str | Path, mode: str = "a") -> None:
        import zarr

        self.path = Path(path)
        if mode == "r" and not self.path.exists():
            raise FileNotFoundError(f"embedding store not found: {self.path}")
        self._root = zarr.open_group(str(self.path), mode=mode)
        if mode != "r" and "format" not in self._root.attrs:
            self._root.attrs.update({"format": FORMAT, "version": VERSION})
        if self._root.attrs.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not an HRMedSegSAM embedding store")

    @staticmethod
    def key(vid: str, window: Window) -> str:
        return f"{vid}/{window_name(window)}"

    def _array(self, vid: str, window: Window) -> zarr.Array | None:
        try:
            return self._root[self.key(vid, window)]
        except KeyError:
            return None

    def status(self, vid: str, window: Window, model: ModelIdentity) -> str:
        """``"ok"`` (usable), ``"missing"``, ``"incomplete"`` or ``"stale"`` (another model)."""
        arr = self._array(vid, window)
        if arr is None:
            return "missing"
        attrs = arr.attrs
        if attrs.get("weights") != model.weights or attrs.get("image_size") != model.image_size:
            return "stale"
        return "ok" if attrs.get("complete") else "incomplete"

    def describe(self, vid: str, window: Window) -> dict[str, Any] | None:
        """The attributes of an entry, or None."""
        arr = self._array(vid, window)
        return None if arr is None else dict(arr.attrs)

    def create(
        self, vid: str, window: Window, model: ModelIdentity, depth: int, source: str = ""
    ) -> None:
        """Make an empty entry for ``depth`` slices (replacing any entry of that key)."""
        g = model.image_size // 16
        arr = self._root.create_array(
            self.key(vid, window),
            shape=(depth, CHANNELS, g, g),
            chunks=(1, CHANNELS, g, g),
            dtype="float32",
            overwrite=True,
        )
        arr.attrs.update(
            {
                "model": model.name,
                "weights": model.weights,
                "image_size": model.image_size,
                "window": [float(window[0]), float(window[1])],
                "depth": depth,
                "source": source,
                "complete": False,
            }
        )

    def write(self, vid: str, window: Window, z0: int, features: np.ndarray) -> None:
        """Write embeddings ``(n, 256, G, G)`` of slices ``z0 .. z0 + n - 1`` (one chunk each,
        so writers of different slices never touch the same file).
        """
        arr = self._array(vid, window)
        if arr is None:
            raise KeyError(f"no entry {self.key(vid, window)} in {self.path}; create it first")
        arr[z0 : z0 + len(features)] = np.asarray(features, np.float32)

    def mark_complete(self, vid: str, window: Window) -> None:
        """Declare every slice of the entry written (readers ignore it until then)."""
        arr = self._array(vid, window)
        if arr is None:
            raise KeyError(f"no entry {self.key(vid, window)} in {self.path}")
        arr.attrs["complete"] = True

    def read(self, vid: str, window: Window, z: int, model: ModelIdentity) -> np.ndarray | None:
        """Slice ``z``'s embedding ``(1, 256, G, G)`` if a usable entry holds it, else None."""
        if self.status(vid, window, model) != "ok":
            return None
        arr = self._array(vid, window)
        if not 0 <= z < arr.shape[0]:
            return None
        return np.asarray(arr[z : z + 1])

    @classmethod
    def open(cls, path: str | Path) -> EmbeddingStore:
        """An existing store at ``path``, for reading; one clear :class:`InputError` when it
        is missing or not an embedding store.
        """
        if not Path(path).exists():
            raise InputError(f"embedding store not found: {path}")
        try:
            return cls(path, mode="r")
        except Exception as exc:  # ours (wrong format) or zarr's (no zarr group there)
            raise InputError(f"{path} is not an HRMedSegSAM embedding store") from exc

    def summary(self, volume: np.ndarray, window: Window, model: ModelIdentity) -> tuple[bool, str]:
        """Whether this store serves ``volume`` under ``window`` for ``model`` ((Z, Y, X)
        voxels; window in image units), and one line for a user that says so or what
        happens instead.
        """
        vid = volume_id(volume)
        state = self.status(vid, window, model)
        if state == "ok":
            return True, f"store: embeddings of this volume are read from {self.path}"
        if state == "stale":
            made = self.describe(vid, window) or {}
            return False, (
                f"store: its embeddings of this volume were made by {made.get('model')} with "
                "other weights; computing them instead"
            )
        return False, (
            f"store: no {'complete ' if state == 'incomplete' else ''}embeddings of this volume "
            f"for window {window[0]:g}..{window[1]:g}; computing them"
        )

    def source_for(
        self, volume: np.ndarray, model: ModelIdentity, slice_of: Callable[[Hashable], int | None]
    ) -> StoreSource:
        """A :class:`StoreSource` for ``volume``; ``slice_of(key)`` is the slice a Predictor
        cache key names (None for keys of other images).
        """
        return StoreSource(self, volume_id(volume), model, slice_of)


@dataclass
class StoreSource:
    """A Predictor ``features_source``: the stored embedding of the slice a cache key names,
    under a window, if the store holds a usable one (else None: the Predictor encodes).
    ``hits`` counts the slices read.
    """

    store: EmbeddingStore
    vid: str
    model: ModelIdentity
    slice_of: Callable[[Hashable], int | None]
    hits: int = 0

    def __call__(self, key: Hashable, window: Window) -> np.ndarray | None:
        z = self.slice_of(key)
        if z is None:
            return None
        out = self.store.read(self.vid, window, z, self.model)
        if out is not None:
            self.hits += 1
        return out


__all__ = ["EmbeddingStore", "ModelIdentity", "StoreSource", "volume_id", "window_name"]
