"""The path of a functional call from its call site to the worker (issue 18's
per-call cost): a call site keeps the ``Issue`` it routed a functional
function to, and small plain arguments travel inside the batch's one pickle
instead of a pickle of their own. Differential cases where the kept route or
the plain form could go wrong, and the two mechanisms checked directly.
"""
from __future__ import annotations

import enum
import gc
import threading
import weakref

import pytest

import pydron
from difftest import assert_equivalent
from dhelpers import LOG, double, inc, log
from pydron.functional import functional
from pydron.remote import protocol
from pydron.runtime import syncpoints
from pydron.runtime.graph import Graph


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Num(int):
    """An int subclass: not a plain type, so it is pickled with its class."""

    def __repr__(self):
        return f"Num({int(self)})"


@functional
def describe(x, *rest, **named):
    return type(x).__name__, x, rest, sorted(named.items())


def alternate_functions_at_one_site(n):
    out = []
    for i in range(n):
        fn = inc if i % 2 else double  # the same call site, a different function each time
        out.append(fn(i))
    return out


def functional_then_ordinary_at_one_site(n):
    out = []
    for i in range(n):
        fn = inc if i < n // 2 else log  # functional, then a sync point, at one site
        out.append(fn(i))
    return out, list(LOG)


def plain_and_other_arguments(n):
    big = "x" * (protocol.PLAIN_ARG_LIMIT + 1)
    out = []
    for i in range(n):
        out.append(describe(i))
        out.append(describe(float(i), "s", b"b", None, True, 1j))
        out.append(describe(big, big.encode()))  # too large to travel as itself
        out.append(describe(Level.HIGH, Num(i)))  # int subclasses: pickled with their class
        out.append(describe(i, key=i))  # keywords: pickled
        out.append(describe(i, self=i, fn=i, graph=i))  # the names graph.call uses for its own
        out.append(describe(inc(i), i))  # a future: pickled with its slot
    return out


def mutate_after_call(n):
    items = [1, 2]
    out = []
    for i in range(n):
        out.append(describe(tuple(items), i))
        items.append(i)  # later changes are not seen by the earlier call
    return out


@pytest.mark.parametrize("fn,args", [
    (alternate_functions_at_one_site, (8,)),
    (functional_then_ordinary_at_one_site, (6,)),
    (plain_and_other_arguments, (3,)),
    (mutate_after_call, (4,)),
], ids=lambda v: getattr(v, "__name__", None))
def test_differential(fn, args):
    assert_equivalent(fn, *args)


def test_plain_arguments_travel_as_themselves():
    plain = (1, 2.5, "s", b"b", None, True, 1j)
    assert protocol.task_args(plain, {}, {}) is plain
    long_text = "x" * (protocol.PLAIN_ARG_LIMIT + 1)
    for args, kwargs in [((long_text,), {}), ((long_text.encode(),), {}), ((Level.LOW,), {}),
                         (([1],), {}), ((1,), {"k": 2})]:
        data = protocol.task_args(args, kwargs, {})
        assert type(data) is bytes, args
    assert protocol.args_size((1, "abc")) == 8 + 3
    assert protocol.args_size(b"12345") == 5


def test_call_site_keeps_the_issue_of_its_graph_only():
    """Two threads run the same schedule function at once: each call site's kept
    Issue must send each thread's calls to its own graph."""
    @pydron.schedule
    def run(base):
        return [inc(base + i) for i in range(50)]

    results = {}
    barrier = threading.Barrier(2)

    def worker(base):
        barrier.wait()
        results[base] = [run(base) for _ in range(3)]

    threads = [threading.Thread(target=worker, args=(base,)) for base in (0, 1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()
    for base in (0, 1000):
        assert results[base] == [[base + i + 1 for i in range(50)]] * 3


def test_call_site_lets_the_graph_go_when_the_call_ends():
    graphs = []

    @pydron.schedule
    def run(n):
        graphs.append(weakref.ref(syncpoints._threads.graph))
        return [inc(i) for i in range(n)]

    assert run(5) == [1, 2, 3, 4, 5]
    gc.collect()
    assert graphs and graphs[0]() is None, "a call site still holds the finished call's graph"
    assert not any(type(site.issue) is syncpoints.Issue for site in syncpoints._FILLED_SITES)


def test_a_kept_issue_is_graph_call_with_the_function_bound():
    site = syncpoints.CallSite(cacheable=True)
    seen = {}

    @pydron.schedule
    def run():
        seen["first"] = site.route(inc)
        seen["again"] = site.route(inc)
        seen["other"] = site.route(double)
        return 0

    run()
    first = seen["first"]
    assert type(first) is syncpoints.Issue
    assert first.func.__func__ is Graph.call and first.args == (inc,)
    assert seen["again"] is first  # kept: not routed again
    assert seen["other"] is not first and seen["other"].args == (double,)


def test_a_kept_issue_is_not_handed_to_another_graph():
    """One call site, two schedule calls running at once in two threads: the
    second routes the same function while the first's Issue is kept."""
    site = syncpoints.CallSite(cacheable=True)
    first_routed, second_done = threading.Event(), threading.Event()
    seen = {}

    def route(name):
        seen[name] = (site.route(inc), syncpoints._threads.graph)

    @pydron.schedule
    def first():
        route("first")
        first_routed.set()
        second_done.wait(60)
        return 0

    @pydron.schedule
    def second():
        first_routed.wait(60)
        route("second")
        second_done.set()
        return 0

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    for name in ("first", "second"):
        issue, graph = seen[name]
        assert type(issue) is syncpoints.Issue and issue.func.__self__ is graph, name
    assert seen["first"][1] is not seen["second"][1]
