"""The ``@functional`` marker: a promise that a function is pure.

Marking never wraps: the decorated object is the user's own function, so
outside a schedule it is exactly the plain function (same identity, metadata,
speed and pickling by reference).
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

MARK = "__pydron_functional__"


def functional(fn: F) -> F:
    """Mark ``fn`` as functional: calls inside ``@schedule`` run as parallel tasks."""
    if isinstance(fn, (staticmethod, classmethod)):
        functional(fn.__func__)
        return fn
    if not callable(fn):
        raise TypeError(f"@pydron.functional needs a function, got {type(fn).__name__}")
    try:
        setattr(fn, MARK, True)
    except (AttributeError, TypeError):
        raise TypeError(
            f"@pydron.functional cannot mark {fn!r}: it does not accept attributes"
        ) from None
    return fn


def is_functional(fn: Any) -> bool:
    """True if ``fn`` (a function, or a bound method of one) is marked functional."""
    return getattr(fn, MARK, False) is True
