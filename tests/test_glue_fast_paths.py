"""The glue fast paths of issue 12 keep the contract (differential tests).

Each fast path skips the runtime where it can prove the plain instruction
does the same: these cases make the proof's assumptions fail at run time (a
receiver or callable that changes type mid-loop, a functional call in the
arguments of a method call on a local list, defaults reassigned, futures in
local containers, try/with blocks whose calls overlap) and compare the plain
run with the scheduled one.
"""
from __future__ import annotations

import os

import pytest

import pydron
from difftest import assert_equivalent
from dhelpers import LOG, Calc, double, fail_on, inc, log
from pydron.functional import functional


class Appender:
    """Not a list, but with list-like method names: every call is a side effect."""

    def __init__(self):
        self.items = []

    def append(self, x):
        log("Appender.append", x)
        self.items.append(x)

    def get(self, key, default=None):
        log("Appender.get", key)
        return default

    def __eq__(self, other):
        return type(other) is Appender and other.items == self.items

    def __repr__(self):
        return f"Appender({self.items!r})"


class Where:
    """A functional method: it runs on a worker, so its pid is not the master's."""

    @functional
    def pid(self, x):
        return os.getpid(), x


def consume(gen):
    items = []
    try:
        for item in gen:
            items.append(item)
    except Exception as exc:  # noqa: BLE001 - compared
        return items, (type(exc), str(exc)), list(LOG)
    return items, None, list(LOG)


def assert_same_generator(fn, *args):
    LOG.clear()
    plain = consume(fn(*args))
    LOG.clear()
    scheduled = consume(pydron.schedule(fn)(*args))
    assert scheduled == plain
    for item in scheduled[0]:
        assert "Future" not in type(item).__name__


# -- method calls in generators (journaled code) --------------------------------


def gen_method_receiver_changes_type(n):
    out = []
    other = Appender()
    d = {}
    for i in range(n):
        target = out if i % 3 else other  # list, then an object, then a list again
        target.append(inc(i))
        d[i] = double(i)
        yield d.get(i), len(out), target.get(i - 1)


def gen_method_on_local_list_with_functional_args(n):
    out = []
    for i in range(n):
        out.append(double(inc(i)))  # futures into a local list, then read back
        out.append(out.count(out[-1]))
        yield out[-2]
    yield out


def gen_method_mutation_in_overlapping_try(n):
    out = []
    seen = {}
    for i in range(n):
        try:
            a = fail_on(i, 2)
            out.append(a)
            seen.setdefault(i, inc(i))
            yield seen.get(i), len(out)
        except ValueError as exc:
            yield "caught", str(exc), list(out), dict(seen)


def gen_read_only_method_on_local_then_mutation(n):
    items = {}
    for i in range(n):
        got = items.get(i % 2)  # read-only: skips route once the type is known
        items.update({i % 2: inc(i)})  # mutating: always routed in a generator
        yield got, sorted(items.items())


def gen_str_methods(words):
    for w in words:
        yield w.upper(), ",".join([w, w]), w.split("a")


@pytest.mark.parametrize("fn,args", [
    (gen_method_receiver_changes_type, (7,)),
    (gen_method_on_local_list_with_functional_args, (5,)),
    (gen_method_mutation_in_overlapping_try, (4,)),
    (gen_read_only_method_on_local_then_mutation, (5,)),
    (gen_str_methods, (["banana", "kiwi", "papaya"],)),
])
def test_generator_method_calls_match_plain(fn, args):
    assert_same_generator(fn, *args)


def gen_functional_method(n):
    where = Where()
    for i in range(n):
        yield where.pid(i)  # the same site, called again: still a task every time


def test_functional_method_in_generator_is_still_a_task():
    got = list(pydron.schedule(gen_functional_method)(4))
    assert [x for _, x in got] == [0, 1, 2, 3]
    assert all(pid != os.getpid() for pid, _ in got)


def method_in_overlapping_try(xs):
    out = []
    stats = {}
    try:
        for x in xs:
            out.append(fail_on(x, 3))
            stats.setdefault("n", 0)
            stats.update(n=stats.get("n") + 1)
    except ValueError as exc:
        log("caught", str(exc), len(out), stats.get("n"))
    return out, stats


def test_method_calls_in_overlapping_try_match_plain():
    assert_equivalent(method_in_overlapping_try, [1, 2, 3, 4])
    assert_equivalent(method_in_overlapping_try, [1, 2, 5])


# -- nested functions with defaults: their twin is cached per site ------------------


def nested_defaults_reassigned(n):
    def scaled(x, k=2, *, off=0):
        return double(x) * k + off

    out = []
    for i in range(n):
        out.append(scaled(i))
        if i == 2:
            scaled.__defaults__ = (10,)  # the cached twin must not keep the old ones
        if i == 4:
            scaled.__kwdefaults__ = {"off": 1}
    return out


def nested_defaults_new_function_each_time(n):
    out = []
    for i in range(n):
        def add_i(x, i=i):  # a new function (and defaults) every iteration
            return inc(x) + i
        out.append(add_i(i))
    return out


def gen_nested_defaults(n):
    def fmt(x, _repr=repr, sep=":"):
        return sep + _repr(x)

    for i in range(n):
        yield fmt(inc(i))
        if i == 1:
            fmt.__defaults__ = (str, "=")


@pytest.mark.parametrize("fn,args", [
    (nested_defaults_reassigned, (7,)),
    (nested_defaults_new_function_each_time, (4,)),
])
def test_nested_function_defaults_match_plain(fn, args):
    assert_equivalent(fn, *args)


def test_nested_function_defaults_in_generator_match_plain():
    assert_same_generator(gen_nested_defaults, 4)


def calls_functional_method_repeatedly(n):
    c = Calc(3)
    return [c.scale(i) for i in range(n)] + [Calc(i).scale(2) for i in range(n)]


def test_functional_methods_match_plain():
    assert_equivalent(calls_functional_method_repeatedly, 4)


# -- in-place operators outside journaled code: the plain operator without futures --


class Bag:
    """A non-local object whose ``+=`` keeps what it is given."""

    def __init__(self):
        self.parts = []

    def __iadd__(self, other):
        self.parts.append(other)  # keeps the operand itself: a local list escapes here
        log("Bag +=", other)
        return self

    def __eq__(self, other):
        return type(other) is Bag and other.parts == self.parts

    def __repr__(self):
        return f"Bag({self.parts!r})"


def inplace_target_changes_type(n):
    acc = 0
    for i in range(n):
        if i == 2:
            acc = [acc]  # an int, then a local list
        if i == 4:
            acc = tuple(acc)  # then a tuple
        acc += [i] if type(acc) is not int else i
    return acc


def inplace_with_functional_operands(n):
    total = 0
    parts = []
    text = ""
    for i in range(n):
        total += inc(i)  # a future operand: deferred
        parts += [double(i)]  # a local list grows with futures
        text += str(i)
        if i == 2:
            total += 100  # a future target
    return total, parts, text


def inplace_hands_local_list_to_object(n):
    bag = Bag()
    mine = []
    for i in range(n):
        mine.append(i)
    bag += mine  # ``mine`` escapes into ``bag`` (no future exists yet)
    for i in range(n):
        mine.append(inc(i))  # a sync point now: the bag sees resolved values
    log("bag", bag.parts)
    return bag


def inplace_local_list_with_future_operand(n):
    out = []
    for i in range(n):
        out += [inc(i)]
        out += (double(i),)
    return out


# -- method calls on a local list, dict or set: no receiver test ------------------------


class Keeper:
    """Non-functional: keeps what it is handed (the container escapes)."""

    def __init__(self):
        self.kept = []

    def hold(self, x):
        self.kept.append(x)

    def show(self):
        # The types too: a future that leaked into a kept list would show here.
        log("kept", self.kept, [[type(x).__name__ for x in c] for c in self.kept])


def typed_receiver_escapes_then_gets_futures(n):
    out = []
    keeper = Keeper()
    keeper.hold(out)  # escapes while no future exists
    for i in range(n):
        out.append(inc(i))  # a sync point: the keeper must never see a future
        keeper.show()
    return out


def typed_receiver_rebuilt_in_loop(n):
    rows = []
    for i in range(n):
        row = []
        for j in range(i + 1):
            row.append(inc(j) if j % 2 else j)
        row.extend([double(i)])
        rows.append(row)
    seen = {}
    for i in range(n):
        seen.setdefault(i % 2, []).append(i)
        seen.update({10 + i: inc(i)})
    return rows, seen, [r.count(0) for r in rows], seen.get(1), sorted(seen.keys())


def typed_receiver_after_prune_and_escape(n):
    for i in range(n):
        tmp = [i]  # local containers that die at once (forgotten by the graph)
        tmp.append(i)
    out = []
    keeper = Keeper()
    keeper.hold(out)
    for i in range(n):
        out.append(double(i))
    keeper.show()
    return out, tmp


def typed_receiver_functional_call_in_method_args(n):
    out = []
    s = set()
    for i in range(n):
        out.append(double(inc(i)))  # futures in the arguments of a local list's method
        out.insert(0, inc(i))
        s.add(i)
        s.discard(i - 2)
    out.pop()
    log("len", len(out), sorted(s))
    return out, s, out.index(out[0])


def typed_receiver_wrong_method(n):
    out = []
    for i in range(n):
        out.append(i)
    try:
        out.setdefault(1, 2)  # a list has no setdefault: the same AttributeError
    except AttributeError as exc:
        log("error", str(exc))
    return out


@pytest.mark.parametrize("fn,args", [
    (inplace_target_changes_type, (6,)),
    (inplace_with_functional_operands, (4,)),
    (inplace_hands_local_list_to_object, (3,)),
    (inplace_local_list_with_future_operand, (4,)),
    (typed_receiver_escapes_then_gets_futures, (4,)),
    (typed_receiver_rebuilt_in_loop, (4,)),
    (typed_receiver_after_prune_and_escape, (5,)),
    (typed_receiver_functional_call_in_method_args, (5,)),
    (typed_receiver_wrong_method, (3,)),
])
def test_glue_fast_paths_match_plain(fn, args):
    assert_equivalent(fn, *args)


def test_local_containers_counted_per_graph():
    """FUTURES.locals counts graphs holding local containers: back to 0 after a run."""
    from pydron.runtime.future import FUTURES

    before = FUTURES.locals
    pydron.schedule(typed_receiver_rebuilt_in_loop)(3)
    pydron.schedule(typed_receiver_escapes_then_gets_futures)(2)
    assert FUTURES.locals == before


# -- ``yield from``: a rewritten generator's values are not checked twice ----------------


def plain_sub():
    try:
        yield 1
        yield 2
    except KeyError:
        log("sub caught")
        return "sub-returned"
    return "sub-done"


def gen_throw_into_plain_sub():
    r = yield from plain_sub()
    yield ("after", r)
    yield "end"


def gen_throw_into_rewritten_sub():
    def sub():
        try:
            yield inc(0)
            yield inc(1)
        except KeyError:
            log("sub caught")
            return double(21)
        return "sub-done"

    r = yield from sub()
    yield ("after", r)
    yield "end"


def drive_with_throw(gen):
    out = [next(gen)]
    try:
        out.append(gen.throw(KeyError("x")))
        out.extend(gen)
    except Exception as exc:  # noqa: BLE001 - compared
        out.append((type(exc).__name__, str(exc)))
    return out, list(LOG)


@pytest.mark.parametrize("fn", [gen_throw_into_plain_sub, gen_throw_into_rewritten_sub])
def test_throw_into_yield_from_matches_plain(fn):
    LOG.clear()
    plain = drive_with_throw(fn())
    LOG.clear()
    scheduled = drive_with_throw(pydron.schedule(fn)())
    assert scheduled == plain


def gen_yield_from_local_list_of_futures(n):
    out = [inc(i) for i in range(n)]
    out.append(double(n))
    yield from out  # not a generator: every value is checked (and resolved)
    yield from zip(out, [double(i) for i in range(n)])
    yield from map(inc, range(n))  # a functional map: tasks, resolved as they are yielded


def gen_yield_from_rewritten_subgenerators(n):
    def leaf(k):
        for i in range(k):
            yield inc(i)
        return double(k)

    def middle(k):
        got = yield from leaf(k)
        yield [got, inc(got)]
        return (yield from leaf(k - 1))

    last = yield from middle(n)
    yield last


def gen_yield_from_other_iterables(n):
    yield from range(n)
    yield from plain_sub()
    yield from (inc(i) for i in range(n))
    yield from "ab"


def plain_relay(items):
    """A generator the tracer does not rewrite: it hands futures through as they are."""
    for x in items:
        yield x


def gen_yield_from_one_site_many_kinds(n):
    # One ``yield from`` site remembers the rewritten generator code it last
    # handed through: a plain generator or a list iterator after it must
    # still have every value checked, and another rewritten code must not hit.
    def leaf(k):
        for i in range(k):
            yield inc(i)

    def other(k):
        yield double(k)
        yield [inc(k)]

    futures = [double(i) for i in range(n)]
    boxes = [[], []]
    relays = [plain_relay(box) for box in boxes]  # empty when handed over
    for box in boxes:
        box.append(inc(n))  # a future the plain generator hands through as it is
        box.append(double(n))
    for source in (leaf(n), relays[0], relays[1], leaf(n - 1), other(n), futures,
                   plain_relay(futures), leaf(2), other(1)):
        yield from source


def type_names(iterable):
    """Plain code: it sees whatever a generator hands it, futures included."""
    return [type(x).__name__ for x in iterable]


def plain_consumer_of_one_yield_from_site(n):
    def relay(sources):
        for source in sources:
            yield from source  # one site: rewritten generators, a list of futures, a plain one

    def leaf(k):
        for i in range(k):
            yield inc(i)

    futures = [double(i) for i in range(n)]
    return type_names(relay([leaf(n), futures, leaf(2), plain_relay(range(n)), futures, leaf(1)]))


def test_a_yield_from_site_checks_what_a_list_hands_through_after_a_rewritten_generator():
    assert_equivalent(plain_consumer_of_one_yield_from_site, 3)


@pytest.mark.parametrize("fn,args", [
    (gen_yield_from_one_site_many_kinds, (3,)),
    (gen_yield_from_local_list_of_futures, (3,)),
    (gen_yield_from_rewritten_subgenerators, (3,)),
    (gen_yield_from_other_iterables, (3,)),
])
def test_yield_from_matches_plain(fn, args):
    assert_same_generator(fn, *args)


def gen_send_into_yield_from(n):
    def sub():
        total = 0
        while True:
            got = yield total
            if got is None:
                return total
            total += inc(got)

    result = yield from sub()
    yield ("sub returned", result)
    yield from [inc(i) for i in range(n)]


def drive_with_send(gen):
    out = [next(gen)]
    try:
        for value in (1, 2, 3):
            out.append(gen.send(value))
        out.append(gen.send(None))
        out.append(next(gen))
        out.append(gen.send("not None"))  # into a list iterator: AttributeError
    except Exception as exc:  # noqa: BLE001 - compared
        out.append((type(exc).__name__, str(exc)))
    return out


def test_send_into_yield_from_matches_plain():
    plain = drive_with_send(gen_send_into_yield_from(3))
    scheduled = drive_with_send(pydron.schedule(gen_send_into_yield_from)(3))
    assert scheduled == plain


def gen_close_while_delegating():
    def sub():
        try:
            yield inc(1)
            yield inc(2)
        finally:
            log("sub closed")

    try:
        yield from sub()
    finally:
        log("outer closed")


def test_close_while_delegating_matches_plain():
    for fn in (gen_close_while_delegating, pydron.schedule(gen_close_while_delegating)):
        LOG.clear()
        gen = fn()
        first = next(gen)
        gen.close()
        assert (first, list(LOG)) == (2, [("sub closed",), ("outer closed",)])


def sum_over_delegating_genexpr(n):
    def leaf(k):
        for i in range(k):
            yield inc(i)

    def chain(k):
        yield from leaf(k)
        yield from leaf(k + 1)

    return sum(x for x in chain(n)), sum(chain(n)), max(x * 2 for x in chain(n))


def test_pure_builtin_over_delegating_generators_matches_plain():
    assert_equivalent(sum_over_delegating_genexpr, 4)


# -- calls whose arguments are plain loads: no gate while no future exists ---------------


def native_site_then_failing_future(n):
    r = None
    for i in range(n):
        log("before", i, r)  # plain to call: called without the gate while no future exists
        r = fail_on(i, 1)  # the first future: the site must go through the gate again
    return r


def native_site_callable_changes(n):
    out = []
    for i in range(n):
        fn = str if i % 3 else inc  # a builtin, then a functional (a task), at one site
        x = i
        out.append(fn(x))
        log("step", i)
    return out


def native_site_keyword_arguments(n):
    from dhelpers import logkw
    total = 0
    for i in range(n):
        k = i
        logkw("kw", k, label=total)  # KW_NAMES / CALL_KW with plain loads
        total = total + inc(k)
    return total


def native_site_future_argument(n):
    prev = 0
    for i in range(n):
        log("prev", prev)  # prev is a future from the second iteration on
        prev = double(i)
    return prev


@pytest.mark.parametrize("fn,args", [
    (native_site_then_failing_future, (4,)),
    (native_site_callable_changes, (7,)),
    (native_site_keyword_arguments, (4,)),
    (native_site_future_argument, (4,)),
])
def test_native_call_sites_match_plain(fn, args):
    assert_equivalent(fn, *args)


def test_native_call_sites_are_forgotten_when_the_run_ends():
    from pydron.runtime.future import NATIVE_SITES

    assert_equivalent(native_site_then_failing_future, 3)
    assert not NATIVE_SITES


def adder(k):
    """Plain: returns a plain function."""
    def add(x):
        return x + k
    return add


def native_site_result_is_next_callable(n):
    out = []
    for i in range(n):
        out.append(type(i)(i))  # a gate-free call whose result is the next callable
        out.append(adder(i)(inc(i)))
        k = i
        out.append(adder(k)(k))
    return out


def test_native_site_result_called_at_once_matches_plain():
    assert_equivalent(native_site_result_is_next_callable, 4)


# -- ``yield f(x)``: the plain call's result is yielded unchecked ---------------------


def plain_pair(x):
    return [x, x]  # a plain function's fresh list


def gen_yield_plain_call_results(n):
    for i in range(n):
        fn = plain_pair if i % 3 else double  # plain, then functional, at the same site
        x = i
        got = yield fn(x)
        if got is not None:
            log("sent", got)
        yield str(x)


def drive_yields(gen):
    out = []
    try:
        out.append(next(gen))
        out.append(gen.send("a"))
        out.extend(gen)
    except Exception as exc:  # noqa: BLE001 - compared
        out.append((type(exc).__name__, str(exc)))
    return out, list(LOG)


def test_yield_plain_call_result_matches_plain():
    for n in (1, 5):
        LOG.clear()
        plain = drive_yields(gen_yield_plain_call_results(n))
        LOG.clear()
        scheduled = drive_yields(pydron.schedule(gen_yield_plain_call_results)(n))
        assert scheduled == plain
        assert all("Future" not in type(v).__name__ for v in scheduled[0])


def gen_yield_plain_call_in_try(n):
    for i in range(n):
        try:
            x = i
            yield str(x)  # suspended here when the consumer throws
        except KeyError as exc:
            log("caught", str(exc))
            yield "recovered"


def test_throw_at_a_plain_call_yield_matches_plain():
    def drive(gen):
        out = [next(gen), next(gen)]
        out.append(gen.throw(KeyError("k")))
        out.extend(gen)
        return out, list(LOG)

    LOG.clear()
    plain = drive(gen_yield_plain_call_in_try(3))
    LOG.clear()
    assert drive(pydron.schedule(gen_yield_plain_call_in_try)(3)) == plain


# -- while loops (3.11: their conditional back edges become unconditional ones) ---------


def while_loops(n):
    out = []
    i = 0
    while i < n:
        i += 1
        if i == 2:
            continue
        out.append(inc(i))
    else:
        log("else", len(out))
    stack = list(range(n))
    while stack:
        top = stack.pop()
        try:
            if top == 1:
                raise KeyError(top)
        except KeyError:
            log("key", top)
            continue
        if top is None:
            break
        out.append(double(top))
    value = None
    while value is None:
        value = out[0] if out else 0
    while (k := len(out)) > n:
        out.pop()
    return out, value, k


def test_while_loops_match_plain():
    assert_equivalent(while_loops, 5)
    assert_equivalent(while_loops, 0)


def record_live_flag(n):
    from pydron.runtime.future import FUTURES, LIVE
    seen = [(FUTURES.live > 0, bool(LIVE))]
    r = inc(n)
    seen.append((FUTURES.live > 0, bool(LIVE)))
    del r
    return seen


def test_live_flag_follows_the_count():
    from pydron.runtime.future import FUTURES, LIVE

    seen = pydron.schedule(record_live_flag)(1)
    assert all(count == flag for count, flag in seen)
    assert seen[1] == (True, True)
    assert bool(LIVE) == (FUTURES.live > 0)


def gen_constant_yields_and_tests(n):
    for i in range(n):
        yield "const"
        yield None
        yield (1, "two", 3.0)
        x = inc(i)
        yield x is None, None is None, x
        got = yield 5
        if got is None:
            yield "none sent"


def test_constant_yields_match_plain():
    assert_same_generator(gen_constant_yields_and_tests, 3)


def plain_checker(x):
    if x == 3:
        raise ValueError(f"bad {x}")
    return x


def native_site_raises(n, with_future):
    out = []
    for i in range(n):
        r = inc(i) if with_future and i == 2 else i
        k = i
        out.append(plain_checker(k))  # gate-free: plain way, or out of line while r is a future
        out.append(r)
    return out


def gen_native_site_raises(n):
    for i in range(n):
        k = i
        yield plain_checker(k)


def test_gate_free_call_raising_matches_plain():
    assert_equivalent(native_site_raises, 5, False)
    assert_equivalent(native_site_raises, 5, True)
    assert_same_generator(gen_native_site_raises, 5)
