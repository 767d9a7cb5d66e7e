"""The interactive core's slow work on the compute thread, results back on the UI thread.

:class:`CoreJobs` turns the core's requests (:meth:`~hrmedsegsam.interactive.
InteractiveAnnotation.request`), prefetch lists and propagation runs into
:class:`~napari_plugin._compute.Job` s, remembers which prediction each slice waits for
(a newer request for a slice supersedes an older one), runs deferred actions once no
prediction is pending, loads models, and carries a propagation's progress and cancel. It
holds no annotation state of its own and imports no napari (Qt only for the default
``deliver``, superqt's ``ensure_main_thread``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from hrmedsegsam.errors import HRMedSegSAMError
from hrmedsegsam.interactive import InteractiveAnnotation, PredictionRequest, Propagation
from hrmedsegsam.multi_propagation import MultiPropagation
from napari_plugin._compute import ComputeThread, Job


def _main_thread_deliver() -> Callable[[Callable, Any], None]:
    from superqt.utils import ensure_main_thread

    @ensure_main_thread
    def deliver(callback: Callable, value: Any) -> None:
        callback(value)

    return deliver


class CoreJobs:
    """Runs predictions, prefetch and propagation for an annotation core.

    Args:
        on_activity: gets the label of the job that starts, ``""`` when idle.
        on_busy: called with :attr:`busy` whenever it may have changed.
        on_error: gets every exception of a job (a library error is the user's to fix).
        deliver: ``deliver(callback, value)`` runs ``callback(value)`` on the UI thread
            (default: superqt's ``ensure_main_thread``).
    """

    def __init__(
        self,
        on_activity: Callable[[str], None],
        on_busy: Callable[[bool], None],
        on_error: Callable[[BaseException], None],
        deliver: Callable[[Callable, Any], None] | None = None,
    ) -> None:
        deliver = deliver or _main_thread_deliver()
        self.compute = ComputeThread(deliver, on_status=on_activity)
        self._deliver = deliver
        self._on_busy = on_busy
        self._on_error = on_error
        self._pending: dict[int, tuple] = {}  # z -> key of the request being computed
        self._after: list[Callable[[], None]] = []
        self._cancel = threading.Event()
        self.propagating = False

    @property
    def busy(self) -> bool:
        """Work the user waits for is queued or running (prefetch does not count)."""
        return bool(self._pending) or self.propagating or self.compute.busy

    def forget(self) -> None:
        """Results of predictions asked for so far are no longer wanted."""
        self._pending.clear()

    def clear(self) -> None:
        """Drop queued jobs and pending predictions (a running job finishes unheard)."""
        self.compute.clear()
        self._pending.clear()

    # ------------------------------------------------------------------ predictions
    def predict(
        self,
        core: InteractiveAnnotation,
        z: int,
        on_shown: Callable[[int, Any], None],
        shown: bool = False,
    ) -> None:
        """Predict slice ``z``; ``on_shown(z, prediction)`` once it is in the preview (at
        once for a kept prediction, or with None for a slice without prompts; never for a
        superseded request).

        ``shown``: the user looks at slice ``z``. If its embedding is cached and the compute
        thread is idle, the decode then runs here, on the UI thread, before this returns.
        """
        request = core.request(z)
        if not isinstance(request, PredictionRequest):
            self._pending.pop(z, None)
            on_shown(z, request)
            return
        if core.predictor is None:
            raise HRMedSegSAMError("No model loaded: choose a model in the widget.")
        self._pending[z] = request.key
        label = (
            f"Predicting slice {z}…"
            if core.is_embedded(z)
            else f"Computing the embedding of slice {z}…"
        )

        def done(pred: Any) -> None:
            if self._pending.get(z) == request.key and core.show(request, pred):
                on_shown(z, pred)
            self._finished(request)

        job = Job(
            lambda: core.compute(request),
            label,
            done,
            lambda exc: self._finished(request, exc),
            coalesce=("predict", z),
        )
        # The decode alone takes ~50-90 ms; in the compute thread it took ~200 ms, fighting
        # napari's redraw on the UI thread for the GIL at each of its ~900 torch calls. So the
        # shown slice's decode runs here when nothing else computes (the predictor's caches
        # are not thread-safe); encodes, prefetch and propagation stay in the thread. The
        # predictor decodes with one torch thread (Predictor.decode_threads).
        if shown:
            here = Job(lambda: core.compute(request), label, job.on_done, job.on_error)
            if self.compute.run_here(here, when=lambda: core.is_embedded(z)):
                return
        self.compute.submit(job)
        self._on_busy(self.busy)

    def _finished(self, request: PredictionRequest, exc: BaseException | None = None) -> None:
        if self._pending.get(request.z) == request.key:
            del self._pending[request.z]
        if exc is not None:
            self._on_error(exc)
        self._on_busy(self.busy)
        if not self._pending:
            actions, self._after = self._after, []
            for action in actions:
                try:
                    action()
                except HRMedSegSAMError as err:
                    self._on_error(err)

    def when_predicted(self, action: Callable[[], Any]) -> bool:
        """Defer ``action`` until no prediction is pending; returns whether it was deferred."""
        if not self._pending:
            return False
        self._after.append(action)
        return True

    def prefetch(self, core: InteractiveAnnotation, z: int, radius: int) -> None:
        """While idle, embed slice ``z`` and its neighbours (replaces the earlier list)."""
        if core.predictor is None:
            return
        self.compute.set_prefetch(
            [
                Job(lambda z=z: core.embed(z), f"Prefetching the embedding of slice {z}…")
                for z in core.prefetch_requests(z, radius)
            ]
        )

    def load_model(self, name: str, on_done: Callable[[Any], None]) -> None:
        """Build a Predictor over model ``name`` (``hrmedsegsam.load_model``); ``on_done(predictor)``.
        A first use of these weights with a CPU runtime exports the encoder first, as a
        second job that says so (it takes tens of seconds, once per weights).
        """
        from hrmedsegsam import Predictor, load_model

        def loaded(predictor: Any) -> None:
            if not predictor.encoder_pending():
                on_done(predictor)
                return
            self.compute.submit(
                Job(
                    lambda: (predictor.encoder(), predictor)[1],
                    f"Preparing the fast CPU encoder for {name} (once per weights, up to a minute)…",
                    on_done,
                    self._on_error,
                )
            )
            self._on_busy(self.busy)

        self.compute.submit(
            Job(
                lambda: Predictor(load_model(name)),
                f"Loading model {name}…",
                loaded,
                self._on_error,
            )
        )
        self._on_busy(self.busy)

    # ------------------------------------------------------------------ propagation
    def propagate(
        self,
        run: Propagation | MultiPropagation,
        label: str,
        on_progress: Callable[[tuple[int, int, Any]], None],
        on_done: Callable[[Any], None],
    ) -> None:
        """Iterate ``run`` (a propagation, a fill between key slices, or several objects'
        propagation) on the compute thread, reporting ``(done, total, step)`` after each
        slice; :meth:`cancel` stops it after the slice in hand. ``on_done`` then gets
        ``run`` (finished or cancelled) or the exception that ended it.
        """
        self._cancel.clear()
        self.propagating = True
        report, cancelled = self._deliver, self._cancel.is_set

        def work() -> Propagation | MultiPropagation:
            for step in run:
                report(on_progress, (run.done, run.total, step))
                if cancelled():
                    run.close()
                    break
            return run

        def finish(result: Any) -> None:
            self.propagating = False
            self._on_busy(self.busy)
            on_done(result)

        self.compute.clear()
        self.compute.submit(Job(work, label, finish, finish))
        self._on_busy(self.busy)

    def cancel(self) -> bool:
        """Stop a running propagation; returns whether one was running."""
        if self.propagating:
            self._cancel.set()
        return self.propagating

    def stop(self) -> None:
        self._cancel.set()
        self.compute.stop()

    def wait_idle(self, timeout: float = 60.0, include_prefetch: bool = False) -> bool:
        """Blocks until the compute thread is idle (scripts; not from the UI thread in Qt)."""
        return self.compute.wait_idle(timeout, include_prefetch)
