"""PropagationRuns: the annotator's runs through the volume, from start to commit.

Propagate (the object being edited, from the shown slice), Fill between (the slices
between key slices of one object) and Propagate all (every accepted object, or some) each
start one run of the core (:meth:`~hrmedsegsam.interactive.InteractiveAnnotation.propagate`,
:meth:`~hrmedsegsam.interactive.InteractiveAnnotation.fill_between`,
:meth:`~hrmedsegsam.interactive.InteractiveAnnotation.propagate_objects`; which object and
which slices is the core's choice), hand it to :class:`~napari_plugin._core_jobs.CoreJobs`
(one run at a time on the compute thread, with progress and Cancel), and commit what it
found on the UI thread. They report through the annotator's events: ``propagating``
(``value``: bool), ``task`` (``value``: what runs, e.g. ``"Filling liver between slices
12 and 30"``), ``progress`` (``value``: ``(done, total)`` slices) and the status line (at
the end: where it went and why it stopped). No napari or Qt import here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hrmedsegsam.errors import HRMedSegSAMError

if TYPE_CHECKING:
    from hrmedsegsam.interactive import Propagation
    from hrmedsegsam.multi_propagation import MultiPropagation, ObjectStep
    from napari_plugin._annotator import AnnotatorModel
    from napari_plugin._core_jobs import CoreJobs


class PropagationRuns:
    """Starts, follows and commits the propagation runs of one annotator.

    Args:
        model: the annotator: its core, its choices (:attr:`~AnnotatorModel.target_id`,
            ``overwrite``, ``accept_name``, ``propagate_rule``), status line and events.
        jobs: the annotator's compute jobs (one run at a time, shared with predictions).
    """

    def __init__(self, model: AnnotatorModel, jobs: CoreJobs) -> None:
        self.model = model
        self.jobs = jobs
        self.task = ""  # what the running (or last) run does, as the ``task`` event said

    # ------------------------------------------------------------------ starting
    def propagate(self) -> None:
        """Segments the object being edited through the volume from the shown slice; the
        result is committed (one undo step). :meth:`cancel` keeps the slices done so far.
        """
        if not self._ready("Propagate", self.propagate):
            return
        m = self.model
        m.window()  # the contrast limits settle before the run reads the window
        run = m.core.propagate(m.current_z(), m.propagate_rule)  # raises: nothing on slice z
        self._start(run, run.title(self._name(m.target_id)), self._progress, self._propagated)

    def fill_between(self, label_id: int | None = None) -> None:
        """Segments the slices between key slices, each prompted from both ends; the result
        is committed (one undo step) and the key slices stay. The keys are the prompted
        slices of the object being edited, else those of accepted object ``label_id``.
        """
        if not self._ready("Fill between", lambda: self.fill_between(label_id)):
            return
        m = self.model
        chosen = m.core.fill_target(label_id)  # None: the object being edited
        m.window()
        run = m.core.fill_between(chosen)
        target = (m.target_id or None) if chosen is None else chosen
        title = run.title(self._name(target, named=target in (None, m.target_id)))
        self._start(run, title, self._progress, lambda result: self._filled(result, target))

    def propagate_objects(self, label_ids: list[int] | None = None) -> None:
        """Extends every accepted object (or ``label_ids``) up and down the volume in one
        run; each object that grew is committed (one undo step each).
        """
        if not self._ready("Propagate all", lambda: self.propagate_objects(label_ids)):
            return
        m = self.model
        m.window()
        run = m.core.propagate_objects(label_ids, m.propagate_rule)
        title = f"Propagating {len(run.masks)} object(s)"
        self._start(run, title, self._object_progress, self._objects_done)

    def cancel(self) -> None:
        """Stops the running run after the slice in hand (what it found so far is kept)."""
        if self.jobs.cancel():
            self.model.say("Cancelling the propagation…")

    def _ready(self, action: str, retry: Callable[[], None]) -> bool:
        """Whether a run may start now: never beside another; after the pending
        predictions (the preview it starts from), by calling ``retry`` then.
        """
        if self.model.core is None:
            raise HRMedSegSAMError("Open an image first.")
        if self.jobs.propagating:
            return False
        if self.jobs.when_predicted(retry):
            self.model.say(f"{action}: waiting for the prediction to finish…")
            return False
        return True

    def _start(
        self,
        run: Propagation | MultiPropagation,
        title: str,
        on_progress: Callable[[tuple[int, int, Any]], None],
        on_done: Callable[[Any], None],
    ) -> None:
        self.model.events.propagating(value=True)
        self._show_task(title)
        self.jobs.propagate(run, f"{title}…", on_progress, on_done)

    def _name(self, label_id: int | None, named: bool = True) -> str:
        """The name the committed object will have, for the progress label: the name box
        (when ``named``), else the name of ``label_id`` or of the reopened object.
        """
        session = self.model.session
        label_id = label_id or session.current_id
        given = self.model.accept_name.strip() if named else ""
        return given or (session.name_of(label_id) if label_id else "the new object")

    # ------------------------------------------------------------------ progress (UI thread)
    def _show_task(self, title: str) -> None:
        if title != self.task:
            self.task = title
            self.model.events.task(value=title)

    def _progress(self, value: tuple[int, int, Any]) -> None:
        self.model.events.progress(value=value[:2])

    def _object_progress(self, value: tuple[int, int, ObjectStep]) -> None:
        done, total, step = value
        m = self.model
        m.events.progress(value=(done, total))
        title = step.title(m.session.name_of(step.label_id) if m.session is not None else "")
        self._show_task(title)
        m.say(f"{title}: slice {step.step.z}")

    # ------------------------------------------------------------------ results (UI thread)
    def _ended(self, result: Any) -> bool:
        """The run ended: whether ``result`` is a run to commit (an error is shown)."""
        self.model.events.propagating(value=False)
        if self.model.closed:
            return False
        if isinstance(result, BaseException):
            self.model.show_error(result)
            return False
        return True

    def _commit(self, run: Propagation, label_id: int | None, name: str | None) -> int | None:
        m = self.model
        try:
            label_id = m.core.commit_propagation(run, label_id, m.overwrite, name=name)
        except HRMedSegSAMError as exc:
            m.show_error(exc)
            return None
        m.reload()
        return label_id

    def _propagated(self, run: Propagation | BaseException) -> None:
        m = self.model
        if not self._ended(run):
            return
        label_id = self._commit(run, m.target_id or None, m.take_name())
        if label_id is not None:
            name = m.session.name_of(label_id)
            m.say(f"Propagated {name}: {run.describe()}.{m.core.kept_note()}")
            m.previews.prefetch()

    def _filled(self, run: Propagation | BaseException, label_id: int | None) -> None:
        m = self.model
        if not self._ended(run):
            return
        named = label_id is None or label_id == m.target_id
        label_id = self._commit(run, label_id, m.take_name() if named else None)
        if label_id is not None:
            name = m.session.name_of(label_id)
            m.say(f"Filled {name}: {run.describe()}.{m.core.kept_note()}")

    def _objects_done(self, run: MultiPropagation | BaseException) -> None:
        m = self.model
        if not self._ended(run):
            return
        ids = m.core.commit_objects(run, m.overwrite)
        m.reload()
        grown = f"{len(ids)} object(s) grew" if ids else "no object grew"
        m.say(f"Propagate all: {grown}.\n{run.describe(m.session.name_of)}")
        m.previews.prefetch()
