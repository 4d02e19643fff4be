"""The work of ``glue_scaling.py``: plain sequential functions and their functional calls.

A module of its own (not the script) so that pydron's workers import the
``@pydron.functional`` functions by name, as they would a user's.
"""
from __future__ import annotations

import bisect
import json
import random
import textwrap
import types

from workloads import inc  # noqa: F401 - the trivial task, shared with run.py

import pydron

# ----------------------------------------------------------------- functional calls


@pydron.functional
def total(parts):
    """The reduce step of ``map_reduce``."""
    return sum(parts)


@pydron.functional
def load(i, nbytes=10_000_000):
    """A large value, deterministic: ``nbytes`` bytes of ``i % 256``."""
    return bytes([i % 256]) * nbytes


@pydron.functional
def size(data):
    return len(data)


# ----------------------------------------------------------------- glue: no functional calls


def helper(t, i):
    return (t * 31 + i) % 1_000_003


def helper_loop(n):
    t = 0
    for i in range(n):
        t = helper(t, i)
    return t


def append_str(n):
    out = []
    for i in range(n):
        out.append(str(i))
    return out


def bisect_local(size, queries):
    data = [float(i) for i in range(size)]
    return sum(bisect.bisect(data, q) for q in range(queries))


def copy_function(fn, globals_=None):
    """A fresh function with the same code, defaults and closure (as tests/test_stdlib_transparency.py)."""
    fn = getattr(fn, "__func__", fn)
    new = types.FunctionType(fn.__code__, fn.__globals__ if globals_ is None else globals_,
                             fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    return new


def scheduled_text_wrapper():
    """A TextWrapper subclass whose every method but ``__init__`` is the stdlib's
    own code under ``@pydron.schedule`` (``wrap`` calls the others inline)."""
    methods = {name: pydron.schedule(copy_function(value))
               for name, value in vars(textwrap.TextWrapper).items()
               if isinstance(value, types.FunctionType) and name != "__init__"}
    return type("ScheduledTextWrapper", (textwrap.TextWrapper,), methods)


def words_text(nbytes, seed=7):
    """About ``nbytes`` of deterministic prose: words, hyphenated words, sentence ends."""
    rng = random.Random(seed)
    vocabulary = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "pydron",
                  "schedule", "functional", "well-known", "parallel", "tasks", "run", "at",
                  "native", "speed", "and", "a", "sequential", "semantics", "state-of-the-art",
                  "Python", "bytecode", "rewrite.", "workers", "graph,", "future;", "result"]
    parts, length = [], 0
    while length < nbytes:
        word = rng.choice(vocabulary)
        parts.append(word)
        length += len(word) + 1
    return " ".join(parts)


def encoders():
    """``(plain, scheduled)`` JSONEncoder subclasses running the pure-Python encoder.

    Both use copies of ``JSONEncoder.encode``/``iterencode`` and
    ``json.encoder._make_iterencode`` in a copy of ``json.encoder``'s globals
    where ``c_make_encoder`` is None (the C string escaping stays, as in
    CPython without ``_json.make_encoder``); in the scheduled one the three
    are under ``@pydron.schedule`` (the closures that ``_make_iterencode``
    returns are rewritten with it).
    """
    source = json.encoder

    def build(name, wrap):
        globals_ = dict(vars(source))
        globals_["c_make_encoder"] = None
        globals_["_make_iterencode"] = wrap(copy_function(source._make_iterencode, globals_))
        methods = {m: wrap(copy_function(getattr(json.JSONEncoder, m), globals_))
                   for m in ("encode", "iterencode")}
        return type(name, (json.JSONEncoder,), methods)

    return build("PlainPyEncoder", lambda f: f), build("ScheduledPyEncoder", pydron.schedule)


def json_document(count):
    return [{"id": i, "name": f"item-{i}", "price": i * 0.25, "tags": ["x", "y", str(i % 7)],
             "active": i % 3 == 0, "parent": None if i % 5 else i // 5, "note": "caf\u00e9 \"q\""}
            for i in range(count)]


# ----------------------------------------------------------------- scaling: n functional calls


def map_inc(n):
    return [inc(i) for i in range(n)]


def map_reduce(n):
    parts = [inc(i) for i in range(n)]
    return total(parts)


def sum_gen(n):
    return sum(inc(i) for i in range(n))


def seed_loop(n):
    out = []
    for x in range(n):
        out = out + [inc(x)]
    return out


def expected_scaling(kind, n):
    """The right result, in closed form."""
    if kind in ("map", "seed"):
        return list(range(1, n + 1))
    return n * (n + 1) // 2


# ----------------------------------------------------------------- memory: large values in a loop


def memory_loop(count, nbytes):
    total_bytes = 0
    for i in range(count):
        data = load(i, nbytes)
        total_bytes += size(data)
    return total_bytes
