"""What rewritten bytecode calls: the semantics of calls and sync points, in one place.

``route(f)`` replaces every callable that a rewritten function is about to
call. A functional function becomes a task; a schedule function or a
function the tracer rewrote runs inline in the same graph; a known-pure
built-in runs at once; anything else is a *sync point*: every earlier task
has finished (the earliest failure is raised here), the arguments are
resolved, and the call runs with no graph active, so that nothing it does can
see a future.
"""
from __future__ import annotations

import math
import operator
import types
from functools import partial
from typing import Any, Callable

from pydron.functional import MARK
from pydron.runtime.future import Future
from pydron.runtime.graph import Graph, current_graph, set_current_graph
from pydron.runtime.graph import _inline_codes
from pydron.runtime.resolve import contains_future, resolve_deep

SCHEDULE_MARK = "__pydron_schedule__"

# Functions whose code the tracer produced run inline, in the caller's graph.
_keep_alive: list[Any] = []


def register_inline(code: types.CodeType) -> None:
    """Mark a rewritten code object as safe to run inline with futures."""
    _keep_alive.append(code)
    _inline_codes.add(id(code))


# Built-ins that neither have side effects nor call user code (unless given a
# callable, see ``_call_pure``). Kept in one place; extended by issue 5 work.
PURE: set[int] = {
    id(f) for f in (
        abs, all, any, ascii, bin, bool, bytes, callable, chr, complex, dict,
        divmod, enumerate, float, format, frozenset, hash, hex, id, int,
        isinstance, issubclass, iter, len, list, max, min, oct, ord, pow,
        range, repr, reversed, round, set, slice, sorted, str, sum, tuple,
        type, zip, map, filter,
    )
}
PURE.update(id(getattr(math, name)) for name in dir(math) if callable(getattr(math, name)))
PURE.update(
    id(getattr(operator, name)) for name in dir(operator)
    if not name.startswith("_") and callable(getattr(operator, name))
    and name not in ("setitem", "delitem", "iadd", "iand", "iconcat", "ifloordiv",
                     "ilshift", "imod", "imul", "imatmul", "ior", "ipow", "irshift",
                     "isub", "itruediv", "ixor", "call", "methodcaller")
)


def route(fn: Any) -> Any:
    """The callable that a rewritten call site actually calls instead of ``fn``."""
    graph = current_graph()
    if graph is None:
        return fn
    return _route(graph, fn, protected=False)


def route_protected(fn: Any) -> Any:
    """Like ``route``, inside try/with: every call's failure surfaces at the call."""
    graph = current_graph()
    if graph is None:
        return fn
    return _route(graph, fn, protected=True)


def _route(graph: Graph, fn: Any, protected: bool) -> Any:
    kind = type(fn)
    if kind is Future:
        return partial(_call_sync, graph, fn, protected)
    if getattr(fn, MARK, False) is True:
        return partial(_call_functional_now if protected else _call_functional, graph, fn)
    if kind is types.FunctionType:
        if id(fn.__code__) in _inline_codes:
            return partial(_call_inline, graph, protected, fn)
        inner = getattr(fn, SCHEDULE_MARK, None)
        if inner is not None:
            return partial(_call_inline, graph, protected, inner)
    elif kind is types.MethodType:
        inner = getattr(fn.__func__, SCHEDULE_MARK, None)
        if inner is not None:
            return partial(_call_inline, graph, protected, types.MethodType(inner, fn.__self__))
    if id(fn) in PURE:
        return partial(_call_pure, graph, fn, protected)
    return partial(_call_sync, graph, fn, protected)


def _call_functional(graph: Graph, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    return graph.submit(fn, args, kwargs)


def _call_functional_now(graph: Graph, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    graph.sync()
    return graph.submit(fn, args, kwargs)._pd_result()


def _call_inline(graph: Graph, protected: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = fn(*args, **kwargs)
    if protected:
        graph.sync()
    return result


def _call_pure(graph: Graph, fn: Callable[..., Any], protected: bool, *args: Any, **kwargs: Any) -> Any:
    for value in (*args, *kwargs.values()):
        if callable(value) and not isinstance(value, type) and getattr(value, MARK, False) is not True:
            return _call_sync(graph, fn, protected, *args, **kwargs)
    if contains_future(args) or contains_future(kwargs):
        args = resolve_deep(args)
        kwargs = resolve_deep(kwargs)
    return fn(*args, **kwargs)


def _call_sync(graph: Graph, fn: Any, protected: bool, *args: Any, **kwargs: Any) -> Any:
    graph.sync()
    fn = resolve_deep(fn)
    args = resolve_deep(args)
    kwargs = resolve_deep(kwargs)
    previous = set_current_graph(None)
    try:
        return fn(*args, **kwargs)
    finally:
        set_current_graph(previous)


# -- statements that are sync points -------------------------------------------
def _sync_and_resolve(*values: Any) -> tuple:
    graph = current_graph()
    if graph is not None:
        graph.sync()
    return tuple(resolve_deep(v) for v in values)


def store_attr(obj: Any, name: str, value: Any) -> None:
    """``obj.name = value``: a sync point."""
    obj, value = _sync_and_resolve(obj, value)
    setattr(obj, name, value)


def store_subscr(obj: Any, key: Any, value: Any) -> None:
    """``obj[key] = value``: a sync point."""
    obj, key, value = _sync_and_resolve(obj, key, value)
    obj[key] = value


def store_slice(obj: Any, start: Any, stop: Any, value: Any) -> None:
    """``obj[start:stop] = value``: a sync point."""
    obj, start, stop, value = _sync_and_resolve(obj, start, stop, value)
    obj[start:stop] = value


def delete_attr(obj: Any, name: str) -> None:
    """``del obj.name``: a sync point."""
    (obj,) = _sync_and_resolve(obj)
    delattr(obj, name)


def delete_subscr(obj: Any, key: Any) -> None:
    """``del obj[key]``: a sync point."""
    obj, key = _sync_and_resolve(obj, key)
    del obj[key]


def sync(_: Any = None) -> None:
    """A bare sync point (before ``with``, at the entry of a try block)."""
    graph = current_graph()
    if graph is not None:
        graph.sync()


def publish(value: Any) -> Any:
    """A value about to become visible outside the function (a global): resolved after a sync."""
    return _sync_and_resolve(value)[0]


def resolve(value: Any) -> Any:
    """A value that must be concrete (closure cells, yielded values): waits for it only."""
    return resolve_deep(value)


def resolve_top(value: Any) -> Any:
    """A value whose identity or type is tested (``is None``, ``match``): waits for it."""
    return value._pd_result() if type(value) is Future else value


def is_(a: Any, b: Any) -> bool:
    """``a is b`` on values, not on futures."""
    if type(a) is Future:
        a = a._pd_result()
    if type(b) is Future:
        b = b._pd_result()
    return a is b


def is_not(a: Any, b: Any) -> bool:
    """``a is not b`` on values, not on futures."""
    return not is_(a, b)


def _inplace(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    special = "__" + op.__name__ + "__"

    def inplace(target: Any, other: Any) -> Any:
        # Futures and immutable values are rebound, never mutated: no sync needed.
        if type(target) is Future or getattr(type(target), special, None) is None:
            return op(target, other)
        other, = _sync_and_resolve(other)
        return op(target, other)

    inplace.__name__ = inplace.__qualname__ = f"inplace_{op.__name__}"
    return inplace


# BINARY_OP argument (13..25) -> helper, in CPython's NB_INPLACE_* order.
INPLACE = {
    13 + i: _inplace(op) for i, op in enumerate([
        operator.iadd, operator.iand, operator.ifloordiv, operator.ilshift,
        operator.imatmul, operator.imul, operator.imod, operator.ior,
        operator.ipow, operator.irshift, operator.isub, operator.itruediv,
        operator.ixor,
    ])
}

# Callables that look at their caller's frame: a routed call would show them ours.
FRAME_SENSITIVE = frozenset({
    "locals", "vars", "dir", "eval", "exec", "super", "globals", "breakpoint",
    "_getframe", "currentframe", "stack",
})

