"""AnnotatorModel: keeps napari layers in step with the headless annotation core.

The core (:class:`~hrmedsegsam.interactive.InteractiveAnnotation`) owns prompts,
predictions, embedding keys, prefetch choices, the window, commits, history and
propagation, and edits the labels and preview arrays in place. This class attaches the
core to an image layer and its helper layers (:class:`~napari_plugin._layer_set.LayerSet`),
turns the widget's actions into core calls and refreshes the layers after them; its slow
half runs through :class:`~napari_plugin._core_jobs.CoreJobs`. Two parts of it have a file
of their own: :class:`~napari_plugin._preview_sync.PreviewSync` (prompt layers and the
displayed window in, the preview out) and
:class:`~napari_plugin._propagation_runs.PropagationRuns` (propagate, fill between,
propagate all). The Qt view (:mod:`napari_plugin._widget`) calls its methods and listens to
:attr:`events`: ``status`` (``value``: text), ``objects``, ``history``, ``busy`` /
``propagating`` (``value``: bool), ``task`` (``value``: what the run does, e.g.
``"Propagating liver from slice 12"``), ``progress`` (``value``: ``(done, total)``),
``committed`` (the labels changed by an accept, a run, delete, island removal or undo/redo
of one), ``attached`` (annotating a new image or labels layer). Persistence (sessions,
autosave, exports) is :mod:`napari_plugin._sessions`, listening to these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hrmedsegsam.errors import HRMedSegSAMError
from hrmedsegsam.interactive import InteractiveAnnotation
from hrmedsegsam.session import AnnotationSession
from napari_plugin import _prompt_layers as pl
from napari_plugin._core_jobs import CoreJobs
from napari_plugin._layer_set import (
    LayerSet,
    check_image_layer,
    is_label_map_of,
    labels_array,
    spacing_zyx,
)
from napari_plugin._paint_history import stroke_changes
from napari_plugin._preview_sync import PreviewSync
from napari_plugin._propagation_runs import PropagationRuns


def _layer(role: str) -> property:
    return property(lambda self: getattr(self.layers, role) if self.layers is not None else None)


class AnnotatorModel:
    """State and actions of the annotation widget for one napari viewer.

    Args:
        viewer: The napari viewer.
        predictor: A ready :class:`~hrmedsegsam.predictor.Predictor` (tests pass one over a
            randomly initialised model); otherwise call :meth:`load_model`.
        prefetch_radius: While idle, embed up to this many slices on each side of the shown one.
        deliver: ``deliver(callback, value)`` running ``callback(value)`` on the UI thread;
            default superqt's ``ensure_main_thread``.
        window_delay_ms: The model takes the displayed contrast limits as its window once
            they have stopped changing for this long (dragging does not re-embed).
    """

    image_layer = _layer("image")
    labels_layer = _layer("labels")
    preview_layer = _layer("preview")
    points_layer = _layer("points")
    box_layer = _layer("box")
    strokes_layer = _layer("strokes")

    def __init__(
        self,
        viewer: Any,
        predictor: Any = None,
        *,
        prefetch_radius: int = 2,
        deliver: Callable[[Callable, Any], None] | None = None,
        window_delay_ms: int = 300,
    ) -> None:
        from napari.utils.events import EmitterGroup

        self.viewer = viewer
        self.events = EmitterGroup(
            source=self,
            status=None,
            objects=None,
            history=None,
            busy=None,
            propagating=None,
            task=None,
            progress=None,
            committed=None,
            attached=None,
        )
        self.predictor = predictor
        self.model_name = "hrmedsegsam" if predictor is None else "custom"
        self.prefetch_radius = int(prefetch_radius)
        self.overwrite = False  # True: a new object may take voxels of accepted ones
        self.target_id = 0  # 0: automatic (the reopened object, else the next free id)
        self.accept_name = ""  # the next accepted object's name; "": keep its name / "object <id>"
        self.negative = False
        self.propagate_rule: Any = None  # a hrmedsegsam.volume.StopRule; None: its defaults
        self.labels_keys: dict[str, Callable[[Any], Any]] = {}  # napari key -> handler
        self.layers: LayerSet | None = None
        self.store: Any = None  # an EmbeddingStore read before the encoder runs (set_store)
        self.core: InteractiveAnnotation | None = None

        self._jobs = CoreJobs(self._on_activity, self._emit_busy, self.show_error, deliver)
        self.previews = PreviewSync(self, self._jobs, window_delay_ms)
        self.runs = PropagationRuns(self, self._jobs)
        self._activity = ""
        self._message = "Open an image, then click points or drag a box on it."
        self.rebuilding = False  # the annotator adds or removes layers (sync_with_layers waits)
        self.closed = False  # close() was called: late results are dropped

    # ================================================================ properties
    @property
    def status(self) -> str:
        """The last message, and on a second line what the model is computing, if anything."""
        return f"{self._message}\n{self._activity}" if self._activity else self._message

    @property
    def busy(self) -> bool:
        """The model is working on something the user waits for (not prefetch)."""
        return self._jobs.busy

    def wait_idle(self, timeout: float = 60.0, include_prefetch: bool = False) -> bool:
        """Blocks until the compute thread is idle (scripts; not from the UI thread in Qt)."""
        return self._jobs.wait_idle(timeout, include_prefetch)

    @property
    def ndim(self) -> int:
        return self.layers.ndim if self.layers is not None else 0

    @property
    def session(self) -> AnnotationSession | None:
        """The core's session (objects, prompts, undo), None without an image."""
        return self.core.session if self.core is not None else None

    def current_z(self) -> int:
        """The slice shown (0 for a 2D image or without one)."""
        return self.layers.current_z() if self.layers is not None else 0

    def set_current_z(self, z: int) -> None:
        if self.layers is not None:
            self.layers.set_current_z(z)

    def window(self) -> tuple[float, float] | None:
        """The window the model sees: the image layer's contrast limits, once settled."""
        return self.previews.window()

    # ================================================================ setup
    def set_image_layer(self, layer: Any, labels_layer: Any = None) -> None:
        """Annotate ``layer``: makes (or reuses) the labels, preview and prompt layers."""
        check_image_layer(layer)
        rebuilding, self.rebuilding = self.rebuilding, True
        try:
            self._let_go()
            self.layers = LayerSet(self.viewer, layer, labels_layer)
        finally:
            self.rebuilding = rebuilding
        pl.set_negative_mode(self.points_layer, self.negative)
        pl.set_stroke_polarity(self.strokes_layer, self.negative)
        self.core = InteractiveAnnotation(
            layer.data,
            self.layers.displayed_window(),
            self.predictor,
            preview=self.preview_layer.data,
            store=self.store,
        )
        self.layers.connect(
            self.previews.window_settled,
            self._on_slice_changed,
            self.previews.on_prompts_edited,
            self._on_labels_edited,
        )
        self.set_labels_layer(self.labels_layer)
        self.use_tool("points")
        self.say(
            f"Annotating {layer.name}: click points (N toggles negative), drag a box, "
            "scribble or lasso."
        )
        self.previews.prefetch()

    def set_labels_layer(self, layer: Any) -> None:
        """Commits go into ``layer`` (same shape as the image); a new session, same embeddings."""
        data = labels_array(layer, self.image_layer)
        self.layers.set_labels(layer)
        self._jobs.forget()
        self.core.set_labels(data, spacing_zyx(self.image_layer))
        self.bind_labels_keys()
        self._sync(commit=False)
        self.events.attached()

    def bind_labels_keys(self) -> None:
        """The labels layer's own Ctrl+Z / Ctrl+Shift+Z (napari's paint undo) would take
        these keys while it is active; bind :attr:`labels_keys` on it instead.
        """
        for key, fn in self.labels_keys.items():
            if self.labels_layer is not None:
                self.labels_layer.bind_key(key, fn, overwrite=True)

    def set_store(self, path: str | None) -> None:
        """Read precomputed embeddings (``hrmedsegsam embed``) from the store at ``path``
        before running the encoder; None: compute them all. A folder that is no store:
        one line in the status, nothing changed.
        """
        from hrmedsegsam.embedding_store import EmbeddingStore

        store = EmbeddingStore.open(path) if path else None
        self.store = store
        if self.core is None:
            self.say(f"Embeddings store {path} set." if path else "No embeddings store.")
            return
        self.core.set_store(store)
        self.say(self.core.store_summary() or "No embeddings store: embeddings are computed.")
        self.previews.prefetch()

    def load_model(self, name: str) -> None:
        """Loads model ``name`` (see ``hrmedsegsam.model.build.available_models``) in the
        compute thread; errors (e.g. missing weights) go to the status line.
        """

        def done(predictor: Any) -> None:
            self.predictor, self.model_name = predictor, name
            self.say(f"Model {name} ready.")
            if self.core is not None:
                self.core.predictor = predictor
                self.core.forget_predictions()
                self.previews.predict(self.core.state.slices())

        self._jobs.load_model(name, done)

    def set_window_choice(self, choice: str) -> None:
        """A preset (see ``WINDOW_CHOICES``) sets the image layer's contrast limits, which
        the model then sees too; "as displayed" keeps them.
        """
        self.previews.choose_window(choice)

    def set_negative(self, negative: bool) -> None:
        """New points and strokes are negative (``True``) or positive; placed ones keep theirs."""
        self.negative = bool(negative)
        if self.points_layer is not None:
            pl.set_negative_mode(self.points_layer, self.negative)
            pl.set_stroke_polarity(self.strokes_layer, self.negative)

    def use_tool(self, tool: str) -> None:
        """Selects the prompt layer and mode of ``tool`` (see ``LayerSet.TOOLS``)."""
        if self.layers is not None:
            self.layers.use(tool)

    def on_layer_inserted(self, layer: Any) -> None:
        """A label map opened onto the annotated image (see the reader) becomes the target,
        so it can be corrected and exported with the image's geometry.
        """
        if self.layers is not None and is_label_map_of(layer, self.image_layer):
            self.set_labels_layer(layer)
            self.layers.keep_helpers_on_top(layer)
            self.say(f"Correcting {layer.name}: new objects get the next free id.")

    def sync_with_layers(self) -> None:
        """After layers were removed: if the image, the labels or a helper layer is gone,
        let go of the image (and remove the remaining helpers). Never adds layers, so a
        viewer that closes (removing every layer) is left alone.
        """
        if self.rebuilding or self.layers is None or self.layers.intact():
            return
        self.rebuilding = True
        try:
            self._let_go(remove_helpers=True)
        finally:
            self.rebuilding = False
        self.say("A layer of the annotation was removed; choose the image to go on.")
        self.events.objects()
        self.events.history()

    def close(self) -> None:
        """Stops the compute thread and disconnects from the layers."""
        self.closed = True
        self.previews.window_settled.cancel()
        self._jobs.stop()
        if self.layers is not None:
            self.layers.disconnect()

    # ================================================================ actions
    def accept(self) -> int | None:
        """Commits the current object (the preview on the prompted slices) into the labels.

        Uses the chosen id (:attr:`target_id`) or the reopened object's id or the next free
        one, and the overwrite / keep-existing policy (:attr:`overwrite`). Returns the id, or
        None when the commit waits for a running prediction (it happens when that ends).
        """
        if self.core is None:
            raise HRMedSegSAMError("Open an image first.")
        if self._jobs.when_predicted(self.accept):
            return self.say("Accept: waiting for the prediction to finish…")
        slices = self.core.state.slices()
        label_id = self.core.accept(self.target_id or None, self.overwrite, name=self.take_name())
        self._sync()
        name = self.core.session.name_of(label_id)
        self.say(
            f"Accepted {name} (label {label_id}) on {len(slices)} slice(s).{self.core.kept_note()}"
        )
        return label_id

    def next_object(self) -> None:
        """Discards the current prompts and preview; the next prompt starts a new object."""
        if self.core is not None and self.core.next_object():
            self._sync(labels=False)
        self.say("Next object: click points or drag a box.")

    def reopen(self, label_id: int) -> None:
        """Refine an accepted object: its mask becomes the preview and the prompt frame."""
        obj = next((o for o in self.objects() if o.id == int(label_id)), None)
        self._sync(self.core.reopen(label_id), labels=False)
        if not obj.z_min <= self.current_z() <= obj.z_max:
            self.set_current_z((obj.z_min + obj.z_max) // 2)
        self.say(f"Refining {obj.name}: add points or a box, then Accept.")

    def delete_object(self, label_id: int) -> None:
        self.session.delete_object(label_id)
        self._sync()
        self.say(f"Deleted label {label_id} (Ctrl+Z to undo).")

    def keep_largest(self, label_id: int | None = None) -> None:
        """Remove islands of accepted object ``label_id`` (one undo step) or of the preview."""
        changed = self.core.keep_largest(label_id)
        self._sync(labels=label_id is not None)
        self.say(
            f"Removed islands of {f'label {label_id} on {len(changed)} slice(s)' if label_id else 'the preview'}."
        )

    def rename(self, label_id: int, name: str) -> None:
        self.session.rename(label_id, name)
        self.events.objects()

    def undo(self) -> None:
        self._step("undo")

    def redo(self) -> None:
        self._step("redo")

    def _step(self, verb: str) -> None:
        if self.core is None or self._jobs.propagating:
            return
        entry, slices = getattr(self.core, verb)()
        if entry is None:
            return self.say(f"Nothing to {verb}.")
        self._sync(slices, labels=entry.diff is not None)
        self.say(f"{verb.capitalize()}: {entry.description}.")

    # ================================================================ runs through the volume
    def propagate(self) -> None:
        """Segments the object being edited through the volume from the shown slice, in the
        compute thread; committed at the end (one undo step). :meth:`cancel` keeps what it
        found (see :class:`~napari_plugin._propagation_runs.PropagationRuns`).
        """
        self.runs.propagate()

    def fill_between(self, label_id: int | None = None) -> None:
        """Segments the slices between the key slices of the object being edited (prompt it
        on two slices first), or without prompts the gaps of accepted object ``label_id``.
        """
        self.runs.fill_between(label_id)

    def propagate_objects(self, label_ids: list[int] | None = None) -> None:
        """Extends every accepted object (or ``label_ids``) up and down, in one run."""
        self.runs.propagate_objects(label_ids)

    def cancel(self) -> None:
        """Stops a running propagation (what it found so far is kept)."""
        self.runs.cancel()

    def take_name(self) -> str | None:
        """The name for the object being committed (:attr:`accept_name`, used once)."""
        name, self.accept_name = self.accept_name.strip(), ""
        return name or None

    def reload(self) -> None:
        """Show what the core holds after it changed behind the layers (a run committed, a
        session or SEG opened into it): its labels, prompts and preview; a commit for autosave.
        """
        self._sync()

    def objects(self) -> list:
        return self.session.objects() if self.session is not None else []

    # ================================================================ events & helpers
    def _sync(
        self, slices: list[int] | tuple[int, ...] = (), labels: bool = True, commit: bool = True
    ) -> None:
        """Show the core's changed state and predict ``slices`` (earlier requests are
        dropped); ``labels``: the labels changed too (by a commit, unless not ``commit``).
        """
        if labels:
            self.labels_layer.refresh()
            self.events.objects()
            if commit:
                self.events.committed()
        self._jobs.forget()
        self.previews.show_state(self.core.state)
        self.preview_layer.refresh()
        self.previews.predict(list(slices))
        self.events.history()

    def _on_labels_edited(self, event: Any) -> None:
        """A brush, eraser or fill stroke (napari's ``paint`` event) becomes one step of the
        annotation's undo history, so Ctrl+Z on the labels layer takes it back.
        """
        if getattr(event, "type", "") == "paint" and self.core is not None:
            changes = stroke_changes(getattr(event, "value", None))
            if changes is not None:
                self.core.session.record_edit(*changes)
                self.events.history()
        self.events.objects()

    def _on_slice_changed(self, event: Any = None) -> None:
        if not self._jobs.propagating:
            self.previews.prefetch()

    def _on_activity(self, text: str) -> None:
        if self.closed:
            return
        self._activity = text
        self.events.status(value=self.status)
        self._emit_busy()

    def show_error(self, exc: BaseException) -> None:
        """Show a job's exception on the status line (dropped after :meth:`close`)."""
        if self.closed:
            return
        if isinstance(exc, HRMedSegSAMError):
            self.say(str(exc))
        else:  # a bug, not the user's input: keep the type in the message
            self.say(f"Error: {type(exc).__name__}: {exc}")

    def say(self, message: str) -> None:
        """Show ``message`` on the status line."""
        self._message = message
        self.events.status(value=self.status)

    def _emit_busy(self, busy: bool | None = None) -> None:
        self.events.busy(value=self.busy)

    def _let_go(self, remove_helpers: bool = False) -> None:
        """Stop annotating the current image (queued work dropped, layers disconnected)."""
        self._jobs.clear()
        if self.layers is not None:
            self.layers.disconnect()
            if remove_helpers:
                self.layers.remove_helpers()
        self.layers = self.core = None
