"""Differential tests, part 1: data flow of futures.

Each registered function is a PLAIN function; the harness runs it plainly and
under ``pydron.schedule`` and compares value, exception, side-effect log and
arguments (see tests/difftest.py).  Check the cases without pydron:

    PYDRON_DIFFTEST_PLAIN=1 python -m pytest tests/test_differential*.py -q
"""
from __future__ import annotations

import pytest

from dhelpers import (
    Box, Calc, add, append_to, dec, describe, double, extend_to, fib,
    first, ident, inc, kwsum, length, log, log_ret, logkw, mkdict, mklist,
    mkset, mktuple, mul, nested, none_fn, obj, pair, plain_add, same, scale, set_attr,
    slow, sstr, total, word, is_even,
)
from difftest import CaseList, Outcome, assert_equivalent, compare_outcomes, deep_diff

CASES = CaseList()

# ---------------------------------------------------------------------------
# Functional calls return futures; futures flow into other calls
# ---------------------------------------------------------------------------


@CASES(1)
def call_returns_future(x):
    return inc(x)


@CASES(3)
def chain_g_of_f(x):
    return double(inc(x))


@CASES(2)
def chain_deep(x):
    return inc(double(add(inc(x), dec(x))))


@CASES()
def independent_calls_combined():
    a = inc(1)
    b = inc(2)
    c = inc(3)
    return add(add(a, b), c)


@CASES()
def future_in_tuple_arg():
    a = inc(1)
    b = double(2)
    return first((a, b))


@CASES()
def future_deeply_nested_arg():
    a = inc(1)
    b = pair(a, double(a))
    arg = {"x": [a, (b, {"y": [inc(a)]})]}
    return ident(arg)


@CASES()
def futures_in_list_to_functional():
    xs = [inc(i) for i in range(4)]
    return total(*xs), length(xs), ident(xs)


@CASES()
def future_as_dict_key_and_value():
    k = word(1)
    return ident({k: inc(1), "other": [k]})


@CASES(5)
def kwargs_to_functional(x):
    return describe(inc(x), label=word(x), sep=sstr(":"))


@CASES()
def keyword_only_functional():
    return scale(inc(2)), scale(inc(2), by=inc(3))


@CASES()
def star_args_functional():
    args = [inc(1), inc(2), inc(3)]
    return total(*args)


@CASES()
def star_args_from_future():
    return total(*mklist(5)), add(*pair(3, 4))


@CASES()
def double_star_kwargs_functional():
    kw = {"a": inc(1), "b": inc(2)}
    return kwsum(**kw), kwsum(**mkdict("z", inc(9)))


@CASES()
def mixed_star_call():
    return describe(*[inc(1)], **{"label": word(2), "sep": "->"})


@CASES()
def bound_method_functional():
    c = Calc(3)
    return c.scale(inc(1)), Calc(2).scale(c.scale(2))


@CASES()
def static_and_class_method_functional():
    return Calc.sq(inc(2)), Calc(1).sq(3), Calc.cube(inc(1)), Calc.make(inc(0))


@CASES(10)
def recursive_functional(n):
    return fib(n), fib(inc(n))


@CASES()
def returns_none_future():
    r = none_fn(1)
    return r


@CASES()
def unused_future_result():
    inc(1)
    double(2)
    return 7


# ---------------------------------------------------------------------------
# Non-functional calls are sync points: resolved args, in order
# ---------------------------------------------------------------------------


@CASES()
def log_future():
    r = inc(1)
    log("r", r)
    return r


@CASES()
def log_nested_futures():
    a = inc(1)
    b = pair(a, word(2))
    log({"a": a, "b": [b, (a,)]}, {inc(5)})
    log(nested(a))
    return None


@CASES()
def log_order_interleaved():
    for i in range(4):
        log("before", i)
        r = slow(i, 0.02 * (3 - i))
        log("after", i, r)
    return "done"


@CASES()
def log_star_args_future():
    log(*mklist(3))
    log(*[inc(1), inc(2)], *pair(7, 8))
    logkw(inc(1), k=inc(2), **{"m": word(3)})
    logkw(**mkdict("k", inc(4)))


@CASES()
def log_ret_in_expression():
    r = add(log_ret(inc(1)), log_ret(inc(2)))
    return log_ret(r)


@CASES()
def plain_function_with_futures():
    a = plain_add(inc(1), inc(2))
    b = plain_add(mklist(2), [inc(9)])
    return a, b


@CASES()
def nonfunctional_mutates_local_list():
    lst = [inc(1), inc(2)]
    alias = lst
    append_to(lst, inc(10))
    extend_to(lst, mklist(2))
    return alias, lst is alias


@CASES()
def nonfunctional_sees_identity():
    lst = [inc(1)]
    d = {"k": lst}
    return same(lst, d["k"]), same(d["k"], lst)


@CASES()
def builtin_print_like_sync():
    out = []
    r = inc(41)
    out.append(repr(r))
    log(out)
    return out


# ---------------------------------------------------------------------------
# Attribute / subscript assignment, del
# ---------------------------------------------------------------------------


@CASES(Box(x=0, y=[1, 2]))
def setattr_on_outside_object(o):
    o.x = inc(1)
    o.y[0] = double(5)
    o.z = [inc(2), pair(1, inc(3))]
    return None


@CASES([0, 0, 0], {"a": 1})
def subscript_assign_outside(lst, d):
    lst[0] = inc(1)
    lst[1:3] = mklist(2)
    d["k"] = inc(2)
    d["n"] = {"deep": [inc(3)]}
    log(lst, d)


@CASES([1, 2, 3, 4], {"a": 1, "b": 2}, Box(x=1, y=2))
def del_on_outside(lst, d, o):
    r = inc(1)
    del lst[0]
    del d["a"]
    del o.x
    lst.append(r)
    return len(lst), r


@CASES()
def setattr_on_inside_object():
    o = Box()
    o.x = inc(1)
    o.y = pair(o.x, inc(2))
    log(o)
    o.x = double(o.x)
    return o


@CASES()
def subscript_assign_inside():
    lst = [0, 0, 0]
    d = {}
    lst[0] = inc(1)
    lst[-1] = double(lst[0])
    d["k"] = inc(2)
    d[word(1)] = lst
    return lst, d


@CASES()
def del_inside():
    lst = [inc(i) for i in range(5)]
    d = {"a": inc(1), "b": inc(2)}
    del lst[0]
    del lst[1:3]
    del d["a"]
    o = Box(x=inc(1), y=2)
    del o.x
    return lst, d, o


@CASES()
def setattr_via_nonfunctional():
    o = Box()
    set_attr(o, "v", inc(3))
    return o, o.v


@CASES()
def slice_assign_future():
    lst = list(range(6))
    lst[1:4] = mklist(inc(1))
    lst[::2] = [inc(10), inc(20), inc(30)]
    return lst


@CASES(Box(items=[]))
def append_to_outside_list(o):
    for i in range(3):
        o.items.append(inc(i))
    return o.items


# ---------------------------------------------------------------------------
# Augmented assignment
# ---------------------------------------------------------------------------


@CASES(4)
def augassign_int(n):
    t = 0
    for i in range(n):
        t += inc(i)
    return t


@CASES()
def augassign_str():
    s = "a"
    for i in range(3):
        s += word(i)
    s *= 2
    return s


@CASES()
def augassign_list_inplace_alias():
    acc = []
    alias = acc
    for i in range(3):
        acc += mklist(i)
    acc += [inc(7)]
    return acc, alias, acc is alias


@CASES()
def augassign_tuple():
    t = ()
    for i in range(3):
        t += pair(i, inc(i))
    return t


@CASES()
def augassign_target_future():
    r = inc(1)
    r += 5
    r *= inc(2)
    r -= 1
    r //= 2
    r **= 2
    r %= 1000
    return r


@CASES()
def augassign_subscript_and_attr():
    lst = [1, 2]
    d = {"k": 10}
    o = Box(v=1)
    lst[0] += inc(1)
    d["k"] -= inc(2)
    o.v *= double(3)
    return lst, d, o


@CASES([10], Box(v="x"))
def augassign_outside_objects(lst, o):
    lst[0] += inc(1)
    lst += mklist(2)
    o.v += word(1)
    return None


@CASES()
def augassign_set_and_dict():
    s = {1}
    s |= mkset(3)
    d = {"a": 1}
    d |= mkdict("b", inc(1))
    return s, d


@CASES()
def augassign_bitwise_on_futures():
    r = inc(6)
    r &= 5
    r |= double(8)
    r ^= 3
    r <<= 2
    r >>= 1
    return r


# ---------------------------------------------------------------------------
# Branches and loops on futures
# ---------------------------------------------------------------------------


@CASES(1)
@CASES(2)
def if_on_future(x):
    if is_even(x):
        log("even", x)
        return double(x)
    else:
        log("odd", x)
        return inc(x)


@CASES(0)
@CASES(5)
def if_on_future_compare(x):
    r = inc(x)
    if r > 3:
        return "big", r
    elif r == 1:
        return "one", r
    return "small", r


@CASES()
def while_on_functional():
    i = 0
    while inc(i) < 5:
        i = inc(i)
        log("i", i)
    return i


@CASES()
def while_future_counter():
    n = ident(5)
    steps = []
    while n:
        steps.append(n)
        n = dec(n)
    return steps


@CASES()
def for_over_future_list():
    out = []
    for v in mklist(4):
        log("v", v)
        out.append(inc(v))
    return out


@CASES()
def for_over_future_dict_items():
    d = ident({"a": inc(1), "b": inc(2)})
    out = []
    for k, v in d.items():
        out.append((k, double(v)))
    for k in mkdict("z", 1):
        out.append(k)
    return out


@CASES()
def for_enumerate_zip_futures():
    out = []
    for i, (a, b) in enumerate(zip(mklist(3), mktuple(3))):
        out.append(add(i, mul(a, b)))
    return out


@CASES()
def range_of_future():
    return [inc(i) for i in range(inc(3))], list(range(double(1), inc(6)))


@CASES()
def conditional_expression_on_future():
    r = is_even(inc(1))
    a = "yes" if r else "no"
    b = inc(1) if not is_even(3) else inc(2)
    return a, b


@CASES()
def boolean_ops_on_futures():
    a = ident(0) or inc(1)
    b = ident(3) and ident(0)
    c = none_fn(1) or "default"
    d = not is_even(1)
    return a, b, c, d


@CASES()
def short_circuit_avoids_call():
    from dhelpers import fail_on

    a = ident(True) or fail_on(1, 1)
    b = ident(0) and fail_on(1, 1)
    log(a, b)
    return a, b


@CASES()
def for_else_and_while_else():
    for v in mklist(3):
        if v > 5:
            break
    else:
        log("for-else", v)
    n = ident(2)
    while n > 0:
        n = dec(n)
    else:
        log("while-else", n)
    return n


# ---------------------------------------------------------------------------
# Unpacking
# ---------------------------------------------------------------------------


@CASES()
def unpack_pair():
    a, b = pair(1, 2)
    return b, a


@CASES()
def star_unpack():
    a, *rest = mklist(4)
    *init, last = mktuple(3)
    x, *mid, y = mklist(5)
    return a, rest, init, last, x, mid, y


@CASES()
def nested_unpack():
    (a, b), c = pair(pair(1, inc(1)), inc(5))
    [d, [e, f]] = ident([1, [inc(2), 3]])
    return a, b, c, d, e, f


@CASES()
def unpack_in_for_target():
    out = []
    for a, (b, c) in [pair(1, pair(2, 3)), pair(inc(3), pair(5, inc(5)))]:
        out.append(a + b + c)
    return out


@CASES()
def build_with_star_futures():
    lst = [*mklist(2), *pair(inc(3), 4), 9]
    tup = (*mktuple(2), inc(0))
    st = {*mkset(3), inc(9)}
    dct = {**mkdict("a", inc(1)), "b": inc(2), **ident({"c": 3})}
    return lst, tup, st, dct


@CASES()
def swap_futures():
    a, b = inc(1), inc(2)
    a, b = b, a
    return a, b


# ---------------------------------------------------------------------------
# Returning futures deeply
# ---------------------------------------------------------------------------


@CASES()
def return_list_of_futures():
    return [inc(1), inc(2), double(3)]


@CASES()
def return_tuple_of_futures():
    return inc(1), (pair(1, 2), [inc(3)])


@CASES()
def return_dict_values_futures():
    return {"a": inc(1), "b": {"c": [double(2), {"d": inc(3)}]}}


@CASES()
def return_dict_keys_futures():
    return {word(1): 1, inc(2): "two"}


@CASES()
def return_set_of_futures():
    return {inc(1), inc(2), inc(1)}, frozenset([double(2), double(3)])


@CASES()
def return_nested_mixed():
    a = inc(1)
    return [a, (a, {"k": {a, double(a)}}), [[a]], {"n": (None, nested(a))}]


@CASES()
def return_object_with_future_attrs():
    o = Box(a=inc(1))
    o.b = [pair(1, 2)]
    return o


@CASES()
def return_functional_object():
    o = obj(inc(1), double(2))
    return o, [o], {"o": o}


@CASES()
def return_tuple_not_list():
    t = mktuple(3)
    lst = mklist(3)
    return t, lst, (inc(1),), [inc(1)]


@CASES()
def return_bool_and_strings():
    return is_even(2), is_even(3), sstr(5), word(inc(1))


# ---------------------------------------------------------------------------
# Comprehensions and generator expressions
# ---------------------------------------------------------------------------


@CASES(5)
def list_comprehension(n):
    return [inc(i) for i in range(n)]


@CASES()
def set_comprehension():
    return {double(i % 3) for i in range(7)}


@CASES()
def dict_comprehension():
    return {i: inc(i) for i in range(4)}, {word(i): i for i in range(3)}


@CASES()
def nested_comprehension():
    return [[add(i, j) for j in range(3)] for i in range(3)]


@CASES()
def comprehension_filter_functional():
    return [x for x in range(8) if is_even(x)], [inc(x) for x in range(8) if is_even(inc(x))]


@CASES()
def comprehension_over_future():
    return [double(v) for v in mklist(4)], {k: inc(v) for k, v in mkdict("a", 1).items()}


@CASES()
def comprehension_with_log():
    return [log_ret(inc(i)) for i in range(3)]


@CASES()
def genexp_consumed_by_builtin():
    return sum(inc(i) for i in range(5)), max(double(i) for i in range(4)), list(inc(i) for i in range(2))


@CASES()
def comprehension_multiple_for():
    return [pair(a, b) for a in mklist(3) for b in range(a) if not is_even(add(a, b))]


# ---------------------------------------------------------------------------
# Closures, nested functions, lambdas
# ---------------------------------------------------------------------------


@CASES(3)
def closure_captures_future(n):
    k = inc(10)

    def g(x):
        return add(x, k)

    return [g(i) for i in range(n)]


@CASES()
def nested_function_calls_functional():
    def helper(x):
        log("helper", x)
        return double(inc(x))

    return helper(1), helper(inc(1))


@CASES()
def lambda_calls_functional():
    f = lambda x: double(inc(x))  # noqa: E731
    return f(2), list(map(lambda v: inc(v), range(3))), sorted([3, 1, 2], key=lambda v: -v)


@CASES()
def map_over_functional():
    return list(map(inc, range(4))), list(map(add, [1, 2], [inc(3), 4]))


@CASES()
def nonlocal_accumulate():
    total_ = 0

    def bump(v):
        nonlocal total_
        total_ += inc(v)

    for i in range(4):
        bump(i)
    return total_


@CASES()
def closure_over_loop_futures():
    fs = []
    for i in range(3):
        r = inc(i)
        fs.append(lambda r=r: r)
    return [f() for f in fs]


@CASES()
def default_arg_is_future():
    k = inc(1)

    def g(x, y=k, *, z=double(k)):
        return x, y, z

    return g(0), g(1, 2), g(0, z=5)


@CASES()
def functional_defined_inside():
    from pydron.functional import functional

    k = 3

    @functional
    def times_k(x):
        return x * k

    scaled = functional(lambda v: v + k)
    return times_k(inc(1)), scaled(inc(2)), [times_k(i) for i in range(3)]


@CASES()
def closure_cell_reassigned():
    v = inc(1)

    def get():
        return v

    a = get()
    v = double(5)
    b = get()
    return a, b


# ---------------------------------------------------------------------------
# Arguments of the schedule function itself
# ---------------------------------------------------------------------------


@CASES(1)
@CASES(1, 5, c=7)
def defaults_and_kwonly(a, b=2, *, c=3):
    return add(a, b), inc(c)


@CASES(1, 2, 3, k=4, j=5)
def star_args_schedule_function(*args, **kwargs):
    s = total(*args)
    d = {k: inc(v) for k, v in kwargs.items()}
    log(s, d)
    return s, d


@CASES([3, 1, 2])
def argument_list_read(xs):
    return [inc(x) for x in xs], sorted(inc(x) for x in xs)


# ---------------------------------------------------------------------------
# Walrus
# ---------------------------------------------------------------------------


@CASES(1)
@CASES(5)
def walrus_in_if(x):
    if (r := inc(x)) > 3:
        return "big", r
    return "small", r


@CASES()
def walrus_in_comprehension():
    ys = [y for x in range(6) if (y := inc(x)) % 2]
    return ys, y


@CASES()
def walrus_in_while():
    n = 5
    seen = []
    while (n := dec(n)) > 0:
        seen.append(n)
    return seen, n


# ---------------------------------------------------------------------------
# Harness self-tests: the comparison must catch leaks and mismatches
# ---------------------------------------------------------------------------


class _FakeFuture:
    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return self.v == other

    __hash__ = None


def test_harness_detects_tuple_vs_list():
    assert deep_diff((1, 2), [1, 2])
    assert deep_diff({"a": (1,)}, {"a": [1]})


def test_harness_detects_leaked_future():
    assert deep_diff([1, 2], [1, _FakeFuture(2)])
    assert deep_diff({"k": {1, 2}}, {"k": {1, 2, 3}})


def test_harness_detects_dict_order_and_types():
    assert deep_diff({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert deep_diff(1, True)
    assert deep_diff(1, 1.0)
    assert not deep_diff({"a": [1, (2, {3})]}, {"a": [1, (2, {3})]})
    assert deep_diff(Box(a=(1,)), Box(a=[1]))
    assert deep_diff(ValueError("x"), ValueError("y"))


def test_harness_compares_outcomes():
    ok = Outcome(value=1, log=[("a", 1)])
    assert not compare_outcomes(ok, Outcome(value=1, log=[("a", 1)]))
    assert compare_outcomes(ok, Outcome(value=1, log=[("a", 1), ("b",)]))
    assert compare_outcomes(ok, Outcome(value=1, log=[("a", _FakeFuture(1))]))
    e1 = Outcome(exc_type=ValueError, exc_msg="bad 1", exc=ValueError("bad 1"))
    e2 = Outcome(exc_type=ValueError, exc_msg="bad 2", exc=ValueError("bad 2"))
    e3 = Outcome(exc_type=KeyError, exc_msg="1", exc=KeyError(1))
    assert compare_outcomes(e1, e2)
    assert compare_outcomes(e1, e3)
    assert compare_outcomes(e1, ok)
    t1 = Outcome(exc_type=ValueError, exc_msg="m", exc=ValueError("m"), tb_lines=[("f", 1)])
    t2 = Outcome(exc_type=ValueError, exc_msg="m", exc=ValueError("m"), tb_lines=[("f", 2)])
    assert compare_outcomes(t1, t2, check_traceback=True)
    assert not compare_outcomes(t1, t2, check_traceback=False)


def test_harness_assert_equivalent_failure_message(monkeypatch):
    import difftest

    def wrong(fn):
        return lambda *a, **k: list(fn(*a, **k))

    monkeypatch.setattr(difftest, "get_schedule", lambda: wrong)
    with pytest.raises(AssertionError) as info:
        assert_equivalent(return_tuple_of_futures)
    text = str(info.value)
    assert "plain:" in text and "scheduled:" in text and "type tuple != list" in text


def test_harness_fresh_args_per_run(monkeypatch):
    import difftest

    monkeypatch.setattr(difftest, "get_schedule", lambda: (lambda f: f))
    arg = [0, 0, 0]
    plain = assert_equivalent(subscript_assign_outside, arg, {"a": 1})
    assert arg == [0, 0, 0]
    assert plain.args[0] == [2, 0, 1]


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fn,args,kwargs", CASES.params())
def test_differential(fn, args, kwargs):
    assert_equivalent(fn, *args, **kwargs)
