"""AnnotatorModel: the annotation widget's state and actions, without any Qt widget.

It adapts the library to napari layers: an :class:`~hrmedsegsam.session.AnnotationSession`
over the target Labels layer's array (the same array, edited in place), a
:class:`~hrmedsegsam.predictor.Predictor` driven from a :class:`ComputeThread`, and four
helper layers (the ``current object`` preview, prompt points, prompt box, and the labels).
The Qt view (:mod:`napari_plugin._widget`) only calls these methods and listens to
:attr:`AnnotatorModel.events`:

``status`` (``value``: text), ``objects`` (the object list may have changed), ``history``
(undo/redo availability), ``busy`` (``value``: bool), ``propagating`` (``value``: bool).

Flow: a prompt edit in a napari layer -> :meth:`_on_prompt_layer_changed` -> the session
records the new :class:`PromptState` (an undo step) -> every slice whose prompts changed
is predicted in the compute thread -> the mask lands in the preview layer on that slice.
**Accept** commits the preview of the prompted slices into the labels; **Propagate**
segments through the volume from the shown slice and commits the result.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from hrmedsegsam.errors import HRMedSegSAMError, PromptError
from hrmedsegsam.session import AnnotationSession, PromptState
from napari_plugin import _prompt_layers as pl
from napari_plugin._compute import ComputeThread, Job
from napari_plugin._geometry import META_KEY

AS_DISPLAYED = "as displayed"
WINDOW_CHOICES = (AS_DISPLAYED, "abdomen", "lung", "bone", "brain", "percentile")
_PREDICTION_CACHE = 12  # recent predictions kept to make undo/redo of prompts instant
_TOKENS = itertools.count(1)  # one per annotated image: embedding cache keys never collide


def _main_thread_deliver() -> Callable[[Callable, Any], None]:
    from superqt.utils import ensure_main_thread

    @ensure_main_thread
    def deliver(callback: Callable, value: Any) -> None:
        callback(value)

    return deliver


class AnnotatorModel:
    """State and actions of the annotation widget for one napari viewer.

    Args:
        viewer: The napari viewer.
        predictor: A ready :class:`~hrmedsegsam.predictor.Predictor` (tests pass one over a
            randomly initialised model); otherwise call :meth:`load_model`.
        prefetch_radius: While idle, embed up to this many slices on each side of the shown one.
        deliver: ``deliver(callback, value)`` running ``callback(value)`` on the UI thread;
            default superqt's ``ensure_main_thread``.
    """

    def __init__(
        self,
        viewer: Any,
        predictor: Any = None,
        *,
        prefetch_radius: int = 2,
        deliver: Callable[[Callable, Any], None] | None = None,
    ) -> None:
        from napari.utils.events import EmitterGroup

        self.viewer = viewer
        self.events = EmitterGroup(
            source=self, status=None, objects=None, history=None, busy=None, propagating=None
        )
        self.predictor = predictor
        self.model_name = "hrmedsegsam" if predictor is None else "custom"
        self.prefetch_radius = int(prefetch_radius)
        self.window_choice = AS_DISPLAYED
        self.overwrite = True
        self.target_id = 0  # 0: automatic (the reopened object, else the next free id)
        self.negative = False
        self.propagate_rule: Any = None  # a hrmedsegsam.volume.StopRule; None: its defaults

        self.image_layer: Any = None
        self.labels_layer: Any = None
        self.preview_layer: Any = None
        self.points_layer: Any = None
        self.box_layer: Any = None
        self.session: AnnotationSession | None = None

        self._deliver = deliver or _main_thread_deliver()
        self._compute = ComputeThread(self._deliver, on_status=self._on_activity)
        self._activity = ""
        self._message = "Open an image, then click points or drag a box on it."
        self._syncing = False
        self._rebuilding = False  # guards sync_with_layers against its own layer removals
        self._closed = False
        self._token = 0  # identifies the image (+ window) in embedding cache keys
        self._window_cache: dict[str, tuple[float, float]] = {}
        self._pending: dict[int, tuple] = {}  # z -> the slice prompts being predicted
        self._predictions: OrderedDict[tuple, Any] = OrderedDict()  # (z, key, window) -> Prediction
        self._after_predictions: list[Callable[[], None]] = []
        self._cancel = threading.Event()
        self._progress: Any = None
        self._propagating = False

    # ================================================================ properties
    @property
    def status(self) -> str:
        """The last message, and on a second line what the model is computing, if anything."""
        return f"{self._message}\n{self._activity}" if self._activity else self._message

    @property
    def busy(self) -> bool:
        """The model is working on something the user waits for (not prefetch)."""
        return bool(self._pending) or self._propagating or self._compute.busy

    @property
    def ndim(self) -> int:
        return int(np.asarray(self.image_layer.data).ndim) if self.image_layer is not None else 0

    @property
    def image3d(self) -> np.ndarray:
        data = self.image_layer.data
        return data[np.newaxis] if data.ndim == 2 else data

    @property
    def preview3d(self) -> np.ndarray:
        data = self.preview_layer.data
        return data[np.newaxis] if data.ndim == 2 else data

    def current_z(self) -> int:
        """The slice shown (data index of the image's first axis; 0 for a 2D image)."""
        if self.image_layer is None or self.ndim == 2:
            return 0
        pos = self.image_layer.world_to_data(self.viewer.dims.point)
        nz = self.image3d.shape[0]
        return int(np.clip(round(float(pos[0])), 0, nz - 1))

    def set_current_z(self, z: int) -> None:
        """Shows slice ``z`` of the image."""
        if self.image_layer is None or self.ndim == 2:
            return
        point = list(self.image_layer.world_to_data(self.viewer.dims.point))
        point[0] = float(z)
        world = self.image_layer.data_to_world(point)
        self.viewer.dims.set_point(0, float(world[0]))

    def window(self) -> tuple[float, float]:
        """The intensity window the model sees: a preset, or the displayed contrast limits."""
        if self.window_choice == AS_DISPLAYED:
            lo, hi = (float(v) for v in self.image_layer.contrast_limits)
            return (lo, hi) if hi > lo else (lo, lo + 1.0)
        if self.window_choice not in self._window_cache:
            from hrmedsegsam.intensity import resolve_window

            modality = self.image_layer.metadata.get(META_KEY, {}).get("modality", "")
            self._window_cache[self.window_choice] = resolve_window(
                self.image3d, preset=self.window_choice, modality=modality
            )
        return self._window_cache[self.window_choice]

    def _key(self, z: int) -> tuple:
        return ("napari", self._token, int(z))

    # ================================================================ setup
    def set_image_layer(self, layer: Any, labels_layer: Any = None) -> None:
        """Annotate ``layer``: makes (or reuses) the labels, preview and prompt layers."""
        from napari.layers import Image

        if not isinstance(layer, Image) or getattr(layer, "rgb", False):
            raise HRMedSegSAMError("Choose a greyscale Image layer to annotate.")
        if np.asarray(layer.data).ndim not in (2, 3):
            raise HRMedSegSAMError(
                f"Only 2D and 3D images can be annotated; {layer.name!r} has "
                f"{np.asarray(layer.data).ndim} dimensions."
            )
        rebuilding, self._rebuilding = self._rebuilding, True
        try:
            self._attach(layer, labels_layer)
        finally:
            self._rebuilding = rebuilding

    def _attach(self, layer: Any, labels_layer: Any) -> None:
        self._disconnect()
        self._compute.clear()
        self._token = next(_TOKENS)
        self._window_cache.clear()
        self._predictions.clear()
        self._pending.clear()
        self.image_layer = layer
        self.labels_layer = None
        for old in [lay for lay in self.viewer.layers if pl.role(lay) is not None]:
            self.viewer.layers.remove(old)
        labels = labels_layer if labels_layer is not None else self._find_or_make_labels()
        self.preview_layer = pl.make_preview_layer(self.viewer, layer)
        self.box_layer = pl.make_box_layer(self.viewer, layer)
        self.points_layer = pl.make_points_layer(self.viewer, layer)
        pl.set_negative_mode(self.points_layer, self.negative)
        self.set_labels_layer(labels)
        layer.events.contrast_limits.connect(self._on_contrast_changed)
        self.viewer.dims.events.current_step.connect(self._on_slice_changed)
        self.points_layer.events.data.connect(self._on_prompt_layer_changed)
        self.box_layer.events.data.connect(self._on_prompt_layer_changed)
        self.viewer.layers.selection.active = self.points_layer
        self._say(f"Annotating {layer.name}: click points (N toggles negative) or drag a box.")
        self._schedule_prefetch()

    def set_labels_layer(self, layer: Any) -> None:
        """Commits go into ``layer`` (same shape as the image); starts a new session."""
        shape = np.asarray(self.image_layer.data).shape
        data = layer.data
        if not isinstance(data, np.ndarray) or data.dtype.kind not in "iu":
            data = np.asarray(data).astype(np.int32)
            layer.data = data
        if data.shape != shape:
            raise HRMedSegSAMError(
                f"The labels layer {layer.name!r} is {data.shape} but the image is {shape}."
            )
        if META_KEY not in layer.metadata and META_KEY in self.image_layer.metadata:
            layer.metadata = {**layer.metadata, META_KEY: self.image_layer.metadata[META_KEY]}
        if self.labels_layer is not None:
            self._disconnect_labels()
        self.labels_layer = layer
        meta = self.image_layer.metadata.get(META_KEY)
        spacing = tuple(meta["spacing"][::-1]) if meta else tuple(self.image_layer.scale)[-3:]
        if data.ndim == 2:
            spacing = (1.0,) + tuple(spacing[-2:])
        self.session = AnnotationSession(data, spacing_zyx=spacing)
        layer.events.paint.connect(self._emit_objects)
        layer.events.data.connect(self._emit_objects)
        self._clear_preview()
        self._show_state(self.session.state)
        self.events.objects()
        self.events.history()

    def _find_or_make_labels(self) -> Any:
        from napari.layers import Labels

        shape = np.asarray(self.image_layer.data).shape
        name = f"{self.image_layer.name} labels"
        for lay in self.viewer.layers:
            if isinstance(lay, Labels) and pl.role(lay) is None and lay.data.shape == shape:
                return lay
        from napari_plugin._geometry import same_transform_kwargs

        return self.viewer.add_labels(
            np.zeros(shape, dtype=np.int32),
            name=name,
            metadata={k: v for k, v in self.image_layer.metadata.items() if k == META_KEY},
            **same_transform_kwargs(self.image_layer),
        )

    def load_model(self, name: str) -> None:
        """Loads model ``name`` (see ``hrmedsegsam.model.build.available_models``) in the
        compute thread; errors (e.g. missing weights) go to the status line.
        """

        def work() -> str:
            from hrmedsegsam.model.build import load_model
            from hrmedsegsam.predictor import Predictor

            self.predictor = Predictor(load_model(name))
            return name

        def done(loaded: str) -> None:
            self.model_name = loaded
            self._predictions.clear()
            self._say(f"Model {loaded} ready.")
            self._repredict_all()

        self._compute.submit(Job(work, f"Loading model {name}…", done, self._on_error))
        self._emit_busy()

    def set_window_choice(self, choice: str) -> None:
        if choice not in WINDOW_CHOICES:
            raise HRMedSegSAMError(f"Unknown window {choice!r}; choose one of {', '.join(WINDOW_CHOICES)}.")
        self.window_choice = choice
        self._repredict_all()
        self._schedule_prefetch()

    def set_negative(self, negative: bool) -> None:
        """New points are negative (``True``) or positive."""
        self.negative = bool(negative)
        if self.points_layer is not None:
            pl.set_negative_mode(self.points_layer, self.negative)

    def use_points(self) -> None:
        """Selects the points layer in 'add' mode (click to add a prompt point)."""
        if self.points_layer is not None:
            self.viewer.layers.selection.active = self.points_layer
            self.points_layer.mode = "add"

    def use_box(self) -> None:
        """Selects the box layer in rectangle mode (drag to draw the box prompt)."""
        if self.box_layer is not None:
            self.viewer.layers.selection.active = self.box_layer
            self.box_layer.mode = "add_rectangle"

    def on_layer_inserted(self, layer: Any) -> None:
        """A label map opened onto the annotated image (see the reader) becomes the target,
        so it can be corrected and exported with the image's geometry.
        """
        from napari.layers import Labels

        if (
            self.image_layer is not None
            and isinstance(layer, Labels)
            and pl.role(layer) is None
            and "resampled_from" in layer.metadata
            and layer.data.shape == np.asarray(self.image_layer.data).shape
        ):
            self.set_labels_layer(layer)
            layers = self.viewer.layers
            if self.preview_layer in layers:  # keep the prompts and preview drawn on top
                layers.move(layers.index(layer), layers.index(self.preview_layer))
            self._say(f"Correcting {layer.name}: new objects get the next free id.")

    def sync_with_layers(self) -> None:
        """After layers were removed: if the image, the labels or a helper layer is gone,
        let go of the image (and remove the remaining helpers). Never adds layers, so a
        viewer that closes (removing every layer) is left alone.
        """
        if self._rebuilding or self.image_layer is None:
            return
        mine = (self.image_layer, self.labels_layer, self.preview_layer, self.points_layer, self.box_layer)
        if all(layer in self.viewer.layers for layer in mine):
            return
        self._rebuilding = True
        try:
            self._disconnect()
            self._compute.clear()
            self._pending.clear()
            self.image_layer = self.labels_layer = self.session = None
            self.preview_layer = self.points_layer = self.box_layer = None
            for helper in mine[2:]:
                if helper in self.viewer.layers:
                    self.viewer.layers.remove(helper)
            self._say("A layer of the annotation was removed; choose the image to go on.")
            self.events.objects()
            self.events.history()
        finally:
            self._rebuilding = False

    def close(self) -> None:
        """Stops the compute thread and disconnects from the layers."""
        self._closed = True
        self._cancel.set()
        self._compute.stop()
        self._disconnect()
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    # ================================================================ prompts -> predictions
    def _on_prompt_layer_changed(self, event: Any = None) -> None:
        action = getattr(event, "action", "changed")
        action = str(getattr(action, "value", action))
        if self._syncing or self.session is None or action.endswith("ing"):
            return
        if self.points_layer is not None:
            pl.recolor_points(self.points_layer)
        state, dropped = pl.state_from_layers(
            self.points_layer, self.box_layer, self.session.shape_zyx, self.session.current_id
        )
        if dropped:
            self._say(f"{dropped} prompt(s) outside the image were ignored.")
        if len(state.boxes) != len([s for s in self.box_layer.shape_type if s == "rectangle"]):
            self._show_state(state)  # a second box on a slice replaces the first
        before = self.session.state
        if self.session.set_prompts(state):
            self._update_predictions(before, state)
            self.events.history()

    def _update_predictions(self, before: PromptState, after: PromptState) -> None:
        """Re-predicts (or clears) every slice whose prompts differ between two states."""
        if before.object_id != after.object_id:
            self._clear_preview()
            if after.object_id is not None:
                self.preview3d[:] = self.session.object_mask(after.object_id).reshape(self.preview3d.shape)
                self.preview_layer.refresh()
            slices = set(before.slices()) | set(after.slices())
        else:
            slices = {
                z
                for z in set(before.slices()) | set(after.slices())
                if before.slice_key(z) != after.slice_key(z)
            }
        for z in sorted(slices, key=lambda s: abs(s - self.current_z())):
            self._request_prediction(z)

    def _repredict_all(self) -> None:
        if self.session is not None and self.image_layer is not None:
            for z in self.session.state.slices():
                self._request_prediction(z)

    def _prompt_kwargs(self, state: PromptState, z: int) -> dict:
        kwargs = state.predict_kwargs(z)
        if state.object_id is not None and kwargs and "box" not in kwargs:
            # a reopened object: its committed mask on this slice frames the refinement
            from hrmedsegsam.masks import bbox_xyxy

            bb = bbox_xyxy(self.session.slice_mask(state.object_id, z))
            if bb is not None:
                h, w = self.session.shape_zyx[1:]
                x0, y0, x1, y1 = bb
                kwargs["box"] = [max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, w - 1), min(y1 + 1, h - 1)]
        return kwargs

    def _request_prediction(self, z: int) -> None:
        state = self.session.state
        kwargs = self._prompt_kwargs(state, z)
        if not kwargs:
            self._pending.pop(z, None)
            seed = (
                self.session.slice_mask(state.object_id, z)
                if state.object_id is not None
                else False
            )
            self.preview3d[z] = seed
            self.preview_layer.refresh()
            return
        if self.predictor is None:
            self._say("No model loaded: choose a model in the widget.")
            return
        window = self.window()
        key = (z, state.slice_key(z), window)
        cached = self._predictions.get(key)
        if cached is not None:
            self._pending.pop(z, None)
            self._show_prediction(z, key, cached)
            return
        mask_input = self._feedback_logits(z, state, window)
        if mask_input is not None:
            kwargs["mask_input"] = mask_input
        seed = None
        if state.object_id is not None and "mask_input" not in kwargs:
            # a reopened object: its committed mask is the dense prompt to refine
            seed = self.session.slice_mask(state.object_id, z).copy()
        self._pending[z] = key
        predictor, image, ckey = self.predictor, self.image3d, self._key(z)
        cached_emb = predictor.is_cached(ckey, window)
        label = f"Predicting slice {z}…" if cached_emb else f"Computing the embedding of slice {z}…"

        def work() -> Any:
            emb = predictor.embed(np.asarray(image[z]), window, key=ckey)
            predictor.set_embedding(emb)
            if seed is not None and seed.any():
                return predictor.predict(**kwargs, mask_input=predictor.mask_to_logits(seed))
            return predictor.predict(**kwargs)

        self._compute.submit(
            Job(
                work,
                label,
                on_done=lambda pred: self._on_prediction(z, key, pred),
                on_error=lambda exc: self._on_prediction_error(z, key, exc),
                coalesce=("predict", z),
            )
        )
        self._emit_busy()

    def _feedback_logits(self, z: int, state: PromptState, window: tuple) -> np.ndarray | None:
        """The previous prediction's logits when the new prompts only add points to it."""
        points, box = state.on_slice(z)
        for (pz, (ppoints, pbox, pid), pwin), pred in reversed(self._predictions.items()):
            if pz != z or pwin != window or pid != state.object_id or pbox != box:
                continue
            grown = len(ppoints) < len(points) and tuple(points[: len(ppoints)]) == ppoints
            if grown and (ppoints or pbox is not None):
                return pred.logits
        return None

    def _on_prediction(self, z: int, key: tuple, pred: Any) -> None:
        if self._closed:
            return
        self._predictions[key] = pred
        while len(self._predictions) > _PREDICTION_CACHE:
            self._predictions.popitem(last=False)
        if self._pending.get(z) == key:
            del self._pending[z]
            self._show_prediction(z, key, pred)
        self._after_prediction()

    def _on_prediction_error(self, z: int, key: tuple, exc: BaseException) -> None:
        if self._pending.get(z) == key:
            del self._pending[z]
        self._on_error(exc)
        self._after_prediction()

    def _show_prediction(self, z: int, key: tuple, pred: Any) -> None:
        if self.session is None or key[1] != self.session.state.slice_key(z):
            return  # the prompts changed meanwhile; a newer request is on its way
        self.preview3d[z] = pred.mask
        self.preview_layer.refresh()
        if pred.mask.any():
            self._say(f"Slice {z}: predicted IoU {pred.score:.2f}. Accept, add prompts, or propagate.")
        else:
            self._say(f"Slice {z}: the model found nothing there; try a box or more points.")

    def _after_prediction(self) -> None:
        self._emit_busy()
        if not self._pending:
            callbacks, self._after_predictions = self._after_predictions, []
            for cb in callbacks:
                cb()
            self._schedule_prefetch()

    # ================================================================ prefetch
    def _schedule_prefetch(self) -> None:
        """While idle, embed the shown slice and its neighbours ahead of the user."""
        if self.predictor is None or self.image_layer is None or self.prefetch_radius <= 0:
            return
        z0, nz = self.current_z(), self.image3d.shape[0]
        window = self.window()
        order = [z0] + [z0 + s * d for d in range(1, self.prefetch_radius + 1) for s in (1, -1)]
        predictor, image = self.predictor, self.image3d
        jobs = []
        for z in order:
            key = self._key(z)
            if 0 <= z < nz and not predictor.is_cached(key, window):
                jobs.append(
                    Job(
                        lambda z=z, k=key: predictor.embed(np.asarray(image[z]), window, key=k),
                        f"Prefetching the embedding of slice {z}…",
                    )
                )
        self._compute.set_prefetch(jobs)

    def wait_idle(self, timeout: float = 60.0, include_prefetch: bool = False) -> bool:
        """Blocks until the compute thread is idle (scripts; not from the UI thread in Qt)."""
        return self._compute.wait_idle(timeout, include_prefetch)

    # ================================================================ actions
    def accept(self) -> int | None:
        """Commits the current object (the preview on the prompted slices) into the labels.

        Uses the chosen id (:attr:`target_id`) or the reopened object's id or the next free
        one, and the overwrite / keep-existing policy (:attr:`overwrite`). Returns the id, or
        None when the commit waits for a running prediction (it happens when that ends).
        """
        if self.session is None:
            raise HRMedSegSAMError("Open an image first.")
        if self._pending:
            self._after_predictions.append(self._accept_now_reporting)
            self._say("Accept: waiting for the prediction to finish…")
            return None
        return self._accept_now()

    def _accept_now_reporting(self) -> None:
        try:
            self._accept_now()
        except HRMedSegSAMError as exc:
            self._on_error(exc)

    def _accept_now(self) -> int:
        state = self.session.state
        slices = state.slices()
        if not slices:
            raise PromptError("Nothing to accept: add a point or a box first.")
        preview = self.preview3d
        np.minimum(preview, 1, out=preview)  # brushed-in values count as foreground
        label_id = self.session.commit(
            preview.view(bool),  # 0/1 bytes: a bool view, no copy of the volume
            label_id=self.target_id or None,
            overwrite=self.overwrite,
            slices=slices,
        )
        self._after_commit()
        name = self.session.name_of(label_id)
        self._say(f"Accepted {name} (label {label_id}) on {len(slices)} slice(s). Next object.")
        return label_id

    def next_object(self) -> None:
        """Discards the current prompts and preview; the next prompt starts a new object."""
        if self.session is None:
            return
        if self.session.clear_prompts():
            self._pending.clear()
            self._clear_preview()
            self._show_state(self.session.state)
            self.events.history()
        self._say("Next object: click points or drag a box.")

    def reopen(self, label_id: int) -> None:
        """Refine an accepted object: its mask becomes the preview and the prompt frame."""
        before = self.session.state
        state = self.session.reopen(label_id)
        self._pending.clear()
        self._show_state(state)
        self._update_predictions(before, state)
        obj = next(o for o in self.session.objects() if o.id == int(label_id))
        if not obj.z_min <= self.current_z() <= obj.z_max:
            self.set_current_z((obj.z_min + obj.z_max) // 2)
        self.events.history()
        self._say(f"Refining {obj.name}: add points or a box, then Accept.")

    def delete_object(self, label_id: int) -> None:
        self.session.delete_object(label_id)
        self._after_commit(clear=False)
        self._say(f"Deleted label {label_id} (Ctrl+Z to undo).")

    def rename(self, label_id: int, name: str) -> None:
        self.session.rename(label_id, name)
        self.events.objects()

    def undo(self) -> None:
        self._step(self.session.undo if self.session else None, "undo")

    def redo(self) -> None:
        self._step(self.session.redo if self.session else None, "redo")

    def _step(self, fn: Callable | None, verb: str) -> None:
        if fn is None or self._propagating:
            return
        before = self.session.state
        entry = fn()
        if entry is None:
            self._say(f"Nothing to {verb}.")
            return
        if entry.diff is not None:
            self.labels_layer.refresh()
            self.events.objects()
        after = self.session.state
        self._pending.clear()
        self._show_state(after)
        if before.object_id != after.object_id or entry.diff is not None:
            self._clear_preview()
            before = PromptState()
        self._update_predictions(before, after)
        self.events.history()
        self._say(f"{verb.capitalize()}: {entry.description}.")

    def propagate(self) -> None:
        """Segments the current object through the volume from the shown slice, in the
        compute thread, with a napari progress bar; the result is committed (one undo
        step). :meth:`cancel` stops it and keeps the slices done so far.
        """
        if self.session is None:
            raise HRMedSegSAMError("Open an image first.")
        if self.ndim != 3:
            raise HRMedSegSAMError("Propagation needs a 3D volume; this image is 2D.")
        if self.predictor is None:
            raise HRMedSegSAMError("No model loaded: choose a model first.")
        if self._propagating:
            return
        if self._pending:
            self._after_predictions.append(self._propagate_reporting)
            self._say("Propagate: waiting for the prediction to finish…")
            return
        z = self.current_z()
        start = self.preview3d[z].astype(bool)
        state = self.session.state
        if not start.any():
            raise PromptError(
                f"Nothing to propagate from slice {z}: prompt the object on this slice first."
            )
        from hrmedsegsam.volume import propagate

        window = self.window()
        key = (z, state.slice_key(z), window)
        prediction = self._predictions.get(key)
        start_logits = prediction.logits if prediction is not None else None
        predictor, image, token = self.predictor, self.image3d, ("napari", self._token)
        rule = self.propagate_rule
        self._cancel.clear()
        self._start_progress(image.shape[0] - 1)
        report = self._deliver

        def work() -> np.ndarray:
            kwargs = {"rule": rule} if rule is not None else {}
            return propagate(
                predictor,
                image,
                z,
                start,
                window,
                start_logits=start_logits,
                key_prefix=token,
                progress=lambda done, total: report(self._on_progress, (done, total)),
                cancel=self._cancel.is_set,
                **kwargs,
            )

        self._compute.clear()
        self._compute.submit(
            Job(work, f"Propagating from slice {z}…", self._on_propagated, self._on_propagate_error)
        )
        self._emit_busy()

    def _propagate_reporting(self) -> None:
        try:
            self.propagate()
        except HRMedSegSAMError as exc:
            self._on_error(exc)

    def cancel(self) -> None:
        """Stops a running propagation (what it found so far is kept)."""
        if self._propagating:
            self._cancel.set()
            self._say("Cancelling the propagation…")

    def _start_progress(self, total: int) -> None:
        from napari.utils import progress

        self._propagating = True
        self._progress = progress(total=max(1, total), desc="Propagating")
        self.events.propagating(value=True)

    def _on_progress(self, done_total: tuple[int, int]) -> None:
        if self._progress is not None:
            done, total = done_total
            self._progress.total = max(1, total)
            self._progress.n = min(done, total)
            self._progress.refresh()

    def _end_progress(self) -> None:
        self._propagating = False
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.events.propagating(value=False)
        self._emit_busy()

    def _on_propagated(self, mask3d: np.ndarray) -> None:
        if self._closed:
            return
        cancelled = self._cancel.is_set()
        self._end_progress()
        slices = np.flatnonzero(mask3d.reshape(mask3d.shape[0], -1).any(axis=1))
        try:
            label_id = self.session.commit(
                mask3d,
                label_id=self.target_id or None,
                overwrite=self.overwrite,
                description="propagate",
            )
        except HRMedSegSAMError as exc:
            self._on_error(exc)
            return
        self._after_commit()
        what = "Propagation cancelled; kept" if cancelled else "Propagated"
        self._say(
            f"{what} {self.session.name_of(label_id)} on {len(slices)} slice(s) "
            f"({int(slices.min())}..{int(slices.max())}). Ctrl+Z to undo."
        )
        self._schedule_prefetch()

    def _on_propagate_error(self, exc: BaseException) -> None:
        self._end_progress()
        self._on_error(exc)

    def export(self, path: str, overwrite: bool = False) -> str:
        """Writes the labels to NIfTI with the source geometry; never overwrites unless
        ``overwrite`` (the user confirmed). Returns the path written.
        """
        from napari_plugin._writer import write_layer

        if self.labels_layer is None:
            raise HRMedSegSAMError("There are no labels to export yet.")
        out = write_layer(path, self.labels_layer, overwrite=overwrite)
        self._say(f"Saved {out}.")
        return out

    def objects(self) -> list:
        return self.session.objects() if self.session is not None else []

    # ================================================================ events & helpers
    def _after_commit(self, clear: bool = True) -> None:
        self.labels_layer.refresh()
        if clear:
            self._pending.clear()
            self._clear_preview()
            self._show_state(self.session.state)
        self.events.objects()
        self.events.history()

    def _clear_preview(self) -> None:
        if self.preview_layer is not None:
            self.preview3d[:] = 0
            self.preview_layer.refresh()

    def _show_state(self, state: PromptState) -> None:
        if self.points_layer is None:
            return
        self._syncing = True
        try:
            pl.show_state(self.points_layer, self.box_layer, state, self.ndim)
        finally:
            self._syncing = False

    def _on_slice_changed(self, event: Any = None) -> None:
        if not self._propagating:
            self._schedule_prefetch()

    def _on_contrast_changed(self, event: Any = None) -> None:
        if self.window_choice == AS_DISPLAYED:
            self._repredict_all()

    def _on_activity(self, text: str) -> None:
        if self._closed:
            return
        self._activity = text
        self.events.status(value=self.status)
        self._emit_busy()

    def _on_error(self, exc: BaseException) -> None:
        if self._closed:
            return
        if isinstance(exc, HRMedSegSAMError):
            self._say(str(exc))
        else:  # a bug, not the user's input: keep the type in the message
            self._say(f"Error: {type(exc).__name__}: {exc}")

    def _say(self, message: str) -> None:
        self._message = message
        self.events.status(value=self.status)

    def _emit_busy(self) -> None:
        self.events.busy(value=self.busy)

    def _emit_objects(self, event: Any = None) -> None:
        self.events.objects()

    def _disconnect_labels(self) -> None:
        if self.labels_layer is not None:
            for emitter in (self.labels_layer.events.paint, self.labels_layer.events.data):
                emitter.disconnect(self._emit_objects)

    def _disconnect(self) -> None:
        if self.image_layer is not None:
            self.image_layer.events.contrast_limits.disconnect(self._on_contrast_changed)
            self.viewer.dims.events.current_step.disconnect(self._on_slice_changed)
        for layer in (self.points_layer, self.box_layer):
            if layer is not None:
                layer.events.data.disconnect(self._on_prompt_layer_changed)
        self._disconnect_labels()
