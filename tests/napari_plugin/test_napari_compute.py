"""ComputeThread: order of jobs, coalescing, prefetch, errors (plain threads, no Qt)."""

from __future__ import annotations

import threading

from napari_plugin._compute import ComputeThread, Job


def test_jobs_run_in_order_and_coalesce():
    gate = threading.Event()
    ran, results, statuses = [], [], []
    ct = ComputeThread(on_status=statuses.append)
    try:
        ct.submit(Job(lambda: gate.wait(10), "blocking"))
        for i in range(5):  # a burst of edits on one slice: only the last one runs
            ct.submit(
                Job(lambda i=i: ran.append(("a", i)) or i, "a", results.append, coalesce=("p", 1))
            )
        ct.submit(Job(lambda: ran.append(("b", 0)), "b", coalesce=("p", 2)))
        ct.set_prefetch([Job(lambda: ran.append(("prefetch", 0)), "prefetch")])
        assert ct.busy and not ct.idle
        gate.set()
        assert ct.wait_idle(10)
        assert ran == [("a", 4), ("b", 0), ("prefetch", 0)]
        assert results == [4]
        assert statuses[0] == "blocking" and statuses[-1] == ""
        assert not ct.busy and ct.idle
    finally:
        ct.stop()


def test_errors_are_delivered_and_prefetch_is_replaced():
    errors, ran = [], []
    gate = threading.Event()
    ct = ComputeThread()
    try:
        ct.submit(Job(lambda: gate.wait(10)))
        ct.submit(Job(lambda: 1 / 0, on_error=errors.append))
        ct.set_prefetch([Job(lambda: ran.append(1))])
        ct.set_prefetch([Job(lambda: ran.append(2))])  # the newer list wins
        gate.set()
        assert ct.wait_idle(10)
        assert isinstance(errors[0], ZeroDivisionError)
        assert ran == [2]
    finally:
        ct.stop()
    assert not ct._thread.is_alive()


def test_run_here_only_when_free_and_holds_prefetch_back():
    gate = threading.Event()
    ran, done, errors = [], [], []
    ct = ComputeThread()
    try:
        ct.submit(Job(lambda: gate.wait(10)))  # the thread is busy: nothing runs here
        assert not ct.run_here(Job(lambda: ran.append("here")))
        gate.set()
        assert ct.wait_idle(10)
        assert not ct.run_here(Job(lambda: ran.append("here")), when=lambda: False)

        def here() -> int:
            # queued meanwhile, the prefetch waits for this job to end
            ct.set_prefetch([Job(lambda: ran.append("prefetch"))])
            assert not ct.wait_idle(0.2) and ran == []
            ran.append("here")
            return 7

        assert ct.run_here(Job(here, on_done=done.append))
        assert done == [7] and threading.current_thread() is threading.main_thread()
        assert ct.wait_idle(10) and ran == ["here", "prefetch"]
        assert ct.run_here(Job(lambda: 1 / 0, on_error=errors.append))
        assert isinstance(errors[0], ZeroDivisionError) and ct.idle
    finally:
        ct.stop()
