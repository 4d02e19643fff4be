"""Issue 12: the glue code of a schedule function must be the plain interpreter.

Everything in a ``@schedule`` function that is not a functional call (calls of
ordinary helpers, recursion, big values, object lifetimes) must behave as in
the plain run: what a callee sees of its caller's frame, how deep recursion
goes, which values can be handed around, when objects die, whether the
interpreter survives, and how fast the glue runs.

Each test compares the plain function with ``pydron.schedule(function)``.
Functions are plain module-level functions here (their line numbers are what
the frame tests look at); the helpers live in ``tests/nghelpers.py`` so that
workers can import the functional ones.

Anything that might hang or crash the interpreter runs in a fresh interpreter
(``run_case``: this module imported by ``python -c``, one ``case_*`` function
called) under ``subprocess.run(..., timeout=...)``, so that a hang or a
segfault is a failure of one test, in seconds.

Tests that fail on the current code are ``xfail(strict=True)``; remove the
mark when the fix lands.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import gc
import json
import os
import subprocess
import sys
import time
import traceback
import warnings
import weakref

import pytest

import nghelpers
import pydron
from difftest import assert_equivalent
from nghelpers import (
    LOGGER, Collect, add, caller_file, caller_line, caller_name, dels, fdepth, fwrap, g,
    inc, inspect_caller, is_alive, log_caller, make_error, make_tracked, mock, name_of,
    nest_depth, pair, raiser_outer, rec_helper, slow_first, square, step, total,
    warn_caller, words,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.version_info[:2]


def xfail(reason, condition=True, strict=True):
    return pytest.mark.xfail(condition, strict=strict, reason=reason)


# ---------------------------------------------------------------------------
# Running a case in a fresh interpreter
# ---------------------------------------------------------------------------


def _env():
    env = dict(os.environ)
    paths = [ROOT, HERE] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONFAULTHANDLER"] = "1"  # a segfault prints the Python stack to stderr
    env.pop("PYDRON_CONF", None)
    return env


def run_case(name: str, timeout: float = 20.0):
    """Call ``case_<name>()`` of this module in a fresh interpreter.

    Fails the test if it does not finish in ``timeout`` seconds (a hang), exits
    with a non-zero code (an assertion, or a crash: a negative code is the
    signal) or prints no ``RESULT`` line. Returns the JSON it printed after
    ``RESULT``.
    """
    code = f"import test_native_glue as m; m.case_{name}()"
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout, cwd=HERE, env=_env())
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"case_{name}: no answer within {timeout} s (a hang)\n"
                    f"stdout:\n{_text(exc.stdout)}\nstderr:\n{_text(exc.stderr)[-4000:]}")
    took = time.monotonic() - start
    assert proc.returncode == 0, (
        f"case_{name}: the interpreter exited with {proc.returncode}"
        f"{' (killed by a signal: a crash)' if proc.returncode < 0 else ''} after {took:.1f} s\n"
        f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-6000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"case_{name} printed no RESULT\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT "):])


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _result(value) -> None:
    print("RESULT " + json.dumps(value), flush=True)


# ===========================================================================
# 1. What a callee sees of its caller
# ===========================================================================


def sees_getframe():
    return caller_name(), caller_line(), caller_file()


def sees_inspect_stack():
    return inspect_caller()


def sees_warning_stacklevel_2():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_caller()
    return [(r.filename, r.lineno, str(r.message)) for r in caught]


def sees_warning_direct():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("direct")
    return [(r.filename, r.lineno, str(r.message)) for r in caught]


def sees_logging_direct():
    handler = Collect()
    LOGGER.addHandler(handler)
    try:
        LOGGER.info("direct")
    finally:
        LOGGER.removeHandler(handler)
    return [(r.funcName, r.lineno, r.pathname) for r in handler.records]


def sees_logging_stacklevel_2():
    handler = Collect()
    LOGGER.addHandler(handler)
    try:
        log_caller("via helper")
    finally:
        LOGGER.removeHandler(handler)
    return [(r.funcName, r.lineno, r.pathname) for r in handler.records]


def makes_namedtuple():
    global NgPoint
    NgPoint = collections.namedtuple("NgPoint", "x")
    return NgPoint.__module__, nghelpers.roundtrip(NgPoint(1))


def makes_enum():
    global NgColor
    NgColor = enum.Enum("NgColor", "RED GREEN")
    return NgColor.__module__, nghelpers.roundtrip(NgColor.RED)


def makes_dataclass():
    global NgData
    NgData = dataclasses.make_dataclass("NgData", ["x"])
    return NgData.__module__, nghelpers.roundtrip(NgData(1))


def catches_traceback():
    try:
        raiser_outer()
    except Exception as e:
        return [f.name for f in traceback.extract_tb(e.__traceback__)]


def catches_traceback_after_task():
    y = inc(1)
    try:
        raiser_outer()
    except Exception as e:
        return [f.name for f in traceback.extract_tb(e.__traceback__)], y


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fn", [
    sees_getframe,
    sees_inspect_stack,
    sees_warning_stacklevel_2,
    sees_warning_direct,
    sees_logging_direct,
    sees_logging_stacklevel_2,
    makes_namedtuple,
    makes_enum,
    # 3.11's make_dataclass names the module 'types' in the plain run as well.
    makes_dataclass,
    catches_traceback,
    catches_traceback_after_task,
], ids=lambda fn: fn.__name__)
def test_callee_sees_the_plain_caller(fn):
    assert_equivalent(fn)


# ===========================================================================
# 2. Recursion depth
# ===========================================================================


def nested_recursion(n):
    def rec(n):
        return 0 if n == 0 else 1 + rec(n - 1)
    return rec(n)


def helper_recursion(n):
    return rec_helper(n)


def _max_depth(fn) -> int:
    """The largest ``n`` for which ``fn(n) == n`` (no RecursionError), by bisection."""
    def ok(n):
        try:
            return fn(n) == n
        except RecursionError:
            return False

    lo, hi = 0, 64
    while ok(hi):
        lo, hi = hi, hi * 2
        if hi > 1_000_000:
            return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def case_recursion_nested():
    _result({"plain": _max_depth(nested_recursion),
             "scheduled": _max_depth(pydron.schedule(nested_recursion))})


def case_recursion_helper():
    _result({"plain": _max_depth(helper_recursion),
             "scheduled": _max_depth(pydron.schedule(helper_recursion))})


@pytest.mark.parametrize("which", [
    "nested",
    "helper",
])
def test_recursion_depth(which):
    depths = run_case(f"recursion_{which}")
    print(depths)
    assert depths["scheduled"] >= 0.9 * depths["plain"], depths


# ===========================================================================
# 3. Deeply nested values
# ===========================================================================

DEEP = 1200


def deep_value(use):
    v = []
    for _ in range(DEEP):
        v = [v]
    if use == "len":
        return len(v)
    if use == "helper":
        return nest_depth(v)
    if use == "functional":
        return fdepth(v)
    if use == "functional_returns":
        return fwrap(v)
    if use == "returned":
        return v
    if use == "returned_beside_future":
        return [v, inc(1)]
    if use == "helper_beside_future":
        return nghelpers.mock(v, inc(1))
    raise AssertionError(use)


def _deep_outcome(fn, use):
    """("value", nesting depth or value) or ("raised", type, message): no deep ==."""
    try:
        value = fn(use)
    except Exception as exc:  # noqa: BLE001 - compared below
        return ("raised", type(exc).__name__, str(exc)[:300])
    if use == "returned_beside_future":
        return ("value", nest_depth(value[0]), value[1])
    if use == "helper_beside_future":
        (v, one), kwargs = value
        return ("value", nest_depth(v), one, kwargs)
    return ("value", nest_depth(value) if isinstance(value, list) else value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("use", [
    "len", "helper",
    "functional",
    "functional_returns",
    "returned", "returned_beside_future", "helper_beside_future",
])
def test_deeply_nested_value(use):
    plain = _deep_outcome(deep_value, use)
    assert plain[0] == "value", plain  # the plain run needs no higher recursion limit
    assert _deep_outcome(pydron.schedule(deep_value), use) == plain


# ===========================================================================
# 4. Crashes
# ===========================================================================


def recursion_error_module_level():
    e = g()
    return type(e).__name__


def recursion_error_nested():
    def h():
        try:
            return h()
        except RecursionError as e:
            return e
    return type(h()).__name__


def recursion_error_beside_task():
    y = inc(1)
    e = g()
    return type(e).__name__, y


def case_crash_module_level():
    _result(pydron.schedule(recursion_error_module_level)())


def case_crash_nested():
    _result(pydron.schedule(recursion_error_nested)())


def case_crash_beside_task():
    _result(pydron.schedule(recursion_error_beside_task)())


@pytest.mark.parametrize("which, expected", [
    pytest.param("module_level", "RecursionError", id="module_level"),
    pytest.param("nested", "RecursionError", id="nested"),
    pytest.param("beside_task", ["RecursionError", 2], id="beside_task"),
])
def test_recursion_error_does_not_crash(which, expected):
    assert run_case(f"crash_{which}") == expected


# ===========================================================================
# 5. Wrong results
# ===========================================================================


def raise_made_error(x):
    raise make_error(add("too big: ", str(x)))


def star_call(a, s):
    return mock(*pair(a), **{words(s)[0]: inc(a)})


def slice_by_futures(s):
    ws = words(s)
    return ws[inc(0):square(3):inc(1)]


@pytest.mark.timeout(30)
def test_raise_a_future_exception():
    assert_equivalent(raise_made_error, 5)


@pytest.mark.timeout(30)
def test_star_call_with_future_key():
    assert_equivalent(star_call, 3, "key b c")


def case_slice_by_futures():
    assert_equivalent(slice_by_futures, "a b c d e f g h i j k")
    _result("ok")


def test_slice_by_futures():
    assert run_case("slice_by_futures") == "ok"


# ===========================================================================
# 6. Hangs
# ===========================================================================


def slow_first_loop():
    total = 0
    for x in range(2000):
        total += slow_first(x)
    return total


def chain_600():
    r = inc(0)
    for _ in range(600):
        r = r + 1
    return r


def case_slow_first_loop():
    assert_equivalent(slow_first_loop)
    _result("ok")


def case_chain_600():
    assert_equivalent(chain_600)
    _result("ok")


@pytest.mark.parametrize("which", ["slow_first_loop", "chain_600"])
def test_no_hang(which):
    assert run_case(which) == "ok"


# ===========================================================================
# 7. Scaling with the number of calls
# ===========================================================================


def sum_of_generator(n):
    return sum(inc(i) for i in range(n))


def total_of_list(n):
    parts = [inc(i) for i in range(n)]
    return total(parts)


def _best_time(fn, n, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - start)
    return best


def _scaling(fn, rounds=5):
    sched = pydron.schedule(fn)
    assert sched(100) == fn(100)  # starts the pool
    # Interleaved, best of each: a burst of load elsewhere hits both sizes.
    small = large = float("inf")
    for _ in range(rounds):
        small = min(small, _best_time(sched, 2000, repeat=1))
        large = min(large, _best_time(sched, 8000, repeat=1))
    assert sched(8000) == fn(8000)
    _result({"n=2000": small, "n=8000": large})


def case_scaling_sum_of_generator():
    _scaling(sum_of_generator)


def case_scaling_total_of_list():
    _scaling(total_of_list)


@pytest.mark.parametrize("which", ["sum_of_generator", "total_of_list"])
def test_scaling_is_not_quadratic(which):
    times = run_case(f"scaling_{which}", timeout=60)
    print(which, {k: f"{v:.3f} s" for k, v in times.items()})
    # 4x the calls: linear is 4x, quadratic 16x
    assert times["n=8000"] <= 8 * times["n=2000"], times


# ===========================================================================
# 8. Lifetimes
# ===========================================================================


def dies_on_del():
    nghelpers.reset_dels()
    x = make_tracked("a")
    wr = weakref.ref(x)
    del x
    return is_alive(wr), dels()


def dies_on_rebind():
    nghelpers.reset_dels()
    x = make_tracked("a")
    wr = weakref.ref(x)
    x = make_tracked("b")
    return is_alive(wr), dels()


def dies_on_del_beside_task():
    nghelpers.reset_dels()
    y = inc(1)
    x = make_tracked("a")
    wr = weakref.ref(x)
    del x
    return is_alive(wr), dels(), y


def dies_on_del_in_try():
    nghelpers.reset_dels()
    try:
        y = inc(1)
        x = make_tracked("a")
        wr = weakref.ref(x)
        del x
        alive = is_alive(wr)
    except KeyError:
        alive = None
    return alive, dels(), y


def dies_on_del_after_functional_use():
    nghelpers.reset_dels()
    x = make_tracked("a")
    wr = weakref.ref(x)
    n = name_of(x)
    del x
    return is_alive(wr), dels(), n


def dies_on_del_of_local_list():
    nghelpers.reset_dels()
    x = [make_tracked("a")]
    x.append(inc(1))
    wr = weakref.ref(x[0])
    del x
    return is_alive(wr), dels()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fn", [
    dies_on_del, dies_on_rebind, dies_on_del_beside_task, dies_on_del_in_try,
    dies_on_del_after_functional_use,
    dies_on_del_of_local_list,
], ids=lambda fn: fn.__name__)
def test_object_dies_as_in_plain_run(fn):
    assert_equivalent(fn)


# ===========================================================================
# 9. Glue speed
# ===========================================================================


def glue_calls(n):
    t = 0
    for i in range(n):
        t = step(t, i)
    return t


@pytest.mark.timeout(60)
def test_glue_calls_run_near_native_speed():
    n = 100_000
    sched = pydron.schedule(glue_calls)
    assert sched(n) == glue_calls(n)
    gc.collect()  # earlier tests' cyclic garbage may hold futures: glue would take the slow path
    plain_t = sched_t = float("inf")
    for _ in range(5):  # alternated, so that a busy moment hits both alike
        plain_t = min(plain_t, _best_time(glue_calls, n, repeat=1))
        sched_t = min(sched_t, _best_time(sched, n, repeat=1))
    print(f"plain {plain_t:.4f} s, scheduled {sched_t:.4f} s, {sched_t / plain_t:.1f}x")
    assert sched_t <= 3 * plain_t  # target 1.3x


class _Captured:
    pass


def closure_captures_value():
    big = _Captured()
    ref = weakref.ref(big)

    def use(x):
        return x, big

    for i in range(3):
        use(i)
    return ref


@pytest.mark.timeout(30)
def test_value_captured_by_nested_function_dies_with_the_call():
    """A call site remembers the nested function it called last: not beyond the call."""
    gc.collect()
    plain_ref = closure_captures_value()
    sched_ref = pydron.schedule(closure_captures_value)()
    assert plain_ref() is None
    assert sched_ref() is None
