"""pydron's future: a value that a task or a deferred operation will produce.

A future only ever lives inside a schedule function. Pure operations on it
(arithmetic, comparisons, attribute and item reads) return new futures
instead of waiting; operations that need the value (truth, iteration,
hashing, formatting) wait for it, so glue code runs unmodified.
"""
from __future__ import annotations

import operator
import sys
import threading
from typing import Any, Callable

PENDING, DONE, FAILED = 0, 1, 2

# One condition for every state change: results arrive on execnet's IO
# threads, while the schedule function waits on its own thread. The paths
# taken once per call hold its lock directly (``with CONDITION_LOCK``): the
# same lock, without the Python-level ``Condition.__enter__``/``__exit__``.
CONDITION_LOCK = threading.Lock()
CONDITION = threading.Condition(CONDITION_LOCK)

_MISSING = object()


class _LiveCount:
    """How many futures exist in this process, read by rewritten code at every call.

    While it is zero no value anywhere can be or hold a future, and no task is
    in flight, so a call needs no sync and no resolving: the rewritten code
    then calls as the plain code does (see ``syncpoints.gate``). Futures of a
    schedule call that has ended no longer count, even if a traceback the
    user holds keeps them alive.
    """

    __slots__ = ("live", "locals")

    def __init__(self) -> None:
        self.live = 0
        # Graphs (running schedule calls) that hold containers local to their
        # schedule function: where one may be handed over, the runtime must
        # see it (tracer/escapes.py). Counted when a graph's set of local
        # containers becomes non-empty or empty, so that recording one more
        # (every ``[]`` a schedule function stores) takes no lock.
        self.locals = 0


FUTURES = _LiveCount()
_new_unborn = object.__new__
_exc_info = sys.exc_info
# Not empty while FUTURES.live is not 0 (changed under COUNT_LOCK with it):
# what rewritten code tests, as ``LOAD_CONST LIVE; POP_JUMP_IF_FALSE`` (a
# list's truth needs no attribute load, specialized or not).
LIVE: list = []
# Reentrant: a future can die while its own thread holds the lock (the garbage
# collector runs at any call, and dropping an old callable can drop the last
# reference to a future), and its __del__ takes the lock too. Every section
# under it stays consistent when such a __del__ runs inside it.
_count_lock = threading.RLock()
COUNT_LOCK = _count_lock

# Call sites (syncpoints.CallSite) whose ``native`` callable is called with no
# gate: valid only while no future exists. The first future clears them all
# (each was filled by one ``route``, so the clearing costs no more than that).
NATIVE_SITES: list = []
NO_NATIVE = object()


def _clear_native_sites() -> None:
    for site in NATIVE_SITES:
        site.native = NO_NATIVE
    NATIVE_SITES.clear()


class _FutureSlots:
    """What a future holds (the slots of ``Future``)."""

    __slots__ = (
        "_pd_graph", "_pd_seq", "_pd_state", "_pd_value", "_pd_bytes",
        "_pd_error", "_pd_origin", "_pd_site", "_pd_dependents", "_pd_label",
        "_pd_runs_on", "_pd_mutated_by", "_pd_inplace_op", "_pd_context", "_pd_remote", "__weakref__",
    )


class _Unborn(_FutureSlots):
    """A future while ``Future.__new__`` fills it: without Future's ``__setattr__``
    (which acts on the value), its slots take plain stores, four times as fast as
    ``object.__setattr__`` (one future is made per call)."""

    __slots__ = ()


class Future(_FutureSlots):
    """The not-yet-known result of a functional call or of a deferred operation."""

    __slots__ = ()
    # numpy and friends: let our reflected operators run instead of coercing us.
    __array_ufunc__ = None

    def __new__(cls, graph: Any, seq: int, site: Any, label: str, runs_on: str | None = None) -> "Future":
        # Filled as an _Unborn (plain slot stores, no __del__), then counted and made
        # a Future in one step under the lock: its __del__ uncounts exactly what was counted.
        self = _new_unborn(_Unborn)
        self._pd_graph = graph
        self._pd_seq = seq
        self._pd_state = PENDING
        self._pd_value = _MISSING
        self._pd_bytes = None
        # The value kept on the worker that computed it (remote/values.py), if so.
        self._pd_remote = None
        self._pd_error = None
        # The future whose own failure this one carries (itself, or a dependency).
        self._pd_origin = None
        self._pd_site = site
        # The exception being handled when the call was made: its failure's
        # ``__context__``, as when the plain run raises inside a handler.
        self._pd_context = _exc_info()[1]
        self._pd_dependents = None
        self._pd_label = label
        self._pd_runs_on = runs_on  # graph.REMOTE or graph.LOCAL
        # Set when ``self += x`` was applied to a copy of this value: if the
        # value turns out to be mutable in place by ``_pd_inplace_op`` (e.g.
        # operator.iadd on a list), later readers see that copy, as they would
        # see the mutated object sequentially; an int or a str stays as it was.
        self._pd_mutated_by = None
        self._pd_inplace_op = None
        with _count_lock:
            if not FUTURES.live:
                if NATIVE_SITES:
                    _clear_native_sites()
                LIVE.append(True)
            FUTURES.live += 1
            graph.live_futures += 1
            self.__class__ = cls
        return self  # type: ignore[return-value]

    def __del__(self) -> None:
        remote = self._pd_remote
        if remote is not None:  # the worker may drop the value now
            remote.release()
        try:
            with _count_lock:
                graph = self._pd_graph
                if not graph.closed:  # a closed graph's futures no longer count (Graph.close)
                    FUTURES.live -= 1
                    graph.live_futures -= 1
                    if not FUTURES.live:
                        LIVE.clear()
        except Exception:  # noqa: BLE001 - the interpreter is exiting: nothing counts any more
            pass

    # -- the value ---------------------------------------------------------
    def _pd_result(self) -> Any:
        """Wait for the value; raise the failure that sequential order dictates."""
        if self._pd_mutated_by is not None:
            newest = latest(self)
            if newest is not self:
                return newest._pd_result()
        if self._pd_state is PENDING:
            self._pd_graph.wait_for(self)
        if self._pd_state is FAILED:
            self._pd_graph.raise_failure(self)
        value = self._pd_value
        if value is _MISSING:
            value = self._pd_graph.load_value(self)
        return value

    def __repr__(self) -> str:
        return repr(self._pd_result())

    def __str__(self) -> str:
        return str(self._pd_result())

    def __format__(self, spec: str) -> str:
        return format(self._pd_result(), spec)

    def __bool__(self) -> bool:
        return bool(self._pd_result())

    def __len__(self) -> int:
        return len(self._pd_result())

    def __iter__(self):
        return iter(self._pd_result())

    def __reversed__(self):
        return reversed(self._pd_result())

    def __contains__(self, item: Any) -> bool:
        return self._pd_graph.resolve_deep(item) in self._pd_result()

    def __hash__(self) -> int:
        return hash(self._pd_result())

    def __int__(self) -> int:
        return int(self._pd_result())

    def __float__(self) -> float:
        return float(self._pd_result())

    def __complex__(self) -> complex:
        return complex(self._pd_result())

    def __index__(self) -> int:
        return operator.index(self._pd_result())

    def __bytes__(self) -> bytes:
        return bytes(self._pd_result())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._pd_result()(*self._pd_graph.resolve_deep(args), **self._pd_graph.resolve_deep(kwargs))

    def __enter__(self):
        return self._pd_result().__enter__()

    def __exit__(self, *exc: Any):
        return self._pd_result().__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            return getattr(self._pd_result(), name)
        return _defer(getattr, self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._pd_result(), name, self._pd_graph.resolve_deep(value))

    def __delattr__(self, name: str) -> None:
        delattr(self._pd_result(), name)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._pd_result()[self._pd_graph.resolve_deep(key)] = self._pd_graph.resolve_deep(value)

    def __delitem__(self, key: Any) -> None:
        del self._pd_result()[self._pd_graph.resolve_deep(key)]

    def __reduce__(self):
        raise TypeError(
            "a pydron future cannot be pickled outside a task's arguments; "
            "it leaked out of its schedule function"
        )

    def __copy__(self):
        return self

    def __deepcopy__(self, memo: Any):
        return self


def _defer(op: Callable[..., Any], *args: Any) -> Any:
    """Apply a pure operation to futures, now if they are known, else later."""
    for arg in args:
        if type(arg) is Future:
            return arg._pd_graph.defer(op, args)
    return op(*args)


def _binary(op: Callable[[Any, Any], Any]):
    def forward(self, other):
        return _defer(op, self, other)

    def reflected(self, other):
        return _defer(op, other, self)

    return forward, reflected


for _name, _op in [
    ("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
    ("truediv", operator.truediv), ("floordiv", operator.floordiv),
    ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
    ("lshift", operator.lshift), ("rshift", operator.rshift),
    ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
    ("divmod", divmod),
]:
    _fwd, _rev = _binary(_op)
    setattr(Future, f"__{_name}__", _fwd)
    setattr(Future, f"__r{_name}__", _rev)

for _name, _op in [
    ("lt", operator.lt), ("le", operator.le), ("eq", operator.eq),
    ("ne", operator.ne), ("gt", operator.gt), ("ge", operator.ge),
    ("getitem", operator.getitem),
]:
    setattr(Future, f"__{_name}__", _binary(_op)[0])

for _name, _op in [
    ("neg", operator.neg), ("pos", operator.pos), ("invert", operator.invert),
    ("abs", abs), ("round", round), ("trunc", __import__("math").trunc),
    ("floor", __import__("math").floor), ("ceil", __import__("math").ceil),
]:
    setattr(Future, f"__{_name}__", (lambda op: lambda self, *a: _defer(op, self, *a))(_op))

# In-place operators on a future never mutate a value that earlier readers
# may still need: the graph applies them to a copy (see Graph.defer_inplace).
def _inplace(op: Callable[[Any, Any], Any]):
    def method(self, other):
        return self._pd_graph.defer_inplace(op, self, other)

    return method


for _name, _op in [
    ("iadd", operator.iadd), ("isub", operator.isub), ("imul", operator.imul),
    ("itruediv", operator.itruediv), ("ifloordiv", operator.ifloordiv),
    ("imod", operator.imod), ("ipow", operator.ipow), ("imatmul", operator.imatmul),
    ("ilshift", operator.ilshift), ("irshift", operator.irshift),
    ("iand", operator.iand), ("ior", operator.ior), ("ixor", operator.ixor),
]:
    setattr(Future, f"__{_name}__", _inplace(_op))


def latest(future: Future) -> Future:
    """The future that holds ``future``'s value now, after in-place updates.

    Whether ``x op= y`` updated the object that other names share depends on
    the value's type, so a future with a pending in-place update is waited
    for here (only aliases of a rebound name get here while it is pending).
    """
    while future._pd_mutated_by is not None:
        if future._pd_state is PENDING:
            future._pd_graph.wait_for(future)
        if future._pd_state is not DONE:
            return future  # failed: whoever reads it raises that failure
        value = future._pd_graph.value_of(future)
        if not mutable_in_place(value, future._pd_inplace_op):
            object.__setattr__(future, "_pd_mutated_by", None)  # immutable: rebound, not updated
            return future
        future = future._pd_mutated_by
    return future


def mutable_in_place(value: Any, op: Callable[[Any, Any], Any]) -> bool:
    """True if ``value op= y`` changes ``value`` itself (lists, sets, arrays), not a copy."""
    return getattr(type(value), inplace_special(op), None) is not None


def inplace_special(op: Callable[[Any, Any], Any]) -> str:
    """``operator.iadd`` -> ``"__iadd__"``."""
    return "__" + op.__name__ + "__"


def is_future(obj: Any) -> bool:
    """True if ``obj`` is a pydron future."""
    return type(obj) is Future
