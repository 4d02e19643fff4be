"""``name = name + [...]`` extends the list in place when nothing else holds it.

The seed's loop ``out = out + [f(x)]`` copies the whole list at every step:
quadratic in a plain run, and more so under pydron, whose lists hold futures.
When ``name`` is the only holder of the old list, extending it is the same
as the sum (the store that follows drops the old list), so the scheduled
loop is linear. Every other case must still see a new list: those are the
differential cases here.
"""
from __future__ import annotations

import pytest

import pydron
from dhelpers import inc, log, mklist
from difftest import CaseList, assert_equivalent

CASES = CaseList()


class Listish(list):
    """A list subclass: ``+`` is its own, and never extended in place."""

    def __add__(self, other):
        log("Listish.__add__", len(other))
        return Listish(list(self) + list(other))


@CASES(20)
def seed_loop(n):
    out = []
    for x in range(n):
        out = out + [inc(x)]
    return out


@CASES(6)
def old_list_kept_by_another_name(n):
    out = []
    olds = []
    for x in range(n):
        prev = out
        out = out + [inc(x)]
        olds.append(prev)
    return olds, out


@CASES(5)
def old_list_inside_the_new_items(n):
    out = []
    for x in range(n):
        out = out + [out, inc(x)]
    return len(out), [len(o) for o in out[::2]]


@CASES(5)
def old_list_in_a_container(n):
    out = [0]
    keep = {}
    for x in range(n):
        keep[x] = out
        out = out + [inc(x)]
    return keep, out


@CASES(5)
def old_list_passed_to_a_functional_call(n):
    out = []
    copies = []
    for x in range(n):
        copy = ident_list(out)
        out = out + [inc(x)]
        copies.append(copy)
    return copies, out


@pydron.functional
def ident_list(xs):
    return list(xs)


@CASES(4)
def name_rebound_inside_the_sum(n):
    out = [1]
    for x in range(n):
        out = out + [(out := [inc(x)])]
    return out


@CASES(4)
def name_in_a_closure(n):
    out = []

    def size():
        return len(out)

    for x in range(n):
        out = out + [inc(x), size()]
    return out


@CASES(4)
def list_subclass(n):
    out = Listish()
    for x in range(n):
        out = out + [inc(x)]
    return type(out).__name__, list(out)


@CASES(3)
def future_on_the_left(n):
    out = mklist(n)
    for x in range(n):
        out = out + [inc(x)]
    return out


@CASES(4)
def sum_inside_a_try_block(n):
    out = []
    try:
        for x in range(n):
            out = out + [inc(x)]
            if x == n - 1:
                raise ValueError(len(out))
    except ValueError as e:
        log("caught", e.args)
    return out


@CASES(4)
def tuple_and_other_types(n):
    t = ()
    s = "a"
    for x in range(n):
        t = t + (inc(x),)
        s = s + "b"
    return t, s


@pytest.mark.parametrize("fn, args, kwargs", CASES.params())
def test_differential(fn, args, kwargs):
    assert_equivalent(fn, *args, **kwargs)


def test_the_only_holder_is_extended_in_place():
    """The scheduled seed loop keeps one list (so it is linear); a plain run
    makes a new one at each step."""
    def grow(n):
        out = []
        ids = set()
        for x in range(n):
            out = out + [inc(x)]
            ids.add(id(out))
        return len(ids), out

    count, out = pydron.schedule(grow)(50)
    assert out == grow(50)[1] == list(range(1, 51))
    assert count == 1


def test_a_list_with_a_second_holder_is_copied():
    def grow(n):
        out = []
        ids = []
        for x in range(n):
            kept = out
            out = out + [inc(x)]
            ids.append(kept is out)
        return ids

    assert pydron.schedule(grow)(10) == [False] * 10
