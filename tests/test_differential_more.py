"""Differential tests, part 2: operators, match, builtins, recursion, control
flow and exceptions.

See tests/difftest.py for the harness and its PYDRON_DIFFTEST_PLAIN switch.
"""
from __future__ import annotations

import contextlib
import math

import pytest

import dhelpers
from dhelpers import (
    CustomError, Obj, Rec, add, boom, combine, concat, dec, double, fail_on,
    flatten, ident, inc, is_even, length, log, log_ret, maybe, mkdict, mklist, mkset,
    mktuple, nested, none_fn, obj, pair, process, slow, slow_fail, sstr, word,
)
from difftest import CaseList, assert_equivalent

CASES = CaseList()

GLOBAL_K = 10
GLOBAL_TABLE = {"a": 1, "b": 2}
_G = None

# ---------------------------------------------------------------------------
# Operators and reads on futures
# ---------------------------------------------------------------------------


@CASES(3)
def arithmetic_on_future(x):
    r = inc(x)
    return r * 2, -r, +r, r + 0.5, r / 2, r // 3, r % 3, r ** 2, abs(-r), ~r, r << 1, r & 6


@CASES()
def subscript_and_slice_on_future():
    r = mklist(5)
    d = mkdict("k", inc(1))
    return r[0], r[-1], r[1:3], r[::-1], d["k"], nested(2)["a"][1][1]["b"]


@CASES()
def attribute_on_future():
    o = obj(inc(1), 5)
    return o.a, o.b, o.total(), obj(2).a + o.a


@CASES(4)
def fstring_and_format_on_future(x):
    r = inc(x)
    s = word(x)
    return f"{r}", f"[{r:>5}|{s!r}|{r * 2:03d}]", format(r, "x"), "%d-%s" % (r, s), "{}/{}".format(r, s)


@CASES(2)
def comparisons_on_future(x):
    r = inc(x)
    return (r == 3, r != 3, r < 5, r >= 3, 0 < r < 10, r is None, r is not None,
            none_fn(1) is None, r in [1, 2, 3], 2 in mklist(3), 7 not in mklist(3),
            "k" in mkdict("k", 1))


@CASES()
def isinstance_type_len_str():
    r = inc(1)
    lst = mklist(3)
    o = obj(1)
    return (isinstance(r, int), isinstance(o, Obj), isinstance(lst, tuple), type(r), type(lst) is list,
            type(o).__name__, len(lst), len(word(123)), str(r), repr(lst), bool(r), int(sstr(42)),
            float(r), hash(r) == hash(2))


@CASES()
def builtins_over_lists_of_futures():
    xs = [inc(i) for i in (3, 1, 2)]
    return (sum(xs), max(xs), min(xs), sorted(xs), sorted(xs, reverse=True), any(xs), all(xs),
            list(reversed(xs)), tuple(xs), set(xs), dict(zip("abc", xs)), list(enumerate(xs)))


@CASES()
def builtins_on_futures_directly():
    return (min(inc(1), inc(0)), max(mklist(4)), sum(mktuple(4)), sorted(mkset(3)), divmod(inc(6), 3),
            sorted(mklist(4), key=dec), max(mklist(3), key=lambda v: -double(v)),
            isinstance(inc(1), (str, int)), list(zip(*[mklist(2), pair(inc(5), 6)])),
            round(inc(1) / 3, 2), pow(inc(1), 3), math.sqrt(double(8)), math.floor(inc(1) / 2),
            list(pair(1, 2)), dict([pair("a", 1)]), frozenset(mklist(2)))


@CASES()
def methods_on_concrete_values():
    s = word(3)
    lst = mklist(4)
    d = mkdict("k", 5)
    return (s.upper(), s.startswith("w"), s.replace("w", "v"), lst.index(2), lst.count(1),
            d.get("k"), d.get("zz", "none"), sorted(d.items()), "-".join([word(1), word(2)]),
            sstr(7).zfill(3))


@CASES()
def mutating_methods_on_future_list():
    lst = mklist(3)
    lst.append(inc(5))
    lst.extend(pair(7, 8))
    lst.insert(0, word(1))
    popped = lst.pop()
    lst.remove(1)
    return lst, popped


@CASES()
def string_concat_and_repeat():
    return concat(word(1), "x") + word(2), word(3) * 2, concat([inc(1)], mklist(2)) * 2


@CASES()
def maybe_none_checks():
    out = []
    for i in range(5):
        m = maybe(i)
        if m is None:
            out.append("none")
        else:
            out.append(m)
    return out


# ---------------------------------------------------------------------------
# match
# ---------------------------------------------------------------------------


@CASES(0)
@CASES(1)
@CASES(5)
def match_literal(x):
    match inc(x):
        case 1:
            return "one"
        case 2 | 3:
            return "two-or-three"
        case n if is_even(n):
            return "even", n
        case _:
            return "other"


@CASES(1)
@CASES(4)
def match_class_pattern(x):
    match obj(x, double(x)):
        case Obj(1, b):
            return "a is one", b
        case Obj(a=a, b=8):
            return "b is eight", a
        case Obj():
            return "some obj"


@CASES(0)
@CASES(1)
@CASES(3)
def match_sequence_pattern(n):
    match mklist(n):
        case []:
            return "empty"
        case [x]:
            return "one", inc(x)
        case [0, *rest]:
            return "starts with zero", rest
    return "unreachable"


@CASES("a")
@CASES("b")
def match_mapping_pattern(key):
    match mkdict(key, inc(1)):
        case {"a": v}:
            return "a", v
        case {**rest}:
            return "rest", rest


@CASES()
def match_tuple_and_type():
    match pair(word(1), inc(2)):
        case (str() as s, int(n)) if n > 2:
            return "str-int", s, n
        case (s, n):
            return "plain", s, n


# ---------------------------------------------------------------------------
# Recursion and globals
# ---------------------------------------------------------------------------


@CASES(4)
def recursive_schedule(n):
    # Inner calls resolve to the plain module-level function (the harness only
    # schedules the outer call): they are non-functional calls, i.e. sync points.
    if n == 0:
        return []
    return recursive_schedule(n - 1) + [inc(n)]


@CASES(5)
def recursive_with_future_arg(n):
    if n <= 0:
        return [n]
    log("depth", n)
    return [n] + recursive_with_future_arg(dec(dec(n)))


@CASES()
def globals_read():
    return inc(GLOBAL_K), [add(v, GLOBAL_K) for v in GLOBAL_TABLE.values()], dhelpers.Obj(GLOBAL_K)


def _peek_global():
    log("G", _G)
    return _G


@CASES()
def global_write_future():
    global _G
    _G = inc(41)
    seen = _peek_global()
    _G = None
    return seen


# ---------------------------------------------------------------------------
# break / continue / return with pending calls
# ---------------------------------------------------------------------------


@CASES()
def break_on_index():
    out = []
    for i in range(10):
        r = inc(i)
        if i == 3:
            break
        out.append(r)
    return out, r


@CASES()
def break_on_future():
    out = []
    for i in range(10):
        r = double(i)
        if r > 6:
            break
        out.append(r)
    return out


@CASES()
def break_skips_failing_call():
    out = []
    for i in range(6):
        if i == 2:
            break
        out.append(fail_on(i, 3))
    log("after loop", out)
    return out


@CASES()
def continue_with_pending():
    out = []
    for i in range(6):
        r = inc(i)
        if is_even(i):
            continue
        out.append(r)
        log("kept", r)
    return out


@CASES()
def return_inside_loop():
    for i in range(10):
        r = inc(i)
        log("loop", i)
        if r == 3:
            return "found", r, i
    return "none"


@CASES()
def return_inside_nested_loops():
    for i in range(4):
        for j in range(4):
            if add(i, j) == 4 and is_even(i):
                return pair(i, j)
    return None


@CASES()
def while_true_break_on_future():
    n = 0
    while True:
        n = inc(n)
        if n >= 4:
            break
    return n


# ---------------------------------------------------------------------------
# Exceptions from functional calls
# ---------------------------------------------------------------------------


@CASES(3)
def fail_in_loop_result_used(bad):
    for i in range(5):
        log("before", i)
        r = fail_on(i, bad)
        log("after", i, r)
    return "done"


@CASES(2)
def fail_in_loop_result_unused(bad):
    for i in range(5):
        fail_on(i, bad)
        log("i", i)
    return "done"


@CASES()
def fail_value_never_used():
    fail_on(1, 1)
    log("after")
    return 5


@CASES()
def fail_value_never_used_no_sync():
    r = fail_on(1, 1)
    x = inc(2)
    return x


@CASES()
def fail_stored_in_local_container():
    out = []
    for i in range(4):
        out.append(fail_on(i, 2))
    log("never")
    return out


@CASES()
def earliest_failure_wins():
    a = slow_fail(1, 0.2)
    b = boom(2)
    return a, b


@CASES()
def earliest_failure_wins_reverse_use():
    a = fail_on(1, 1)
    b = boom(2)
    return b, a


@CASES()
def failure_through_dependent_chain():
    r = fail_on(2, 2)
    s = double(inc(r))
    log("after chain")
    return s


@CASES()
def native_zero_division_after_failure():
    r = fail_on(1, 1)
    x = 1 / 0
    return r, x


@CASES()
def native_keyerror_after_failure():
    d = {}
    r = fail_on(2, 2)
    return d["missing"], r


@CASES()
def native_error_in_glue_on_future():
    r = ident(0)
    return 10 / r


@CASES()
def native_error_deferred_then_sync():
    r = mklist(2)
    y = r[5]
    log("after index")
    return y


@CASES()
def functional_type_error():
    return add(inc(1), "x")


@CASES()
def fail_in_comprehension_with_logs():
    log("start")
    out = [log_ret(fail_on(i, 3)) for i in range(6)]
    log("end")
    return out


@CASES()
def raise_with_future_args():
    r = inc(1)
    raise CustomError(r, pair(1, inc(2)))


@CASES()
def assert_with_future():
    r = inc(1)
    assert r == 2, f"r is {r}"
    assert r == 3, f"r is {r} {word(r)}"
    return r


@CASES()
def unbound_local_after_del():
    r = inc(1)
    del r
    return r  # noqa: F821


@CASES()
def if_on_failed_future():
    log("start")
    if fail_on(1, 1):
        log("then")
    log("end")


@CASES()
def for_over_failed_future():
    out = []
    for v in ident(mklist(2)) + [fail_on(9, 9)]:
        out.append(v)
    return out


@CASES()
def while_condition_fails():
    i = 0
    while fail_on(i, 3) < 10:
        log("i", i)
        i = inc(i)
    return i


@CASES()
def failure_inside_nested_helper():
    def helper(x):
        log("helper", x)
        return double(fail_on(x, 2))

    return [helper(i) for i in range(4)]


@CASES([], {"k": 0})
def outside_mutation_stops_at_failure(lst, d):
    for i in range(5):
        lst.append(inc(i))
        d.update({"k": fail_on(i, 3), "last": i})
    return lst


@CASES()
def genexp_with_failure_consumed():
    log("before")
    total = sum(fail_on(i, 2) for i in range(4))
    log("after", total)
    return total


@CASES()
def failure_in_argument_of_nonfunctional():
    a = inc(1)
    log("a", a)
    log("b", [a, fail_on(a, 2)])
    log("c")


@CASES()
def only_later_failure_raises():
    a = fail_on(1, 2)
    b = fail_on(2, 2)
    c = fail_on(3, 2)
    log("unreached", a, c)
    return b


# ---------------------------------------------------------------------------
# try / except / else / finally
# ---------------------------------------------------------------------------


@CASES()
def try_catches_functional_error():
    try:
        r = fail_on(1, 1)
        log("not reached", r)
    except ValueError as e:
        log("caught", str(e))
        r = -1
    return r


@CASES()
def try_catches_unused_failure():
    try:
        fail_on(1, 1)
    except ValueError as e:
        log("caught", e.args)
        return "caught"
    return "not caught"


@CASES()
def try_wrong_except_type():
    try:
        boom(5)
        log("in try")
    except ValueError:
        log("wrong handler")
    log("after")


@CASES()
def try_else_finally():
    out = []
    for bad in (0, 9):
        try:
            r = fail_on(0, bad)
        except ValueError as e:
            out.append(("except", str(e)))
        else:
            out.append(("else", r))
        finally:
            log("finally", bad)
    return out


@CASES()
def try_reraise():
    try:
        fail_on(2, 2)
    except ValueError:
        log("reraising")
        raise


@CASES()
def try_raise_from():
    try:
        r = boom("k")
        return r
    except KeyError as e:
        raise CustomError("wrapped", inc(1)) from e


@CASES()
def try_raise_in_handler_context():
    try:
        fail_on(3, 3)
    except ValueError:
        boom(inc(1))


@CASES()
def try_finally_overrides():
    try:
        fail_on(1, 1)
    finally:
        log("finally")
        boom(2)


@CASES()
def try_finally_return_future():
    try:
        return inc(1)
    finally:
        log("finally runs")


@CASES()
def try_in_loop_collect_errors():
    out = []
    for i in range(5):
        try:
            out.append(fail_on(i, 2))
            log("ok", i)
        except ValueError as e:
            out.append(str(e))
    return out


@CASES()
def try_nested():
    try:
        try:
            boom(1)
        except ValueError:
            log("inner wrong")
        finally:
            log("inner finally")
    except KeyError as e:
        log("outer caught", repr(e))
        return inc(1)


@CASES()
def try_exception_object_returned():
    try:
        fail_on(4, 4)
    except ValueError as e:
        caught = e
    return type(caught), caught.args, str(caught)


@CASES()
def try_future_escapes_try():
    # the failure must be raised inside the try (where the call was made),
    # even though the value is only used after it
    try:
        r = fail_on(1, 1)
    except ValueError:
        r = "handled"
    return r


@CASES()
def try_except_star():
    try:
        fail_on(1, 1)
    except* ValueError as eg:
        log("group", [str(e) for e in eg.exceptions])
    return "after"


@CASES()
def suppress_contextlib():
    r = inc(1)
    with contextlib.suppress(ValueError):
        r = r + fail_on(2, 2)
    log("r", r)
    return r


# ---------------------------------------------------------------------------
# with blocks
# ---------------------------------------------------------------------------


@CASES()
def with_logs_enter_exit():
    with Rec("a") as c:
        r = inc(1)
        log("inside", r)
    return r, c.name


@CASES()
def with_exception_seen_by_exit():
    with Rec("a"):
        r = fail_on(1, 1)
        log("not reached")
    return r


@CASES()
def with_unused_failure_inside():
    with Rec("b"):
        fail_on(2, 2)
    log("after with")


@CASES()
def with_suppressing_exit():
    with Rec("s", suppress=True):
        fail_on(3, 3)
        log("not reached")
    log("after")
    return "ok"


@CASES()
def with_nested_and_multiple():
    with Rec("outer"), Rec("mid") as m:
        m.value = inc(1)
        with Rec("inner", suppress=True):
            boom(1)
        log("between", m.value)
    return m.value


@CASES()
def with_setattr_on_cm():
    with Rec("c") as c:
        c.value = pair(inc(1), word(2))
    return c.value


@CASES()
def with_return_inside():
    with Rec("r"):
        r = inc(1)
        return double(r)


@CASES()
def with_in_loop_continue():
    out = []
    for i in range(4):
        with Rec(f"it{i}", suppress=True):
            out.append(fail_on(i, 1))
            if i == 2:
                continue
            log("body", i)
    return out


# ---------------------------------------------------------------------------
# Pipelines (DESIGN.md shapes)
# ---------------------------------------------------------------------------


@CASES([1, 2, 3, 4])
def pipeline_concat(inputs):
    outputs = []
    for input in inputs:
        output = process(input)
        outputs = outputs + [output]
    return outputs


@CASES(list(range(6)))
def pipeline_map_reduce(inputs):
    parts = [process(x) for x in inputs]
    return combine(parts), len(parts)


@CASES([3, 1, 4, 1, 5])
def pipeline_two_stage(inputs):
    stage1 = [inc(x) for x in inputs]
    stage2 = []
    for s in stage1:
        stage2.append(double(s))
    log("done", stage2)
    return stage2


@CASES(list(range(7)))
def pipeline_tree_reduce(items):
    items = [inc(x) for x in items]
    while len(items) > 1:
        nxt = [add(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


@CASES(4)
def pipeline_dict_accumulate(n):
    results = {}
    for i in range(n):
        results[word(i)] = process(i)
    return flatten([[k, v["out"]] for k, v in results.items()])


@CASES([0, 1, 2, 3])
def pipeline_failure_midway(inputs):
    outputs = []
    for x in inputs:
        log("submit", x)
        outputs = outputs + [fail_on(process(x)["out"], 4)]
    return outputs


# ---------------------------------------------------------------------------
# Misc language constructs
# ---------------------------------------------------------------------------


@CASES()
def class_defined_inside():
    class Local:
        v = inc(1)

        def get(self):
            return double(self.v)

    return Local.v, Local().get()


@CASES()
def import_inside():
    import operator

    return operator.add(inc(1), 2), [operator.neg(inc(i)) for i in range(2)]


@CASES()
def chained_method_and_index():
    return mklist(5)[1:][0], nested(1)["a"][0], word(1).upper().lower()


@CASES()
def identity_of_future_shared():
    r = mklist(2)
    a = [r, r]
    return a[0] is a[1], a


@CASES()
def len_of_local_list_of_futures():
    lst = []
    for i in range(5):
        lst.append(inc(i))
        if len(lst) > 2:
            log("len", len(lst))
    return lst


@CASES()
def dict_get_setdefault_local():
    d = {}
    for w in ["a", "b", "a"]:
        d.setdefault(w, []).append(inc(len(w)))
    d["c"] = d.get("a", [])[0]
    return d


@CASES()
def sort_local_list_of_futures():
    lst = [inc(3), inc(1), inc(2)]
    lst.sort()
    lst.reverse()
    return lst


@CASES()
def slow_results_in_order():
    rs = [slow(i, 0.05 * (4 - i)) for i in range(4)]
    for r in rs:
        log("r", r)
    return rs


@CASES()
def future_in_exception_message_caught():
    try:
        raise ValueError(word(1), inc(1))
    except ValueError as e:
        return e.args


@CASES()
def length_functional_on_list_with_futures():
    xs = [inc(i) for i in range(3)]
    return length(xs), length(mklist(4)), dec(length([xs, xs]))


@pytest.mark.parametrize("fn,args,kwargs", CASES.params())
def test_differential(fn, args, kwargs):
    assert_equivalent(fn, *args, **kwargs)


def test_enough_distinct_cases():
    import test_differential as part1

    functions = CASES.functions() | part1.CASES.functions()
    assert len(functions) >= 110
    for fn in functions:
        assert not fn.__name__.startswith("test"), fn
