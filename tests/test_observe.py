"""The event recorder, ``pydron.workers()`` and ``pydron.stats()`` against a real 2-worker pool."""
from __future__ import annotations

import logging
import os
import time

import pytest

import obshelpers as H
import pydron
from pydron.observe.events import EVENTS
from pydron.remote import pool as pool_module


@pytest.fixture
def own_pool(monkeypatch):
    """A fresh 2-worker popen pool for this test; the previous global pool is kept aside."""
    monkeypatch.setenv("PYDRON_TX", "2*popen")
    monkeypatch.delenv("PYDRON_CONF", raising=False)
    monkeypatch.setattr(pool_module, "_pool", None)
    yield
    pydron.shutdown()


def test_workers_is_empty_without_a_pool(monkeypatch):
    monkeypatch.setattr(pool_module, "_pool", None)
    assert pydron.workers() == []


def test_workers_describe_the_real_processes(own_pool):
    assert H.naps(4, 0.01) == [0, 1, 2, 3]
    infos = pydron.workers()
    pool = pool_module.get_pool()
    assert [w.label for w in infos] == [w.label for w in pool.workers] and len(infos) == 2
    for info in infos:
        assert info.kind == "popen" and info.alive and not info.busy and info.running == 0
        assert info.pid != os.getpid()
        os.kill(info.pid, 0)  # a live process of ours
        assert info.host == os.uname().nodename
    assert sum(w.tasks_done for w in infos) == 4
    assert all(w.busy_seconds >= 0.009 for w in infos if w.tasks_done)


def test_workers_show_what_runs_now(own_pool):
    import threading

    result = []
    thread = threading.Thread(target=lambda: result.append(H.naps(2, 1.0)))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(w.running for w in pydron.workers()) < 2:
            time.sleep(0.02)
        running = pydron.workers()
        assert [w.busy for w in running] == [True, True], running
        assert pydron.stats().running
    finally:
        thread.join(timeout=30)
    assert result == [[0, 1]]
    assert not any(w.busy for w in pydron.workers())


def test_stats_of_the_last_run(own_pool):
    H.naps(2, 0.01)  # workers up, function on them
    start = time.perf_counter()
    assert H.naps(8, 0.05) == list(range(8))
    wall = time.perf_counter() - start
    stats = pydron.stats()
    assert not stats.running
    assert stats.issued == 8 and stats.tasks == 8 and stats.failures == 0 and stats.retries == 0
    assert 0 < stats.elapsed <= wall
    assert set(stats.busy) == {w.label for w in pydron.workers()}
    assert sum(stats.tasks_per_worker.values()) == 8
    # Each task slept 50 ms on its worker: the summed task time is at least 0.4 s,
    # and with two workers the tasks overlapped.
    assert 0.4 <= stats.task_seconds < 0.4 + 8 * 0.05
    assert 1.2 < stats.speedup <= 2.05
    assert all(0 < f <= 1.0 for f in stats.busy_fraction().values())
    assert stats.bytes_out > 0 and stats.bytes_in > 0
    assert stats.bytes_moved == stats.bytes_in + stats.bytes_out


def test_stats_count_failures(own_pool):
    assert H.with_failure() == -1
    stats = pydron.stats()
    assert stats.issued == 2 and stats.tasks == 2 and stats.failures == 1


def test_stats_count_bytes_moved_and_large_transfers_are_logged(own_pool, caplog):
    caplog.set_level(logging.INFO, logger="pydron")
    assert H.big(3_000_000) == 3_000_000  # the result stays on its worker; len() fetches it
    stats = pydron.stats()
    assert 3_000_000 <= stats.bytes_in < 3_100_000
    assert stats.bytes_kept == stats.bytes_in
    assert stats.bytes_out < 100_000
    fetched = [r for r in caplog.records if r.getMessage().startswith("fetched ")]
    assert len(fetched) == 1 and "bytes kept on" in fetched[0].getMessage()
    assert int(fetched[0].getMessage().split()[1]) == stats.bytes_in
    assert H.small_big(50_000) == 50_000  # under the inline limit: it comes back with its task
    stats = pydron.stats()
    assert 50_000 <= stats.bytes_in < 51_000 and stats.bytes_kept == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("received ")]  # < 1 MB


def test_nothing_is_logged_by_default():
    """Without logging configured, even a warning (a worker died) prints nothing."""
    import subprocess
    import sys

    code = "import logging, pydron; logging.getLogger('pydron.x').warning('worker died')"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    code = "import logging; logging.getLogger('pydron.x').warning('worker died')"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "worker died" in shown.stderr  # without pydron's NullHandler it would print


def test_a_dead_worker_counts_as_a_retry(own_pool, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pydron")
    assert H.survive(str(tmp_path / "marker")) == [5, 4]
    stats = pydron.stats()
    assert stats.retries == 1 and stats.workers_died == 1 and stats.failures == 0
    deadline = time.monotonic() + 30
    while not any(w.label.endswith("+1") for w in pydron.workers()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the replacement is being started
    infos = pydron.workers()
    # The replacement took the dead worker's place: the pool does not grow with deaths.
    assert len(infos) == 2 and all(w.alive for w in infos), infos
    assert len([w for w in infos if w.label.endswith("+1")]) == 1, infos
    assert {w.label.split("+")[0] for w in infos} == {f"PYDRON_TX '2*popen' #{k}" for k in (1, 2)}, infos
    messages = [r.getMessage() for r in caplog.records if r.name == "pydron"]
    assert any("died with 1 task(s) in flight; 1 will run again" in m for m in messages), messages
    assert any(m.startswith("retrying die_once() (its worker") for m in messages), messages


def test_per_task_records_only_while_watched(own_pool):
    H.naps(2, 0.0)
    assert EVENTS.records is None
    records = EVENTS.watch()
    try:
        H.naps(3, 0.03)
    finally:
        EVENTS.unwatch()
    assert EVENTS.records is None
    kinds = [r[0] for r in records]
    # A task queued behind a busy worker's and taken back for an idle one is sent twice.
    revoked = kinds.count("revoked")
    assert kinds.count("issue") == 3 and kinds.count("send") == 3 + revoked and kinds.count("done") == 3
    assert kinds.count("start") == 0  # the workers were up before
    issue = next(r for r in records if r[0] == "issue")
    assert issue[3] == "nap" and issue[4] == H.__file__ and issue[5] > 0
    for done in (r for r in records if r[0] == "done"):
        _, _, ok, size, received, began, ended = done
        assert ok and size > 0 and 0.029 < ended - began < 1.0  # the worker's own clock
    waits = [r for r in records if r[0] == "wait"]
    assert waits and all(r[2] >= r[1] for r in waits)
    H.naps(2, 0.0)
    assert len(records) == len(kinds)  # nothing more once unwatched


def test_recording_costs_little_per_task(own_pool):
    """The always-on hooks: a few microseconds per task at most (the pool spends ~20 µs)."""
    class FakeTask:
        fn = H.double
        inputs = []

        class future:  # noqa: N801 - shaped like a Future
            _pd_site = None
            _pd_graph = None
            _pd_seq = 1

    class FakeWorker:
        label = "nobody"

    task, worker, message = FakeTask(), FakeWorker(), (1, 1, None, b"x" * 40, [])
    n = 20_000
    start = time.perf_counter()
    for i in range(n):
        EVENTS.issued(task)
        EVENTS.sent(worker, [(i, task, message, 40)])  # a batch of one: the dearest case
        EVENTS.finished(worker, [(i, True, b"xx", 0.0, 0.001)])
    per_task = (time.perf_counter() - start) / n
    assert per_task < 10e-6, f"{per_task * 1e6:.1f} µs per task"
