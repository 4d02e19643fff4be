"""Calls inside try and with blocks overlap, and handlers see what the sequential run sees."""
import time
from contextlib import suppress

import pytest

import pydron
from difftest import assert_equivalent
from dhelpers import Rec, boom, double, fail_on, inc, log, slow


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


# -- local containers changed in an overlapping block: the handler sees them as
# the plain run left them (runtime/journal.py undoes the later changes)


def loop_append_handler_reads_list(xs, bad):
    out = []
    try:
        for x in xs:
            out.append(fail_on(x, bad))
    except ValueError as e:
        log("handler", list(out), str(e))
    return out


def loop_setitem_on_dict(xs, bad):
    d = {1: "old"}
    try:
        for x in xs:
            d[x] = fail_on(x, bad)
            d["last"] = x
    except ValueError:
        return "caught", d
    return d


def loop_mixed_list_changes(xs, bad):
    out = [9, 8, 7]
    try:
        for x in xs:
            v = fail_on(x, bad)
            out.insert(0, v)
            out += [x]
            del out[-1]
            out[1:2] = [x, x]
            out.sort()
            out.extend((x, -x))
            out.pop()
    except ValueError:
        return "caught", out
    return out


def loop_set_changes(xs, bad):
    s = {0}
    t = set()
    try:
        for x in xs:
            t.add(fail_on(x, bad))
            s.add(x)
            s |= {x + 100}
            s.discard(0)
    except ValueError:
        return "caught", sorted(s), t
    return sorted(s), sorted(t)


def nested_list_changes(xs, bad):
    rows = [[], []]
    try:
        for x in xs:
            rows[x % 2].append(fail_on(x, bad))
    except ValueError:
        return "caught", rows
    return rows


def two_failures_in_loop(xs):
    out = []
    try:
        for x in xs:
            out.append(fail_on(x, x % 2))  # odd items fail; the first one wins
            out.append(x)
    except ValueError as e:
        return str(e), out
    return out


def with_suppress_in_loop(xs, bad):
    out = []
    with Rec("w", suppress=True):
        for x in xs:
            out.append(fail_on(x, bad))
    return out


def inline_helper_changes_callers_list(xs, bad):
    def add(o, v):
        o.append(v)
        o.append(-1)

    out = []
    try:
        for x in xs:
            add(out, fail_on(x, bad))
    except ValueError:
        return "caught", out
    return out


def total_not_read_by_handler(xs, bad):
    try:
        total = 0
        for x in xs:
            total += fail_on(x, bad)
    except ValueError:
        total = -1
    return total


def total_read_by_handler(xs, bad):
    total = 0
    try:
        for x in xs:
            total += fail_on(x, bad)
    except ValueError:
        return "caught", total
    return total


def comprehension_read_by_handler(xs, bad):
    out = None
    try:
        out = [fail_on(x, bad) for x in xs]
    except ValueError:
        return "caught", out
    return out


def while_loop_exit(xs, bad):
    out = []
    i = 0
    try:
        while i < len(xs):
            out.append(fail_on(xs[i], bad))
            i += 1
    except ValueError:
        return "caught", out
    return out


def closure_comprehension_changes_list(xs, bad):
    out = []
    try:
        [out.append(fail_on(x, bad)) for x in xs]
    except ValueError:
        return "caught", out
    return out


def container_from_before_and_inside(xs, bad):
    out = [inc(0)]
    out.append(inc(1))
    try:
        for x in xs:
            out.append(fail_on(x, bad))
    except ValueError:
        return "caught", out
    return out


def generator_changes_callers_dict(xs, bad):
    def numbered(seen, items):
        for i, item in enumerate(items):
            seen[i] = item
            yield item

    seen = {}
    out = []
    try:
        for x in numbered(seen, xs):
            out.append(fail_on(x, bad))
    except ValueError:
        return "caught", seen, out
    return seen, out


def long_loop_over_journal_limit(xs, bad):
    out = []
    try:
        for x in xs:
            out.append(fail_on(x, bad))
            for i in range(3000):  # 12,000 changes: more than the journal keeps
                out.append(i)
    except ValueError:
        return "caught", len(out), out[:3]
    return len(out)


_JOURNAL_CASES = [
    generator_changes_callers_dict, long_loop_over_journal_limit,
    loop_append_handler_reads_list, loop_setitem_on_dict, loop_mixed_list_changes,
    loop_set_changes, nested_list_changes, with_suppress_in_loop,
    inline_helper_changes_callers_list, total_not_read_by_handler, total_read_by_handler,
    comprehension_read_by_handler, while_loop_exit, closure_comprehension_changes_list,
    container_from_before_and_inside,
]


@pytest.mark.parametrize("bad", [99, 1, 3, 5])
@pytest.mark.parametrize("fn", _JOURNAL_CASES, ids=lambda f: f.__name__)
def test_local_containers_in_overlapping_blocks_match_plain(fn, bad):
    assert_equivalent(fn, [1, 2, 3, 4, 5], bad)


def test_two_failures_in_loop_first_wins():
    assert_equivalent(two_failures_in_loop, [2, 4, 5, 6, 7])


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


# -- loops and comprehensions in try/with blocks overlap on every version


def loop_append_in_try(xs, t):
    out = []
    try:
        for x in xs:
            out.append(slow(x, t))
    except ValueError:
        log("failed")
    return out


def loop_iadd_in_try(xs, t):
    try:
        total = 0
        for x in xs:
            total += slow(x, t)
    except ValueError:
        total = None
    return total


def comprehension_in_with(xs, t):
    with suppress(KeyError):
        out = [slow(x, t) for x in xs]
    return out


def comprehension_in_try_read_by_handler(xs, t):
    out = []
    try:
        out = [slow(x, t) for x in xs]
    except ValueError:
        pass
    return out


@pytest.mark.parametrize("fn,expected", [
    (loop_append_in_try, [1, 2, 3, 4]), (loop_iadd_in_try, 10),
    (comprehension_in_with, [1, 2, 3, 4]), (comprehension_in_try_read_by_handler, [1, 2, 3, 4]),
], ids=lambda v: getattr(v, "__name__", None))
def test_loops_in_try_and_with_overlap(fn, expected):
    scheduled = pydron.schedule(fn)
    scheduled([0], 0.0)  # workers up
    start = time.perf_counter()
    assert scheduled([1, 2, 3, 4], 0.4) == expected
    # 4 x 0.4 s on 2 workers: 0.8 s when they overlap, 1.6 s one at a time.
    assert time.perf_counter() - start < 1.3
