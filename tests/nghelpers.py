"""Helpers for tests/test_native_glue.py (issue 12: the glue between futures
must look and behave like the plain interpreter).

Module-level so that pydron's workers can import the functional ones (pytest
puts ``tests/`` on ``sys.path`` and the workers get the master's path).

* **functional** helpers (``@functional``) run as tasks on workers;
* **ordinary** helpers are what a schedule function calls natively: they look
  at their caller's frame, recurse, record object lifetimes, or are just
  cheap glue.
"""
from __future__ import annotations

import inspect
import logging
import sys
import time
import warnings

from pydron.functional import functional

# ---------------------------------------------------------------------------
# Functional helpers
# ---------------------------------------------------------------------------


@functional
def inc(x):
    return x + 1


@functional
def square(x):
    return x * x


@functional
def add(a, b):
    return a + b


@functional
def words(s):
    return s.split()


@functional
def make_error(msg):
    return ValueError(msg)


@functional
def pair(a):
    return (a, a + 1)


@functional
def total(xs):
    return sum(xs)


@functional
def slow_first(x):
    """Sleeps 0.5 s for ``x == 0``; returns ``x``."""
    if x == 0:
        time.sleep(0.5)
    return x


@functional
def fdepth(v):
    """Nesting depth of a list like ``[[[...]]]``, without recursion."""
    return nest_depth(v)


@functional
def fwrap(v):
    """``[v]``: a functional call that returns a deeply nested value."""
    return [v]


# ---------------------------------------------------------------------------
# Ordinary helpers: what a callee sees of its caller
# ---------------------------------------------------------------------------


def caller_name():
    return sys._getframe(1).f_code.co_name


def caller_line():
    return sys._getframe(1).f_lineno


def caller_file():
    return sys._getframe(1).f_code.co_filename


def inspect_caller():
    return inspect.stack()[1].function


def warn_caller():
    warnings.warn("x", stacklevel=2)


LOGGER = logging.getLogger("pydron_test_native_glue")
LOGGER.propagate = False
LOGGER.setLevel(logging.INFO)


class Collect(logging.Handler):
    """A handler that keeps the records it is given."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def log_caller(msg):
    """Logs ``msg`` with ``stacklevel=2``: the record names our caller."""
    LOGGER.info(msg, stacklevel=2)


def raiser():
    raise KeyError("from raiser")


def raiser_outer():
    return raiser()


# ---------------------------------------------------------------------------
# Recursion and deep values
# ---------------------------------------------------------------------------


def rec_helper(n):
    """Ordinary recursive helper: ``n`` frames deep."""
    return 0 if n == 0 else 1 + rec_helper(n - 1)


def g():
    """Recurses until RecursionError and returns it (crashed 3.12/3.13 at exit)."""
    try:
        return g()
    except RecursionError as e:
        return e


def nest_depth(v):
    """Nesting depth of ``[[[...[]...]]]`` (0 for a non-list), without recursion."""
    d = 0
    while isinstance(v, list):
        if len(v) == 0:
            return d + 1
        if len(v) != 1:
            return -1
        d += 1
        v = v[0]
    return d


def nest(n):
    v = []
    for _ in range(n):
        v = [v]
    return v


# ---------------------------------------------------------------------------
# Wrong results
# ---------------------------------------------------------------------------


def mock(*args, **kwargs):
    """Ordinary: returns what it was called with."""
    return args, kwargs


# ---------------------------------------------------------------------------
# Lifetimes
# ---------------------------------------------------------------------------

DELS: list = []
# Bumped by reset_dels(): an object that outlives its run (a leak) and dies
# during a later one must not show up in that run's DELS.
_GENERATION = [0]


class Tracked:
    """Records ``("del", name)`` in DELS when it is collected (in its own run)."""

    def __init__(self, name):
        self.name = name
        self.generation = _GENERATION[0]

    def __del__(self):
        if self.generation == _GENERATION[0]:
            DELS.append(("del", self.name))


def make_tracked(name):
    return Tracked(name)


def is_alive(wr):
    return wr() is not None


def dels():
    return list(DELS)


# ---------------------------------------------------------------------------
# Glue
# ---------------------------------------------------------------------------


def step(t, i):
    return t + i


@functional
def name_of(t):
    """Functional: the ``name`` of a Tracked object."""
    return t.name


def reset_dels():
    """Ordinary: forget what died before (the first statement of a lifetime case)."""
    DELS.clear()
    _GENERATION[0] += 1


def roundtrip(obj):
    """``repr(pickle.loads(pickle.dumps(obj)))``, or why it failed."""
    import pickle
    try:
        return repr(pickle.loads(pickle.dumps(obj)))
    except Exception as exc:  # noqa: BLE001 - compared by the test
        return f"{type(exc).__name__}: {exc}"
