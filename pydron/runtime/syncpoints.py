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

import operator
import types
from functools import partial
from typing import Any, Callable

from pydron.functional import MARK
from pydron.runtime.future import Future, _defer, inplace_special
from pydron.runtime.graph import Graph, current_graph, set_current_graph
from pydron.runtime.graph import _local as _threads
from pydron.runtime.graph import _inline_codes
from pydron.runtime import journal, purity
from pydron.runtime.resolve import contains_future, resolve_deep

SCHEDULE_MARK = "__pydron_schedule__"

# Functions whose code the tracer produced run inline, in the caller's graph.
_keep_alive: list[Any] = []


def register_inline(code: types.CodeType) -> None:
    """Mark a rewritten code object as safe to run inline with futures."""
    _keep_alive.append(code)
    _inline_codes.add(id(code))


def route(fn: Any) -> Any:
    """The callable that a rewritten call site actually calls instead of ``fn``."""
    graph = _threads.graph
    if graph is None or id(fn) in purity.NATIVE:
        return fn
    if type(fn) is types.BuiltinMethodType and id(fn.__self__) in graph.local \
            and fn.__name__ in _NATIVE_LOCAL_METHODS and not graph.journaling:
        return fn
    return _route(graph, fn, protected=False)


def route_journaled(fn: Any) -> Any:
    """Like ``route``, inside a try/with block whose calls overlap: changes to
    local containers, there and in functions it calls inline, can be undone."""
    graph = _threads.graph
    if graph is None or id(fn) in purity.NATIVE:
        return fn
    if type(fn) is types.FunctionType and id(fn.__code__) in _inline_codes:
        return partial(_call_inline_journaled, graph, fn)
    return _route(graph, fn, protected=False, journaled=True)


# Methods of local containers that are right when called with futures as they
# are: they store them, or wait through the future's own methods.
_NATIVE_LOCAL_METHODS = frozenset({
    "append", "extend", "insert", "pop", "clear", "remove", "index", "count", "reverse",
    "add", "discard", "update", "setdefault", "get", "keys", "values", "items", "popitem",
    "__getitem__", "__setitem__", "__len__", "__contains__",
})


def route_protected(fn: Any) -> Any:
    """Like ``route``, inside try/with: every call's failure surfaces at the call."""
    graph = current_graph()
    if graph is None:
        return fn
    return _route(graph, fn, protected=True)


def _route(graph: Graph, fn: Any, protected: bool, journaled: bool = False) -> Any:
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
            if journaled:
                return partial(_call_inline_journaled, graph, inner)
            return partial(_call_inline, graph, protected, inner)
    elif kind is types.MethodType:
        inner = getattr(fn.__func__, SCHEDULE_MARK, None)
        if inner is not None:
            inner = types.MethodType(inner, fn.__self__)
            if journaled:
                return partial(_call_inline_journaled, graph, inner)
            return partial(_call_inline, graph, protected, inner)
    elif kind is types.BuiltinMethodType and id(getattr(fn, "__self__", None)) in graph.local:
        return partial(_call_local_method, graph, fn, protected, journaled)
    if purity.is_pure(fn):
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


def _call_inline_journaled(graph: Graph, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    graph.journaling += 1
    try:
        return fn(*args, **kwargs)
    finally:
        graph.journaling -= 1


def _calls_back(args: tuple, kwargs: dict) -> bool:
    """True if an argument is a callable that may run user code with side effects."""
    for value in (*args, *kwargs.values()):
        if (type(value) is not Future and callable(value) and not isinstance(value, type)
                and not purity.is_pure(value)
                and getattr(value, MARK, False) is not True):
            return True
    return False


def _call_pure(graph: Graph, fn: Callable[..., Any], protected: bool, *args: Any, **kwargs: Any) -> Any:
    if _calls_back(args, kwargs):
        return _call_sync(graph, fn, protected, *args, **kwargs)
    key = id(fn)
    if key in purity.STRUCTURAL:
        if fn is map and args and getattr(args[0], MARK, False) is True:
            return _functional_map(graph, args[0], args[1:])
        args = tuple(_collect(graph, a) if key in purity.FRESH else resolve_top(a) for a in args)
        result = fn(*args, **{k: resolve_top(v) for k, v in kwargs.items()})
    else:
        if key not in purity.SHORT_CIRCUIT:
            args = tuple(_collect(graph, a) for a in args)
        if contains_future(args) or contains_future(kwargs):
            result = graph.defer(_apply_kwargs, (fn, args, kwargs))
            if protected:  # inside try/with: a failure must surface inside the block
                graph.sync()
            return result
        result = fn(*args, **kwargs)
    if key in purity.FRESH:
        graph.add_local(result)
    return result


def _apply_kwargs(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    return fn(*args, **kwargs)


def _collect(graph: Graph, value: Any) -> Any:
    """A generator expression handed to a pure built-in: its items, futures and all.

    ``sum(f(x) for x in xs)`` then issues every call before any is needed.
    """
    if type(value) is types.GeneratorType and id(value.gi_code) in _inline_codes:
        previous, graph.collecting = graph.collecting, True
        try:
            return list(value)
        finally:
            graph.collecting = previous
    return value


def _functional_map(graph: Graph, fn: Callable[..., Any], iterables: tuple) -> Any:
    """``map`` over a functional function: each item is a task, issued as the map is consumed."""
    for args in zip(*(resolve_top(i) for i in iterables)):
        if current_graph() is graph:
            yield graph.submit(fn, args, {})
        else:  # consumed by code outside the schedule function: a plain call
            yield fn(*args)


_LOCAL_METHOD_TYPES = (list, dict, set)


def _call_local_method(graph: Graph, fn: Any, protected: bool, journaled: bool,
                       *args: Any, **kwargs: Any) -> Any:
    """A method of a container that only the schedule function holds: no sync needed."""
    if _calls_back(args, kwargs) or type(fn.__self__) not in _LOCAL_METHOD_TYPES:
        return _call_sync(graph, fn, protected, *args, **kwargs)
    if journaled or graph.journaling:
        graph.record(journal.undo_for_method(fn.__self__, fn.__name__, args))
    result = fn(*args, **kwargs)
    if fn.__name__ == "copy":
        graph.add_local(result)
    return result


def _call_sync(graph: Graph, fn: Any, protected: bool, *args: Any, **kwargs: Any) -> Any:
    graph.sync()
    fn = resolve_deep(fn, graph.local)
    args = resolve_deep(args, graph.local)
    kwargs = resolve_deep(kwargs, graph.local)
    previous = set_current_graph(None)
    try:
        return fn(*args, **kwargs)
    finally:
        set_current_graph(previous)


def local(container: Any) -> Any:
    """A container the schedule function just built: local until it escapes."""
    graph = current_graph()
    if graph is not None and type(container) in _LOCAL_METHOD_TYPES:
        graph.add_local(container)
    return container


def _is_local(obj: Any) -> Graph | None:
    graph = current_graph()
    if graph is not None and id(obj) in graph.local:
        return graph
    return None


# -- statements that are sync points -------------------------------------------
def _sync_and_resolve(*values: Any) -> tuple:
    graph = current_graph()
    if graph is None:
        return values
    graph.sync()
    return tuple(resolve_deep(v, graph.local) for v in values)


def store_attr(obj: Any, name: str, value: Any) -> None:
    """``obj.name = value``: a sync point."""
    obj, value = _sync_and_resolve(obj, value)
    setattr(obj, name, value)


def store_subscr(obj: Any, key: Any, value: Any, journaled: bool = False) -> None:
    """``obj[key] = value``: a sync point, unless ``obj`` is a local container."""
    graph = _is_local(obj)
    if graph is not None:
        key = resolve_top(key)
        if journaled or graph.journaling:
            graph.record(journal.undo_setitem(obj, key))
        obj[key] = value
        return
    obj, key, value = _sync_and_resolve(obj, key, value)
    obj[key] = value


def store_slice(obj: Any, start: Any, stop: Any, value: Any, journaled: bool = False) -> None:
    """``obj[start:stop] = value``: a sync point, unless ``obj`` is a local container."""
    graph = _is_local(obj)
    if graph is not None:
        if journaled or graph.journaling:
            graph.record(journal.undo_any(obj))
        obj[resolve_top(start):resolve_top(stop)] = value
        return
    obj, start, stop, value = _sync_and_resolve(obj, start, stop, value)
    obj[start:stop] = value


def delete_attr(obj: Any, name: str) -> None:
    """``del obj.name``: a sync point."""
    (obj,) = _sync_and_resolve(obj)
    delattr(obj, name)


def delete_subscr(obj: Any, key: Any, journaled: bool = False) -> None:
    """``del obj[key]``: a sync point, unless ``obj`` is a local container."""
    graph = _is_local(obj)
    if graph is not None:
        if journaled or graph.journaling:
            graph.record(journal.undo_any(obj))
        del obj[resolve_top(key)]
        return
    obj, key = _sync_and_resolve(obj, key)
    del obj[key]


# The same statements inside a try/with block whose calls overlap.
store_subscr_journaled = partial(store_subscr, journaled=True)
store_slice_journaled = partial(store_slice, journaled=True)
delete_subscr_journaled = partial(delete_subscr, journaled=True)


def sync(_: Any = None) -> None:
    """A bare sync point (before ``with``, at the entry of a try block)."""
    graph = current_graph()
    if graph is not None:
        graph.sync()


def publish(value: Any) -> Any:
    """A value about to become visible outside the function (a global): resolved after a sync."""
    return _sync_and_resolve(value)[0]


def resolve(value: Any) -> Any:
    """A value that code elsewhere may see (closure cells): waits for it, and it escapes."""
    graph = current_graph()
    return resolve_deep(value, graph.local if graph is not None else None)


def resolve_yield(value: Any) -> Any:
    """A yielded value: concrete, unless a pure built-in is collecting a generator expression."""
    graph = current_graph()
    if graph is not None and graph.collecting:
        return value
    return resolve(value)


# -- f-strings: formatting a future is a deferred operation --------------------
_CONVERSIONS = {0: None, 1: str, 2: repr, 3: ascii}


def _format(value: Any, spec: Any = "") -> Any:
    if type(value) is Future or type(spec) is Future:
        return _defer(format, value, spec)
    return format(value, spec)


def convert(value: Any, conversion: int) -> Any:
    """``!s``, ``!r``, ``!a`` in an f-string."""
    fn = _CONVERSIONS[int(conversion)]
    return _defer(fn, value) if type(value) is Future else fn(value)


def format_simple(value: Any) -> Any:
    """``{value}`` in an f-string."""
    return _format(value)


def format_with_spec(value: Any, spec: Any) -> Any:
    """``{value:spec}`` in an f-string."""
    return _format(value, spec)


def _format_value(flags: int) -> Callable[..., Any]:
    conversion = _CONVERSIONS[flags & 3]

    def format_value(value: Any, spec: Any = "") -> Any:
        if conversion is not None:
            value = convert(value, flags & 3)
        return _format(value, spec)

    return format_value


# FORMAT_VALUE's argument (3.11, 3.12): conversion in the low bits, 4 = has a spec.
FORMAT_VALUE = {flags: _format_value(flags) for flags in range(8)}


def build_string(parts: tuple) -> Any:
    """The pieces of an f-string joined, later if one of them is a future."""
    for part in parts:
        if type(part) is Future:
            return part._pd_graph.defer(_join, (parts,))
    return "".join(parts)


def _join(parts: tuple) -> str:
    return "".join(parts)


def reconcile(error: BaseException) -> BaseException:
    """At a handler of a block whose calls overlapped: the exception it should see."""
    graph = current_graph()
    if graph is None or not isinstance(error, BaseException):
        return error
    return graph.reconcile(error)


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


def _inplace(op: Callable[[Any, Any], Any], journaled: bool = False) -> Callable[[Any, Any], Any]:
    special = inplace_special(op)

    def inplace(target: Any, other: Any) -> Any:
        # Futures and immutable values are rebound, never mutated; local
        # containers are seen by no one else: no sync needed.
        if type(target) is Future:
            return op(target, other)
        if getattr(type(target), special, None) is None:
            if type(other) is Future:  # ``0 += r``: deferred as the in-place operator it is
                return other._pd_graph.defer(op, (target, other))
            return op(target, other)
        graph = _is_local(target)
        if graph is not None:
            if journaled or graph.journaling:
                graph.record(journal.undo_for_method(target, special, ()))
            # A future operand would take over through its reflected operator
            # and rebind the name instead of mutating the container.
            return op(target, resolve_top(other))
        other, = _sync_and_resolve(other)
        return op(target, other)

    inplace.__name__ = inplace.__qualname__ = f"inplace_{op.__name__}"
    return inplace


# Targets of ``x op= y`` that the rewritten code leaves to the interpreter:
# immutable values are rebound, and futures defer the operation themselves.
NATIVE_INPLACE_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None), tuple,
                                  frozenset, range, Future})

# BINARY_OP argument (13..25) -> helper, in CPython's NB_INPLACE_* order.
_INPLACE_OPS = [
    operator.iadd, operator.iand, operator.ifloordiv, operator.ilshift,
    operator.imatmul, operator.imul, operator.imod, operator.ior,
    operator.ipow, operator.irshift, operator.isub, operator.itruediv,
    operator.ixor,
]
INPLACE = {13 + i: _inplace(op) for i, op in enumerate(_INPLACE_OPS)}
# The same inside a try/with block whose calls overlap.
INPLACE_JOURNALED = {13 + i: _inplace(op, journaled=True) for i, op in enumerate(_INPLACE_OPS)}


def rebound_builtin(name: str, where: str) -> Callable[[Any], Any]:
    """The guard of a builtin the tracer relied on (``for i in range(n)`` typed as ints).

    The rewritten code calls it with the value the name holds at run time when
    that is not the builtin any more: running the typed code would be wrong.
    """
    def rebound(value: Any) -> Any:
        raise TypeError(f"pydron: {name} was rebound after @schedule compiled {where}")

    rebound.__name__ = rebound.__qualname__ = f"{name}_rebound"
    return rebound


# Callables that look at their caller's frame: a routed call would show them ours.
FRAME_SENSITIVE = frozenset({
    "locals", "vars", "dir", "eval", "exec", "super", "globals", "breakpoint",
    "_getframe", "currentframe", "stack",
})

