"""Calls inside try and with blocks overlap, and handlers see what the sequential run sees."""
import time
from contextlib import suppress

import pytest

import pydron
from difftest import assert_equivalent
from dhelpers import boom, double, fail_on, inc, log, slow


def try_sum(xs, bad):
    try:
        a = fail_on(xs[0], bad)
        b = fail_on(xs[1], bad)
        c = fail_on(xs[2], bad)
        result = a + b + c
    except ValueError as e:
        result = ("caught", str(e))
    log("after", result)
    return result


def try_two_failures_first_wins():
    try:
        a = fail_on(1, 1)
        b = fail_on(2, 2)
    except ValueError as e:
        return str(e)


def try_later_failure_is_discarded():
    try:
        a = fail_on(1, 1)
        b = boom(2)
    except ValueError as e:
        log("handler", str(e))
    log("after")
    return "done"


def try_native_error_after_failing_call():
    try:
        a = fail_on(1, 1)
        x = {}["missing"]
    except ValueError as e:
        return "value", str(e)
    except KeyError as e:
        return "key", str(e)


def try_finally_runs_once():
    try:
        a = inc(1)
        b = fail_on(2, 2)
    finally:
        log("finally")
    return a + b


def try_else_branch():
    try:
        a = double(3)
        b = inc(a)
    except ValueError:
        b = -1
    else:
        log("else", b)
    return b


def with_suppress_overlap():
    with suppress(ValueError):
        r = inc(1) + fail_on(2, 2)
        log("never")
    return "ok"


def try_in_loop(n):
    out = []
    for i in range(n):
        try:
            v = fail_on(i, 2)
            w = double(v)
        except ValueError:
            w = None
        out = out + [w]
    return out


def try_return_inside():
    try:
        a = inc(1)
        b = inc(a)
        return a + b
    except ValueError:
        return None


def try_variable_read_in_handler():
    a = 0
    try:
        a = inc(1)
        b = fail_on(2, 2)
    except ValueError:
        return a
    return -1


@pytest.mark.parametrize("fn,args", [
    (try_sum, ([1, 2, 3], 9)), (try_sum, ([1, 2, 3], 2)), (try_sum, ([1, 2, 3], 1)),
    (try_two_failures_first_wins, ()), (try_later_failure_is_discarded, ()),
    (try_native_error_after_failing_call, ()), (try_finally_runs_once, ()), (try_else_branch, ()),
    (with_suppress_overlap, ()), (try_in_loop, (4,)), (try_return_inside, ()),
    (try_variable_read_in_handler, ()),
], ids=lambda v: getattr(v, "__name__", None))
def test_try_and_with_match_plain(fn, args):
    assert_equivalent(fn, *args)


def four_slow_in_try(t):
    try:
        a = slow(1, t)
        b = slow(2, t)
        c = slow(3, t)
        d = slow(4, t)
        total = a + b + c + d
    except ValueError:
        total = None
    return total


def four_slow_in_with(t):
    with suppress(KeyError):
        a = slow(1, t)
        b = slow(2, t)
        c = slow(3, t)
        d = slow(4, t)
        return a + b + c + d
    return None


@pytest.mark.parametrize("fn", [four_slow_in_try, four_slow_in_with])
def test_calls_in_try_and_with_overlap(fn):
    scheduled = pydron.schedule(fn)
    scheduled(0.0)  # workers up
    start = time.perf_counter()
    assert scheduled(0.4) == 10
    # 4 x 0.4 s on 2 workers: 0.8 s when they overlap, 1.6 s one at a time.
    assert time.perf_counter() - start < 1.3
