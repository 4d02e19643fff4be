"""``@pydron.schedule`` on real worker processes: calls really overlap, sync points really wait.

Two local popen workers (``PYDRON_TX=2*popen``).  The tasks *sleep* rather
than compute, so the tests hold under ``pytest -n 2`` where two test
processes (four workers) share two cores.

Every overlap claim is checked twice:
* from the tasks' own ``time.time()`` spans (``phelpers.Span``), which does not
  depend on machine load: two tasks that ran on two workers at one instant;
* by wall time against a bound set halfway between the ideal parallel time and
  the sequential time (so ~0.4 s of headroom for dispatch and a loaded machine,
  and still a clear failure if the calls ran one after another).
"""
from __future__ import annotations

import os
import random
import sys
import textwrap
import time
import traceback

import pytest

import phelpers as P
import pydron
from pydron.remote import pool as pool_module

WORKERS = 2
HERE = os.path.abspath(__file__)


@pytest.fixture(scope="module", autouse=True)
def two_workers():
    """A fresh process-wide pool of 2 popen workers, warmed up; stopped (all of it) at the end."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYDRON_TX", f"{WORKERS}*popen")
        pydron.shutdown()  # another module's pool: a later get_pool() starts a new one
        pool = pool_module.get_pool()
        assert len(pool.workers) == WORKERS
        pids = [w.info["pid"] for w in pool.workers]
        _warm_up()
        yield pool
        pydron.shutdown()
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not [pid for pid in pids if _alive(pid)], "worker processes left running"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is gone for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pydron.schedule
def _warm(xs):
    return [P.process(x, 0.01) for x in xs]


def _warm_up():
    """Every worker has run a task (and loaded phelpers) before the timed tests."""
    assert [s.value for s in _warm(range(8))] == [x * 10 for x in range(8)]


@pytest.fixture(autouse=True)
def clear_log():
    P.LOG.clear()
    yield
    P.LOG.clear()


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def bound(ideal, sequential):
    """A wall-time limit: halfway between the parallel ideal and the sequential time."""
    return (ideal + sequential) / 2


def assert_parallel(spans, elapsed, ideal, sequential):
    """The tasks overlapped on different workers, and the wall time shows it."""
    assert P.max_overlap(spans) >= 2, f"no two tasks ran at the same time: {spans}"
    assert len({s.pid for s in spans}) == WORKERS, f"not every worker was used: {spans}"
    limit = bound(ideal, sequential)
    assert elapsed < limit, (
        f"{elapsed:.2f} s, limit {limit:.2f} s (parallel {ideal:.2f} s, sequential {sequential:.2f} s)")


# --------------------------------------------------------------- overlap


@pydron.schedule
def seed_loop(xs):
    outputs = []
    for x in xs:
        output = P.process(x)
        outputs = outputs + [output]
    return outputs


def test_seed_loop_overlaps():
    spans, elapsed = timed(seed_loop, [1, 2, 3, 4])
    assert [s.value for s in spans] == [10, 20, 30, 40]
    # 4 x 0.4 s on 2 workers: 0.8 s parallel, 1.6 s sequential -> limit 1.2 s
    assert_parallel(spans, elapsed, ideal=0.8, sequential=1.6)


@pydron.schedule
def list_comprehension(xs):
    return [P.process(x) for x in xs]


@pydron.schedule
def dict_comprehension(xs):
    return {x: P.process(x) for x in xs}


def test_list_comprehension_overlaps():
    spans, elapsed = timed(list_comprehension, [1, 2, 3, 4])
    assert [s.value for s in spans] == [10, 20, 30, 40]
    assert_parallel(spans, elapsed, ideal=0.8, sequential=1.6)


def test_dict_comprehension_overlaps():
    result, elapsed = timed(dict_comprehension, [1, 2, 3, 4])
    assert type(result) is dict and list(result) == [1, 2, 3, 4]
    assert {k: s.value for k, s in result.items()} == {1: 10, 2: 20, 3: 30, 4: 40}
    assert_parallel(list(result.values()), elapsed, ideal=0.8, sequential=1.6)


@pydron.schedule
def chains(xs):
    out = []
    for x in xs:
        a = P.f(x, 0.2)
        out = out + [(a, P.g(a, 0.2))]
    return out


@pydron.schedule
def nested_chains(xs):
    return [P.g(P.f(x, 0.2), 0.2) for x in xs]


def test_independent_chains_overlap():
    pairs, elapsed = timed(chains, [1, 2, 3, 4])
    assert [(a.value, b.value) for a, b in pairs] == [(2, 4), (3, 6), (4, 8), (5, 10)]
    for a, b in pairs:  # each g waited for its own f ...
        assert b.start >= a.end
    # ... and chain 2 did not wait for chain 1 to end: some f(x) started before g(x-1) ended
    assert any(nxt[0].start < prev[1].end for prev, nxt in zip(pairs, pairs[1:])), pairs
    # 8 x 0.2 s on 2 workers: 0.8 s parallel, 1.6 s sequential
    spans = [s for pair in pairs for s in pair]
    assert_parallel(spans, elapsed, ideal=0.8, sequential=1.6)


def test_nested_call_chains_overlap():
    spans, elapsed = timed(nested_chains, [1, 2, 3, 4])
    assert [s.value for s in spans] == [4, 6, 8, 10]
    # only the g spans are visible: 4 x 0.2 s of g after 0.2 s of f per chain
    assert P.max_overlap(spans) >= 2, spans
    assert elapsed < bound(0.8, 1.6), elapsed


# Mutating a list or dict created inside the schedule function is documented
# as known-safe (DESIGN.md section 1, "out.append(f(x))", "out[i] = f(x)",
# "d[k] = f(x)"): no sync point.  Today each of them is a sync point, so the
# loop runs one call at a time.


@pydron.schedule
def collect_append(xs):
    out = []
    for x in xs:
        out.append(P.process(x))
    return out


@pydron.schedule
def collect_setitem(xs):
    out = [None] * len(xs)
    for i, x in enumerate(xs):
        out[i] = P.process(x)
    return out


@pydron.schedule
def collect_dict_setitem(xs):
    d = {}
    for x in xs:
        d[x] = P.process(x)
    return list(d.values())


@pytest.mark.parametrize("pipeline", [collect_append, collect_setitem, collect_dict_setitem],
                         ids=["append", "setitem", "dict-setitem"])
def test_local_container_mutation_overlaps(pipeline):
    spans, elapsed = timed(pipeline, [1, 2, 3, 4])
    assert [s.value for s in spans] == [10, 20, 30, 40]
    assert_parallel(spans, elapsed, ideal=0.8, sequential=1.6)


@pydron.schedule
def combine():
    return P.h(P.f(1, 0.5), P.f(2, 0.5), 0.1)


def test_results_passed_to_another_call():
    span, elapsed = timed(combine)
    total, a, b = span.value
    assert (total, a.value, b.value) == (5, 2, 3)
    assert span.start >= max(a.end, b.end)  # h ran on both results
    # f(1) and f(2) overlap: 0.6 s parallel, 1.1 s sequential
    assert_parallel([a, b], elapsed, ideal=0.6, sequential=1.1)


@pydron.schedule
def inner(xs):
    out = []
    for x in xs:
        out.append(P.process(x, 0.6))
    return out


@pydron.schedule
def outer():
    first = P.process(1, 0.6)
    rest = inner([2])
    return [first] + rest


def test_nested_schedule_overlaps_with_caller():
    spans, elapsed = timed(outer)
    assert [s.value for s in spans] == [10, 20]
    first, nested = spans
    assert nested.start < first.end, "the nested schedule's call waited for the caller's"
    # 0.6 s parallel; 1.2 s if calling inner() were a sync point
    assert_parallel(spans, elapsed, ideal=0.6, sequential=1.2)
    assert inner([3, 4])[1].value == 40  # and it still works on its own


# --------------------------------------------------------------- sync points

N_BEFORE = 4


@pydron.schedule
def sync_by_helper(directory):
    before = []
    for i in range(N_BEFORE):
        before = before + [P.mark(directory, i, 0.15 + 0.1 * i)]  # the last is the slowest
    seen = P.listing(directory)                               # non-functional: a sync point
    after = [P.mark(directory, N_BEFORE + i, 0.05) for i in range(2)]
    return before, seen, after


@pydron.schedule
def sync_by_builtin(directory):
    before = []
    for i in range(N_BEFORE):
        before = before + [P.mark(directory, i, 0.15 + 0.1 * i)]
    seen = sorted(os.listdir(directory))                      # os.listdir: a sync point
    after = [P.mark(directory, N_BEFORE + i, 0.05) for i in range(2)]
    return before, seen, after


@pytest.mark.parametrize("pipeline", [sync_by_helper, sync_by_builtin],
                         ids=["helper", "os.listdir"])
def test_sync_point_waits_for_every_earlier_call(pipeline, tmp_path):
    before, seen, after = pipeline(str(tmp_path))
    done = [name for name in seen if name.startswith("done-")]
    started = [name for name in seen if name.startswith("started-")]
    # every call issued before the sync point had finished ...
    assert done == [f"done-{i}" for i in range(N_BEFORE)], seen
    # ... and none issued after it had started
    assert started == [f"started-{i}" for i in range(N_BEFORE)], seen
    assert [s.value for s in before] == list(range(N_BEFORE))
    assert [s.value for s in after] == [N_BEFORE, N_BEFORE + 1]
    assert min(s.start for s in after) >= max(s.end for s in before)
    # the calls before the sync point did run in parallel (the test is not vacuous)
    assert P.max_overlap(before) >= 2
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"{kind}-{i}" for kind in ("started", "done") for i in range(N_BEFORE + 2)])


# --------------------------------------------------------------- failures


def failing_pipeline(xs, bad, late, log_every):
    out = []
    for i, x in enumerate(xs):
        out.append(P.fail_at(x, bad, 0.2, late))   # the failing call's line
        if log_every and i % log_every == log_every - 1:
            P.log("step", i, out[-1])
    P.log("after", out)
    return out


def _run_recording(fn, *args):
    P.LOG.clear()
    try:
        fn(*args)
    except ValueError as exc:
        error = exc
    else:
        pytest.fail("no exception")
    lines = [fs.lineno for fs in traceback.extract_tb(error.__traceback__) if fs.filename == HERE]
    lines = [n for i, n in enumerate(lines) if i == 0 or lines[i - 1] != n]  # as difftest does
    return (type(error), str(error)), list(P.LOG), lines, error


@pytest.mark.parametrize("bad, late, log_every", [
    (4, 5, 2),     # log every 2nd step; the later call 5 fails first in wall time
    (3, 6, 0),     # no sync in the loop: all 8 calls in flight, 6 fails first
    (0, None, 3),  # the very first call fails
    (7, None, 2),  # the last call fails
])
def test_exception_in_loop_stops_like_sequential(bad, late, log_every):
    xs = list(range(8))
    plain = _run_recording(failing_pipeline, xs, bad, late, log_every)
    sched = _run_recording(pydron.schedule(failing_pipeline), xs, bad, late, log_every)
    assert sched[0] == plain[0] == (ValueError, f"bad input {bad}")
    assert sched[1] == plain[1]          # the log stops where the sequential run's does
    assert not any(entry[0] == "after" for entry in sched[1])
    assert sched[2] == plain[2]          # the traceback points at the user's line


def _user_frames(error):
    """(file, line, function) of the traceback, without pydron's and the helpers' frames."""
    skip = (os.path.dirname(pydron.__file__) + os.sep, P.__file__)
    return [(fs.filename, fs.lineno, fs.name) for fs in traceback.extract_tb(error.__traceback__)
            if not fs.filename.startswith(skip)]


def test_late_failure_traceback_has_each_caller_frame_once():
    args = (list(range(8)), 3, None, 0)
    plain = _run_recording(failing_pipeline, *args)[3]
    sched = _run_recording(pydron.schedule(failing_pipeline), *args)[3]
    assert _user_frames(sched) == _user_frames(plain)


def outer_of_nested(xs):
    """A schedule function that calls another (a nested top-level call) from a comprehension."""
    return [inner_of_nested(x) for x in xs]


def inner_of_nested(x):
    values = [P.fail_at(x + k, 5, 0.05) for k in range(3)]   # fails late, inside the comprehension
    return sum(values)


@pytest.mark.parametrize("outer_scheduled", [True, False])
def test_nested_schedule_failure_traceback_matches_the_plain_run(outer_scheduled):
    """A call site is recorded up to the frame that runs the top-level schedule function;
    a nested schedule call's failure still shows every user frame of both."""
    global inner_of_nested
    plain_inner = inner_of_nested
    args = ([1, 2, 3, 4],)
    plain = _run_recording(outer_of_nested, *args)[3]
    inner_of_nested = pydron.schedule(plain_inner)
    try:
        outer = pydron.schedule(outer_of_nested) if outer_scheduled else outer_of_nested
        sched = _run_recording(outer, *args)[3]
    finally:
        inner_of_nested = plain_inner
    assert str(sched) == str(plain) == "bad input 5"
    assert _user_frames(sched) == _user_frames(plain)
    names = [name for _, _, name in _user_frames(plain)]
    assert "outer_of_nested" in names and "inner_of_nested" in names  # both levels are shown


# --------------------------------------------------------------- rewriting speed


def generated_source(lines_wanted=200, seed=7):
    """A deterministic function of ~``lines_wanted`` lines: loops, ifs, calls, try, comprehensions."""
    rnd = random.Random(seed)
    blocks = [
        lambda k: [f"for i in range({k % 4 + 2}):",
                   f"    if i % 2 == 0:",
                   f"        total += tiny(i + {k})",
                   f"    else:",
                   f"        total -= i * {k}"],
        lambda k: [f"v{k} = tiny({k})",
                   f"if v{k} > {rnd.randint(0, 60)}:",
                   f"    acc.append(v{k})",
                   f"elif total < 0:",
                   f"    acc.append(-{k})",
                   f"else:",
                   f"    acc.append(len(acc))"],
        lambda k: [f"w{k} = [tiny(j) for j in range({k % 3 + 1})]",
                   f"d['k{k}'] = sum(w{k}) + max(w{k})"],
        lambda k: [f"n = 0",
                   f"while n < {k % 3 + 1}:",
                   f"    n += 1",
                   f"    total = total + n"],
        lambda k: [f"try:",
                   f"    q = {k} // (n - n)",
                   f"except ZeroDivisionError:",
                   f"    q = -{k}",
                   f"acc.append(q)"],
        lambda k: [f"s{k} = (tiny({k}), tiny({k + 1}))",
                   f"a{k}, b{k} = s{k}",
                   f"total += a{k} - b{k} if a{k} < b{k} else {k}"],
    ]
    body = ["total = 0", "acc = []", "d = {}", "n = 0"]
    k = 0
    while len(body) < lines_wanted - 2:
        body.extend(blocks[k % len(blocks)](k))
        k += 1
    body.append("return total, acc, d")
    return "def generated():\n" + textwrap.indent("\n".join(body), "    ") + "\n", len(body) + 1


def test_rewriting_speed(record_property):
    source, n_lines = generated_source()
    assert n_lines >= 200
    namespace = {"tiny": P.tiny}
    exec(compile(source, "<generated>", "exec"), namespace)
    fn = namespace["generated"]
    start = time.perf_counter()
    scheduled = pydron.schedule(fn)
    seconds = time.perf_counter() - start
    record_property("rewrite_seconds", seconds)
    print(f"\npydron.schedule on a {n_lines}-line function: {seconds * 1000:.1f} ms "
          f"(Python {sys.version.split()[0]}, {len(fn.__code__.co_code)} bytes of bytecode)")
    assert seconds < 0.5
    assert scheduled() == fn()   # and the rewritten function is still right


# --------------------------------------------------------------- glue overhead


def glue(n):
    total = 0
    for i in range(n):
        total += i * i
        total -= i
    return total


def test_glue_overhead_is_small():
    scheduled = pydron.schedule(glue)
    assert scheduled(1000) == glue(1000)
    # Alternate the two, best of 9 each: a busy moment (another test on the
    # other core) then hits both alike instead of failing the test.
    plain_s = sched_s = float("inf")
    for _ in range(9):
        plain_s = min(plain_s, timed(glue, 200_000)[1])
        sched_s = min(sched_s, timed(scheduled, 200_000)[1])
    assert sched_s / plain_s < 1.5, f"{sched_s / plain_s:.1f}x slower than plain"
