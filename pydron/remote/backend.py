"""The one interface between pydron's scheduler and whatever runs its tasks.

The graph (runtime/graph.py) hands a backend each functional call as a task
and hears back through ``graph.finish``; it never knows which backend runs.
Two implement it: the execnet pool (pool.py: local processes, ssh hosts,
cloud nodes) and Dask ``distributed`` (dask_backend.py).

The contract, in the order a task lives through it:

``prepare(task)``
    On the schedule function's thread, at the call: pickle the arguments now,
    so later mutations are not seen (a failure to pickle is kept in
    ``task.payload`` and fails the task when it is submitted).
``submit(task, graph)``
    The task's inputs (``task.inputs``: pydron futures) are all finished. Run
    ``task.fn`` on ``task.args``/``task.kwargs`` with each future replaced by
    its value; an input whose value stays elsewhere (``future._pd_remote``)
    is passed by reference, so it travels only between workers. Program
    order ``task.future._pd_seq`` is the priority: the lower, the sooner.
    The outcome goes to ``graph.finish(task.future, ok=True, payload=BYTES)``
    (a pickled value), ``ok=True, value=OBJECT`` (the value itself, already
    here), ``ok=True, remote=REF`` (a value kept by the backend: a
    :class:`ValueRef`) or ``ok=False, error=EXCEPTION``, on any thread,
    once. Must not block, and must not run user code.
``fetch(ref)``
    The schedule function needs a kept value here: bring it (waits).
``release(ref)``
    The program dropped the value (its future died): the backend may forget
    it. Called from ``Future.__del__`` as ``ref.release()``, on any thread.
``flush_releases()``
    A sync point: a good time to pass on releases that were batched.
``cancel(futures)``
    These calls never happen sequentially: drop them, stop them if running.
    Their futures have already failed; whatever they produce is ignored.
``check_alive()`` / ``any_alive()``
    Notice workers that died without saying so; is anyone left to run tasks?
``shutdown()``
    Stop everything this backend started; later submissions fail.
"""
from __future__ import annotations

import abc
from typing import Any, Protocol, Sequence


class ValueRef(Protocol):
    """A result that stays where it was computed; ``Future._pd_remote`` holds it."""

    def release(self) -> None:
        """The program dropped its last reference (any thread, often a ``__del__``)."""


class Outcomes(Protocol):
    """Where a backend reports a task's outcome (a runtime Graph)."""

    def finish(self, future: Any, ok: bool, value: Any = ..., payload: bytes | None = None,
               error: BaseException | None = None, remote: Any = None) -> None: ...

    def finish_values(self, results: list[tuple[Any, Any, bytes | None, Any]]) -> None:
        """``finish(ok=True)`` of each (future, value, payload, remote), at once
        (``value`` is the value itself when it came so, else runtime.future._MISSING)."""


class Backend(abc.ABC):
    """Runs functional calls for the scheduler (see the module docstring)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once ``shutdown`` began: the next schedule call needs a new backend."""

    @property
    def workers(self) -> list:
        """The backend's worker handles, for ``pydron.workers()`` (none by default)."""
        return []

    @abc.abstractmethod
    def prepare(self, task: Any) -> None:
        """Pickle ``task``'s arguments now, on the caller's thread."""

    def make_room(self) -> None:
        """On the thread that issues calls, before it issues one: wait while too many
        ready tasks wait to be run (bounded memory). Nothing by default."""

    @abc.abstractmethod
    def submit(self, task: Any, graph: Outcomes) -> None:
        """Run a ready task; its outcome goes to ``graph.finish`` later."""

    @abc.abstractmethod
    def fetch(self, value: Any) -> Any:
        """The value a ``ValueRef`` stands for, brought here."""

    def release(self, value: ValueRef) -> None:
        """Forget a kept value (the same as ``value.release()``)."""
        value.release()

    @abc.abstractmethod
    def flush_releases(self) -> None:
        """Pass on the releases batched so far (called at sync points)."""

    @abc.abstractmethod
    def cancel(self, futures: Sequence[Any]) -> None:
        """Drop or stop the tasks of these futures."""

    @abc.abstractmethod
    def check_alive(self) -> None:
        """Notice workers that are gone without having said so."""

    @abc.abstractmethod
    def any_alive(self) -> bool:
        """True if some worker can still run tasks (or is being started)."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop what this backend started; nothing is left running."""

