"""Finding and resolving futures inside values.

Futures only travel in the containers that a schedule function builds itself
(tuples, lists, dicts, sets, slices): everything else that leaves the
function is resolved first. So a walk of those built-in containers finds them
all. Every walk here is iterative, so a value nested thousands of levels deep
costs no recursion, and each container is visited once (shared and cyclic
containers included).
"""
from __future__ import annotations

from typing import Any, Callable

from pydron.runtime.future import COUNT_LOCK, FUTURES, Future

_CONTAINERS = frozenset({list, tuple, dict, set, frozenset, slice})
# Containers updated in place when resolved, so that their identity is kept.
_MUTABLE = frozenset({list, dict, set})

# Values that hold no future and pickle the same with the standard pickler as
# with cloudpickle (exact types: a subclass may be defined in ``__main__``).
PLAIN_TYPES = frozenset({int, float, complex, bool, str, bytes, type(None)})


def plain_size(value: Any) -> int:
    """About the bytes a plain value takes on the wire (for the byte counts)."""
    return len(value) if type(value) in (str, bytes) else 8


def _children(obj: Any) -> list:
    kind = type(obj)
    if kind is dict:
        flat: list = []
        for key, value in obj.items():
            flat.append(key)
            flat.append(value)
        return flat
    if kind is slice:
        return [obj.start, obj.stop, obj.step]
    return list(obj)


def find_futures(obj: Any) -> list[Future]:
    """Every future reachable from ``obj`` through built-in containers, as found."""
    kind = type(obj)
    if kind is Future:
        return [obj]
    if kind not in _CONTAINERS or not FUTURES.live:
        return []
    found: list[Future] = []
    seen = {id(obj)}
    stack = [obj]
    while stack:
        for child in _children(stack.pop()):
            ckind = type(child)
            if ckind is Future:
                found.append(child)
            elif ckind in _CONTAINERS and id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return found


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
    holds keeps its identity; tuples, frozensets and slices are rebuilt. With
    ``escaping`` (a graph's local containers), every container reached is
    leaving the schedule function and is no longer local.
    """
    kind = type(obj)
    if kind is Future:
        return obj._pd_result()  # a task's value never holds a future
    if kind not in _CONTAINERS:
        return obj
    if not FUTURES.live:
        if escaping:
            _escape(obj, escaping)
        return obj
    return _walk(obj, _result_of, True, escaping)


def _escape(obj: Any, local: dict[int, Any]) -> None:
    """No future exists: only mark the local containers reachable from ``obj`` as escaped.

    A list, dict or set that is not local holds no local container (whatever
    put one there was an escape itself), so the walk does not enter it.
    """
    stack = [obj]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        key = id(current)
        if key in seen:
            continue
        seen.add(key)
        if type(current) in _MUTABLE:
            if local.pop(key, None) is None:
                continue
            if not local:
                _dropped_locals(1)  # the graph's last local container (FUTURES.locals)
        children = _children(current)
        if not _CONTAINERS.isdisjoint(map(type, children)):  # most hold no container: C speed
            stack.extend(child for child in children if type(child) in _CONTAINERS)


def _dropped_locals(count: int) -> None:
    """``count`` graphs hold no local container any more."""
    with COUNT_LOCK:
        FUTURES.locals -= count


def _result_of(future: Future) -> Any:
    return future._pd_result()


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
    return _walk(obj, lambda future: values[id(future)], False, None)


def snapshot(obj: Any) -> Any:
    """A copy of the built-in containers in ``obj`` (leaves shared).

    Task arguments are pickled later, on another thread; a local container
    the schedule function goes on mutating must be seen as it was at the call.
    """
    if type(obj) not in _CONTAINERS:
        return obj
    return _walk(obj, None, False, None)


def _walk(root: Any, leaf: Callable[[Future], Any] | None, in_place: bool,
          escaping: dict[int, Any] | None) -> Any:
    """Map ``leaf`` over the futures in ``root``: in place, or as a copy of every container.

    ``leaf`` None keeps the futures (a copy of the containers only).
    """
    memo: dict[int, Any] = {}
    # Each frame: [container, its children, next child, new children, copy made at open]
    stack: list[list] = []

    def open_frame(obj: Any) -> None:
        kind = type(obj)
        if escaping and escaping.pop(id(obj), None) is not None and not escaping:
            _dropped_locals(1)
        shell = None
        if in_place:
            if kind in _MUTABLE:
                memo[id(obj)] = obj
        elif kind is list:
            shell = memo[id(obj)] = []
        elif kind is dict:
            shell = memo[id(obj)] = {}
        stack.append([obj, _children(obj), 0, [], shell])

    open_frame(root)
    result = root
    while stack:
        frame = stack[-1]
        items, position = frame[1], frame[2]
        if position < len(items):
            frame[2] = position + 1
            child = items[position]
            kind = type(child)
            if kind is Future:
                frame[3].append(child if leaf is None else leaf(child))
            elif kind not in _CONTAINERS:
                frame[3].append(child)
            elif id(child) in memo:
                frame[3].append(memo[id(child)])
            else:
                open_frame(child)
            continue
        stack.pop()
        result = _close(frame, in_place)
        memo[id(frame[0])] = result
        if stack:
            stack[-1][3].append(result)
    return result


def _close(frame: list, in_place: bool) -> Any:
    obj, old, _, new, shell = frame
    kind = type(obj)
    if shell is not None:  # a copy: fill the container made at open
        if kind is list:
            shell.extend(new)
        else:
            shell.update(zip(new[0::2], new[1::2]))
        return shell
    changed = any(a is not b for a, b in zip(old, new))
    if kind is slice:
        return slice(*new) if changed else obj
    if not in_place or kind not in _MUTABLE:
        return kind(new) if (changed or not in_place) else obj
    if changed:
        if kind is list:
            for index, (a, b) in enumerate(zip(old, new)):
                if a is not b:
                    obj[index] = b
        elif kind is dict:
            obj.clear()
            obj.update(zip(new[0::2], new[1::2]))
        else:
            obj.clear()
            obj.update(new)
    return obj
