"""One background thread for all model work, so the UI thread never waits long on the model.

Jobs run one at a time (never two at once, on any thread), in this order:

1. *urgent* jobs (a prediction the user is waiting for, a propagation, loading a model), in
   submission order, except that a newer urgent job with the same ``coalesce`` key replaces
   a queued one (a burst of prompt edits computes only the latest);
2. *prefetch* jobs (embeddings of neighbouring slices), only while nothing urgent waits;
   a new prefetch list replaces the old one.

A short job may instead run on the caller's thread (:meth:`ComputeThread.run_here`), only
while nothing runs and no urgent job waits; queued prefetch waits for it.

Results and errors are handed to ``deliver(callback, value)``, which the caller points at
its UI thread (the annotator uses superqt's ``ensure_main_thread``). This module itself has
no Qt or napari import.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class Job:
    fn: Callable[[], Any]
    label: str = ""
    on_done: Callable[[Any], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    coalesce: Hashable | None = None


def _call_now(callback: Callable, value: Any) -> None:
    callback(value)


class ComputeThread:
    """A daemon thread running :class:`Job` s; see the module docstring for the order.

    ``on_status(text)`` (delivered like results) gets the label of the job that starts, and
    ``""`` when the thread goes idle.
    """

    def __init__(
        self,
        deliver: Callable[[Callable, Any], None] = _call_now,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self._deliver = deliver
        self._on_status = on_status
        self._cond = threading.Condition()
        self._urgent: deque[Job] = deque()
        self._prefetch: deque[Job] = deque()
        self._running: Job | None = None
        self._running_prefetch = False
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="hrmedsegsam-compute", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ queueing
    def submit(self, job: Job) -> None:
        """Queues an urgent job (replacing a queued one with the same ``coalesce`` key)."""
        with self._cond:
            if job.coalesce is not None:
                self._urgent = deque(j for j in self._urgent if j.coalesce != job.coalesce)
            self._urgent.append(job)
            self._cond.notify_all()

    def set_prefetch(self, jobs: Iterable[Job]) -> None:
        """Replaces the prefetch queue."""
        with self._cond:
            self._prefetch = deque(jobs)
            self._cond.notify_all()

    def clear(self) -> None:
        """Drops every queued job (the running one finishes)."""
        with self._cond:
            self._urgent.clear()
            self._prefetch.clear()

    def run_here(self, job: Job, when: Callable[[], bool] | None = None) -> bool:
        """Runs ``job`` on the calling thread, now, if nothing runs, no urgent job waits and
        ``when()`` (asked once no job can start) is true; queued prefetch does not start
        meanwhile. Returns False, running nothing, otherwise.

        ``job.on_done`` or ``job.on_error`` is then called directly (not through
        ``deliver``), after the thread is free again; no status is reported.
        """
        with self._cond:
            if self._stopped or self._running is not None or self._urgent:
                return False
            self._running, self._running_prefetch = job, False
        error: Exception | None = None
        try:
            if when is not None and not when():
                return False
            result = job.fn()
        except Exception as exc:  # noqa: BLE001 - the same path as the thread's errors
            error = exc
        finally:
            with self._cond:
                self._running = None
                self._cond.notify_all()
        if error is not None:
            if job.on_error is not None:
                job.on_error(error)
        elif job.on_done is not None:
            job.on_done(result)
        return True

    @property
    def busy(self) -> bool:
        """A job runs or an urgent job waits (prefetch does not count)."""
        with self._cond:
            return bool(self._urgent) or (self._running is not None and not self._running_prefetch)

    @property
    def idle(self) -> bool:
        """Nothing runs and nothing (urgent or prefetch) waits."""
        with self._cond:
            return self._running is None and not self._urgent and not self._prefetch

    def wait_idle(self, timeout: float | None = None, include_prefetch: bool = True) -> bool:
        """Blocks (not from the UI thread!) until idle; for scripts and tests."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    self._running is None
                    and not self._urgent
                    and (not include_prefetch or not self._prefetch)
                ),
                timeout,
            )

    def stop(self, timeout: float | None = 10.0) -> None:
        """Drops queued jobs, lets the running one finish (up to ``timeout`` s), ends."""
        with self._cond:
            self._stopped = True
            self._urgent.clear()
            self._prefetch.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the thread
    def _next(self) -> Job | None:
        with self._cond:
            # _running is set here only while run_here holds the thread
            while not self._stopped and (
                self._running is not None or (not self._urgent and not self._prefetch)
            ):
                self._cond.wait()
            if self._stopped:
                return None
            if self._urgent:
                job = self._urgent.popleft()
                self._running_prefetch = False
            else:
                job = self._prefetch.popleft()
                self._running_prefetch = True
            self._running = job
            return job

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            if self._on_status is not None and job.label:
                self._deliver(self._on_status, job.label)
            try:
                result = job.fn()
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to the UI
                if job.on_error is not None:
                    self._deliver(job.on_error, exc)
            else:
                if job.on_done is not None:
                    self._deliver(job.on_done, result)
            with self._cond:
                self._running = None
                idle = not self._urgent and not self._prefetch
                self._cond.notify_all()
            if idle and self._on_status is not None:
                self._deliver(self._on_status, "")
