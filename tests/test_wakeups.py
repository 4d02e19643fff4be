"""The schedule function's thread sleeps while it waits: a finished call wakes
it only when what it waits for has come true, or when a deferred operation
became ready for it to run (issue 18: the master's own CPU during long tasks).
"""
from __future__ import annotations

import time

import pydron
from pydron.functional import functional
from pydron.runtime import future as future_module


@functional
def nap(i):
    time.sleep(0.1)
    return i


def _count_waits(monkeypatch) -> list:
    condition = future_module.CONDITION
    calls = []
    wait = condition.wait

    def counting_wait(timeout=None):
        calls.append(timeout)
        return wait(timeout)

    monkeypatch.setattr(condition, "wait", counting_wait)
    return calls


def test_waiting_for_every_call_wakes_once_not_per_result(monkeypatch):
    @pydron.schedule
    def run(n):
        return [nap(i) for i in range(n)]

    run(2)  # workers started and warm
    calls = _count_waits(monkeypatch)
    assert run(12) == list(range(12))  # about 0.6 s on two workers: twelve results arrive
    # One wait for the lot, and at most one more per half second (the liveness check).
    assert len(calls) <= 4, calls


def test_a_deferred_operation_wakes_the_waiting_thread_at_once():
    """A call waits on an operation the schedule thread runs (``x + 1`` on a
    future), which waits on a worker's result: each step must start when its
    input is known, not at the next liveness check half a second later."""
    @pydron.schedule
    def run(n):
        x = 0
        for i in range(n):
            x = nap(x + 1)  # ``x + 1`` is deferred: it runs here once nap's result is in
        return x

    run(1)
    began = time.perf_counter()
    assert run(8) == 8
    assert time.perf_counter() - began < 8 * 0.1 + 1.5  # eight naps in a row, not eight half-seconds
