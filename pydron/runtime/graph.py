"""The task graph of one schedule run: issue order, dependencies, failures.

Every functional call and every deferred operation gets a sequence number in
the order the sequential run would have made it. That order decides which
failure is raised when several calls fail, and sync points wait for every
task issued before them.
"""
from __future__ import annotations

import collections
import copy
import heapq
import itertools
import pickle
import sys
import threading
import types
from time import perf_counter
from typing import Any, Callable, Mapping, Sequence

from pydron.errors import CallCancelled
from pydron.observe.events import EVENTS
from pydron.runtime.codes import inline_codes, site_line
from pydron.runtime.future import (CONDITION, CONDITION_LOCK, COUNT_LOCK, DONE, FAILED, LIVE, PENDING, FUTURES, Future, _MISSING,
                                   latest, mutable_in_place)
from pydron.runtime.resolve import PLAIN_TYPES, find_futures, resolve_deep, snapshot, substitute

_PYDRON_DIR = __file__.rsplit("/runtime/", 1)[0]
class _Threads(threading.local):
    graph: "Graph | None" = None


_local = _Threads()


def current_graph() -> "Graph | None":
    """The graph of the schedule function running on this thread, if any."""
    return _local.graph


def set_current_graph(graph: "Graph | None") -> "Graph | None":
    """Make ``graph`` current on this thread; return the previous one."""
    previous = _local.graph
    _local.graph = graph
    return previous


_NO_INPUTS: tuple = ()
_NO_SLOTS = types.MappingProxyType({})


class Task:
    """One functional call: what to run, and the futures its arguments hold.

    Slotted, with the empty ``inputs``/``slots``/``killed_on`` shared: one is
    made per call, 100,000 in a large map.
    """

    __slots__ = ("future", "fn", "args", "kwargs", "inputs", "slots", "waiting", "payload",
                 "killed_on", "timeout", "sources")

    def __init__(self, future: Future, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.inputs: Sequence[Future] = _NO_INPUTS  # the newest version of each future found
        self.slots: Mapping[int, int] = _NO_SLOTS  # id(future as found) -> its index in inputs
        self.waiting = 0  # inputs not known yet
        self.payload: Any = None  # the pickled arguments (or why they could not be), made at the call
        self.killed_on: tuple[str, ...] = ()  # workers that died running it
        self.timeout: float | None = None  # seconds it may run (set by the pool)
        self.sources: list | None = None  # its inputs as the pool sends them (bytes, or values kept on workers)

    @classmethod
    def make(cls, future: Future, fn: Callable[..., Any], args: tuple, kwargs: dict) -> "Task":
        """A task whose inputs are the newest versions of the futures in its arguments."""
        task = cls(future, fn, args, kwargs)
        if not kwargs:
            for arg in args:
                if type(arg) not in PLAIN_TYPES:
                    break
            else:
                return task  # no future can hide in plain numbers and strings
        inputs: list[Future] = []
        slots: dict[int, int] = {}
        positions: dict[int, int] = {}  # id(input) -> its index in inputs
        for found in find_futures((args, kwargs)):
            if id(found) in slots:
                continue
            newest = latest(found)
            index = positions.get(id(newest))
            if index is None:
                index = positions[id(newest)] = len(inputs)
                inputs.append(newest)
            slots[id(found)] = index
        if inputs:
            task.inputs, task.slots = inputs, slots
        return task


# Undo records kept before a sync point is forced (see Graph.record).
JOURNAL_LIMIT = 10_000

_inline_codes = inline_codes  # ids of rewritten code objects (runtime/codes.py)


def user_site(entry: types.FrameType | None = None) -> tuple | None:
    """Where the user made the call: the user's frames inside the schedule, innermost last.

    Each entry is (frame, lasti) as at the time of the call (``site_line`` gives
    its line), so that a failure noticed later gets the traceback the
    sequential run would show. The walk starts at the caller of the graph's
    method that asks, and stops at ``entry``, the frame that runs the top-level
    schedule function (nothing above it belongs to the call).
    """
    try:
        frame = sys._getframe(2)
    except ValueError:  # a graph method called with no Python frame below it
        return None
    while frame is not None and frame.f_code.co_filename.startswith(_PYDRON_DIR):
        frame = frame.f_back
    chain = []
    while frame is not None:
        if chain and id(frame.f_code) not in _inline_codes:
            break  # the schedule function's caller: the raise itself passes through it
        chain.append((frame, frame.f_lasti))
        frame = frame.f_back
        while frame is not None and frame.f_code.co_filename.startswith(_PYDRON_DIR):
            if frame is entry:
                frame = None
                break
            frame = frame.f_back
    chain.reverse()
    return tuple(chain) if chain else None


def _raise_in_context(error: BaseException) -> None:
    """Raise ``error`` keeping its ``__context__``, the exception the plain run was
    handling at the call.

    ``raise`` sets ``__context__`` to the exception handled where it runs, and a
    failure noticed after its call is raised elsewhere: past the handler the call
    was made in (in a ``finally`` after it, say), or in an outer one. So it is
    raised from a handler of that exception, whose own traceback and chain are
    put back as they were.
    """
    context = error.__context__
    if context is None or context is sys.exc_info()[1]:
        raise error
    saved = (context.__traceback__, context.__context__, context.__cause__, context.__suppress_context__)
    try:
        raise context
    except BaseException:  # noqa: BLE001 - ``context`` itself, caught to be the exception handled
        (context.__traceback__, context.__context__, context.__cause__,
         context.__suppress_context__) = saved
        raise error  # noqa: B904 - its __context__ is the point


_GRAPH_NUMBERS = itertools.count(1)

# Where a task runs (a future's ``_pd_runs_on``): constants, not bound methods,
# which would be one more object kept alive per pending call.
REMOTE = "remote"  # a functional call, on a worker
LOCAL = "local"    # a deferred operation, on the schedule function's thread


class Graph:
    """Tasks of one top-level schedule call, shared by nested schedule calls."""

    # A future resolves the operands of its own operations through its graph:
    # future.py cannot import resolve.py, which imports it.
    resolve_deep = staticmethod(resolve_deep)

    def __init__(self, pool_getter: Callable[[], Any]) -> None:
        # Unique in the process (an id() is reused once a graph is freed): the run
        # report tells the calls of two runs apart by it.
        self.number = next(_GRAPH_NUMBERS)
        self._pool_getter = pool_getter
        self._pool = None
        self._seq = 0
        self._outstanding: dict[int, Future] = {}  # seq -> future not finished yet
        self._outstanding_seqs: list[int] = []  # a heap of their seqs (finished ones popped lazily)
        # Deferred operations whose inputs are known, run by the schedule
        # function's thread: the thread that receives results runs no user code.
        self._local_ready: collections.deque[Task] = collections.deque()
        # What the schedule function's thread waits for, while it waits (see _wait):
        # a finished call wakes it only when that has come true.
        self._waiting: Callable[[], bool] | None = None
        self._failures: list[Future] = []
        self._failed: list[Future] = []  # every call that failed (see ``close``)
        self._raised: dict[int, int] = {}  # id(exception) -> seq of the call that raised it
        self._raised_at: dict[int, int] = {}  # id(exception) -> calls issued when it was raised
        self._raised_tb: dict[int, types.TracebackType] = {}
        # Containers built by the schedule function that nothing outside has
        # seen yet: mutating them is not a sync point. id -> container.
        self.local: dict[int, Any] = {}
        self._local_changes = 0
        self._local_kept = 0  # how many survived the last pruning (see prune_local)
        self.live_futures = 0  # this graph's share of FUTURES.live
        self.closed = False
        self.collecting = False  # a pure built-in is materialising a generator expression
        # Calls issued after a failure that a handler caught: the sequential run
        # never made them, so their failures are dropped. (first seq, last seq).
        self._discarded: list[tuple[int, int]] = []
        # Undo records of local containers changed while calls were in flight
        # in a try/with block (see journal.py): (calls issued before, undo).
        self._journal: list[tuple[int, Callable[[], None]]] = []
        self._load_lock = threading.Lock()
        # The frame that runs a top-level schedule function (scheduling._run_graph):
        # where ``user_site`` stops looking. None: look up to the first frame outside.
        self.entry: types.FrameType | None = None

    def add_local(self, container: Any) -> None:
        """Record a container only the schedule function holds (see ``local``)."""
        local = self.local
        if not local:
            with COUNT_LOCK:
                FUTURES.locals += 1  # this graph holds local containers now
        elif len(local) > 100_000:
            self._forget_locals(list(local))  # forgetting is safe: mutations just become sync points
            return self.add_local(container)
        local[id(container)] = container
        changes = self._local_changes + 1
        self._local_changes = changes
        if changes >= self._local_kept:  # prune_local's own test, without the call
            self.prune_local()

    def _forget_locals(self, keys: list[int]) -> None:
        local = self.local
        if not keys or not local:
            return
        for key in keys:
            del local[key]
        if not local:
            with COUNT_LOCK:
                FUTURES.locals -= 1  # none left in this graph

    def prune_local(self) -> None:
        """Forget the local containers that only this graph still holds, so they die
        when the plain run's would. Amortised: a scan runs after as many changes as
        containers survived the previous scan, so each change pays for one entry."""
        if self._local_changes < max(self._local_kept, 1):
            return
        local = self.local
        self._forget_locals([key for key in local if sys.getrefcount(local[key]) <= 2])
        self._local_changes = 0
        self._local_kept = len(local)

    def close(self) -> None:
        """The top-level call is over: drop what would keep values or futures alive.

        A failed call's exception holds a traceback, whose frames hold the
        futures that hold the exception: that cycle is broken here, so that
        the futures die at once rather than at the next garbage collection.
        """
        self.entry = None  # its frame holds the call's arguments
        with COUNT_LOCK:
            self.closed = True
            FUTURES.live -= self.live_futures
            self.live_futures = 0
            if not FUTURES.live:
                LIVE.clear()
        if self._outstanding:  # the run ended early (an exception, Ctrl-C): stop its calls
            self._cancel(1, self._seq, "the schedule call it belongs to has ended")
        self._forget_locals(list(self.local))
        self._journal.clear()
        self._local_ready.clear()
        self._raised.clear()
        self._raised_at.clear()
        self._raised_tb.clear()
        self._failures.clear()
        for future in self._failed:
            object.__setattr__(future, "_pd_error", None)
            object.__setattr__(future, "_pd_site", None)
            object.__setattr__(future, "_pd_origin", None)
            object.__setattr__(future, "_pd_context", None)
        self._failed.clear()

    def record(self, undo: Callable[[], None] | None) -> None:
        """Keep ``undo`` for a change that a handler may have to take back."""
        if undo is not None and (self._outstanding or self._failures):
            if len(self._journal) >= JOURNAL_LIMIT:
                # Bounded memory: wait for the calls in flight (their failure,
                # if any, is raised here, after its call as in the plain run).
                self.sync()
                return
            self._journal.append((self._seq, undo))

    # -- issuing ----------------------------------------------------------
    def _next(self, site: Any, label: str, runs_on: str) -> Future:
        self._seq += 1
        return Future(self, self._seq, site, label, runs_on)

    @property
    def pool(self) -> Any:
        if self._pool is None:
            self._pool = self._pool_getter()
        return self._pool

    def submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Future:
        """Issue a functional call; it runs on a worker once its inputs are known."""
        return self.call(fn, *args, **kwargs)

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """``submit`` in the layout of the call itself: what a call site calls
        (through ``syncpoints.Issue``, which adds no Python frame)."""
        pool = self._pool
        if pool is None:
            pool = self.pool
        pool.make_room()
        label = getattr(fn, "__qualname__", None)  # repr() only when needed: it costs each call
        future = self._next(user_site(self.entry), repr(fn) if label is None else label, REMOTE)
        task = Task.make(future, fn, args, kwargs)
        # Pickled now, on this thread: later mutations of the arguments are not seen.
        pool.prepare(task)
        self._start(task)
        return future

    def defer(self, op: Callable[..., Any], args: tuple) -> Any:
        """Issue a pure operation on futures; it runs here once they are known."""
        if all(latest(f)._pd_state is DONE for f in find_futures(args)):
            return op(*resolve_deep(args))
        future = self._next(user_site(self.entry), getattr(op, "__name__", "operation"), LOCAL)
        self._start(Task.make(future, op, snapshot(args), {}))
        return future

    def defer_inplace(self, op: Callable[[Any, Any], Any], target: Future, other: Any) -> Future:
        """``target op= other`` without mutating a value earlier readers still need.

        The operation runs on a copy of a mutable value. The target is linked
        to the result, so that other names holding the target see the update
        if the value turns out to be mutable in place (see ``latest``).
        """
        target = latest(target)
        if target._pd_state is DONE and not mutable_in_place(self.value_of(target), op):
            return self.defer(op, (target, snapshot(other)))

        def apply(value: Any, operand: Any) -> Any:
            if mutable_in_place(value, op):
                value = copy.copy(value)
            return op(value, operand)

        apply.__name__ = op.__name__
        result = self._next(user_site(self.entry), op.__name__, LOCAL)
        task = Task.make(result, apply, (target, snapshot(other)), {})
        object.__setattr__(target, "_pd_inplace_op", op)
        object.__setattr__(target, "_pd_mutated_by", result)
        self._start(task)
        return result

    def _start(self, task: Task) -> None:
        future = task.future
        with CONDITION_LOCK:  # CONDITION's lock, without its Python-level __enter__
            self._outstanding[future._pd_seq] = future
            heapq.heappush(self._outstanding_seqs, future._pd_seq)
            failed = None
            for dep in task.inputs:
                if dep._pd_state is PENDING:
                    task.waiting += 1
                    if dep._pd_dependents is None:
                        object.__setattr__(dep, "_pd_dependents", [task])
                    else:
                        dep._pd_dependents.append(task)
                elif dep._pd_state is FAILED and failed is None:
                    failed = dep
            if failed is not None:
                self._fail_locked(future, failed._pd_origin, None)
                return
            ready = task.waiting == 0
        if not ready:
            return
        if future._pd_runs_on is LOCAL:
            self._run_local(task)  # this is the schedule function's thread
        else:
            self.pool.submit(task, self)

    # -- running ----------------------------------------------------------
    def input_values(self, task: Task) -> dict[int, Any]:
        """id(future as found in the arguments) -> value, for a ready task."""
        values = [self.value_of(f) for f in task.inputs]
        return {key: values[index] for key, index in task.slots.items()}

    def value_of(self, future: Future) -> Any:
        """The value of a finished future, without following in-place updates."""
        value = future._pd_value
        return self.load_value(future) if value is _MISSING else value

    def _run_local(self, task: Task) -> None:
        try:
            args = substitute(task.args, self.input_values(task)) if task.slots else task.args
            value = task.fn(*args)
        except BaseException as exc:  # noqa: BLE001 - any failure belongs to the task
            self.finish(task.future, ok=False, error=exc)
        else:
            self.finish(task.future, ok=True, value=value)

    def finish(self, future: Future, ok: bool, value: Any = _MISSING,
               payload: bytes | None = None, error: BaseException | None = None,
               remote: Any = None) -> None:
        """Record a task's outcome and start the tasks that were waiting for it.

        Called on any thread. Remote tasks that become ready are queued for
        the pool; deferred operations wait for the schedule function's thread
        (``run_local_ready``), so that no user code runs here.
        """
        with CONDITION:
            if future._pd_state is not PENDING:
                return
            if ok:
                ready = self._succeed_locked(future, value, payload, remote)
            else:
                ready = self._fail_locked(future, future, error)
            ready = self._queue_local_locked(ready)
        for task in ready:
            self.pool.submit(task, self)

    def finish_values(self, results: list[tuple[Future, Any, bytes | None, Any]]) -> None:
        """``finish(ok=True)`` for a batch of (future, value, payload, remote) from a
        worker: one lock and one wake-up of the schedule thread for all of them."""
        ready: list[Task] = []
        with CONDITION_LOCK:
            for future, value, payload, remote in results:
                if future._pd_state is PENDING:
                    ready += self._succeed_locked(future, value, payload, remote)
            ready = self._queue_local_locked(ready)
        for task in ready:
            self.pool.submit(task, self)

    def _succeed_locked(self, future: Future, value: Any, payload: bytes | None, remote: Any) -> list[Task]:
        set_slot = object.__setattr__  # a slot still at its first value (None) is left alone
        set_slot(future, "_pd_value", value)
        if payload is not None:
            set_slot(future, "_pd_bytes", payload)
        if remote is not None:
            set_slot(future, "_pd_remote", remote)
        set_slot(future, "_pd_state", DONE)  # after the value: readers test the state without the lock
        # Only a failure needs its call site; the frames would keep
        # the schedule function's locals (futures among them) alive.
        if future._pd_site is not None:
            set_slot(future, "_pd_site", None)
        if future._pd_context is not None:
            set_slot(future, "_pd_context", None)
        self._outstanding.pop(future._pd_seq, None)
        if future._pd_dependents is None:
            return []
        return self._release_locked(future, None)

    def _queue_local_locked(self, ready: list[Task]) -> list[Task]:
        """Queue the deferred operations among ``ready`` for the schedule thread and
        wake it if it has them to run or what it waits for has come true; the
        tasks for workers are left to send (after the lock)."""
        remote = []
        local = False
        for task in ready:
            if task.future._pd_runs_on is LOCAL:
                self._local_ready.append(task)
                local = True
            else:
                remote.append(task)
        waiting = self._waiting
        if waiting is not None and (local or waiting()):
            CONDITION.notify_all()
        return remote

    def run_local_ready(self) -> None:
        """Run the deferred operations whose inputs are known (the schedule thread only)."""
        queue = self._local_ready
        while queue:
            task = queue.popleft()
            if task.future._pd_state is PENDING:  # not cancelled meanwhile
                self._run_local(task)

    def _cancel(self, first: int, last: int, reason: str) -> None:
        """Cancel every outstanding call with ``first <= seq <= last``: the sequential run
        never makes them. Their failures are never reported; the pool drops them from
        its queue and interrupts the ones running."""
        with CONDITION:
            doomed = [future for seq, future in self._outstanding.items() if first <= seq <= last]
            if not doomed:
                return
            self._discarded.append((first, last))
            for future in doomed:
                if future._pd_state is PENDING:
                    self._fail_locked(future, future, CallCancelled(
                        f"{future._pd_label}() was cancelled: {reason}"))
        remote = [f for f in doomed if f._pd_runs_on is REMOTE]
        if remote and self._pool is not None:
            self._pool.cancel(remote)

    def _fail_locked(self, future: Future, origin: Future, error: BaseException | None) -> list[Task]:
        """Fail ``future`` and, transitively, every task waiting for it (no recursion)."""
        failing = [(future, error)]
        while failing:
            current, current_error = failing.pop()
            object.__setattr__(current, "_pd_error", current_error)
            object.__setattr__(current, "_pd_origin", origin)
            object.__setattr__(current, "_pd_state", FAILED)
            # Failures first: ``record`` reads both without the lock, and must never
            # see a failed call in neither.
            if current is origin:
                self._failed.append(current)
                if not any(lo <= current._pd_seq <= hi for lo, hi in self._discarded):
                    self._failures.append(current)
            self._outstanding.pop(current._pd_seq, None)
            dependents = current._pd_dependents
            object.__setattr__(current, "_pd_dependents", None)
            for task in dependents or ():
                if task.future._pd_state is PENDING:
                    failing.append((task.future, None))
        CONDITION.notify_all()
        return []  # failing starts nothing

    def _release_locked(self, future: Future, failed_origin: Future | None) -> list[Task]:
        ready: list[Task] = []
        dependents = future._pd_dependents
        object.__setattr__(future, "_pd_dependents", None)
        for task in dependents or ():
            if task.future._pd_state is not PENDING:
                continue
            task.waiting -= 1
            if task.waiting == 0:
                ready.append(task)
        return ready

    # -- waiting ----------------------------------------------------------
    def _wait(self, done: Callable[[], bool]) -> None:
        """Block until ``done()``, running ready deferred operations and watching the workers."""
        began = perf_counter()
        while True:
            self.run_local_ready()
            with CONDITION:
                if done():
                    return EVENTS.waited(began)
                if not self._local_ready:
                    self._waiting = done  # read by the threads that finish calls, under the lock
                    try:
                        CONDITION.wait(0.5)
                    finally:
                        self._waiting = None
                if done():
                    return EVENTS.waited(began)
                if not self._local_ready:
                    self._check_liveness_locked()

    def wait_for(self, future: Future) -> None:
        """Block until ``future`` is no longer pending."""
        if future._pd_state is PENDING:
            self._wait(lambda: future._pd_state is not PENDING)

    def _lowest_outstanding(self) -> int | None:
        """The smallest seq still outstanding (finished ones leave the heap here)."""
        heap = self._outstanding_seqs
        while heap and heap[0] not in self._outstanding:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _nothing_outstanding(self) -> bool:
        return not self._outstanding

    def _check_liveness_locked(self) -> None:
        pool = self._pool
        if pool is not None:
            CONDITION.release()
            try:
                pool.check_alive()
            finally:
                CONDITION.acquire()

    def _failure_decided(self) -> bool:
        """Every call has finished, or one failed and every call before it has finished:
        the sequential run would raise that failure now, whatever the later calls do."""
        if not self._outstanding:
            return True
        if not self._failures:
            return False
        lowest = self._lowest_outstanding()
        return lowest is None or min(f._pd_seq for f in self._failures) < lowest

    def sync(self) -> None:
        """A sync point: every issued task has finished; raise the earliest failure.

        A failure is raised as soon as every call before it has finished; the
        calls after it are cancelled (see ``_raise``).
        """
        if self._outstanding or self._local_ready:
            self._wait(self._failure_decided)
        if self._failures:
            self._raise_earliest()
        self._outstanding_seqs.clear()  # nothing outstanding: the heap holds only finished seqs
        self._journal.clear()  # every call so far succeeded: nothing to take back
        self._local_changes += 1
        self.prune_local()
        if self._pool is not None:
            self._pool.flush_releases()

    def raise_failure(self, future: Future) -> None:
        """``future`` failed: raise what the sequential run would have raised here.

        Only the calls issued before the failed one matter: one of them may
        have failed too, and the earliest failure wins.
        """
        origin = future._pd_origin

        def earlier_finished() -> bool:
            lowest = self._lowest_outstanding()
            return lowest is None or lowest > origin._pd_seq

        self._wait(earlier_finished)
        earlier = [f for f in self._failures if f._pd_seq < origin._pd_seq]
        if earlier:
            self._raise_earliest()
        self._failures = [f for f in self._failures if f is not origin]
        self._raise(origin)

    def _raise_earliest(self) -> None:
        earliest = min(self._failures, key=lambda f: f._pd_seq)
        self._failures = [f for f in self._failures if f is not earliest]
        self._raise(earliest)

    def settle(self, error: BaseException) -> None:
        """``error`` is leaving the schedule function: raise instead an earlier failed call's."""
        if isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            return
        try:
            self.sync()
        except BaseException as earlier:  # noqa: BLE001
            if earlier is error:
                return
            mine = self._raised.get(id(error))
            theirs = self._raised.get(id(earlier), 0)
            if mine is not None and mine < theirs <= self._raised_at.get(id(error), theirs):
                return  # issued after the failed call, before it was raised: never ran
            if mine is not None and mine < theirs:
                earlier.__context__ = error  # failed in a finally on the way out
                raise
            earlier.__context__ = None
            raise

    def reconcile(self, error: BaseException) -> BaseException:
        """A handler is about to catch ``error``: the exception the sequential run would catch.

        An earlier call that failed wins over ``error``. Calls issued after a
        failed call but before its failure was raised never happened
        sequentially: their failures are dropped. Calls issued once it was
        raised ran in a ``finally`` or handler on its way: the first of them
        to fail replaces it, as it does in the plain run.
        """
        if isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            return error
        self._wait(self._nothing_outstanding)
        while True:
            cutoff = self._raised.get(id(error), self._seq + 1)
            noticed = self._raised_at.get(id(error), self._seq)
            # issued after the failed call, before it was raised: never ran
            self._failures = [f for f in self._failures if not cutoff < f._pd_seq <= noticed]
            earlier = [f for f in self._failures if f._pd_seq < cutoff]
            later = [f for f in self._failures if f._pd_seq > noticed]
            if earlier:
                # The plain run raised it at its call, handling what was handled there
                # (not what ``error`` found: a bare ``raise`` in a handler can re-raise
                # an exception older than the call).
                winner = min(earlier, key=lambda f: f._pd_seq)
                context = winner._pd_context
            elif later:
                winner, context = min(later, key=lambda f: f._pd_seq), error
            else:
                break
            try:
                self._raise(winner, cancel_later=False)
            except BaseException as raised:  # noqa: BLE001 - we only want it built
                raised.__context__ = context
                error = raised
            self._raised_at[id(error)] = self._seq
        self._failures = [f for f in self._failures if f._pd_seq < cutoff]
        self._discarded.append((cutoff + 1, self._seq))
        # Changes made once the failed call was issued never happened sequentially.
        for stamp, undo in reversed(self._journal):
            if stamp >= cutoff:
                undo()
        self._journal.clear()
        return error

    def _raise(self, origin: Future, cancel_later: bool = True) -> None:
        """Raise a failed call's exception with the traceback of its call site.

        Calls issued after it until now never happen in the sequential run,
        which raises at the call itself: they are cancelled.
        """
        if cancel_later and self._seq > origin._pd_seq:
            first, last = origin._pd_seq + 1, self._seq
            self._failures = [f for f in self._failures if not first <= f._pd_seq <= last]
            self._cancel(first, last, f"an earlier call, {origin._pd_label}(), failed")
        error = origin._pd_error
        if origin._pd_context is not None and error.__context__ is None:
            error.__context__ = origin._pd_context
        self._raised[id(error)] = origin._pd_seq
        self._raised_at[id(error)] = self._seq  # calls issued after this ran in its handlers
        site = origin._pd_site
        if site is not None:
            tb = None
            for frame, lasti in reversed(site):
                lineno = site_line(frame, lasti)
                tb = types.TracebackType(tb, frame, lasti,
                                         lineno if lineno is not None else frame.f_code.co_firstlineno)
            self._raised_tb[id(error)] = tb
            error = error.with_traceback(tb)
        _raise_in_context(error)

    def synthesized_traceback(self, error: BaseException) -> types.TracebackType | None:
        """The call-site traceback given to ``error`` when it was raised late, if so."""
        return self._raised_tb.get(id(error))

    def pending_failures(self) -> bool:
        """True if a failed task has not been raised yet."""
        return bool(self._failures)

    def load_value(self, future: Future) -> Any:
        """The value of a finished remote task, unpickled (or fetched from the worker
        that keeps it) on first use: one object per value."""
        with self._load_lock:
            value = future._pd_value
            if value is _MISSING:
                if future._pd_bytes is None and future._pd_remote is not None:
                    value = self.pool.fetch(future._pd_remote)
                else:
                    value = pickle.loads(future._pd_bytes)
                object.__setattr__(future, "_pd_value", value)
                object.__setattr__(future, "_pd_bytes", None)
        return value


