"""Which callables pydron knows to be pure, in one place.

A pure callable has no side effects and calls no user code (unless handed a
callable), so calling it is not a sync point. *Structural* ones only look at
the shape of their arguments (``len(out)``, ``enumerate(out)``): they run at
once, with futures left in place. The others need values (``sum``, ``max``,
``str``): applied to futures they become deferred operations on the master.
Users add their own with ``pydron.pure``.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

STRUCTURAL: set[int] = {
    id(f) for f in (
        len, enumerate, zip, reversed, iter, range, list, tuple, dict,
        isinstance, issubclass, type, callable, id, slice, map, filter,
    )
}

# Constructors whose result is a fresh container, local to the schedule function.
FRESH: set[int] = {id(f) for f in (list, dict, set, sorted)}

# These stop early: materialising their generator argument would make calls
# the sequential run never makes.
SHORT_CIRCUIT: set[int] = {id(any), id(all), id(next), id(iter), id(zip), id(map), id(filter),
                           id(enumerate), id(reversed)}

_MUTATING_OPERATORS = {
    "setitem", "delitem", "iadd", "iand", "iconcat", "ifloordiv", "ilshift", "imod",
    "imul", "imatmul", "ior", "ipow", "irshift", "isub", "itruediv", "ixor", "call",
    "methodcaller", "attrgetter", "itemgetter",
}

VALUE: set[int] = {
    id(f) for f in (
        abs, all, any, ascii, bin, bool, bytes, chr, complex, divmod, float,
        format, frozenset, hash, hex, int, max, min, oct, ord, pow, repr, round,
        set, sorted, str, sum,
    )
}
VALUE.update(id(getattr(math, name)) for name in dir(math)
             if not name.startswith("_") and callable(getattr(math, name)))
VALUE.update(id(getattr(operator, name)) for name in dir(operator)
             if not name.startswith("_") and callable(getattr(operator, name))
             and name not in _MUTATING_OPERATORS)

# Called as they are, even with futures among their arguments, they are right:
# they only look at the shape of a local container, or reach the future's own
# operators (which defer) or conversions (which wait).
NATIVE: set[int] = {
    id(f) for f in (
        abs, round, divmod, len, range, enumerate, zip, reversed, chr, ord,
        hex, oct, bin, hash, repr, ascii,
    )
}

# Methods of these built-in types are pure: the receiver cannot change, and
# they keep nothing of their arguments (``"".join(parts)``, ``s.split(sep)``).
IMMUTABLE_RECEIVERS = frozenset({str, bytes, int, float, complex, bool, tuple, frozenset, range})

# Built-ins that keep no reference to their arguments (no iterator over them,
# no container holding them): calling one hands no local container over.
NON_RETAINING: set[int] = {
    id(f) for f in (
        len, abs, round, divmod, chr, ord, hex, oct, bin, hash, repr, ascii, str, int, float,
        bool, complex, sum, min, max, any, all, isinstance, issubclass, id, callable, format, pow,
    )
}

_keep: list[Any] = []


def pure(fn: F) -> F:
    """Declare ``fn`` pure: inside ``@schedule`` its calls are deferred, not sync points.

    Unlike ``@functional`` calls, which run on workers, a pure function runs
    on the master once its arguments are known: use it for cheap helpers
    (formatting, small arithmetic) that would otherwise stop the pipeline.
    """
    if not callable(fn):
        raise TypeError(f"pydron.pure needs a callable, got {type(fn).__name__}")
    _keep.append(fn)
    VALUE.add(id(fn))
    return fn


def is_pure(fn: Any) -> bool:
    """True if calling ``fn`` is not a sync point."""
    key = id(fn)
    return key in VALUE or key in STRUCTURAL
