"""Helpers for the differential tests (tests/test_differential*.py).

Everything here is module-level so that pydron's worker processes can import
it (workers get the master's ``sys.path``; pytest puts ``tests/`` on it).

Two kinds of helpers:

* **functional** ones (``@functional``): pure, picklable arguments and results.
  Under ``pydron.schedule`` their calls become futures that run on workers.
* **non-functional** ones (``log`` and friends): the observable side effects.
  Every call is a sync point under pydron and must see fully resolved
  arguments, in sequential order.  ``LOG`` is what the harness compares.
"""
from __future__ import annotations

import copy
import time

from pydron.functional import functional

# ---------------------------------------------------------------------------
# The observable side-effect log (non-functional)
# ---------------------------------------------------------------------------

LOG: list = []


def _snapshot(value):
    """Copy ``value`` as it is *now*, so later mutation does not rewrite history."""
    try:
        return copy.deepcopy(value)
    except Exception:  # e.g. a leaked future that cannot be copied: keep it as is
        return value


def log(*args):
    """NON-functional: append ``args`` (a snapshot) to LOG.  A sync point."""
    LOG.append(_snapshot(args))


def logkw(*args, **kwargs):
    """NON-functional: append ``(args, sorted kwargs items)`` to LOG."""
    LOG.append(_snapshot(("kw", args, sorted(kwargs.items()))))


def log_ret(x):
    """NON-functional: log ``x`` and return it (a sync point inside an expression)."""
    LOG.append(_snapshot(("ret", x)))
    return x


def plain_add(a, b):
    """NON-functional computation (no side effect, but pydron cannot know)."""
    return a + b


def append_to(lst, x):
    """NON-functional: mutates its argument in place."""
    lst.append(x)


def extend_to(lst, xs):
    """NON-functional: mutates its argument in place."""
    lst.extend(xs)


def set_attr(o, name, value):
    """NON-functional: setattr on its argument."""
    setattr(o, name, value)


def same(a, b):
    """NON-functional: identity check (a resolved copy would break identity)."""
    return a is b


# ---------------------------------------------------------------------------
# Plain classes
# ---------------------------------------------------------------------------


class Obj:
    """Simple picklable value object (returned by functional ``obj``)."""

    __match_args__ = ("a", "b")

    def __init__(self, a, b=0):
        self.a = a
        self.b = b

    def __eq__(self, other):
        return type(other) is Obj and (self.a, self.b) == (other.a, other.b)

    def __hash__(self):
        return hash((Obj, self.a, self.b))

    def __repr__(self):
        return f"Obj({self.a!r}, {self.b!r})"

    def total(self):
        return self.a + self.b


class Box:
    """Plain mutable object (non-functional constructor); equality by attributes."""

    def __init__(self, **attrs):
        self.__dict__.update(attrs)

    def __eq__(self, other):
        return type(other) is Box and vars(self) == vars(other)

    __hash__ = None

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"Box({inner})"


class Rec:
    """Context manager that logs enter/exit and the exception it sees.

    ``suppress=True`` makes ``__exit__`` swallow the exception.
    """

    def __init__(self, name, suppress=False):
        self.name = name
        self.suppress = suppress
        self.value = None

    def __enter__(self):
        log("enter", self.name)
        return self

    def __exit__(self, exc_type, exc, tb):
        log("exit", self.name, None if exc_type is None else exc_type.__name__,
            None if exc is None else str(exc))
        return self.suppress


class CustomError(Exception):
    """A user exception type with structured args."""


class Calc:
    """Functional bound methods, static methods and class methods."""

    def __init__(self, k):
        self.k = k

    @functional
    def scale(self, x):
        return x * self.k

    @staticmethod
    @functional
    def sq(x):
        return x * x

    @functional
    @staticmethod
    def cube(x):
        return x * x * x

    @classmethod
    @functional
    def make(cls, k):
        return k + 100

    def __eq__(self, other):
        return type(other) is Calc and other.k == self.k

    def __repr__(self):
        return f"Calc({self.k!r})"


# ---------------------------------------------------------------------------
# Functional helpers
# ---------------------------------------------------------------------------


@functional
def inc(x):
    return x + 1


@functional
def dec(x):
    return x - 1


@functional
def double(x):
    return x * 2


@functional
def add(a, b):
    return a + b


@functional
def mul(a, b):
    return a * b


@functional
def ident(x):
    return x


@functional
def pair(a, b):
    return (a, b)


@functional
def mklist(n):
    return list(range(n))


@functional
def mktuple(n):
    return tuple(range(n))


@functional
def mkset(n):
    return set(range(n))


@functional
def mkdict(k, v):
    return {k: v}


@functional
def nested(x):
    return {"a": [x, (x, {"b": x})], "c": (x,)}


@functional
def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad {x}")
    return x


@functional
def boom(x):
    raise KeyError(x)


@functional
def slow(x, t=0.0):
    time.sleep(t)
    return x


@functional
def slow_pid(x, t=0.0):
    """(x, the worker's process id), after ``t`` seconds."""
    import os
    time.sleep(t)
    return x, os.getpid()


@functional
def slow_fail(x, t=0.0):
    time.sleep(t)
    raise ValueError(f"slow fail {x}")


@functional
def obj(a, b=0):
    return Obj(a, b)


@functional
def none_fn(x):
    return None


@functional
def is_even(x):
    return x % 2 == 0


@functional
def sstr(x):
    return str(x)


@functional
def word(x):
    return f"w{x}"


@functional
def concat(a, b):
    return a + b


@functional
def length(xs):
    return len(xs)


@functional
def first(xs):
    return xs[0]


@functional
def total(*xs):
    return sum(xs)


@functional
def kwsum(**kw):
    return sum(kw.values())


@functional
def describe(x, *, label="v", sep="="):
    return f"{label}{sep}{x}"


@functional
def scale(x, *, by=2):
    return x * by


@functional
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


@functional
def process(x):
    return {"in": x, "out": x * x}


@functional
def combine(parts):
    return sum(p["out"] for p in parts)


@functional
def flatten(xss):
    return [x for xs in xss for x in xs]


@functional
def maybe(x):
    """Returns None for odd x, x for even x."""
    return x if x % 2 == 0 else None
