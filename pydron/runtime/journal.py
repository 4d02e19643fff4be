"""Undo records for local containers changed inside a try or with block.

The calls of such a block overlap, so a failure is noticed after later
statements of the block have run. Statements that only rebind local variables
are harmless when the handler never reads them (tracer/regions.py); changes
to a list, dict or set the function built are recorded here instead, and the
handler undoes the ones made after the failed call was issued, so that it
sees the containers as the sequential run left them. A generator may run
while such a block iterates it, so generators record their changes too.
"""
from __future__ import annotations

from typing import Any, Callable

Undo = Callable[[], None]

# Methods that do not change their container: nothing to record.
READ_ONLY = frozenset({
    "copy", "count", "get", "index", "items", "keys", "values", "__contains__",
    "__getitem__", "__len__", "__iter__", "__reversed__",
    "isdisjoint", "issubset", "issuperset", "difference", "intersection",
    "symmetric_difference", "union",
})


def undo_for_method(container: Any, method: str, args: tuple) -> Undo | None:
    """How to undo ``container.method(*args)``, taken before the call."""
    if method in READ_ONLY:
        return None
    if type(container) is list and method in ("append", "extend", "__iadd__"):
        return _truncate(container)
    if type(container) is dict and method == "__setitem__" and args:
        return undo_setitem(container, args[0])
    if type(container) is set and method == "add" and args:
        if args[0] in container:
            return None
        item = args[0]
        return lambda: container.discard(item)
    return undo_any(container)


def undo_setitem(container: Any, key: Any) -> Undo:
    """How to undo ``container[key] = value`` (dict or list), taken before it."""
    if type(container) is dict:
        if key in container:
            old = container[key]

            def restore() -> None:
                container[key] = old
            return restore
        return lambda: container.pop(key, None)
    return undo_any(container)


def undo_any(container: Any) -> Undo:
    """Undo any change: a shallow copy now, put back in place."""
    if type(container) is list:
        saved_list = container[:]

        def restore_list() -> None:
            container[:] = saved_list
        return restore_list
    saved = container.copy()

    def restore() -> None:
        container.clear()
        container.update(saved)
    return restore


def _truncate(container: list) -> Undo:
    length = len(container)

    def truncate() -> None:
        del container[length:]
    return truncate
