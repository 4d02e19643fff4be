"""The Dask backend (pydron/remote/dask_backend.py) on real Dask processes, 127.0.0.1 only.

A ``dask scheduler`` and two ``dask worker`` processes (one thread each,
nannies, no dashboards) are started by the tests (tests/daskcluster.py);
their sys.path lacks tests/, so every helper function and class reaches them
by value. Skipped when ``distributed`` is missing, except under CI=true.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time

import pytest

try:
    import distributed  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("dask distributed is not installed (pip install 'pydron[dask]')", allow_module_level=True)

import pydron
from pydron.errors import ConfigError, WorkerDied
from pydron.remote import pool as pool_module
from pydron.remote.backend import Backend
from pydron.remote.dask_backend import DaskBackend
from pydron.remote.dask_entry import DaskSpec

import daskhelpers as dh
import test_differential
import test_differential_more
import test_sync_points
from daskcluster import DaskCluster
from difftest import assert_equivalent

def _jobqueue():
    """dask_jobqueue (a skip without it, a failure under CI=true)."""
    if os.environ.get("CI", "").lower() == "true":
        import dask_jobqueue
        return dask_jobqueue
    return pytest.importorskip("dask_jobqueue")


# The scheduler gives a task up after allowed-failures + 1 worker deaths: 2 here.
ALLOWED_FAILURES = 1


@pytest.fixture(scope="module")
def cluster():
    started = DaskCluster(workers=2, allowed_failures=ALLOWED_FAILURES)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def backend(cluster):
    """The process's pool is a DaskBackend joined to ``cluster`` while a test uses it."""
    made = DaskBackend(DaskSpec("test-dask", scheduler=cluster.scheduler))
    yield made
    made.shutdown()


@pytest.fixture
def on_dask(backend):
    previous = pool_module.swap_pool(backend)
    try:
        yield backend
    finally:
        pool_module.swap_pool(previous)


def write_conf(tmp_path, entries) -> str:
    path = tmp_path / "pydron.conf"
    path.write_text(json.dumps({"workers": entries}))
    path.chmod(0o600)
    return str(path)


@contextlib.contextmanager
def pool_from_conf(monkeypatch, path):
    """The pool that get_pool() starts from ``path``; shut down at the end."""
    monkeypatch.setenv("PYDRON_CONF", path)
    monkeypatch.delenv("PYDRON_TX", raising=False)
    previous = pool_module.swap_pool(None)
    try:
        yield
    finally:
        started = pool_module.swap_pool(previous)
        if started is not None:
            started.shutdown()


# ---------------------------------------------------------------- the interface


def test_both_backends_implement_the_interface():
    assert issubclass(pool_module.Pool, Backend)
    assert issubclass(DaskBackend, Backend)


def test_workers_cannot_import_the_tests(cluster, backend):
    import importlib.util

    found = backend.client.run(lambda: importlib.util.find_spec("daskhelpers") is not None)
    assert len(found) == 2 and not any(found.values())


# ---------------------------------------------------------------- differential suite
# Every registered case of the differential modules (test_differential,
# test_differential_more, test_sync_points), each run plainly and on Dask.

_CASES = ([pytest.param(*p.values, id=f"diff1-{p.id}") for p in test_differential.CASES.params()]
          + [pytest.param(*p.values, id=f"diff2-{p.id}") for p in test_differential_more.CASES.params()]
          + [pytest.param(*p.values, id=f"sync-{p.id}") for p in test_sync_points.CASES.params()])


@pytest.mark.parametrize("fn,args,kwargs", _CASES)
def test_differential_on_dask(on_dask, fn, args, kwargs):
    assert_equivalent(fn, *args, **kwargs)


# ---------------------------------------------------------------- values and classes


@pydron.schedule
def points(n):
    out = []
    for i in range(n):
        out.append(dh.shift(dh.make_point(i), 10))
    return out


def test_classes_of_unimportable_modules_keep_their_identity(on_dask):
    assert points(3) == [dh.Point(i + 10, 2 * i + 10) for i in range(3)]
    assert all(type(p) is dh.Point for p in points(2))


@pydron.schedule
def oops(x):
    r = dh.slow_inc(x, 0.0)
    return dh.fail_with_oops(r)


def test_exceptions_of_unimportable_modules(on_dask):
    with pytest.raises(dh.Oops, match="oops 2") as info:
        oops(1)
    assert type(info.value) is dh.Oops
    assert any("Remote traceback (Dask worker tcp://127.0.0.1:" in note for note in info.value.__notes__)


def scheduler_view(backend, keys=None):
    """Non-functional (a sync point): the scheduler's tasks {key: (state, priority, wanted)}."""
    def view(dask_scheduler):
        return {key: (ts.state, ts.priority, bool(ts.who_wants)) for key, ts in dask_scheduler.tasks.items()
                if isinstance(key, str) and key.startswith("pydron-")}
    return backend.client.run_on_scheduler(view)


def test_keys_name_function_and_run_and_priority_is_program_order(on_dask):
    seen = {}
    before = scheduler_view(on_dask)

    @pydron.schedule
    def run():
        a = dh.make_point(1)
        b = dh.shift(a, 1)
        seen.update(scheduler_view(on_dask))  # a sync point: a and b are done and held
        return b

    assert run() == dh.Point(2, 3)
    mine = {key: value for key, value in seen.items()
            if key.startswith(("pydron-make_point-", "pydron-shift-")) and key not in before}
    assert len(mine) == 2, seen
    runs = {key.rsplit("-", 2)[1] for key in mine}
    assert len(runs) == 1
    by_seq = {int(key.rsplit("-", 1)[1]): value for key, value in mine.items()}
    assert sorted(by_seq) == [1, 2]
    assert {key.split("-")[1] for key in mine} == {"make_point", "shift"}
    # Dask runs higher priorities first; its priority tuple starts with -(ours), i.e. seq.
    assert [by_seq[seq][1][0] for seq in (1, 2)] == [1, 2]
    assert all(state == "memory" for state, _, _ in mine.values())


def test_data_stays_on_workers_and_released_with_its_future(on_dask, monkeypatch):
    fetched = []
    fetch = on_dask.fetch
    monkeypatch.setattr(on_dask, "fetch", lambda value: fetched.append(value.key) or fetch(value))
    views = []

    @pydron.schedule
    def run():
        data = dh.big(5_000_000)
        n = dh.size(data)
        views.append(scheduler_view(on_dask))  # data is held: still wanted
        del data
        views.append(scheduler_view(on_dask))
        return n

    assert run() == 5_000_000
    # The 5 MB never came to the master; the number came with its completion.
    assert fetched == []
    big_key = next(key for key in views[0] if key.startswith("pydron-big-"))
    assert views[0][big_key][2] is True
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # released when its future died (asynchronously)
        state = scheduler_view(on_dask).get(big_key)
        if state is None or not state[2]:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"{big_key} still wanted after its future died: {state}")


@pydron.schedule
def run_spin(x):
    y = dh.inc_within(x)
    return dh.spin(y)


def test_timeout_stops_a_running_call(on_dask):
    began = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        run_spin(1)
    pattern = (r"^spin\(\) \(called at .*test_dask_backend\.py, line \d+\) did not finish within its "
               r"timeout of 0\.5 s \(on worker tcp://127\.0\.0\.1:\d+\); it was stopped$")
    assert re.match(pattern, str(info.value)), str(info.value)
    assert time.monotonic() - began < 20
    assert points(2) == [dh.Point(10, 10), dh.Point(11, 12)]  # its worker thread works again


def test_task_runner_timeout_leaks_nothing():
    """A timer that fires as the call returns must not raise later in the worker's thread."""
    from pydron.remote.dask_backend import _task_module

    task = _task_module()
    for _ in range(200):
        try:
            task._call_with_timeout(lambda: sum(range(2000)), (), {}, 0.0001)
        except task._TimedOut:
            pass
        total = 0
        for i in range(20000):  # the thread goes on running Python code: nothing pending
            total += i
    assert total == sum(range(20000))


# ---------------------------------------------------------------- faults


def test_values_come_when_the_program_needs_them(on_dask, monkeypatch):
    fetched = []
    fetch = on_dask.fetch
    monkeypatch.setattr(on_dask, "fetch", lambda value: fetched.append(value.key) or fetch(value))
    result = points(2)
    assert result == [dh.Point(10, 10), dh.Point(11, 12)]
    assert sorted(key.rsplit("-", 2)[0] for key in fetched) == ["pydron-shift"] * 2  # not make_point's


@pydron.schedule
def chain_of_slow(n, seconds):
    values = [dh.slow_inc(i, seconds) for i in range(n)]
    return [dh.slow_inc(v, seconds) for v in values]


def test_worker_sigkilled_mid_run(cluster, on_dask):
    pids = cluster.worker_pids()
    victim = sorted(pids.values())[0]

    def kill():
        time.sleep(1.0)
        os.kill(victim, 9)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        assert chain_of_slow(8, 0.3) == [i + 2 for i in range(8)]
    finally:
        killer.join()
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # it did die mid-run
    cluster.wait_for_workers(2)  # its nanny started a new one


@pydron.schedule
def run_poison(x):
    return dh.poison(x)


def test_poison_task_gives_worker_died(cluster, on_dask):
    with pytest.raises(WorkerDied) as info:
        run_poison(1)
    message = str(info.value)
    pattern = (r"^poison\(\) \(called at .*test_dask_backend\.py, line \d+\) killed 2 worker\(s\) "
               r"it ran on: tcp://127\.0\.0\.1:\d+, tcp://127\.0\.0\.1:\d+; given up after retries=2$")
    assert re.match(pattern, message), message
    cluster.wait_for_workers(2)


# ---------------------------------------------------------------- clusters from pydron.conf


def test_join_a_scheduler_from_pydron_conf(cluster, tmp_path, monkeypatch):
    path = write_conf(tmp_path, [{"type": "dask", "scheduler": cluster.scheduler}])
    with pool_from_conf(monkeypatch, path):
        assert points(2) == [dh.Point(10, 10), dh.Point(11, 12)]
        assert isinstance(pool_module.get_pool(), DaskBackend)


def test_local_cluster_from_pydron_conf(tmp_path, monkeypatch):
    path = write_conf(tmp_path, [{
        "type": "dask", "cluster": "distributed.LocalCluster",
        "cluster_options": {"n_workers": 2, "threads_per_worker": 1, "processes": True,
                            "dashboard_address": None},
    }])
    with pool_from_conf(monkeypatch, path):
        assert chain_of_slow(4, 0.0) == [2, 3, 4, 5]
        backend = pool_module.get_pool()
        pids = list(backend.client.run(os.getpid).values())
        assert len(pids) == 2
        allowed = backend.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
        assert allowed == backend.retries - 1
    for pid in pids:  # closed with the backend
        _wait_gone(pid)


def _wait_gone(pid, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"process {pid} is still running")


def test_slurm_job_script_from_pydron_conf(tmp_path):
    _jobqueue()
    from pydron.config import load_config

    path = write_conf(tmp_path, [{
        "type": "dask", "cluster": "dask_jobqueue.SLURMCluster", "jobs": 3,
        "cluster_options": {"queue": "compute", "account": "proj42", "cores": 4, "memory": "8GB",
                            "walltime": "01:30:00", "processes": 1,
                            "scheduler_options": {"host": "127.0.0.1", "dashboard_address": None}},
    }])
    [spec] = load_config(path)
    assert spec.jobs == 3
    made = spec.cluster_class()(**spec.cluster_options)
    try:
        script = made.job_script()
    finally:
        made.close()
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH -p compute", "#SBATCH -A proj42", "#SBATCH -n 1", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem=8G", "#SBATCH -t 01:30:00"):
        assert line in script, script
    assert "distributed.cli.dask_worker tcp://127.0.0.1:" in script
    assert "--nthreads 4" in script and "--memory-limit 7.45GiB" in script


def test_run_through_dask_jobqueue_local_cluster(tmp_path, monkeypatch):
    _jobqueue()
    path = write_conf(tmp_path, [{
        "type": "dask", "cluster": "dask_jobqueue.local.LocalCluster", "jobs": 2,
        "cluster_options": {"cores": 1, "memory": "1GB", "processes": 1,
                            "scheduler_options": {"host": "127.0.0.1", "dashboard_address": None}},
    }])
    with pool_from_conf(monkeypatch, path):
        assert points(3) == [dh.Point(i + 10, 2 * i + 10) for i in range(3)]
        backend = pool_module.get_pool()
        assert len(backend.client.scheduler_info()["workers"]) >= 1


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize("entry,where,message", [
    ({"type": "dask"}, "workers[0]", "expected exactly one of scheduler, scheduler_file or cluster, found none"),
    ({"type": "dask", "scheduler": "tcp://127.0.0.1:1", "cluster": "distributed.LocalCluster"},
     "workers[0]", "found scheduler and cluster"),
    ({"type": "dask", "scheduler": "not an address"}, "workers[0].scheduler", "expected a scheduler address"),
    ({"type": "dask", "scheduler_file": "nope.json"}, "workers[0].scheduler_file", "no such file"),
    ({"type": "dask", "cluster": "LocalCluster"}, "workers[0].cluster", "expected an importable class"),
    ({"type": "dask", "cluster": "no_such_module_xyz.Cluster"}, "workers[0].cluster", "cannot import"),
    ({"type": "dask", "cluster": "distributed.NoSuchCluster"}, "workers[0].cluster",
     "distributed has no class NoSuchCluster"),
    ({"type": "dask", "cluster": "distributed.LocalCluster", "cluster_options": [1]},
     "workers[0].cluster_options", "expected an object"),
    ({"type": "dask", "cluster": "distributed.LocalCluster", "jobs": 0}, "workers[0].jobs",
     "expected a positive integer"),
    ({"type": "dask", "scheduler": "tcp://127.0.0.1:1", "jobs": 2}, "workers[0].jobs",
     "only goes with \"cluster\""),
    ({"type": "dask", "scheduler": "tcp://127.0.0.1:1", "cores": 2}, "workers[0].cores", "unknown field"),
])
def test_config_errors_name_file_entry_and_field(tmp_path, entry, where, message):
    from pydron.config import load_config

    path = write_conf(tmp_path, [entry])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert path in text and f"{where}: " in text and message in text, text


def test_dask_entry_cannot_be_mixed_with_execnet_entries(tmp_path):
    from pydron.config import load_config

    path = write_conf(tmp_path, [{"type": "multicore", "cores": 1},
                                 {"type": "dask", "scheduler": "tcp://127.0.0.1:1"}])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert path in text and "workers[1].type: " in text and "cannot be mixed" in text, text


def test_missing_distributed_says_how_to_install(tmp_path, monkeypatch):
    import sys

    from pydron.config import load_config

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    path = write_conf(tmp_path, [{"type": "dask", "scheduler": "tcp://127.0.0.1:1"}])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "workers[0].type: " in text and "pip install 'pydron[dask]'" in text, text


def test_pytest_plugin_shares_a_dask_entry(tmp_path):
    """Each xdist worker joins (or starts) the cluster itself; the report header names it."""
    from pydron import pytest_share
    from pydron.config import load_config

    path = write_conf(tmp_path, [{"type": "dask", "scheduler": "tcp://127.0.0.1:8786"}])
    specs = load_config(path)
    assert pytest_share.share_out(specs, 2) == [[0], [0]]
    assert pytest_share.summary(specs) == "1 x dask (scheduler tcp://127.0.0.1:8786)"


# ------------------------------------------- the plain-function differential files


def test_plain_function_differential_files_pass_on_dask(cluster, backend, tmp_path):
    """test_try_overlap.py and test_fuzz_regressions.py compare plain and scheduled runs
    through the process's pool: run them in a pytest whose pool is this Dask cluster."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    conf = write_conf(tmp_path, [{"type": "dask", "scheduler": cluster.scheduler}])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYDRON_", "PYTEST_"))}
    env["PYDRON_CONF"] = conf

    def transitions(dask_scheduler):
        return dask_scheduler.transition_counter

    before = backend.client.run_on_scheduler(transitions)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
         "-o", "addopts=-p no:pydron", os.path.join(here, "test_try_overlap.py"),
         os.path.join(here, "test_fuzz_regressions.py")],
        cwd=os.path.dirname(here), env=env, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\d+ passed", proc.stdout), proc.stdout[-2000:]
    # Their calls really ran on this cluster (a few transitions per task).
    assert backend.client.run_on_scheduler(transitions) - before > 500
