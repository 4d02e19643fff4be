"""Mismatches found by the differential fuzzer (tests/test_fuzz.py), minimised
by hand into regular differential tests.

While a bug is open its test is marked ``xfail(strict=True)``: when pydron is
fixed, the test passes, strict xfail turns that into a failure, and the mark
(and the matching entry of ``fuzzgen.KNOWN_BUGS``, which keeps the fuzzer away
from the bug's trigger) is to be removed.
"""
from __future__ import annotations

import sys
import threading

import pytest

from dhelpers import Rec, boom, fail_on, ident, inc, log, mklist
from difftest import assert_equivalent as _assert_equivalent


def assert_equivalent(fn, *args):
    """``difftest.assert_equivalent`` in a fresh thread, which also checks that
    the scheduled run leaves no exception set in the thread state: some of
    these bugs do, and a leaked exception would become the ``__context__`` of
    exceptions in later tests of the same process."""
    errors = []

    def run():
        try:
            _assert_equivalent(fn, *args)
            if sys.exc_info()[0] is not None:
                raise AssertionError(f"the scheduled run left {sys.exc_info()[1]!r} set in "
                                     f"the caller's thread state (sys.exc_info())")
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the test did not finish in 60 s"
    if errors:
        raise errors[0]

# ---------------------------------------------------------------------------
# Fixed (was KNOWN_BUGS["region-comprehension-failures"]):
# A generator expression (or, on 3.11, a comprehension) inside a try body or
# with block issues two calls that both fail.  The first failure is raised
# where the plain run raises it, but the second one was not discarded with it:
# it came back at a later point (a sync in a finally or handler, another try
# statement, the end of the call) and replaced the right exception.  Now every
# handler of a try or with block reconciles, not only those of blocks whose
# calls overlap.
# ---------------------------------------------------------------------------


def genexp_two_failures_then_handler():
    try:
        log(sum(fail_on(c, c) for c in [1, 2]))  # plain: ValueError('bad 1'), caught
        try:
            pass
        except KeyError:
            pass
    except ValueError:
        return "caught"


def test_second_failure_of_genexp_escapes_handler():
    assert_equivalent(genexp_two_failures_then_handler)


def genexp_two_failures_then_finally(out):
    try:
        out.append(sum(fail_on(c, c) for c in [1, 2]))
    finally:
        log("finally")


def test_second_failure_of_genexp_skips_finally():
    assert_equivalent(genexp_two_failures_then_finally, [])


def genexp_two_failures_then_unbound():
    try:
        v = max(boom(c) for c in range(2))  # plain: KeyError(0), caught
    except KeyError:
        pass
    try:
        pass
    finally:
        pass
    return v  # plain: UnboundLocalError


def test_second_failure_of_genexp_replaces_later_exception():
    assert_equivalent(genexp_two_failures_then_unbound)


# ---------------------------------------------------------------------------
# Fixed (was KNOWN_BUGS["inplace-int-alias"]):
# x op= y where x holds a future of an immutable value (an int) changed every
# other name and container slot holding the same future, as if ints were
# mutable. Now the link from a future to its in-place update only holds if
# the value has the in-place method; mutable values keep sharing the update.
# ---------------------------------------------------------------------------


def inplace_on_aliased_future(a):
    v = inc(a)
    w = v
    v += 1
    return w, v  # plain (5, 6) for a == 4


def inplace_on_aliased_list_item(a):
    lst = [inc(a)]
    w = lst[0]
    lst[0] += 5
    return w, lst  # plain (5, [10])


def inplace_after_sync(a):
    v = inc(a)
    log(v)  # v is known from here on
    w = v
    v += 10
    return w, v  # plain (5, 15)


def test_inplace_on_future_int_changes_aliases():
    assert_equivalent(inplace_on_aliased_future, 4)


def test_inplace_on_future_list_item_changes_aliases():
    assert_equivalent(inplace_on_aliased_list_item, 4)


def test_inplace_on_resolved_future_int_changes_aliases():
    assert_equivalent(inplace_after_sync, 4)


def inplace_twice_through_both_names(a):
    v = inc(a)
    w = v
    v += 1
    w += 2
    return w, v  # plain (7, 6)


def inplace_on_aliased_future_list(a):
    v = mklist(2)
    w = v
    v += [a]
    w += mklist(1)
    return w, v, w is v, ident(w)  # one list seen through both names


def inplace_on_aliased_resolved_list(a):
    v = mklist(2)
    log(len(v))
    w = v
    v += [a]
    return w, ident(w), w is v


def inplace_on_list_in_container(a):
    box = [mklist(1)]
    first = box[0]
    box[0] += [a]
    return first, box, ident(first)


def test_inplace_twice_through_both_names():
    assert_equivalent(inplace_twice_through_both_names, 4)


def test_inplace_on_future_list_updates_aliases():
    assert_equivalent(inplace_on_aliased_future_list, 4)


def test_inplace_on_resolved_list_updates_aliases():
    assert_equivalent(inplace_on_aliased_resolved_list, 4)


def test_inplace_on_list_item_updates_earlier_copy():
    assert_equivalent(inplace_on_list_in_container, 4)


# ---------------------------------------------------------------------------
# Fixed in 08a31bf (was KNOWN_BUGS["mutated-functional-result"]):
# A list returned by a functional call and then mutated in the schedule
# function (append, insert, reverse, item assignment) is passed to a later
# functional call without the mutation.
# ---------------------------------------------------------------------------


def append_to_functional_result(a):
    lst = mklist(1)
    lst.append(a)
    return ident(lst)  # plain [0, 3]


def setitem_on_functional_result(a):
    lst = mklist(2)
    lst[0] = a
    return ident(lst)  # plain [3, 1]


def test_mutated_functional_result_append_not_seen_by_call():
    assert_equivalent(append_to_functional_result, 3)


def test_mutated_functional_result_setitem_not_seen_by_call():
    assert_equivalent(setitem_on_functional_result, 3)


# ---------------------------------------------------------------------------
# Fixed (was KNOWN_BUGS["return-in-loop-in-try"], CPython 3.11 only):
# 3.11 splits a try body's exception-table range around a return inside a for
# loop; the rewrite settled the calls on re-entering the second range (reached
# by the loop's jumps from inside the block) as if it were entered from
# outside, so a failure escaped the handler. Plain returns 6.
# ---------------------------------------------------------------------------


def failure_in_try_with_return_in_loop(a):
    try:
        x = fail_on(1, 1)
        for i in range(1):
            if a == 4:
                return 5
        log("after")
    except ValueError:
        return 6  # plain: 6


def failure_in_with_with_return_in_loop(a):
    with Rec("w"):
        x = fail_on(1, 1)
        for i in range(2):
            if a == i + 10:
                return 5
        log("after")
    return x


def failure_before_try_in_else_branch(a):
    y = fail_on(1, 1)  # raised before the try: its handler must not catch it
    if a:
        x = 1
    else:
        try:
            x = inc(2)
        except ValueError:
            return "caught"
    return x


def failure_before_try_in_while_true(a):
    y = fail_on(1, 1)
    while True:
        try:
            z = inc(2)
            if a < 10:
                break
        except ValueError:
            return "caught"
    return z


@pytest.mark.parametrize("fn,arg", [
    (failure_in_try_with_return_in_loop, 3),
    (failure_in_try_with_return_in_loop, 4),
    (failure_in_with_with_return_in_loop, 3),
    (failure_before_try_in_else_branch, 0),
    (failure_before_try_in_else_branch, 1),
    (failure_before_try_in_while_true, 3),
])
def test_failure_in_try_with_return_in_loop_is_caught_where_plain_catches_it(fn, arg):
    assert_equivalent(fn, arg)


# ---------------------------------------------------------------------------
# Fixed in 08a31bf (was KNOWN_BUGS["constant-comprehension-filter"], 3.13 only):
# a comprehension whose filter the compiler folds to false, in a try or with
# block, raised TypeError: '<type>' object is not callable.
# ---------------------------------------------------------------------------


def constant_false_filter_in_try(xs):
    try:
        s = [c for c in xs if 0]
    except ValueError:
        pass
    return s  # plain: []


def constant_false_filter_in_with(xs):
    with Rec("w"):
        s = {c for c in xs if False}
    return s  # plain: set()


def test_constant_false_comprehension_filter_in_try():
    assert_equivalent(constant_false_filter_in_try, [4])


def test_constant_false_comprehension_filter_in_with():
    assert_equivalent(constant_false_filter_in_with, [4])


# ---------------------------------------------------------------------------
# Fixed in 08a31bf (was KNOWN_BUGS["for-break-in-try"], CPython 3.12, 3.13):
# a for loop that holds a break and ends by exhaustion, at the end of a try
# body, else or except clause: the scheduled run crashed the interpreter
# (segmentation fault) or raised "TypeError: '<type>' object is not callable"
# at the for line.  Run in a child process: a crash must not take the test
# process down.
# ---------------------------------------------------------------------------

_FOR_BREAK_SHAPES = {
    # the loop runs zero times (an empty list argument)
    "empty_loop_at_end_of_try": """
def fn(xs):
    try:
        for x in xs:
            break
    except ValueError:
        pass
    return "ok"
ARGS = ([],)
""",
    # the loop runs to exhaustion without taking its break
    "exhausted_loop_at_end_of_try": """
def fn(n):
    try:
        for i in range(n):
            if i > 5:
                break
    except ValueError:
        pass
    return "ok"
ARGS = (2,)
""",
    # the same in an except clause
    "exhausted_loop_in_handler": """
def fn(n):
    try:
        raise ValueError(n)
    except ValueError:
        for i in range(n):
            if i > 5:
                break
    return "ok"
ARGS = (2,)
""",
}

_CHILD = """
import sys
sys.path[:0] = {paths!r}
import pydron
{source}
print("plain", repr(fn(*ARGS)), flush=True)
try:
    print("scheduled", repr(pydron.schedule(fn)(*ARGS)), flush=True)
except Exception as exc:
    print("scheduled raised", type(exc).__name__, exc, flush=True)
"""


def test_for_loop_with_break_in_try_ends_by_exhaustion():
    """Each shape in its own child process; all of them must run like the plain run."""
    import os
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    problems = []
    for shape, source in sorted(_FOR_BREAK_SHAPES.items()):
        code = _CHILD.format(paths=[here, os.path.dirname(here)], source=source)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
        lines = proc.stdout.splitlines()
        if proc.returncode != 0 or lines != ["plain 'ok'", "scheduled 'ok'"]:
            problems.append(f"{shape}: exit status {proc.returncode}, stdout {lines}, "
                            f"stderr (tail) {proc.stderr[-500:]!r}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# Fixed (found by the fuzzer on CPython 3.13): a with block whose generator
# expression assigns an outer variable (walrus) was treated as one whose calls
# may overlap, because 3.13 builds the closure without LOAD_CLOSURE; the
# generator's assignment then ran although a call before it had failed.
# ---------------------------------------------------------------------------


def walrus_in_genexp_in_with(a):
    v = a + a
    with Rec("w", suppress=True):
        log("s", sum((v := a) for c in [a, fail_on(a, a)]))
    return v  # plain: 2 * a (fail_on raises before the generator runs)


def closure_assigns_in_try(a):
    v = 0

    def setv(x):
        nonlocal v
        v = x

    try:
        r = fail_on(a, a)
        setv(r)
    except ValueError:
        pass
    return v


@pytest.mark.parametrize("fn", [walrus_in_genexp_in_with, closure_assigns_in_try],
                         ids=lambda f: f.__name__)
def test_closure_made_in_block_keeps_outer_variables(fn):
    assert_equivalent(fn, 3)


# ---------------------------------------------------------------------------
# Fixed (found by the fuzzer): an exception that no except clause matches, in
# a try/except/finally inside a with block, whose finally returns: the
# scheduled run raised "TypeError: 'NoneType' object is not callable" instead
# of calling __exit__. bytecode's recomputed handler stack depth for the
# finally was one too deep; the rewrite now keeps the original depths.
# ---------------------------------------------------------------------------


def finally_returns_after_unmatched_exception_in_with(a, xs):
    with Rec("w"):
        try:
            if all(inc(3) for c in xs[5]):  # IndexError: matched by no clause
                pass
            return a
        except (ValueError, ArithmeticError):
            return (a, a, a, a, a, a, a)
        finally:
            return inc(a)  # swallows the IndexError
    return 0


def test_finally_returns_after_unmatched_exception_in_with():
    assert_equivalent(finally_returns_after_unmatched_exception_in_with, 6, [])


# ---------------------------------------------------------------------------
# Fixed (fuzzer, seed 81): a call that fails in a ``finally`` run on the way
# out of a failed call, inside a try block whose calls overlap, was dropped as
# if it had been issued speculatively, and the first exception escaped. In the
# plain run the finally's exception replaces the first one (which becomes its
# ``__context__``). Calls issued after a failure was raised ran in its
# handlers; only those issued between the failed call and its raise did not.
# ---------------------------------------------------------------------------


def failure_in_finally_replaces_failure(x):
    try:
        try:
            v = boom(x)  # plain: raises first
        finally:
            v = fail_on(x, x)  # plain: raises here, replacing boom's exception
    except KeyError:
        v = "caught"
    return v


def failure_in_handler_replaces_failure(x):
    try:
        try:
            v = boom(x)
        except Exception:
            log("handler")
            v = fail_on(x, x)
    except KeyError:
        v = "caught"
    return v


def speculative_failure_still_dropped(x):
    try:
        a = boom(x)  # raises: the plain run never issues the next call
        b = fail_on(x, x)
    except ValueError as e:
        return ("caught", str(e))
    return a, b


@pytest.mark.parametrize("fn", [failure_in_finally_replaces_failure,
                                failure_in_handler_replaces_failure,
                                speculative_failure_still_dropped],
                         ids=lambda fn: fn.__name__)
def test_failure_raised_on_the_way_out_replaces_the_first(fn):
    assert_equivalent(fn, 3)


# ---------------------------------------------------------------------------
# Fixed (fuzzer, seed 98 on 3.11; all versions): a call made in a handler
# whose failure is noticed after that handler (at a ``finally`` that follows
# it) was raised with the wrong ``__context__``. ``raise`` sets the context to
# the exception handled where it runs, which overwrote the one handled at the
# call. The failure is now raised from a handler of the call's own context.
# ---------------------------------------------------------------------------


def failure_noticed_past_its_handler(x):
    try:
        boom(x)  # KeyError
    except KeyError:
        try:
            try:
                raise RuntimeError("re") from None
            except RuntimeError:
                fail_on(x, x)  # plain: ValueError, its __context__ the RuntimeError
        finally:
            log("finally")


def failure_noticed_outside_every_handler(x):
    try:
        try:
            raise RuntimeError("re")
        except RuntimeError:
            y = fail_on(x, x)  # plain: raised here, its __context__ the RuntimeError
        log("after")
    finally:
        log("finally")
    return y


def failure_noticed_in_another_handler(x):
    try:
        raise KeyError("first")
    except KeyError:
        y = fail_on(x, x)  # its context: the KeyError
        try:
            raise TypeError("second")
        except TypeError:
            log("handler", y)  # noticed here, while the TypeError is handled


@pytest.mark.parametrize("fn", [failure_noticed_past_its_handler, failure_noticed_outside_every_handler,
                                failure_noticed_in_another_handler], ids=lambda f: f.__name__)
def test_a_late_failure_keeps_the_context_of_its_call(fn):
    assert_equivalent(fn, 3)


# Seed 977 (3.11): a call made in a handler failed, and a bare ``raise`` after it
# re-raised the handled exception; the block's ``finally`` put the call's failure
# in its place, but with the context of that older exception (none), not the
# exception handled at the call. The winner now keeps its call's own context.
def failure_before_a_bare_reraise(b):
    L = [1, 2]
    try:
        try:
            L[2]
        except Exception:
            x = boom(1 + b)  # plain: KeyError, its __context__ the IndexError
            raise
    finally:
        pass
    return L, x


def failure_in_a_loop_before_a_bare_reraise(b):
    L = [1, 2]
    try:
        try:
            L[2]
        except Exception:
            for _ in L[:4]:
                L.insert(0, boom(1 + b))
            else:
                raise
        except ValueError:
            pass
    finally:
        pass
    return L


@pytest.mark.parametrize("fn", [failure_before_a_bare_reraise, failure_in_a_loop_before_a_bare_reraise],
                         ids=lambda f: f.__name__)
def test_a_failure_replacing_a_reraised_exception_keeps_the_context_of_its_call(fn):
    assert_equivalent(fn, -1)


# Seed 977 (3.11): after a line over 127 characters, the traceback of a later
# line's failure showed the line before it. bytecode wrote that line's columns
# in a form whose bytes CPython's line lookup misreads (tracer/linetable.py).
def long_line_then_failing_assert(a, b):
    v2 = inc(a + b)
    L = [inc(2) for c3 in range(min(max((sum(inc(v2) for c2 in range(0)) for c1 in range(2)), default=1), 4)) for c4 in range(0)]
    L = mklist(0)
    assert a > 1, "a5"
    return L


LONG_LINE_PROGRAM = """
def fz(a, b, xs):
    v2 = add(a, b)
    L = [dec(2) for c3 in range(min(max((sum(dec(v2) for c2 in range(0)) for c1 in range(2)), default=1), 4)) for c4 in range(0)]
    L = mklist(0)
    assert a > 1, "a5"
    return L
"""


def test_a_line_over_127_characters_keeps_the_later_lines_of_a_traceback():
    import fuzzgen

    fuzzgen.check(LONG_LINE_PROGRAM, [(-2, 0, [])])  # the fuzzer's own program and check
    assert_equivalent(long_line_then_failing_assert, -2, 0)


def test_every_instruction_of_a_rewritten_function_has_its_own_line():
    """What tracebacks and f_lineno read (co_lines) agrees with each instruction's position."""
    import pydron
    from pydron.scheduling import SCHEDULE_MARK

    code = getattr(pydron.schedule(long_line_then_failing_assert), SCHEDULE_MARK).__code__
    positions = [position[0] for position in code.co_positions()]
    checked = 0
    for start, end, line in code.co_lines():
        for offset in range(start, end, 2):
            assert line == positions[offset // 2], f"offset {offset}: co_lines {line}, co_positions {positions[offset // 2]}"
            checked += 1
    assert checked == len(positions)
