"""``@schedule``: run a function's functional calls in parallel, with sequential semantics."""
from __future__ import annotations

import functools
import gc
import inspect
import sys
import types
from typing import Any, Callable, TypeVar

from pydron.observe import progress as _progress  # noqa: F401 - the progress line listens to runs
from pydron.observe.events import EVENTS
from pydron.remote.pool import get_pool
from pydron.runtime import gcpolicy
from pydron.runtime.future import FUTURES
from pydron.runtime.graph import Graph, _inline_codes, current_graph, set_current_graph
from pydron.runtime.resolve import resolve_deep
from pydron.runtime.syncpoints import SCHEDULE_MARK, forget_call_sites, with_code
from pydron.tracer.rewrite import rewrite_code

F = TypeVar("F", bound=Callable[..., Any])
_PYDRON_DIR = __file__.rsplit("/", 1)[0]

#: The pytest plugin's switch (``--pydron=sequential|check``, pydron/pytest_check.py): when set,
#: a top-level call (no schedule call running on this thread) is ``top_level_runner(fn,
#: run_scheduled, args, kwargs)``: ``fn`` is the plain function, ``run_scheduled(args, kwargs)``
#: the usual scheduled run.  None (the default): run it scheduled.
top_level_runner: Callable[..., Any] | None = None


def schedule(fn: F) -> F:
    """Decorate a pipeline function: its ``@functional`` calls become parallel tasks."""
    if isinstance(fn, (staticmethod, classmethod)):
        return type(fn)(schedule(fn.__func__))
    if not isinstance(fn, types.FunctionType):
        raise TypeError(f"@pydron.schedule needs a function, got {type(fn).__name__}")
    where = f"{fn.__code__.co_filename}, line {fn.__code__.co_firstlineno}"
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"@pydron.schedule does not support async functions: "
                        f"{fn.__qualname__} ({where})")
    rewritten = with_code(fn, rewrite_code(fn.__code__, fn.__globals__))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
            if top_level_runner is not None and current_graph() is None:
                run = functools.partial(_run_generator, rewritten)
                return (yield from top_level_runner(fn, run, args, kwargs))
            return (yield from _run_generator(rewritten, args, kwargs))

        wrapper = generator_wrapper
    else:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if top_level_runner is not None and current_graph() is None:
                return top_level_runner(fn, functools.partial(_run, rewritten), args, kwargs)
            return _run(rewritten, args, kwargs)

    setattr(wrapper, SCHEDULE_MARK, rewritten)
    return wrapper  # type: ignore[return-value]


class _Stray:
    """Futures alive when no schedule call runs are garbage in a reference cycle (or belong
    to a suspended schedule generator); while any exists, glue code takes the slow path."""

    running = 0
    collected_at = 0


def _collect_stray_futures() -> None:
    """Before a top-level call: collect cyclic garbage that holds futures, once per change."""
    live = FUTURES.live
    if live and not _Stray.running and live != _Stray.collected_at:
        gc.collect()
        _Stray.collected_at = FUTURES.live


def _run(rewritten: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """One top-level schedule call: a fresh graph, then a full sync and resolve."""
    _collect_stray_futures()
    _Stray.running += 1
    EVENTS.run_began()
    gcpolicy.run_began()
    try:
        return _run_graph(rewritten, args, kwargs)
    finally:
        gcpolicy.run_ended()
        EVENTS.run_ended()
        _Stray.running -= 1
        if not _Stray.running:
            forget_call_sites()


def _run_graph(rewritten: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    graph = Graph(get_pool)
    previous = set_current_graph(graph)
    if previous is None:
        graph.entry = sys._getframe()  # no call site of this graph lies beyond it
    try:
        try:
            result = rewritten(*args, **kwargs)
            graph.sync()
            return resolve_deep(result)
        except BaseException as exc:
            error = exc
        finally:
            set_current_graph(previous)
        raise _settle(graph, error)
    finally:
        graph.close()


def _run_generator(rewritten: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """A schedule generator: each step runs in the graph; each yield hands out a resolved value."""
    graph = Graph(get_pool)
    previous = set_current_graph(graph)
    try:
        gen = rewritten(*args, **kwargs)
    finally:
        set_current_graph(previous)
    EVENTS.run_began()
    try:
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            previous = set_current_graph(graph)
            try:
                if to_throw is not None:
                    value = gen.throw(to_throw)
                else:
                    value = gen.send(to_send)
                graph.sync()
                value = resolve_deep(value)
            except StopIteration as stop:
                set_current_graph(previous)
                try:
                    graph.sync()
                except BaseException as exc:  # noqa: BLE001
                    raise _settle(graph, exc) from None
                return resolve_deep(stop.value)
            except BaseException as exc:
                set_current_graph(previous)
                raise _settle(graph, exc) from None
            set_current_graph(previous)
            to_send, to_throw = None, None
            try:
                to_send = yield value
            except BaseException as exc:  # noqa: BLE001 - thrown into the generator
                to_throw = exc
    finally:
        EVENTS.run_ended()
        graph.close()


def _settle(graph: Graph, error: BaseException) -> BaseException:
    """The exception the sequential run would have raised: an earlier failed call wins."""
    try:
        graph.settle(error)
    except BaseException as earlier:  # noqa: BLE001
        error = earlier
    error.__traceback__ = _user_frames(error.__traceback__, graph.synthesized_traceback(error))
    return error


def _user_frames(tb: types.TracebackType | None,
                 call_site: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without pydron's own frames.

    A failed call noticed later carries, innermost, the frames of its call
    site; the frames of the schedule function where the failure was noticed
    are dropped, so the traceback is the one the sequential run shows.
    """
    entries = []
    in_call_site = False
    while tb is not None:
        in_call_site = in_call_site or tb is call_site
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith(_PYDRON_DIR) and (
                in_call_site or call_site is None or id(code) not in _inline_codes):
            entries.append(tb)
        tb = tb.tb_next
    result = None
    for entry in reversed(entries):
        # An instruction without a line (3.11: some cleanup code) has tb_lineno None.
        lineno = entry.tb_lineno if entry.tb_lineno is not None else entry.tb_frame.f_code.co_firstlineno
        result = types.TracebackType(result, entry.tb_frame, entry.tb_lasti, lineno)
    return result


__all__ = ["schedule"]
