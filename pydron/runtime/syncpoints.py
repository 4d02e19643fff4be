"""What rewritten bytecode calls: the semantics of calls and sync points, in one place.

Each call site of a rewritten function has a ``CallSite``: where the callable
is produced, ``route`` turns a functional function into a task, a function
the tracer rewrote (a nested function's twin, another schedule function) into
itself run inline in the same graph, and a pure built-in into a deferred
operation; the site remembers a callable that needs none of this, so that
the next call skips ``route``. At the call, while futures exist, ``gate``
makes an ordinary call a *sync point*: every earlier task has finished (the
earliest failure is raised there), the callable and arguments are resolved,
and the interpreter then makes the call from the user's own frame.
"""
from __future__ import annotations

import operator
import sys
import types
import weakref
from functools import partial
from typing import Any, Callable

from pydron.functional import MARK
from pydron.runtime.future import (COUNT_LOCK, FUTURES, NATIVE_SITES, NO_NATIVE, Future, _defer,
                                   inplace_special)
from pydron.runtime.graph import Graph, current_graph
from pydron.runtime.graph import _local as _threads
from pydron.runtime.codes import inline_codes as _inline_codes
from pydron.runtime import journal, purity
from pydron.runtime.resolve import contains_future, resolve_deep

SCHEDULE_MARK = "__pydron_schedule__"

# Functions whose code the tracer produced run inline, in the caller's graph.
_keep_alive: list[Any] = []
# Nested functions keep their plain code (so that code outside the schedule
# function calls them plainly); rewritten code calls their twin instead.
_twin_codes: dict[int, types.CodeType] = {}
# plain function -> its twin; weak, so that neither outlives the function
_twins: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_journaled_twins: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


# id(rewritten code) -> (how to make its journaled copy, journaled), and the
# journaled copy of each rewritten code, made when first needed.
_originals: dict[int, tuple[Callable[[], types.CodeType] | None, bool]] = {}
_journaled_codes: dict[int, types.CodeType] = {}


def register_inline(code: types.CodeType, make_journaled: Callable[[], types.CodeType] | None = None,
                    journaled: bool = False) -> None:
    """Mark a rewritten code object as safe to run inline with futures.

    ``make_journaled`` (from the tracer, which this module does not import)
    rewrites the original code again with every change to a local container
    journaled; it is called the first time a try/with block needs that copy.
    """
    _keep_alive.append(code)
    _inline_codes.add(id(code))
    if make_journaled is not None or journaled:
        _originals[id(code)] = (make_journaled, journaled)


def _journaled_code(code: types.CodeType) -> types.CodeType:
    """The journaled copy of rewritten ``code`` (itself if it is one already)."""
    make, journaled = _originals.get(id(code), (None, True))
    if journaled or make is None:
        return code
    copy = _journaled_codes.get(id(code))
    if copy is None:
        copy = _journaled_codes[id(code)] = make()
    return copy


def _journaled(fn: types.FunctionType) -> types.FunctionType:
    """``fn`` (rewritten code) as the copy whose every change to a local container can be undone.

    A try/with block whose calls overlap calls it instead of ``fn``: no
    wrapper frame, so recursion stays as deep as in the plain run.
    """
    copy = _journaled_code(fn.__code__)
    if copy is fn.__code__:
        return fn
    return with_code(fn, copy)


def with_code(fn: types.FunctionType, code: types.CodeType) -> types.FunctionType:
    """``fn`` with other code: the same globals, name, defaults and closure."""
    copy = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    return copy


def register_twin(plain: types.CodeType, rewritten: types.CodeType) -> None:
    """``rewritten`` is what a call from rewritten code runs for a function made from ``plain``."""
    _keep_alive.append(plain)
    _twin_codes[id(plain)] = rewritten


def _twin(fn: types.FunctionType, journaled: bool = False) -> Any:
    """The rewritten twin of a nested function (same globals, defaults and closure).

    ``journaled``: the copy that try/with blocks whose calls overlap call.
    """
    cache = _journaled_twins if journaled else _twins
    twin = cache.get(fn)
    if (twin is not None and twin.__defaults__ is fn.__defaults__
            and twin.__kwdefaults__ is fn.__kwdefaults__):
        return twin
    code = _twin_codes[id(fn.__code__)]
    if journaled:
        code = _journaled_code(code)
    twin = cache[fn] = with_code(fn, code)
    return twin


class Ordinary(partial):
    """A callable whose call is a sync point: the gate at the call site syncs and resolves.

    A ``partial`` so that, called as it is, it adds no Python frame.
    """

    __slots__ = ()


class Issue(partial):
    """A functional call at a call site: ``graph.call`` with the function bound
    (a ``partial``, as ``Ordinary``; the site keeps it for the next call)."""

    __slots__ = ()


_NOTHING = object()


class CallSite:
    """One call site of rewritten code.

    ``fast`` is the callable last seen here that the rewritten code may call
    as it is: the code tests it with ``is`` and skips ``route`` entirely. The
    call still goes through ``gate`` whenever futures exist.
    """

    __slots__ = ("fast", "cacheable", "journaled", "plain", "twin", "filled", "dplain", "dtwin",
                 "native", "gate_free", "issued", "issue")

    def __init__(self, cacheable: bool, journaled: bool = False, gate_free: bool = False) -> None:
        self.fast: Any = _NOTHING
        # ``gate_free``: the arguments are loads that cannot make a future, so
        # while none exists the rewritten code calls ``native`` (the same as
        # ``fast``, set only while no future exists and cleared by the first
        # one: future.NATIVE_SITES) without the gate.
        self.native: Any = NO_NATIVE
        self.gate_free = gate_free
        # The nested function last called here, and its twin (called instead).
        self.plain: Any = _NOTHING
        self.twin: Any = None
        # The same for a nested function with defaults, which can be reassigned:
        # ``route`` hands out the twin while the defaults are still the twin's.
        self.dplain: Any = _NOTHING
        self.dtwin: Any = None
        # The functional function last called here, and its Issue (bound to a graph).
        self.issued: Any = _NOTHING
        self.issue: Any = None
        self.filled = False  # in _FILLED_SITES
        # False where an argument is a generator expression or a function made
        # there: a pure built-in must see it (``sum(f(x) for x in xs)``).
        self.cacheable = cacheable
        # In a generator, or in a try/with block whose calls overlap: changes
        # to local containers made by functions it calls inline can be undone.
        self.journaled = journaled

    def route(self, fn: Any) -> Any:
        """What this site calls instead of ``fn``, outside one-at-a-time try/with blocks."""
        graph = _threads.graph
        if graph is None:
            return fn
        if fn is self.issued and self.issue.func.__self__ is graph:
            return self.issue
        if fn is self.dplain:
            twin = self.dtwin
            if twin.__defaults__ is fn.__defaults__ and twin.__kwdefaults__ is fn.__kwdefaults__:
                return twin
        routed = _route(graph, fn, protected=False, journaled=self.journaled)
        if type(routed) is Issue:
            self.issued, self.issue = fn, routed
            self._filled()
        elif self.cacheable and _plain_to_call(fn, routed) and _cacheable(fn):
            self.fast = fn
            self._filled()
            if self.gate_free:
                with COUNT_LOCK:
                    if not FUTURES.live:
                        self.native = fn
                        NATIVE_SITES.append(self)
        elif type(fn) is types.FunctionType and id(fn.__code__) in _twin_codes:
            if fn.__defaults__ is None and fn.__kwdefaults__ is None:
                self.plain, self.twin = fn, routed  # the rewritten code tests ``plain`` itself
                self._filled()
            elif (type(routed) is types.FunctionType and routed.__defaults__ is fn.__defaults__
                  and routed.__kwdefaults__ is fn.__kwdefaults__):
                self.dplain, self.dtwin = fn, routed  # defaults can be reassigned: tested here
                self._filled()
        return routed

    def _filled(self) -> None:
        if not self.filled:
            self.filled = True
            _FILLED_SITES.append(self)

    def forget(self) -> None:
        self.fast = self.plain = self.dplain = self.issued = _NOTHING
        self.twin = self.dtwin = self.issue = None
        self.native = NO_NATIVE
        self.filled = False


# Sites holding a callable (which may hold a closure and its values): emptied
# when a top-level schedule call ends, so that nothing outlives the plain run's
# lifetimes for longer than the call.
_FILLED_SITES: list[CallSite] = []


def forget_call_sites() -> None:
    """Empty the call sites filled so far (see ``_FILLED_SITES``)."""
    while _FILLED_SITES:
        _FILLED_SITES.pop().forget()
    with COUNT_LOCK:
        NATIVE_SITES.clear()  # all forgotten above


class MethodSite(CallSite):
    """A call site ``receiver.name(...)``: the receiver types whose method may be called as it is.

    The rewritten code keeps the interpreter's own method call when the
    receiver's type is ``rtype``; otherwise it routes the bound attribute and
    calls it through ``operator.call``, in the same stack layout.
    """

    __slots__ = ("rtype", "name")

    def __init__(self, cacheable: bool, name: str, journaled: bool = False) -> None:
        super().__init__(cacheable, journaled)
        self.rtype: Any = _NOTHING
        self.name = name

    def route(self, fn: Any) -> Any:
        graph = _threads.graph
        if graph is None:
            return fn
        routed = _route(graph, fn, protected=False, journaled=self.journaled)
        if self.cacheable and _plain_to_call(fn, routed):
            receiver = getattr(fn, "__self__", None)
            kind = type(receiver)
            if (kind is not types.ModuleType and receiver is not None and _static_type(kind)
                    and _method_descriptor(getattr(kind, self.name, None))
                    and not (self.journaled and kind in _LOCAL_METHOD_TYPES
                             and self.name not in journal.READ_ONLY)):
                # In journaled code (generators, try/with blocks whose calls
                # overlap) a method that changes a local container must be
                # recorded: only the receiver types and methods that never
                # need a record skip ``route``.
                self.rtype = kind
        return routed


def _plain_to_call(fn: Any, routed: Any) -> bool:
    """True if, while no future exists, calling ``fn`` as it is does what ``routed`` does:
    a native or pure built-in, or an ordinary callable (a sync point only with futures)."""
    return (routed is fn or type(routed) is Ordinary
            or type(routed) is partial and routed.func is _call_pure)


def _static_type(kind: type) -> bool:
    """A built-in type whose instances have no ``__dict__``: its methods depend on the type alone."""
    return not kind.__flags__ & _HEAPTYPE and kind.__dictoffset__ == 0


def _method_descriptor(attr: Any) -> bool:
    """True if the interpreter's method call on this attribute passes the receiver as ``self``."""
    return attr is not None and bool(type(attr).__flags__ & _METHOD_DESCRIPTOR)


_HEAPTYPE = 1 << 9
_METHOD_DESCRIPTOR = 1 << 17


def _cacheable(fn: Any) -> bool:
    key = id(fn)
    return key not in purity.FRESH and key not in _SPECIAL_PURE


_SPECIAL_PURE = {id(map), id(filter)}


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
    """``fn`` itself when it may be called as it is, ``Ordinary(fn)`` for a sync point, else a wrapper."""
    key = id(fn)
    if key in purity.NATIVE:
        return fn
    kind = type(fn)
    if kind is Future:
        return Ordinary(fn)
    if getattr(fn, MARK, False) is True:
        return partial(_call_functional_now, graph, fn) if protected else Issue(graph.call, fn)
    if kind is types.FunctionType:
        code = id(fn.__code__)
        inner = fn if code in _inline_codes else None
        if inner is None and code in _twin_codes:
            if journaled and not protected:
                return _twin(fn, journaled=True)
            inner = _twin(fn)
        if inner is None:
            inner = getattr(fn, SCHEDULE_MARK, None)
        if inner is not None:
            return _inline(graph, inner, protected, journaled)
    elif kind is types.MethodType:
        func = fn.__func__
        inner = getattr(func, SCHEDULE_MARK, None)
        if inner is None and type(func) is types.FunctionType and id(func.__code__) in _twin_codes:
            inner = _twin(func)
        if inner is not None:
            return _inline(graph, types.MethodType(inner, fn.__self__), protected, journaled)
    elif kind is types.BuiltinMethodType:
        receiver = getattr(fn, "__self__", None)
        if id(receiver) in graph.local:
            if fn.__name__ in _NATIVE_LOCAL_METHODS and not journaled:
                return fn
            return partial(_call_local_method, graph, fn, protected, journaled)
        if type(receiver) in purity.IMMUTABLE_RECEIVERS:
            return partial(_call_pure, graph, fn, protected)
    if purity.is_pure(fn):
        return partial(_call_pure, graph, fn, protected)
    return Ordinary(fn)


def _inline(graph: Graph, inner: Any, protected: bool, journaled: bool) -> Any:
    """A function the tracer rewrote, run in this graph: called as it is outside try/with."""
    if journaled:
        if type(inner) is types.MethodType:
            return types.MethodType(_journaled(inner.__func__), inner.__self__)
        return _journaled(inner)
    if protected:
        return partial(_call_inline, graph, protected, inner)
    return inner


def gate_method(packed: tuple) -> tuple:
    """``gate`` for a call in method layout: ``((method, self, *args), kwargs, names)``.

    ``method`` is ``operator.call`` when the site routed the bound attribute
    (``self`` is then what to call), else the type's own method.
    """
    items, kwargs, names = packed
    method, receiver = items[0], items[1]
    if method is operator.call:
        fn = receiver
    else:
        fn = method.__get__(receiver, type(receiver))
    return gate((fn, (items[2:], kwargs, names)))


def gate(packed: tuple) -> tuple:
    """At a rewritten call while futures exist: ``(kwargs, args, callable)`` to call with.

    ``packed`` is ``(callable, (args, kwargs or None, keyword names or None or
    True))``; True: the names are the last item of ``args`` (3.13's CALL_KW).
    An ``Ordinary`` callable is a sync point: every task issued so far has
    finished, and the callable, arguments and keyword arguments are resolved,
    so the plain callable is then called from the user's own frame.
    """
    fn, (args, kwargs, names) = packed
    if names is not None:
        if names is True:
            names, args = args[-1], args[:-1]
        if names:
            split = len(args) - len(names)
            kwargs = dict(zip(names, args[split:]))
            args = args[:split]
    if kwargs is None:
        kwargs = {}
    graph = _threads.graph
    kind = type(fn)
    if graph is None:
        return kwargs, args, (fn.func if kind is Ordinary else fn)
    if kind is not Ordinary:
        if (kind is not partial and kind is not Issue
                and not (kind is types.FunctionType and id(fn.__code__) in _inline_codes)):
            fn = _route(graph, fn, protected=False)
            kind = type(fn)
        if kind is not Ordinary:
            for key in kwargs:
                if type(key) is Future:  # a keyword name from a dict key: needs its value
                    kwargs = {resolve_top(k): v for k, v in kwargs.items()}
                    break
            return kwargs, args, fn
    graph.sync()
    fn = resolve_deep(fn.func, graph.local)
    if type(args) is not tuple:
        args = resolve_deep(args, graph.local)
        try:
            args = tuple(args)
        except TypeError:
            pass  # the call raises CPython's own message for ``f(*x)``
    else:
        args = resolve_deep(args, graph.local)
    kwargs = resolve_deep(kwargs, graph.local)
    return kwargs, args, fn


def _call_functional_now(graph: Graph, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    graph.sync()
    return graph.call(fn, *args, **kwargs)._pd_result()


def _call_inline(graph: Graph, protected: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = fn(*args, **kwargs)
    if protected:
        graph.sync()
    return result


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
        # Consumed by rewritten code (directly or through a built-in): tasks.
        if current_graph() is graph and _consumer_is_rewritten(sys._getframe(1)):
            yield graph.call(fn, *args)
        else:  # consumed by code outside the schedule function: a plain call
            yield fn(*args)


def _consumer_is_rewritten(frame: Any) -> bool:
    """True if ``frame`` (or the first frame outside pydron above it) runs rewritten code."""
    while frame is not None and frame.f_code.co_filename.startswith(_PYDRON_DIR):
        frame = frame.f_back
    return frame is not None and id(frame.f_code) in _inline_codes


_PYDRON_DIR = __file__.rsplit("/runtime/", 1)[0]
_LOCAL_METHOD_TYPES = (list, dict, set)


def _call_local_method(graph: Graph, fn: Any, protected: bool, journaled: bool,
                       *args: Any, **kwargs: Any) -> Any:
    """A method of a container that only the schedule function holds: no sync needed."""
    if _calls_back(args, kwargs) or type(fn.__self__) not in _LOCAL_METHOD_TYPES:
        return _call_sync(graph, fn, protected, *args, **kwargs)
    if journaled:
        graph.record(journal.undo_for_method(fn.__self__, fn.__name__, args))
    result = fn(*args, **kwargs)
    if fn.__name__ == "copy":
        graph.add_local(result)
    return result


def _call_sync(graph: Graph, fn: Any, protected: bool, *args: Any, **kwargs: Any) -> Any:
    """A pure built-in or a container method handed a callback: a sync point after all."""
    graph.sync()
    fn = resolve_deep(fn, graph.local)
    args = resolve_deep(args, graph.local)
    kwargs = resolve_deep(kwargs, graph.local)
    return fn(*args, **kwargs)


def local(container: Any) -> Any:
    """A container the schedule function just built: local until it escapes."""
    graph = _threads.graph
    if graph is not None and type(container) in _LOCAL_METHOD_TYPES:
        graph.add_local(container)
    return container


def concat_local(left: Any, right: Any, fresh: list) -> Any:
    """``name = name + [...]``, where ``left`` is what ``name`` held: ``left + right``,
    made by extending ``left`` when nothing but ``name`` holds it (CPython does
    the same for ``s = s + t`` on strings). The store that follows drops the old
    list, so no one can tell, and a loop that grows a list this way costs
    linear time instead of quadratic.

    ``fresh`` is an empty list built for this call: held by the call alone, it
    gives the references a call holds on any interpreter version."""
    if type(left) is list and type(right) is list:
        graph = _threads.graph
        # ``name`` holds ``left`` once; so may the graph's record of local containers.
        held = 1 + (graph is not None and graph.local.get(id(left)) is left)
        if sys.getrefcount(left) == sys.getrefcount(fresh) + held:
            left += right
            return left
    return left + right


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
        if journaled:
            graph.record(journal.undo_setitem(obj, key))
        obj[key] = value
        return
    obj, key, value = _sync_and_resolve(obj, key, value)
    obj[key] = value


def store_slice(obj: Any, start: Any, stop: Any, value: Any, journaled: bool = False) -> None:
    """``obj[start:stop] = value``: a sync point, unless ``obj`` is a local container."""
    graph = _is_local(obj)
    if graph is not None:
        if journaled:
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
        if journaled:
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


def forwards_resolved(iterator: Any) -> bool:
    """True if what ``yield from iterator`` hands through is resolved already: a
    generator running rewritten code resolves its own yields (``resolve_yield``)."""
    return type(iterator) is types.GeneratorType and id(iterator.gi_code) in _inline_codes


class YieldFromSite:
    """One ``yield from`` of rewritten code: the rewritten generator code it last
    handed through, which the code tests with ``is`` instead of calling
    ``forwards_resolved`` (a Python call) each time."""

    __slots__ = ("code",)

    def __init__(self) -> None:
        self.code: Any = None

    def learn(self, iterator: Any) -> bool:
        """``forwards_resolved(iterator)``, remembering the code if so."""
        if forwards_resolved(iterator):
            self.code = iterator.gi_code
            return True
        return False


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
            if journaled:
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

