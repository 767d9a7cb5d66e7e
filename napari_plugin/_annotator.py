"""AnnotatorModel: the annotation widget's state and actions, without any Qt widget.

It adapts the headless core, :class:`~hrmedsegsam.interactive.InteractiveAnnotation`, to
napari: the core edits the target Labels layer's array and the ``current object`` preview
layer's array in place; prompts come from two helper layers (points, box); the core's slow
half (:meth:`~hrmedsegsam.interactive.InteractiveAnnotation.compute`, embedding and
decoding) runs in a :class:`ComputeThread`. Prediction policy, the embedding cache keys,
prefetch choices and propagation live in the core, not here.
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

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from hrmedsegsam.errors import HRMedSegSAMError
from hrmedsegsam.interactive import InteractiveAnnotation, PredictionRequest
from hrmedsegsam.session import AnnotationSession, PromptState
from napari_plugin import _prompt_layers as pl
from napari_plugin._compute import ComputeThread, Job
from napari_plugin._geometry import META_KEY

AS_DISPLAYED = "as displayed"
WINDOW_CHOICES = (AS_DISPLAYED, "abdomen", "lung", "bone", "brain", "percentile")


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
        self.core: InteractiveAnnotation | None = None

        self._deliver = deliver or _main_thread_deliver()
        self._compute = ComputeThread(self._deliver, on_status=self._on_activity)
        self._activity = ""
        self._message = "Open an image, then click points or drag a box on it."
        self._syncing = False
        self._rebuilding = False  # guards sync_with_layers against its own layer removals
        self._closed = False
        self._window_cache: dict[str, tuple[float, float]] = {}
        self._pending: dict[int, tuple] = {}  # z -> key of the request being computed
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

    @property
    def session(self) -> AnnotationSession | None:
        """The core's session (objects, prompts, undo), None without an image."""
        return self.core.session if self.core is not None else None

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
        self._window_cache.clear()
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
        self.core = InteractiveAnnotation(
            self.image_layer.data, self.window(), self.predictor,
            labels=data, preview=self.preview_layer.data, spacing_zyx=spacing,
        )
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
            from hrmedsegsam import Predictor, load_model

            self.predictor = Predictor(load_model(name))
            return name

        def done(loaded: str) -> None:
            self.model_name = loaded
            if self.core is not None:
                self.core.predictor = self.predictor
                self.core.forget_predictions()
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
            self.image_layer = self.labels_layer = self.core = None
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
        if self._syncing or self.core is None or action.endswith("ing"):
            return
        if self.points_layer is not None:
            pl.recolor_points(self.points_layer)
        state, dropped = pl.state_from_layers(
            self.points_layer, self.box_layer, self.core.session.shape_zyx, self.core.session.current_id
        )
        if dropped:
            self._say(f"{dropped} prompt(s) outside the image were ignored.")
        if len(state.boxes) != len([s for s in self.box_layer.shape_type if s == "rectangle"]):
            self._show_state(state)  # a second box on a slice replaces the first
        before = self.core.state
        if before != state:
            self._predict_slices(self.core.set_prompts(state))
            self.events.history()

    def _predict_slices(self, slices: list[int]) -> None:
        """Predicts ``slices`` (nearest to the shown one first) after the prompts changed."""
        self.preview_layer.refresh()
        for z in sorted(slices, key=lambda s: abs(s - self.current_z())):
            self._request_prediction(z)

    def _repredict_all(self) -> None:
        if self.core is not None and self.image_layer is not None:
            self.core.window = self.window()
            for z in self.core.state.slices():
                self._request_prediction(z)

    def _request_prediction(self, z: int) -> None:
        core = self.core
        core.window = self.window()
        request = core.request(z)
        if not isinstance(request, PredictionRequest):  # no prompt here, or a kept prediction
            self._pending.pop(z, None)
            self.preview_layer.refresh()
            if request is not None:
                self._report_prediction(z, request)
            return
        if core.predictor is None:
            self._say("No model loaded: choose a model in the widget.")
            return
        self._pending[z] = request.key
        label = f"Predicting slice {z}…" if core.is_embedded(z) else f"Computing the embedding of slice {z}…"
        self._compute.submit(
            Job(
                lambda: core.compute(request),
                label,
                on_done=lambda pred: self._on_prediction(request, pred),
                on_error=lambda exc: self._on_prediction_error(z, request.key, exc),
                coalesce=("predict", z),
            )
        )
        self._emit_busy()

    def _on_prediction(self, request: PredictionRequest, pred: Any) -> None:
        if self._closed or self.core is None:
            return
        z = request.z
        if self._pending.get(z) == request.key:
            del self._pending[z]
            if self.core.show(request, pred):
                self.preview_layer.refresh()
                self._report_prediction(z, pred)
        self._after_prediction()

    def _on_prediction_error(self, z: int, key: tuple, exc: BaseException) -> None:
        if self._pending.get(z) == key:
            del self._pending[z]
        self._on_error(exc)
        self._after_prediction()

    def _report_prediction(self, z: int, pred: Any) -> None:
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
        if self.core is None or self.predictor is None:
            return
        core = self.core
        core.window = self.window()
        self._compute.set_prefetch([
            Job(lambda z=z: core.embed(z), f"Prefetching the embedding of slice {z}…")
            for z in core.prefetch_requests(self.current_z(), self.prefetch_radius)
        ])

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
        slices = self.core.state.slices()
        label_id = self.core.accept(self.target_id or None, self.overwrite)
        self._after_commit()
        name = self.core.session.name_of(label_id)
        self._say(f"Accepted {name} (label {label_id}) on {len(slices)} slice(s). Next object.")
        return label_id

    def next_object(self) -> None:
        """Discards the current prompts and preview; the next prompt starts a new object."""
        if self.core is None:
            return
        if self.core.next_object():
            self._pending.clear()
            self.preview_layer.refresh()
            self._show_state(self.core.state)
            self.events.history()
        self._say("Next object: click points or drag a box.")

    def reopen(self, label_id: int) -> None:
        """Refine an accepted object: its mask becomes the preview and the prompt frame."""
        slices = self.core.reopen(label_id)
        self._pending.clear()
        self._show_state(self.core.state)
        self._predict_slices(slices)
        obj = next(o for o in self.core.session.objects() if o.id == int(label_id))
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
        self._step(self.core.undo if self.core else None, "undo")

    def redo(self) -> None:
        self._step(self.core.redo if self.core else None, "redo")

    def _step(self, fn: Callable | None, verb: str) -> None:
        if fn is None or self._propagating:
            return
        entry, slices = fn()
        if entry is None:
            self._say(f"Nothing to {verb}.")
            return
        if entry.diff is not None:
            self.labels_layer.refresh()
            self.events.objects()
        self._pending.clear()
        self._show_state(self.core.state)
        self._predict_slices(slices)
        self.events.history()
        self._say(f"{verb.capitalize()}: {entry.description}.")

    def propagate(self) -> None:
        """Segments the current object through the volume from the shown slice, in the
        compute thread, with a napari progress bar; the result is committed (one undo
        step). :meth:`cancel` stops it and keeps the slices done so far.
        """
        if self.core is None:
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
        self.core.window = self.window()
        steps = self.core.propagate(z, self.propagate_rule)  # raises if slice z has no object
        mask3d = np.zeros(self.image3d.shape, bool)
        mask3d[z] = self.preview3d[z].astype(bool)
        self._cancel.clear()
        self._start_progress(mask3d.shape[0] - 1)
        report, cancelled = self._deliver, self._cancel.is_set

        def work() -> np.ndarray:
            while not cancelled():
                step = next(steps, None)
                if step is None:
                    break
                mask3d[step.z] = step.mask
                report(self._on_progress, (step.done, step.total))
            return mask3d

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
            label_id = self.core.commit_volume(mask3d, self.target_id or None, self.overwrite)
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
            self.preview_layer.refresh()
            self._show_state(self.core.state)
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
