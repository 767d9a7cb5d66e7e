"""The interactive annotation core: headless state for annotating one volume.

One :class:`InteractiveAnnotation` holds everything an interactive front end needs, with no
display: the image ``(z, y, x)``, the intensity window, the labels (through an
:class:`~hrmedsegsam.session.AnnotationSession`, which owns objects, prompts and undo), the
preview of the object being edited, a small cache of recent predictions, and the one key
scheme under which slices are embedded in the Predictor's cache (:meth:`embedding_key`).
The napari widget, ``hrmedsegsam segment`` and notebooks all drive this class.

Coordinates: slices are ``image[z]`` of shape ``(H, W)`` (``y`` = row, ``x`` = column);
prompts are pixels ``(x, y)`` on a slice, as :mod:`hrmedsegsam.prompts` checks them.

A prediction has three parts so that a front end can run the slow one elsewhere:
:meth:`request` (cheap: which prompts, feedback logits, cache hits; call it where the state
lives), :meth:`compute` (the encoder and decoder; thread-safe, touches no state) and
:meth:`show` (stores the result and writes the preview). :meth:`predict` does all three.
:meth:`propagate` returns a :class:`Propagation`, an iterator: the caller gets each slice
as it is done, shows progress, cancels by no longer iterating, and commits what it found.
:meth:`fill_between` (the slices between two key slices of one object) returns one too;
:meth:`propagate_objects` runs several accepted objects in one
:class:`~hrmedsegsam.multi_propagation.MultiPropagation`.

The window is ``(lo, hi)`` for every slice, or None for each slice's own 0.5-99.5
percentile range (:meth:`InteractiveAnnotation.slice_window`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrmedsegsam.errors import HRMedSegSAMError, PromptError
from hrmedsegsam.intensity import percentile_window, resolve_window
from hrmedsegsam.masks import bbox_xyxy, largest_component
from hrmedsegsam.scribble import StrokePrompts, stroke_prompts
from hrmedsegsam.session import AnnotationSession, HistoryEntry, PromptState

if TYPE_CHECKING:
    from hrmedsegsam.embedding_store import EmbeddingStore, StoreSource
    from hrmedsegsam.io import Volume
    from hrmedsegsam.io.seg import Segment
    from hrmedsegsam.multi_propagation import MultiPropagation
    from hrmedsegsam.predictor import Embedding, Prediction, Predictor
    from hrmedsegsam.session_file import SavedSession
    from hrmedsegsam.volume import PropagationStep, PropagationStop, StopRule

Window = tuple[float, float]

_IMAGES = itertools.count(1)  # one per annotation: embedding keys of two images never collide


@dataclass(frozen=True)
class PredictionRequest:
    """What :meth:`InteractiveAnnotation.compute` needs to predict slice ``z``.

    ``key`` identifies the prompts and window the prediction answers (a newer request for
    the same slice replaces it); ``kwargs`` go to ``Predictor.predict``; ``seed`` is a
    reopened object's committed mask ``(H, W)``, used as the dense prompt; ``strokes``: the
    slice's scribbles and lassos as model prompts (their points and box are in ``kwargs``;
    the mask is limited by their lassos afterwards, :meth:`StrokePrompts.restrict`);
    ``previous``: when the prompts are an earlier prediction's plus one click (the last
    point), that prediction, refined with ``Predictor.refine``.
    """

    z: int
    key: tuple
    kwargs: dict[str, Any]
    seed: np.ndarray | None
    window: Window
    strokes: StrokePrompts | None = None
    previous: Prediction | None = None


class Propagation:
    """One propagation run through the volume from slice ``start_z``; an iterator of
    :class:`~hrmedsegsam.volume.PropagationStep` (one per accepted slice, computed when
    asked for). Iterating fills :attr:`mask3d`; stopping early (``close()`` or just not
    iterating on) is a cancel. Commit the result with
    :meth:`InteractiveAnnotation.commit_propagation`.

    Attributes:
        start_z: the slice the object was prompted on.
        mask3d: bool ``(z, y, x)``: the start mask and every slice accepted so far.
        stops: one :class:`~hrmedsegsam.volume.PropagationStop` per direction that ended.
        keys: a fill between key slices: its sorted key slices; ``()`` for a propagation.
        done, total: slices visited / to visit, for progress.
        finished: both directions ran to their end (False: cancelled or still running).
    """

    def __init__(
        self,
        steps: Iterator[PropagationStep],
        start_z: int,
        mask3d: np.ndarray,
        stops: list[PropagationStop],
        keys: Sequence[int] = (),
    ) -> None:
        self._steps = steps
        self.start_z = start_z
        self.mask3d = mask3d
        self.stops = stops
        self.keys = tuple(int(z) for z in keys)
        self.done = 0
        self.total = 0
        self.finished = False

    def __iter__(self) -> Propagation:
        return self

    def __next__(self) -> PropagationStep:
        try:
            step = next(self._steps)
        except StopIteration:
            self.finished = True
            self.done = self.total
            raise
        self.mask3d[step.z] = step.mask
        self.done, self.total = step.done, step.total
        return step

    def close(self) -> None:
        """Stop here (a cancel); what was found so far stays in :attr:`mask3d`."""
        if hasattr(self._steps, "close"):
            self._steps.close()

    def slices(self) -> np.ndarray:
        """Sorted slice indices where :attr:`mask3d` has the object."""
        return np.flatnonzero(self.mask3d.reshape(self.mask3d.shape[0], -1).any(axis=1))

    def title(self, name: str = "the object") -> str:
        """What runs, for progress: ``"Propagating liver from slice 12"``, or for a fill
        ``"Filling liver between slices 12 and 30"`` (``"key slices 3, 12 and 30"``).
        """
        if not self.keys:
            return f"Propagating {name} from slice {self.start_z}"
        *head, last = self.keys
        slices = "slices" if len(head) == 1 else "key slices"
        return f"Filling {name} between {slices} {', '.join(map(str, head))} and {last}"

    def describe(self) -> str:
        """Where it went and why it stopped, e.g. ``"slices 3..9; stopped up: slice 10, ..."``
        (a fill between key slices has no stops).
        """
        zs = self.slices()
        text = f"{len(zs)} slice(s) ({int(zs.min())}..{int(zs.max())})"
        if not self.finished:
            return f"{text}; cancelled"
        if not self.stops:
            return text
        return f"{text}; stopped " + "; ".join(stop.describe() for stop in self.stops)


class InteractiveAnnotation:
    """Annotation state for one volume.

    Args:
        image: ``(z, y, x)`` or ``(y, x)`` voxels (a 2D image is one slice); not copied.
        window: the intensity window ``(lo, hi)`` the model sees; None: each slice's own
            percentile window.
        predictor: a :class:`~hrmedsegsam.predictor.Predictor`; may be set later
            (:attr:`predictor`), e.g. when a model loads in the background.
        labels: integer array shaped like ``image``, edited in place (default: zeros).
        preview: uint8 array shaped like ``image`` for the current object's mask, edited in
            place (default: zeros); a front end passes the array it displays.
        spacing_zyx: voxel size in mm, ``(z, y, x)``, for object volumes.
        prediction_cache: recent predictions kept, so undo/redo of prompts is instant.
        store: an :class:`~hrmedsegsam.embedding_store.EmbeddingStore` read before the
            encoder runs (entries of this image, window and model only).
        low_confidence: a prediction whose predicted IoU is below this gets a warning.
    """

    def __init__(
        self,
        image: np.ndarray,
        window: Sequence[float] | None,
        predictor: Predictor | None = None,
        *,
        labels: np.ndarray | None = None,
        preview: np.ndarray | None = None,
        spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
        prediction_cache: int = 12,
        store: EmbeddingStore | None = None,
        low_confidence: float = 0.5,
    ) -> None:
        self.image = _as_3d(np.asarray(image))
        self.preview = (
            preview if preview is not None else np.zeros(np.asarray(image).shape, np.uint8)
        )
        if _as_3d(self.preview).shape != self.image.shape:
            raise HRMedSegSAMError(
                f"The preview is {self.preview.shape} but the image is {self.image.shape}."
            )
        self.predictor = predictor
        self.window: Window | None = (
            None if window is None else (float(window[0]), float(window[1]))
        )
        self.low_confidence = float(low_confidence)
        self.kept = 0  # voxels of other objects the last commit left alone
        self._image_id = next(_IMAGES)
        self._slice_windows: dict[int, Window] = {}
        self._presets: dict[tuple[str, str], Window] = {}
        self._predictions: OrderedDict[tuple, Prediction] = OrderedDict()
        self._prediction_cache = int(prediction_cache)
        self.store = store
        self.store_source: StoreSource | None = None
        self._store_model: object | None = None
        self.set_labels(
            labels if labels is not None else np.zeros(np.asarray(image).shape, np.int32),
            spacing_zyx,
        )

    def set_labels(
        self, labels: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0)
    ) -> None:
        """Annotate into ``labels`` (integers shaped like the image, edited in place) from now
        on: a new session (objects, prompts, history); embeddings and the window are kept.
        """
        if _as_3d(labels).shape != self.image.shape:
            raise HRMedSegSAMError(
                f"The labels are {labels.shape} but the image is {self.image.shape}."
            )
        self.labels = labels
        self.session = AnnotationSession(labels, spacing_zyx=spacing_zyx)
        self._predictions.clear()
        self.preview3d[:] = 0

    # ------------------------------------------------------------------ views
    @property
    def preview3d(self) -> np.ndarray:
        """The preview as ``(z, y, x)`` (a view)."""
        return _as_3d(self.preview)

    @property
    def state(self) -> PromptState:
        """The prompts of the object being edited."""
        return self.session.state

    # ------------------------------------------------------------------ window
    def slice_window(self, z: int) -> Window:
        """The window slice ``z`` is seen through: :attr:`window`, or without one the
        slice's own percentile range (what ``Predictor.embed`` uses for ``window=None``).
        """
        if self.window is not None:
            return self.window
        if z not in self._slice_windows:
            self._slice_windows[z] = percentile_window(np.asarray(self.image[z]))
        return self._slice_windows[z]

    def set_window(self, window: Sequence[float] | None) -> list[int]:
        """Change the window the model sees; returns the prompted slices to predict again."""
        new = None if window is None else (float(window[0]), float(window[1]))
        if new == self.window:
            return []
        self.window = new
        return self.session.state.slices()

    def preset_window(self, preset: str, modality: str = "") -> Window:
        """The window of a named preset (see :func:`~hrmedsegsam.intensity.resolve_window`;
        ``"percentile"`` is computed once over the volume).
        """
        key = (preset, modality)
        if key not in self._presets:
            self._presets[key] = resolve_window(self.image, preset=preset, modality=modality)
        return self._presets[key]

    # ------------------------------------------------------------------ embeddings
    def embedding_key(self, z: int) -> Hashable:
        """The Predictor cache key of slice ``z``: the one scheme every caller uses."""
        return ("interactive", self._image_id, int(z))

    def slice_of_key(self, key: Hashable) -> int | None:
        """The slice an :meth:`embedding_key` names, None for another image's key."""
        if isinstance(key, tuple) and len(key) == 3 and key[:2] == ("interactive", self._image_id):
            return int(key[2])
        return None

    def is_embedded(self, z: int) -> bool:
        """Whether slice ``z`` is in the Predictor's cache under the current window."""
        return self.predictor is not None and self.predictor.is_cached(
            self.embedding_key(z), self.slice_window(z)
        )

    def embed(self, z: int) -> Embedding:
        """Embed slice ``z`` (or fetch it from the cache). Thread-safe."""
        return self._need_predictor().embed(
            np.asarray(self.image[z]), self.slice_window(z), key=self.embedding_key(z)
        )

    def prefetch_requests(self, z0: int, radius: int) -> list[int]:
        """Slices within ``radius`` of ``z0``, nearest first, whose embedding is not cached."""
        if self.predictor is None or radius <= 0:
            return []
        order = [z0] + [z0 + s * d for d in range(1, radius + 1) for s in (1, -1)]
        return [z for z in order if 0 <= z < self.image.shape[0] and not self.is_embedded(z)]

    # ------------------------------------------------------------------ prompts
    def set_prompts(self, state: PromptState) -> list[int]:
        """Record ``state`` (one undo step); returns the slices to predict again."""
        before = self.session.state
        if not self.session.set_prompts(state):
            return []
        return self.changed_slices(before, state)

    def add_point(self, z: int, x: float, y: float, positive: bool = True) -> list[int]:
        """Add a point prompt (pixels on slice ``z``); returns the slices to predict (``[z]``)."""
        before = self.session.state
        return self.changed_slices(before, self.session.add_point(z, x, y, positive))

    def set_box(self, z: int, x0: float, y0: float, x1: float, y1: float) -> list[int]:
        """Set the box prompt of slice ``z`` (pixel corners in any order); returns ``[z]``."""
        before = self.session.state
        return self.changed_slices(before, self.session.set_box(z, x0, y0, x1, y1))

    def add_scribble(
        self, z: int, vertices: Sequence[Sequence[float]] | np.ndarray, positive: bool = True
    ) -> list[int]:
        """Add a scribble: an open polyline of ``(x, y)`` pixels ``(N, 2)`` on slice ``z``,
        over the object (``positive``) or over what is not the object. It becomes a few
        points along it (:mod:`hrmedsegsam.scribble`). Returns the slices to predict (``[z]``).
        """
        before = self.session.state
        return self.changed_slices(before, self.session.add_stroke(z, vertices, positive, False))

    def add_lasso(
        self, z: int, vertices: Sequence[Sequence[float]] | np.ndarray, positive: bool = True
    ) -> list[int]:
        """Add a lasso: a closed polygon of ``(x, y)`` pixels ``(N, 2)`` on slice ``z``,
        around the object (``positive``: the mask stays inside it) or around a part to leave
        out (the mask loses what it encloses). See :mod:`hrmedsegsam.scribble`. Returns the
        slices to predict (``[z]``).
        """
        before = self.session.state
        return self.changed_slices(before, self.session.add_stroke(z, vertices, positive, True))

    def changed_slices(self, before: PromptState, after: PromptState) -> list[int]:
        """Slices whose prediction differs between two prompt states. When the object
        changes, the preview is reset to the new object's committed mask (or cleared).
        """
        if before.object_id != after.object_id:
            self.preview3d[:] = 0
            if after.object_id is not None:
                self.preview3d[:] = self.session.object_mask(after.object_id).reshape(
                    self.preview3d.shape
                )
            return sorted(set(before.slices()) | set(after.slices()))
        return sorted(
            z
            for z in set(before.slices()) | set(after.slices())
            if before.slice_key(z) != after.slice_key(z)
        )

    # ------------------------------------------------------------------ predictions
    def request(self, z: int) -> PredictionRequest | Prediction | None:
        """What predicting slice ``z`` takes under the current prompts and window.

        Returns None when the slice has no prompt (its preview is then the reopened
        object's mask, or empty), a cached :class:`Prediction` (already shown), or a
        :class:`PredictionRequest` for :meth:`compute`.
        """
        state = self.session.state
        kwargs, strokes = self._prompt_kwargs(state, z)
        if not kwargs:
            seed = (
                self.session.slice_mask(state.object_id, z)
                if state.object_id is not None
                else np.zeros(self.image.shape[1:], bool)
            )
            self.preview3d[z] = strokes.restrict(seed) if strokes is not None else seed
            return None
        key = (z, state.slice_key(z), self.window)
        cached = self._predictions.get(key)
        if cached is not None:
            self._predictions.move_to_end(key)
            self.preview3d[z] = cached.mask
            return cached
        feedback, previous = self._feedback(z, state)
        if feedback is not None:
            kwargs["mask_input"] = feedback
        seed = None
        if state.object_id is not None and feedback is None:
            seed = self.session.slice_mask(state.object_id, z).copy()
        return PredictionRequest(int(z), key, kwargs, seed, self.slice_window(z), strokes, previous)

    def compute(self, request: PredictionRequest) -> Prediction:
        """Run the model for ``request`` (slow; thread-safe, changes no annotation state)."""
        predictor = self._need_predictor()
        emb = predictor.embed(
            np.asarray(self.image[request.z]), request.window, key=self.embedding_key(request.z)
        )
        predictor.set_embedding(emb)
        if request.previous is not None:
            kw = request.kwargs
            pred = predictor.refine(request.previous, kw["points"], kw["labels"], box=kw.get("box"))
        elif request.seed is not None and request.seed.any():
            pred = predictor.predict(
                **request.kwargs, mask_input=predictor.mask_to_logits(request.seed)
            )
        else:
            pred = predictor.predict(**request.kwargs)
        if request.strokes is not None:
            pred = dataclasses.replace(pred, mask=request.strokes.restrict(pred.mask))
        return pred

    def show(self, request: PredictionRequest, prediction: Prediction) -> bool:
        """Keep ``prediction``; write it into the preview if its prompts are still current.

        Returns whether it was shown (False when the prompts changed meanwhile).
        """
        self._predictions[request.key] = prediction
        while len(self._predictions) > self._prediction_cache:
            self._predictions.popitem(last=False)
        if request.key[1] != self.session.state.slice_key(
            request.z
        ) or request.window != self.slice_window(request.z):
            return False
        self.preview3d[request.z] = prediction.mask
        return True

    def predict(self, z: int) -> Prediction | None:
        """Predict slice ``z`` now (request, compute, show); None if it has no prompt."""
        req = self.request(z)
        if req is None or not isinstance(req, PredictionRequest):
            return req
        pred = self.compute(req)
        self.show(req, pred)
        return pred

    def describe(self, z: int, prediction: Prediction) -> str:
        """One line for the user about ``prediction`` on slice ``z``, with a warning when
        the mask is empty or its predicted IoU is below :attr:`low_confidence`.
        """
        if not prediction.mask.any():
            return f"Slice {z}: the model found nothing there; try a box or more points."
        text = f"Slice {z}: predicted IoU {prediction.score:.2f}"
        if prediction.score < self.low_confidence:
            return (
                f"{text}, low confidence ({int(prediction.mask.sum())} px): check the mask "
                "before accepting; add prompts or a box."
            )
        return f"{text}. Accept, add prompts, or propagate."

    def last_prediction(self, z: int) -> Prediction | None:
        """The prediction for slice ``z`` under the current prompts and window, if kept."""
        return self._predictions.get((z, self.session.state.slice_key(z), self.window))

    def forget_predictions(self) -> None:
        """Drop kept predictions (after the model changed)."""
        self._predictions.clear()

    # ------------------------------------------------------------------ commits & history
    def accept(
        self,
        label_id: int | None = None,
        overwrite: bool = False,
        name: str | None = None,
        color: tuple[int, int, int] | None = None,
    ) -> int:
        """Commit the preview of the prompted slices as one object (one undo step).

        ``label_id``: None for the reopened object's id, else the next free one;
        ``overwrite``: True lets the new object take voxels of other objects; by default
        they are kept (:attr:`kept` says how many the preview wanted); ``name``, ``color`` (RGB 0..255):
        the object's name and colour (default: the ones it has, else ``object <id>`` and
        that name's colour). Returns the id.
        """
        slices = self.session.state.slices()
        if not slices:
            raise PromptError("Nothing to accept: add a point or a box first.")
        preview = self.preview3d
        np.minimum(preview, 1, out=preview)  # brushed-in values count as foreground
        label_id = self.session.commit(
            preview.view(bool),
            label_id=label_id,
            overwrite=overwrite,
            slices=slices,
            name=name,
            color=color,
        )
        self._count_kept(preview.view(bool), label_id)
        self.preview3d[:] = 0
        return label_id

    def commit_volume(
        self,
        mask3d: np.ndarray,
        label_id: int | None = None,
        overwrite: bool = False,
        name: str | None = None,
        color: tuple[int, int, int] | None = None,
    ) -> int:
        """Commit a bool ``(z, y, x)`` mask (a propagation) as one object, one undo step
        (``overwrite``, ``name``, ``color`` as in :meth:`accept`).
        """
        label_id = self.session.commit(
            mask3d,
            label_id=label_id,
            overwrite=overwrite,
            description="propagate",
            name=name,
            color=color,
        )
        self._count_kept(mask3d, label_id)
        self.preview3d[:] = 0
        return label_id

    def _count_kept(self, mask3d: np.ndarray, label_id: int) -> None:
        self.kept = int(np.count_nonzero(mask3d & (_as_3d(self.labels) != label_id)))

    def kept_note(self) -> str:
        """After a commit: how many voxels of other objects were kept, or ``""``."""
        if not self.kept:
            return ""
        return (
            f" {self.kept} voxel(s) of other objects were kept (choose overwrite to replace them)."
        )

    def keep_largest(self, label_id: int | None = None) -> list[int]:
        """Remove islands: keep only the largest connected component.

        ``label_id`` None: the preview of the object being edited, on each slice by itself
        (8-connected); returns ``[]``. An accepted object's id: its voxels in 3D
        (26-connected), one undo step; returns the slices that changed.
        """
        if label_id is None:
            for z in self.state.slices():
                self.preview3d[z] = largest_component(self.preview3d[z] > 0)
            return []
        whole = self.session.object_mask(int(label_id))
        if not whole.any():
            raise PromptError(f"There is no object with id {label_id}.")
        zs = np.flatnonzero(_as_3d(whole).any(axis=(1, 2)))
        kept = largest_component(_as_3d(whole))
        self.session.commit(
            kept,
            label_id=int(label_id),
            slices=zs,
            next_state=None,
            description=f"remove islands of {self.session.name_of(label_id)}",
        )
        return [int(z) for z in zs if not np.array_equal(kept[z], _as_3d(whole)[z])]

    def commit_propagation(
        self,
        run: Propagation,
        label_id: int | None = None,
        overwrite: bool = False,
        name: str | None = None,
        color: tuple[int, int, int] | None = None,
    ) -> int:
        """Commit what ``run`` found (finished or cancelled) as one object, one undo step
        (``name``, ``color`` as in :meth:`accept`).
        """
        return self.commit_volume(run.mask3d, label_id, overwrite, name=name, color=color)

    def next_object(self) -> bool:
        """Drop the prompts and the preview; the next prompt starts a new object."""
        changed = self.session.clear_prompts()
        if changed:
            self.preview3d[:] = 0
        return changed

    def reopen(self, label_id: int, with_prompts: bool = False) -> list[int]:
        """Edit an accepted object again (``with_prompts``: from the prompts of its last
        commit, e.g. after reopening a saved session); returns the slices to predict.
        """
        before = self.session.state
        return self.changed_slices(before, self.session.reopen(label_id, with_prompts))

    def undo(self) -> tuple[HistoryEntry | None, list[int]]:
        """Undo one step; returns it (None: nothing to undo) and the slices to predict."""
        return self._step(self.session.undo)

    def redo(self) -> tuple[HistoryEntry | None, list[int]]:
        """Redo one step; returns it (None: nothing to redo) and the slices to predict."""
        return self._step(self.session.redo)

    # ------------------------------------------------------------------ propagation
    def propagate(self, z: int, rule: StopRule | None = None) -> Propagation:
        """Follow the previewed object on slice ``z`` through the volume, slice by slice.

        Returns a :class:`Propagation` (an iterator of steps; nothing is committed until
        :meth:`commit_propagation`). Slices are embedded under :meth:`embedding_key`, so
        prefetched slices are not encoded again.
        """
        from hrmedsegsam.volume import StopRule, propagate_steps

        start = self.preview3d[z].astype(bool)
        if not start.any():
            raise PromptError(
                f"Nothing to propagate from slice {z}: prompt the object on this slice first."
            )
        if self.image.shape[0] == 1:
            raise PromptError("Propagation needs a 3D volume; this image is 2D.")
        predictor = self._need_predictor()
        last = self.last_prediction(z)
        stops: list[PropagationStop] = []
        steps = propagate_steps(
            predictor,
            self.image,
            int(z),
            start,
            self.window,
            start_logits=last.logits if last is not None else None,
            key=self.embedding_key,
            rule=rule if rule is not None else StopRule(),
            stops=stops,
        )
        mask3d = np.zeros(self.image.shape, bool)
        mask3d[z] = start
        return Propagation(steps, int(z), mask3d, stops)

    def fill_target(self, selected: int | None = None) -> int | None:
        """Which object Fill between works on: the object being edited once it has prompts
        (None, for :meth:`fill_between`), else accepted object ``selected`` (its gaps).

        Raises:
            PromptError: nothing prompted and no object selected.
        """
        if self.state.slices():
            return None
        if selected is None:
            raise PromptError(
                "Fill between: prompt the object on two slices (its top and bottom), or "
                "select an accepted object with gaps."
            )
        return int(selected)

    def fill_between(self, label_id: int | None = None) -> Propagation:
        """Segment the slices between key slices of one object (:mod:`hrmedsegsam.fill`:
        each slice prompted from both ends).

        ``label_id`` None: the object being edited; its key slices are its prompted slices
        (their preview). An accepted object's id: the slices it has are the keys, and its
        gaps are filled. Returns a :class:`Propagation` whose :attr:`~Propagation.mask3d`
        starts with the key slices; commit it with :meth:`commit_propagation` (with
        ``label_id`` for an accepted object). The key slices are never changed.

        Raises:
            PromptError: no two key slices with slices between them, or no such object.
        """
        from hrmedsegsam.fill import fill_steps, key_slices

        if label_id is None:
            mask3d = np.zeros(self.image.shape, bool)
            for z in self.state.slices():
                mask3d[z] = self.preview3d[z] > 0
        else:
            mask3d = _as_3d(self.session.object_mask(int(label_id))).copy()
            if not mask3d.any():
                raise PromptError(f"There is no object with id {label_id}.")
        keys = {z: mask3d[z] for z in key_slices(mask3d)}
        steps = fill_steps(
            self._need_predictor(), self.image, keys, self.window, key=self.embedding_key
        )
        return Propagation(steps, min(keys), mask3d, [], keys=sorted(keys))

    def propagate_objects(
        self, label_ids: Sequence[int] | None = None, rule: StopRule | None = None
    ) -> MultiPropagation:
        """Extend accepted objects (all of them, or ``label_ids``) beyond the slices they
        have, up and down, one after the other in one run (the rules of :meth:`propagate`).

        Returns a :class:`~hrmedsegsam.multi_propagation.MultiPropagation` (an iterator of
        per-object, per-slice steps; nothing is committed until :meth:`commit_objects`).

        Raises:
            PromptError: no accepted object, an unknown id, or a 2D image.
        """
        from hrmedsegsam.multi_propagation import MultiPropagation
        from hrmedsegsam.volume import StopRule, propagate_steps

        if self.image.shape[0] == 1:
            raise PromptError("Propagation needs a 3D volume; this image is 2D.")
        ids = (
            [o.id for o in self.session.objects()]
            if label_ids is None
            else [int(i) for i in label_ids]
        )
        if not ids:
            raise PromptError("There is no accepted object to propagate: accept one first.")
        masks = {}
        for i in ids:
            masks[i] = _as_3d(self.session.object_mask(i))
            if not masks[i].any():
                raise PromptError(f"There is no object with id {i}.")
        predictor = self._need_predictor()
        rule = rule if rule is not None else StopRule()

        def factory(
            lid: int, z: int, start: np.ndarray, direction: str, stops: list[PropagationStop]
        ) -> Iterator[PropagationStep]:
            return propagate_steps(
                predictor,
                self.image,
                z,
                start,
                self.window,
                key=self.embedding_key,
                direction=direction,
                rule=rule,
                stops=stops,
            )

        return MultiPropagation(masks, factory)

    def commit_objects(self, run: MultiPropagation, overwrite: bool = False) -> list[int]:
        """Commit what ``run`` found (finished or cancelled), one undo step per object that
        gained slices; returns those objects' ids. Other objects' voxels are kept unless
        ``overwrite``; the slices an object had are left as they are, and so are the
        prompts and preview of the object being edited.
        """
        changed = []
        for lid, mask in run.masks.items():
            now = _as_3d(self.session.object_mask(lid))
            new = [z for z in range(mask.shape[0]) if mask[z].any() and not now[z].any()]
            if not new:
                continue
            self.session.commit(
                mask,
                label_id=lid,
                overwrite=overwrite,
                slices=new,
                next_state=None,  # the object being edited, if any, stays as it is
                description=f"propagate {self.session.name_of(lid)}",
            )
            changed.append(lid)
        return changed

    # ------------------------------------------------------------------ files
    def segments(self) -> list[Segment]:
        """Name and colour of every object in the labels, for exports."""
        from hrmedsegsam.io.seg import Segment

        return [Segment(o.id, o.name, o.color) for o in self.session.objects()]

    def export(
        self, path: str | Path, like: Volume, overwrite: bool = False, fmt: str | None = None
    ) -> Path:
        """Write the labels on the grid of ``like`` with the objects' names and colours:
        NIfTI plus its ``.labels.tsv`` table, or DICOM SEG for ``.dcm`` / ``fmt="seg"``
        (see :func:`hrmedsegsam.io.export.export_labels`). Returns the labels file.
        """
        from hrmedsegsam.io.export import export_labels

        return export_labels(
            path, self.labels, like, self.segments(), overwrite=overwrite, fmt=fmt
        )[0]

    def save_session(
        self, path: str | Path, like: Volume, *, image_fingerprint: str | None = None
    ) -> Path:
        """Save labels, objects (names, colours, prompts) and window as a session folder
        (see :mod:`hrmedsegsam.session_file`); ``like`` is the source volume.
        """
        from hrmedsegsam.session_file import save_session

        return save_session(
            path,
            self.labels,
            self.session.infos(),
            like,
            self.window,
            image_fingerprint=image_fingerprint,
        )

    def open_session(
        self, path: str | Path, like: Volume, *, image_fingerprint: str | None = None
    ) -> SavedSession:
        """Replace this annotation's labels, objects and window with the session saved at
        ``path`` (for the image ``like``; another image's session is refused). The prompts,
        preview and undo history start afresh. Returns what was read.
        """
        from hrmedsegsam.session_file import load_session

        saved = load_session(path, like, image_fingerprint=image_fingerprint)
        self.session.restore(saved.labels, saved.objects)
        if saved.window is not None:
            self.window = saved.window
        self.preview3d[:] = 0
        self.forget_predictions()
        return saved

    def open_seg(self, path: str | Path, like: Volume) -> list[Segment]:
        """Replace this annotation's labels and objects with a DICOM SEG of the series
        ``like`` was read from (each segment on its referenced source frames, with its
        name and colour); a SEG of another series is refused. Returns its segments.
        """
        from hrmedsegsam.io.seg import read_seg
        from hrmedsegsam.session import ObjectInfo

        labels, segments = read_seg(path, like)
        self.session.restore(labels, {s.label_id: ObjectInfo(s.name, s.color) for s in segments})
        self.preview3d[:] = 0
        self.forget_predictions()
        return segments

    # ------------------------------------------------------------------ internals
    def _need_predictor(self) -> Predictor:
        if self.predictor is None:
            raise HRMedSegSAMError("No model loaded: choose a model first.")
        if self.store is not None:
            self._read_store_through(self.predictor)
        return self.predictor

    def set_store(self, store: EmbeddingStore | None) -> None:
        """Read precomputed embeddings from ``store`` before computing any from now on
        (None: compute everything). Embeddings already in the predictor's cache stay.
        """
        if self.predictor is not None and self.predictor.features_source is self.store_source:
            self.predictor.features_source = None
        self.store, self.store_source, self._store_model = store, None, None

    def store_summary(self) -> str | None:
        """One line on whether the store serves this image, window and model (None without
        a store or a model).
        """
        if self.store is None or self.predictor is None:
            return None
        from hrmedsegsam.embedding_store import ModelIdentity

        if self.window is None:
            return (
                "store: it holds fixed windows, this image has per-slice ones; computing embeddings"
            )
        identity = ModelIdentity.of(self.predictor.model)
        return self.store.summary(self.image, self.window, identity)[1]

    def _read_store_through(self, predictor: Predictor) -> None:
        """Make ``predictor`` consult the store for this image's slices (its model's entries)."""
        src = self.store_source
        if (
            src is None
            or predictor.features_source is not src
            or self._store_model is not predictor.model
        ):
            from hrmedsegsam.embedding_store import ModelIdentity

            assert self.store is not None
            src = self.store.source_for(
                self.image, ModelIdentity.of(predictor.model), self.slice_of_key
            )
            self.store_source = predictor.features_source = src
            self._store_model = predictor.model

    def _prompt_kwargs(
        self, state: PromptState, z: int
    ) -> tuple[dict[str, Any], StrokePrompts | None]:
        """``Predictor.predict`` keyword arguments for slice ``z``, and its strokes as
        prompts (None without strokes).
        """
        kwargs = state.predict_kwargs(z)
        strokes = None
        on_slice = state.strokes_on(z)
        if on_slice:
            strokes = stroke_prompts(
                [(s.as_array(), s.positive, s.closed) for s in on_slice],
                self.image.shape[1:],
                has_box="box" in kwargs,
            )
            if strokes.box is not None:
                kwargs["box"] = strokes.box
            if len(strokes.points):
                kwargs["points"] = [*kwargs.get("points", []), *strokes.points.tolist()]
                kwargs["labels"] = [*kwargs.get("labels", []), *strokes.labels.tolist()]
        if state.object_id is not None and kwargs and "box" not in kwargs:
            # a reopened object: its committed mask on this slice frames the refinement
            bb = bbox_xyxy(self.session.slice_mask(state.object_id, z))
            if bb is not None:
                h, w = self.image.shape[1:]
                x0, y0, x1, y1 = bb
                kwargs["box"] = [
                    max(x0 - 1, 0),
                    max(y0 - 1, 0),
                    min(x1 + 1, w - 1),
                    min(y1 + 1, h - 1),
                ]
        return kwargs, strokes

    def _feedback(self, z: int, state: PromptState) -> tuple[np.ndarray | None, Prediction | None]:
        """The previous prediction's logits when the new prompts only add points to it,
        and that prediction itself when they add exactly one click (and the slice has no
        strokes, whose points would follow the click): the click then refines it.
        """
        points, box = state.on_slice(z)
        strokes = tuple(state.strokes_on(z))
        for (pz, (ppoints, pbox, pid, pstrokes), pwin), pred in reversed(self._predictions.items()):
            if pz != z or pwin != self.window or pid != state.object_id or pbox != box:
                continue
            if pstrokes != strokes:
                continue
            grown = len(ppoints) < len(points) and tuple(points[: len(ppoints)]) == ppoints
            if grown and (ppoints or pbox is not None or pstrokes):
                one_click = len(points) == len(ppoints) + 1 and not strokes
                return pred.logits, pred if one_click else None
        return None, None

    def _step(self, fn: Any) -> tuple[HistoryEntry | None, list[int]]:
        before = self.session.state
        entry = fn()
        if entry is None:
            return None, []
        after = self.session.state
        if before.object_id != after.object_id or entry.diff is not None:
            self.preview3d[:] = 0
            before = PromptState()
        return entry, self.changed_slices(before, after)


def _as_3d(array: np.ndarray) -> np.ndarray:
    return array[np.newaxis] if array.ndim == 2 else array
