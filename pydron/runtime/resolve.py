"""Finding and resolving futures inside values.

Futures only travel in the containers that a schedule function builds itself
(tuples, lists, dicts, sets): everything else that leaves the function is
resolved first. So a deep walk of those built-in containers finds them all.
"""
from __future__ import annotations

from typing import Any

from pydron.runtime.future import Future

_CONTAINERS = (list, tuple, dict, set, frozenset)

# Values that hold no future and pickle the same with the standard pickler as
# with cloudpickle (exact types: a subclass may be defined in ``__main__``).
PLAIN_TYPES = frozenset({int, float, complex, bool, str, bytes, type(None)})


def find_futures(obj: Any) -> list[Future]:
    """Every future reachable from ``obj`` through built-in containers, as found."""
    found: list[Future] = []
    _find(obj, found, set())
    return found


def _find(obj: Any, found: list[Future], seen: set[int]) -> None:
    kind = type(obj)
    if kind is Future:
        found.append(obj)
        return
    if kind not in _CONTAINERS or id(obj) in seen:
        return
    seen.add(id(obj))
    if kind is dict:
        for key, value in obj.items():
            _find(key, found, seen)
            _find(value, found, seen)
    else:
        for item in obj:
            _find(item, found, seen)


def contains_future(obj: Any) -> bool:
    """True if a future is reachable from ``obj`` (cheap for non-containers)."""
    kind = type(obj)
    if kind is Future:
        return True
    if kind not in _CONTAINERS:
        return False
    return bool(find_futures(obj))


def resolve_deep(obj: Any, escaping: dict[int, Any] | None = None) -> Any:
    """``obj`` with every future replaced by its value, waiting as needed.

    Lists, dicts and sets are updated in place, so that an object the user
    holds keeps its identity; tuples and frozensets are rebuilt. With
    ``escaping`` (a graph's local containers), every container reached is
    leaving the schedule function and is no longer local.
    """
    kind = type(obj)
    if kind is Future:
        obj = obj._pd_result()
        kind = type(obj)
    if kind not in _CONTAINERS:
        return obj
    return _resolve(obj, {}, escaping)


def _resolve(obj: Any, memo: dict[int, Any], escaping: dict[int, Any] | None = None) -> Any:
    kind = type(obj)
    if kind is Future:
        return _resolve(obj._pd_result(), memo, escaping)
    if kind not in _CONTAINERS:
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]
    if escaping:
        escaping.pop(key, None)
    if kind is list:
        memo[key] = obj
        for index, item in enumerate(obj):
            if type(item) in _CONTAINERS or type(item) is Future:
                new = _resolve(item, memo, escaping)
                if new is not item:
                    obj[index] = new
        return obj
    if kind is dict:
        memo[key] = obj
        items = list(obj.items())
        resolved = [(_resolve(k, memo, escaping), _resolve(v, memo, escaping)) for k, v in items]
        if any(k1 is not k2 or v1 is not v2 for (k1, v1), (k2, v2) in zip(items, resolved)):
            obj.clear()
            obj.update(resolved)
        return obj
    if kind is set:
        memo[key] = obj
        items = list(obj)
        resolved = [_resolve(item, memo, escaping) for item in items]
        if any(a is not b for a, b in zip(items, resolved)):
            obj.clear()
            obj.update(resolved)
        return obj
    items = [_resolve(item, memo, escaping) for item in obj]
    if all(a is b for a, b in zip(obj, items)):
        result = obj
    else:
        result = kind(items)
    memo[key] = result
    return result


def substitute(obj: Any, values: dict[int, Any]) -> Any:
    """A copy of ``obj`` with each future replaced by ``values[id(future)]``.

    Used for task inputs, which must see the versions of the futures that
    were current when the task was issued, not later in-place updates.
    """
    kind = type(obj)
    if kind is Future:
        return values[id(obj)]
    if kind not in _CONTAINERS:
        return obj
    if kind is dict:
        return {substitute(k, values): substitute(v, values) for k, v in obj.items()}
    return kind(substitute(item, values) for item in obj)


def snapshot(obj: Any) -> Any:
    """A copy of the built-in containers in ``obj`` (leaves shared).

    Task arguments are pickled later, on another thread; a local container
    the schedule function goes on mutating must be seen as it was at the call.
    """
    return _snapshot(obj, {})


def _snapshot(obj: Any, memo: dict[int, Any]) -> Any:
    kind = type(obj)
    if kind not in _CONTAINERS:
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]
    if kind is list:
        copy: Any = []
        memo[key] = copy
        copy.extend(_snapshot(item, memo) for item in obj)
    elif kind is dict:
        copy = memo[key] = {}
        copy.update((k, _snapshot(v, memo)) for k, v in obj.items())
    else:
        copy = memo[key] = kind(_snapshot(item, memo) for item in obj)
    return copy
