"""Long tasks queue one deep behind a busy worker's task, and come back for an idle one.

With every worker busy, the pool sends the next long task to wait behind one
that runs, so the worker starts it without a round trip to the master. If
another worker falls idle first, the queued task is taken back unstarted
("revoke") and runs there; a worker that dies does not blame the task that was
only waiting behind the one it ran.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import poolhelpers as H
from pydron.config import GatewaySpec, local_python_spec
from pydron.errors import WorkerDied
from pydron.observe import timeline
from pydron.observe.events import EVENTS
from pydron.remote.pool import Pool
from pydron.runtime.graph import Graph

LONG = 3.0


def _pool(retries):
    pool = Pool([GatewaySpec(label, local_python_spec()) for label in ("left", "right")], retries=retries)
    graph = Graph(lambda: pool)
    # Both workers have the function (ties go round the pool) and know it is long.
    warm = [graph.submit(H.sleep_then_pid, (0.3,), {}) for _ in range(2)]
    assert len({H.result(f) for f in warm}) == 2
    return pool


def _queued(pool, timeout=10):
    """(worker that holds the queued task, the other one, running task's future on each)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with pool._lock:
            holders = [w for w in pool.workers if w.prefetched]
            if holders:
                holder = holders[0]
                other = next(w for w in pool.workers if w is not holder)
                running = {w: next(iter(w.inflight.values()))[0].future for w in (holder, other)}
                return holder, other, running
        time.sleep(0.01)
    pytest.fail("no long task was queued behind a busy worker's task")


def _each_worker_runs(pool, fn):
    """Two calls of ``fn`` on two idle workers run one on each, where a worker
    that was sent the function before gets only its key."""
    graph = Graph(lambda: pool)
    pids = [graph.submit(fn, (0.3,), {}) for _ in range(2)]
    assert sorted(H.result(f) for f in pids) == sorted(w.info["pid"] for w in pool.workers)


def _start_three(pool, queued_fn=H.sleep_then_pid):
    """Two long tasks, then a short one; each its own call (graph), so that one
    failing does not cancel the others, as it would in one program."""
    busy = [Graph(lambda: pool).submit(H.sleep_then_pid, (LONG,), {}) for _ in range(2)]
    queued = Graph(lambda: pool).submit(queued_fn, (0.2,), {})
    return busy, queued


def test_a_long_task_waits_behind_a_busy_worker_and_is_taken_back_for_an_idle_one():
    pool = _pool(retries=3)
    records = EVENTS.watch()
    try:
        # A function new to both workers: the revoked task carried its pickle.
        busy, queued = _start_three(pool, H.nap_then_pid)
        holder, other, running = _queued(pool)
        start = time.monotonic()
        pool.cancel([running[other]])  # ``other`` falls idle; ``holder`` runs for seconds yet
        pid = H.result(queued)
        elapsed = time.monotonic() - start
        # The run report draws it once, where it ran, not as lost on the first worker.
        bars = [b for b in timeline.build(list(records), time.perf_counter()).bars
                if b.name == "nap_then_pid"]
        assert [(b.worker, b.status) for b in bars] == [(other.label, "ok")], bars
        assert [r[0] for r in records].count("revoked") == 1
        assert pid == other.info["pid"], "the queued task ran where it waited"
        assert elapsed < LONG - 1.0, f"it ran only after the task it waited behind ({elapsed:.2f} s)"
        assert H.result(running[holder]) == holder.info["pid"]
        assert not holder.prefetched and not other.prefetched
        # Later tasks name the function by key on the worker that gave it back.
        _each_worker_runs(pool, H.nap_then_pid)
    finally:
        EVENTS.unwatch()
        pool.shutdown()


def test_a_worker_death_does_not_blame_the_task_queued_behind_the_one_it_ran():
    # retries=1: a task blamed for one death fails at once.
    pool = _pool(retries=1)
    try:
        busy, queued = _start_three(pool)
        holder, other, running = _queued(pool)
        os.kill(holder.info["pid"], signal.SIGKILL)
        with pytest.raises(WorkerDied):
            H.result(running[holder])
        assert H.result(queued) != holder.info["pid"]  # it ran again, elsewhere
        assert H.result(running[other]) == other.info["pid"]
    finally:
        pool.shutdown()


def test_a_queued_task_that_cannot_be_sent_leaves_nothing_to_take_back():
    pool = _pool(retries=3)
    try:
        busy = [Graph(lambda: pool).submit(H.sleep_then_pid, (1.0,), {}) for _ in range(2)]
        bad = Graph(lambda: pool).submit(H.sleep_then_pid, (threading.Lock(),), {})
        with pytest.raises(TypeError, match="pickle"):
            H.result(bad)
        with pool._lock:
            assert not any(w.prefetched for w in pool.workers)
        assert sorted(H.result(f) for f in busy) == sorted(w.info["pid"] for w in pool.workers)
    finally:
        pool.shutdown()


def test_a_cancelled_queued_task_leaves_its_function_for_the_next_tasks():
    # The queued task carries the function's pickle (new to its worker); it is
    # cancelled before it starts, and later tasks on that worker name it by key.
    pool = _pool(retries=3)
    try:
        busy, queued = _start_three(pool, H.nap_then_pid)
        holder, other, running = _queued(pool)
        pool.cancel([queued])
        assert H.result(running[holder]) == holder.info["pid"]
        assert H.result(running[other]) == other.info["pid"]
        _each_worker_runs(pool, H.nap_then_pid)
    finally:
        pool.shutdown()


def test_a_cancelled_short_task_in_a_window_leaves_its_function_for_the_next_tasks():
    # The same for a task queued as short ones are (a window of several): the
    # worker skips it when it gets there, before the cancel's grace runs out.
    pool = _pool(retries=3)
    try:
        busy = [Graph(lambda: pool).submit(H.sleep_then_pid, (1.0,), {}) for _ in range(2)]
        with pool._lock:  # as if nap_then_pid had been seen to be short, and the windows had opened
            pool._short[H.nap_then_pid] = True
            for worker in pool.workers:
                worker.window = 4
        queued = Graph(lambda: pool).submit(H.nap_then_pid, (0.0,), {})
        deadline = time.monotonic() + 10
        while not any(len(w.inflight) == 2 for w in pool.workers) and time.monotonic() < deadline:
            time.sleep(0.01)
        pool.cancel([queued])
        assert sorted(H.result(f) for f in busy) == sorted(w.info["pid"] for w in pool.workers)
        _each_worker_runs(pool, H.nap_then_pid)
        assert not pool.deaths
    finally:
        pool.shutdown()


def test_a_burst_of_a_function_seen_short_is_shared_by_a_worker_with_a_small_window():
    """A function first seen short (tiny calls that one worker ran, so only that
    worker's window grew), then called with long inputs: the burst is shared by
    both workers, not queued on the one with the deep window (it took 1.8x as
    long: 60 of 64 calls on one worker)."""
    pool = _pool(retries=3)
    try:
        with pool._lock:
            pool._short[H.sleep_then_pid] = True
            deep, fresh = pool.workers
            deep.window, fresh.window = 64, 1
        graph = Graph(lambda: pool)
        start = time.monotonic()
        pids = [H.result(f) for f in [graph.submit(H.sleep_then_pid, (0.3,), {}) for _ in range(8)]]
        elapsed = time.monotonic() - start
        counts = sorted(pids.count(w.info["pid"]) for w in pool.workers)
        assert counts[0] >= 3, f"one worker ran {counts[0]} of 8 calls"
        assert elapsed < 2.0, f"8 x 0.3 s on 2 workers took {elapsed:.2f} s"
    finally:
        pool.shutdown()


def test_tasks_in_a_window_come_back_when_their_function_turns_out_long():
    """Calls of a function seen short go out in windows; when one of them runs
    long, the calls still waiting behind it are taken back for the worker that
    fell idle, instead of running one after the other where they wait."""
    pool = _pool(retries=3)
    records = EVENTS.watch()
    try:
        with pool._lock:
            pool._short[H.sleep_then_pid] = True
            for worker in pool.workers:
                worker.window = 64
        graph = Graph(lambda: pool)
        # Sent in turn to the two workers: the long calls all land on one of them.
        seconds = [1.0, 0.001] * 4
        start = time.monotonic()
        futures = [graph.submit(H.sleep_then_pid, (s,), {}) for s in seconds]
        pids = [H.result(f) for f in futures]
        elapsed = time.monotonic() - start
        long_ran_on = {pid for pid, s in zip(pids, seconds) if s == 1.0}
        assert len(long_ran_on) == 2, "the long calls all ran where they were first sent"
        assert elapsed < 3.3, f"4 x 1 s on 2 workers took {elapsed:.2f} s"
        assert [r[0] for r in records].count("revoked") >= 1
        assert all(not w.asked and not w.prefetched for w in pool.workers)
    finally:
        EVENTS.unwatch()
        pool.shutdown()
