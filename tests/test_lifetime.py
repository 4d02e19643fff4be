"""Worker processes never outlive their master, and a dying worker fails its tasks.

Master processes here are real subprocesses (scripts written to tmp_path);
workers are real execnet popen gateways. Every test checks by pid (/proc)
that the workers are gone, not just that the pool says so.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import poolhelpers as H
import pydron
from pydron.config import GatewaySpec, local_python_spec
from pydron.errors import PydronError, WorkerDied
from pydron.remote import pool as pool_module
from pydron.remote.pool import Pool, get_pool
from pydron.runtime.graph import Graph

GONE_WITHIN = 5.0

MASTER = textwrap.dedent("""
    import os, sys, time
    import poolhelpers as H
    from pydron.remote.pool import get_pool
    from pydron.runtime.graph import Graph

    mode, piddir = sys.argv[1], sys.argv[2]
    pool = get_pool()                       # PYDRON_TX=2*popen
    g = Graph(get_pool)
    assert g.submit(H.add, (1, 2), {})._pd_result() == 3
    if mode != "idle":
        # One long task per worker; each writes its pid once it is running.
        for k in range(len(pool.workers)):
            g.submit(H.pid_then_sleep, (os.path.join(piddir, f"busy{k}"), 60), {})
        while len([n for n in os.listdir(piddir) if n.startswith("busy")
                   and not n.endswith(".tmp")]) < len(pool.workers):
            time.sleep(0.02)
    print("PIDS", *[w.info["pid"] for w in pool.workers], flush=True)
    if mode == "wait":
        time.sleep(120)                     # until the test kills us
    elif mode == "error":
        raise RuntimeError("master fails on purpose")
    # "idle" / "busy": fall off the end; atexit must stop the workers
""")


def _read_pids(proc, timeout=60):
    """The worker pids from the master's "PIDS ..." line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("PIDS "):
                return [int(p) for p in line.split()[1:]]
            if not line and proc.poll() is not None:
                break
    proc.kill()
    pytest.fail(f"master printed no pids; stderr:\n{proc.stderr.read()}")


def _launch(tmp_path, mode):
    script = tmp_path / "master.py"
    script.write_text(MASTER)
    piddir = tmp_path / "pids"
    piddir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-u", str(script), mode, str(piddir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=H.subprocess_env(PYDRON_TX="2*popen"), cwd=H.HERE,
    )
    return proc, piddir


def _reap(pids):
    """Test hygiene: kill whatever a failed test left behind (our own workers only)."""
    for pid in H.wait_gone(pids, 0):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_master_takes_busy_workers_with_it(tmp_path, sig):
    proc, piddir = _launch(tmp_path, "wait")
    pids = []
    try:
        pids = _read_pids(proc)
        assert len(pids) == 2
        busy = {int((piddir / f"busy{k}").read_text()) for k in range(2)}
        assert busy == set(pids)  # every worker is inside a 60 s task
        assert H.wait_gone(pids, 0) == pids
        os.kill(proc.pid, sig)
        proc.wait(timeout=10)
        start = time.monotonic()
        left = H.wait_gone(pids, GONE_WITHIN)
        assert not left, f"workers {left} outlived their master by {GONE_WITHIN} s"
        print(f"workers gone {time.monotonic() - start:.2f} s after the master")
    finally:
        proc.kill()
        proc.communicate()
        _reap(pids)


@pytest.mark.parametrize("mode", ["idle", "busy", "error"])
def test_master_exit_leaves_no_worker(tmp_path, mode):
    proc, _ = _launch(tmp_path, mode)
    pids = []
    try:
        pids = _read_pids(proc)
        start = time.monotonic()
        out, err = proc.communicate(timeout=30)
        exited = time.monotonic() - start
        if mode == "error":
            assert proc.returncode == 1 and "master fails on purpose" in err, err
        else:
            assert proc.returncode == 0, err
        assert exited < 10, f"the master took {exited:.1f} s to exit"
        left = H.wait_gone(pids, GONE_WITHIN)
        assert not left, f"workers {left} outlived a normal exit ({mode})"
    finally:
        proc.kill()
        _reap(pids)


@pytest.fixture
def own_global_pool(monkeypatch):
    """get_pool() starts a fresh 2-worker pool; another test's global pool is kept aside."""
    monkeypatch.setenv("PYDRON_TX", "2*popen")
    monkeypatch.delenv("PYDRON_CONF", raising=False)
    monkeypatch.setattr(pool_module, "_pool", None)
    yield
    pydron.shutdown()


def test_pydron_shutdown_stops_workers(own_global_pool):
    pool = pool_module.get_pool()
    assert pool_module.get_pool() is pool
    g = Graph(pool_module.get_pool)
    assert g.submit(H.add, (2, 2), {})._pd_result() == 4
    pids = [w.info["pid"] for w in pool.workers]
    assert len(pids) == 2 and H.wait_gone(pids, 0) == pids
    start = time.monotonic()
    pydron.shutdown()
    took = time.monotonic() - start
    left = H.wait_gone(pids, GONE_WITHIN)
    assert not left, f"workers {left} survived pydron.shutdown()"
    assert took < 5, f"shutdown took {took:.1f} s"
    # The old pool refuses work with a clear error; get_pool() starts a new one.
    late = Graph(lambda: pool).submit(H.add, (1, 1), {})
    with pytest.raises(PydronError, match="shut down"):
        late._pd_result()
    fresh = pool_module.get_pool()
    assert fresh is not pool
    assert Graph(lambda: fresh).submit(H.add, (1, 1), {})._pd_result() == 2


def test_pydron_shutdown_stops_busy_workers(own_global_pool, tmp_path):
    pool = pool_module.get_pool()
    g = Graph(lambda: pool)
    for k in range(2):
        g.submit(H.pid_then_sleep, (str(tmp_path / f"busy{k}"), 60), {})
    pids = _wait_pid_files(tmp_path, 2)
    assert sorted(pids) == sorted(w.info["pid"] for w in pool.workers)
    start = time.monotonic()
    pydron.shutdown()
    took = time.monotonic() - start
    assert not H.wait_gone(pids, GONE_WITHIN)
    assert took < 5, f"shutdown of busy workers took {took:.1f} s"


def test_task_in_flight_at_shutdown_fails_instead_of_hanging(own_global_pool, tmp_path):
    pool = pool_module.get_pool()
    g = Graph(lambda: pool)
    fut = g.submit(H.pid_then_sleep, (str(tmp_path / "busy0"), 60), {})
    _wait_pid_files(tmp_path, 1)
    pydron.shutdown()
    kind, error = H.call_with_timeout(fut._pd_result, 3)
    if kind == "timeout":  # let the stuck waiter go
        g.finish(fut, ok=False, error=PydronError("test cleanup"))
    assert kind == "error", f"waiting on a task of a shut-down pool: {kind}"
    assert isinstance(error, PydronError)


def _wait_pid_files(directory, count, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = sorted(n for n in os.listdir(directory)
                       if n.startswith("busy") and not n.endswith(".tmp"))
        if len(names) >= count:
            return [int((directory / n).read_text()) for n in names]
        time.sleep(0.02)
    pytest.fail(f"{count} tasks did not start within {timeout} s")


# ------------------------------------------------------------------ a worker dies


@pytest.fixture
def two_workers():
    """Two workers; a task fails at the first worker it takes down (retries=1)."""
    p = Pool([GatewaySpec(label, local_python_spec()) for label in ("w-one", "w-two")], retries=1)
    yield p
    p.shutdown()


def _label_of(pool, pid):
    return next(w.label for w in pool.workers if w.info["pid"] == pid)


def test_killed_worker_fails_its_task_and_others_keep_working(two_workers, tmp_path):
    pool = two_workers
    g = Graph(lambda: pool)
    victim_task = g.submit(H.pid_then_sleep, (str(tmp_path / "busy0"), 60), {})
    [pid] = _wait_pid_files(tmp_path, 1)
    label = _label_of(pool, pid)
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    kind, error = H.call_with_timeout(victim_task._pd_result, 10)
    took = time.monotonic() - start
    assert kind == "error", f"waiting on the killed worker's task: {kind}"
    assert isinstance(error, WorkerDied), repr(error)
    assert isinstance(error, pydron.WorkerDied)
    assert label in str(error) and "pid_then_sleep" in str(error), str(error)
    assert "retries=1" in str(error), str(error)
    assert took < 5, f"WorkerDied after {took:.1f} s"
    assert not H.wait_gone([pid], 2)

    # The survivor (and the worker started in the dead one's place) run
    # everything from now on, including tasks that depend on results computed
    # before the death.
    g2 = Graph(lambda: pool)
    base = g2.submit(H.add, (1, 1), {})
    futs = [g2.submit(H.add, (base, i), {}) for i in range(6)]
    where = [g2.submit(H.worker_pid, (), {}) for _ in range(4)]
    kind, values = H.call_with_timeout(lambda: [f._pd_result() for f in futs + where], 20)
    assert kind == "ok", (kind, values)
    assert values[:6] == [2 + i for i in range(6)]
    survivors = {w.info["pid"] for w in pool.workers if w.info["pid"] != pid}
    assert set(values[6:]) <= survivors and pid not in values
    g2.sync()


def test_every_worker_killed_queued_tasks_run_on_its_replacement(tmp_path):
    pool = Pool([GatewaySpec("only", local_python_spec())], retries=1)
    try:
        g = Graph(lambda: pool)
        first = g.submit(H.pid_then_sleep, (str(tmp_path / "busy0"), 60), {})
        queued = [g.submit(H.sleep_then_return, (0.1, k), {}) for k in range(3)]
        [pid] = _wait_pid_files(tmp_path, 1)
        os.kill(pid, signal.SIGKILL)
        # The queued calls are read first: raising the failure of an earlier call
        # cancels the later ones, which the sequential run would never make.
        kind, values = H.call_with_timeout(lambda: [f._pd_result() for f in queued], 30)
        assert (kind, values) == ("ok", [0, 1, 2])
        kind, error = H.call_with_timeout(first._pd_result, 10)
        assert kind == "error" and isinstance(error, WorkerDied), (kind, error)
        assert [w.label for w in pool.workers if w.alive] == ["only+1"]
    finally:
        pool.shutdown()


def test_killed_worker_task_runs_again_and_the_pool_keeps_its_size(tmp_path):
    """SIGKILL mid-task: the task runs again elsewhere and the run's result is right."""
    pool = Pool([GatewaySpec(label, local_python_spec()) for label in ("w-one", "w-two")], retries=3)
    try:
        g = Graph(lambda: pool)
        victim = g.submit(H.pid_then_sleep, (str(tmp_path / "busy0"), 1.0), {})
        others = [g.submit(H.sleep_then_return, (0.2, k), {}) for k in range(4)]
        [pid] = _wait_pid_files(tmp_path, 1)
        os.kill(pid, signal.SIGKILL)
        kind, values = H.call_with_timeout(lambda: [f._pd_result() for f in [victim] + others], 30)
        assert kind == "ok", values
        assert values[0] != pid and values[1:] == [0, 1, 2, 3]
        deadline = time.monotonic() + 20
        while sum(w.alive for w in pool.workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(w.alive for w in pool.workers) == 2
    finally:
        pool.shutdown()


def test_poison_task_gives_up_after_retries_naming_every_worker():
    pool = Pool([GatewaySpec(label, local_python_spec()) for label in ("w-one", "w-two")], retries=2)
    try:
        g = Graph(lambda: pool)
        start = time.monotonic()
        kind, error = H.call_with_timeout(g.submit(H.exit_process, (), {})._pd_result, 60)
        assert kind == "error" and isinstance(error, WorkerDied), (kind, error)
        message = str(error)
        assert message.startswith("exit_process() (called at "), message
        assert "killed 2 worker(s) it ran on: w-one" in message and "retries=2" in message, message
        assert time.monotonic() - start < 30
        kind, value = H.call_with_timeout(g.submit(H.add, (2, 3), {})._pd_result, 30)
        assert (kind, value) == ("ok", 5)  # the pool is whole again
    finally:
        pool.shutdown()


def test_killed_worker_is_reported_while_another_worker_is_busy(two_workers, tmp_path):
    pool = two_workers
    g = Graph(lambda: pool)
    victim_task = g.submit(H.pid_then_sleep, (str(tmp_path / "busy0"), 60), {})
    [pid] = _wait_pid_files(tmp_path, 1)
    g.submit(H.sleep_then_return, (2.5, None), {})  # issued later, on the other worker
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    kind, error = H.call_with_timeout(victim_task._pd_result, 10)
    took = time.monotonic() - start
    assert kind == "error" and isinstance(error, WorkerDied), (kind, error)
    H.call_with_timeout(g.sync, 10)
    assert took < 1.5, f"WorkerDied surfaced after {took:.1f} s"


def test_after_every_worker_died_calls_run_on_new_workers(tmp_path, monkeypatch):
    """Every worker killed: new ones are started; if none can be, a task fails at once
    with WorkerDied (no hang), and the next top-level schedule call starts a new pool."""
    pydron.shutdown()
    pool = get_pool()
    pids = [w.info["pid"] for w in pool.workers]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert not H.wait_gone(pids, 5)
    kind, value = H.call_with_timeout(lambda: pydron.schedule(_two_tasks)(), 60)
    assert kind == "ok", value
    assert value[0] == [3, 7] and not value[1] & set(pids)
    assert get_pool() is pool  # the same pool, with replacements

    deadline = time.monotonic() + 30  # both replacements up, none still starting
    while (pool._starting or sum(w.alive for w in pool.workers) < len(pids)) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    monkeypatch.setattr(pool, "_start_one", lambda spec: PydronError("no more processes here"))
    replacements = [w.info["pid"] for w in pool.workers if w.alive]
    assert len(replacements) == len(pids)
    for pid in replacements:
        os.kill(pid, signal.SIGKILL)
    assert not H.wait_gone(replacements, 5)
    g = Graph(lambda: pool)
    start = time.monotonic()
    kind, error = H.call_with_timeout(g.submit(H.add, (1, 2), {})._pd_result, 10)
    assert kind == "error" and isinstance(error, WorkerDied), (kind, error)
    assert "every pydron worker has died" in str(error), str(error)
    assert time.monotonic() - start < 8  # seconds, not a hang (generous: CI machines are busy)

    kind, value = H.call_with_timeout(lambda: pydron.schedule(_two_tasks)(), 60)
    assert kind == "ok", value
    assert value[0] == [3, 7]
    fresh = get_pool()
    assert fresh is not pool and value[1] <= {w.info["pid"] for w in fresh.workers}


def _two_tasks():
    import dhelpers
    return [dhelpers.inc(2), dhelpers.add(3, 4)], {dhelpers.slow_pid(k)[1] for k in range(4)}


def test_local_containers_the_program_dropped_are_not_kept_by_the_graph():
    """``out = out + [x]`` makes a new list each time; the old ones must die as in the plain run
    (they were all kept until the call ended: quadratic memory, and 10x slower glue)."""
    graph = Graph(lambda: None)
    try:
        out: list = []
        for x in range(2000):
            out = out + [x]
            graph.add_local(out)
        assert len(graph.local) <= 2, len(graph.local)
    finally:
        graph.close()
