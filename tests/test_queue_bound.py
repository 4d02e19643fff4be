"""A program that issues short calls faster than the workers take them waits for
room at the pool (``Pool.make_room``): the queue of ready tasks stays bounded.

It never waits behind a long task, never on a closed pool, and never longer
than the workers take to drain the queue.
"""
from __future__ import annotations

import threading
import time

import pytest

import poolhelpers as H
from pydron.config import GatewaySpec, local_python_spec
from pydron.remote import pool as pool_module
from pydron.remote.pool import Pool
from pydron.runtime.future import PENDING
from pydron.runtime.graph import Graph


@pytest.fixture
def small_bound(monkeypatch):
    monkeypatch.setattr(pool_module, "QUEUE_HIGH", 40)
    monkeypatch.setattr(pool_module, "QUEUE_LOW", 10)


def _pool(count=1):
    return Pool([GatewaySpec(f"w{i}", local_python_spec()) for i in range(count)])


def _known_trivial(graph, pool):
    """``add`` has run in under TRIVIAL_SECONDS (its first call also imports it)."""
    for i in range(50):
        assert H.result(graph.submit(H.add, (i, 1), {})) == i + 1
        if pool._trivial.get(pool_module._key(H.add)):
            return
    pytest.fail(f"add never ran within {pool_module.TRIVIAL_SECONDS} s")


def _block_workers(graph, pool, seconds):
    """Every worker runs a long task, so nothing queued is sent meanwhile."""
    running = [graph.submit(H.sleep_then_pid, (seconds,), {}) for _ in pool.workers]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with pool._lock:
            if all(w.inflight for w in pool.workers):
                return running
        time.sleep(0.01)
    pytest.fail("the long tasks were not sent")


def test_issuer_waits_while_short_tasks_pile_up_and_every_call_runs(small_bound):
    pool = _pool()
    graph = Graph(lambda: pool)
    try:
        _known_trivial(graph, pool)
        running = _block_workers(graph, pool, 1.5)
        seen = []
        issued = []
        began = time.monotonic()
        for i in range(200):
            issued.append(graph.submit(H.add, (i, 1), {}))
            seen.append(len(pool._queue))
        # The issuer waited for the long task to end (the queue could not drain before).
        assert time.monotonic() - began > 1.0
        assert max(seen) <= pool_module.QUEUE_HIGH + 1
        assert [H.result(f) for f in issued] == [i + 1 for i in range(200)]
        assert H.result(running[0]) > 0
    finally:
        pool.shutdown()


def test_issuer_does_not_wait_behind_a_long_task(small_bound):
    """Tasks that leave at the workers' pace are not waited for: the program's own
    work goes on meanwhile, as it would without pydron."""
    pool = _pool()
    graph = Graph(lambda: pool)
    try:
        _block_workers(graph, pool, 3.0)
        began = time.monotonic()
        # sleep_then_pid has not finished once: it is not known to be trivial.
        queued = [graph.submit(H.sleep_then_pid, (0.0,), {}) for _ in range(100)]
        assert time.monotonic() - began < 1.0
        assert len(pool._queue) >= 90
        assert all(f._pd_state is PENDING for f in queued)
    finally:
        pool.shutdown()


def test_a_waiting_issuer_returns_when_the_pool_shuts_down(small_bound):
    pool = _pool()
    graph = Graph(lambda: pool)
    try:
        _known_trivial(graph, pool)
        _block_workers(graph, pool, 10.0)
        done = threading.Event()

        def issue():
            for i in range(pool_module.QUEUE_HIGH + 20):
                graph.submit(H.add, (i, 1), {})
            done.set()

        threading.Thread(target=issue, daemon=True).start()
        assert not done.wait(1.0)  # waiting for room
        began = time.monotonic()
        pool.shutdown()
        assert done.wait(5)
        assert time.monotonic() - began < 5
    finally:
        pool.shutdown()
