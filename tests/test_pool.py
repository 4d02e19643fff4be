"""The runtime driven directly (Graph + Pool) on real execnet worker processes.

Results, futures deep in arguments, chains, remote exceptions, issue-order
failures, concurrency, functions from ``__main__`` and from a local module
that workers cannot import, and one end-to-end bad configuration.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import poolhelpers as H
import pydron
from pydron.config import GatewaySpec, local_python_spec
from pydron.errors import ConfigError, RemoteError
from pydron.remote import pool as pool_module
from pydron.remote.pool import Pool
from pydron.runtime.future import CONDITION, FAILED, PENDING, Future
from pydron.runtime.graph import Graph

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LABELS = ("alpha", "beta")
NOTE = re.compile(r"^Remote traceback \(worker (alpha|beta)\):\n", re.S)


@pytest.fixture(scope="module")
def pool():
    p = Pool([GatewaySpec(label, local_python_spec()) for label in LABELS])
    yield p
    p.shutdown()


@pytest.fixture
def graph(pool):
    g = Graph(lambda: pool)
    yield g
    # Let nothing a test issued run on into the next test (failures are ignored).
    H.call_with_timeout(g.sync, 10)


result = H.result


def remote_note(exc):
    notes = [n for n in getattr(exc, "__notes__", []) if n.startswith("Remote traceback")]
    assert len(notes) == 1, getattr(exc, "__notes__", None)
    assert NOTE.match(notes[0]), notes[0]
    return notes[0]


# ------------------------------------------------------------------ results


def test_result_comes_back(graph):
    fut = graph.submit(H.add, (2, 3), {})
    assert type(fut) is Future
    assert result(fut) == 5


def test_kwargs_and_builtins(graph):
    assert result(graph.submit(H.echo, (1,), {"b": [2, 3]})) == ((1,), {"b": [2, 3]})
    assert result(graph.submit(sorted, ([3, 1, 2],), {"reverse": True})) == [3, 2, 1]
    assert result(graph.submit(divmod, (17, 5), {})) == (3, 2)


def test_lambda_and_closure(graph):
    k = 10
    assert result(graph.submit(lambda x: x * k, (4,), {})) == 40


def test_futures_deep_in_args(graph):
    a = graph.submit(H.add, (1, 1), {})
    b = graph.submit(H.slow_add, (2, 2, 0.1), {})  # still pending at submit time
    args = ((a, [b, {"k": (a, [b, {"deeper": a}])}]),)
    kwargs = {"x": {"y": [a, (b,)]}, "plain": 7}
    echoed = graph.submit(H.echo, args, kwargs)
    assert result(echoed) == (
        ((2, [4, {"k": (2, [4, {"deeper": 2}])}]),),
        {"x": {"y": [2, (4,)]}, "plain": 7},
    )


def test_same_future_twice_is_one_object_on_the_worker(graph):
    # Sequentially ``f(v, v)`` gets the same object twice; so does the worker.
    value = graph.submit(list, ((1, 2),), {})
    assert result(graph.submit(lambda p, q: p is q, (value, value), {})) is True


def test_chain(graph):
    x = graph.submit(H.add, (0, 1), {})
    for _ in range(30):
        x = graph.submit(H.add, (x, 1), {})
    assert result(x) == 31


def test_fan_out_fan_in(graph):
    root = graph.submit(H.add, (1, 2), {})
    leaves = [graph.submit(H.add, (root, i), {}) for i in range(10)]
    total = graph.submit(sum, (leaves,), {})
    assert result(total) == sum(3 + i for i in range(10))
    graph.sync()


def test_deferred_operations(graph):
    fut = graph.submit(H.sleep_then_return, (0.2, [10, 20]), {})
    first = fut[0]
    assert type(first) is Future  # pending: a deferred operation, not a wait
    plus = first + 1
    assert result(plus) == 11
    assert str(fut) == "[10, 20]"
    assert f"{fut[1]:>4}" == "  20"
    assert (fut == [10, 20]) is True  # known by now: computed at once
    assert len(fut) == 2


def test_sync_waits_for_everything(graph):
    futs = [graph.submit(H.sleep_then_return, (0.1, i), {}) for i in range(6)]
    graph.sync()
    assert all(f._pd_state not in (PENDING, FAILED) for f in futs)
    assert [result(f) for f in futs] == list(range(6))


# ------------------------------------------------------------------ failures


def test_remote_exception_keeps_type_message_args(graph):
    fut = graph.submit(H.raise_custom, (42, "no luck"), {})
    with pytest.raises(H.CustomError) as info:
        result(fut)
    exc = info.value
    assert type(exc) is H.CustomError
    assert str(exc) == "custom failure 42: no luck"
    assert exc.args == (42, "no luck")
    assert exc.code == 42
    note = remote_note(exc)
    assert "raise_custom" in note and "CustomError" in note


def test_builtin_remote_exception(graph):
    fut = graph.submit(int, ("not a number",), {})
    with pytest.raises(ValueError, match="invalid literal for int") as info:
        result(fut)
    remote_note(info.value)


def test_exception_that_cannot_be_rebuilt_becomes_remote_error(graph):
    fut = graph.submit(H.raise_ununpicklable, (), {})
    with pytest.raises(RemoteError, match="UnunpicklableError") as info:
        result(fut)
    assert "x/y" in str(info.value)


def test_unpicklable_argument_fails_the_task(graph):
    fut = graph.submit(H.echo, (threading.Lock(),), {})
    with pytest.raises(TypeError, match="pickle"):
        result(fut)
    assert result(graph.submit(H.add, (1, 1), {})) == 2  # the pool still works


def test_unpicklable_result_fails_the_task(graph):
    with pytest.raises(TypeError, match="pickle"):
        result(graph.submit(H.make_lock, (), {}))


def test_failure_propagates_to_dependents(graph):
    bad = graph.submit(H.raise_value_error, ("root cause",), {})
    child = graph.submit(H.add, (bad, 1), {})
    grandchild = graph.submit(H.echo, ([child],), {})
    deferred = child + 1
    for fut in (child, grandchild, deferred):
        with pytest.raises(ValueError, match="root cause"):
            result(fut)


def _first_fails_last(graph):
    """``first`` is issued first but fails 0.6 s after ``second`` failed."""
    first = graph.submit(H.sleep_then_raise, (0.6, ValueError("first")), {})
    second = graph.submit(H.sleep_then_raise, (0.0, KeyError("second")), {})
    deadline = time.monotonic() + 10
    while second._pd_state is PENDING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second._pd_state is FAILED
    assert first._pd_state is PENDING  # the setup really is "later one fails first"
    return first, second


def test_earliest_failure_in_issue_order_wins_at_sync(graph):
    _first_fails_last(graph)
    with pytest.raises(ValueError, match="first") as info:
        graph.sync()
    remote_note(info.value)


def test_earliest_failure_wins_when_waiting_on_the_later_one(graph):
    # The sequential run never reaches ``second``: it raises at ``first``.
    _, second = _first_fails_last(graph)
    with pytest.raises(ValueError, match="first"):
        result(second)


def test_failure_is_raised_without_waiting_for_later_tasks(graph):
    bad = graph.submit(H.raise_value_error, ("early",), {})
    graph.submit(H.sleep_then_return, (2.0, None), {})  # issued later, slow
    start = time.monotonic()
    with pytest.raises(ValueError, match="early"):
        result(bad)
    elapsed = time.monotonic() - start
    graph.sync()
    assert elapsed < 1.0, f"the failure surfaced after {elapsed:.2f} s"


# ------------------------------------------------------------------ concurrency


def _timed(graph, seconds):
    graph.sync()
    start = time.monotonic()
    futs = [graph.submit(time.sleep, (s,), {}) for s in seconds]
    graph.sync()
    for fut in futs:
        assert result(fut) is None
    return time.monotonic() - start


def test_two_tasks_overlap(graph):
    _timed(graph, [0.0, 0.0])  # warm up: the function is cached on both workers
    elapsed = _timed(graph, [0.5, 0.5])
    assert elapsed < 0.9, f"2 x 0.5 s on 2 workers took {elapsed:.2f} s"


def test_four_tasks_on_two_workers(graph):
    elapsed = _timed(graph, [0.5] * 4)
    assert elapsed < 1.6, f"4 x 0.5 s on 2 workers took {elapsed:.2f} s"


def test_independent_chains_run_in_parallel(graph):
    start = time.monotonic()
    ends = []
    for _ in range(2):
        x = graph.submit(H.slow_add, (0, 1, 0.25), {})
        for _ in range(2):
            x = graph.submit(H.slow_add, (x, 1, 0.25), {})
        ends.append(x)
    assert [result(e) for e in ends] == [3, 3]
    elapsed = time.monotonic() - start
    assert elapsed < 1.35, f"two 3 x 0.25 s chains took {elapsed:.2f} s"


def test_idle_worker_takes_a_waiting_task(graph):
    # long, short, long on two workers: ideally 0.85 s; queued behind the
    # first long task, the second one ends at 1.6 s.
    elapsed = _timed(graph, [0.8, 0.05, 0.8])
    assert elapsed < 1.3, f"0.8 + 0.05 + 0.8 s on 2 workers took {elapsed:.2f} s"


def test_long_tasks_spread_after_a_burst_of_short_ones(graph):
    # Short tasks open a deep pipeline to each worker; a function not seen to
    # be short must still not queue behind another long task.
    for i in range(20):  # one at a time: each is seen to be short
        assert result(graph.submit(H.add, (i, 1), {})) == i + 1
    assert max(worker.window for worker in graph.pool.workers) > 2
    elapsed = _timed(graph, [0.8, 0.05, 0.8])
    assert elapsed < 1.3, f"0.8 + 0.05 + 0.8 s on 2 workers took {elapsed:.2f} s"


# ------------------------------------------------------------------ where functions come from


MAIN_SCRIPT = textwrap.dedent("""
    from pydron.config import local_python_spec
    from pydron.remote.pool import Pool
    from pydron.runtime.graph import Graph

    OFFSET = 7

    class Box:
        def __init__(self, value):
            self.value = value

    def square_plus(x, offset=0):
        return x * x + OFFSET + offset

    def boxed(x):
        return Box(x)

    if __name__ == "__main__":
        pool = Pool([local_python_spec()] * 2)
        g = Graph(lambda: pool)
        squares = [g.submit(square_plus, (i,), {"offset": 1}) for i in range(4)]
        total = g.submit(sum, (squares,), {})
        print("RESULT", total._pd_result(), [str(s) for s in squares])
        box = g.submit(boxed, (total,), {})._pd_result()
        print("BOX", type(box) is Box, box.value)
        print("LAMBDA", g.submit(lambda v: v * 3, (squares[1],), {})._pd_result())
        pool.shutdown()
""")


def test_function_defined_in_main_runs(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(MAIN_SCRIPT)
    proc = H.start_script(script)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert "RESULT 46 ['8', '9', '12', '17']" in lines, out + err
    assert "BOX True 46" in lines, out + err
    assert "LAMBDA 27" in lines, out + err


@pytest.fixture
def localmod(monkeypatch):
    """Returns a function that imports tests/localmod_src/pydron_localmod,
    with its directory on this process's sys.path only (undone afterwards)."""
    assert H.LOCALMOD_DIR not in sys.path

    def load():
        monkeypatch.syspath_prepend(H.LOCALMOD_DIR)
        import pydron_localmod
        return pydron_localmod

    yield load
    sys.modules.pop(H.LOCALMOD_NAME, None)


def test_local_module_function_runs_on_workers(localmod):
    mod = localmod()
    # The module's directory is on the master's sys.path when the pool starts.
    p = Pool([GatewaySpec(label, local_python_spec()) for label in LABELS])
    try:
        g = Graph(lambda: p)
        shifted = [g.submit(mod.shifted, (i,), {}) for i in range(4)]
        assert [result(f) for f in shifted] == [1000, 1001, 1002, 1003]
        point = g.submit(mod.make_point, (3, -4), {})
        assert result(g.submit(mod.norm1, (point,), {})) == 7
        assert isinstance(result(point), mod.Point)
    finally:
        p.shutdown()


def test_local_module_imported_after_the_pool_started_runs_on_workers(graph, localmod):
    """The master's sys.path grew after the workers started: they get the new entries."""
    assert result(graph.submit(H.can_import, ("json",), {})) is True  # the pool is up
    assert result(graph.submit(H.can_import, (H.LOCALMOD_NAME,), {})) is False
    mod = localmod()  # only now, after the workers started
    assert [result(graph.submit(mod.shifted, (i,), {})) for i in range(4)] == [1000, 1001, 1002, 1003]
    assert result(graph.submit(H.can_import, (H.LOCALMOD_NAME,), {})) is True


# ------------------------------------------------------------------ configuration


BAD_CONF = {"workers": [{"type": "multicore", "cores": 2}, {"type": "multicore", "cores": 0}]}


@pytest.fixture
def bad_conf(tmp_path, monkeypatch):
    path = tmp_path / "pydron.conf"
    path.write_text(json.dumps(BAD_CONF))
    monkeypatch.delenv("PYDRON_TX", raising=False)
    monkeypatch.setenv("PYDRON_CONF", str(path))
    monkeypatch.setattr(pool_module, "_pool", None)  # another test's pool stays untouched
    return path


def test_bad_config_names_file_and_field(bad_conf):
    with pytest.raises(ConfigError) as info:
        pool_module.get_pool()
    message = str(info.value)
    assert str(bad_conf) in message
    assert "workers[1].cores" in message
    assert pool_module._pool is None  # nothing was started
    assert isinstance(info.value, pydron.PydronError)


def test_bad_config_through_the_graph_does_not_hang(bad_conf):
    g = Graph(pool_module.get_pool)
    with pytest.raises(ConfigError, match="workers\\[1\\].cores"):
        g.submit(H.add, (1, 2), {})
    kind, error = H.call_with_timeout(g.sync, 3)
    if kind == "timeout":  # let the stuck waiter go
        with CONDITION:
            g._outstanding.clear()
            CONDITION.notify_all()
    assert kind != "timeout", "Graph.sync() hangs after the pool could not start"


def test_plain_arguments_take_the_standard_pickler():
    """Numbers, strings, bytes and None skip cloudpickle (per-task cost); the
    bytes decode to the same values, and anything else still goes through it."""
    import pickle

    from pydron.remote import protocol

    args = (1, 2.5, 3j, True, "s", b"b", None)
    data = protocol.dump_args(args, {}, {})
    assert data == pickle.dumps((args, {}), protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(data) == (args, {})

    class Sub(int):  # not a plain int: cloudpickle, by value (defined in a function)
        pass

    local = protocol.dump_args((Sub(4),), {}, {})
    assert pickle.loads(local)[0][0] == 4 and type(pickle.loads(local)[0][0]).__name__ == "Sub"


def test_plain_and_other_arguments_run_on_workers(graph):
    assert result(graph.submit(H.echo, (1, "two", None, b"3", 4.5), {})) == \
        ((1, "two", None, b"3", 4.5), {})
    assert result(graph.submit(H.echo, ([1, 2],), {"k": (3,)})) == (([1, 2],), {"k": (3,)})


def test_plain_results_come_back_as_themselves_with_their_types(graph, pool):
    """A small number, string or bytes comes back inside the batch of results,
    not as a pickle of its own; larger strings, subclasses and the rest as before.
    Each comes back equal and of its own type, and is counted through the master."""
    class Text(str):
        pass

    limit = pool_module.worker_module.PLAIN_RESULT_LIMIT
    values = [0, -7, 2**70, 1.5, 2j, True, None, "", "x" * limit, "y" * (limit + 1),
              b"z" * limit, b"w" * (limit + 1), Text("sub"), [1, "a"], (2.0,)]
    before = pool.bytes_through_master
    futures = [graph.submit(H.sleep_then_return, (0, v), {}) for v in values]
    H.call_with_timeout(graph.sync, 10)
    # Known as they arrived: nothing is left to unpickle on the schedule thread.
    assert all(f._pd_bytes is None and f._pd_value == v for f, v in zip(futures[:9], values))
    assert futures[9]._pd_bytes is not None  # over the limit: a pickle, loaded on first use
    back = [result(f) for f in futures]
    assert back == values
    assert [type(v) for v in back] == [type(v) for v in values]
    assert pool.bytes_through_master - before >= 2 * limit + 2 * (limit + 1)


_PRINTING = r'''
import sys
sys.path[:0] = {paths!r}
import pydron
import poolhelpers as H

@pydron.schedule
def run():
    return [H.shout(i) for i in range(4)]

print("result", run())
'''


def test_print_and_logging_in_a_task_reach_the_master_once_with_the_worker_label():
    code = _PRINTING.replace("{paths!r}", repr([ROOT, HERE]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYDRON_")}  # the default pool
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[-1] == "result [0, 1, 2, 3]", proc.stdout
    for i in range(4):
        said = [line for line in out if line.endswith(f"] shouting {i}")]
        assert len(said) == 1 and said[0].startswith("[popen-"), proc.stdout
        warned = [line for line in proc.stderr.splitlines() if line.endswith(f"WARNING:root:careful {i}")]
        assert len(warned) == 1 and warned[0].startswith("[popen-"), proc.stderr


_REAL_NAMES = r'''
import logging, sys, warnings
sys.path[:0] = {paths!r}
import pydron

@pydron.functional
def task(i):
    warnings.warn(f"careful {i}")
    logging.getLogger("mine").info("info record %d", i)
    if i == 1:
        raise ValueError("task failed")
    return i

@pydron.schedule
def run():
    return [task(i) for i in range(2)]

logging.basicConfig(level=logging.INFO, format="%(levelname)s|%(name)s|%(message)s")
try:
    run()
except ValueError as exc:
    print("NOTES", *exc.__notes__, sep="\n")
'''


def test_tasks_defined_in_main_warn_and_fail_with_the_real_file_and_line_and_log_through_the_master(tmp_path):
    script = tmp_path / "realnames.py"
    script.write_text(_REAL_NAMES.replace("{paths!r}", repr([ROOT, HERE])))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYDRON_")}
    env["PYDRON_TX"] = "2*popen"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    for i in range(2):
        warned = [line for line in err if line.endswith(f"UserWarning: careful {i}")]
        assert len(warned) == 1 and f"{script}:8: UserWarning" in warned[0], proc.stderr
        # The master's logging configuration (level INFO, its format) applies to the task's record.
        logged = [line for line in err if line.startswith("INFO|mine|[") and line.endswith(f"] info record {i}")]
        assert len(logged) == 1, proc.stderr
    assert f'File "{script}", line 11, in task' in proc.stdout, proc.stdout


_PRELOAD = r'''
import os, sys, time
sys.path[:0] = {paths!r}
import pydron
import preloaded_mod  # writes a marker file named after the importing pid

@pydron.functional
def worker_pid():
    return os.getpid()

@pydron.schedule
def pids():
    return [worker_pid() for _ in range(4)]

pids()  # starts the pool; nothing here needs preloaded_mod on the workers
workers = [w.info["pid"] for w in pydron.remote.pool.get_pool().workers]
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    if all(os.path.exists(os.path.join({marker_dir!r}, str(pid))) for pid in workers):
        print("preloaded on", len(workers))
        break
    time.sleep(0.05)
else:
    print("not preloaded", os.listdir({marker_dir!r}), workers)
'''


def test_workers_import_the_scripts_modules_before_a_task_needs_them(tmp_path):
    (tmp_path / "preloaded_mod.py").write_text(
        "import os\n"
        f"open(os.path.join({str(tmp_path / 'markers')!r}, str(os.getpid())), 'w').close()\n")
    (tmp_path / "markers").mkdir()
    script = tmp_path / "main.py"
    script.write_text(_PRELOAD.replace("{paths!r}", repr([ROOT, str(tmp_path)]))
                      .replace("{marker_dir!r}", repr(str(tmp_path / "markers"))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYDRON_")}
    env["PYDRON_TX"] = "2*popen"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "preloaded on 2", proc.stdout + proc.stderr


@pytest.mark.parametrize("value", ["yes", "2", "true"])
def test_keep_freed_memory_setting_is_checked(monkeypatch, value):
    monkeypatch.setenv("PYDRON_KEEP_FREED_MEMORY", value)
    with pytest.raises(ConfigError, match=r"^PYDRON_KEEP_FREED_MEMORY=.*: expected 0 or 1$"):
        Pool([local_python_spec()])


def test_batches_go_as_one_pickle_unless_they_hold_a_large_byte_string():
    import pickle

    from pydron.remote import protocol, worker

    small = [(1, 7, None, b"args", [b"input"]), (2, 7, None, b"args", [("here", 5)])]
    assert pickle.loads(protocol.batch(small)) == small
    for big in ([(1, 7, None, b"x" * 70_000, [])], [(1, 7, b"f" * 70_000, b"a", [])],
                [(1, 7, None, b"a", [b"i" * 70_000])]):
        assert protocol.batch(big) is big  # pickling would copy the large bytes once more
    results = [(1, True, b"value", None, 0.0, 0.1)]
    assert pickle.loads(worker._batch(results, 2)) == results
    large = [(1, True, b"v" * 70_000, None, 0.0, 0.1)]
    assert worker._batch(large, 2) is large


@pydron.schedule
def _sizes_of_large_arguments(size):
    import dphelpers

    return [dphelpers.size(bytes([i]) * size) for i in range(3)]


def test_large_arguments_travel_in_unpickled_batches():
    assert _sizes_of_large_arguments(70_000) == [70_000] * 3
