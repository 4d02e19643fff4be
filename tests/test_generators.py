"""@schedule generator functions and generator expressions: each yield hands out a resolved value."""
import pytest

import pydron
from dhelpers import LOG, double, fail_on, inc, log


def gen_simple(n):
    for i in range(n):
        yield double(i)


def gen_with_log(n):
    for i in range(n):
        r = inc(i)
        log("yielding", r)
        yield r
    return "done"


def gen_failing(n):
    for i in range(n):
        log("before", i)
        yield fail_on(i, 2)


def gen_nested_containers(n):
    yield [double(i) for i in range(n)]
    yield {"a": inc(1), "b": (double(2), inc(3))}


def consume(gen):
    items = []
    try:
        for item in gen:
            items.append(item)
    except Exception as exc:  # noqa: BLE001 - compared
        return items, (type(exc), str(exc)), list(LOG)
    return items, None, list(LOG)


@pytest.mark.parametrize("fn,args", [
    (gen_simple, (4,)), (gen_with_log, (3,)), (gen_failing, (5,)), (gen_nested_containers, (3,)),
])
def test_generator_schedule_matches_plain(fn, args):
    LOG.clear()
    plain = consume(fn(*args))
    LOG.clear()
    scheduled = consume(pydron.schedule(fn)(*args))
    assert scheduled == plain
    for item in scheduled[0]:
        assert "Future" not in type(item).__name__


def test_generator_return_value_and_send():
    def echo():
        received = yield inc(0)
        while received is not None:
            received = yield double(received)
        return inc(41)

    def drive(gen):
        out = [next(gen), gen.send(5), gen.send(7)]
        try:
            gen.send(None)
        except StopIteration as stop:
            out.append(stop.value)
        return out

    assert drive(pydron.schedule(echo)()) == drive(echo()) == [1, 10, 14, 42]


def genexpr_joined(words):
    return "-".join(w.upper() for w in words)


def genexpr_of_functional(n):
    return sum(double(i) for i in range(n)), list(inc(i) for i in range(n))


def genexpr_passed_to_helper(n):
    log(*(double(i) for i in range(n)))
    return max(inc(i) for i in range(n))


@pytest.mark.parametrize("fn,args", [
    (genexpr_joined, (["a", "b"],)), (genexpr_of_functional, (5,)), (genexpr_passed_to_helper, (4,)),
])
def test_generator_expressions_match_plain(fn, args):
    LOG.clear()
    plain = fn(*args), list(LOG)
    LOG.clear()
    assert (pydron.schedule(fn)(*args), list(LOG)) == plain


def test_async_function_is_refused_with_its_name():
    async def fetch():
        return 1

    with pytest.raises(TypeError, match="fetch"):
        pydron.schedule(fetch)


@pytest.mark.parametrize("kind", ["coroutine", "async generator"])
def test_async_functional_is_refused_with_its_name(kind):
    """An async functional would return a coroutine, which no worker can run or pickle."""
    with pytest.raises(TypeError) as info:
        if kind == "coroutine":
            @pydron.functional
            async def fetch(x):
                return x
        else:
            @pydron.functional
            async def fetch(x):
                yield x
    message = str(info.value)
    assert "@pydron.functional does not support async functions" in message
    assert "fetch" in message and __file__ in message


_SIGINT_IN_NESTED_GENERATOR = r"""
import signal, sys
sys.path[:0] = {paths!r}
import pydron

@pydron.schedule
def inner(n):
    for i in range(n):
        yield i

@pydron.schedule
def outer(n):
    yield from inner(n)

signal.signal(signal.SIGALRM, lambda *a: signal.raise_signal(signal.SIGINT))
hits = 0
for trial in range(100):
    g = outer(10**9)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0005)
        for _ in g:
            pass
    except KeyboardInterrupt:
        hits += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        g.close()
print("interrupted", hits)
"""


def test_sigint_while_a_nested_schedule_generator_runs():
    """Ctrl-C (SIGINT) at any point of a `yield from` between schedule generators:
    a KeyboardInterrupt every time, no crash, no TypeError from a line-less frame."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _SIGINT_IN_NESTED_GENERATOR.replace("{paths!r}", repr([root]))
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "interrupted 100", proc.stdout + proc.stderr[-3000:]
