"""The ``@functional`` marker: a promise that a function is pure.

Marking never wraps: the decorated object is the user's own function, so
outside a schedule it is exactly the plain function (same identity, metadata,
speed and pickling by reference).
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

MARK = "__pydron_functional__"


TIMEOUT_MARK = "__pydron_timeout__"


def functional(fn: F | None = None, *, timeout: float | None = None) -> Any:
    """Mark ``fn`` as functional: calls inside ``@schedule`` run as parallel tasks.

    ``@functional(timeout=SECONDS)`` also limits each call: one that runs
    longer is stopped and raises ``TimeoutError`` naming the call.
    """
    if fn is None:
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout > 0):
            raise ValueError(f"@pydron.functional(timeout=...): expected a positive number of "
                             f"seconds, got {timeout!r}")
        return lambda f: _mark_with_timeout(functional(f), timeout)
    if isinstance(fn, (staticmethod, classmethod)):
        functional(fn.__func__)
        return fn
    if not callable(fn):
        raise TypeError(f"@pydron.functional needs a function, got {type(fn).__name__}")
    import inspect  # here: importing pydron stays cheap

    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        code = getattr(fn, "__code__", None)
        where = f" ({code.co_filename}, line {code.co_firstlineno})" if code is not None else ""
        raise TypeError(f"@pydron.functional does not support async functions: "
                        f"{getattr(fn, '__qualname__', fn)!r}{where}: its call would return "
                        f"a coroutine, which cannot run on a worker")
    try:
        setattr(fn, MARK, True)
    except (AttributeError, TypeError):
        raise TypeError(
            f"@pydron.functional cannot mark {fn!r}: it does not accept attributes"
        ) from None
    return fn


def _mark_with_timeout(fn: Any, timeout: float | None) -> Any:
    if timeout is not None:
        target = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
        setattr(target, TIMEOUT_MARK, float(timeout))
    return fn


def is_functional(fn: Any) -> bool:
    """True if ``fn`` (a function, or a bound method of one) is marked functional."""
    return getattr(fn, MARK, False) is True
