"""The static analysis of immutable builtin values (pydron/tracer/natives.py).

An in-place operator whose target and operand are known to be immutable
builtins is emitted as the plain instruction. These tests check which values
the analysis calls native (and, as important, which it does not), the
run-time guard of ``range``, and differentially that typed loops, mixed with
functional calls, still behave as the plain function.

``pydron.schedule`` hands the function's globals to the tracer, so that its
loops over ``range`` are typed.
"""
from __future__ import annotations

import sys
import types

import pytest
from bytecode import Bytecode, Instr

import pydron
from dhelpers import double, fail_on, inc, log
from difftest import assert_equivalent
from pydron.tracer.natives import find_natives
from pydron.tracer.rewrite import _plan_natives, analyse, code_kind, rewrite_code
from pydron.tracer.stack import simulate
from pydron.tracer.versions import current_spec

SCHEDULE = pydron.schedule


def typed(fn):
    """``pydron.schedule(fn)``: rewritten knowing ``fn``'s globals."""
    return SCHEDULE(fn)


def analysed(fn, namespace=None):
    """(natives, plan) of ``fn``'s own code object; ``namespace`` defaults to its globals."""
    spec = current_spec()
    code = fn.__code__
    items = list(Bytecode.from_code(code, conserve_exception_block_stackdepth=True))
    flow = simulate(items, spec)
    plan = analyse(items, flow, spec, code_kind(code))
    namespace = fn.__globals__ if namespace is None else namespace
    _plan_natives(code, items, flow, spec, plan, namespace)
    return find_natives(items, flow, spec, code, namespace, set(plan.wraps)), plan


def native_names(fn, namespace=None):
    return analysed(fn, namespace)[0].names & set(fn.__code__.co_varnames)


def plain_inplace_count(fn, namespace=None):
    return len(analysed(fn, namespace)[1].native_inplace)


def rewritten_names(fn):
    """The instruction names of the rewritten code (with ``fn``'s globals)."""
    code = rewrite_code(fn.__code__, fn.__globals__)
    return [i.name for i in Bytecode.from_code(code) if isinstance(i, Instr)]


# ------------------------------------------------------------------ the analysis
def glue(n):
    total = 0
    for i in range(n):
        total += i * i
        total -= i
    return total


def test_loop_over_builtin_range_is_native():
    assert native_names(glue) == {"total", "i"}
    assert plain_inplace_count(glue) == 2
    # No helper and no type test is left in the loop, only the guard of range.
    names = rewritten_names(glue)
    assert names.count("IS_OP") == 1 and "CONTAINS_OP" not in names


def test_parameters_are_not_native(x=0):
    def f(x):
        x += 1
        return x
    assert native_names(f) == set()
    assert plain_inplace_count(f) == 0


def test_call_results_are_not_native():
    def f(n):
        y = abs(n)
        y += 1
        z = 0
        z += inc(n)
        return y, z
    assert native_names(f) == set()
    assert plain_inplace_count(f) == 0


GLOBAL_NUMBER = 3


def test_globals_are_not_native():
    def f():
        y = GLOBAL_NUMBER
        y += 1
        return y
    assert native_names(f) == set()


def test_one_non_native_store_spoils_the_variable():
    def f(flag):
        y = 0
        for i in range(3):
            y += i
        if flag:
            y = []
        y += [1]
        return y
    assert native_names(f) == {"i"}
    assert plain_inplace_count(f) == 0


def test_constants_operators_and_bools_are_native():
    def f(n):
        a = 1.5 + 2 * 3 - (4 ** 2) // 5
        b = "x" * 3 + "y"
        c = (1, 2) + ((3,),)
        d = n in (1, 2)
        e = not n
        g = a < 2
        h = -a
        k = n is None
        (w := 7)
        a += 1; b += "z"; c += (); d += 1; e += 1; g += 1; h += 1; k += 1; w += 1
        return a, b, c, d, e, g, h, k, w
    assert native_names(f) == {"a", "b", "c", "d", "e", "g", "h", "k", "w"}
    assert plain_inplace_count(f) == 9


def test_swapped_variables_stay_native():
    def f(n):
        a, b = 1, 2.5
        for i in range(n):
            a, b = b, a       # 3.13: LOAD_FAST_LOAD_FAST, STORE_FAST_STORE_FAST
            a += i
        return a, b
    assert native_names(f) == {"a", "b", "i"}
    assert plain_inplace_count(f) == 1
    swapped = typed(f)
    assert swapped(5) == f(5) and type(swapped(5)[0]) is type(f(5)[0])


def test_constants_with_other_items_are_not_native():
    def f(n):
        a, b = 1, ...
        c = (1, ...)
        a += 1; b += (); c += ()
        return a, b, c
    assert native_names(f) == set()


def test_operators_on_unknown_values_are_not_native():
    def f(n, xs):
        a = n + 1
        b = -n
        c = n < 3       # a comparison of unknown values may return anything
        d = xs[0]
        e = (1, n)
        a += 1; b += 1; c += 1; d += 1; e += ()
        return a, b, c, d, e
    assert native_names(f) == set()


def test_loop_over_rebound_range_is_not_native():
    namespace = {"range": lambda n: [[]] * n}
    assert native_names(glue, namespace) == set()
    assert plain_inplace_count(glue, namespace) == 0
    natives, plan = analysed(glue, namespace)
    assert natives.guards == set() and plan.range_guards == {}


def test_unknown_globals_type_nothing():
    spec = current_spec()
    code = glue.__code__
    items = list(Bytecode.from_code(code, conserve_exception_block_stackdepth=True))
    flow = simulate(items, spec)
    plan = analyse(items, flow, spec, code_kind(code))
    assert find_natives(items, flow, spec, code, None, set(plan.wraps)).names == set()


def test_other_iterables_are_not_native():
    def f(xs):
        total = 0
        for i in xs:
            total += i
        for j in enumerate(xs):
            total += 1
        return total
    assert native_names(f) == set()


def test_cells_are_not_native():
    def f(n):
        total = 0
        for i in range(n):
            total += i
        return lambda: total
    assert native_names(f) == {"i"}
    assert plain_inplace_count(f) == 0


def test_frame_access_types_nothing():
    def f(n):
        total = 0
        for i in range(n):
            total += i
        return locals()
    assert native_names(f) == set()


def test_deleted_variable_stays_native():
    def f(n):
        total = 0
        for i in range(n):
            total += i
        del i
        return total
    assert native_names(f) == {"total", "i"}


def test_exception_variables_are_not_native():
    def f(n):
        e = 0
        try:
            n / 0
        except ZeroDivisionError as e:  # noqa: F841
            pass
        e = 1
        e += 1
        return e
    assert native_names(f) == set()


def test_comprehension_variable_restored_after_inlining():
    def f(n):
        total = 0
        ys = [total for total in range(n)]
        total += 1
        return total, ys
    # From 3.12 the comprehension is inlined: its loop over range is not
    # followed (the iterator passes through LIST_APPEND), so the outer
    # variable, restored from it, is not known native either.
    assert ("total" in native_names(f)) == (sys.version_info < (3, 12))
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as patch:
        patch.setattr(pydron, "schedule", typed)
        assert_equivalent(f, 4)


# ------------------------------------------------------------------ the guard
def loop_over_range(n):
    total = 0
    for i in range(n):
        total += i
    return total


def test_range_rebound_after_decoration_is_an_error(monkeypatch):
    scheduled = typed(loop_over_range)
    assert scheduled(4) == 6
    monkeypatch.setitem(globals(), "range", lambda n: [[]] * n)
    with pytest.raises(TypeError) as info:
        scheduled(4)
    message = str(info.value)
    line = loop_over_range.__code__.co_firstlineno + 2
    assert message.startswith("pydron: range was rebound after @schedule compiled loop_over_range")
    assert f"({__file__}, line {line})" in message


def shared_items(n):
    seen = []
    for i in range(n):
        acc = i
        acc += i
        seen.append(acc)
    return seen


def test_range_in_globals_at_decoration_is_used(monkeypatch):
    shared = [0]
    monkeypatch.setitem(globals(), "range", lambda n: [shared] * n)
    assert plain_inplace_count(shared_items) == 0
    monkeypatch.setattr(pydron, "schedule", typed)
    assert_equivalent(shared_items, 3)


def test_guard_only_where_a_typed_operator_relies_on_range():
    def counts(n):
        out = []
        count = 0
        for i in range(n):
            out.append(i)
            count += 1        # typed, but not thanks to range
        return out, count
    natives, plan = analysed(counts)
    assert natives.names == {"count", "i"} and plan.native_inplace
    assert natives.guards == set() and plan.range_guards == {}

    def sums(n):
        total = 0
        for i in range(n):
            total += i
        for j in range(n):
            pass
        return total
    natives, plan = analysed(sums)
    assert len(natives.guards) == 1 and set(plan.range_guards) == natives.guards


# ------------------------------------------------------------------ differential
def typed_glue(n):
    total = 0
    for i in range(n):
        total += i * i
        total -= i
        total //= 1
        total **= 1
        total %= 10 ** 9
    return total


def typed_floats_and_strings(n):
    x = 0.5
    s = ""
    t = u = ()
    for i in range(1, n):
        x *= 1.5
        x /= i
        s += "ab" * (i % 2)
        t += (1, "2")
        u += (i,)       # a built tuple is not known native (its items may be futures)
    return x, s, t, u


def typed_mixed_with_functional(n):
    total = 0
    futures = 0
    for i in range(n):
        total += i
        futures += inc(i)          # a future: stays on the helper path
        total -= 1
        r = double(i)
        r += total                 # a future target: deferred
        log(r)
    return total, futures


def typed_failing_call(n):
    total = 0
    for i in range(n):
        total += i
        total += fail_on(i, 3)     # raises at the fourth call
    return total


def typed_in_try(n):
    total = 0
    try:
        for i in range(n):
            total += i
            total += fail_on(i, 2)
    except ValueError as exc:
        log(str(exc), total)
    total += 100
    return total


def typed_overflow_to_error(n):
    x = 1.0
    for i in range(n):
        x **= 2
        x *= 1e100
    return x


def typed_nested_loops(n):
    acc = 0
    for i in range(n):
        for j in range(i, n, 2):
            acc += i * j
            acc ^= j
        acc <<= 1
        acc >>= 1
    return acc


def typed_while(n):
    k = 0
    acc = 1
    while k < 10:
        k += 1
        acc *= 3
        if acc > n:
            break
    return k, acc, acc + inc(k)


def typed_generator_sum(n):
    return sum(inc(i) for i in range(n)) + [k for k in range(n)][-1]


@pytest.mark.parametrize("fn, arg", [
    (typed_glue, 300), (typed_floats_and_strings, 20), (typed_mixed_with_functional, 6),
    (typed_failing_call, 6), (typed_in_try, 5), (typed_overflow_to_error, 6),
    (typed_nested_loops, 7), (typed_generator_sum, 5), (typed_while, 100),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_typed_loops_are_equivalent(monkeypatch, fn, arg):
    monkeypatch.setattr(pydron, "schedule", typed)
    assert_equivalent(fn, arg)


def typed_generator(n):
    total = 0
    for i in range(n):
        total += i
        yield total + inc(i)


def test_typed_generator():
    assert plain_inplace_count(typed_generator) == 1
    assert list(typed(typed_generator)(5)) == list(typed_generator(5))


def test_typed_loops_have_plain_operators():
    assert plain_inplace_count(typed_glue) == 5
    assert plain_inplace_count(typed_floats_and_strings) == 4
    # ``futures += inc(i)`` and ``r += total`` keep the helper.
    assert plain_inplace_count(typed_mixed_with_functional) == 2
    assert plain_inplace_count(typed_nested_loops) == 4
    assert plain_inplace_count(typed_while) == 2


def test_nested_functions_are_typed_too():
    def outer(n):
        def inner(m):
            acc = 0
            for k in range(m):
                acc += k
            return acc
        return inner(n)
    code = rewrite_code(outer.__code__, outer.__globals__)
    inner = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    ops = [i for i in Bytecode.from_code(inner) if isinstance(i, Instr) and i.name == "BINARY_OP"]
    assert [int(i.arg) for i in ops] == [13]
    assert typed(outer)(5) == 10


@pytest.mark.skipif(sys.version_info < (3, 12), reason="comprehensions are inlined from 3.12")
def test_inlined_comprehension_keeps_outer_variable():
    def f(n):
        total = 5
        ys = [total * 2 for total in range(n)]
        total += 1
        return total, ys
    assert_equivalent(f, 3)
    assert typed(f)(3) == f(3)
