"""The Dask backend: pydron's tasks as ``Client.submit`` calls on a Dask cluster.

Each functional call becomes one Dask task, keyed ``pydron-NAME-RUN-SEQ`` (the
function, the top-level schedule call, its place in program order) and
prioritised by program order (Dask runs higher priorities first, so the
priority is ``-seq``). An argument that is an earlier call's result is passed
as that result's Dask future: Dask moves it from worker to worker, and the
master sees it only when the program needs the value (``fetch``).

What Dask does for us: placement by data locality, moving data, lineage (a
value lost with its worker is computed again), and retrying tasks whose
worker died, up to ``distributed.scheduler.allowed-failures`` (set from
pydron's ``retries`` for clusters pydron starts; a joined scheduler keeps its
own setting, which the error message reports). A task that killed too many
workers fails with Dask's ``KilledWorker``; pydron raises ``WorkerDied`` with
the execnet pool's wording.

Threads: Dask calls ``add_done_callback`` callbacks on its own callback
thread; they only queue the finished key. The backend's ``pydron-dask``
thread turns it into ``graph.finish`` (which may submit the next tasks).
"""
from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import queue
import re
import secrets
import sys
import threading
import weakref
from typing import Any, Sequence

from pydron.errors import PydronError, RemoteError, WorkerDied
from pydron.functional import TIMEOUT_MARK
from pydron.observe.events import EVENTS
from pydron.remote import byvalue, protocol
from pydron.remote.backend import Backend
from pydron.runtime.codes import site_line
from pydron.runtime.future import _MISSING, PENDING

log = logging.getLogger("pydron")

#: Seconds to connect to a scheduler (or start a cluster) before giving up.
START_TIMEOUT = float(os.environ.get("PYDRON_START_TIMEOUT", "60"))
#: ``fetch`` waits in slices this long, checking in between that the scheduler is still there.
FETCH_SLICE = 1.0
FUNCTION_CACHE = 256
INSTALL_HINT = "pip install 'pydron[dask]'"
# Results of these types come to the master with their completion (see _finish_batch).
_SMALL_TYPES = frozenset({int, float, bool, complex, type(None)})
# The worker-side module (dask_task.py), as the workers import it.
TASK_MODULE = "pydron_dask_task"


def require_distributed(what: str = "the Dask backend") -> Any:
    """``distributed``, or a PydronError that says how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise PydronError(f"{what} needs Dask's distributed package, which is not installed "
                          f"({exc}); install it with: {INSTALL_HINT}") from None
    return distributed


def _task_module() -> Any:
    """dask_task.py imported as ``pydron_dask_task``: the name the workers know it by."""
    module = sys.modules.get(TASK_MODULE)
    if module is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dask_task.py")
        spec = importlib.util.spec_from_file_location(TASK_MODULE, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[TASK_MODULE] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class DaskValue:
    """A result kept on the Dask cluster: the master's reference is its Dask future."""

    __slots__ = ("future", "key", "__weakref__")

    def __init__(self, future: Any) -> None:
        self.future = future
        self.key = future.key

    def release(self) -> None:
        """Drop the Dask future (any thread): Dask forgets the value once nothing needs it."""
        future, self.future = self.future, None
        if future is not None:
            try:
                future.release()
            except Exception:  # noqa: BLE001 - the client is closing: nothing to release
                pass

    def __repr__(self) -> str:
        state = "released" if self.future is None else self.future.status
        return f"<DaskValue {self.key} ({state})>"


class _Inflight:
    """A submitted task, as long as it runs: what its outcome needs, not its arguments."""

    __slots__ = ("future", "graph", "fn", "dask_future", "timeout")

    def __init__(self, future: Any, graph: Any, fn: Any, dask_future: Any, timeout: float | None) -> None:
        self.future, self.graph, self.fn, self.dask_future = future, graph, fn, dask_future
        self.timeout = timeout


class DaskBackend(Backend):
    """Runs tasks on a Dask cluster, joined (a scheduler address or file) or started
    for the run from a cluster class (closed at shutdown)."""

    def __init__(self, spec: Any, retries: int = 3, timeout: float | None = None) -> None:
        distributed = require_distributed(f"{spec.label} (type \"dask\")")
        import dask

        self.label = spec.label
        self.timeout = timeout
        self._closed = False
        self._cluster = None
        self._lock = threading.Lock()
        self._inflight: dict[str, _Inflight] = {}
        self._functions: dict[Any, bytes] = {}
        self._runs: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._run_numbers = itertools.count(1)
        self._token = secrets.token_hex(3)  # two masters on one scheduler never share a key
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._task = _task_module()
        allowed = max(0, retries - 1)  # Dask gives up after allowed-failures + 1 deaths
        try:
            if spec.cluster_class_path is not None:
                cls = spec.cluster_class()
                with dask.config.set({"distributed.scheduler.allowed-failures": allowed}):
                    self._cluster = cls(**spec.cluster_options)
                if spec.jobs:
                    self._cluster.scale(spec.jobs)
                self._client = distributed.Client(self._cluster, timeout=START_TIMEOUT,
                                                  set_as_default=False)
            elif spec.scheduler_file is not None:
                self._client = distributed.Client(scheduler_file=spec.scheduler_file,
                                                  timeout=START_TIMEOUT, set_as_default=False)
            else:
                self._client = distributed.Client(spec.scheduler, timeout=START_TIMEOUT,
                                                  set_as_default=False)
            self._allowed_failures = self._scheduler_allowed_failures(allowed)
            # The scheduler (it unpickles task specs) and every worker, present and
            # future, can import dask_task.py.
            from distributed.diagnostics.plugin import SchedulerUploadFile

            upload = self._upload_path()
            if not self._client.run_on_scheduler(_has_task_module):  # not an in-process scheduler
                self._client.register_plugin(SchedulerUploadFile(upload), name="pydron-task-scheduler")
            self._client.register_plugin(distributed.UploadFile(upload), name="pydron-task")
        except BaseException as exc:
            self._close_quietly()
            if isinstance(exc, PydronError):
                raise
            raise PydronError(f"{spec.label}: could not start the Dask backend "
                              f"({spec.describe()}): {type(exc).__name__}: {exc}") from exc
        self.retries = self._allowed_failures + 1
        self._thread = threading.Thread(target=self._results_loop, name="pydron-dask", daemon=True)
        self._thread.start()

    def _upload_path(self) -> str:
        """dask_task.py under the name the workers import it by (a copy in a private dir)."""
        import tempfile

        directory = tempfile.mkdtemp(prefix="pydron-dask-")
        path = os.path.join(directory, TASK_MODULE + ".py")
        with open(self._task.__file__, encoding="utf-8") as source, open(path, "w", encoding="utf-8") as copy:
            copy.write(source.read())
        self._upload_dir = directory
        return path

    def _scheduler_allowed_failures(self, default: int) -> int:
        try:
            return int(self._client.run_on_scheduler(_allowed_failures))
        except Exception:  # noqa: BLE001 - a scheduler that refuses to run code: assume ours
            return default

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (e.g. to look at the cluster)."""
        return self._client

    # -- submitting -------------------------------------------------------
    def prepare(self, task: Any) -> None:
        """Pickle the arguments now (the user's modules by value)."""
        task.timeout = getattr(task.fn, TIMEOUT_MARK, None) or self.timeout
        EVENTS.issued(task)
        try:
            with byvalue.by_value():
                task.payload = protocol.dump_args(task.args, task.kwargs, task.slots)
        except Exception as exc:  # noqa: BLE001 - reported through the task's future
            task.payload = exc

    def submit(self, task: Any, graph: Any) -> None:
        """Hand a ready task to Dask, earlier results as their Dask futures."""
        if self._closed:
            graph.finish(task.future, ok=False, error=PydronError("the pydron Dask backend is shut down"))
            return
        try:
            args = task.payload
            if isinstance(args, BaseException):
                raise args
            inputs, pickled = [], []
            for index, future in enumerate(task.inputs):
                source = _input_source(future)
                if type(source) is bytes:
                    pickled.append(index)
                inputs.append(source)
            fn_bytes = self._function(task.fn)
            key = self._key(task, graph)
            dask_future = self._client.submit(
                self._task.run, fn_bytes, args, tuple(pickled), task.timeout, *inputs,
                key=key, priority=-task.future._pd_seq, pure=False)
        except BaseException as exc:  # noqa: BLE001 - e.g. a value that cannot be pickled
            graph.finish(task.future, ok=False, error=exc)
            return
        with self._lock:
            self._inflight[key] = _Inflight(task.future, graph, task.fn, dask_future, task.timeout)
        # Only a key travels to the callback: the task and its arguments die with this frame.
        dask_future.add_done_callback(self._on_done)

    def _key(self, task: Any, graph: Any) -> str:
        run = self._runs.get(graph)
        if run is None:
            run = self._runs[graph] = f"{self._token}{next(self._run_numbers)}"
        name = re.sub(r"[^\w.]+", "_", getattr(task.fn, "__qualname__", None) or "call")
        return f"pydron-{name}-{run}-{task.future._pd_seq}"

    def _function(self, fn: Any) -> bytes:
        try:
            cached = self._functions.get(fn)
        except TypeError:  # unhashable (a bound method of an unhashable object)
            with byvalue.by_value():
                return protocol.dump_function(fn)
        if cached is None:
            with byvalue.by_value():
                cached = protocol.dump_function(fn)
            if len(self._functions) >= FUNCTION_CACHE:
                self._functions.pop(next(iter(self._functions)))
            self._functions[fn] = cached
        return cached

    # -- results ----------------------------------------------------------
    def _on_done(self, dask_future: Any) -> None:
        """Dask's callback thread: hand the key over, nothing else."""
        self._done.put(dask_future.key)

    def _results_loop(self) -> None:
        while True:
            keys = [self._done.get()]
            while len(keys) < 1000:  # whatever else finished meanwhile: one batch
                try:
                    keys.append(self._done.get_nowait())
                except queue.Empty:
                    break
            with self._lock:
                entries = [self._inflight.pop(key, None) for key in keys if key is not None]
            entries = [entry for entry in entries if entry is not None]  # else cancelled
            try:
                self._finish_batch(entries)
            except Exception:  # noqa: BLE001 - never lose the thread
                log.exception("pydron: handling the results of %s failed", keys)
            if None in keys:
                return
            entries = None  # type: ignore[assignment]

    def _finish_batch(self, entries: list[_Inflight]) -> None:
        """Numbers come to the master at once, in one gather for the batch: a program
        reads most of them (a sum, a branch), and one round trip each would cost
        more than the bytes. Everything else stays on the cluster until needed."""
        small = [entry for entry in entries if entry.dask_future.status == "finished"
                 and entry.dask_future.type in _SMALL_TYPES and entry.future._pd_state is PENDING]
        values = None
        if small:
            try:
                values = self._client.gather([entry.dask_future for entry in small])
            except Exception:  # noqa: BLE001 - e.g. a worker died meanwhile: fetched when needed
                values = None
        done = set()
        if values is not None:
            for entry, value in zip(small, values):
                entry.graph.finish(entry.future, ok=True, value=value)
                done.add(id(entry))
        for entry in entries:
            if id(entry) not in done:
                self._finish(entry)

    def _finish(self, entry: _Inflight) -> None:
        future, graph, dask_future = entry.future, entry.graph, entry.dask_future
        if future._pd_state is not PENDING:
            return  # cancelled while it ran
        status = dask_future.status
        if status == "finished":
            graph.finish(future, ok=True, remote=DaskValue(dask_future))
            return
        if status == "error":
            try:
                error = dask_future.exception(timeout=FETCH_SLICE * 30)
            except BaseException as exc:  # noqa: BLE001
                error = exc
            graph.finish(future, ok=False, error=self._error(error, entry))
            return
        graph.finish(future, ok=False, error=WorkerDied(
            f"{_call_text(entry.fn, future)} was cancelled by Dask ({status}): the scheduler "
            f"lost it (a restart, or the connection to it was lost)"))

    def _error(self, error: BaseException, entry: _Inflight) -> BaseException:
        """The exception the plain run raises, from what Dask reports."""
        if isinstance(error, self._task.TaskFailed):
            if error.timed_out:
                return TimeoutError(f"{_call_text(entry.fn, entry.future)} did not finish within its "
                                    f"timeout of {entry.timeout:g} s (on worker {error.worker}); it was stopped")
            return _unpickle_error(error)
        distributed = sys.modules.get("distributed")
        if distributed is not None and isinstance(error, distributed.KilledWorker):
            return WorkerDied(self._poison_message(entry, error))
        return RemoteError(f"{_call_text(entry.fn, entry.future)} failed on the Dask cluster: "
                           f"{type(error).__name__}: {error}")

    def _poison_message(self, entry: _Inflight, error: Any) -> str:
        """The execnet pool's wording: the call, the workers it killed, the retries."""
        key = entry.dask_future.key
        try:
            events = self._client.get_events("all")
            killed = [msg.get("worker", "?") for _, msg in events
                      if isinstance(msg, dict) and msg.get("action") == "remove-worker"
                      and not msg.get("expected") and key in msg.get("processing-tasks", ())]
        except Exception:  # noqa: BLE001 - the event log is a courtesy
            killed = []
        last = getattr(getattr(error, "last_worker", None), "address", None)
        if not killed:
            killed = [last or "?"]
        count = max(len(killed), error.allowed_failures + 1)
        return (f"{_call_text(entry.fn, entry.future)} killed {count} worker(s) it ran on: "
                f"{', '.join(killed)}; given up after retries={error.allowed_failures + 1}")

    # -- values -------------------------------------------------------------
    def fetch(self, value: DaskValue) -> Any:
        """Bring a kept value here (Dask computes it again if its worker died)."""
        future = value.future
        if future is None:
            raise PydronError(f"{value.key} was released before it was fetched")
        distributed = sys.modules["distributed"]
        while True:
            try:
                return future.result(timeout=FETCH_SLICE)
            except TimeoutError:
                if not self.any_alive():
                    raise WorkerDied(f"the Dask scheduler of {self.label} is gone; the value of "
                                     f"{value.key} cannot be fetched") from None
            except distributed.KilledWorker as exc:  # lost, and its recomputation killed workers
                raise WorkerDied(f"{value.key} was lost with its worker and computing it again "
                                 f"killed workers: {exc}") from None
            except self._task.TaskFailed as exc:
                raise _unpickle_error(exc) from None

    def flush_releases(self) -> None:
        """Nothing batched: a released value's Dask future is dropped at once."""

    # -- cancelling, liveness, shutdown -------------------------------------
    def cancel(self, futures: Sequence[Any]) -> None:
        """Drop these tasks from Dask (one that runs finishes; its result is dropped)."""
        wanted = {id(future) for future in futures}
        with self._lock:
            doomed = [key for key, entry in self._inflight.items() if id(entry.future) in wanted]
            dask_futures = [self._inflight.pop(key).dask_future for key in doomed]
        if dask_futures:
            try:
                self._client.cancel(dask_futures)
            except Exception:  # noqa: BLE001 - the cluster is gone: nothing runs them any more
                pass

    def check_alive(self) -> None:
        """A lost scheduler connection fails what runs (Dask itself handles lost workers)."""
        if self._closed or self._client.status not in ("closed", "closing", "failed"):
            return
        with self._lock:
            lost, self._inflight = list(self._inflight.values()), {}
        for entry in lost:
            entry.graph.finish(entry.future, ok=False, error=WorkerDied(
                f"{_call_text(entry.fn, entry.future)} was lost: the connection to the Dask "
                f"scheduler of {self.label} closed"))

    def any_alive(self) -> bool:
        return not self._closed and self._client.status in ("running", "connecting", "newly-created")

    def shutdown(self) -> None:
        """Close the client, and the cluster if this backend started it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            lost, self._inflight = list(self._inflight.values()), {}
        self._done.put(None)
        for entry in lost:
            entry.graph.finish(entry.future, ok=False, error=PydronError(
                f"the pydron Dask backend was shut down while {_call_text(entry.fn, entry.future)} ran"))
        self._close_quietly()

    def _close_quietly(self) -> None:
        for thing in (getattr(self, "_client", None), self._cluster):
            if thing is None:
                continue
            try:
                thing.close(timeout=10) if thing is not self._cluster else thing.close()
            except Exception:  # noqa: BLE001 - going away anyway
                pass
        directory = getattr(self, "_upload_dir", None)
        if directory:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)


# Run on the scheduler, which may lack pydron: lambdas, so that they travel by value.
_has_task_module = lambda: "pydron_dask_task" in __import__("sys").modules  # noqa: E731
_allowed_failures = lambda dask_scheduler: dask_scheduler.allowed_failures  # noqa: E731


def _input_source(future: Any) -> Any:
    """One input as Dask gets it: the Dask future of a value kept on the cluster, or the
    pickle of a value the master holds (as it is now: the program may have changed it)."""
    value = future._pd_value
    if value is not _MISSING:
        with byvalue.by_value():
            return protocol.dump_value(value)
    remote = future._pd_remote
    if type(remote) is DaskValue and remote.future is not None:
        return remote.future
    if future._pd_bytes is not None:
        return future._pd_bytes
    raise PydronError(f"an input of this call, {future._pd_label}(), is no longer available")


def _unpickle_error(failed: Any) -> BaseException:
    import cloudpickle

    try:
        error = cloudpickle.loads(failed.error_bytes)
    except Exception as exc:  # noqa: BLE001
        error = RemoteError(f"a task failed on Dask worker {failed.worker} and its exception "
                            f"could not be unpickled here: {exc}")
    if isinstance(error, tuple) and error and error[0] == "unpicklable":
        error = RemoteError(f"{error[1]}: {error[2]}")
    if not isinstance(error, BaseException):
        error = RemoteError(repr(error))
    if failed.traceback_text:
        error.add_note(f"Remote traceback (Dask worker {failed.worker}):\n{failed.traceback_text.rstrip()}")
    return error


def _call_text(fn: Any, future: Any) -> str:
    """``name() (called at FILE, line N)``, as the execnet pool words it."""
    name = getattr(fn, "__qualname__", repr(fn))
    site = future._pd_site
    if not site:
        return f"{name}()"
    frame, lasti = site[-1]
    return f"{name}() (called at {frame.f_code.co_filename}, line {site_line(frame, lasti)})"
