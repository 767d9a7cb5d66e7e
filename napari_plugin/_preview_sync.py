"""PreviewSync: the prompt layers and the displayed contrast in, the preview layer out.

On each edit of a prompt layer it reads the layers (:mod:`napari_plugin._prompt_layers`)
into the core's prompt state, predicts the slices the core says changed (nearest the shown
one first) through :class:`~napari_plugin._core_jobs.CoreJobs`, and refreshes the preview
layer as each prediction lands; while idle it embeds the shown slice and its neighbours
ahead of the user. The window the model sees follows the image layer's contrast limits
once they have stopped changing for ``window_delay_ms`` (dragging the contrast does not
re-embed every slice); choosing a preset sets those limits. Which slices to predict or
embed, and the presets' windows, are the core's choices; no napari import here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hrmedsegsam.errors import HRMedSegSAMError
from hrmedsegsam.intensity import PRESETS
from napari_plugin import _prompt_layers as pl
from napari_plugin._geometry import META_KEY

if TYPE_CHECKING:
    from hrmedsegsam.predictor import Prediction
    from hrmedsegsam.session import PromptState
    from napari_plugin._annotator import AnnotatorModel
    from napari_plugin._core_jobs import CoreJobs

AS_DISPLAYED = "as displayed"
WINDOW_CHOICES = (AS_DISPLAYED, *PRESETS, "percentile")


class PreviewSync:
    """Keeps one annotator's preview in step with its prompt layers and displayed window.

    Args:
        model: the annotator (its core, layers, shown slice, status line and events).
        jobs: the annotator's compute jobs.
        window_delay_ms: how long the contrast limits must rest before the model takes them.
    """

    def __init__(self, model: AnnotatorModel, jobs: CoreJobs, window_delay_ms: int = 300) -> None:
        from superqt.utils import qdebounced

        self.model = model
        self.jobs = jobs
        self.syncing = False  # the layers are redrawn from the core: not the user's edit
        self.window_settled = qdebounced(self._apply_display_window, timeout=window_delay_ms)

    # ------------------------------------------------------------------ prompts
    def on_prompts_edited(self, event: Any = None) -> None:
        """A prompt layer's ``data`` event: the new prompts go to the core, changed slices
        are predicted (``…ing`` events, before the edit, are ignored).
        """
        m = self.model
        action = getattr(event, "action", "changed")
        action = str(getattr(action, "value", action))
        if self.syncing or m.core is None or action.endswith("ing"):
            return
        pl.recolor_points(m.points_layer)
        state, dropped = pl.state_from_layers(
            m.points_layer,
            m.box_layer,
            m.core.session.shape_zyx,
            m.core.session.current_id,
            m.strokes_layer,
        )
        if dropped:
            m.say(f"{dropped} prompt(s) outside the image were ignored.")
        rectangles = [s for s in m.box_layer.shape_type if s == "rectangle"]
        if len(state.boxes) != len(rectangles) or len(state.strokes) != len(m.strokes_layer.data):
            self.show_state(state)  # a second box on a slice replaces the first
        if m.core.state != state:
            self.predict(m.core.set_prompts(state))
            m.events.history()

    def show_state(self, state: PromptState) -> None:
        """Redraw the prompt layers from ``state`` (not taken for the user's edit)."""
        m = self.model
        if m.points_layer is None:
            return
        self.syncing = True
        try:
            pl.show_state(m.points_layer, m.box_layer, state, m.ndim, m.strokes_layer)
        finally:
            self.syncing = False

    # ------------------------------------------------------------------ predictions
    def predict(self, slices: list[int]) -> None:
        """Predicts ``slices`` (nearest to the shown one first) after the prompts changed."""
        z0 = self.model.current_z()
        for z in sorted(slices, key=lambda s: abs(s - z0)):
            self.jobs.predict(self.model.core, z, self._on_shown, shown=z == z0)

    def _on_shown(self, z: int, prediction: Prediction | None) -> None:
        m = self.model
        if m.closed or m.core is None:
            return
        m.preview_layer.refresh(thumbnail=False, extent=False)  # one slice; same extent
        if prediction is not None:
            m.say(m.core.describe(z, prediction))
        if not m.busy:
            self.prefetch()

    def prefetch(self) -> None:
        """While idle, embed the shown slice and its neighbours ahead of the user."""
        m = self.model
        if m.core is not None:
            self.jobs.prefetch(m.core, m.current_z(), m.prefetch_radius)

    # ------------------------------------------------------------------ window
    def window(self) -> tuple[float, float] | None:
        """The window the model sees: the image layer's contrast limits, once settled."""
        self.window_settled.flush()
        return self.model.core.window

    def choose_window(self, choice: str) -> None:
        """A preset (see :data:`WINDOW_CHOICES`) sets the image layer's contrast limits,
        which the model then sees too; :data:`AS_DISPLAYED` keeps them.
        """
        m = self.model
        if choice not in WINDOW_CHOICES:
            raise HRMedSegSAMError(
                f"Unknown window {choice!r}; choose one of {', '.join(WINDOW_CHOICES)}."
            )
        if choice != AS_DISPLAYED and m.core is not None:
            modality = m.image_layer.metadata.get(META_KEY, {}).get("modality", "")
            m.image_layer.contrast_limits = m.core.preset_window(choice, modality)
            self.window_settled.flush()

    def _apply_display_window(self, event: Any = None) -> None:
        m = self.model
        if m.core is not None and not m.closed and m.image_layer is not None:
            self.predict(m.core.set_window(m.layers.displayed_window()))
            self.prefetch()
